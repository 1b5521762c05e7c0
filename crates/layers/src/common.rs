//! Primitive layers: `nn.Conv2d`, `nn.BatchNorm2d`, `nn.Linear`, and YOLO's `Conv`
//! (convolution + batch norm + activation) with Conv+BN folding.

use crate::error::{invalid, Result};
use crate::flops;
use crate::init::Init;
use crate::module::{join, Kind, Module, Visitor};
use crate::onnx::{export_activation, tensor_initializer, GraphBuilder, Value, Window};
use yolo_activations::{Activation, ActivationLayer};
use yolo_tensor::{Conv2dParams, Tensor};

/// Upstream `autopad`: "same" padding for odd kernels, accounting for dilation.
pub fn autopad(k: usize, p: Option<usize>, d: usize) -> usize {
    p.unwrap_or_else(|| (if d > 1 { d * (k - 1) + 1 } else { k }) / 2)
}

/// `nn.Conv2d`: weight Cout×(Cin/groups)×kh×kw, optional bias.
#[derive(Debug)]
pub struct Conv2d {
    /// `weight`.
    pub weight: Tensor,
    /// `bias`, if any.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub params: Conv2dParams,
}

impl Conv2d {
    /// A conv with PyTorch's default initialisation.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        g: usize,
        d: usize,
        bias: bool,
        init: &Init,
    ) -> Result<Conv2d> {
        if g == 0 || !c1.is_multiple_of(g) || !c2.is_multiple_of(g) {
            return invalid(format!(
                "Conv2d: channels {c1}→{c2} not divisible by groups {g}"
            ));
        }
        if c1 == 0 || c2 == 0 || k.0 == 0 || k.1 == 0 || s.0 == 0 || s.1 == 0 {
            return invalid(format!(
                "Conv2d: zero size in channels {c1}→{c2}, kernel {k:?} or stride {s:?}"
            ));
        }
        let fan_in = c1 / g * k.0 * k.1;
        Ok(Conv2d {
            weight: init.kaiming_uniform(&[c2, c1 / g, k.0, k.1], fan_in)?,
            bias: if bias {
                Some(init.kaiming_uniform(&[c2], fan_in)?)
            } else {
                None
            },
            params: Conv2dParams {
                stride: s,
                padding: p,
                dilation: (d, d),
                groups: g,
            },
        })
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Conv2d {
    /// `act(conv(x))`, the activation fused into the convolution when nothing records it
    /// ([`Tensor::conv2d_act`]).
    pub fn forward_act(&self, x: &Tensor, act: yolo_tensor::UnaryOp) -> Result<Tensor> {
        let y = x.conv2d_act(&self.weight, self.bias.as_ref(), self.params, act)?;
        self.count_flops(&y);
        Ok(y)
    }

    /// `act(conv(x)) + residual`, the activation and the sum fused into the convolution when
    /// nothing records them ([`Tensor::conv2d_act_add`]).
    pub fn forward_act_add(
        &self,
        x: &Tensor,
        act: yolo_tensor::UnaryOp,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let y = x.conv2d_act_add(&self.weight, self.bias.as_ref(), self.params, act, residual)?;
        self.count_flops(&y);
        Ok(y)
    }

    /// A 1×1 conv's output as N×heads×H×W×(Cout/heads) ([`Tensor::conv1x1_heads`]).
    pub fn forward_heads(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let y = x.conv1x1_heads(&self.weight, self.bias.as_ref(), self.params, heads)?;
        self.count_flops(&y);
        Ok(y)
    }

    /// Adds this conv's multiply-accumulates to the FLOP count (when one is being taken).
    fn count_flops(&self, y: &Tensor) {
        if flops::counting() {
            let w = self.weight.shape();
            flops::add((y.numel() * w[1] * w[2] * w[3]) as f64);
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.bias.as_ref(), self.params)?;
        self.count_flops(&y);
        Ok(y)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "weight"), &self.weight, Kind::Param);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b, Kind::Param);
        }
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let w = tensor_initializer(g, &join(prefix, "weight"), &self.weight)?;
        let b = match &self.bias {
            Some(b) => Some(tensor_initializer(g, &join(prefix, "bias"), b)?),
            None => None,
        };
        let p = self.params;
        let win = Window {
            kernel: (self.weight.shape()[2], self.weight.shape()[3]),
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
        };
        Ok(g.conv(x, &w, b.as_ref(), win, p.groups)?)
    }
}

