//! Training checkpoints (`weights/last.safetensors`, `best.safetensors`).
//!
//! One safetensors file is both a model and a training state:
//! - the EMA weights under the model's upstream names, with the model YAML and class names in
//!   the metadata, so `Model::from_safetensors`, `val`, `detect` and `info --weights` read a
//!   checkpoint as the trained model (upstream also uses the EMA for inference);
//! - `train_state.model.<name>`: the raw (non-averaged) weights and buffers,
//!   `train_state.optim.<entry>`: the optimiser state ([`crate::Optimizer::state_tensors`]),
//!   and the metadata key `yolo_forge.train_state`: JSON with the epoch, best fitness, EMA
//!   update count and the run's options, so `--resume` continues where the run stopped.
//!
//! Files are written to a temporary name, synced and renamed: a crash never leaves a truncated
//! checkpoint, and the previous one stays valid until the new one is complete.

use crate::error::{Result, TrainError};
use crate::predfiles::write_file_atomic;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;
use yolo_models::weights::{meta, TRAIN_STATE_PREFIX};
use yolo_tensor::{Device, Tensor};

/// Metadata key of the training state JSON.
pub const STATE_KEY: &str = "yolo_forge.train_state";

/// Everything a checkpoint holds.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Model YAML text.
    pub yaml: String,
    /// Class names.
    pub names: Vec<String>,
    /// Number of classes of the model (may differ from the YAML's `nc`).
    pub nc: usize,
    /// EMA (or final) weights, upstream names: what inference loads.
    pub ema: Vec<(String, Tensor)>,
    /// Raw training weights (empty in a model-only file).
    pub model: Vec<(String, Tensor)>,
    /// Optimiser state entries (empty in a model-only file).
    pub optimizer: Vec<(String, Tensor)>,
    /// Training progress and options (`Value::Null` in a model-only file).
    pub state: serde_json::Value,
}

fn err(path: &Path, detail: impl Into<String>) -> TrainError {
    TrainError::File {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

impl Checkpoint {
    /// Writes the checkpoint atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut bufs: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        let mut add = |name: String, t: &Tensor| {
            let bytes = t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
            bufs.push((name, bytes, t.shape().to_vec()));
        };
        for (n, t) in &self.ema {
            add(n.clone(), t);
        }
        for (n, t) in &self.model {
            add(format!("{TRAIN_STATE_PREFIX}model.{n}"), t);
        }
        for (n, t) in &self.optimizer {
            add(format!("{TRAIN_STATE_PREFIX}optim.{n}"), t);
        }
        let views = bufs
            .iter()
            .map(|(n, b, s)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| err(path, format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut md = HashMap::new();
        md.insert(meta::YAML.to_string(), self.yaml.clone());
        md.insert(
            meta::NAMES.to_string(),
            serde_json::to_string(&self.names).unwrap_or_else(|_| "[]".into()),
        );
        md.insert(meta::FORMAT.to_string(), "pt".to_string());
        md.insert(meta::NC.to_string(), self.nc.to_string());
        if !self.state.is_null() {
            md.insert(STATE_KEY.to_string(), self.state.to_string());
        }
        let bytes = safetensors::tensor::serialize(views, Some(md))
            .map_err(|e| err(path, format!("cannot serialise: {e}")))?;
        write_file_atomic(path, &bytes)
    }

    /// Reads a checkpoint (or a plain weights file: then `model`, `optimizer` are empty and
    /// `state` is null).
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| err(path, format!("not a valid safetensors file: {e}")))?;
        let md = header.metadata().clone().unwrap_or_default();
        let mut ck = Checkpoint {
            yaml: md.get(meta::YAML).cloned().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(n) = md.get(meta::NAMES) {
            ck.names = serde_json::from_str(n)
                .map_err(|e| err(path, format!("bad class names in the metadata: {e}")))?;
        }
        if let Some(n) = md.get(meta::NC) {
            ck.nc = n
                .parse()
                .map_err(|_| err(path, format!("bad class count `{n}` in the metadata")))?;
        }
        if let Some(s) = md.get(STATE_KEY) {
            ck.state = serde_json::from_str(s)
                .map_err(|e| err(path, format!("bad training state in the metadata: {e}")))?;
        }
        // keep the file's order: safetensors sorts by name, the model order is restored by the
        // consumers that look tensors up by name
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(err(
                    path,
                    format!(
                        "tensor `{name}` is {:?}, checkpoints hold F32",
                        view.dtype()
                    ),
                ));
            }
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let t = Tensor::from_vec(v, view.shape(), Device::Cpu)?;
            if let Some(rest) = name.strip_prefix(TRAIN_STATE_PREFIX) {
                if let Some(n) = rest.strip_prefix("model.") {
                    ck.model.push((n.to_string(), t));
                } else if let Some(n) = rest.strip_prefix("optim.") {
                    ck.optimizer.push((n.to_string(), t));
                } else {
                    return Err(err(path, format!("unknown training-state tensor `{name}`")));
                }
            } else {
                ck.ema.push((name, t));
            }
        }
        Ok(ck)
    }

    /// Whether the file carries a training state to resume from.
    pub fn resumable(&self) -> bool {
        !self.state.is_null() && !self.model.is_empty()
    }
}

/// Copies `tensors` by name into a model's `named` tensors (on whatever device each model
/// tensor lives); every model tensor must be present with its shape (errors name the first
/// mismatch).
pub fn assign_named(
    named: &[(String, Tensor, yolo_layers::Kind)],
    tensors: &[(String, Tensor)],
    what: &str,
) -> Result<()> {
    let map: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    for (n, t, _) in named {
        let Some(src) = map.get(n.as_str()) else {
            return Err(TrainError::Invalid {
                what: "checkpoint",
                detail: format!("{what}: tensor `{n}` is missing"),
            });
        };
        if src.shape() != t.shape() {
            return Err(TrainError::Invalid {
                what: "checkpoint",
                detail: format!(
                    "{what}: tensor `{n}` has shape {:?}, the model {:?}",
                    src.shape(),
                    t.shape()
                ),
            });
        }
        t.assign(&src.detach().to_device(t.device())?)?;
    }
    Ok(())
}
