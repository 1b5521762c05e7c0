//! Training hyper-parameters: upstream hyp YAML files (`data/hyps/hyp.scratch-low.yaml`,
//! YOLOv7's `hyp.scratch.p5.yaml` …) read verbatim, plus our own keys for the research knobs.
//!
//! Unknown keys are an error (a misspelt `fl_gama` must not be ignored silently); every key may
//! be omitted and then takes upstream's `hyp.scratch-low.yaml` value. Our additions:
//! - `iou_type`: the box loss, one of `iou giou diou ciou siou eiou` (default `ciou`, upstream's);
//! - `iou_alpha`: Alpha-IoU power applied to it (default 1 = off);
//! - `label_smoothing`: upstream takes it from the command line; here it may also sit in the file;
//! - `nbs`: the nominal batch size of gradient accumulation (upstream's constant 64).

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use yolo_losses::{IouKind, LossHyp};

/// Upstream hyper-parameters (names as in the YAML files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hyp {
    /// Initial learning rate.
    pub lr0: f32,
    /// Final learning rate as a fraction of `lr0`.
    pub lrf: f32,
    /// SGD momentum / Adam beta1.
    pub momentum: f32,
    /// Weight decay (scaled by batch size × accumulation / 64).
    pub weight_decay: f32,
    /// Warm-up length in epochs (fractions allowed).
    pub warmup_epochs: f32,
    /// Momentum at the start of warm-up.
    pub warmup_momentum: f32,
    /// Bias learning rate at the start of warm-up.
    pub warmup_bias_lr: f32,
    /// Box loss gain.
    #[serde(rename = "box")]
    pub box_gain: f32,
    /// Class loss gain.
    #[serde(rename = "cls")]
    pub cls_gain: f32,
    /// Class BCE positive weight.
    pub cls_pw: f32,
    /// Objectness loss gain.
    #[serde(rename = "obj")]
    pub obj_gain: f32,
    /// Objectness BCE positive weight.
    pub obj_pw: f32,
    /// IoU training threshold (unused by upstream's loss, kept for files that set it).
    pub iou_t: f32,
    /// Anchor-multiple threshold.
    pub anchor_t: f32,
    /// Anchors per output level (upstream: optional, overrides the model's when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchors: Option<f32>,
    /// Focal loss gamma (0 = plain BCE).
    pub fl_gamma: f32,
    /// HSV hue gain.
    pub hsv_h: f32,
    /// HSV saturation gain.
    pub hsv_s: f32,
    /// HSV value gain.
    pub hsv_v: f32,
    /// Rotation range in degrees.
    pub degrees: f32,
    /// Translation range (fraction).
    pub translate: f32,
    /// Scale gain range.
    pub scale: f32,
    /// Shear range in degrees.
    pub shear: f32,
    /// Perspective range.
    pub perspective: f32,
    /// Up-down flip probability.
    pub flipud: f32,
    /// Left-right flip probability.
    pub fliplr: f32,
    /// Mosaic probability.
    pub mosaic: f32,
    /// MixUp probability.
    pub mixup: f32,
    /// Segment copy-paste probability (needs segment labels; accepted, not applied).
    pub copy_paste: f32,
    /// YOLOv7 paste-in probability (accepted, not applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paste_in: Option<f32>,
    /// YOLOv7: 1 = `ComputeLossOTA` (SimOTA), 0 = YOLOv5's `ComputeLoss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_ota: Option<u8>,
    /// Class label smoothing epsilon.
    pub label_smoothing: f32,
    /// Box loss IoU variant (ours).
    pub iou_type: String,
    /// Alpha-IoU power of the box loss (ours; 1 = off).
    pub iou_alpha: f32,
    /// Nominal batch size (ours; upstream hard-codes 64): gradients are accumulated over
    /// `round(nbs / batch_size)` batches per optimiser step and weight decay scaled to it.
    /// Small datasets learn in fewer epochs with `nbs` = the batch size.
    pub nbs: usize,
}

