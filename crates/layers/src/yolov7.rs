//! YOLOv7 blocks: MP, SP, ReOrg, Shortcut, DownC, SPPCSPC, RepConv, ImplicitA/M, and the
//! heads IDetect and IAuxDetect. Names of parameters follow upstream `models/common.py` and
//! `models/yolo.py` of WongKinYiu/yolov7.

use crate::basic::space_to_depth2;
use crate::common::{visit_act, Act, BatchNorm2d, Conv, Conv2d, Ctx, MaxPool2d};
use crate::detect::{Detect, DetectOutput};
use crate::error::{invalid, Result};
use crate::init::Init;
use crate::module::{join, Kind, Layer, Module, Visitor};
use crate::onnx::{export_activation, export_space_to_depth2, GraphBuilder, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_activations::ActivationLayer;
use yolo_tensor::{Pool2dParams, Tensor};

/// `MP(k)`: max-pool with kernel and stride `k` (default 2), no padding.
pub fn mp(k: usize) -> MaxPool2d {
    MaxPool2d(Pool2dParams::new(k, k, 0))
}

/// `SP(k, s)`: max-pool with kernel `k` (default 3), stride `s` (default 1), padding `k / 2`.
pub fn sp(k: usize, s: usize) -> MaxPool2d {
    MaxPool2d(Pool2dParams::new(k, s, k / 2))
}

/// `ReOrg`: space-to-depth by 2, N×C×H×W → N×4C×H/2×W/2, channel blocks in upstream order
/// `x[..., ::2, ::2]`, `x[..., 1::2, ::2]`, `x[..., ::2, 1::2]`, `x[..., 1::2, 1::2]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReOrg;

impl Module for ReOrg {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        // Focus uses the same block order (row offset varies fastest).
        space_to_depth2(x)
    }
    fn visit(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx(&self, g: &mut GraphBuilder, _prefix: &str, x: &Value) -> Result<Value> {
        export_space_to_depth2(g, x)
    }
}

/// `Shortcut`: the sum of the first two inputs (upstream ignores any others).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shortcut;

impl Layer for Shortcut {
    fn run(&self, xs: &[Tensor], _train: bool) -> Result<Tensor> {
        match xs {
            [a, b, ..] => Ok(a.add(b)?),
            _ => invalid(format!("Shortcut needs two inputs, got {}", xs.len())),
        }
    }
    fn visit_layer(&self, _prefix: &str, _f: &mut Visitor<'_>) {}
    fn export_onnx_layer(
        &self,
        g: &mut GraphBuilder,
        _prefix: &str,
        xs: &[Value],
    ) -> Result<Value> {
        match xs {
            [a, b, ..] => Ok(g.add(a, b)?),
            _ => invalid(format!("Shortcut needs two inputs, got {}", xs.len())),
        }
    }
}

/// `DownC(c1, c2, n, k)`: a strided 3×3 conv branch and a max-pool + 1×1 conv branch, each
/// giving `c2 / 2` channels, concatenated (`n` is ignored, as upstream).
#[derive(Debug)]
pub struct DownC {
    /// 1×1 conv, c1 → c1.
    pub cv1: Conv,
    /// 3×3 conv with stride `k`, c1 → c2/2.
    pub cv2: Conv,
    /// 1×1 conv after the pool, c1 → c2/2.
    pub cv3: Conv,
    /// Max-pool with kernel and stride `k`.
    pub mp: MaxPool2d,
}

impl DownC {
    /// `DownC(c1, c2, n=1, k=2)`.
    pub fn new(c1: usize, c2: usize, k: usize, ctx: &Ctx) -> Result<DownC> {
        if k == 0 {
            return invalid("DownC needs a positive stride k");
        }
        Ok(DownC {
            cv1: Conv::new(c1, c1, 1, 1, None, 1, 1, Act::Default, ctx)?,
            cv2: Conv::new(c1, c2 / 2, 3, k, None, 1, 1, Act::Default, ctx)?,
            cv3: Conv::new(c1, c2 / 2, 1, 1, None, 1, 1, Act::Default, ctx)?,
            mp: mp(k),
        })
    }
}

impl Module for DownC {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.cv2.forward(&self.cv1.forward(x, train)?, train)?;
        let b = self.cv3.forward(&self.mp.forward(x, train)?, train)?;
        Ok(Tensor::concat(&[&a, &b], 1)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
        self.cv3.visit(&join(prefix, "cv3"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()?;
        self.cv3.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let a = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let a = self.cv2.export_onnx(g, &join(prefix, "cv2"), &a)?;
        let b = self.mp.export_onnx(g, prefix, x)?;
        let b = self.cv3.export_onnx(g, &join(prefix, "cv3"), &b)?;
        Ok(g.concat(&[&a, &b], 1)?)
    }
}

/// `SPPCSPC`: CSP block around an SPP (max-pools of sizes `k`, stride 1, "same").
#[derive(Debug)]
pub struct Sppcspc {
    /// 1×1 entry of the SPP branch.
    pub cv1: Conv,
    /// 1×1 CSP bypass.
    pub cv2: Conv,
    /// 3×3 conv.
    pub cv3: Conv,
    /// 1×1 conv before the pools.
    pub cv4: Conv,
    /// 1×1 conv over the pooled concatenation.
    pub cv5: Conv,
    /// 3×3 conv.
    pub cv6: Conv,
    /// 1×1 output conv over both branches.
    pub cv7: Conv,
    /// The pools.
    pub m: Vec<MaxPool2d>,
}

impl Sppcspc {
    /// `SPPCSPC(c1, c2, n=1, shortcut=False, g=1, e=0.5, k=(5, 9, 13))`; `n`, `shortcut` and
    /// `g` are unused upstream.
    pub fn new(c1: usize, c2: usize, e: f64, k: &[usize], ctx: &Ctx) -> Result<Sppcspc> {
        let c_ = (2.0 * c2 as f64 * e) as usize;
        let conv =
            |a: usize, b: usize, k: usize| Conv::new(a, b, k, 1, None, 1, 1, Act::Default, ctx);
        Ok(Sppcspc {
            cv1: conv(c1, c_, 1)?,
            cv2: conv(c1, c_, 1)?,
            cv3: conv(c_, c_, 3)?,
            cv4: conv(c_, c_, 1)?,
            cv5: conv((k.len() + 1) * c_, c_, 1)?,
            cv6: conv(c_, c_, 3)?,
            cv7: conv(2 * c_, c2, 1)?,
            m: k.iter()
                .map(|&k| MaxPool2d(Pool2dParams::new(k, 1, k / 2)))
                .collect(),
        })
    }
}

impl Module for Sppcspc {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x1 = self.cv4.forward(
            &self.cv3.forward(&self.cv1.forward(x, train)?, train)?,
            train,
        )?;
        let mut parts = vec![x1.clone()];
        for m in &self.m {
            parts.push(m.forward(&x1, train)?);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let y1 = self
            .cv6
            .forward(&self.cv5.forward_cat(&refs, train)?, train)?;
        let y2 = self.cv2.forward(x, train)?;
        self.cv7.forward_cat(&[&y1, &y2], train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        for (name, c) in [
            ("cv1", &self.cv1),
            ("cv2", &self.cv2),
            ("cv3", &self.cv3),
            ("cv4", &self.cv4),
            ("cv5", &self.cv5),
            ("cv6", &self.cv6),
            ("cv7", &self.cv7),
        ] {
            c.visit(&join(prefix, name), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        for c in [
            &mut self.cv1,
            &mut self.cv2,
            &mut self.cv3,
            &mut self.cv4,
            &mut self.cv5,
            &mut self.cv6,
            &mut self.cv7,
        ] {
            c.fuse()?;
        }
        Ok(())
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let cv = |g: &mut GraphBuilder, c: &Conv, name: &str, x: &Value| {
            c.export_onnx(g, &join(prefix, name), x)
        };
        let x1 = cv(g, &self.cv1, "cv1", x)?;
        let x1 = cv(g, &self.cv3, "cv3", &x1)?;
        let x1 = cv(g, &self.cv4, "cv4", &x1)?;
        let mut parts = vec![x1.clone()];
        for m in &self.m {
            parts.push(m.export_onnx(g, prefix, &x1)?);
        }
        let refs: Vec<&Value> = parts.iter().collect();
        let c = g.concat(&refs, 1)?;
        let y1 = cv(g, &self.cv5, "cv5", &c)?;
        let y1 = cv(g, &self.cv6, "cv6", &y1)?;
        let y2 = cv(g, &self.cv2, "cv2", x)?;
        let c = g.concat(&[&y1, &y2], 1)?;
        cv(g, &self.cv7, "cv7", &c)
    }
}

/// A conv followed by a batch norm (`nn.Sequential(Conv2d, BatchNorm2d)`: names `0`, `1`).
#[derive(Debug)]
pub struct ConvBn {
    /// `0`.
    pub conv: Conv2d,
    /// `1`.
    pub bn: BatchNorm2d,
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn
            .forward(&Module::forward(&self.conv, x, train)?, train)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv.visit(&join(prefix, "0"), f);
        self.bn.visit(&join(prefix, "1"), f);
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y = self.conv.export_onnx(g, &join(prefix, "0"), x)?;
        self.bn.export_onnx(g, &join(prefix, "1"), &y)
    }
}

/// `RepConv` (RepVGG block): at training time `act(bn(conv3×3(x)) + bn(conv1×1(x)) + bn(x))`
/// (the identity branch only when c1 == c2 and stride 1); [`Module::fuse`] folds the three
/// branches into one 3×3 conv with bias, `rbr_reparam`, as upstream `fuse_repvgg_block`.
#[derive(Debug)]
pub struct RepConv {
    /// 3×3 conv + BN (`rbr_dense.0`, `rbr_dense.1`), until fused.
    pub rbr_dense: Option<ConvBn>,
    /// 1×1 conv + BN (`rbr_1x1.0`, `rbr_1x1.1`), until fused.
    pub rbr_1x1: Option<ConvBn>,
    /// Identity BN branch (`rbr_identity`), when c1 == c2 and s == 1, until fused.
    pub rbr_identity: Option<BatchNorm2d>,
    /// The folded 3×3 conv with bias, once fused.
    pub rbr_reparam: Option<Conv2d>,
    /// The activation (`act`).
    pub act: Box<dyn ActivationLayer>,
}

impl RepConv {
    /// `RepConv(c1, c2, k=3, s=1, p=None, g=1, act=True)`; upstream requires k = 3 and
    /// padding 1.
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
    ) -> Result<RepConv> {
        if k != 3 || p.unwrap_or(1) != 1 {
            return invalid(format!(
                "RepConv needs a 3×3 kernel with padding 1, got k={k}, p={p:?}"
            ));
        }
        let init = &ctx.init;
        let act = act
            .resolve(ctx.default_act)
            .build_on(c2, init.next_seed(), init.device)?;
        // Upstream creates the identity BN first, then the dense and 1×1 branches.
        let rbr_identity = if c1 == c2 && s == 1 {
            Some(BatchNorm2d::new(c1, init)?)
        } else {
            None
        };
        let rbr_dense = ConvBn {
            conv: Conv2d::new(c1, c2, (3, 3), (s, s), (1, 1), g, 1, false, init)?,
            bn: BatchNorm2d::new(c2, init)?,
        };
        let rbr_1x1 = ConvBn {
            conv: Conv2d::new(c1, c2, (1, 1), (s, s), (0, 0), g, 1, false, init)?,
            bn: BatchNorm2d::new(c2, init)?,
        };
        Ok(RepConv {
            rbr_dense: Some(rbr_dense),
            rbr_1x1: Some(rbr_1x1),
            rbr_identity,
            rbr_reparam: None,
            act,
        })
    }

    /// The single 3×3 kernel and bias equal to the three branches in inference mode
    /// (upstream `get_equivalent_kernel_bias`).
    pub fn equivalent_kernel_bias(&self) -> Result<(Tensor, Tensor)> {
        let _g = yolo_tensor::no_grad();
        if let Some(c) = &self.rbr_reparam {
            let b = match &c.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(&[c.c_out()], c.weight.device())?,
            };
            return Ok((c.weight.clone(), b));
        }
        let (Some(dense), Some(one)) = (&self.rbr_dense, &self.rbr_1x1) else {
            return invalid("RepConv: neither branches nor a fused conv");
        };
        let fold = |w: &Tensor, bn: &BatchNorm2d| -> Result<(Tensor, Tensor)> {
            let (scale, shift) = bn.scale_shift()?;
            let c = w.shape()[0];
            Ok((w.mul(&scale.reshape(&[c, 1, 1, 1])?)?, shift))
        };
        let (k3, b3) = fold(&dense.conv.weight, &dense.bn)?;
        let (k1, b1) = fold(&one.conv.weight, &one.bn)?;
        let mut k = k3.add(&k1.pad2d(1, 1, 1, 1)?)?;
        let mut b = b3.add(&b1)?;
        if let Some(bn) = &self.rbr_identity {
            // A 3×3 kernel passing input channel i % (c1 / g) of its group to output i.
            let s = dense.conv.weight.shape();
            let (c2, cin_g) = (s[0], s[1]);
            let mut id = vec![0.0f32; c2 * cin_g * 9];
            for i in 0..c2 {
                id[(i * cin_g + i % cin_g) * 9 + 4] = 1.0;
            }
            let id = Tensor::from_vec(id, &[c2, cin_g, 3, 3], k.device())?;
            let (kid, bid) = fold(&id, bn)?;
            k = k.add(&kid)?;
            b = b.add(&bid)?;
        }
        Ok((k, b))
    }
}

impl Module for RepConv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match (&self.rbr_reparam, &self.rbr_dense, &self.rbr_1x1) {
            (Some(c), _, _) => Module::forward(c, x, train)?,
            (None, Some(dense), Some(one)) => {
                let mut y = dense.forward(x, train)?.add(&one.forward(x, train)?)?;
                if let Some(bn) = &self.rbr_identity {
                    y = y.add(&bn.forward(x, train)?)?;
                }
                y
            }
            _ => return invalid("RepConv: neither branches nor a fused conv"),
        };
        Ok(self.act.forward(&y, train)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        visit_act(self.act.as_ref(), &join(prefix, "act"), f);
        if let Some(bn) = &self.rbr_identity {
            bn.visit(&join(prefix, "rbr_identity"), f);
        }
        if let Some(d) = &self.rbr_dense {
            d.visit(&join(prefix, "rbr_dense"), f);
        }
        if let Some(o) = &self.rbr_1x1 {
            o.visit(&join(prefix, "rbr_1x1"), f);
        }
        if let Some(c) = &self.rbr_reparam {
            c.visit(&join(prefix, "rbr_reparam"), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        if self.rbr_reparam.is_some() {
            return Ok(());
        }
        let (k, b) = self.equivalent_kernel_bias()?;
        let params = match &self.rbr_dense {
            Some(d) => d.conv.params,
            None => return invalid("RepConv: no branches to fuse"),
        };
        self.rbr_reparam = Some(Conv2d {
            weight: k.detach().with_grad(),
            bias: Some(b.detach().with_grad()),
            params,
        });
        self.rbr_dense = None;
        self.rbr_1x1 = None;
        self.rbr_identity = None;
        Ok(())
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y = match (&self.rbr_reparam, &self.rbr_dense, &self.rbr_1x1) {
            (Some(c), _, _) => c.export_onnx(g, &join(prefix, "rbr_reparam"), x)?,
            (None, Some(dense), Some(one)) => {
                let a = dense.export_onnx(g, &join(prefix, "rbr_dense"), x)?;
                let b = one.export_onnx(g, &join(prefix, "rbr_1x1"), x)?;
                let mut y = g.add(&a, &b)?;
                if let Some(bn) = &self.rbr_identity {
                    let c = bn.export_onnx(g, &join(prefix, "rbr_identity"), x)?;
                    y = g.add(&y, &c)?;
                }
                y
            }
            _ => return invalid("RepConv: neither branches nor a fused conv"),
        };
        export_activation(g, self.act.as_ref(), &y)
    }
}

/// Normal(mean, std) values of `shape` as a parameter, from a sub-generator of `init`.
fn normal_param(init: &Init, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
    let mut r = StdRng::seed_from_u64(init.next_seed());
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
            let u1: f64 = 1.0 - r.random::<f64>();
            let u2: f64 = r.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            mean + std * z as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, init.device)?.with_grad())
}

/// `ImplicitA(c)`: adds a learned per-channel vector `implicit` (1×c×1×1, init N(0, 0.02)).
#[derive(Debug)]
pub struct ImplicitA {
    /// `implicit`.
    pub implicit: Tensor,
}

impl ImplicitA {
    /// Upstream's default init: mean 0, std 0.02.
    pub fn new(c: usize, init: &Init) -> Result<ImplicitA> {
        ImplicitA::with_init(c, 0.0, 0.02, init)
    }
    /// Initialised from N(mean, std).
    pub fn with_init(c: usize, mean: f32, std: f32, init: &Init) -> Result<ImplicitA> {
        Ok(ImplicitA {
            implicit: normal_param(init, &[1, c, 1, 1], mean, std)?,
        })
    }
}

impl Module for ImplicitA {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.add(&self.implicit)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "implicit"), &self.implicit, Kind::Param);
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let a = crate::onnx::tensor_initializer(g, &join(prefix, "implicit"), &self.implicit)?;
        Ok(g.add(x, &a)?)
    }
}

