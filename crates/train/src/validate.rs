//! Validation as upstream `val.py`: inference on letterboxed (rectangular) batches, NMS with
//! `multi_label`, one-to-one matching at IoU 0.50:0.95, AP per class, the confusion matrix and
//! the validation losses.
//!
//! Boxes are compared in the network's input pixels, predictions clipped to the letterboxed
//! image area. Upstream maps both predictions and labels back to the original image by the same
//! scale and offset first; IoU does not change under that map, so the matching and the metrics
//! are the same.

use crate::criterion::Criterion;
use crate::error::Result;
use crate::metrics::{ConfusionMatrix, DetectionMetrics, MetricsAccumulator};
use crate::postprocess::{non_max_suppression, Detection, NmsConfig};
use std::time::Instant;
use yolo_models::Model;
use yolo_tensor::{Device, Tensor};

/// Settings of a validation run (val.py's defaults).
#[derive(Clone, Debug)]
pub struct ValSettings {
    /// Confidence threshold of NMS (0.001).
    pub conf_thres: f32,
    /// IoU threshold of NMS (0.6).
    pub iou_thres: f32,
    /// Detections kept per image (300).
    pub max_det: usize,
    /// Treat every class as one (`--single-cls`).
    pub single_cls: bool,
    /// Test-time augmentation (`--augment`, see [`crate::tta`]); ignored when a criterion
    /// computes validation losses, as upstream val.py does during training.
    pub augment: bool,
}

impl Default for ValSettings {
    fn default() -> Self {
        ValSettings {
            conf_thres: 0.001,
            iou_thres: 0.6,
            max_det: 300,
            single_cls: false,
            augment: false,
        }
    }
}

/// One validation batch, as the data loader gives it.
pub struct ValBatch<'a> {
    /// Images `[B, 3, H, W]` in 0..1.
    pub images: &'a Tensor,
    /// Targets `[N, 6]` rows `(image, class, cx, cy, w, h)`, normalised to `H, W`.
    pub targets: &'a Tensor,
    /// Per image, the letterboxed content area `[x1, y1, x2, y2]` in input pixels (predictions
    /// are clipped to it, as upstream clips to the original image).
    pub content: Vec<[f32; 4]>,
}

/// Detections of one image in input pixels, with its labels `[class, x1, y1, x2, y2]`.
#[derive(Clone, Debug, Default)]
pub struct ImageResult {
    /// After NMS, `[x1, y1, x2, y2, conf, class]`, clipped.
    pub detections: Vec<Detection>,
    /// Labels in pixels.
    pub labels: Vec<[f32; 5]>,
}

/// Accumulates batches; [`Validator::finish`] gives the summary.
pub struct Validator {
    settings: ValSettings,
    nc: usize,
    acc: MetricsAccumulator,
    /// Confusion matrix (val.py: conf 0.25, IoU 0.45).
    pub confusion: ConfusionMatrix,
    loss_sum: [f64; 3],
    batches: usize,
    /// Seconds spent in inference and in NMS.
    pub times: [f64; 2],
    /// Labels seen.
    pub instances: usize,
}

/// A validation summary.
#[derive(Clone, Debug)]
pub struct ValReport {
    /// P, R, mAP@0.5, mAP@0.5:0.95, fitness and per class.
    pub metrics: DetectionMetrics,
    /// Mean validation losses (box, obj, cls) per batch (zeros without a criterion).
    pub losses: [f64; 3],
    /// Images seen.
    pub seen: usize,
    /// Labels seen.
    pub instances: usize,
    /// Milliseconds per image in inference and NMS.
    pub ms_per_image: [f64; 2],
}

impl Validator {
    /// A validator for `nc` classes.
    pub fn new(nc: usize, settings: ValSettings) -> Validator {
        Validator {
            settings,
            nc,
            acc: MetricsAccumulator::new(),
            confusion: ConfusionMatrix::new(nc),
            loss_sum: [0.0; 3],
            batches: 0,
            times: [0.0; 2],
            instances: 0,
        }
    }

