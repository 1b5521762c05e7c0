//! Optimisers as upstream `smart_optimizer`: SGD (nesterov), Adam and AdamW over three parameter
//! groups, with PyTorch's update rules (single-tensor CPU path, f32 element arithmetic).
//!
//! Group order is the optimiser's (upstream `optimizer.param_groups`): `smart_optimizer` builds
//! the optimiser on the biases and then adds the decayed weights and the BN weights, so
//! [`GROUP_BIAS`] = 0 (gets `warmup_bias_lr`), [`GROUP_DECAY`] = 1, [`GROUP_NO_DECAY`] = 2.

use crate::error::{invalid, Result};
use crate::schedule::{nominal_accumulate, WarmupState};
use std::collections::HashMap;
use std::str::FromStr;
use yolo_layers::Kind;
use yolo_tensor::{Device, Tensor};

/// Optimiser group of the biases (upstream `g[2]`, no decay; `param_groups[0]`).
pub const GROUP_BIAS: usize = 0;
/// Optimiser group of the weights with decay (upstream `g[0]`; `param_groups[1]`).
pub const GROUP_DECAY: usize = 1;
/// Optimiser group of the normalisation weights (upstream `g[1]`, no decay; `param_groups[2]`).
pub const GROUP_NO_DECAY: usize = 2;

/// A named parameter handle (shares data with the model).
pub type NamedParam = (String, Tensor);

/// Parameters split as upstream `smart_optimizer` (buffers are left out).
#[derive(Clone, Debug, Default)]
pub struct ParamGroups {
    /// Upstream `g[0]`: conv/linear weights and every other parameter (ACON `p1`/`p2`,
    /// implicit knowledge…), with weight decay.
    pub decay: Vec<NamedParam>,
    /// Upstream `g[1]`: normalisation-layer weights (rank-1 `weight`), no decay.
    pub no_decay: Vec<NamedParam>,
    /// Upstream `g[2]`: every `bias`, no decay.
    pub bias: Vec<NamedParam>,
}

impl ParamGroups {
    /// Splits `Model::named_tensors()` output: names ending in `.bias` → biases, rank-1
    /// `.weight` (BatchNorm/LayerNorm) → no decay, other parameters → decay.
    pub fn split(named: impl IntoIterator<Item = (String, Tensor, Kind)>) -> ParamGroups {
        let mut g = ParamGroups::default();
        for (name, t, kind) in named {
            if kind != Kind::Param {
                continue;
            }
            let leaf = name.rsplit('.').next().unwrap_or(&name);
            if leaf == "bias" {
                g.bias.push((name, t));
            } else if leaf == "weight" && t.rank() == 1 {
                g.no_decay.push((name, t));
            } else {
                g.decay.push((name, t));
            }
        }
        g
    }

