//! The attention and fusion blocks that YOLOv5 "improvement" forks plug into models: SE, CBAM,
//! ECA, CoordAtt, SimAM, SPD-Conv's `space_to_depth`, and the BiFPN weighted additions
//! `BiFPN_Add2` / `BiFPN_Add3`.
//!
//! None of these is in upstream YOLOv5; each follows the form most YOLOv5 forks copy, and its
//! parameters carry that form's `state_dict` names, so fork-trained weights load by name:
//!
//! | block | parameters | fork form |
//! |---|---|---|
//! | [`Se`] | `l1.weight`, `l2.weight` (`nn.Linear`, no bias) | `SE(c1, c2, ratio=16)` |
//! | [`Cbam`] | `channel_attention.f1.weight`, `channel_attention.f2.weight` (1×1, no bias), `spatial_attention.conv.weight` (k×k, no bias) | `CBAM(c1, c2, ratio=16, kernel_size=7)` |
//! | [`Eca`] | `conv.weight` (`nn.Conv1d(1, 1, k)`, no bias, shape 1×1×k) | `ECA(c1, c2, k_size=3)` |
//! | [`CoordAtt`] | `conv1.{weight,bias}`, `bn1.*`, `conv_h.{weight,bias}`, `conv_w.{weight,bias}` | `CoordAtt(inp, oup, reduction=32)` |
//! | [`SimAm`] | none | `SimAM(c1, c2, e_lambda=1e-4)` |
//! | [`SpaceToDepth`] | none | SPD-Conv's `space_to_depth(dimension=1)` |
//! | [`BiFpnAdd`] | `w` (length = inputs), `conv.{weight,bias}` | `BiFPN_Add2(c1, c2)`, `BiFPN_Add3(c1, c2)` |
//!
//! FLOPs follow `thop` as the forks' `model.info()` reports them: convolutions and linear layers
//! as everywhere, `nn.AdaptiveAvgPool2d` as (window + 1) per output element, batch norm 4 per
//! element; max-pooling, activations, `torch.mean`/`torch.max` calls and products cost nothing.

use crate::basic::space_to_depth2;
use crate::common::{BatchNorm2d, Conv2d, Linear};
use crate::error::{invalid, Result};
use crate::flops;
use crate::init::Init;
use crate::module::{join, Kind, Layer, Module, Visitor};
use yolo_tensor::{Conv2dParams, Tensor, UnaryOp};

/// (N, C, H, W) of a rank-4 input, or an error naming the block.
fn dims4(block: &str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *x.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => invalid(format!("{block} expects N×C×H×W, got {:?}", x.shape())),
    }
}

/// Checks the input has the channel count the block was built for.
fn expect_channels(block: &str, x: &Tensor, c: usize) -> Result<(usize, usize, usize, usize)> {
    let d = dims4(block, x)?;
    if d.1 != c {
        return invalid(format!(
            "{block} was built for {c} channels, got input {:?}",
            x.shape()
        ));
    }
    Ok(d)
}

/// thop's count of `nn.AdaptiveAvgPool2d`: (window + 1) per output element.
fn adaptive_avg_pool_flops(window: usize, outputs: usize) {
    flops::add(((window + 1) * outputs) as f64);
}

/// A 1×1 or k×k `nn.Conv2d` with stride 1 and "same" padding.
fn conv_same(c1: usize, c2: usize, k: usize, bias: bool, init: &Init) -> Result<Conv2d> {
    Conv2d::new(c1, c2, (k, k), (1, 1), (k / 2, k / 2), 1, 1, bias, init)
}

/// Squeeze-and-Excitation: `x · σ(l2(relu(l1(avgpool(x)))))`, hidden width `c / ratio`.
#[derive(Debug)]
pub struct Se {
    /// Squeeze, c → c/ratio (`l1`).
    pub l1: Linear,
    /// Excite, c/ratio → c (`l2`).
    pub l2: Linear,
}

impl Se {
    /// `SE(c1, c2 = c1, ratio)`.
    pub fn new(c1: usize, ratio: usize, init: &Init) -> Result<Se> {
        let hidden = reduced("SE", c1, ratio)?;
        Ok(Se {
            l1: Linear::new(c1, hidden, false, init)?,
            l2: Linear::new(hidden, c1, false, init)?,
        })
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.l1.weight.shape()[1]
    }
}

/// `c / ratio`, which must be at least 1.
fn reduced(block: &str, c: usize, ratio: usize) -> Result<usize> {
    if ratio == 0 || c / ratio == 0 {
        return invalid(format!(
            "{block}: {c} channels with reduction ratio {ratio} leave no hidden channels"
        ));
    }
    Ok(c / ratio)
}

