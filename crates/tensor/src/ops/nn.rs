//! Neural-network ops: matmul, conv2d, batch norm, pooling, upsampling, softmax, BCE.

use super::same_device;
use crate::autograd::record;
use crate::error::{arg_err, shape_err, Result};
use crate::op::{Conv2dParams, ConvGeom, Pool2dParams, UnaryOp};
use crate::shape::{norm_axis, split_at_axis};
use crate::storage::Storage;
use crate::Tensor;

fn dims4(op: &'static str, t: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *t.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => shape_err(
            op,
            format!("expects an N×C×H×W tensor, got {:?}", t.shape()),
        ),
    }
}

/// Checks a batch norm's N×C×H×W input against its weight, bias, running mean and running
/// variance (each `[C]`, on the input's device); returns (N, C, H, W).
pub(super) fn bn_checks(
    op: &'static str,
    x: &Tensor,
    params: [&Tensor; 4],
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = dims4(op, x)?;
    for (name, t) in ["weight", "bias", "running_mean", "running_var"]
        .into_iter()
        .zip(params)
    {
        same_device(op, x, t)?;
        if t.shape() != [c] {
            return shape_err(
                op,
                format!("{name} has shape {:?}, expected [{c}]", t.shape()),
            );
        }
    }
    Ok((n, c, h, w))
}

/// `running ← (1 − momentum)·running + momentum·batch` for the mean and the (unbiased)
/// variance, in place and outside the graph.
pub(super) fn update_running(
    running_mean: &Tensor,
    running_var: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    momentum: f32,
) -> Result<()> {
    running_mean.assign(
        &running_mean
            .mul_scalar(1.0 - momentum)
            .add(&mean.mul_scalar(momentum))?,
    )?;
    running_var.assign(
        &running_var
            .mul_scalar(1.0 - momentum)
            .add(&var.mul_scalar(momentum))?,
    )
}