    /// Total parameter tensors in the three groups.
    pub fn len(&self) -> usize {
        self.decay.len() + self.no_decay.len() + self.bias.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Upstream weight-decay scaling: `weight_decay * batch_size * accumulate / nbs` with
/// `accumulate = max(round(nbs / batch_size), 1)`.
pub fn scaled_weight_decay(weight_decay: f64, batch_size: usize, nbs: usize) -> f64 {
    let acc = nominal_accumulate(nbs, batch_size);
    weight_decay * batch_size as f64 * acc as f64 / nbs as f64
}

/// The update rule (upstream `--optimizer SGD|Adam|AdamW`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD` with momentum (per group) and optional nesterov (upstream: on).
    Sgd {
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `torch.optim.Adam`, betas (group momentum, `beta2`), L2 decay added to the gradient.
    Adam {
        /// Second-moment decay (0.999).
        beta2: f64,
        /// Denominator epsilon (1e-8).
        eps: f64,
    },
    /// `torch.optim.AdamW`: as Adam with decoupled decay `p *= 1 - lr * wd`.
    AdamW {
        /// Second-moment decay (0.999).
        beta2: f64,
        /// Denominator epsilon (1e-8).
        eps: f64,
    },
}

impl OptimizerKind {
    /// Upstream SGD: nesterov momentum.
    pub fn sgd() -> OptimizerKind {
        OptimizerKind::Sgd { nesterov: true }
    }

    /// Upstream Adam: beta2 0.999, eps 1e-8.
    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam {
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Upstream AdamW: beta2 0.999, eps 1e-8.
    pub fn adamw() -> OptimizerKind {
        OptimizerKind::AdamW {
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Whether groups carry a `momentum` that upstream warmup ramps (SGD only: torch's Adam
    /// groups hold `betas`, which warmup leaves alone).
    pub fn has_momentum(&self) -> bool {
        matches!(self, OptimizerKind::Sgd { .. })
    }
}

impl FromStr for OptimizerKind {
    type Err = crate::error::TrainError;
    /// Parses upstream's `--optimizer` choices `SGD`, `Adam`, `AdamW` (case-insensitive).
    fn from_str(s: &str) -> Result<OptimizerKind> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::sgd()),
            "adam" => Ok(OptimizerKind::adam()),
            "adamw" => Ok(OptimizerKind::adamw()),
            _ => invalid(
                "optimizer",
                format!("unknown optimizer `{s}` (choose SGD, Adam or AdamW)"),
            ),
        }
    }
}

/// Per-group hyper-parameters, settable between steps (warmup and the scheduler change them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupSettings {
    /// Current learning rate.
    pub lr: f64,
    /// The lr the scheduler multiplies by `lf(epoch)` (torch's `initial_lr`).
    pub initial_lr: f64,
    /// SGD momentum, or Adam's beta1.
    pub momentum: f64,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
}

#[derive(Clone, Debug)]
struct Slot {
    name: String,
    tensor: Tensor,
    group: usize,
    /// SGD momentum buffer or Adam `exp_avg`.
    buf: Option<Vec<f32>>,
    /// Adam `exp_avg_sq`.
    sq: Option<Vec<f32>>,
    /// Adam step count (per parameter, as torch).
    step: u64,
}

/// Per-parameter state read back by `load_state_tensors`.
#[derive(Clone, Debug, Default)]
struct Restored {
    buf: Option<Vec<f32>>,
    sq: Option<Vec<f32>>,
    step: u64,
}

/// An optimiser over named parameters in groups, stepping with each parameter's `.grad()`.
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    groups: Vec<GroupSettings>,
    slots: Vec<Slot>,
}

impl Optimizer {
    /// An optimiser over explicit groups: `(settings, parameters)` each.
    pub fn new(kind: OptimizerKind, groups: Vec<(GroupSettings, Vec<NamedParam>)>) -> Optimizer {
        let mut settings = Vec::with_capacity(groups.len());
        let mut slots = Vec::new();
        for (gi, (s, params)) in groups.into_iter().enumerate() {
            settings.push(s);
            for (name, tensor) in params {
                slots.push(Slot {
                    name,
                    tensor,
                    group: gi,
                    buf: None,
                    sq: None,
                    step: 0,
                });
            }
        }
        Optimizer {
            kind,
            groups: settings,
            slots,
        }
    }

    /// Upstream `smart_optimizer(model, name, lr, momentum, decay)`: groups in optimiser order
    /// biases (no decay), weights (`decay`), BN weights (no decay), all at `lr` and `momentum`.
    pub fn smart(
        kind: OptimizerKind,
        params: ParamGroups,
        lr: f64,
        momentum: f64,
        decay: f64,
    ) -> Optimizer {
        let s = |wd| GroupSettings {
            lr,
            initial_lr: lr,
            momentum,
            weight_decay: wd,
        };
        Optimizer::new(
            kind,
            vec![
                (s(0.0), params.bias),
                (s(decay), params.decay),
                (s(0.0), params.no_decay),
            ],
        )
    }

    /// The update rule.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Settings of every group, optimiser order.
    pub fn groups(&self) -> &[GroupSettings] {
        &self.groups
    }

    /// Mutable settings of group `i` (lr, momentum/beta1, weight decay); panics if out of range.
    pub fn group_mut(&mut self, i: usize) -> &mut GroupSettings {
        &mut self.groups[i]
    }

    /// Sets the learning rate of group `i` (ignored when out of range).
    pub fn set_lr(&mut self, i: usize, lr: f64) {
        if let Some(g) = self.groups.get_mut(i) {
            g.lr = lr;
        }
    }

    /// Sets momentum (SGD) or beta1 (Adam/AdamW) of group `i` (ignored when out of range).
    pub fn set_momentum(&mut self, i: usize, momentum: f64) {
        if let Some(g) = self.groups.get_mut(i) {
            g.momentum = momentum;
        }
    }