/// `nn.BatchNorm2d` with YOLO's settings (eps 1e-3, momentum 0.03, set by upstream after
/// construction).
#[derive(Debug)]
pub struct BatchNorm2d {
    /// `weight` (γ).
    pub weight: Tensor,
    /// `bias` (β).
    pub bias: Tensor,
    /// `running_mean`.
    pub running_mean: Tensor,
    /// `running_var`.
    pub running_var: Tensor,
    /// ε.
    pub eps: f32,
    /// Running-stat momentum (PyTorch convention).
    pub momentum: f32,
    /// The model's `--sync-bn` switch (statistics over all replicas when set).
    pub sync: crate::init::SyncBn,
}

impl BatchNorm2d {
    /// BN over `c` channels: γ=1, β=0, mean 0, var 1.
    pub fn new(c: usize, init: &Init) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            weight: init.constant(&[c], 1.0)?,
            bias: init.constant(&[c], 0.0)?,
            running_mean: init.buffer(&[c], 0.0)?,
            running_var: init.buffer(&[c], 1.0)?,
            eps: 1e-3,
            momentum: 0.03,
            sync: init.sync_bn.clone(),
        })
    }

    /// Per-channel (scale, shift) of the inference-time affine map.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let _g = yolo_tensor::no_grad();
        let scale = self
            .weight
            .mul(&self.running_var.add_scalar(self.eps).sqrt().recip())?;
        let shift = self.bias.sub(&self.running_mean.mul(&scale)?)?;
        Ok((scale, shift))
    }
}

impl BatchNorm2d {
    /// Training-mode batch norm followed by the pointwise `act`, as one fused op
    /// ([`Tensor::batch_norm2d_act_train`]): the same values as `act(forward(x, true))`.
    pub fn forward_train_act(&self, x: &Tensor, act: yolo_tensor::UnaryOp) -> Result<Tensor> {
        flops::add(4.0 * x.numel() as f64);
        self.train_stats(x, Some(act))
    }

    /// Training-mode batch norm (then `act`): batch statistics of this replica, or of all
    /// replicas when the model's `--sync-bn` switch holds a collective.
    fn train_stats(&self, x: &Tensor, act: Option<yolo_tensor::UnaryOp>) -> Result<Tensor> {
        let (w, b, rm, rv) = (
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        );
        Ok(match self.sync.get() {
            Some(sync) => {
                x.batch_norm2d_sync_train(w, b, rm, rv, self.momentum, self.eps, act, &sync)?
            }
            None => x.batch_norm2d_act_train(w, b, rm, rv, self.momentum, self.eps, act)?,
        })
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // thop charges an affine batch norm 2·2 operations per element.
        flops::add(4.0 * x.numel() as f64);
        Ok(if train {
            self.train_stats(x, None)?
        } else {
            x.batch_norm2d_eval(
                &self.weight,
                &self.bias,
                &self.running_mean,
                &self.running_var,
                self.eps,
            )?
        })
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "weight"), &self.weight, Kind::Param);
        f(&join(prefix, "bias"), &self.bias, Kind::Param);
        f(
            &join(prefix, "running_mean"),
            &self.running_mean,
            Kind::Buffer,
        );
        f(
            &join(prefix, "running_var"),
            &self.running_var,
            Kind::Buffer,
        );
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let mut p = Vec::with_capacity(4);
        for (name, t) in [
            ("weight", &self.weight),
            ("bias", &self.bias),
            ("running_mean", &self.running_mean),
            ("running_var", &self.running_var),
        ] {
            p.push(tensor_initializer(g, &join(prefix, name), t)?);
        }
        Ok(g.batch_norm(x, [&p[0], &p[1], &p[2], &p[3]], self.eps)?)
    }
}