/// `ImplicitM(c)`: multiplies by a learned per-channel vector `implicit` (1×c×1×1, init
/// N(1, 0.02)).
#[derive(Debug)]
pub struct ImplicitM {
    /// `implicit`.
    pub implicit: Tensor,
}

impl ImplicitM {
    /// Upstream's default init: mean 1, std 0.02.
    pub fn new(c: usize, init: &Init) -> Result<ImplicitM> {
        ImplicitM::with_init(c, 1.0, 0.02, init)
    }
    /// Initialised from N(mean, std).
    pub fn with_init(c: usize, mean: f32, std: f32, init: &Init) -> Result<ImplicitM> {
        Ok(ImplicitM {
            implicit: normal_param(init, &[1, c, 1, 1], mean, std)?,
        })
    }
}

impl Module for ImplicitM {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.mul(&self.implicit)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "implicit"), &self.implicit, Kind::Param);
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let m = crate::onnx::tensor_initializer(g, &join(prefix, "implicit"), &self.implicit)?;
        Ok(g.mul(x, &m)?)
    }
}

/// Folds `im(conv(ia(x)))` into `conv` (upstream `IDetect.fuse`):
/// b ← (b + W·a)·m, W ← W·m per output channel.
fn fold_implicit(conv: &mut Conv2d, ia: &ImplicitA, im: &ImplicitM) -> Result<()> {
    let _g = yolo_tensor::no_grad();
    let s = conv.weight.shape().to_vec();
    let (c2, c1) = (s[0], s[1]);
    if s[2] != 1 || s[3] != 1 || ia.implicit.numel() != c1 || im.implicit.numel() != c2 {
        return invalid(format!(
            "implicit fold needs a 1×1 conv matching the implicit sizes, got {s:?}"
        ));
    }
    let w = conv.weight.reshape(&[c2, c1])?;
    let wa = w.matmul(&ia.implicit.reshape(&[c1, 1])?)?.reshape(&[c2])?;
    let b = match &conv.bias {
        Some(b) => b.add(&wa)?,
        None => wa,
    };
    let m = im.implicit.reshape(&[c2])?;
    let b = b.mul(&m)?;
    let w = conv.weight.mul(&m.reshape(&[c2, 1, 1, 1])?)?;
    conv.weight = w.detach().with_grad();
    conv.bias = Some(b.detach().with_grad());
    Ok(())
}

