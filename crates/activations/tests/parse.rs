//! Names: every upstream spelling, the short ones, round trips, and errors.

use yolo_activations::{Activation, Error, SHORT_NAMES, UPSTREAM_NAMES};

fn p(s: &str) -> Activation {
    s.parse()
        .unwrap_or_else(|e| panic!("`{s}` should parse: {e}"))
}

#[test]
fn upstream_spellings() {
    use Activation::*;
    let cases: &[(&str, Activation)] = &[
        ("nn.SiLU()", Silu),
        ("nn.SiLU", Silu),
        ("SiLU", Silu),
        ("SiLU()", Silu),
        ("torch.nn.SiLU()", Silu),
        ("nn.SiLU(inplace=True)", Silu),
        ("nn.SiLU(True)", Silu),
        ("  nn.SiLU()  ", Silu),
        ("nn.GELU()", Gelu),
        ("nn.GELU", Gelu),
        ("nn.GELU(approximate='none')", Gelu),
        ("nn.GELU(approximate='tanh')", GeluTanh),
        ("nn.GELU(approximate=\"tanh\")", GeluTanh),
        ("nn.GELU( approximate = 'tanh' )", GeluTanh),
        ("nn.GELU('tanh')", GeluTanh),
        ("nn.ReLU()", Relu),
        ("nn.ReLU(inplace=True)", Relu),
        ("nn.ReLU6()", Relu6),
        ("nn.LeakyReLU(0.1)", LeakyRelu(0.1)),
        ("nn.LeakyReLU(negative_slope=0.1)", LeakyRelu(0.1)),
        ("nn.LeakyReLU(0.1, inplace=True)", LeakyRelu(0.1)),
        ("nn.LeakyReLU(0.1, True)", LeakyRelu(0.1)),
        ("nn.LeakyReLU(.2)", LeakyRelu(0.2)),
        ("nn.LeakyReLU()", LeakyRelu(0.01)),
        ("nn.LeakyReLU", LeakyRelu(0.01)),
        ("nn.ELU()", Elu(1.0)),
        ("nn.ELU(alpha=1.0)", Elu(1.0)),
        ("nn.ELU(0.5)", Elu(0.5)),
        ("nn.Hardswish()", Hardswish),
        ("Hardswish", Hardswish),
        ("nn.Hardsigmoid()", Hardsigmoid),
        ("nn.Mish()", Mish),
        ("Mish", Mish),
        ("MemoryEfficientMish", Mish),
        ("nn.Sigmoid()", Sigmoid),
        ("nn.Tanh()", Tanh),
        ("nn.Identity()", Identity),
        ("nn.Identity(54, unused_argument1=0.1)", Identity),
        ("FReLU", FRelu),
        ("FReLU()", FRelu),
        ("FReLU(c1)", FRelu),
        ("FReLU(64)", FRelu),
        ("FReLU(64, 3)", FRelu),
        ("FReLU(c1, k=3)", FRelu),
        ("AconC", AconC),
        ("AconC(c1)", AconC),
        ("AconC(128)", AconC),
        ("MetaAconC", MetaAconC { r: 16 }),
        ("MetaAconC(c1)", MetaAconC { r: 16 }),
        ("MetaAconC(c1, 1, 1, 16)", MetaAconC { r: 16 }),
        ("MetaAconC(64, k=1, s=1, r=8)", MetaAconC { r: 8 }),
        ("MetaAconC(r=4)", MetaAconC { r: 4 }),
    ];
    for &(s, want) in cases {
        assert_eq!(p(s), want, "{s}");
    }
}

#[test]
fn short_spellings_are_case_insensitive() {
    use Activation::*;
    let cases: &[(&str, Activation)] = &[
        ("silu", Silu),
        ("SILU", Silu),
        ("swish", Silu),
        ("gelu", Gelu),
        ("GELU", Gelu),
        ("gelu_tanh", GeluTanh),
        ("GELU_TANH", GeluTanh),
        ("gelu-tanh", GeluTanh),
        ("gelu:tanh", GeluTanh),
        ("relu", Relu),
        ("relu6", Relu6),
        ("leaky_relu", LeakyRelu(0.01)),
        ("leaky_relu:0.1", LeakyRelu(0.1)),
        ("Leaky_ReLU:0.2", LeakyRelu(0.2)),
        ("leakyrelu:0.1", LeakyRelu(0.1)),
        ("elu", Elu(1.0)),
        ("elu:0.5", Elu(0.5)),
        ("hardswish", Hardswish),
        ("HardSwish", Hardswish),
        ("hard_swish", Hardswish),
        ("hardsigmoid", Hardsigmoid),
        ("mish", Mish),
        ("sigmoid", Sigmoid),
        ("tanh", Tanh),
        ("identity", Identity),
        ("frelu", FRelu),
        ("aconc", AconC),
        ("metaaconc", MetaAconC { r: 16 }),
        ("metaaconc:8", MetaAconC { r: 8 }),
        ("meta_acon_c", MetaAconC { r: 16 }),
    ];
    for &(s, want) in cases {
        assert_eq!(p(s), want, "{s}");
    }
}

