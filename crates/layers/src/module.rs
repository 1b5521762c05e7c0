//! The traits every block implements.

use crate::error::{invalid, Result};
use crate::onnx::{unsupported, GraphBuilder, Value};
use std::fmt;
use yolo_tensor::Tensor;

/// Whether a named tensor is learned or a running statistic / constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A learnable parameter (counted in "parameters", gets gradients).
    Param,
    /// A buffer (BN running statistics, anchors): saved, not learned.
    Buffer,
}

/// Callback of [`Layer::visit`]: (full name, tensor, kind).
pub type Visitor<'a> = dyn FnMut(&str, &Tensor, Kind) + 'a;

/// Joins a prefix and a name with a dot (no dot after an empty prefix).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Each part upsampled (nearest) by its factor.
pub fn upsampled(parts: &[(&Tensor, usize)]) -> Result<Vec<Tensor>> {
    parts
        .iter()
        .map(|&(t, f)| match f {
            1 => Ok(t.clone()),
            f => Ok(t.upsample_nearest2d(f, f)?),
        })
        .collect()
}

/// A block with one input and one output.
pub trait Module: fmt::Debug + Send + Sync {
    /// Runs the block; `train` selects batch statistics in BN and training-time behaviour.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// Reports every parameter and buffer under `prefix` with upstream names.
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>);
    /// Folds inference-time structure (Conv+BN, RepConv branches, implicit layers).
    fn fuse(&mut self) -> Result<()> {
        Ok(())
    }
    /// `forward(concat(parts, 1))`: blocks that open with 1×1 convolutions read the parts in
    /// place instead of a joined copy (the default joins them).
    fn forward_cat(&self, parts: &[&Tensor], train: bool) -> Result<Tensor> {
        self.forward(&Tensor::concat(parts, 1)?, train)
    }
    /// [`Module::forward_cat`] of parts each upsampled (nearest) by its factor, not yet
    /// upsampled: blocks that open with 1×1 convolutions take those parts' products at their
    /// own size (the default upsamples them).
    fn forward_cat_up(&self, parts: &[(&Tensor, usize)], train: bool) -> Result<Tensor> {
        let full = upsampled(parts)?;
        self.forward_cat(&full.iter().collect::<Vec<_>>(), train)
    }
    /// The factor of a nearest upsampling block (both dimensions), which a model may hand
    /// on not yet applied ([`Layer::run_joined_up`]).
    fn upsample_factor(&self) -> Option<usize> {
        None
    }
    /// Appends this block's inference graph to `g`, from `x` to the returned value, with its
    /// tensors as initializers named under `prefix` (the names [`Module::visit`] reports).
    /// Blocks without an export return [`crate::LayerError::Unsupported`].
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let _ = (g, prefix, x);
        Err(unsupported::<Self>())
    }
}

