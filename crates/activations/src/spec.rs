//! [`Activation`]: the parsed, cloneable spec of an activation, its spellings, and the factory
//! that builds one layer per use.

use crate::acon::{AconC, MetaAconC};
use crate::error::{Error, Result};
use crate::frelu::FRelu;
use crate::layer::{ActivationLayer, Pointwise};
use std::fmt;
use std::str::FromStr;
use yolo_tensor::{Device, UnaryOp};

/// Which activation, with its constant parameters. Parse one from text with [`str::parse`];
/// [`fmt::Display`] writes the upstream spelling back, [`Activation::short_name`] the short one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// `x·σ(x)` (the YOLOv5 default).
    #[default]
    Silu,
    /// Exact GELU `0.5·x·(1+erf(x/√2))`.
    Gelu,
    /// GELU with the tanh approximation `0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³)))`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if `x > 0` else `slope·x`.
    LeakyRelu(f32),
    /// `x` if `x > 0` else `alpha·(eˣ − 1)`.
    Elu(f32),
    /// `x·relu6(x+3)/6`.
    Hardswish,
    /// `relu6(x+3)/6`.
    Hardsigmoid,
    /// `x·tanh(softplus(x))`.
    Mish,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `x` (no activation).
    Identity,
    /// FReLU `max(x, BN(DWConv3×3(x)))`, learnable per layer.
    FRelu,
    /// ACON-C `(p1−p2)·x·σ(β(p1−p2)x) + p2·x` with learnable per-channel `p1`, `p2`, `β`.
    AconC,
    /// Meta-ACON-C: ACON-C whose `β` comes from a squeeze network (`fc1`, `fc2`) over the
    /// spatial mean; hidden width `max(r, c/r)`.
    MetaAconC {
        /// Reduction ratio of the squeeze network (upstream default 16).
        r: usize,
    },
}

/// The upstream spellings [`Activation`] parses (as listed in unknown-name errors).
pub const UPSTREAM_NAMES: &[&str] = &[
    "nn.SiLU()",
    "nn.GELU()",
    "nn.GELU(approximate='tanh')",
    "nn.ReLU()",
    "nn.ReLU6()",
    "nn.LeakyReLU(negative_slope)",
    "nn.ELU(alpha)",
    "nn.Hardswish()",
    "nn.Hardsigmoid()",
    "nn.Mish()",
    "nn.Sigmoid()",
    "nn.Tanh()",
    "nn.Identity()",
    "FReLU",
    "AconC",
    "MetaAconC",
];

/// The short spellings [`Activation`] parses (case-insensitive; `:value` sets the parameter).
pub const SHORT_NAMES: &[&str] = &[
    "silu",
    "swish",
    "gelu",
    "gelu_tanh",
    "relu",
    "relu6",
    "leaky_relu[:slope]",
    "elu[:alpha]",
    "hardswish",
    "hardsigmoid",
    "mish",
    "sigmoid",
    "tanh",
    "identity",
    "frelu",
    "aconc",
    "metaaconc",
];

/// Activation kinds, before their arguments are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Silu,
    Gelu,
    GeluTanh,
    Relu,
    Relu6,
    LeakyRelu,
    Elu,
    Hardswish,
    Hardsigmoid,
    Mish,
    Sigmoid,
    Tanh,
    Identity,
    FRelu,
    AconC,
    MetaAconC,
}

/// Normalised names (lower case, no `_`/`-`) of every kind, upstream class names and short
/// names alike.
const ALIASES: &[(&str, Kind)] = &[
    ("silu", Kind::Silu),
    ("swish", Kind::Silu),
    ("gelu", Kind::Gelu),
    ("gelutanh", Kind::GeluTanh),
    ("relu", Kind::Relu),
    ("relu6", Kind::Relu6),
    ("leakyrelu", Kind::LeakyRelu),
    ("elu", Kind::Elu),
    ("hardswish", Kind::Hardswish),
    ("hardsigmoid", Kind::Hardsigmoid),
    ("mish", Kind::Mish),
    ("memoryefficientmish", Kind::Mish),
    ("sigmoid", Kind::Sigmoid),
    ("tanh", Kind::Tanh),
    ("identity", Kind::Identity),
    ("frelu", Kind::FRelu),
    ("aconc", Kind::AconC),
    ("metaaconc", Kind::MetaAconC),
];