/// Upstream YOLOv7's bias prior (`_initialize_biases`): objectness for ~8 objects per 640²
/// image, classes at 0.6 / (nc − 0.99).
fn v7_bias_prior(conv: &Conv2d, na: usize, no: usize, nc: usize, stride: f32) -> Result<()> {
    let Some(b) = &conv.bias else {
        return Ok(());
    };
    let _g = yolo_tensor::no_grad();
    let mut v = b.to_vec();
    let obj = (8.0 / (640.0 / stride as f64).powi(2)).ln() as f32;
    let cls = (0.6 / (nc as f64 - 0.99)).ln() as f32;
    for a in 0..na {
        v[a * no + 4] += obj;
        for c in 0..nc {
            v[a * no + 5 + c] += cls;
        }
    }
    b.assign(&Tensor::from_vec(v, b.shape(), b.device())?)?;
    Ok(())
}

/// The implicit layers and shared behaviour of IDetect and IAuxDetect's main levels.
#[derive(Debug)]
struct Implicit {
    ia: Vec<ImplicitA>,
    im: Vec<ImplicitM>,
    /// Whether the implicit layers are folded into the head's convs (they stay as parameters,
    /// as upstream keeps them after `fuse`).
    fused: bool,
}

/// An implicit head gets one input per detection level.
fn check_levels(d: &Detect, inputs: usize) -> Result<()> {
    if inputs != d.nl() {
        return invalid(format!(
            "implicit head: {inputs} inputs for {} levels",
            d.nl()
        ));
    }
    Ok(())
}

