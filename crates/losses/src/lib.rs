//! `yolo-losses`: the training losses of YOLOv5/YOLOv7 on `yolo-tensor` autograd.
//!
//! - [`iou`]: the box IoU family (IoU, GIoU, DIoU, CIoU, SIoU, EIoU, and Alpha-IoU powers of
//!   each) as differentiable tensor ops.
//! - [`bce`]: BCE-with-logits with `pos_weight` and label smoothing, focal and quality focal loss.
//! - [`compute_loss`]: upstream YOLOv5 `ComputeLoss` (build_targets with the anchor ratio test
//!   and 0.5 neighbour-cell offsets, per-level balance, IoU objectness targets).
//!
//! The crate depends only on `yolo-tensor`: the detection head is described by plain values
//! ([`DetectSpec`]), so nothing here needs `yolo-models`.

pub mod bce;
pub mod compute_loss;
mod compute_loss_ota;
mod error;
pub mod iou;

pub use bce::{focal_loss, qfocal_loss, smooth_bce, BceLoss, Reduction};
pub use compute_loss::{BuiltTargets, ComputeLoss, DetectSpec, LevelTargets, LossHyp, LossOutput};
pub use compute_loss_ota::*;
pub use error::{LossError, Result};
pub use iou::{atan, bbox_iou, BoxFormat, IouConfig, IouKind};
