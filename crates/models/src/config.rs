//! The model YAML schema of upstream YOLOv5/YOLOv7, parsed without evaluating Python:
//! `nc`, `depth_multiple`, `width_multiple`, `anchors`, optional `activation` and
//! `channel_multiple`, and the `backbone` + `head` rows `[from, number, module, args]`.

use crate::error::{ModelError, Result};
use serde_yaml_ng::Value;
use std::fmt;
use std::path::Path;

/// One argument of a YAML row, as upstream `eval` would see it, but never evaluated.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// `True` / `False`.
    Bool(bool),
    /// `None`.
    None,
    /// A bare name or Python expression kept as text: `nc`, `anchors`, `nn.Upsample`,
    /// `nn.LeakyReLU(0.1)`, or a string such as `nearest`.
    Text(String),
    /// A list.
    List(Vec<Arg>),
}

impl Arg {
    /// The integer value, if this is one (a float with no fraction counts too).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Arg::Int(i) => Some(*i),
            Arg::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Arg::Int(i) => Some(*i as f64),
            Arg::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// The truth value of an upstream argument (`True`, `False`, numbers).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Arg::Bool(b) => Some(*b),
            Arg::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
    fn from_value(v: &Value) -> Arg {
        match v {
            Value::Null => Arg::None,
            Value::Bool(b) => Arg::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(Arg::Int)
                .unwrap_or_else(|| Arg::Float(n.as_f64().unwrap_or(f64::NAN))),
            Value::String(s) => match s.trim() {
                "None" => Arg::None,
                "True" => Arg::Bool(true),
                "False" => Arg::Bool(false),
                t => Arg::Text(t.to_string()),
            },
            Value::Sequence(items) => Arg::List(items.iter().map(Arg::from_value).collect()),
            Value::Mapping(_) | Value::Tagged(_) => Arg::Text(format!("{v:?}")),
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Int(i) => write!(f, "{i}"),
            Arg::Float(x) => write!(f, "{x}"),
            Arg::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Arg::None => write!(f, "None"),
            Arg::Text(t) => write!(f, "{t}"),
            Arg::List(l) => {
                write!(f, "[")?;
                for (i, a) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// Where a row takes its input from: relative (-1) or absolute layer indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    /// One input.
    One(i64),
    /// Several inputs (Concat, Detect, …).
    Many(Vec<i64>),
}

impl From {
    /// The indices as a list.
    pub fn indices(&self) -> Vec<i64> {
        match self {
            From::One(i) => vec![*i],
            From::Many(v) => v.clone(),
        }
    }
}

impl fmt::Display for From {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            From::One(i) => write!(f, "{i}"),
            From::Many(v) => write!(f, "{v:?}"),
        }
    }
}

/// One `[from, number, module, args]` row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Input layer(s).
    pub from: From,
    /// Repeats before depth scaling.
    pub number: usize,
    /// Module name as written (`Conv`, `nn.Upsample`, `C3`, …).
    pub module: String,
    /// Arguments as written.
    pub args: Vec<Arg>,
}

/// Anchors: explicit pixel sizes per level, or a count per level for AutoAnchor to fill.
#[derive(Clone, Debug, PartialEq)]
pub enum Anchors {
    /// `[[w, h, w, h, …], …]` in pixels, one list per detection level.
    Sizes(Vec<Vec<f64>>),
    /// `anchors: 3`: this many anchors per level, computed later.
    Count(usize),
}

impl Anchors {
    /// Anchors per level.
    pub fn per_level(&self) -> usize {
        match self {
            Anchors::Sizes(s) => s.first().map_or(0, |l| l.len() / 2),
            Anchors::Count(n) => *n,
        }
    }
}

/// A parsed model YAML file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Number of classes.
    pub nc: usize,
    /// Depth gain applied to row repeats.
    pub depth_multiple: f64,
    /// Width gain applied to channel counts.
    pub width_multiple: f64,
    /// Channel rounding (upstream `channel_multiple`, default 8).
    pub channel_multiple: usize,
    /// Detection anchors.
    pub anchors: Anchors,
    /// Model-wide default activation (upstream spelling), if set.
    pub activation: Option<String>,
    /// Input channels (`ch`, default 3).
    pub ch: usize,
    /// Backbone rows then head rows, in order.
    pub rows: Vec<Row>,
    /// Number of backbone rows (the head starts at this index).
    pub backbone_len: usize,
    /// The original YAML text (stored with weights so a file alone rebuilds the model).
    pub yaml: String,
}

const KNOWN_KEYS: &[&str] = &[
    "nc",
    "depth_multiple",
    "width_multiple",
    "anchors",
    "backbone",
    "head",
    "activation",
    "channel_multiple",
    "ch",
    "kpt_shape",
    "scales",
    "inplace",
];