impl Implicit {
    fn new(ch: &[usize], c_out: usize, init: &Init) -> Result<Implicit> {
        Ok(Implicit {
            ia: ch
                .iter()
                .map(|&c| ImplicitA::new(c, init))
                .collect::<Result<_>>()?,
            im: ch
                .iter()
                .map(|_| ImplicitM::new(c_out, init))
                .collect::<Result<_>>()?,
            fused: false,
        })
    }

    /// Per-level conv outputs `im(conv(ia(x)))` (just `conv(x)` once fused).
    fn levels(&self, d: &Detect, xs: &[Tensor], train: bool) -> Result<Vec<Tensor>> {
        check_levels(d, xs.len())?;
        let mut ys = Vec::with_capacity(xs.len());
        for (i, (x, conv)) in xs.iter().zip(&d.m).enumerate() {
            ys.push(if self.fused {
                Module::forward(conv, x, train)?
            } else {
                let y = Module::forward(conv, &self.ia[i].forward(x, train)?, train)?;
                self.im[i].forward(&y, train)?
            });
        }
        Ok(ys)
    }

    /// [`Implicit::levels`] as ONNX nodes.
    fn export_levels(
        &self,
        d: &Detect,
        g: &mut GraphBuilder,
        prefix: &str,
        xs: &[Value],
    ) -> Result<Vec<Value>> {
        if self.fused {
            return d.export_convs(g, prefix, xs);
        }
        check_levels(d, xs.len())?;
        let mut ys = Vec::with_capacity(xs.len());
        for (i, (x, conv)) in xs.iter().zip(&d.m).enumerate() {
            let y = self.ia[i].export_onnx(g, &join(prefix, &format!("ia.{i}")), x)?;
            let y = conv.export_onnx(g, &join(prefix, &format!("m.{i}")), &y)?;
            ys.push(self.im[i].export_onnx(g, &join(prefix, &format!("im.{i}")), &y)?);
        }
        Ok(ys)
    }

    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        for (i, a) in self.ia.iter().enumerate() {
            a.visit(&join(prefix, &format!("ia.{i}")), f);
        }
        for (i, m) in self.im.iter().enumerate() {
            m.visit(&join(prefix, &format!("im.{i}")), f);
        }
    }

    fn fuse(&mut self, d: &mut Detect) -> Result<()> {
        if self.fused {
            return Ok(());
        }
        for ((conv, a), m) in d.m.iter_mut().zip(&self.ia).zip(&self.im) {
            fold_implicit(conv, a, m)?;
        }
        self.fused = true;
        Ok(())
    }
}

