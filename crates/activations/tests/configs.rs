//! The yolov5s activation variants in configs/models: each is upstream yolov5s.yaml plus one
//! `activation:` line, and that line parses to the intended activation.

use std::path::PathBuf;
use yolo_activations::Activation;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/models")
}

fn read(name: &str) -> String {
    let path = models_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of a top-level `activation:` key: comment and YAML quotes removed.
fn activation_value(yaml: &str) -> Option<String> {
    let line = yaml.lines().find(|l| l.starts_with("activation:"))?;
    let value = line["activation:".len()..].trim_start();
    // A comment starts at ` #` outside quotes.
    let mut quote = None;
    let mut end = value.len();
    let mut prev = ' ';
    for (i, ch) in value.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') if prev == ' ' || i == 0 => quote = Some(ch),
            (None, '#') if prev == ' ' => {
                end = i;
                break;
            }
            _ => {}
        }
        prev = ch;
    }
    let v = value[..end].trim();
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    Some(unquoted.to_string())
}

/// Lines that are not whole-line comments.
fn without_comment_lines(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect()
}

#[test]
fn variants_parse_and_differ_from_upstream_only_by_the_activation_line() {
    use Activation::*;
    let base = read("yolov5s.yaml");
    assert!(
        activation_value(&base).is_none(),
        "upstream yolov5s.yaml has no activation key"
    );
    // (file, activation, ours): our variants are yolov5s.yaml plus the line, byte for byte;
    // the LeakyReLU one is upstream's own hub file (a `yolov5s-leakyrelu.yaml` beside it would
    // collide on case-insensitive file systems), whose header comments differ too.
    let variants = [
        ("yolov5s-gelu.yaml", Gelu, true),
        ("yolov5s-gelu-tanh.yaml", GeluTanh, true),
        ("yolov5s-frelu.yaml", FRelu, true),
        ("yolov5s-aconc.yaml", AconC, true),
        ("yolov5s-metaaconc.yaml", MetaAconC { r: 16 }, true),
        ("yolov5s-hardswish.yaml", Hardswish, true),
        ("yolov5s-mish.yaml", Mish, true),
        ("yolov5s-LeakyReLU.yaml", LeakyRelu(0.1), false),
    ];
    for (file, want, ours) in variants {
        let yaml = read(file);
        let value = activation_value(&yaml).unwrap_or_else(|| panic!("{file}: no activation line"));
        let got: Activation = value
            .parse()
            .unwrap_or_else(|e| panic!("{file}: `{value}` does not parse: {e}"));
        assert_eq!(got, want, "{file}");
        // Written with the upstream spelling.
        assert_eq!(value, want.to_string(), "{file}");
        let without: String = yaml
            .lines()
            .filter(|l| !l.starts_with("activation:"))
            .map(|l| format!("{l}\n"))
            .collect();
        if ours {
            assert_eq!(
                without, base,
                "{file}: differs from yolov5s.yaml beyond the activation line"
            );
        } else {
            assert_eq!(
                without_comment_lines(&without),
                without_comment_lines(&base),
                "{file}: differs from yolov5s.yaml beyond the activation line and comments"
            );
        }
    }
}

#[test]
fn value_scan_handles_quotes_and_comments() {
    let v = |s: &str| activation_value(s).unwrap();
    assert_eq!(
        v("activation: nn.LeakyReLU(0.1) # note"),
        "nn.LeakyReLU(0.1)"
    );
    assert_eq!(
        v("activation: \"nn.GELU(approximate='tanh')\" # c"),
        "nn.GELU(approximate='tanh')"
    );
    assert_eq!(v("activation: 'FReLU'"), "FReLU");
    assert_eq!(
        v("activation: nn.GELU(approximate='tanh')"),
        "nn.GELU(approximate='tanh')"
    );
}