impl Default for Hyp {
    /// `data/hyps/hyp.scratch-low.yaml`.
    fn default() -> Self {
        Hyp {
            lr0: 0.01,
            lrf: 0.01,
            momentum: 0.937,
            weight_decay: 0.0005,
            warmup_epochs: 3.0,
            warmup_momentum: 0.8,
            warmup_bias_lr: 0.1,
            box_gain: 0.05,
            cls_gain: 0.5,
            cls_pw: 1.0,
            obj_gain: 1.0,
            obj_pw: 1.0,
            iou_t: 0.2,
            anchor_t: 4.0,
            anchors: None,
            fl_gamma: 0.0,
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            degrees: 0.0,
            translate: 0.1,
            scale: 0.5,
            shear: 0.0,
            perspective: 0.0,
            flipud: 0.0,
            fliplr: 0.5,
            mosaic: 1.0,
            mixup: 0.0,
            copy_paste: 0.0,
            paste_in: None,
            loss_ota: None,
            label_smoothing: 0.0,
            iou_type: "ciou".into(),
            iou_alpha: 1.0,
            nbs: 64,
        }
    }
}

impl Hyp {
    /// The augmentation part, for the data loader (`mosaic9`, ours, stays off: the hyp file
    /// has no key for it).
    pub fn aug(&self) -> yolo_data::AugParams {
        yolo_data::AugParams {
            hsv_h: self.hsv_h,
            hsv_s: self.hsv_s,
            hsv_v: self.hsv_v,
            degrees: self.degrees,
            translate: self.translate,
            scale: self.scale,
            shear: self.shear,
            perspective: self.perspective,
            flipud: self.flipud,
            fliplr: self.fliplr,
            mosaic: self.mosaic,
            mixup: self.mixup,
            mosaic9: 0.0,
        }
    }

    /// Reads a hyp YAML file; errors name the file, and the line and column of a bad key.
    pub fn load(path: impl AsRef<Path>) -> Result<Hyp> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            file: path.display().to_string(),
            detail: format!("cannot read: {e}"),
        })?;
        Hyp::from_yaml(&text, &path.display().to_string())
    }

    /// Parses hyp YAML `text`; `source` names it in errors.
    pub fn from_yaml(text: &str, source: &str) -> Result<Hyp> {
        let err = |detail: String| TrainError::Config {
            file: source.to_string(),
            detail,
        };
        let hyp: Hyp = if text.trim().is_empty() {
            Hyp::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                err(format!("{at}{e}"))
            })?
        };
        hyp.validate().map_err(err)?;
        Ok(hyp)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if IouKind::from_name(&self.iou_type).is_none() {
            return Err(format!(
                "iou_type `{}` is not one of iou, giou, diou, ciou, siou, eiou",
                self.iou_type
            ));
        }
        let nonneg = [
            ("lr0", self.lr0),
            ("lrf", self.lrf),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("warmup_epochs", self.warmup_epochs),
            ("box", self.box_gain),
            ("cls", self.cls_gain),
            ("obj", self.obj_gain),
            ("fl_gamma", self.fl_gamma),
            ("label_smoothing", self.label_smoothing),
        ];
        for (k, v) in nonneg {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{k} must be a finite non-negative number, got {v}"));
            }
        }
        if self.nbs == 0 {
            return Err("nbs (nominal batch size) must be positive".into());
        }
        if self.anchor_t.is_nan() || self.anchor_t <= 1.0 {
            return Err(format!("anchor_t must be > 1, got {}", self.anchor_t));
        }
        if self.iou_alpha.is_nan() || self.iou_alpha <= 0.0 {
            return Err(format!("iou_alpha must be > 0, got {}", self.iou_alpha));
        }
        for (k, p) in [
            ("flipud", self.flipud),
            ("fliplr", self.fliplr),
            ("mosaic", self.mosaic),
            ("mixup", self.mixup),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{k} is a probability, got {p}"));
            }
        }
        Ok(())
    }

    /// The file form (written as `hyp.yaml` into a run folder).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// The box loss variant.
    pub fn iou_kind(&self) -> IouKind {
        IouKind::from_name(&self.iou_type).unwrap_or_default()
    }

    /// The loss keys, unscaled (see [`LossHyp::scaled`] for train.py's scaling).
    pub fn loss_hyp(&self) -> LossHyp {
        LossHyp {
            box_gain: self.box_gain,
            cls_gain: self.cls_gain,
            obj_gain: self.obj_gain,
            cls_pw: self.cls_pw,
            obj_pw: self.obj_pw,
            fl_gamma: self.fl_gamma,
            anchor_t: self.anchor_t,
            label_smoothing: self.label_smoothing,
            iou_kind: self.iou_kind(),
            iou_alpha: self.iou_alpha,
            gr: 1.0,
        }
    }

    /// Whether the file asks for YOLOv7's SimOTA loss (`loss_ota: 1`).
    pub fn use_ota(&self) -> bool {
        self.loss_ota == Some(1)
    }
}
