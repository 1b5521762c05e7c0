//! `yolo-train`: the training-side tools of yolo-forge.
//!
//! - [`postprocess`]: upstream `non_max_suppression` (batched class-offset NMS with
//!   `conf_thres`, `iou_thres`, `max_det`, `multi_label`, `agnostic`, a class filter), plus
//!   DIoU-NMS, Soft-NMS (linear, Gaussian) and merge-NMS.
//! - [`metrics`]: upstream validation metrics: `process_batch` matching at IoU 0.50:0.95,
//!   `ap_per_class` with 101-point interpolated AP, P/R/F1 at the best-F1 confidence,
//!   mAP@0.5, mAP@0.5:0.95, `fitness`, the confusion matrix and COCO JSON export.
//! - [`scale`]: bilinear batch resizing (PyTorch semantics), `scale_img`, multi-scale sizes.
//! - [`tta`]: test-time augmentation (upstream `_forward_augment`).
//! - [`amp`]: the dynamic loss scaler of mixed-precision training (upstream `GradScaler`).
//!
//! Boxes are `[x1, y1, x2, y2]` in pixels and detections `[x1, y1, x2, y2, conf, class]`
//! unless a function says otherwise.

pub mod amp;
pub mod autoanchor;
pub mod checkpoint;
pub mod criterion;
pub mod ddp;
pub mod ema;
mod error;
pub mod hyp;
pub mod metrics;
pub mod optim;
pub mod plots;
pub mod postprocess;
pub mod predfiles;
pub mod scale;
pub mod schedule;
pub mod trainer;
pub mod tta;
pub mod validate;

pub use amp::{GradScaler, MixedPrecisionGuard, ScaledStep, ScalerState};
pub use autoanchor::{
    anchor_fitness, anchor_metric, apply_anchors, check_anchor_order, check_anchors,
    evolve_anchors, kmean_anchors, label_wh, AnchorCheck, AnchorMetric, AutoAnchorConfig,
    Evolution, KmeansAnchors, KmeansInit,
};
pub use checkpoint::Checkpoint;
pub use criterion::{detect_spec, Criterion};
pub use ddp::DataParallel;
pub use ema::ModelEma;
pub use error::{Result, TrainError};
pub use hyp::Hyp;
pub use metrics::{
    ap_per_class, box_iou, coco80_to_91, coco_json_entries, compute_ap, fitness, process_batch,
    smooth, ApPerClass, ConfusionMatrix, DetectionMetrics, MetricsAccumulator,
};
pub use optim::{
    scaled_weight_decay, GroupSettings, Optimizer, OptimizerKind, ParamGroups, GROUP_BIAS,
    GROUP_DECAY, GROUP_NO_DECAY,
};
pub use plots::{
    annotate, class_color, plot_ap_curves, plot_confusion, plot_confusion_matrix, plot_images,
    plot_labels, plot_metric_curve, plot_pr_curves, plot_results, Annotation, ImageBox, ImageView,
};
pub use postprocess::{
    batched_nms, nms, non_max_suppression, non_max_suppression_rows, xywh2xyxy, Detection,
    NmsConfig, NmsMethod,
};
pub use predfiles::{
    evaluate_prediction_folder, read_yolo_predictions, write_coco_json, write_file_atomic,
    LabelledImage, PredictionFolderReport,
};
pub use scale::{
    flip_lr, interpolate_bilinear, multi_scale_rng, multi_scale_shape, multi_scale_size,
    resize_bilinear_nchw, scale_img,
};
pub use schedule::{
    nominal_accumulate, warmup_iters, warmup_state, LrSchedule, WarmupHyp, WarmupState,
    NOMINAL_BATCH_SIZE,
};
pub use trainer::{train, train_distributed, EpochResult, TrainOptions, TrainSummary};
pub use tta::{clip_augmented, descale_pred, forward_augment, forward_augment_with, max_stride};
pub use validate::{ImageResult, ValBatch, ValReport, ValSettings, Validator};