/// YOLOv7 `IDetect(nc, anchors, ch)`: [`Detect`] with an `ImplicitA` before and an
/// `ImplicitM` after each level's conv. [`Layer::fuse_layer`] folds them into the convs (the
/// implicit parameters stay reported, as upstream keeps them).
#[derive(Debug)]
pub struct IDetect {
    /// The wrapped head (`m`, `anchors`, strides).
    pub det: Detect,
    implicit: Implicit,
}

impl IDetect {
    /// Builds the head for input channels `ch` (one per level) and pixel anchors per level.
    pub fn new(nc: usize, anchors: &[Vec<f64>], ch: &[usize], ctx: &Ctx) -> Result<IDetect> {
        let det = Detect::new(nc, anchors, ch, ctx)?;
        let implicit = Implicit::new(ch, det.na * det.no, &ctx.init)?;
        Ok(IDetect { det, implicit })
    }

    /// `ia.i` (adds before level i's conv).
    pub fn ia(&self) -> &[ImplicitA] {
        &self.implicit.ia
    }

    /// `im.i` (multiplies after level i's conv).
    pub fn im(&self) -> &[ImplicitM] {
        &self.implicit.im
    }

    /// Whether the implicit layers have been folded into the convs.
    pub fn is_fused(&self) -> bool {
        self.implicit.fused
    }

