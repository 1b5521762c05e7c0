//! The loss of a model, chosen as upstream does: YOLOv5's `ComputeLoss`; YOLOv7's
//! `ComputeLossOTA` when the hyp file says `loss_ota: 1`; `ComputeLossAuxOTA` for models with an
//! auxiliary head (`IAuxDetect`, upstream `train_aux.py`).

use crate::error::{invalid, Result};
use crate::hyp::Hyp;
use yolo_layers::DetectOutput;
use yolo_losses::{ComputeLoss, ComputeLossAuxOta, ComputeLossOta, DetectSpec, LossOutput};
use yolo_models::Model;
use yolo_tensor::Tensor;

/// The head of `model` as the losses describe it (anchors in grid units, strides).
pub fn detect_spec(model: &Model) -> Result<DetectSpec> {
    let det = model.detect();
    if det.stride.len() != det.nl() {
        return invalid("model", "the head's strides are not known yet");
    }
    let a = det.anchors.to_vec();
    let anchors = (0..det.nl())
        .map(|l| {
            (0..det.na)
                .map(|k| [a[(l * det.na + k) * 2], a[(l * det.na + k) * 2 + 1]])
                .collect()
        })
        .collect();
    Ok(DetectSpec {
        nc: det.nc,
        anchors,
        strides: det.stride.clone(),
    })
}

/// Which loss trains a model.
#[derive(Clone, Debug)]
pub enum Criterion {
    /// YOLOv5 `ComputeLoss`.
    V5(ComputeLoss),
    /// YOLOv7 `ComputeLossOTA`.
    Ota(ComputeLossOta),
    /// YOLOv7 `ComputeLossAuxOTA` (lead + auxiliary heads).
    AuxOta(ComputeLossAuxOta),
}

impl Criterion {
    /// The loss for `model` trained at `imgsz` with `hyp` (gains scaled as train.py does);
    /// `aux_head` says whether the model's training output has auxiliary levels.
    pub fn new(model: &Model, hyp: &Hyp, imgsz: usize, aux_head: bool) -> Result<Criterion> {
        let spec = detect_spec(model)?;
        let lh = hyp.loss_hyp().scaled(spec.nl(), spec.nc, imgsz);
        Ok(if aux_head {
            Criterion::AuxOta(ComputeLossAuxOta::new(spec, lh)?)
        } else if hyp.use_ota() {
            Criterion::Ota(ComputeLossOta::new(spec, lh)?)
        } else {
            Criterion::V5(ComputeLoss::new(spec, lh)?)
        })
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Criterion::V5(_) => "ComputeLoss",
            Criterion::Ota(_) => "ComputeLossOTA",
            Criterion::AuxOta(_) => "ComputeLossAuxOTA",
        }
    }

    /// The loss of a training-mode forward output against `targets` `[nt, 6]` rows
    /// `[image, class, cx, cy, w, h]` (normalised) for input images of `img_hw` pixels.
    pub fn loss(
        &self,
        out: &DetectOutput,
        targets: &Tensor,
        img_hw: [usize; 2],
    ) -> Result<LossOutput> {
        Ok(match self {
            Criterion::V5(l) => l.forward(&out.raw, targets)?,
            Criterion::Ota(l) => l.forward(&out.raw, targets, img_hw)?,
            Criterion::AuxOta(l) => {
                if out.aux.is_empty() {
                    // inference-mode output of an IAuxDetect model: lead head only (val loss)
                    return Ok(ComputeLossOta::new(l.spec().clone(), *l.hyp())?
                        .forward(&out.raw, targets, img_hw)?);
                }
                let mut all = out.raw.clone();
                all.extend(out.aux.iter().cloned());
                l.forward(&all, targets, img_hw)?
            }
        })
    }
}