    /// Sets the weight decay of group `i` (ignored when out of range).
    pub fn set_weight_decay(&mut self, i: usize, weight_decay: f64) {
        if let Some(g) = self.groups.get_mut(i) {
            g.weight_decay = weight_decay;
        }
    }

    /// The scheduler step: every group's lr = `initial_lr * factor` (`factor = lf(epoch)`).
    pub fn apply_lr_factor(&mut self, factor: f64) {
        for g in &mut self.groups {
            g.lr = g.initial_lr * factor;
        }
    }

    /// Applies a warmup state as upstream: lr per group (group 0 = biases; groups past the
    /// third take the last lr) and, for SGD only, momentum.
    pub fn apply_warmup(&mut self, w: &WarmupState) {
        let has_momentum = self.kind.has_momentum();
        for (i, g) in self.groups.iter_mut().enumerate() {
            g.lr = w.lr[i.min(2)];
            if has_momentum {
                g.momentum = w.momentum;
            }
        }
    }

    /// The parameter names, in slot order.
    pub fn param_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Drops every parameter's gradient (torch's `zero_grad(set_to_none=True)`).
    pub fn zero_grad(&self) {
        for s in &self.slots {
            s.tensor.zero_grad();
        }
    }

    /// Global L2 norm of all gradients (parameters without a gradient are skipped).
    pub fn grad_norm(&self) -> f64 {
        self.grad_norm_unscaled(1.0)
    }

    /// Global L2 norm of all gradients each multiplied by `inv_scale` first (f32, as the step
    /// applies it): the norm of a loss scaler's gradients after unscaling. Not finite when a
    /// gradient holds an inf or a NaN.
    pub fn grad_norm_unscaled(&self, inv_scale: f32) -> f64 {
        let mut sq = 0.0f64;
        for s in &self.slots {
            if let Some(g) = s.tensor.grad() {
                let v = g.to_vec();
                sq += if inv_scale == 1.0 {
                    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()
                } else {
                    v.iter()
                        .map(|&x| {
                            let x = (x * inv_scale) as f64;
                            x * x
                        })
                        .sum::<f64>()
                };
            }
        }
        sq.sqrt()
    }

    /// One update with each parameter's current gradient; parameters without one are skipped
    /// (their state does not advance), as torch does.
    pub fn step(&mut self) -> Result<()> {
        self.step_scaled(1.0, 1.0)
    }

    /// `clip_grad_norm_(params, max_norm)` then [`Optimizer::step`]: gradients are multiplied by
    /// `min(max_norm / (norm + 1e-6), 1)` (applied inside the step, so gradients shared between
    /// parameters are never scaled twice). Returns the norm before clipping.
    pub fn step_clipped(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm();
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        self.step_scaled(1.0, coef as f32)?;
        Ok(norm)
    }

    /// [`Optimizer::step_clipped`] for gradients of a loss multiplied by a loss scaler's scale:
    /// every gradient is multiplied by `inv_scale` (upstream `scaler.unscale_`), then clipped
    /// to `max_norm` by the unscaled norm, then stepped. When the unscaled norm is not finite
    /// (an inf or NaN gradient) nothing is updated. Returns the unscaled norm and whether the
    /// step ran. Gradients are never modified in place (they may be shared between
    /// parameters); the factors are applied inside the step.
    pub fn step_unscaled_clipped(&mut self, inv_scale: f32, max_norm: f64) -> Result<(f64, bool)> {
        let norm = self.grad_norm_unscaled(inv_scale);
        if !norm.is_finite() {
            return Ok((norm, false));
        }
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        self.step_scaled(inv_scale, coef as f32)?;
        Ok((norm, true))
    }