/// `nn.Linear` on the last axis.
#[derive(Debug)]
pub struct Linear {
    /// `weight`, out×in.
    pub weight: Tensor,
    /// `bias`, if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer with PyTorch's default initialisation.
    pub fn new(c_in: usize, c_out: usize, bias: bool, init: &Init) -> Result<Linear> {
        Ok(Linear {
            weight: init.kaiming_uniform(&[c_out, c_in], c_in)?,
            bias: if bias {
                Some(init.kaiming_uniform(&[c_out], c_in)?)
            } else {
                None
            },
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = x.matmul(&self.weight.transpose(0, 1)?)?;
        if flops::counting() {
            flops::add((y.numel() * self.weight.shape()[1]) as f64);
        }
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "weight"), &self.weight, Kind::Param);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b, Kind::Param);
        }
    }
}

/// How a block's activation is chosen: upstream's `act=True` (the model default), `act=False`
/// (none) or an explicit module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// The model-wide default (`Conv.default_act`).
    Default,
    /// No activation (`nn.Identity`).
    Off,
    /// This activation.
    Use(Activation),
}

impl Act {
    /// Resolves against the model default.
    pub fn resolve(self, default: Activation) -> Activation {
        match self {
            Act::Default => default,
            Act::Off => Activation::Identity,
            Act::Use(a) => a,
        }
    }
}

/// Everything blocks need while being built: the initialiser and the default activation.
#[derive(Debug)]
pub struct Ctx {
    /// Parameter initialisation.
    pub init: Init,
    /// The model-wide default activation (`Conv.default_act`).
    pub default_act: Activation,
}

impl Ctx {
    /// A context with the given seed and default activation.
    pub fn new(seed: u64, default_act: Activation) -> Ctx {
        Ctx {
            init: Init::new(seed),
            default_act,
        }
    }
}

/// YOLO's `Conv`: `act(bn(conv(x)))`, or `act(conv(x))` once fused.
#[derive(Debug)]
pub struct Conv {
    /// The convolution (`conv`).
    pub conv: Conv2d,
    /// The batch norm (`bn`), until fused.
    pub bn: Option<BatchNorm2d>,
    /// The activation (`act`).
    pub act: Box<dyn ActivationLayer>,
}

impl Conv {
    /// `Conv(c1, c2, k, s, p, g, d, act)` with square kernel/stride.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        p: Option<usize>,
        g: usize,
        d: usize,
        act: Act,
        ctx: &Ctx,
    ) -> Result<Conv> {
        let p = autopad(k, p, d);
        Conv::rect(c1, c2, (k, k), (s, s), (p, p), g, d, act, ctx)
    }

    /// A conv with separate kernel/stride/padding per axis (CrossConv's 1×k and k×1, see `Bottleneck::cross`).
    #[allow(clippy::too_many_arguments)]
    pub fn rect(
        c1: usize,
        c2: usize,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
        g: usize,
        d: usize,
        act: Act,
        ctx: &Ctx,
    ) -> Result<Conv> {
        let conv = Conv2d::new(c1, c2, k, s, p, g, d, false, &ctx.init)?;
        let bn = BatchNorm2d::new(c2, &ctx.init)?;
        let act =
            act.resolve(ctx.default_act)
                .build_on(c2, ctx.init.next_seed(), ctx.init.device)?;
        Ok(Conv {
            conv,
            bn: Some(bn),
            act,
        })
    }
}

impl Conv {
    /// `forward(x) + residual`; once fused (no BN) with a pointwise activation, the sum is
    /// added by the convolution's kernels ([`Tensor::conv2d_act_add`]).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(op) = self.fused_op() {
            return self.conv.forward_act_add(x, op, residual);
        }
        Ok(residual.add(&Module::forward(self, x, train)?)?)
    }

    /// Whether [`Module::forward_cat`] reads the parts in place rather than joining them:
    /// fused (no BN), a pointwise activation, and no gradient to record for the weights.
    pub fn joins_in_place(&self) -> bool {
        let records = yolo_tensor::is_grad_enabled()
            && (self.conv.weight.requires_grad()
                || self.conv.bias.as_ref().is_some_and(|b| b.requires_grad()));
        self.fused_op().is_some() && !records
    }

    /// The activation the convolution's kernels can apply themselves: once fused (no BN) and
    /// when it is one pointwise op.
    fn fused_op(&self) -> Option<yolo_tensor::UnaryOp> {
        if self.bn.is_some() {
            return None;
        }
        self.act.unary_op()
    }
}