/// PyTorch's default `negative_slope` of `nn.LeakyReLU()`.
const DEFAULT_LEAKY_SLOPE: f32 = 0.01;
/// Upstream default reduction ratio of `MetaAconC`.
const DEFAULT_META_ACON_R: usize = 16;

impl Activation {
    /// One of every kind, with the parameters YOLO configs use (LeakyReLU 0.1, ELU 1.0,
    /// MetaAconC r = 16): for tests, benchmarks and listings.
    pub fn all() -> Vec<Activation> {
        use Activation::*;
        vec![
            Silu,
            Gelu,
            GeluTanh,
            Relu,
            Relu6,
            LeakyRelu(0.1),
            Elu(1.0),
            Hardswish,
            Hardsigmoid,
            Mish,
            Sigmoid,
            Tanh,
            Identity,
            FRelu,
            AconC,
            MetaAconC {
                r: DEFAULT_META_ACON_R,
            },
        ]
    }

    /// The fused pointwise kernel of this activation; `None` for Identity and the
    /// channel-aware ones (FReLU, ACON).
    pub fn unary_op(&self) -> Option<UnaryOp> {
        use Activation::*;
        Some(match *self {
            Silu => UnaryOp::Silu,
            Gelu => UnaryOp::Gelu,
            GeluTanh => UnaryOp::GeluTanh,
            Relu => UnaryOp::Relu,
            Relu6 => UnaryOp::Relu6,
            LeakyRelu(s) => UnaryOp::LeakyRelu(s),
            Elu(a) => UnaryOp::Elu(a),
            Hardswish => UnaryOp::Hardswish,
            Hardsigmoid => UnaryOp::Hardsigmoid,
            Mish => UnaryOp::Mish,
            Sigmoid => UnaryOp::Sigmoid,
            Tanh => UnaryOp::Tanh,
            Identity | FRelu | AconC | MetaAconC { .. } => return None,
        })
    }

    /// Whether the activation is a function of each element alone (no channel count, no
    /// parameters): everything but FReLU, AconC and MetaAconC.
    pub fn is_pointwise(&self) -> bool {
        !self.has_parameters()
    }

    /// Whether layers of this activation own learnable parameters (FReLU, AconC, MetaAconC).
    pub fn has_parameters(&self) -> bool {
        matches!(
            self,
            Activation::FRelu | Activation::AconC | Activation::MetaAconC { .. }
        )
    }

    /// The short spelling (`silu`, `gelu_tanh`, `leaky_relu:0.1`, …); parses back to `self`.
    pub fn short_name(&self) -> String {
        use Activation::*;
        match *self {
            Silu => "silu".into(),
            Gelu => "gelu".into(),
            GeluTanh => "gelu_tanh".into(),
            Relu => "relu".into(),
            Relu6 => "relu6".into(),
            LeakyRelu(s) => format!("leaky_relu:{s}"),
            Elu(a) => format!("elu:{a}"),
            Hardswish => "hardswish".into(),
            Hardsigmoid => "hardsigmoid".into(),
            Mish => "mish".into(),
            Sigmoid => "sigmoid".into(),
            Tanh => "tanh".into(),
            Identity => "identity".into(),
            FRelu => "frelu".into(),
            AconC => "aconc".into(),
            MetaAconC { r } if r == DEFAULT_META_ACON_R => "metaaconc".into(),
            MetaAconC { r } => format!("metaaconc:{r}"),
        }
    }

