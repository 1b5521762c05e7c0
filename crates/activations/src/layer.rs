//! The [`ActivationLayer`] trait every built activation implements, and the pointwise layer.

use crate::error::{Error, Result};
use crate::spec::Activation;
use std::fmt;
use yolo_tensor::{Tensor, UnaryOp};

/// One activation layer, built for one place in a network by [`Activation::build`].
///
/// Layers own their parameters (leaf tensors with `requires_grad`), so gradients land in the
/// tensors [`ActivationLayer::named_parameters`] returns and an optimiser can update them in
/// place with [`Tensor::assign`]. Names are the upstream PyTorch `state_dict` keys relative to
/// the activation module (`conv.weight`, `p1`, …); the caller adds its prefix (`model.0.act.`).
pub trait ActivationLayer: fmt::Debug + Send + Sync {
    /// The spec this layer was built from.
    fn spec(&self) -> Activation;

    /// Applies the activation. `train` selects batch statistics (and running-stat updates)
    /// for layers with batch norm; the others ignore it.
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Learnable tensors with their upstream names, in `state_dict` order (empty by default).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Non-learnable state (batch-norm running statistics) with upstream names (empty by
    /// default). PyTorch's integer `num_batches_tracked` is not kept.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Sets `eps` and `momentum` of any batch norm inside (upstream's `initialize_weights`
    /// sets 1e-3 and 0.03 model-wide); a no-op for layers without one.
    fn set_batch_norm(&mut self, _eps: f32, _momentum: f32) {}

    /// The single fused element-wise op this activation is, if it is one (then a preceding
    /// batch norm may run it in the same pass, see `Tensor::batch_norm2d_act_train`).
    fn unary_op(&self) -> Option<UnaryOp> {
        None
    }
}

/// A pointwise activation: one fused kernel forward and one backward from the saved input
/// ([`Tensor::unary`]); Identity returns its input.
#[derive(Clone, Debug)]
pub struct Pointwise {
    spec: Activation,
    op: Option<UnaryOp>,
}

impl Pointwise {
    /// The layer of a pointwise `spec`; errors for the channel-aware activations.
    pub fn new(spec: Activation) -> Result<Pointwise> {
        if !spec.is_pointwise() {
            return Err(Error::InvalidInput {
                activation: spec.to_string(),
                detail: "not a pointwise activation: build it with Activation::build".into(),
            });
        }
        Ok(Pointwise {
            spec,
            op: spec.unary_op(),
        })
    }
}

impl ActivationLayer for Pointwise {
    fn spec(&self) -> Activation {
        self.spec
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(match self.op {
            Some(op) => x.unary(op),
            None => x.clone(),
        })
    }

    fn unary_op(&self) -> Option<UnaryOp> {
        self.op
    }
}

/// Checks that `x` is N×C×H×W with `channels` channels (channel-aware layers).
pub(crate) fn check_nchw(spec: Activation, x: &Tensor, channels: usize) -> Result<()> {
    match *x.shape() {
        [_, c, _, _] if c == channels => Ok(()),
        _ => Err(Error::InvalidInput {
            activation: spec.to_string(),
            detail: format!(
                "expects an N×{channels}×H×W input (built for {channels} channels), got {:?}",
                x.shape()
            ),
        }),
    }
}
