//! Weights files: safetensors with upstream `state_dict` names, the model YAML and class names
//! in the metadata, so a weights file alone rebuilds the model.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Model;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use yolo_layers::Kind;
use yolo_tensor::Tensor;

/// Metadata keys written into every weights file.
pub mod meta {
    /// The model YAML text.
    pub const YAML: &str = "yolo_forge.yaml";
    /// Class names, a JSON list of strings.
    pub const NAMES: &str = "yolo_forge.names";
    /// Format marker.
    pub const FORMAT: &str = "format";
    /// Number of classes when it differs from the YAML's `nc` (a model built with another nc).
    pub const NC: &str = "yolo_forge.nc";
    /// `"1"` when the tensors are those of the fused model (Conv+BN folded…).
    pub const FUSED: &str = "yolo_forge.fused";
}

/// Upstream tensors that have no counterpart here and are skipped on load (integer counters,
/// grids cached by old exports).
const IGNORED_SUFFIXES: &[&str] = &["num_batches_tracked", "anchor_grid"];

/// Name prefix of the training state a checkpoint carries beside the model (raw weights,
/// optimiser state): skipped when a checkpoint is loaded as a model.
pub const TRAIN_STATE_PREFIX: &str = "train_state.";

/// What a (non-strict) load matched and did not.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Tensors loaded.
    pub loaded: usize,
    /// Model tensors absent from the file.
    pub missing: Vec<String>,
    /// File tensors the model does not have.
    pub unexpected: Vec<String>,
    /// (name, file shape, model shape) of tensors whose shapes differ.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// Whether every model tensor was loaded and nothing was left over.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// A one-paragraph description naming the first problems.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((n, f, m)) = self.mismatched.first() {
            parts.push(format!(
                "{} tensor(s) with wrong shapes, first `{n}`: file {f:?}, model {m:?}",
                self.mismatched.len()
            ));
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing from the file, first `{}`",
                self.missing.len(),
                self.missing[0]
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} not in the model, first `{}`",
                self.unexpected.len(),
                self.unexpected[0]
            ));
        }
        parts.join("; ")
    }
}

fn to_f32(v: &TensorView<'_>, name: &str) -> Result<Vec<f32>> {
    let d = v.data();
    let out: Vec<f32> = match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(ModelError::Weights(format!(
                "tensor `{name}` has dtype {other:?}; expected a float type (F32, F16, BF16, F64)"
            )))
        }
    };
    Ok(out)
}

/// IEEE half → single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((f << shift) & 0x3ff) << 13
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Reads a safetensors file into memory, naming the file in errors.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ModelError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        ModelError::Weights(format!(
            "{}: not a valid safetensors file: {e}",
            path.display()
        ))
    })
}

/// The metadata of a weights file.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let (_, m) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        ModelError::Weights(format!(
            "{}: not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    Ok(m.metadata().clone().unwrap_or_default())
}

/// Writes `bytes` to `path` through `path` with extension `tmp_ext`, flushed to disk before
/// the rename: after a crash the file is the old one or the complete new one, never a
/// truncated mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], tmp_ext: &str) -> Result<()> {
    let tmp = path.with_extension(tmp_ext);
    let io = |e| ModelError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

