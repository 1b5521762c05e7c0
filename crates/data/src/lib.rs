//! yolo-data: YOLO-format datasets, the upstream (ultralytics/yolov5) preprocessing and
//! augmentations, a prefetching batch loader, and a synthetic shapes dataset generator.
//!
//! Modules:
//! - [`config`]: dataset YAML (`path`, `train`, `val`, `test`, `names`, `nc`) → [`DatasetConfig`].
//! - [`hyp`]: augmentation hyper-parameters from a hyp YAML → [`AugParams`].
//! - [`io`]: image listing, the images/ → labels/ rule, decoding with EXIF orientation.
//! - [`labels`]: label parsing and verification, the scan summary of bad data, [`LabelCache`].
//! - [`imgbuf`]: [`RgbBuf`] and its pixel kernels (resize, warp, flips, padding).
//! - [`boxes`]: box format conversions and `box_candidate`.
//! - [`augment`]: letterbox, random_perspective, HSV, MixUp, flips.
//! - [`dataset`]: [`Dataset`] (load, mosaic 4/9, rect shapes, RAM cache) → [`Sample`].
//! - [`diskcache`]: decoded images kept next to their sources (`--cache disk`).
//! - [`loader`]: [`Loader`] with worker threads and [`collate`] → [`Batch`] tensors.
//! - [`rng`]: per-sample seeded generators (determinism independent of worker count).
//! - [`synth`]: the synthetic shapes dataset generator.
//! - [`error`]: the error type, [`DataError`].

#![deny(missing_docs)]

pub mod augment;
pub mod boxes;
pub mod config;
pub mod dataset;
pub mod diskcache;
pub mod error;
pub mod hyp;
pub mod imgbuf;
pub mod io;
mod jpegband;
pub mod labels;
pub mod loader;
pub mod rng;
pub mod synth;

pub use augment::{letterbox, LetterboxInfo};
pub use config::DatasetConfig;
pub use dataset::{Dataset, DatasetOptions, Sample, ShapeInfo};
pub use error::{DataError, Result};
pub use hyp::AugParams;
pub use imgbuf::RgbBuf;
pub use labels::{Issue, IssueKind, LabelCache, ScanReport};
pub use loader::{collate, Batch, Loader, Sampler};
pub use synth::{generate, SynthConfig};
