//! `yolo-train`: the training-side tools of yolo-forge.
//!
//! - [`postprocess`]: upstream `non_max_suppression` (batched class-offset NMS with
//!   `conf_thres`, `iou_thres`, `max_det`, `multi_label`, `agnostic`, a class filter), plus
//!   DIoU-NMS, Soft-NMS (linear, Gaussian) and merge-NMS.
//! - [`metrics`]: upstream validation metrics: `process_batch` matching at IoU 0.50:0.95,
//!   `ap_per_class` with 101-point interpolated AP, P/R/F1 at the best-F1 confidence,
//!   mAP@0.5, mAP@0.5:0.95, `fitness`, the confusion matrix and COCO JSON export.
//!
//! Boxes are `[x1, y1, x2, y2]` in pixels and detections `[x1, y1, x2, y2, conf, class]`
//! unless a function says otherwise.

mod error;
pub mod metrics;
pub mod postprocess;

pub use error::{Result, TrainError};
pub use metrics::{
    ap_per_class, box_iou, coco80_to_91, coco_json_entries, compute_ap, fitness, process_batch,
    smooth, ApPerClass, ConfusionMatrix, DetectionMetrics, MetricsAccumulator,
};
pub use postprocess::{
    batched_nms, nms, non_max_suppression, non_max_suppression_rows, xywh2xyxy, Detection,
    NmsConfig, NmsMethod,
};