    /// Runs `model` (inference mode, no gradients) on one batch, scores it and returns the
    /// per-image detections and labels (for plots and `--save-txt`).
    pub fn run_batch(
        &mut self,
        model: &Model,
        batch: &ValBatch<'_>,
        criterion: Option<&Criterion>,
    ) -> Result<Vec<ImageResult>> {
        let _g = yolo_tensor::no_grad();
        let s = batch.images.shape().to_vec();
        let (bs, h, w) = (s[0], s[2], s[3]);
        let t0 = Instant::now();
        // the batch goes to the model's device; predictions come back to the host for NMS
        let images = batch.images.to_device(model.device())?;
        let (pred, out) = if self.settings.augment && criterion.is_none() {
            let gs = crate::tta::max_stride(model);
            (crate::tta::forward_augment(model, &images, gs)?, None)
        } else {
            let out = model.forward(&images, false)?;
            let pred = out
                .pred
                .clone()
                .ok_or_else(|| crate::error::TrainError::Invalid {
                    what: "model",
                    detail: "no inference output".into(),
                })?;
            (pred, Some(out))
        };
        let pred = pred.to_device(Device::Cpu)?;
        yolo_tensor::synchronize(model.device())?;
        self.times[0] += t0.elapsed().as_secs_f64();
        if let (Some(c), Some(out)) = (criterion, &out) {
            let l = c.loss(out, batch.targets, [h, w])?;
            self.loss_sum[0] += l.lbox as f64;
            self.loss_sum[1] += l.lobj as f64;
            self.loss_sum[2] += l.lcls as f64;
        }
        self.batches += 1;
        let t1 = Instant::now();
        let pred = &pred;
        let cfg = NmsConfig {
            conf_thres: self.settings.conf_thres,
            iou_thres: self.settings.iou_thres,
            multi_label: true,
            agnostic: self.settings.single_cls,
            max_det: self.settings.max_det,
            ..NmsConfig::default()
        };
        let dets = non_max_suppression(pred, &cfg)?;
        self.times[1] += t1.elapsed().as_secs_f64();
        let targets = batch.targets.to_vec();
        let mut results = Vec::with_capacity(bs);
        for (si, mut d) in dets.into_iter().enumerate() {
            let labels: Vec<[f32; 5]> = targets
                .chunks_exact(6)
                .filter(|t| t[0] as usize == si)
                .map(|t| {
                    let (cx, cy, bw, bh) = (
                        t[2] * w as f32,
                        t[3] * h as f32,
                        t[4] * w as f32,
                        t[5] * h as f32,
                    );
                    let c = if self.settings.single_cls { 0.0 } else { t[1] };
                    [
                        c,
                        cx - bw / 2.0,
                        cy - bh / 2.0,
                        cx + bw / 2.0,
                        cy + bh / 2.0,
                    ]
                })
                .collect();
            let area = batch
                .content
                .get(si)
                .copied()
                .unwrap_or([0.0, 0.0, w as f32, h as f32]);
            for det in d.iter_mut() {
                det[0] = det[0].clamp(area[0], area[2]);
                det[2] = det[2].clamp(area[0], area[2]);
                det[1] = det[1].clamp(area[1], area[3]);
                det[3] = det[3].clamp(area[1], area[3]);
                if self.settings.single_cls {
                    det[5] = 0.0;
                }
            }
            self.instances += labels.len();
            self.acc.add_image(&d, &labels);
            self.confusion.process_batch(Some(&d), &labels);
            results.push(ImageResult {
                detections: d,
                labels,
            });
        }
        Ok(results)
    }

    /// The summary.
    pub fn finish(&self) -> Result<ValReport> {
        let nb = self.batches.max(1) as f64;
        let seen = self.acc.seen.max(1) as f64;
        Ok(ValReport {
            metrics: self.acc.compute(self.nc)?,
            losses: self.loss_sum.map(|v| v / nb),
            seen: self.acc.seen,
            instances: self.instances,
            ms_per_image: self.times.map(|t| t * 1e3 / seen),
        })
    }
}