impl Module for Se {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = expect_channels("SE", x, self.channels())?;
        let y = x.mean(&[2, 3], false)?;
        adaptive_avg_pool_flops(h * w, n * c);
        let y = self.l1.forward(&y, train)?.relu();
        let y = self.l2.forward(&y, train)?.sigmoid();
        Ok(x.mul(&y.reshape(&[n, c, 1, 1])?)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.l1.visit(&join(prefix, "l1"), f);
        self.l2.visit(&join(prefix, "l2"), f);
    }
}

/// CBAM's channel attention: `σ(f2(relu(f1(avgpool(x)))) + f2(relu(f1(maxpool(x)))))`, an
/// N×C×1×1 map (as the fork's submodule, its forward returns the map, not `x · map`).
#[derive(Debug)]
pub struct ChannelAttention {
    /// Shared MLP, c → c/ratio (`f1`, 1×1, no bias).
    pub f1: Conv2d,
    /// Shared MLP, c/ratio → c (`f2`, 1×1, no bias).
    pub f2: Conv2d,
}

impl ChannelAttention {
    /// `ChannelAttention(in_planes, ratio)`.
    pub fn new(c: usize, ratio: usize, init: &Init) -> Result<ChannelAttention> {
        let hidden = reduced("CBAM channel attention", c, ratio)?;
        Ok(ChannelAttention {
            f1: conv_same(c, hidden, 1, false, init)?,
            f2: conv_same(hidden, c, 1, false, init)?,
        })
    }

    fn mlp(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = Module::forward(&self.f1, x, train)?.relu();
        Module::forward(&self.f2, &y, train)
    }
}

impl Module for ChannelAttention {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = expect_channels("CBAM", x, self.f1.weight.shape()[1])?;
        let avg = x.mean(&[2, 3], true)?;
        adaptive_avg_pool_flops(h * w, n * c);
        let max = x.max(&[2, 3], true)?;
        let a = self.mlp(&avg, train)?.add(&self.mlp(&max, train)?)?;
        Ok(a.sigmoid())
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.f1.visit(&join(prefix, "f1"), f);
        self.f2.visit(&join(prefix, "f2"), f);
    }
}

/// CBAM's spatial attention: `σ(conv_k×k([mean_c(x), max_c(x)]))`, an N×1×H×W map.
#[derive(Debug)]
pub struct SpatialAttention {
    /// 2 → 1, k×k, padding k/2, no bias (`conv`).
    pub conv: Conv2d,
}

impl SpatialAttention {
    /// `SpatialAttention(kernel_size)`; `k` must be odd so the map keeps the input's size.
    pub fn new(k: usize, init: &Init) -> Result<SpatialAttention> {
        if k.is_multiple_of(2) {
            return invalid(format!(
                "CBAM spatial attention needs an odd kernel size, got {k}"
            ));
        }
        Ok(SpatialAttention {
            conv: conv_same(2, 1, k, false, init)?,
        })
    }
}

impl Module for SpatialAttention {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        dims4("CBAM", x)?;
        let avg = x.mean(&[1], true)?;
        let max = x.max(&[1], true)?;
        let y = Tensor::concat(&[&avg, &max], 1)?;
        Ok(Module::forward(&self.conv, &y, train)?.sigmoid())
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv.visit(&join(prefix, "conv"), f);
    }
}

/// Convolutional Block Attention Module: `y = x · CA(x)`, then `y · SA(y)`.
#[derive(Debug)]
pub struct Cbam {
    /// `channel_attention`.
    pub channel_attention: ChannelAttention,
    /// `spatial_attention`.
    pub spatial_attention: SpatialAttention,
}

impl Cbam {
    /// `CBAM(c1, c2 = c1, ratio, kernel_size)`.
    pub fn new(c1: usize, ratio: usize, k: usize, init: &Init) -> Result<Cbam> {
        Ok(Cbam {
            channel_attention: ChannelAttention::new(c1, ratio, init)?,
            spatial_attention: SpatialAttention::new(k, init)?,
        })
    }
}

impl Module for Cbam {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = x.mul(&self.channel_attention.forward(x, train)?)?;
        Ok(y.mul(&self.spatial_attention.forward(&y, train)?)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.channel_attention
            .visit(&join(prefix, "channel_attention"), f);
        self.spatial_attention
            .visit(&join(prefix, "spatial_attention"), f);
    }
}