#[test]
fn default_is_silu() {
    assert_eq!(Activation::default(), Activation::Silu);
}

#[test]
fn display_and_short_name_round_trip() {
    let mut all = Activation::all();
    all.extend([
        Activation::LeakyRelu(0.01),
        Activation::LeakyRelu(0.2),
        Activation::Elu(0.5),
        Activation::MetaAconC { r: 8 },
    ]);
    for a in all {
        assert_eq!(p(&a.to_string()), a, "upstream spelling {a}");
        assert_eq!(p(&a.short_name()), a, "short name {}", a.short_name());
    }
    assert_eq!(
        Activation::GeluTanh.to_string(),
        "nn.GELU(approximate='tanh')"
    );
    assert_eq!(Activation::LeakyRelu(0.1).to_string(), "nn.LeakyReLU(0.1)");
    assert_eq!(Activation::LeakyRelu(0.1).short_name(), "leaky_relu:0.1");
    assert_eq!(Activation::FRelu.to_string(), "FReLU");
}

#[test]
fn every_listed_name_parses() {
    for name in UPSTREAM_NAMES.iter().chain(SHORT_NAMES) {
        // Placeholders in the listing: `nn.ELU(alpha)`, `leaky_relu[:slope]`.
        let concrete = name
            .replace("(negative_slope)", "(0.1)")
            .replace("(alpha)", "(alpha=1.0)")
            .replace("[:slope]", ":0.1")
            .replace("[:alpha]", ":1.0");
        p(&concrete);
    }
}

#[test]
fn unknown_name_lists_known_names() {
    for bad in ["nn.Swishy()", "", "relu7", "nn.PReLU()", "torch.sigmoid"] {
        let err = bad.parse::<Activation>().unwrap_err();
        assert!(
            matches!(err, Error::UnknownActivation { .. }),
            "{bad}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("unknown activation"), "{msg}");
        for known in [
            "nn.SiLU()",
            "nn.GELU(approximate='tanh')",
            "nn.LeakyReLU",
            "FReLU",
            "AconC",
            "MetaAconC",
            "silu",
            "gelu_tanh",
            "leaky_relu",
        ] {
            assert!(
                msg.contains(known),
                "`{bad}`: error does not list {known}: {msg}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    for bad in [
        "nn.LeakyReLU(abc)",
        "nn.LeakyReLU(0.1, 0.2, 0.3)",
        "nn.LeakyReLU(slope=0.1)",
        "nn.LeakyReLU(0.1, negative_slope=0.2)",
        "nn.LeakyReLU(nan)",
        "nn.LeakyReLU(inf)",
        "leaky_relu:x",
        "leaky_relu:",
        "nn.GELU(approximate='erf')",
        "nn.GELU(approx='tanh')",
        "nn.SiLU(1.5)",
        "nn.SiLU(True, True)",
        "silu:2",
        "gelu_tanh:1",
        "frelu:3",
        "nn.SiLU(",
        "nn.SiLU()x",
        "nn.LeakyReLU('0.1)",
        "nn.LeakyReLU(0.1,,)",
        "nn.LeakyReLU(negative_slope=0.1, 0.2)",
        "FReLU(c1, 5)",
        "MetaAconC(c1, 3)",
        "MetaAconC(c1, 1, 2)",
        "MetaAconC(r=0)",
        "MetaAconC(r=-1)",
        "metaaconc:0",
    ] {
        match bad.parse::<Activation>() {
            Err(Error::InvalidSpec { spec, detail }) => {
                assert_eq!(spec, bad.trim());
                assert!(!detail.is_empty());
            }
            other => panic!("`{bad}` should be an InvalidSpec error, got {other:?}"),
        }
    }
}