/// Folds a batch norm into the preceding conv: w·scale, (b − mean)·scale + β.
pub fn fold_bn(conv: &mut Conv2d, bn: &BatchNorm2d) -> Result<()> {
    let _g = yolo_tensor::no_grad();
    let (scale, shift) = bn.scale_shift()?;
    let c = conv.c_out();
    let w = conv
        .weight
        .mul(&scale.reshape(&[c, 1, 1, 1])?)?
        .detach()
        .with_grad();
    let b = match &conv.bias {
        Some(b) => b.mul(&scale)?.add(&shift)?,
        None => shift,
    };
    conv.weight = w;
    conv.bias = Some(b.detach().with_grad());
    Ok(())
}

impl Module for Conv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(op) = self.fused_op() {
            // Fused (no BN): the activation inside the convolution's kernels.
            return self.conv.forward_act(x, op);
        }
        let y = Module::forward(&self.conv, x, train)?;
        if let (true, Some(bn), Some(op)) = (train, &self.bn, self.act.unary_op()) {
            // BN + activation in one pass (no normalised intermediate kept for backward).
            return bn.forward_train_act(&y, op);
        }
        let y = match &self.bn {
            Some(bn) => bn.forward(&y, train)?,
            None => y,
        };
        Ok(self.act.forward(&y, train)?)
    }
    /// Once fused (no BN) with a pointwise activation, a 1×1 convolution reads the parts in
    /// place where it can ([`Module::forward_cat_up`], every factor 1).
    fn forward_cat(&self, parts: &[&Tensor], train: bool) -> Result<Tensor> {
        let ones: Vec<(&Tensor, usize)> = parts.iter().map(|&t| (t, 1)).collect();
        self.forward_cat_up(&ones, train)
    }
    /// As [`Module::forward_cat`], an upsampled part's products taken at its own size
    /// ([`Tensor::concat_conv2d_up`]).
    fn forward_cat_up(&self, parts: &[(&Tensor, usize)], train: bool) -> Result<Tensor> {
        if let Some(op) = self.fused_op() {
            let c = &self.conv;
            let y =
                Tensor::concat_conv2d_up(parts, &c.weight, c.bias.as_ref(), c.params, Some(op))?;
            c.count_flops(&y);
            return Ok(y);
        }
        let full = crate::module::upsampled(parts)?;
        let refs: Vec<&Tensor> = full.iter().collect();
        self.forward(&Tensor::concat(&refs, 1)?, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv.visit(&join(prefix, "conv"), f);
        if let Some(bn) = &self.bn {
            bn.visit(&join(prefix, "bn"), f);
        }
        visit_act(self.act.as_ref(), &join(prefix, "act"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        if let Some(bn) = self.bn.take() {
            fold_bn(&mut self.conv, &bn)?;
        }
        Ok(())
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let mut y = self.conv.export_onnx(g, &join(prefix, "conv"), x)?;
        if let Some(bn) = &self.bn {
            y = bn.export_onnx(g, &join(prefix, "bn"), &y)?;
        }
        export_activation(g, self.act.as_ref(), &y)
    }
}

/// Reports an activation's parameters and buffers under `prefix`.
pub fn visit_act(a: &dyn ActivationLayer, prefix: &str, f: &mut Visitor<'_>) {
    for (n, t) in a.named_parameters() {
        f(&join(prefix, &n), &t, Kind::Param);
    }
    for (n, t) in a.named_buffers() {
        f(&join(prefix, &n), &t, Kind::Buffer);
    }
}

/// `nn.MaxPool2d`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d(pub yolo_tensor::Pool2dParams);

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.max_pool2d(self.0)?)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, g: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        let p = self.0;
        let win = Window {
            kernel: p.kernel,
            stride: p.stride,
            padding: p.padding,
            dilation: (1, 1),
        };
        Ok(g.max_pool(x, win)?)
    }
}
