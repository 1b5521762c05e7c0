//! Dynamic loss scaling for mixed-precision training, as upstream's `--amp` uses
//! `torch.cuda.amp.GradScaler`: the loss is multiplied by a scale before `backward` so small
//! gradients survive bf16/f16 products; before the optimiser step the gradients are unscaled
//! (then clipped, upstream `clip_grad_norm_(…, 10.0)` after `scaler.unscale_`); a step whose
//! gradients hold an inf or NaN is skipped and the scale backs off, and after
//! `growth_interval` finite steps in a row the scale grows.
//!
//! The scale starts at 2^16 and only ever changes by the factors 2 and 0.5, so it stays a
//! power of two and unscaling is exact: with f32 gradients a scaled step updates the
//! parameters bit for bit as an unscaled one (barring overflow, which the scaler catches).

use crate::error::{invalid, Result};
use crate::optim::Optimizer;
use serde::{Deserialize, Serialize};
use yolo_tensor::Tensor;

/// Upstream's initial scale, 2^16.
pub const INIT_SCALE: f32 = 65536.0;
/// Factor applied after `growth_interval` finite steps (2).
pub const GROWTH_FACTOR: f32 = 2.0;
/// Factor applied after a step with an inf/NaN gradient (0.5).
pub const BACKOFF_FACTOR: f32 = 0.5;
/// Finite steps in a row before the scale grows (2000).
pub const GROWTH_INTERVAL: u32 = 2000;

/// What a scaler saves in a checkpoint (the training-state JSON): enough to resume with the
/// same scale schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The current scale.
    pub scale: f32,
    /// Finite steps since the last growth or backoff.
    pub growth_tracker: u32,
}

/// The outcome of [`GradScaler::step_clipped`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaledStep {
    /// Global gradient norm after unscaling, before clipping (inf/NaN on an overflow step).
    pub grad_norm: f64,
    /// Whether the optimiser step was skipped because a gradient was not finite.
    pub skipped: bool,
}

/// Upstream `GradScaler`: a dynamic loss scale, or a pass-through when disabled.
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    enabled: bool,
    scale: f32,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
    growth_tracker: u32,
}

impl GradScaler {
    /// Upstream's defaults (scale 2^16, ×2 after 2000 finite steps, ×0.5 on overflow); a
    /// disabled scaler leaves losses and steps as they are (upstream `enabled=amp`).
    pub fn new(enabled: bool) -> GradScaler {
        GradScaler {
            enabled,
            scale: INIT_SCALE,
            growth_factor: GROWTH_FACTOR,
            backoff_factor: BACKOFF_FACTOR,
            growth_interval: GROWTH_INTERVAL,
            growth_tracker: 0,
        }
    }

    /// An enabled scaler with other settings: `init_scale` finite and positive,
    /// `growth_factor` > 1, `backoff_factor` in (0, 1), `growth_interval` ≥ 1.
    pub fn with_settings(
        init_scale: f32,
        growth_factor: f32,
        backoff_factor: f32,
        growth_interval: u32,
    ) -> Result<GradScaler> {
        if !(init_scale.is_finite() && init_scale > 0.0) {
            return invalid("GradScaler", format!("init_scale {init_scale} must be > 0"));
        }
        if !(growth_factor.is_finite() && growth_factor > 1.0) {
            return invalid(
                "GradScaler",
                format!("growth_factor {growth_factor} must be > 1"),
            );
        }
        if !(backoff_factor > 0.0 && backoff_factor < 1.0) {
            return invalid(
                "GradScaler",
                format!("backoff_factor {backoff_factor} must be in (0, 1)"),
            );
        }
        if growth_interval == 0 {
            return invalid("GradScaler", "growth_interval must be at least 1");
        }
        Ok(GradScaler {
            enabled: true,
            scale: init_scale,
            growth_factor,
            backoff_factor,
            growth_interval,
            growth_tracker: 0,
        })
    }

    /// Whether the scaler scales (`--amp` on a CUDA device).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The factor losses are multiplied by (1 when disabled).
    pub fn scale(&self) -> f32 {
        if self.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// Finite steps since the last growth or backoff.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// `loss × scale` (the loss itself when disabled), to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        if self.enabled {
            loss.mul_scalar(self.scale)
        } else {
            loss.clone()
        }
    }

    /// Upstream's `scaler.unscale_(opt)`, `clip_grad_norm_(…, max_norm)`, `scaler.step(opt)`,
    /// `scaler.update()`: unscales the gradients, clips them and steps, or — when a gradient
    /// is inf or NaN — skips the step, drops every gradient and backs off the scale. Disabled:
    /// [`Optimizer::step_clipped`].
    pub fn step_clipped(&mut self, opt: &mut Optimizer, max_norm: f64) -> Result<ScaledStep> {
        if !self.enabled {
            let grad_norm = opt.step_clipped(max_norm)?;
            return Ok(ScaledStep {
                grad_norm,
                skipped: false,
            });
        }
        let (grad_norm, stepped) = opt.step_unscaled_clipped(1.0 / self.scale, max_norm)?;
        if !stepped {
            opt.zero_grad();
            tracing::debug!(
                "AMP: inf/NaN gradient at scale {}; step skipped, scale backs off",
                self.scale
            );
        }
        self.update(!stepped);
        Ok(ScaledStep {
            grad_norm,
            skipped: !stepped,
        })
    }

    /// Upstream `scaler.update()`: back off on an overflow step, else count a finite step and
    /// grow the scale every `growth_interval` of them. No-op when disabled.
    pub fn update(&mut self, found_inf: bool) {
        if !self.enabled {
            return;
        }
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.growth_interval {
            let grown = self.scale * self.growth_factor;
            // torch keeps the old scale when growing would overflow
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    /// The state to save (`None` when disabled: nothing to resume).
    pub fn state(&self) -> Option<ScalerState> {
        self.enabled.then_some(ScalerState {
            scale: self.scale,
            growth_tracker: self.growth_tracker,
        })
    }

    /// Restores a saved state (resume); the scale must be finite and positive. Ignored when
    /// disabled (a run resumed without a GPU trains in f32).
    pub fn load_state(&mut self, s: &ScalerState) -> Result<()> {
        if !(s.scale.is_finite() && s.scale > 0.0) {
            return invalid(
                "GradScaler state",
                format!("scale {} must be finite and > 0", s.scale),
            );
        }
        if self.enabled {
            self.scale = s.scale;
            self.growth_tracker = s.growth_tracker.min(self.growth_interval - 1);
        }
        Ok(())
    }
}

/// Switches the tensor kernels' mixed precision on for its lifetime and restores the previous
/// setting when dropped (a training run turns it on for itself alone).
#[derive(Debug)]
pub struct MixedPrecisionGuard {
    previous: bool,
}

impl MixedPrecisionGuard {
    /// Turns mixed precision on (bf16 CUDA convolutions and products, f32 accumulation).
    pub fn enable() -> MixedPrecisionGuard {
        let previous = yolo_tensor::mixed_precision();
        yolo_tensor::set_mixed_precision(true);
        MixedPrecisionGuard { previous }
    }
}

impl Drop for MixedPrecisionGuard {
    fn drop(&mut self) {
        yolo_tensor::set_mixed_precision(self.previous);
    }
}
