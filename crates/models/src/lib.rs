//! `yolo-models`: upstream YOLOv5/YOLOv7 model YAML parsed verbatim and built into a model
//! graph of `yolo-layers` blocks, with a public module registry.
//!
//! ```no_run
//! use yolo_models::{Model, ModelConfig};
//! let cfg = ModelConfig::from_file("configs/models/yolov5s.yaml")?;
//! let model = Model::new(cfg, 0)?;
//! let info = model.info(640)?;
//! println!("{} parameters, {:.1} GFLOPs", info.params, info.gflops);
//! # Ok::<(), yolo_models::ModelError>(())
//! ```

mod builtins;
mod builtins_attn;
mod builtins_v7;
pub mod config;
mod error;
mod model;
mod onnx;
mod registry;
pub mod weights;

pub use config::{Anchors, Arg, ModelConfig, Row};
pub use error::{ModelError, Result};
pub use model::{LayerRow, Model, ModelInfo, Node};
pub use onnx::{ONNX_INPUT, ONNX_OUTPUT};
pub use registry::{make_divisible, BuildFn, Built, Registry, RowInput};
pub use weights::LoadReport;