/// Efficient Channel Attention: `x · σ(conv1d_k(avgpool(x)))`, the 1-D convolution running
/// across channels (zero padding (k−1)/2, no bias).
#[derive(Debug)]
pub struct Eca {
    /// `conv.weight`, shaped 1×1×k as `nn.Conv1d(1, 1, k)`'s.
    pub weight: Tensor,
}

impl Eca {
    /// `ECA(c1, c2, k_size)`; `k` must be odd so the output keeps one value per channel.
    pub fn new(k: usize, init: &Init) -> Result<Eca> {
        if k.is_multiple_of(2) {
            return invalid(format!("ECA needs an odd kernel size, got {k}"));
        }
        Ok(Eca {
            weight: init.kaiming_uniform(&[1, 1, k], k)?,
        })
    }
}

impl Module for Eca {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (n, c, h, w) = dims4("ECA", x)?;
        let k = self.weight.numel();
        adaptive_avg_pool_flops(h * w, n * c);
        flops::add((n * c * k) as f64);
        // The 1-D convolution over channels is a k×1 conv2d over an N×1×C×1 view.
        let y = x.mean(&[2, 3], false)?.reshape(&[n, 1, c, 1])?;
        let wk = self.weight.reshape(&[1, 1, k, 1])?;
        let p = Conv2dParams {
            padding: ((k - 1) / 2, 0),
            ..Conv2dParams::default()
        };
        let y = y.conv2d(&wk, None, p)?.sigmoid();
        Ok(x.mul(&y.reshape(&[n, c, 1, 1])?)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "conv.weight"), &self.weight, Kind::Param);
    }
}

/// Coordinate Attention (Hou et al., 2021): pool along W and along H, a shared 1×1 conv + BN +
/// h-swish over both, then per-direction 1×1 convs and sigmoids: `x · a_w · a_h`.
///
/// `bn1` gets YOLOv5's batch-norm settings (eps 1e-3, momentum 0.03), which upstream's
/// `initialize_weights` gives every `nn.BatchNorm2d` of a model. It is not folded by
/// [`Module::fuse`], as upstream's fuse folds only `Conv`/`DWConv` batch norms.
#[derive(Debug)]
pub struct CoordAtt {
    /// Shared reduction c → mip, 1×1 with bias (`conv1`).
    pub conv1: Conv2d,
    /// `bn1`.
    pub bn1: BatchNorm2d,
    /// mip → oup along H (`conv_h`, 1×1 with bias).
    pub conv_h: Conv2d,
    /// mip → oup along W (`conv_w`, 1×1 with bias).
    pub conv_w: Conv2d,
}

impl CoordAtt {
    /// `CoordAtt(inp, oup, reduction)`: hidden width `mip = max(8, inp / reduction)`.
    pub fn new(inp: usize, oup: usize, reduction: usize, init: &Init) -> Result<CoordAtt> {
        if reduction == 0 {
            return invalid("CoordAtt: reduction must be positive");
        }
        let mip = (inp / reduction).max(8);
        Ok(CoordAtt {
            conv1: conv_same(inp, mip, 1, true, init)?,
            bn1: BatchNorm2d::new(mip, init)?,
            conv_h: conv_same(mip, oup, 1, true, init)?,
            conv_w: conv_same(mip, oup, 1, true, init)?,
        })
    }
}

impl Module for CoordAtt {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = expect_channels("CoordAtt", x, self.conv1.weight.shape()[1])?;
        let x_h = x.mean(&[3], true)?; // N×C×H×1
        adaptive_avg_pool_flops(w, n * c * h);
        let x_w = x.mean(&[2], true)?.permute(&[0, 1, 3, 2])?; // N×C×W×1
        adaptive_avg_pool_flops(h, n * c * w);
        let y = Tensor::concat(&[&x_h, &x_w], 2)?;
        let y = Module::forward(&self.conv1, &y, train)?;
        let y = self.bn1.forward(&y, train)?.unary(UnaryOp::Hardswish);
        let y_h = y.narrow(2, 0, h)?;
        let y_w = y.narrow(2, h, w)?.permute(&[0, 1, 3, 2])?; // N×mip×1×W
        let a_h = Module::forward(&self.conv_h, &y_h, train)?.sigmoid();
        let a_w = Module::forward(&self.conv_w, &y_w, train)?.sigmoid();
        Ok(x.mul(&a_w)?.mul(&a_h)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv1.visit(&join(prefix, "conv1"), f);
        self.bn1.visit(&join(prefix, "bn1"), f);
        self.conv_h.visit(&join(prefix, "conv_h"), f);
        self.conv_w.visit(&join(prefix, "conv_w"), f);
    }
}