/// A node of the model graph built from one YAML row: one or more inputs, one output.
///
/// Its methods have their own names so that a type implementing both traits (every
/// [`Module`], through the blanket impl) never makes a call ambiguous.
pub trait Layer: fmt::Debug + Send + Sync {
    /// Runs the node on its inputs (in the row's `from` order).
    fn run(&self, xs: &[Tensor], train: bool) -> Result<Tensor>;
    /// Reports every parameter and buffer under `prefix`.
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>);
    /// Folds inference-time structure.
    fn fuse_layer(&mut self) -> Result<()> {
        Ok(())
    }
    /// Appends this node's inference graph to `g` (see [`Module::export_onnx`]); a detection
    /// head appends its decoded predictions, as [`Layer::run`] returns them.
    fn export_onnx_layer(&self, g: &mut GraphBuilder, prefix: &str, xs: &[Value]) -> Result<Value> {
        let _ = (g, prefix, xs);
        Err(unsupported::<Self>())
    }
    /// Runs the node on the channel concatenation of `parts` (its one input, not joined yet:
    /// see [`Layer::joins_channels`]).
    fn run_joined(&self, parts: &[Tensor], train: bool) -> Result<Tensor> {
        let refs: Vec<&Tensor> = parts.iter().collect();
        self.run(&[Tensor::concat(&refs, 1)?], train)
    }
    /// [`Layer::run_joined`] of parts each upsampled (nearest) by its factor, not yet
    /// upsampled (see [`Module::forward_cat_up`]).
    fn run_joined_up(&self, parts: &[(Tensor, usize)], train: bool) -> Result<Tensor> {
        let refs: Vec<(&Tensor, usize)> = parts.iter().map(|(t, f)| (t, *f)).collect();
        self.run_joined(&upsampled(&refs)?, train)
    }
    /// The factor of a nearest upsampling node (see [`Module::upsample_factor`]).
    fn upsample_factor(&self) -> Option<usize> {
        None
    }
    /// Whether this node only joins N×C×H×W inputs along the channels (a `Concat` on
    /// dimension 1): a model may then hand the parts to the next node's
    /// [`Layer::run_joined`] instead of copying them.
    fn joins_channels(&self) -> bool {
        false
    }
    /// The detection head, if this node is one.
    fn as_detect(&self) -> Option<&crate::Detect> {
        None
    }
    /// The detection head, mutably, if this node is one.
    fn as_detect_mut(&mut self) -> Option<&mut crate::Detect> {
        None
    }
    /// Runs this node as the model's detection head (`None` if it is not one). Heads that wrap
    /// a [`crate::Detect`] with more structure (YOLOv7's IDetect, IAuxDetect) override this.
    fn forward_head(&self, xs: &[Tensor], train: bool) -> Option<Result<crate::DetectOutput>> {
        self.as_detect().map(|d| d.forward_levels(xs, train))
    }
    /// Gives the head the strides found by the model's first forward, and the bias priors.
    fn set_head_strides(&mut self, stride: Vec<f32>, init_biases: bool) -> Option<Result<()>> {
        self.as_detect_mut()
            .map(|d| d.set_strides(stride, init_biases))
    }
}

impl<M: Module> Layer for M {
    fn run(&self, xs: &[Tensor], train: bool) -> Result<Tensor> {
        match xs {
            [x] => Module::forward(self, x, train),
            _ => invalid(format!("{self:?} takes one input, got {}", xs.len())),
        }
    }
    fn run_joined(&self, parts: &[Tensor], train: bool) -> Result<Tensor> {
        let refs: Vec<&Tensor> = parts.iter().collect();
        Module::forward_cat(self, &refs, train)
    }
    fn run_joined_up(&self, parts: &[(Tensor, usize)], train: bool) -> Result<Tensor> {
        let refs: Vec<(&Tensor, usize)> = parts.iter().map(|(t, f)| (t, *f)).collect();
        Module::forward_cat_up(self, &refs, train)
    }
    fn upsample_factor(&self) -> Option<usize> {
        Module::upsample_factor(self)
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        Module::visit(self, prefix, f)
    }
    fn fuse_layer(&mut self) -> Result<()> {
        Module::fuse(self)
    }
    fn export_onnx_layer(&self, g: &mut GraphBuilder, prefix: &str, xs: &[Value]) -> Result<Value> {
        match xs {
            [x] => Module::export_onnx(self, g, prefix, x),
            _ => invalid(format!("{self:?} takes one input, got {}", xs.len())),
        }
    }
}

/// `nn.Sequential` of single-input blocks: children named `0`, `1`, ….
#[derive(Debug, Default)]
pub struct Sequential(pub Vec<Box<dyn Module>>);

impl Module for Sequential {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for m in &self.0 {
            y = m.forward(&y, train)?;
        }
        Ok(y)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        for (i, m) in self.0.iter().enumerate() {
            m.visit(&join(prefix, &i.to_string()), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|m| m.fuse())
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let mut y = x.clone();
        for (i, m) in self.0.iter().enumerate() {
            y = m.export_onnx(g, &join(prefix, &i.to_string()), &y)?;
        }
        Ok(y)
    }
}

/// `nn.Identity`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl Module for Identity {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, _g: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        Ok(x.clone())
    }
}

/// Counts learnable parameters of a layer.
pub fn count_params(l: &dyn Layer) -> usize {
    let mut n = 0;
    l.visit_layer("", &mut |_, t, k| {
        if k == Kind::Param {
            n += t.numel();
        }
    });
    n
}

/// Every (name, tensor, kind) of a layer, in visiting order.
pub fn named_tensors(l: &dyn Layer, prefix: &str) -> Vec<(String, Tensor, Kind)> {
    let mut v = Vec::new();
    l.visit_layer(prefix, &mut |n, t, k| v.push((n.to_string(), t.clone(), k)));
    v
}
