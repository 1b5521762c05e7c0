//! `yolo-layers`: the building blocks of YOLOv5/YOLOv7 models, with upstream parameter names.
//!
//! Every block implements [`Layer`] (a node of the model graph, one or more inputs); blocks with
//! one input also implement [`Module`]. Parameters and buffers are reported through
//! [`Layer::visit`] under their upstream PyTorch `state_dict` names (`conv.weight`,
//! `bn.running_mean`, `m.0.cv1.conv.weight`, …), so weights files interoperate.

mod attention;
mod basic;
mod common;
mod detect;
mod error;
pub mod flops;
mod ghost;
mod init;
mod module;
pub mod onnx;
mod transformer;
mod yolov7;

pub use attention::*;
pub use basic::*;
pub use common::*;
pub use detect::*;
pub use error::{LayerError, Result};
pub use ghost::*;
pub use init::{Init, SyncBn};
pub use module::*;
pub use transformer::*;
pub use yolov7::*;