    /// Raw levels, plus decoded boxes unless `train`.
    pub fn forward_levels(&self, xs: &[Tensor], train: bool) -> Result<DetectOutput> {
        let ys = self.implicit.levels(&self.det, xs, train)?;
        self.det.decode_levels(&ys, train)
    }
}

impl Layer for IDetect {
    fn run(&self, xs: &[Tensor], _train: bool) -> Result<Tensor> {
        match self.forward_levels(xs, false)?.pred {
            Some(p) => Ok(p),
            None => invalid("IDetect: no decoded output"),
        }
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        // Upstream's `anchor_grid` buffer (pixel anchors) is derived from `anchors` and the
        // strides, so it is not reported (weights I/O skips it in files), as for Detect.
        f(&join(prefix, "anchors"), &self.det.anchors, Kind::Buffer);
        for (i, c) in self.det.m.iter().enumerate() {
            c.visit(&join(prefix, &format!("m.{i}")), f);
        }
        self.implicit.visit(prefix, f);
    }
    fn fuse_layer(&mut self) -> Result<()> {
        self.implicit.fuse(&mut self.det)
    }
    fn export_onnx_layer(&self, g: &mut GraphBuilder, prefix: &str, xs: &[Value]) -> Result<Value> {
        let ys = self.implicit.export_levels(&self.det, g, prefix, xs)?;
        self.det.export_decode(g, prefix, &ys)
    }
    fn as_detect(&self) -> Option<&Detect> {
        Some(&self.det)
    }
    fn as_detect_mut(&mut self) -> Option<&mut Detect> {
        Some(&mut self.det)
    }
    fn forward_head(&self, xs: &[Tensor], train: bool) -> Option<Result<DetectOutput>> {
        Some(self.forward_levels(xs, train))
    }
    fn set_head_strides(&mut self, stride: Vec<f32>, init_biases: bool) -> Option<Result<()>> {
        let d = &mut self.det;
        Some(d.set_strides(stride, false).and_then(|_| {
            if init_biases {
                for (c, &s) in d.m.iter().zip(&d.stride) {
                    v7_bias_prior(c, d.na, d.no, d.nc, s)?;
                }
            }
            Ok(())
        }))
    }
}