impl ModelConfig {
    /// Reads and parses a model YAML file; errors name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ModelConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        ModelConfig::from_yaml(&text).map_err(|e| e.in_file(path))
    }

    /// Parses model YAML text.
    pub fn from_yaml(text: &str) -> Result<ModelConfig> {
        let v: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let loc = e.location();
            ModelError::Yaml {
                file: None,
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }
        })?;
        let map = v.as_mapping().ok_or_else(|| {
            ModelError::schema(
                "the top level must be a mapping of keys (nc, anchors, backbone, head, …)",
            )
        })?;
        for k in map.keys() {
            let key = k.as_str().unwrap_or("");
            if !KNOWN_KEYS.contains(&key) {
                return Err(ModelError::schema(format!(
                    "unknown top-level key `{key}` (known: {})",
                    KNOWN_KEYS.join(", ")
                )));
            }
        }
        let get = |k: &str| map.get(Value::String(k.into()));
        let num = |k: &str, default: Option<f64>| -> Result<f64> {
            match get(k) {
                Some(Value::Number(n)) => n
                    .as_f64()
                    .ok_or_else(|| ModelError::schema(format!("`{k}` is not a number"))),
                Some(other) => Err(ModelError::schema(format!(
                    "`{k}` must be a number, got {other:?}"
                ))),
                None => default.ok_or_else(|| ModelError::schema(format!("missing key `{k}`"))),
            }
        };
        let nc = num("nc", None)?;
        if nc < 1.0 || nc.fract() != 0.0 {
            return Err(ModelError::schema(format!(
                "`nc` must be a positive integer, got {nc}"
            )));
        }
        let anchors = match get("anchors") {
            Some(Value::Number(n)) => {
                Anchors::Count(n.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    ModelError::schema("`anchors` count must be a positive integer")
                })? as usize)
            }
            Some(Value::Sequence(levels)) => {
                let mut out = Vec::new();
                for (i, l) in levels.iter().enumerate() {
                    let vals: Option<Vec<f64>> = l
                        .as_sequence()
                        .map(|s| s.iter().filter_map(Value::as_f64).collect());
                    match vals {
                        Some(v)
                            if !v.is_empty()
                                && v.len() % 2 == 0
                                && v.len() == l.as_sequence().map_or(0, |s| s.len()) =>
                        {
                            out.push(v)
                        }
                        _ => {
                            return Err(ModelError::schema(format!(
                                "anchors level {i} must be a list of w,h pixel pairs"
                            )))
                        }
                    }
                }
                if out.iter().any(|l| l.len() != out[0].len()) {
                    return Err(ModelError::schema(
                        "every anchors level needs the same number of anchors",
                    ));
                }
                Anchors::Sizes(out)
            }
            None => return Err(ModelError::schema("missing key `anchors`")),
            Some(other) => {
                return Err(ModelError::schema(format!(
                    "`anchors` must be a list or a count, got {other:?}"
                )))
            }
        };
        let activation = match get("activation") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ModelError::schema(format!(
                    "`activation` must be a string like nn.SiLU(), got {other:?}"
                )))
            }
        };
        let mut rows = Vec::new();
        let mut backbone_len = 0;
        for section in ["backbone", "head"] {
            let list = get(section)
                .and_then(Value::as_sequence)
                .ok_or_else(|| ModelError::schema(format!("missing or non-list `{section}`")))?;
            for r in list {
                let i = rows.len();
                rows.push(parse_row(r).map_err(|m| {
                    ModelError::Row {
                        index: i,
                        module: r
                            .as_sequence()
                            .and_then(|s| s.get(2))
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string(),
                        message: m,
                        file: None,
                    }
                })?);
            }
            if section == "backbone" {
                backbone_len = rows.len();
            }
        }
        Ok(ModelConfig {
            nc: nc as usize,
            depth_multiple: num("depth_multiple", Some(1.0))?,
            width_multiple: num("width_multiple", Some(1.0))?,
            channel_multiple: num("channel_multiple", Some(8.0))? as usize,
            anchors,
            activation,
            ch: num("ch", Some(3.0))? as usize,
            rows,
            backbone_len,
            yaml: text.to_string(),
        })
    }
}

fn parse_row(r: &Value) -> std::result::Result<Row, String> {
    let s = r
        .as_sequence()
        .ok_or("a row must be [from, number, module, args]")?;
    if s.len() != 4 {
        return Err(format!(
            "a row must have 4 entries [from, number, module, args], got {}",
            s.len()
        ));
    }
    let from = match &s[0] {
        Value::Number(n) => From::One(n.as_i64().ok_or("`from` must be an integer")?),
        Value::Sequence(v) => From::Many(
            v.iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| "`from` entries must be integers".to_string())
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        _ => return Err("`from` must be an integer or a list of integers".into()),
    };
    let number = s[1]
        .as_u64()
        .filter(|&n| n >= 1)
        .ok_or("`number` must be a positive integer")? as usize;
    let module = s[2]
        .as_str()
        .ok_or("`module` must be a name")?
        .trim()
        .to_string();
    let args = match &s[3] {
        Value::Sequence(a) => a.iter().map(Arg::from_value).collect(),
        _ => return Err("`args` must be a list".into()),
    };
    Ok(Row {
        from,
        number,
        module,
        args,
    })
}