    /// Builds one layer of this activation for `channels` input channels, on the CPU;
    /// parameters drawn from `init_seed` (see [`Activation::build_on`]).
    pub fn build(&self, channels: usize, init_seed: u64) -> Result<Box<dyn ActivationLayer>> {
        self.build_on(channels, init_seed, Device::Cpu)
    }

    /// Builds one layer of this activation for `channels` input channels on `device`. Every
    /// call makes fresh parameters (randn `p1`/`p2`, PyTorch's default conv initialisation),
    /// drawn from a generator seeded with `init_seed`. `channels` is ignored by the pointwise
    /// activations and must be positive for the others.
    pub fn build_on(
        &self,
        channels: usize,
        init_seed: u64,
        device: Device,
    ) -> Result<Box<dyn ActivationLayer>> {
        if self.has_parameters() && channels == 0 {
            return Err(Error::InvalidInput {
                activation: self.to_string(),
                detail: "cannot build a layer for 0 channels".into(),
            });
        }
        Ok(match *self {
            Activation::FRelu => Box::new(FRelu::new(channels, init_seed, device)?),
            Activation::AconC => Box::new(AconC::new(channels, init_seed, device)?),
            Activation::MetaAconC { r } => {
                Box::new(MetaAconC::new(channels, r, init_seed, device)?)
            }
            pointwise => Box::new(Pointwise::new(pointwise)?),
        })
    }

    /// Checks constant parameters: finite slopes, a positive reduction ratio.
    fn validate(self, spec: &str) -> Result<Activation> {
        let bad = |detail: String| Error::InvalidSpec {
            spec: spec.to_string(),
            detail,
        };
        match self {
            Activation::LeakyRelu(s) if !s.is_finite() => {
                Err(bad(format!("negative_slope must be finite, got {s}")))
            }
            Activation::Elu(a) if !a.is_finite() => {
                Err(bad(format!("alpha must be finite, got {a}")))
            }
            Activation::MetaAconC { r: 0 } => Err(bad("r must be positive".into())),
            ok => Ok(ok),
        }
    }
}

impl fmt::Display for Activation {
    /// The upstream spelling: `nn.SiLU()`, `nn.GELU(approximate='tanh')`,
    /// `nn.LeakyReLU(0.1)`, `FReLU`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Activation::*;
        match *self {
            Silu => f.write_str("nn.SiLU()"),
            Gelu => f.write_str("nn.GELU()"),
            GeluTanh => f.write_str("nn.GELU(approximate='tanh')"),
            Relu => f.write_str("nn.ReLU()"),
            Relu6 => f.write_str("nn.ReLU6()"),
            LeakyRelu(s) => write!(f, "nn.LeakyReLU({s})"),
            Elu(1.0) => f.write_str("nn.ELU()"),
            Elu(a) => write!(f, "nn.ELU(alpha={a})"),
            Hardswish => f.write_str("nn.Hardswish()"),
            Hardsigmoid => f.write_str("nn.Hardsigmoid()"),
            Mish => f.write_str("nn.Mish()"),
            Sigmoid => f.write_str("nn.Sigmoid()"),
            Tanh => f.write_str("nn.Tanh()"),
            Identity => f.write_str("nn.Identity()"),
            FRelu => f.write_str("FReLU"),
            AconC => f.write_str("AconC"),
            MetaAconC { r } if r == DEFAULT_META_ACON_R => f.write_str("MetaAconC"),
            MetaAconC { r } => write!(f, "MetaAconC(r={r})"),
        }
    }
}

impl FromStr for Activation {
    type Err = Error;