/// YOLOv7 `IAuxDetect(nc, anchors, ch)`: an [`IDetect`]-style main head over the first `nl`
/// inputs plus plain 1×1 auxiliary convs `m2` over the last `nl` (lead-guided training of the
/// P6 models). Before fusing, [`DetectOutput::aux`] holds the auxiliary levels (shaped as
/// `raw`) in both modes, since upstream runs them in both; after fusing they are neither run nor
/// returned, but `m2` stays a parameter, as upstream keeps it.
#[derive(Debug)]
pub struct IAuxDetect {
    /// The main head (`m`, `anchors`, strides).
    pub det: Detect,
    /// Auxiliary convs `m2.0`, `m2.1`, ….
    pub m2: Vec<Conv2d>,
    implicit: Implicit,
}

impl IAuxDetect {
    /// Builds the head for `2·nl` input channels (main levels, then auxiliary levels).
    pub fn new(nc: usize, anchors: &[Vec<f64>], ch: &[usize], ctx: &Ctx) -> Result<IAuxDetect> {
        let nl = anchors.len();
        if ch.len() != 2 * nl {
            return invalid(format!(
                "IAuxDetect: {} input layers for {nl} anchor levels (needs {})",
                ch.len(),
                2 * nl
            ));
        }
        let det = Detect::new(nc, anchors, &ch[..nl], ctx)?;
        let c_out = det.na * det.no;
        let m2 = ch[nl..]
            .iter()
            .map(|&c| Conv2d::new(c, c_out, (1, 1), (1, 1), (0, 0), 1, 1, true, &ctx.init))
            .collect::<Result<Vec<_>>>()?;
        let implicit = Implicit::new(&ch[..nl], c_out, &ctx.init)?;
        Ok(IAuxDetect { det, m2, implicit })
    }

