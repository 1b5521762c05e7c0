//! YOLOv5 blocks: Bottleneck (and CrossConv), BottleneckCSP, C3 (and C3x), SPP, SPPF, Focus, DWConv,
//! Concat, Upsample, Contract, Expand.

use crate::common::{Act, BatchNorm2d, Conv, Conv2d, Ctx, MaxPool2d};
use crate::error::{invalid, Result};
use crate::module::{join, Layer, Module, Sequential, Visitor};
use crate::onnx::{export_activation, export_space_to_depth2, GraphBuilder, Value};
use yolo_activations::ActivationLayer;
use yolo_tensor::{Pool2dParams, Tensor};

/// Upstream `int(c2 * e)`.
pub(crate) fn hidden(c2: usize, e: f64) -> usize {
    (c2 as f64 * e) as usize
}

/// Depth-wise convolution: `Conv` with `groups = gcd(c1, c2)`.
pub fn dw_conv(
    c1: usize,
    c2: usize,
    k: usize,
    s: usize,
    d: usize,
    act: Act,
    ctx: &Ctx,
) -> Result<Conv> {
    Conv::new(c1, c2, k, s, None, gcd(c1, c2), d, act, ctx)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Standard bottleneck: `x + cv2(cv1(x))` when shortcut and c1 == c2 (also upstream's
/// CrossConv, see [`Bottleneck::cross`]).
#[derive(Debug)]
pub struct Bottleneck {
    /// 1×1 reduction.
    pub cv1: Conv,
    /// 3×3 conv.
    pub cv2: Conv,
    /// Whether the residual is added.
    pub add: bool,
}

impl Bottleneck {
    /// `Bottleneck(c1, c2, shortcut, g, e)`.
    pub fn new(
        c1: usize,
        c2: usize,
        shortcut: bool,
        g: usize,
        e: f64,
        ctx: &Ctx,
    ) -> Result<Bottleneck> {
        let c_ = hidden(c2, e);
        Ok(Bottleneck {
            cv1: Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?,
            cv2: Conv::new(c_, c2, 3, 1, None, g, 1, Act::Default, ctx)?,
            add: shortcut && c1 == c2,
        })
    }

    /// Upstream `CrossConv(c1, c2, k, s, g, e, shortcut)`: the same two-conv residual block with
    /// a 1×k then a k×1 kernel (same parameter names `cv1`, `cv2`).
    #[allow(clippy::too_many_arguments)]
    pub fn cross(
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        g: usize,
        e: f64,
        shortcut: bool,
        ctx: &Ctx,
    ) -> Result<Bottleneck> {
        let c_ = hidden(c2, e);
        Ok(Bottleneck {
            cv1: Conv::rect(c1, c_, (1, k), (1, s), (0, k / 2), 1, 1, Act::Default, ctx)?,
            cv2: Conv::rect(c_, c2, (k, 1), (s, 1), (k / 2, 0), g, 1, Act::Default, ctx)?,
            add: shortcut && c1 == c2,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.cv1.forward(x, train)?;
        if self.add {
            // The shortcut's sum inside cv2 once fused.
            return self.cv2.forward_add(&h, x, train);
        }
        self.cv2.forward(&h, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let y = self.cv2.export_onnx(g, &join(prefix, "cv2"), &y)?;
        Ok(if self.add { g.add(x, &y)? } else { y })
    }
}

/// CSP bottleneck with three convs (`C3`); its inner blocks `m` decide the variant (C3, C3x,
/// C3Ghost, C3TR).
#[derive(Debug)]
pub struct C3 {
    /// Branch 1 entry.
    pub cv1: Conv,
    /// Branch 2.
    pub cv2: Conv,
    /// Output conv over both branches.
    pub cv3: Conv,
    /// Inner blocks on branch 1.
    pub m: Sequential,
    /// C3TR holds one block named `m` itself, not `m.0`.
    pub m_is_single: bool,
}

/// Which inner blocks a C3 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum C3Kind {
    /// Bottlenecks (`C3`).
    Bottleneck,
    /// Cross convolutions (`C3x`).
    Cross,
    /// Ghost bottlenecks (`C3Ghost`).
    Ghost,
    /// One transformer block of n layers (`C3TR`).
    Transformer,
}

impl C3 {
    /// `C3(c1, c2, n, shortcut, g, e)` and its variants.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: C3Kind,
        c1: usize,
        c2: usize,
        n: usize,
        shortcut: bool,
        g: usize,
        e: f64,
        ctx: &Ctx,
    ) -> Result<C3> {
        let c_ = hidden(c2, e);
        let cv1 = Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?;
        let cv2 = Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?;
        let cv3 = Conv::new(2 * c_, c2, 1, 1, None, 1, 1, Act::Default, ctx)?;
        let mut m: Vec<Box<dyn Module>> = Vec::new();
        match kind {
            C3Kind::Bottleneck => {
                for _ in 0..n {
                    m.push(Box::new(Bottleneck::new(c_, c_, shortcut, g, 1.0, ctx)?));
                }
            }
            C3Kind::Cross => {
                for _ in 0..n {
                    m.push(Box::new(Bottleneck::cross(
                        c_, c_, 3, 1, g, 1.0, shortcut, ctx,
                    )?));
                }
            }
            C3Kind::Ghost => {
                for _ in 0..n {
                    m.push(Box::new(crate::ghost::GhostBottleneck::new(
                        c_, c_, 3, 1, ctx,
                    )?));
                }
            }
            C3Kind::Transformer => m.push(Box::new(crate::transformer::TransformerBlock::new(
                c_, c_, 4, n, ctx,
            )?)),
        }
        Ok(C3 {
            cv1,
            cv2,
            cv3,
            m: Sequential(m),
            m_is_single: kind == C3Kind::Transformer,
        })
    }
}

impl Module for C3 {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.m.forward(&self.cv1.forward(x, train)?, train)?;
        let b = self.cv2.forward(x, train)?;
        self.cv3.forward_cat(&[&a, &b], train)
    }
    fn forward_cat(&self, parts: &[&Tensor], train: bool) -> Result<Tensor> {
        let ones: Vec<(&Tensor, usize)> = parts.iter().map(|&t| (t, 1)).collect();
        self.forward_cat_up(&ones, train)
    }
    fn forward_cat_up(&self, parts: &[(&Tensor, usize)], train: bool) -> Result<Tensor> {
        // cv1 and cv2 read the joined input in place (neck rows: Concat then C3), taking an
        // upsampled part's products at its own size; when they cannot, it is joined once.
        if !(self.cv1.joins_in_place() && self.cv2.joins_in_place()) {
            let full = crate::module::upsampled(parts)?;
            let refs: Vec<&Tensor> = full.iter().collect();
            return self.forward(&Tensor::concat(&refs, 1)?, train);
        }
        let a = self
            .m
            .forward(&self.cv1.forward_cat_up(parts, train)?, train)?;
        let b = self.cv2.forward_cat_up(parts, train)?;
        self.cv3.forward_cat(&[&a, &b], train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
        self.cv3.visit(&join(prefix, "cv3"), f);
        if self.m_is_single {
            self.m.0[0].visit(&join(prefix, "m"), f);
        } else {
            self.m.visit(&join(prefix, "m"), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()?;
        self.cv3.fuse()?;
        self.m.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let a = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let a = if self.m_is_single {
            self.m.0[0].export_onnx(g, &join(prefix, "m"), &a)?
        } else {
            self.m.export_onnx(g, &join(prefix, "m"), &a)?
        };
        let b = self.cv2.export_onnx(g, &join(prefix, "cv2"), x)?;
        let c = g.concat(&[&a, &b], 1)?;
        self.cv3.export_onnx(g, &join(prefix, "cv3"), &c)
    }
}

/// CSP bottleneck (Cross Stage Partial Networks), the YOLOv4/v5-v5.0 form.
#[derive(Debug)]
pub struct BottleneckCsp {
    /// Entry conv.
    pub cv1: Conv,
    /// Plain 1×1 conv of branch 2.
    pub cv2: Conv2d,
    /// Plain 1×1 conv closing branch 1.
    pub cv3: Conv2d,
    /// Output conv.
    pub cv4: Conv,
    /// BN over the concatenation.
    pub bn: BatchNorm2d,
    /// Activation after `bn` (SiLU upstream, fixed).
    pub act: Box<dyn ActivationLayer>,
    /// Bottlenecks.
    pub m: Sequential,
}

impl BottleneckCsp {
    /// `BottleneckCSP(c1, c2, n, shortcut, g, e)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        n: usize,
        shortcut: bool,
        g: usize,
        e: f64,
        ctx: &Ctx,
    ) -> Result<BottleneckCsp> {
        let c_ = hidden(c2, e);
        let init = &ctx.init;
        let mut m: Vec<Box<dyn Module>> = Vec::new();
        let cv1 = Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?;
        let cv2 = Conv2d::new(c1, c_, (1, 1), (1, 1), (0, 0), 1, 1, false, init)?;
        let cv3 = Conv2d::new(c_, c_, (1, 1), (1, 1), (0, 0), 1, 1, false, init)?;
        let cv4 = Conv::new(2 * c_, c2, 1, 1, None, 1, 1, Act::Default, ctx)?;
        let bn = BatchNorm2d::new(2 * c_, init)?;
        let act = yolo_activations::Activation::Silu.build_on(2 * c_, 0, init.device)?;
        for _ in 0..n {
            m.push(Box::new(Bottleneck::new(c_, c_, shortcut, g, 1.0, ctx)?));
        }
        Ok(BottleneckCsp {
            cv1,
            cv2,
            cv3,
            cv4,
            bn,
            act,
            m: Sequential(m),
        })
    }
}

impl Module for BottleneckCsp {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y1 = Module::forward(
            &self.cv3,
            &self.m.forward(&self.cv1.forward(x, train)?, train)?,
            train,
        )?;
        let y2 = Module::forward(&self.cv2, x, train)?;
        let z = self.bn.forward(&Tensor::concat(&[&y1, &y2], 1)?, train)?;
        self.cv4.forward(&self.act.forward(&z, train)?, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
        self.cv3.visit(&join(prefix, "cv3"), f);
        self.cv4.visit(&join(prefix, "cv4"), f);
        self.bn.visit(&join(prefix, "bn"), f);
        self.m.visit(&join(prefix, "m"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv4.fuse()?;
        self.m.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y1 = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let y1 = self.m.export_onnx(g, &join(prefix, "m"), &y1)?;
        let y1 = self.cv3.export_onnx(g, &join(prefix, "cv3"), &y1)?;
        let y2 = self.cv2.export_onnx(g, &join(prefix, "cv2"), x)?;
        let z = g.concat(&[&y1, &y2], 1)?;
        let z = self.bn.export_onnx(g, &join(prefix, "bn"), &z)?;
        let z = export_activation(g, self.act.as_ref(), &z)?;
        self.cv4.export_onnx(g, &join(prefix, "cv4"), &z)
    }
}

/// Spatial pyramid pooling: concat of x and max-pools of sizes `k` (stride 1, "same").
#[derive(Debug)]
pub struct Spp {
    /// Reduction conv.
    pub cv1: Conv,
    /// Output conv.
    pub cv2: Conv,
    /// Pools.
    pub m: Vec<MaxPool2d>,
}

impl Spp {
    /// `SPP(c1, c2, k=(5, 9, 13))`.
    pub fn new(c1: usize, c2: usize, k: &[usize], ctx: &Ctx) -> Result<Spp> {
        let c_ = c1 / 2;
        Ok(Spp {
            cv1: Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?,
            cv2: Conv::new(c_ * (k.len() + 1), c2, 1, 1, None, 1, 1, Act::Default, ctx)?,
            m: k.iter()
                .map(|&k| MaxPool2d(Pool2dParams::new(k, 1, k / 2)))
                .collect(),
        })
    }
}

impl Module for Spp {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.cv1.forward(x, train)?;
        let mut parts = vec![x.clone()];
        for m in &self.m {
            parts.push(m.forward(&x, train)?);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        self.cv2.forward_cat(&refs, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let x = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let mut parts = vec![x.clone()];
        for m in &self.m {
            parts.push(m.export_onnx(g, prefix, &x)?);
        }
        let refs: Vec<&Value> = parts.iter().collect();
        let c = g.concat(&refs, 1)?;
        self.cv2.export_onnx(g, &join(prefix, "cv2"), &c)
    }
}

/// Fast SPP: three chained k×k pools, equal to SPP(k, 2k−1, 3k−2).
#[derive(Debug)]
pub struct Sppf {
    /// Reduction conv.
    pub cv1: Conv,
    /// Output conv.
    pub cv2: Conv,
    /// The pool.
    pub m: MaxPool2d,
}

impl Sppf {
    /// `SPPF(c1, c2, k=5)`.
    pub fn new(c1: usize, c2: usize, k: usize, ctx: &Ctx) -> Result<Sppf> {
        let c_ = c1 / 2;
        Ok(Sppf {
            cv1: Conv::new(c1, c_, 1, 1, None, 1, 1, Act::Default, ctx)?,
            cv2: Conv::new(c_ * 4, c2, 1, 1, None, 1, 1, Act::Default, ctx)?,
            m: MaxPool2d(Pool2dParams::new(k, 1, k / 2)),
        })
    }
}

impl Module for Sppf {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.cv1.forward(x, train)?;
        let y1 = self.m.forward(&x, train)?;
        let y2 = self.m.forward(&y1, train)?;
        let y3 = self.m.forward(&y2, train)?;
        self.cv2.forward_cat(&[&x, &y1, &y2, &y3], train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let x = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let y1 = self.m.export_onnx(g, prefix, &x)?;
        let y2 = self.m.export_onnx(g, prefix, &y1)?;
        let y3 = self.m.export_onnx(g, prefix, &y2)?;
        let c = g.concat(&[&x, &y1, &y2, &y3], 1)?;
        self.cv2.export_onnx(g, &join(prefix, "cv2"), &c)
    }
}

/// Space-to-depth by 2 in upstream Focus order: channel blocks (0,0), (1,0), (0,1), (1,1) of
/// (row offset, col offset).
pub fn space_to_depth2(x: &Tensor) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || !s[2].is_multiple_of(2) || !s[3].is_multiple_of(2) {
        return invalid(format!(
            "space-to-depth needs N×C×H×W with even H and W, got {s:?}"
        ));
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let y = x
        .reshape(&[n, c, h / 2, 2, w / 2, 2])?
        .permute(&[0, 5, 3, 1, 2, 4])?;
    Ok(y.reshape(&[n, 4 * c, h / 2, w / 2])?)
}

/// Focus: space-to-depth then a conv (the YOLOv5 ≤ v5.0 stem).
#[derive(Debug)]
pub struct Focus {
    /// The conv over 4·c1 channels.
    pub conv: Conv,
}

impl Focus {
    /// `Focus(c1, c2, k, s, p, g, act)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        p: Option<usize>,
        g: usize,
        act: Act,
        ctx: &Ctx,
    ) -> Result<Focus> {
        Ok(Focus {
            conv: Conv::new(c1 * 4, c2, k, s, p, g, 1, act, ctx)?,
        })
    }
}

impl Module for Focus {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward(&space_to_depth2(x)?, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv.visit(&join(prefix, "conv"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.conv.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y = export_space_to_depth2(g, x)?;
        self.conv.export_onnx(g, &join(prefix, "conv"), &y)
    }
}

/// Concatenation along an axis (several inputs).
#[derive(Debug, Clone, Copy)]
pub struct Concat(pub isize);

impl Layer for Concat {
    fn run(&self, xs: &[Tensor], _train: bool) -> Result<Tensor> {
        let refs: Vec<&Tensor> = xs.iter().collect();
        Ok(Tensor::concat(&refs, self.0)?)
    }
    fn joins_channels(&self) -> bool {
        self.0 == 1 || self.0 == -3
    }
    fn visit_layer(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx_layer(
        &self,
        g: &mut GraphBuilder,
        _prefix: &str,
        xs: &[Value],
    ) -> Result<Value> {
        let refs: Vec<&Value> = xs.iter().collect();
        Ok(g.concat(&refs, self.0 as i64)?)
    }
}

/// `nn.Upsample(None, scale, 'nearest')`.
#[derive(Debug, Clone, Copy)]
pub struct Upsample(pub usize);

impl Module for Upsample {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.upsample_nearest2d(self.0, self.0)?)
    }
    fn upsample_factor(&self) -> Option<usize> {
        Some(self.0)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, g: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        Ok(g.resize_nearest(x, self.0, self.0)?)
    }
}

/// Contract width-height into channels: N×C×H×W → N×C·g²×H/g×W/g (upstream order).
#[derive(Debug, Clone, Copy)]
pub struct Contract(pub usize);

impl Contract {
    /// The reshape → transpose → reshape that moves g×g pixel blocks into channels.
    fn plan(&self, s: &[usize]) -> Result<ReshufflePlan> {
        let g = self.0;
        if s.len() != 4 || g == 0 || !s[2].is_multiple_of(g) || !s[3].is_multiple_of(g) {
            return invalid(format!(
                "Contract({g}) needs H and W divisible by {g}, got {s:?}"
            ));
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        Ok((
            [n, c, h / g, g, w / g, g],
            [0, 3, 5, 1, 2, 4],
            [n, c * g * g, h / g, w / g],
        ))
    }
}

/// A space/channel reshuffle as (split shape, permutation, final shape).
type ReshufflePlan = ([usize; 6], [usize; 6], [usize; 4]);

/// Runs a [`ReshufflePlan`] on a tensor.
fn reshuffle(x: &Tensor, (split, perm, fin): ReshufflePlan) -> Result<Tensor> {
    Ok(x.reshape(&split)?.permute(&perm)?.reshape(&fin)?)
}

/// Writes a [`ReshufflePlan`] into an ONNX graph.
fn reshuffle_onnx(
    gr: &mut GraphBuilder,
    x: &Value,
    (split, perm, fin): ReshufflePlan,
) -> Result<Value> {
    let y = gr.reshape(x, &split)?;
    let y = gr.transpose(&y, &perm)?;
    Ok(gr.reshape(&y, &fin)?)
}

impl Module for Contract {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        reshuffle(x, self.plan(x.shape())?)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, gr: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        let plan = self.plan(x.shape())?;
        reshuffle_onnx(gr, x, plan)
    }
}

/// Expand channels into width-height: N×C×H×W → N×C/g²×H·g×W·g (upstream order).
#[derive(Debug, Clone, Copy)]
pub struct Expand(pub usize);

impl Expand {
    /// The reshape → transpose → reshape that moves channels into g×g pixel blocks.
    fn plan(&self, s: &[usize]) -> Result<ReshufflePlan> {
        let g = self.0;
        if s.len() != 4 || g == 0 || !s[1].is_multiple_of(g * g) {
            return invalid(format!(
                "Expand({g}) needs channels divisible by {}, got {s:?}",
                g * g
            ));
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        Ok((
            [n, g, g, c / (g * g), h, w],
            [0, 3, 4, 1, 5, 2],
            [n, c / (g * g), h * g, w * g],
        ))
    }
}

impl Module for Expand {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        reshuffle(x, self.plan(x.shape())?)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, gr: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        let plan = self.plan(x.shape())?;
        reshuffle_onnx(gr, x, plan)
    }
}

/// `nn.ZeroPad2d((left, right, top, bottom))`.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPad2d(pub [usize; 4]);

impl Module for ZeroPad2d {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let [l, r, t, b] = self.0;
        Ok(x.pad2d(l, r, t, b)?)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, g: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        Ok(g.pad2d(x, self.0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_tensor::Device;

    /// Upstream's channel order (view + permute(0, 3, 5, 1, 2, 4)): a 2×2 block of one channel
    /// becomes channels [top-left, top-right, bottom-left, bottom-right]; Expand undoes it.
    #[test]
    fn contract_order_and_expand_inverse() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], Device::Cpu).unwrap();
        let y = Contract(2).forward(&x, false).unwrap();
        assert_eq!(y.shape(), &[1, 4, 1, 1]);
        assert_eq!(y.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
        let data: Vec<f32> = (0..2 * 8 * 6 * 4).map(|i| i as f32).collect();
        let x = Tensor::from_vec(data.clone(), &[2, 8, 6, 4], Device::Cpu).unwrap();
        let c = Contract(2).forward(&x, false).unwrap();
        assert_eq!(c.shape(), &[2, 32, 3, 2]);
        let back = Expand(2).forward(&c, false).unwrap();
        assert_eq!(back.shape(), x.shape());
        assert_eq!(back.to_vec(), data);
        assert!(
            Contract(4).forward(&x, false).is_err(),
            "W 4 is fine but H 6 is not / 4"
        );
        assert!(
            Expand(3).forward(&x, false).is_err(),
            "8 channels not divisible by 9"
        );
    }
}