impl Tensor {
    /// Matrix product over the last two axes: `[…, m, k] × […, k, n]` with equal batch axes,
    /// or `[…, m, k] × [k, n]` (the right matrix shared by every batch entry).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        same_device("matmul", self, rhs)?;
        if self.rank() < 2 || rhs.rank() < 2 {
            return shape_err(
                "matmul",
                format!(
                    "needs rank >= 2 operands, got {:?} and {:?}",
                    self.shape(),
                    rhs.shape()
                ),
            );
        }
        if rhs.rank() == 2 && self.rank() > 2 {
            let k = self.shape()[self.rank() - 1];
            let flat = self.reshape(&[self.numel() / k.max(1), k])?;
            let out = flat.matmul(rhs)?;
            let mut s = self.shape().to_vec();
            *s.last_mut().unwrap() = rhs.shape()[1];
            return out.reshape(&s);
        }
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k) = (self.shape()[ra - 2], self.shape()[ra - 1]);
        let (k2, n) = (rhs.shape()[rb - 2], rhs.shape()[rb - 1]);
        if k != k2 || self.shape()[..ra - 2] != rhs.shape()[..rb - 2] {
            return shape_err("matmul", format!("{:?} × {:?}", self.shape(), rhs.shape()));
        }
        let batch: usize = self.shape()[..ra - 2].iter().product();
        let mut out_shape = self.shape()[..ra - 2].to_vec();
        out_shape.extend([m, n]);
        let out = self
            .storage()
            .matmul(&rhs.storage(), batch, m, k, n, false, false);
        Ok(record(
            out,
            out_shape,
            "matmul",
            vec![self.clone(), rhs.clone()],
            move |inp, _, g| {
                let (a, b) = (&inp[0], &inp[1]);
                let ga = g
                    .storage()
                    .matmul(&b.storage(), batch, m, n, k, false, true);
                let gb = a
                    .storage()
                    .matmul(&g.storage(), batch, k, m, n, true, false);
                Ok(vec![
                    Some(Tensor::make(ga, a.shape().to_vec(), None)),
                    Some(Tensor::make(gb, b.shape().to_vec(), None)),
                ])
            },
        ))
    }

    /// `act(conv2d(weight, bias, p))`: when nothing records it for backward (inference), the
    /// activation runs inside the convolution on each finished piece of output while it is in
    /// cache (one pass over the result fewer); otherwise the two recorded ops.
    pub fn conv2d_act(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: UnaryOp,
    ) -> Result<Tensor> {
        if records(&[self, weight], bias) {
            return Ok(self.conv2d(weight, bias, p)?.unary(act));
        }
        let g = conv_geom(self, weight, bias, &p)?;
        Ok(self.conv2d_unrecorded(weight, bias, &g, act, None))
    }

    /// The convolution `g` (checked) through the kernels' epilogue, `act` then `residual`
    /// added, recording nothing: [`Tensor::conv2d_act`] and [`Tensor::conv2d_act_add`].
    fn conv2d_unrecorded(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        g: &ConvGeom,
        act: UnaryOp,
        residual: Option<&Tensor>,
    ) -> Tensor {
        let b = bias.map(|b| b.storage());
        let r = residual.map(|r| r.storage());
        let out =
            self.storage()
                .conv2d(&weight.storage(), b.as_deref(), g, Some(act), r.as_deref());
        Tensor::make(out, vec![g.n, g.c_out, g.oh, g.ow], None)
    }

    /// `conv2d(concat(parts, 1), weight, bias, p)`, then `act` when given. A 1×1 convolution
    /// that nothing records for backward, on the CPU, reads the parts in place (the concat is
    /// never written: YOLO's C3 and SPPF end in one); otherwise the recorded ops.
    pub fn concat_conv2d(
        parts: &[&Tensor],
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let ones: Vec<(&Tensor, usize)> = parts.iter().map(|&t| (t, 1)).collect();
        if let Some(y) = Self::parts_in_place(&ones, weight, bias, &p, act) {
            return Ok(y);
        }
        let x = match parts {
            [one] => (*one).clone(),
            _ => Tensor::concat(parts, 1)?,
        };
        match act {
            Some(op) => x.conv2d_act(weight, bias, p, op),
            None => x.conv2d(weight, bias, p),
        }
    }

    /// [`Tensor::concat_conv2d`] of parts each upsampled (nearest) by its factor:
    /// `concat_conv2d([upsample_nearest2d(t, f, f) for (t, f) in parts], ..)`. A 1×1
    /// convolution that nothing records, on the CPU, takes each upsampled part's products at
    /// its own size (a 1×1 convolution commutes with nearest upsampling: f² times fewer) and
    /// never writes the upsampled map; otherwise the parts are upsampled and joined.
    pub fn concat_conv2d_up(
        parts: &[(&Tensor, usize)],
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        if parts.iter().any(|&(_, f)| f == 0) {
            return arg_err("concat_conv2d_up", "an upsampling factor of 0".to_string());
        }
        if let Some(y) = Self::parts_in_place(parts, weight, bias, &p, act) {
            return Ok(y);
        }
        let full: Vec<Tensor> = parts
            .iter()
            .map(|&(t, f)| match f {
                1 => Ok(t.clone()),
                f => t.upsample_nearest2d(f, f),
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = full.iter().collect();
        Self::concat_conv2d(&refs, weight, bias, p, act)
    }

    /// The in-place path of [`Tensor::concat_conv2d`] and [`Tensor::concat_conv2d_up`]
    /// (parts with their upsampling factors), when [`parts_geom`] allows it.
    fn parts_in_place(
        parts: &[(&Tensor, usize)],
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
        act: Option<UnaryOp>,
    ) -> Option<Tensor> {
        let g = parts_geom(parts, weight, bias, p)?;
        let guards: Vec<_> = parts.iter().map(|(t, _)| t.storage()).collect();
        let srcs: Vec<(&Storage, usize, usize)> = guards
            .iter()
            .zip(parts)
            .map(|(s, (t, f))| (&**s, t.shape()[1], *f))
            .collect();
        let b = bias.map(|b| b.storage());
        let out = Storage::conv2d_parts(&srcs, &weight.storage(), b.as_deref(), &g, act);
        Some(Tensor::make(out, vec![g.n, g.c_out, g.oh, g.ow], None))
    }

    /// `act(conv2d(weight, bias, p)) + residual` (`residual` of the output's shape, YOLO's
    /// bottleneck shortcut): when nothing records it, the CPU kernels add it to each finished
    /// piece of output (no separate pass over the result); otherwise the recorded ops.
    pub fn conv2d_act_add(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: UnaryOp,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let g = conv_geom(self, weight, bias, &p)?;
        let shape = [g.n, g.c_out, g.oh, g.ow];
        if records(&[self, weight, residual], bias) || residual.shape() != shape {
            // (a residual of another shape broadcasts, or is the add's error)
            return self.conv2d_act(weight, bias, p, act)?.add(residual);
        }
        same_device("conv2d_act_add", self, residual)?;
        Ok(self.conv2d_unrecorded(weight, bias, &g, act, Some(residual)))
    }

    /// A 1×1 stride-1 convolution whose `heads`·k output channels come out N×heads×H×W×k:
    /// `conv2d(..).reshape([N, heads, k, H, W]).permute([0, 1, 3, 4, 2])` (a detection
    /// head's per-anchor rows). With nothing recording, on the CPU, the GEMM writes that
    /// layout directly; otherwise the recorded ops.
    pub fn conv1x1_heads(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        heads: usize,
    ) -> Result<Tensor> {
        let g = conv_geom(self, weight, bias, &p)?;
        if heads == 0 || g.c_out % heads != 0 {
            return arg_err(
                "conv1x1_heads",
                format!(
                    "{} output channels do not split into {heads} heads",
                    g.c_out
                ),
            );
        }
        let per = g.c_out / heads;
        let recording = records(&[self, weight], bias);
        let on_cpu = self.device() == crate::Device::Cpu;
        if recording || !on_cpu || !crate::cpu::conv::parts_enabled(&g) {
            return self
                .conv2d(weight, bias, p)?
                .reshape(&[g.n, heads, per, g.oh, g.ow])?
                .permute(&[0, 1, 3, 4, 2]);
        }
        let out = {
            let b = bias.map(|b| b.storage());
            self.storage()
                .conv2d_heads(&weight.storage(), b.as_deref(), &g, heads)
        };
        Ok(Tensor::make(out, vec![g.n, heads, g.oh, g.ow, per], None))
    }

    /// 2-D convolution (cross-correlation, PyTorch semantics): `self` N×C×H×W, `weight`
    /// Cout×(C/groups)×kh×kw, optional `bias` of Cout.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        let g = conv_geom(self, weight, bias, &p)?;
        let out = {
            let b = bias.map(|b| b.storage());
            self.storage()
                .conv2d(&weight.storage(), b.as_deref(), &g, None, None)
        };
        let mut inputs = vec![self.clone(), weight.clone()];
        if let Some(b) = bias {
            inputs.push(b.clone());
        }
        Ok(record(
            out,
            vec![g.n, g.c_out, g.oh, g.ow],
            "conv2d",
            inputs,
            move |inp, _, dy| {
                let (x, w) = (&inp[0], &inp[1]);
                let dx = x.requires_grad().then(|| {
                    Tensor::make(
                        dy.storage().conv2d_backward_input(&w.storage(), &g),
                        x.shape().to_vec(),
                        None,
                    )
                });
                let dw = w.requires_grad().then(|| {
                    Tensor::make(
                        x.storage().conv2d_backward_weight(&dy.storage(), &g),
                        w.shape().to_vec(),
                        None,
                    )
                });
                let mut grads = vec![dx, dw];
                if inp.len() == 3 {
                    grads.push(Some(dy.sum(&[0, 2, 3], false)?));
                }
                Ok(grads)
            },
        ))
    }

    /// Training-mode 2-D batch norm: normalises with batch statistics over N, H, W and updates
    /// `running_mean`/`running_var` in place with `momentum` (PyTorch convention: new =
    /// (1−m)·old + m·batch; the running variance uses the unbiased batch variance).
    pub fn batch_norm2d_train(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        eps: f32,
    ) -> Result<Tensor> {
        self.batch_norm2d_act_train(weight, bias, running_mean, running_var, momentum, eps, None)
    }

    /// [`Tensor::batch_norm2d_train`] followed by the pointwise `act` (e.g. SiLU) as one op:
    /// the output is `act(bn(x))`, and the normalised values are neither stored nor kept for
    /// the backward pass (it recomputes them from `x`), which saves a pass over memory each
    /// way and one activation-sized buffer per layer. `None` is the plain batch norm.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm2d_act_train(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        eps: f32,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let (n, c, h, w) = bn_checks(
            "batch_norm2d_train",
            self,
            [weight, bias, running_mean, running_var],
        )?;
        let m = n * h * w;
        if m < 2 {
            return arg_err(
                "batch_norm2d_train",
                format!("needs more than one value per channel to compute batch statistics, got input {:?}", self.shape()),
            );
        }
        let r = self.storage().batch_norm_train(
            n,
            c,
            h * w,
            &weight.storage(),
            &bias.storage(),
            eps,
            act,
        );
        {
            let _g = crate::no_grad();
            let dev = self.device();
            let mean = Tensor::from_vec(r.mean.clone(), &[c], dev)?;
            let unbiased: Vec<f32> = r
                .var
                .iter()
                .map(|v| v * m as f32 / (m - 1) as f32)
                .collect();
            let var = Tensor::from_vec(unbiased, &[c], dev)?;
            update_running(running_mean, running_var, &mean, &var, momentum)?;
        }
        let (mean, invstd) = (r.mean, r.invstd);
        Ok(record(
            r.y,
            self.shape().to_vec(),
            if act.is_some() {
                "batch_norm2d_act"
            } else {
                "batch_norm2d"
            },
            vec![self.clone(), weight.clone(), bias.clone()],
            move |inp, _, dy| {
                let (x, wt, bs) = (&inp[0], &inp[1], &inp[2]);
                let bias_storage = bs.storage();
                let (dx, dw, db) = x.storage().batch_norm_train_backward(
                    &dy.storage(),
                    n,
                    c,
                    h * w,
                    &wt.storage(),
                    &mean,
                    &invstd,
                    act.map(|op| (&*bias_storage, op)),
                );
                Ok(vec![
                    Some(Tensor::make(dx, x.shape().to_vec(), None)),
                    Some(Tensor::make(dw, vec![c], None)),
                    Some(Tensor::make(db, vec![c], None)),
                ])
            },
        ))
    }

    /// Inference-mode 2-D batch norm with running statistics: `(x − mean)/√(var+eps)·w + b`.
    pub fn batch_norm2d_eval(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        let (_, c, _, _) = dims4("batch_norm2d_eval", self)?;
        for (name, t) in [
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ] {
            if t.shape() != [c] {
                return shape_err(
                    "batch_norm2d_eval",
                    format!("{name} has shape {:?}, expected [{c}]", t.shape()),
                );
            }
        }
        let scale = weight.mul(&running_var.add_scalar(eps).sqrt().recip())?;
        let shift = bias.sub(&running_mean.mul(&scale)?)?;
        self.mul(&scale.reshape(&[1, c, 1, 1])?)?
            .add(&shift.reshape(&[1, c, 1, 1])?)
    }

    /// 2-D max pooling (floor mode, padding never wins), as `nn.MaxPool2d`.
    pub fn max_pool2d(&self, p: Pool2dParams) -> Result<Tensor> {
        let (n, c, h, w) = dims4("max_pool2d", self)?;
        let (kh, kw) = p.kernel;
        if kh == 0 || kw == 0 || p.stride.0 == 0 || p.stride.1 == 0 {
            return arg_err(
                "max_pool2d",
                format!("kernel and stride must be positive, got {p:?}"),
            );
        }
        if 2 * p.padding.0 > kh || 2 * p.padding.1 > kw {
            return arg_err(
                "max_pool2d",
                format!("padding must be at most half the kernel, got {p:?}"),
            );
        }
        if h + 2 * p.padding.0 < kh || w + 2 * p.padding.1 < kw {
            return shape_err(
                "max_pool2d",
                format!("input {:?} smaller than the window {p:?}", self.shape()),
            );
        }
        let oh = crate::cpu::pool::pooled(h, kh, p.stride.0, p.padding.0);
        let ow = crate::cpu::pool::pooled(w, kw, p.stride.1, p.padding.1);
        let out = self.storage().max_pool2d(n * c, h, w, &p);
        Ok(record(
            out,
            vec![n, c, oh, ow],
            "max_pool2d",
            vec![self.clone()],
            move |inp, _, dy| {
                let x = &inp[0];
                let dx = x
                    .storage()
                    .max_pool2d_backward(&dy.storage(), n * c, h, w, &p);
                Ok(vec![Some(Tensor::make(dx, x.shape().to_vec(), None))])
            },
        ))
    }

    /// Nearest-neighbour upsampling by integer factors (rows, cols), as `nn.Upsample`.
    pub fn upsample_nearest2d(&self, sh: usize, sw: usize) -> Result<Tensor> {
        let (n, c, h, w) = dims4("upsample_nearest2d", self)?;
        if sh == 0 || sw == 0 {
            return arg_err("upsample_nearest2d", "scale factors must be positive");
        }
        let out = self.storage().upsample_nearest(n * c, h, w, sh, sw);
        Ok(record(
            out,
            vec![n, c, h * sh, w * sw],
            "upsample_nearest2d",
            vec![self.clone()],
            move |inp, _, dy| {
                let dx = dy.storage().upsample_nearest_backward(n * c, h, w, sh, sw);
                Ok(vec![Some(Tensor::make(dx, inp[0].shape().to_vec(), None))])
            },
        ))
    }

    /// Global average pooling to N×C×1×1.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        dims4("global_avg_pool2d", self)?;
        self.mean(&[2, 3], true)
    }

    fn softmax_impl(&self, axis: isize, log: bool) -> Result<Tensor> {
        let name = if log { "log_softmax" } else { "softmax" };
        let ax = norm_axis(name, axis, self.rank())?;
        let (outer, size, inner) = split_at_axis(self.shape(), ax);
        let out = self.storage().softmax(outer, size, inner, log);
        Ok(record(
            out,
            self.shape().to_vec(),
            name,
            vec![self.clone()],
            move |inp, y, dy| {
                let dx = y
                    .storage()
                    .softmax_backward(&dy.storage(), outer, size, inner, log);
                Ok(vec![Some(Tensor::make(dx, inp[0].shape().to_vec(), None))])
            },
        ))
    }

    /// Softmax along `axis`.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, false)
    }

    /// Log-softmax along `axis` (stable).
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.softmax_impl(axis, true)
    }

    /// Elementwise, numerically stable `BCEWithLogits(self, target)` (no reduction), with an
    /// optional `pos_weight` broadcast against the logits as in PyTorch.
    pub fn bce_with_logits(&self, target: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
        same_device("bce_with_logits", self, target)?;
        if target.shape() != self.shape() {
            return shape_err(
                "bce_with_logits",
                format!(
                    "target {:?} differs from logits {:?}",
                    target.shape(),
                    self.shape()
                ),
            );
        }
        let pw = match pos_weight {
            Some(p) => {
                let _g = crate::no_grad();
                Some(p.broadcast_as(self.shape())?)
            }
            None => None,
        };
        let out = {
            let pws = pw.as_ref().map(|p| p.storage());
            self.storage()
                .bce_with_logits(&target.storage(), pws.as_deref())
        };
        let mut inputs = vec![self.clone(), target.clone()];
        if let Some(p) = pos_weight {
            inputs.push(p.clone());
        }
        Ok(record(
            out,
            self.shape().to_vec(),
            "bce_with_logits",
            inputs,
            move |inp, _, g| {
                let (x, t) = (&inp[0], &inp[1]);
                let sp = x.neg().softplus(); // ln(1+e^−x)
                let lw = match &pw {
                    Some(p) => p.add_scalar(-1.0).mul(t)?.add_scalar(1.0),
                    None => Tensor::ones(&[1], x.device())?,
                };
                // d/dx = (1−t) − lw·(1−σ(x)); d/dt = −x + (pw−1)·sp; d/dpw = t·sp
                let dx = t
                    .affine(-1.0, 1.0)
                    .sub(&lw.mul(&x.sigmoid().affine(-1.0, 1.0))?)?
                    .mul(g)?;
                let dt = match &pw {
                    Some(p) => x.neg().add(&p.add_scalar(-1.0).mul(&sp)?)?,
                    None => x.neg(),
                }
                .mul(g)?;
                let mut grads = vec![Some(dx), Some(dt)];
                if inp.len() == 3 {
                    grads.push(Some(t.mul(&sp)?.mul(g)?.sum_to_shape(inp[2].shape())?));
                }
                Ok(grads)
            },
        ))
    }
}