    /// `ia.i`.
    pub fn ia(&self) -> &[ImplicitA] {
        &self.implicit.ia
    }

    /// `im.i`.
    pub fn im(&self) -> &[ImplicitM] {
        &self.implicit.im
    }

    /// Whether the head has been fused.
    pub fn is_fused(&self) -> bool {
        self.implicit.fused
    }

    /// Main levels in `raw` (and decoded boxes unless `train`); auxiliary levels in `aux`
    /// until fused. Takes `2·nl` inputs (only the first `nl` once fused).
    pub fn forward_levels(&self, xs: &[Tensor], train: bool) -> Result<DetectOutput> {
        let nl = self.det.nl();
        let fused = self.implicit.fused;
        if xs.len() != 2 * nl && !(fused && xs.len() == nl) {
            return invalid(format!(
                "IAuxDetect: {} inputs for {nl} main + {nl} auxiliary levels",
                xs.len()
            ));
        }
        let ys = self.implicit.levels(&self.det, &xs[..nl], train)?;
        let mut out = self.det.decode_levels(&ys, train)?;
        if !fused {
            for (x, conv) in xs[nl..].iter().zip(&self.m2) {
                let y = Module::forward(conv, x, train)?;
                out.aux.push(self.det.split_level(&y)?);
            }
        }
        Ok(out)
    }
}

impl Layer for IAuxDetect {
    fn run(&self, xs: &[Tensor], _train: bool) -> Result<Tensor> {
        match self.forward_levels(xs, false)?.pred {
            Some(p) => Ok(p),
            None => invalid("IAuxDetect: no decoded output"),
        }
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        // Upstream's `anchor_grid` buffer (pixel anchors) is derived from `anchors` and the
        // strides, so it is not reported (weights I/O skips it in files), as for Detect.
        f(&join(prefix, "anchors"), &self.det.anchors, Kind::Buffer);
        for (i, c) in self.det.m.iter().enumerate() {
            c.visit(&join(prefix, &format!("m.{i}")), f);
        }
        for (i, c) in self.m2.iter().enumerate() {
            c.visit(&join(prefix, &format!("m2.{i}")), f);
        }
        self.implicit.visit(prefix, f);
    }
    fn fuse_layer(&mut self) -> Result<()> {
        self.implicit.fuse(&mut self.det)
    }
    /// The main levels' decoded predictions (the auxiliary convs are training-only).
    fn export_onnx_layer(&self, g: &mut GraphBuilder, prefix: &str, xs: &[Value]) -> Result<Value> {
        let nl = self.det.nl();
        if xs.len() != 2 * nl && !(self.implicit.fused && xs.len() == nl) {
            return invalid(format!(
                "IAuxDetect: {} inputs for {nl} main + {nl} auxiliary levels",
                xs.len()
            ));
        }
        let ys = self
            .implicit
            .export_levels(&self.det, g, prefix, &xs[..nl])?;
        self.det.export_decode(g, prefix, &ys)
    }
    fn as_detect(&self) -> Option<&Detect> {
        Some(&self.det)
    }
    fn as_detect_mut(&mut self) -> Option<&mut Detect> {
        Some(&mut self.det)
    }
    fn forward_head(&self, xs: &[Tensor], train: bool) -> Option<Result<DetectOutput>> {
        Some(self.forward_levels(xs, train))
    }
    fn set_head_strides(&mut self, stride: Vec<f32>, init_biases: bool) -> Option<Result<()>> {
        let d = &mut self.det;
        let m2 = &self.m2;
        Some(d.set_strides(stride, false).and_then(|_| {
            if init_biases {
                for ((c, c2), &s) in d.m.iter().zip(m2).zip(&d.stride) {
                    v7_bias_prior(c, d.na, d.no, d.nc, s)?;
                    v7_bias_prior(c2, d.na, d.no, d.nc, s)?;
                }
            }
            Ok(())
        }))
    }
}