/// SimAM (Yang et al., 2021), parameter-free energy attention, per channel over H×W:
/// `d = (x − mean)²`, `y = d / (4·(Σd / n + λ)) + 0.5` with `n = H·W − 1`, output `x · σ(y)`.
///
/// A 1×1 map (n = 0) gives NaN in the fork (0/0); here `n` is clamped to 1 there, so d = 0 and
/// the output is `x · σ(0.5)`.
#[derive(Debug, Clone, Copy)]
pub struct SimAm {
    /// λ (`e_lambda`).
    pub e_lambda: f32,
}

impl Default for SimAm {
    fn default() -> SimAm {
        SimAm { e_lambda: 1e-4 }
    }
}

impl Module for SimAm {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (_, _, h, w) = dims4("SimAM", x)?;
        let n = (h * w).saturating_sub(1).max(1) as f32;
        let d = x.sub(&x.mean(&[2, 3], true)?)?.sqr();
        let denom = d.sum(&[2, 3], true)?.affine(4.0 / n, 4.0 * self.e_lambda);
        let y = d.div(&denom)?.add_scalar(0.5);
        Ok(x.mul(&y.sigmoid())?)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
}

/// SPD-Conv's `space_to_depth`: N×C×H×W → N×4C×H/2×W/2, channel blocks in the order
/// `x[..., ::2, ::2]`, `x[..., 1::2, ::2]`, `x[..., ::2, 1::2]`, `x[..., 1::2, 1::2]`
/// (as Focus). The fork's `dimension` argument is stored but, as there, only 1 is meaningful.
#[derive(Debug, Clone, Copy)]
pub struct SpaceToDepth {
    /// The concatenation axis (`d`); 1.
    pub dimension: usize,
}

impl Module for SpaceToDepth {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        space_to_depth2(x)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(
        &self,
        g: &mut crate::onnx::GraphBuilder,
        _prefix: &str,
        x: &crate::onnx::Value,
    ) -> Result<crate::onnx::Value> {
        crate::onnx::export_space_to_depth2(g, x)
    }
}

/// BiFPN weighted addition in the form of the YOLOv5 BiFPN forks' `BiFPN_Add2`/`BiFPN_Add3`:
/// `conv(silu(Σ wᵢ·xᵢ / (Σ wᵢ + ε)))` with learnable `w` (initialised to ones), ε = 1e-4 and
/// `conv` a plain 1×1 `nn.Conv2d` with bias.
///
/// As in those forks, `w` is used as is: EfficientDet's ReLU on the weights is absent, so
/// fork-trained weights give the same outputs.
#[derive(Debug)]
pub struct BiFpnAdd {
    /// Fusion weights, one per input (`w`).
    pub w: Tensor,
    /// ε of the normalisation.
    pub epsilon: f32,
    /// 1×1 conv with bias (`conv`).
    pub conv: Conv2d,
}

impl BiFpnAdd {
    /// `BiFPN_Add{inputs}(c1, c2)`.
    pub fn new(inputs: usize, c1: usize, c2: usize, init: &Init) -> Result<BiFpnAdd> {
        if inputs < 2 {
            return invalid(format!(
                "BiFPN addition needs 2 or more inputs, got {inputs}"
            ));
        }
        Ok(BiFpnAdd {
            w: init.constant(&[inputs], 1.0)?,
            epsilon: 1e-4,
            conv: conv_same(c1, c2, 1, true, init)?,
        })
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.w.numel()
    }
}

impl Layer for BiFpnAdd {
    fn run(&self, xs: &[Tensor], train: bool) -> Result<Tensor> {
        let n = self.inputs();
        if xs.len() != n {
            return invalid(format!("BiFPN_Add{n} takes {n} inputs, got {}", xs.len()));
        }
        if let Some(x) = xs.iter().find(|x| x.shape() != xs[0].shape()) {
            return invalid(format!(
                "BiFPN_Add{n} adds inputs of one shape, got {:?} and {:?}",
                xs[0].shape(),
                x.shape()
            ));
        }
        let weight = self
            .w
            .div(&self.w.sum(&[0], true)?.add_scalar(self.epsilon))?;
        let mut s = xs[0].mul(&weight.narrow(0, 0, 1)?)?;
        for (i, x) in xs.iter().enumerate().skip(1) {
            s = s.add(&x.mul(&weight.narrow(0, i, 1)?)?)?;
        }
        Module::forward(&self.conv, &s.silu(), train)
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "w"), &self.w, Kind::Param);
        self.conv.visit(&join(prefix, "conv"), f);
    }
}