/// The geometry of [`Tensor::concat_conv2d`]'s in-place path, when it applies: two or more
/// N×Cᵢ×H×W parts (each once upsampled by its factor), nothing recording, everything on the CPU, a 1×1 stride-1 unpadded
/// ungrouped weight of ΣCᵢ inputs and a fitting bias. Anything else (errors included) takes
/// the recorded ops, which check and report.
fn parts_geom(
    parts: &[(&Tensor, usize)],
    w: &Tensor,
    bias: Option<&Tensor>,
    p: &Conv2dParams,
) -> Option<ConvGeom> {
    let tensors: Vec<&Tensor> = parts.iter().map(|p| p.0).collect();
    let recording = records(&tensors, bias) || records(&[w], None);
    let on_cpu = |t: &Tensor| t.device() == crate::Device::Cpu;
    if parts.len() < 2
        || recording
        || !tensors.iter().all(|t| on_cpu(t))
        || !on_cpu(w)
        || !bias.is_none_or(on_cpu)
    {
        return None;
    }
    // Each part's size once upsampled by its factor.
    let full = |&(t, f): &(&Tensor, usize)| match *t.shape() {
        [n, c, h, w] => Some((n, c, h * f, w * f)),
        _ => None,
    };
    let (n, _, h, wd) = full(&parts[0])?;
    let mut c_in = 0;
    for part in parts {
        match full(part)? {
            (tn, c, th, tw) if (tn, th, tw) == (n, h, wd) => c_in += c,
            _ => return None,
        }
    }
    let [c_out, wc, 1, 1] = *w.shape() else {
        return None;
    };
    if wc != c_in || bias.is_some_and(|b| b.shape() != [c_out]) || p.dilation.0 * p.dilation.1 == 0
    {
        return None;
    }
    let g = ConvGeom {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        kh: 1,
        kw: 1,
        oh: h,
        ow: wd,
        p: *p,
    };
    crate::cpu::conv::parts_enabled(&g).then_some(g)
}