    /// Parses an upstream spelling (`nn.LeakyReLU(negative_slope=0.1)`) or a short one
    /// (`leaky_relu:0.1`); see the crate docs for the full list.
    fn from_str(s: &str) -> Result<Activation> {
        let text = s.trim();
        let (head, args) = split_call(text)?;
        let key = normalise(strip_module_prefix(head));
        let Some(kind) = ALIASES.iter().find(|(k, _)| *k == key).map(|&(_, k)| k) else {
            return Err(unknown(text));
        };
        let args = Args::new(text, kind, args);
        let act = match kind {
            Kind::Silu => args.plain(Activation::Silu)?,
            Kind::Relu => args.plain(Activation::Relu)?,
            Kind::Relu6 => args.plain(Activation::Relu6)?,
            Kind::Hardswish => args.plain(Activation::Hardswish)?,
            Kind::Hardsigmoid => args.plain(Activation::Hardsigmoid)?,
            Kind::Mish => args.plain(Activation::Mish)?,
            Kind::Sigmoid => args.plain(Activation::Sigmoid)?,
            Kind::Tanh => args.plain(Activation::Tanh)?,
            Kind::GeluTanh => args.plain(Activation::GeluTanh)?,
            // nn.Identity(*args, **kwargs) ignores everything it is given.
            Kind::Identity => {
                args.no_short_parameter()?;
                Activation::Identity
            }
            Kind::Gelu => args.gelu()?,
            Kind::LeakyRelu => Activation::LeakyRelu(
                args.float_then_inplace("negative_slope", DEFAULT_LEAKY_SLOPE)?,
            ),
            Kind::Elu => Activation::Elu(args.float_then_inplace("alpha", 1.0)?),
            Kind::FRelu => args.frelu()?,
            Kind::AconC => args.aconc()?,
            Kind::MetaAconC => args.meta_aconc()?,
        };
        act.validate(text)
    }
}

fn unknown(text: &str) -> Error {
    Error::UnknownActivation {
        name: text.to_string(),
        known: format!(
            "{}; short names (case-insensitive): {}",
            UPSTREAM_NAMES.join(", "),
            SHORT_NAMES.join(", ")
        ),
    }
}

/// Splits `name(args)` or `name:value` into the name and its raw arguments.
fn split_call(text: &str) -> Result<(&str, Vec<RawArg<'_>>)> {
    if let Some(open) = text.find('(') {
        let Some(inner) = text[open + 1..].strip_suffix(')') else {
            return Err(Error::InvalidSpec {
                spec: text.to_string(),
                detail: "unbalanced parentheses: expected `Name(args)`".into(),
            });
        };
        return Ok((text[..open].trim(), split_args(text, inner)?));
    }
    if let Some((name, value)) = text.split_once(':') {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::InvalidSpec {
                spec: text.to_string(),
                detail: "nothing after `:`".into(),
            });
        }
        return Ok((name.trim(), vec![RawArg { key: None, value }]));
    }
    Ok((text, Vec::new()))
}

/// One argument as written: `value` or `key=value` (quotes kept on `value`).
#[derive(Clone, Copy)]
struct RawArg<'a> {
    key: Option<&'a str>,
    value: &'a str,
}

/// Splits call arguments at top-level commas (not inside quotes or brackets).
fn split_args<'a>(spec: &str, inner: &'a str) -> Result<Vec<RawArg<'a>>> {
    let bad = |detail: &str| Error::InvalidSpec {
        spec: spec.to_string(),
        detail: detail.to_string(),
    };
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    for (i, ch) in inner.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad("unbalanced brackets"));
                }
            }
            (None, ',') if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() || depth != 0 {
        return Err(bad("unbalanced quotes or brackets"));
    }
    parts.push(&inner[start..]);
    // A trailing comma (`f(a,)`) and an empty call (`f()`) leave one empty part.
    if parts.last().is_some_and(|p| p.trim().is_empty()) {
        parts.pop();
    }
    let mut args = Vec::with_capacity(parts.len());
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            return Err(bad("empty argument"));
        }
        let arg = match keyword_split(p) {
            Some((k, v)) => RawArg {
                key: Some(k.trim()),
                value: v.trim(),
            },
            None => RawArg {
                key: None,
                value: p,
            },
        };
        args.push(arg);
    }
    Ok(args)
}

