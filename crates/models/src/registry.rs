//! The module registry: maps a YAML module name to a builder that applies upstream's channel
//! rules and constructs the block. A user's crate adds its own with [`Registry::register`].

use crate::config::{Anchors, Arg};
use std::collections::BTreeMap;
use std::sync::Arc;
use yolo_activations::Activation;
use yolo_layers::{Act, Ctx, Layer};

/// Everything a builder sees of one YAML row, after upstream's substitutions (`nc`, `anchors`)
/// and depth scaling.
pub struct RowInput<'a> {
    /// Row index.
    pub index: usize,
    /// Module name as written.
    pub module: &'a str,
    /// Channels of each input (in `from` order).
    pub ch_in: Vec<usize>,
    /// Arguments as written, with `nc` and `anchors` substituted.
    pub args: Vec<Arg>,
    /// Repeats after the depth gain.
    pub n: usize,
    /// Width gain.
    pub gw: f64,
    /// Channel rounding multiple.
    pub ch_mul: usize,
    /// Number of classes.
    pub nc: usize,
    /// Detection outputs per level (`na · (nc + 5)`); never width-scaled.
    pub no: usize,
    /// The model's anchors.
    pub anchors: &'a Anchors,
    /// Initialiser and default activation.
    pub ctx: &'a Ctx,
}

/// What a builder returns.
pub struct Built {
    /// The block.
    pub layer: Box<dyn Layer>,
    /// Its output channels.
    pub c2: usize,
    /// Its final arguments, for the layer table (upstream prints them after the channel rules).
    pub args: Vec<Arg>,
    /// Whether the builder used the repeat count itself (C3-like blocks); otherwise the
    /// builder is called `n` times and the blocks run in sequence, as upstream's
    /// `nn.Sequential`.
    pub uses_repeats: bool,
}

/// A builder: reads the row, returns the block or a message saying what was wrong.
pub type BuildFn = dyn Fn(&RowInput<'_>) -> Result<Built, String> + Send + Sync;

/// Upstream `make_divisible`: the smallest multiple of `d` at or above `x`.
pub fn make_divisible(x: f64, d: usize) -> usize {
    ((x / d as f64).ceil() as usize) * d
}

impl RowInput<'_> {
    /// The first input's channels (upstream `ch[f]`).
    pub fn c1(&self) -> usize {
        self.ch_in[0]
    }

    /// Argument `i`, if given.
    pub fn arg(&self, i: usize) -> Option<&Arg> {
        self.args.get(i)
    }

    /// Argument `i` as a non-negative integer, or `default` if absent.
    pub fn usize_or(&self, i: usize, default: usize) -> Result<usize, String> {
        match self.args.get(i) {
            None => Ok(default),
            Some(a) => a
                .as_int()
                .filter(|&v| v >= 0)
                .map(|v| v as usize)
                .ok_or_else(|| format!("argument {i} must be a non-negative integer, got {a}")),
        }
    }

    /// Argument `i` as an optional integer (`None` allowed), or `None` if absent.
    pub fn opt_usize(&self, i: usize) -> Result<Option<usize>, String> {
        match self.args.get(i) {
            None | Some(Arg::None) => Ok(None),
            Some(_) => self.usize_or(i, 0).map(Some),
        }
    }

    /// Argument `i` as a number, or `default`.
    pub fn f64_or(&self, i: usize, default: f64) -> Result<f64, String> {
        match self.args.get(i) {
            None => Ok(default),
            Some(a) => a
                .as_f64()
                .ok_or_else(|| format!("argument {i} must be a number, got {a}")),
        }
    }

    /// Argument `i` as a boolean, or `default`.
    pub fn bool_or(&self, i: usize, default: bool) -> Result<bool, String> {
        match self.args.get(i) {
            None => Ok(default),
            Some(a) => a
                .as_bool()
                .ok_or_else(|| format!("argument {i} must be True or False, got {a}")),
        }
    }

    /// Argument `i` as an activation choice: absent or `True` → model default, `False` → none,
    /// a name such as `nn.LeakyReLU(0.1)` → that activation.
    pub fn act(&self, i: usize) -> Result<Act, String> {
        match self.args.get(i) {
            None | Some(Arg::Bool(true)) => Ok(Act::Default),
            Some(Arg::Bool(false)) | Some(Arg::None) => Ok(Act::Off),
            Some(Arg::Text(t)) => t
                .parse::<Activation>()
                .map(Act::Use)
                .map_err(|e| e.to_string()),
            Some(a) => Err(format!(
                "argument {i} must be an activation, True or False, got {a}"
            )),
        }
    }

    /// Upstream's output-channel rule for conv-like rows: `args[0]` scaled by the width gain
    /// and rounded up to the channel multiple, unless it is the detection output size.
    pub fn c2_scaled(&self) -> Result<usize, String> {
        let c2 = self.usize_or(0, 0)?;
        if c2 == 0 {
            return Err("argument 0 (output channels) must be a positive integer".into());
        }
        Ok(if c2 == self.no {
            c2
        } else {
            make_divisible(c2 as f64 * self.gw, self.ch_mul)
        })
    }

    /// The final argument list of a conv-like row: `[c1, c2, *args[1:]]`.
    pub fn conv_args(&self, c2: usize) -> Vec<Arg> {
        let mut a = vec![Arg::Int(self.c1() as i64), Arg::Int(c2 as i64)];
        a.extend(self.args.iter().skip(1).cloned());
        a
    }
}

/// Name → builder.
#[derive(Clone, Default)]
pub struct Registry {
    map: BTreeMap<String, Arc<BuildFn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Every built-in YOLOv5/YOLOv7 module.
    pub fn with_builtins() -> Registry {
        let mut r = Registry::empty();
        crate::builtins::register_all(&mut r);
        r
    }

    /// Adds (or replaces) a module under `name` (as it appears in YAML).
    pub fn register(
        &mut self,
        name: &str,
        f: impl Fn(&RowInput<'_>) -> Result<Built, String> + Send + Sync + 'static,
    ) {
        self.map.insert(name.to_string(), Arc::new(f));
    }

    /// The builder for `name`; `models.common.X` and `X` are the same name.
    pub fn get(&self, name: &str) -> Option<Arc<BuildFn>> {
        let short = name.rsplit_once("models.common.").map_or(name, |(_, s)| s);
        self.map.get(name).or_else(|| self.map.get(short)).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
}
