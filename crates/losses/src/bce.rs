//! Binary cross-entropy on logits, with label smoothing, focal and quality-focal weighting.

use crate::error::{invalid, Result};
use yolo_tensor::Tensor;

/// How elementwise losses are reduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over all elements (PyTorch's default).
    #[default]
    Mean,
    /// Sum over all elements.
    Sum,
    /// No reduction: the elementwise loss.
    None,
}

impl Reduction {
    /// Applies the reduction to an elementwise loss.
    pub fn apply(self, loss: Tensor) -> Result<Tensor> {
        Ok(match self {
            Reduction::Mean => loss.mean_all()?,
            Reduction::Sum => loss.sum_all()?,
            Reduction::None => loss,
        })
    }
}

/// Label-smoothed BCE targets `(positive, negative) = (1 − eps/2, eps/2)` (upstream `smooth_BCE`).
pub fn smooth_bce(eps: f32) -> (f32, f32) {
    (1.0 - 0.5 * eps, 0.5 * eps)
}

/// `nn.BCEWithLogitsLoss(pos_weight=[pos_weight])`, optionally wrapped in focal loss
/// (`FocalLoss(…, gamma, alpha)` as upstream when `focal_gamma > 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceLoss {
    /// Weight of the positive term (upstream `cls_pw` / `obj_pw`).
    pub pos_weight: f32,
    /// Focal loss gamma; 0 disables focal weighting (upstream `fl_gamma`).
    pub focal_gamma: f32,
    /// Focal loss alpha (upstream default 0.25; only used when `focal_gamma > 0`).
    pub focal_alpha: f32,
    /// Reduction of the elementwise loss.
    pub reduction: Reduction,
}

impl Default for BceLoss {
    fn default() -> Self {
        BceLoss {
            pos_weight: 1.0,
            focal_gamma: 0.0,
            focal_alpha: 0.25,
            reduction: Reduction::Mean,
        }
    }
}

impl BceLoss {
    /// Plain BCE-with-logits with `pos_weight`, mean reduction.
    pub fn new(pos_weight: f32) -> Self {
        BceLoss {
            pos_weight,
            ..Default::default()
        }
    }

    /// The same loss with focal weighting of parameter `gamma` (0 keeps plain BCE).
    pub fn focal(mut self, gamma: f32) -> Self {
        self.focal_gamma = gamma;
        self
    }

    /// The loss of `logits` against `target` (same shape), reduced as configured.
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        if logits.shape() != target.shape() {
            return invalid(
                "BceLoss target",
                format!(
                    "target {:?} differs from logits {:?}",
                    target.shape(),
                    logits.shape()
                ),
            );
        }
        let pw = if self.pos_weight != 1.0 {
            Some(Tensor::full(self.pos_weight, &[1], logits.device())?)
        } else {
            None
        };
        let loss = logits.bce_with_logits(target, pw.as_ref())?;
        let loss = if self.focal_gamma > 0.0 {
            focal_weight(
                loss,
                logits,
                target,
                self.focal_gamma,
                self.focal_alpha,
                false,
            )?
        } else {
            loss
        };
        self.reduction.apply(loss)
    }
}

fn focal_weight(
    loss: Tensor,
    logits: &Tensor,
    target: &Tensor,
    gamma: f32,
    alpha: f32,
    quality: bool,
) -> Result<Tensor> {
    let p = logits.sigmoid();
    // alpha·t + (1−alpha)·(1−t)
    let alpha_factor = target.affine(2.0 * alpha - 1.0, 1.0 - alpha);
    let modulating = if quality {
        target.sub(&p)?.abs().powf(gamma)
    } else {
        // 1 − p_t with p_t = t·p + (1−t)·(1−p) = 1 − t − p + 2tp
        let one_minus_pt = target.add(&p)?.sub(&target.mul(&p)?.mul_scalar(2.0))?;
        one_minus_pt.powf(gamma)
    };
    Ok(loss.mul(&alpha_factor.mul(&modulating)?)?)
}

/// Elementwise focal loss (Lin et al.): BCE-with-logits × α_t × (1 − p_t)^γ, unreduced.
pub fn focal_loss(logits: &Tensor, target: &Tensor, gamma: f32, alpha: f32) -> Result<Tensor> {
    let loss = BceLoss {
        reduction: Reduction::None,
        ..Default::default()
    }
    .forward(logits, target)?;
    focal_weight(loss, logits, target, gamma, alpha, false)
}

/// Elementwise quality focal loss (Li et al., GFL): BCE-with-logits × α_t × |t − σ(x)|^γ,
/// unreduced; `target` may be a soft (IoU) score.
pub fn qfocal_loss(logits: &Tensor, target: &Tensor, gamma: f32, alpha: f32) -> Result<Tensor> {
    let loss = BceLoss {
        reduction: Reduction::None,
        ..Default::default()
    }
    .forward(logits, target)?;
    focal_weight(loss, logits, target, gamma, alpha, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_tensor::Device;

    fn bce(x: f64, t: f64, pw: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        -(pw * t * s.ln() + (1.0 - t) * (1.0 - s).ln())
    }

    #[test]
    fn bce_pos_weight_matches_formula() {
        let xs = [-2.0f32, -0.3, 0.0, 1.5];
        let ts = [0.0f32, 1.0, 0.3, 0.95];
        let x = Tensor::from_vec(xs.to_vec(), &[4], Device::Cpu).unwrap();
        let t = Tensor::from_vec(ts.to_vec(), &[4], Device::Cpu).unwrap();
        let l = BceLoss::new(2.0).forward(&x, &t).unwrap().item().unwrap();
        let want: f64 = xs
            .iter()
            .zip(ts)
            .map(|(&a, b)| bce(a as f64, b as f64, 2.0))
            .sum::<f64>()
            / 4.0;
        assert!((l as f64 - want).abs() < 1e-6, "{l} {want}");
    }

    #[test]
    fn focal_and_qfocal_match_formula() {
        let xs = [-2.0f32, 0.7];
        let ts = [0.0f32, 1.0];
        let x = Tensor::from_vec(xs.to_vec(), &[2], Device::Cpu).unwrap();
        let t = Tensor::from_vec(ts.to_vec(), &[2], Device::Cpu).unwrap();
        let f = focal_loss(&x, &t, 1.5, 0.25).unwrap().to_vec();
        let q = qfocal_loss(&x, &t, 1.5, 0.25).unwrap().to_vec();
        for i in 0..2 {
            let (xi, ti) = (xs[i] as f64, ts[i] as f64);
            let p = 1.0 / (1.0 + (-xi).exp());
            let pt = ti * p + (1.0 - ti) * (1.0 - p);
            let af = ti * 0.25 + (1.0 - ti) * 0.75;
            let want = bce(xi, ti, 1.0) * af * (1.0 - pt).powf(1.5);
            assert!((f[i] as f64 - want).abs() < 1e-6);
            let wq = bce(xi, ti, 1.0) * af * (ti - p).abs().powf(1.5);
            assert!((q[i] as f64 - wq).abs() < 1e-6);
        }
    }

    #[test]
    fn smoothing_targets() {
        assert_eq!(smooth_bce(0.0), (1.0, 0.0));
        assert_eq!(smooth_bce(0.1), (0.95, 0.05));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let x = Tensor::zeros(&[2], Device::Cpu).unwrap();
        let t = Tensor::zeros(&[3], Device::Cpu).unwrap();
        assert!(BceLoss::default().forward(&x, &t).is_err());
    }
}