/// `key=value` when the first `=` comes before any quote.
fn keyword_split(p: &str) -> Option<(&str, &str)> {
    let eq = p.find('=')?;
    let quote = p.find(['\'', '"']).unwrap_or(usize::MAX);
    (eq < quote).then(|| (&p[..eq], &p[eq + 1..]))
}

/// `torch.nn.X` and `nn.X` name the same class as `X`.
fn strip_module_prefix(name: &str) -> &str {
    for prefix in ["torch.nn.", "nn."] {
        if name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return &name[prefix.len()..];
        }
    }
    name
}

/// Lower case without `_` and `-`: `LeakyReLU`, `leaky_relu` and `leaky-relu` all match.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The arguments of one spec, read against the signature of its kind.
struct Args<'a> {
    spec: &'a str,
    kind: Kind,
    args: Vec<RawArg<'a>>,
    /// Written as `name:value` rather than `Name(args)`.
    short: bool,
}

impl<'a> Args<'a> {
    fn new(spec: &'a str, kind: Kind, args: Vec<RawArg<'a>>) -> Self {
        let short = !spec.contains('(');
        Self {
            spec,
            kind,
            args,
            short,
        }
    }

    /// Short forms take a parameter only where the activation has one (slope, alpha, r…).
    fn no_short_parameter(&self) -> Result<()> {
        if self.short && !self.args.is_empty() {
            return Err(self.err("this activation takes no `:value` parameter"));
        }
        Ok(())
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::InvalidSpec {
            spec: self.spec.to_string(),
            detail: detail.into(),
        }
    }