/// Whether an op on `inputs` (and `bias`) would be recorded for backward.
fn records(inputs: &[&Tensor], bias: Option<&Tensor>) -> bool {
    crate::is_grad_enabled()
        && (inputs.iter().any(|t| t.requires_grad()) || bias.is_some_and(|b| b.requires_grad()))
}

/// Validates a convolution call and derives its geometry.
fn conv_geom(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<ConvGeom> {
    let (n, c_in, h, wd) = dims4("conv2d", x)?;
    same_device("conv2d", x, w)?;
    let (c_out, cin_g, kh, kw) = match *w.shape() {
        [a, b, c, d] => (a, b, c, d),
        _ => {
            return shape_err(
                "conv2d",
                format!("weight must be Cout×Cin/groups×kh×kw, got {:?}", w.shape()),
            )
        }
    };
    let gr = p.groups;
    if gr == 0 || p.stride.0 == 0 || p.stride.1 == 0 || p.dilation.0 == 0 || p.dilation.1 == 0 {
        return arg_err(
            "conv2d",
            format!("groups, stride and dilation must be positive, got {p:?}"),
        );
    }
    if c_in % gr != 0 || c_out % gr != 0 || cin_g * gr != c_in {
        return shape_err(
            "conv2d",
            format!("input {:?} and weight {:?} do not fit {gr} groups (need Cin/groups = weight dim 1)", x.shape(), w.shape()),
        );
    }
    if let Some(b) = bias {
        same_device("conv2d", x, b)?;
        if b.shape() != [c_out] {
            return shape_err(
                "conv2d",
                format!("bias has shape {:?}, expected [{c_out}]", b.shape()),
            );
        }
    }
    let span_h = p.dilation.0 * (kh - 1) + 1;
    let span_w = p.dilation.1 * (kw - 1) + 1;
    if h + 2 * p.padding.0 < span_h || wd + 2 * p.padding.1 < span_w || kh == 0 || kw == 0 {
        return shape_err(
            "conv2d",
            format!(
                "input {:?} (padded by {:?}) smaller than kernel {:?}",
                x.shape(),
                p.padding,
                w.shape()
            ),
        );
    }
    Ok(ConvGeom {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
        oh: (h + 2 * p.padding.0 - span_h) / p.stride.0 + 1,
        ow: (wd + 2 * p.padding.1 - span_w) / p.stride.1 + 1,
        p: *p,
    })
}