impl Model {
    /// Writes every parameter and buffer (f32, upstream names) plus the YAML and class names.
    /// The file is written next to `path` and renamed into place, so a crash never leaves a
    /// truncated file where a good one was.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors = self.named_tensors();
        let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t, _)| {
                (
                    n.clone(),
                    t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect(),
                    t.shape().to_vec(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(n, b, s)| {
                Ok((
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b)
                        .map_err(|e| ModelError::Weights(format!("`{n}`: {e}")))?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut md = HashMap::new();
        md.insert(meta::YAML.to_string(), self.config.yaml.clone());
        md.insert(
            meta::NAMES.to_string(),
            serde_json::to_string(&self.names).expect("strings serialise"),
        );
        md.insert(meta::FORMAT.to_string(), "pt".to_string());
        md.insert(meta::NC.to_string(), self.config.nc.to_string());
        if self.is_fused() {
            md.insert(meta::FUSED.to_string(), "1".to_string());
        }
        let bytes = safetensors::tensor::serialize(views, Some(md))
            .map_err(|e| ModelError::Weights(e.to_string()))?;
        write_atomic(path, &bytes, "safetensors.partial")
    }

    /// Loads tensors by name. With `strict`, any missing, unexpected or wrongly shaped tensor is
    /// an error naming the first of each; otherwise matching tensors load and the rest are
    /// reported. Nothing is changed when a strict load fails.
    pub fn load_safetensors(&self, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
        let path = path.as_ref();
        let bytes = read(path)?;
        let st = parse(&bytes, path)?;
        let named = self.named_tensors();
        let order: HashMap<String, usize> = named
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.clone(), i))
            .collect();
        let own: BTreeMap<String, (Tensor, Kind)> =
            named.into_iter().map(|(n, t, k)| (n, (t, k))).collect();
        let mut report = LoadReport::default();
        let mut updates = Vec::new();
        for (name, view) in st.tensors() {
            if IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s))
                || name.starts_with(TRAIN_STATE_PREFIX)
            {
                continue;
            }
            match own.get(&name) {
                None => report.unexpected.push(name),
                Some((t, _)) if t.shape() != view.shape() => {
                    report
                        .mismatched
                        .push((name, view.shape().to_vec(), t.shape().to_vec()))
                }
                Some((t, _)) => updates.push((t.clone(), to_f32(&view, &name)?, name)),
            }
        }
        let in_file: std::collections::HashSet<String> =
            st.names().into_iter().map(String::from).collect();
        report.missing = own
            .keys()
            .filter(|n| !in_file.contains(*n))
            .cloned()
            .collect();
        // "First" means first in the model's layer order.
        report.missing.sort_by_key(|n| order[n]);
        report.mismatched.sort_by_key(|m| order[&m.0]);
        report.unexpected.sort();
        if strict && !report.is_exact() {
            return Err(ModelError::Weights(format!(
                "{}: weights do not fit the model: {}",
                path.display(),
                report.describe()
            )));
        }
        for (t, v, _) in updates {
            t.assign(&Tensor::from_vec(v, t.shape(), t.device())?)?;
        }
        report.loaded = own.len() - report.missing.len() - report.mismatched.len();
        Ok(report)
    }

    /// Rebuilds a model from a weights file alone (YAML and class names from its metadata).
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let md = read_metadata(path)?;
        let yaml = md.get(meta::YAML).ok_or_else(|| {
            ModelError::Weights(format!(
                "{}: no model YAML in the metadata (key `{}`); pass --cfg",
                path.display(),
                meta::YAML
            ))
        })?;
        let cfg = ModelConfig::from_yaml(yaml).map_err(|e| {
            ModelError::Weights(format!(
                "{}: the stored model YAML is invalid: {e}",
                path.display()
            ))
        })?;
        let mut cfg = cfg;
        if let Some(nc) = md.get(meta::NC) {
            cfg.nc = nc.parse().map_err(|_| {
                ModelError::Weights(format!(
                    "{}: metadata `{}` is not a class count: `{nc}`",
                    path.display(),
                    meta::NC
                ))
            })?;
        }
        let mut model = Model::new(cfg, 0)?;
        if md.get(meta::FUSED).is_some_and(|v| v == "1") {
            model.fuse()?;
        }
        if let Some(n) = md.get(meta::NAMES) {
            model.names = serde_json::from_str(n).map_err(|e| {
                ModelError::Weights(format!(
                    "{}: bad class names in metadata: {e}",
                    path.display()
                ))
            })?;
        }
        model.load_safetensors(path, true)?;
        Ok(model)
    }
}