    /// Binds the arguments to `params` (the upstream signature, in order), Python style:
    /// positionals first, then keywords; unknown keywords, duplicates and extras are errors.
    fn bind(&self, params: &[&str]) -> Result<Vec<Option<&'a str>>> {
        let mut bound: Vec<Option<&'a str>> = vec![None; params.len()];
        let mut seen_keyword = false;
        for (i, a) in self.args.iter().enumerate() {
            let slot = match a.key {
                None => {
                    if seen_keyword {
                        return Err(self.err("positional argument after a keyword argument"));
                    }
                    if params.is_empty() {
                        return Err(self.err("takes no arguments"));
                    }
                    if i >= params.len() {
                        return Err(self.err(format!(
                            "takes at most {} argument(s) ({}), got {}",
                            params.len(),
                            params.join(", "),
                            self.args.len()
                        )));
                    }
                    i
                }
                Some(k) => {
                    seen_keyword = true;
                    params.iter().position(|p| *p == k).ok_or_else(|| {
                        self.err(if params.is_empty() {
                            format!("unexpected keyword argument `{k}` (takes none)")
                        } else {
                            format!(
                                "unexpected keyword argument `{k}` (expected one of: {})",
                                params.join(", ")
                            )
                        })
                    })?
                }
            };
            if bound[slot].is_some() {
                return Err(self.err(format!("argument `{}` given twice", params[slot])));
            }
            bound[slot] = Some(a.value);
        }
        Ok(bound)
    }

    fn float(&self, name: &str, v: &str) -> Result<f32> {
        let x: f32 = v
            .parse()
            .map_err(|_| self.err(format!("`{name}` must be a number, got `{v}`")))?;
        Ok(x)
    }

    fn int(&self, name: &str, v: &str) -> Result<usize> {
        v.parse().map_err(|_| {
            self.err(format!(
                "`{name}` must be a non-negative integer, got `{v}`"
            ))
        })
    }

    /// `inplace` is accepted (as PyTorch's `True`/`False`) and ignored: outputs are fresh tensors.
    fn inplace(&self, v: Option<&str>) -> Result<()> {
        match v {
            None | Some("True" | "False" | "true" | "false" | "1" | "0") => Ok(()),
            Some(other) => Err(self.err(format!("`inplace` must be True or False, got `{other}`"))),
        }
    }

    /// Activations whose only argument is `inplace`.
    fn plain(&self, act: Activation) -> Result<Activation> {
        self.no_short_parameter()?;
        let params: &[&str] = if self.kind == Kind::GeluTanh {
            &[]
        } else {
            &["inplace"]
        };
        let b = self.bind(params)?;
        self.inplace(b.first().copied().flatten())?;
        Ok(act)
    }

    /// `nn.GELU(approximate='none' | 'tanh')`.
    fn gelu(&self) -> Result<Activation> {
        let b = self.bind(&["approximate"])?;
        match b[0].map(unquote) {
            None | Some("none") => Ok(Activation::Gelu),
            Some("tanh") => Ok(Activation::GeluTanh),
            Some(other) => Err(self.err(format!(
                "`approximate` must be 'none' or 'tanh', got `{other}`"
            ))),
        }
    }

    /// `nn.LeakyReLU(negative_slope, inplace)`, `nn.ELU(alpha, inplace)`.
    fn float_then_inplace(&self, name: &str, default: f32) -> Result<f32> {
        let b = self.bind(&[name, "inplace"])?;
        self.inplace(b[1])?;
        match b[0] {
            None => Ok(default),
            Some(v) => self.float(name, v),
        }
    }

    /// `FReLU(c1, k=3)`: `c1` is ignored (the layer gives it); only `k = 3` keeps the shape
    /// with upstream's fixed padding of 1.
    fn frelu(&self) -> Result<Activation> {
        self.no_short_parameter()?;
        let b = self.bind(&["c1", "k"])?;
        if let Some(k) = b[1] {
            if self.int("k", k)? != 3 {
                return Err(self.err(format!(
                    "only k=3 is supported (upstream pads by 1), got k={k}"
                )));
            }
        }
        Ok(Activation::FRelu)
    }

    /// `AconC(c1)`: `c1` is ignored.
    fn aconc(&self) -> Result<Activation> {
        self.no_short_parameter()?;
        self.bind(&["c1"])?;
        Ok(Activation::AconC)
    }

    /// `MetaAconC(c1, k=1, s=1, r=16)`; a short `metaaconc:r` sets `r`.
    fn meta_aconc(&self) -> Result<Activation> {
        if self.short {
            let Some(a) = self.args.first() else {
                return Ok(Activation::MetaAconC {
                    r: DEFAULT_META_ACON_R,
                });
            };
            let r = self.int("r", a.value)?;
            return Ok(Activation::MetaAconC { r });
        }
        let b = self.bind(&["c1", "k", "s", "r"])?;
        for (i, name) in [(1, "k"), (2, "s")] {
            if let Some(v) = b[i] {
                if self.int(name, v)? != 1 {
                    return Err(self.err(format!(
                        "only {name}=1 is supported (the squeeze network runs on a 1×1 mean), got {name}={v}"
                    )));
                }
            }
        }
        let r = match b[3] {
            Some(v) => self.int("r", v)?,
            None => DEFAULT_META_ACON_R,
        };
        Ok(Activation::MetaAconC { r })
    }
}

/// `'tanh'` / `"tanh"` / `tanh` → `tanh`.
fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arguments_at_top_level_commas() {
        let a = split_args("x", "1, r=16, 'a,b', [1, 2]").unwrap();
        let v: Vec<_> = a.iter().map(|a| (a.key, a.value)).collect();
        assert_eq!(
            v,
            vec![
                (None, "1"),
                (Some("r"), "16"),
                (None, "'a,b'"),
                (None, "[1, 2]")
            ]
        );
        assert!(split_args("x", "'open").is_err());
        assert!(split_args("x", "1,,2").is_err());
        assert!(split_args("x", "").unwrap().is_empty());
    }

    #[test]
    fn keyword_detection_ignores_equals_inside_quotes() {
        assert_eq!(keyword_split("a=1"), Some(("a", "1")));
        assert_eq!(keyword_split("'a=1'"), None);
    }
}