    /// One update with every gradient multiplied by `unscale`, then by `grad_scale` (two f32
    /// products, so an exact power-of-two unscale leaves the rest of the arithmetic unchanged).
    fn step_scaled(&mut self, unscale: f32, grad_scale: f32) -> Result<()> {
        let kind = self.kind;
        for s in &mut self.slots {
            let Some(gt) = s.tensor.grad() else { continue };
            if gt.shape() != s.tensor.shape() {
                return invalid(
                    "optimizer",
                    format!(
                        "gradient of `{}` has shape {:?}, parameter {:?}",
                        s.name,
                        gt.shape(),
                        s.tensor.shape()
                    ),
                );
            }
            let mut g = gt.to_vec();
            if unscale != 1.0 {
                g.iter_mut().for_each(|x| *x *= unscale);
            }
            if grad_scale != 1.0 {
                g.iter_mut().for_each(|x| *x *= grad_scale);
            }
            let hp = self.groups[s.group];
            match kind {
                OptimizerKind::Sgd { nesterov } => sgd_update(s, &g, &hp, nesterov)?,
                OptimizerKind::Adam { beta2, eps } => adam_update(s, &g, &hp, beta2, eps, false)?,
                OptimizerKind::AdamW { beta2, eps } => adam_update(s, &g, &hp, beta2, eps, true)?,
            }
        }
        Ok(())
    }

    /// Optimiser state as named tensors for checkpoints: `state.<param>.momentum_buffer` (SGD),
    /// `state.<param>.exp_avg`, `.exp_avg_sq`, `.step` (Adam/AdamW; step as a 1-element tensor),
    /// and `param_groups.<i>.{lr,initial_lr,momentum,weight_decay}`, each an f64 stored exactly
    /// as three f32 parts `[hi, mid, lo]` that sum to it (`hi` alone is the f32 value).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let scalar = |v: f64| Tensor::from_vec(vec![v as f32], &[1], Device::Cpu);
        let exact = |v: f64| Tensor::from_vec(split_f64(v).to_vec(), &[3], Device::Cpu);
        for (i, g) in self.groups.iter().enumerate() {
            out.push((format!("param_groups.{i}.lr"), exact(g.lr)?));
            out.push((format!("param_groups.{i}.initial_lr"), exact(g.initial_lr)?));
            out.push((format!("param_groups.{i}.momentum"), exact(g.momentum)?));
            out.push((
                format!("param_groups.{i}.weight_decay"),
                exact(g.weight_decay)?,
            ));
        }
        let is_sgd = matches!(self.kind, OptimizerKind::Sgd { .. });
        for s in &self.slots {
            let shape = s.tensor.shape();
            if let Some(b) = &s.buf {
                let key = if is_sgd { "momentum_buffer" } else { "exp_avg" };
                out.push((
                    format!("state.{}.{key}", s.name),
                    Tensor::from_vec(b.clone(), shape, Device::Cpu)?,
                ));
            }
            if let Some(q) = &s.sq {
                out.push((
                    format!("state.{}.exp_avg_sq", s.name),
                    Tensor::from_vec(q.clone(), shape, Device::Cpu)?,
                ));
            }
            if !is_sgd && s.step > 0 {
                out.push((format!("state.{}.step", s.name), scalar(s.step as f64)?));
            }
        }
        Ok(out)
    }

    /// Restores [`Optimizer::state_tensors`] output (resume). Every name must belong to this
    /// optimiser's kind, groups and parameters with matching shapes; parameters absent from
    /// `state` start fresh. Group settings are restored as f32 values.
    pub fn load_state_tensors(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let index: HashMap<&str, usize> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let is_sgd = matches!(self.kind, OptimizerKind::Sgd { .. });
        let mut groups = self.groups.clone();
        let mut fresh = vec![Restored::default(); self.slots.len()];
        for (name, t) in state {
            if let Some(rest) = name.strip_prefix("param_groups.") {
                let (i, field) = rest.split_once('.').unwrap_or((rest, ""));
                let g = i.parse::<usize>().ok().and_then(|i| groups.get_mut(i));
                let (Some(g), 1..=3) = (g, t.numel()) else {
                    return invalid("optimizer state", format!("unexpected entry `{name}`"));
                };
                // Parts summed smallest first: exact for `split_f64` output.
                let v = t.to_vec().iter().rev().map(|&x| x as f64).sum::<f64>();
                match field {
                    "lr" => g.lr = v,
                    "initial_lr" => g.initial_lr = v,
                    "momentum" => g.momentum = v,
                    "weight_decay" => g.weight_decay = v,
                    _ => return invalid("optimizer state", format!("unknown entry `{name}`")),
                }
                continue;
            }
            let parsed = name
                .strip_prefix("state.")
                .and_then(|r| r.rsplit_once('.'))
                .and_then(|(p, key)| index.get(p).map(|&i| (i, key)));
            let Some((i, key)) = parsed else {
                return invalid(
                    "optimizer state",
                    format!("`{name}` names no parameter of this optimizer"),
                );
            };
            let slot = &self.slots[i];
            let want_vec = key != "step";
            if want_vec && t.shape() != slot.tensor.shape() {
                return invalid(
                    "optimizer state",
                    format!(
                        "`{name}` has shape {:?}, parameter `{}` {:?}",
                        t.shape(),
                        slot.name,
                        slot.tensor.shape()
                    ),
                );
            }
            match (key, is_sgd) {
                ("momentum_buffer", true) | ("exp_avg", false) => fresh[i].buf = Some(t.to_vec()),
                ("exp_avg_sq", false) => fresh[i].sq = Some(t.to_vec()),
                ("step", false) => {
                    let v = t.item()?;
                    if v.is_nan() || v < 0.0 || v.fract() != 0.0 {
                        return invalid("optimizer state", format!("`{name}` = {v} is no count"));
                    }
                    fresh[i].step = v as u64;
                }
                _ => {
                    return invalid(
                        "optimizer state",
                        format!("`{name}` does not belong to a {:?} optimizer", self.kind),
                    )
                }
            }
        }
        self.groups = groups;
        for (s, r) in self.slots.iter_mut().zip(fresh) {
            s.buf = r.buf;
            s.sq = r.sq;
            s.step = r.step;
        }
        Ok(())
    }
}

