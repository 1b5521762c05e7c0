//! Learning-rate schedules, warmup and gradient accumulation as upstream `train.py`.
//!
//! Upstream computes everything here in Python floats (f64) and rounds with Python's / NumPy's
//! round-half-to-even; so do we.

/// Upstream's nominal batch size `nbs`: gradients are accumulated up to ~64 images per step.
pub const NOMINAL_BATCH_SIZE: usize = 64;

/// YOLOv5's lower bound on warmup iterations (`max(round(warmup_epochs * nb), 100)`).
pub const WARMUP_MIN_ITERS_V5: usize = 100;

/// YOLOv7's lower bound on warmup iterations (its train.py uses 1000).
pub const WARMUP_MIN_ITERS_V7: usize = 1000;

/// Python's `round` (half to even), as upstream rounds accumulation and warmup lengths.
pub fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.interp(x, [0, x1], [y0, y1])` for `0 <= x <= x1`: exact `y1` at the right end, clamped
/// outside, as NumPy does.
pub fn interp(x: f64, x1: f64, y0: f64, y1: f64) -> f64 {
    if x <= 0.0 {
        return y0;
    }
    if x >= x1 {
        return y1;
    }
    (y1 - y0) / x1 * x + y0
}

/// Steps between optimiser updates outside warmup: `max(round(nbs / batch_size), 1)`.
pub fn nominal_accumulate(nbs: usize, batch_size: usize) -> usize {
    let bs = batch_size.max(1) as f64;
    (round_half_even(nbs as f64 / bs) as usize).max(1)
}

/// Number of warmup iterations: `max(round(warmup_epochs * nb), min_iters)` (`min_iters` is
/// [`WARMUP_MIN_ITERS_V5`] upstream). Upstream has no cap for short runs or resumes (its
/// `min(nw, (epochs - start_epoch) / 2 * nb)` is commented out) and counts iterations from
/// epoch 0, so a run resumed after `nw` iterations does no warmup.
pub fn warmup_iters(warmup_epochs: f64, nb: usize, min_iters: usize) -> usize {
    let n = round_half_even(warmup_epochs * nb as f64).max(0.0) as usize;
    n.max(min_iters)
}

/// Per-epoch learning-rate factor `lf(epoch)` multiplying each group's initial lr (LambdaLR).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `(1 - x / epochs) * (1 - lrf) + lrf`.
    Linear {
        /// Total epochs.
        epochs: usize,
        /// Final lr as a fraction of lr0 (`hyp['lrf']`).
        lrf: f64,
    },
    /// `one_cycle(1, lrf, epochs)`: `((1 - cos(x * pi / epochs)) / 2) * (lrf - 1) + 1`.
    Cosine {
        /// Total epochs.
        epochs: usize,
        /// Final lr as a fraction of lr0 (`hyp['lrf']`).
        lrf: f64,
    },
}

impl LrSchedule {
    /// Upstream's choice: cosine with `--cos-lr`, linear otherwise.
    pub fn new(cos_lr: bool, epochs: usize, lrf: f64) -> LrSchedule {
        if cos_lr {
            LrSchedule::Cosine { epochs, lrf }
        } else {
            LrSchedule::Linear { epochs, lrf }
        }
    }

    /// `lf(epoch)`: the factor applied to the initial lr at `epoch` (1 at epoch 0).
    pub fn factor(&self, epoch: f64) -> f64 {
        match *self {
            LrSchedule::Linear { epochs, lrf } => (1.0 - epoch / epochs as f64) * (1.0 - lrf) + lrf,
            LrSchedule::Cosine { epochs, lrf } => {
                ((1.0 - (epoch * std::f64::consts::PI / epochs as f64).cos()) / 2.0) * (lrf - 1.0)
                    + 1.0
            }
        }
    }
}

/// The hyper-parameters warmup reads (upstream `hyp` keys and the batch sizes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupHyp {
    /// Initial learning rate of every group (`lr0`, the groups' `initial_lr`).
    pub lr0: f64,
    /// Momentum after warmup (`momentum`).
    pub momentum: f64,
    /// Momentum at iteration 0 (`warmup_momentum`).
    pub warmup_momentum: f64,
    /// Bias-group learning rate at iteration 0 (`warmup_bias_lr`).
    pub warmup_bias_lr: f64,
    /// Nominal batch size (`nbs`, 64).
    pub nbs: usize,
    /// Images per batch.
    pub batch_size: usize,
}

/// What warmup sets at one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupState {
    /// Iterations between optimiser steps.
    pub accumulate: usize,
    /// Learning rate per optimiser group, upstream order: [biases, decayed weights, BN weights].
    pub lr: [f64; 3],
    /// Momentum (SGD) for every group.
    pub momentum: f64,
}

/// Upstream warmup at integrated batch `ni` (`i + nb * epoch`) of `nw` warmup iterations: `None`
/// once `ni > nw` (upstream then leaves lr and momentum to the scheduler). Accumulation ramps from
/// 1 to `nbs / batch_size`; the bias lr falls from `warmup_bias_lr` and the other lrs rise from 0
/// to `lr0 * lf(epoch)`; momentum ramps from `warmup_momentum` to `momentum`.
pub fn warmup_state(
    ni: usize,
    nw: usize,
    epoch: usize,
    hyp: &WarmupHyp,
    schedule: &LrSchedule,
) -> Option<WarmupState> {
    if ni > nw {
        return None;
    }
    let (x, x1) = (ni as f64, nw as f64);
    let bs = hyp.batch_size.max(1) as f64;
    let acc = round_half_even(interp(x, x1, 1.0, hyp.nbs as f64 / bs)).max(1.0);
    let target = hyp.lr0 * schedule.factor(epoch as f64);
    let lr = [
        interp(x, x1, hyp.warmup_bias_lr, target),
        interp(x, x1, 0.0, target),
        interp(x, x1, 0.0, target),
    ];
    Some(WarmupState {
        accumulate: acc as usize,
        lr,
        momentum: interp(x, x1, hyp.warmup_momentum, hyp.momentum),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(nominal_accumulate(64, 128), 1);
        assert_eq!(nominal_accumulate(64, 24), 3);
        assert_eq!(nominal_accumulate(64, 16), 4);
        assert_eq!(warmup_iters(3.0, 10, 100), 100);
        assert_eq!(warmup_iters(3.0, 50, 100), 150);
        assert_eq!(warmup_iters(0.5, 205, 100), 102); // round(102.5) = 102
    }
}