/// `v` as three f32 parts whose f64 sum is `v` (exact for values of ordinary magnitude).
fn split_f64(v: f64) -> [f32; 3] {
    let hi = v as f32;
    let r = v - hi as f64;
    let mid = r as f32;
    let lo = (r - mid as f64) as f32;
    [hi, mid, lo]
}

/// torch.optim.SGD (dampening 0): `d = g + wd*p`; `buf = m*buf + d`; nesterov `d += m*buf`
/// else `d = buf`; `p -= lr*d`.
fn sgd_update(s: &mut Slot, g: &[f32], hp: &GroupSettings, nesterov: bool) -> Result<()> {
    let (lr, m, wd) = (hp.lr as f32, hp.momentum as f32, hp.weight_decay as f32);
    let buf = if m != 0.0 {
        Some(s.buf.get_or_insert_with(|| vec![0.0; g.len()]))
    } else {
        None
    };
    s.tensor.update_data(|p| match buf {
        Some(buf) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                let d = if wd != 0.0 { g + wd * *p } else { g };
                *b = *b * m + d;
                let d = if nesterov { d + m * *b } else { *b };
                *p += -lr * d;
            }
        }
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                let d = if wd != 0.0 { g + wd * *p } else { g };
                *p += -lr * d;
            }
        }
    })?;
    Ok(())
}

/// torch's `lerp`: `a + w*(b - a)` for `|w| < 0.5`, else `b - (b - a)*(1 - w)`.
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

/// torch.optim.Adam / AdamW (single-tensor path, no amsgrad).
fn adam_update(
    s: &mut Slot,
    g: &[f32],
    hp: &GroupSettings,
    beta2: f64,
    eps: f64,
    decoupled: bool,
) -> Result<()> {
    s.step += 1;
    let step = s.step as i32;
    let beta1 = hp.momentum;
    let (wd, lr) = (hp.weight_decay as f32, hp.lr);
    let bc1 = 1.0 - beta1.powi(step);
    let bc2_sqrt = (1.0 - beta2.powi(step)).sqrt() as f32;
    let step_size = (lr / bc1) as f32;
    let (w1, b2, one_minus_b2, eps) = (
        (1.0 - beta1) as f32,
        beta2 as f32,
        (1.0 - beta2) as f32,
        eps as f32,
    );
    let decay = (1.0 - lr * hp.weight_decay) as f32;
    let m = s.buf.get_or_insert_with(|| vec![0.0; g.len()]);
    let v = s.sq.get_or_insert_with(|| vec![0.0; g.len()]);
    s.tensor.update_data(|p| {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = if decoupled {
                *p *= decay;
                g
            } else if wd != 0.0 {
                g + wd * *p
            } else {
                g
            };
            *m = lerp(*m, g, w1);
            *v = *v * b2 + one_minus_b2 * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p += -step_size * (*m / denom);
        }
    })?;
    Ok(())
}
