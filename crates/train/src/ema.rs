//! Upstream `ModelEMA`: an exponential moving average of every float tensor of the model
//! (parameters and buffers, as upstream iterates the `state_dict`), with the decay ramp
//! `d = decay * (1 - exp(-updates / tau))` that keeps early epochs from being averaged away.

use crate::error::{invalid, Result};
use std::collections::HashMap;
use yolo_layers::Kind;
use yolo_tensor::{Device, Tensor};

/// Upstream's default EMA decay.
pub const EMA_DECAY: f64 = 0.9999;
/// Upstream's default decay-ramp time constant (updates).
pub const EMA_TAU: f64 = 2000.0;

/// Moving averages of a model's named tensors.
#[derive(Debug)]
pub struct ModelEma {
    tensors: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// Number of updates so far (saved in checkpoints as `updates`).
    pub updates: u64,
    /// Asymptotic decay (0.9999).
    pub decay: f64,
    /// Ramp time constant in updates (2000).
    pub tau: f64,
}

impl ModelEma {
    /// A deep copy (host, f32) of every named tensor, parameters and buffers, with upstream's
    /// decay 0.9999, tau 2000 and `updates` = 0.
    pub fn new(named: &[(String, Tensor, Kind)]) -> Result<ModelEma> {
        let pairs: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect();
        ModelEma::from_tensors(&pairs, 0)
    }

    /// An EMA holding copies of `tensors` after `updates` updates (resume from a checkpoint).
    pub fn from_tensors(tensors: &[(String, Tensor)], updates: u64) -> Result<ModelEma> {
        let mut copies = Vec::with_capacity(tensors.len());
        let mut index = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            if index.insert(name.clone(), copies.len()).is_some() {
                return invalid("ema", format!("tensor `{name}` appears twice"));
            }
            copies.push((
                name.clone(),
                Tensor::from_vec(t.to_vec(), t.shape(), Device::Cpu)?,
            ));
        }
        Ok(ModelEma {
            tensors: copies,
            index,
            updates,
            decay: EMA_DECAY,
            tau: EMA_TAU,
        })
    }

    /// The decay used by the `updates`-th update: `decay * (1 - exp(-updates / tau))`.
    pub fn decay_at(&self, updates: u64) -> f64 {
        self.decay * (1.0 - (-(updates as f64) / self.tau).exp())
    }

    /// One update: `updates += 1`, then `ema = d*ema + (1 - d)*model` for every tensor (f32
    /// arithmetic, as upstream). Every EMA tensor must be present in `model` with its shape.
    pub fn update(&mut self, model: &[(String, Tensor, Kind)]) -> Result<()> {
        let d = self.decay_at(self.updates + 1);
        // Same names in the same order is the common case: no lookups then.
        let aligned = model.len() == self.tensors.len()
            && model
                .iter()
                .zip(&self.tensors)
                .all(|((a, _, _), (b, _))| a == b);
        let mut src: Vec<Option<&Tensor>> = vec![None; self.tensors.len()];
        if aligned {
            for (s, (_, t, _)) in src.iter_mut().zip(model) {
                *s = Some(t);
            }
        } else {
            for (name, t, _) in model {
                if let Some(&i) = self.index.get(name) {
                    src[i] = Some(t);
                }
            }
        }
        for ((name, e), s) in self.tensors.iter().zip(&src) {
            let Some(m) = s else {
                return invalid("ema", format!("model has no tensor `{name}`"));
            };
            if m.shape() != e.shape() {
                return invalid(
                    "ema",
                    format!(
                        "`{name}`: model shape {:?}, EMA shape {:?}",
                        m.shape(),
                        e.shape()
                    ),
                );
            }
        }
        let (df, omd) = (d as f32, (1.0 - d) as f32);
        for ((_, e), s) in self.tensors.iter().zip(src) {
            let m = s.map(|t| t.to_vec()).unwrap_or_default();
            e.update_data(|v| {
                for (v, &m) in v.iter_mut().zip(&m) {
                    *v = *v * df + omd * m;
                }
            })?;
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged tensors with their names (to export, validate with or save).
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// The averaged tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.tensors[i].1)
    }

    /// Writes the averages into `model`'s tensors of the same names (e.g. a validation model);
    /// model tensors the EMA lacks are left as they are.
    pub fn copy_to(&self, model: &[(String, Tensor, Kind)]) -> Result<()> {
        for (name, t, _) in model {
            if let Some(e) = self.get(name) {
                if e.device() == t.device() {
                    t.assign(e)?;
                } else {
                    t.assign(&e.to_device(t.device())?)?;
                }
            }
        }
        Ok(())
    }

    /// Overwrites the averages from saved tensors (resume); every name must be known and match
    /// in shape. `updates` is restored separately.
    pub fn load(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in tensors {
            let Some(e) = self.get(name) else {
                return invalid(
                    "ema",
                    format!("checkpoint tensor `{name}` is not in the model"),
                );
            };
            if e.shape() != t.shape() {
                return invalid(
                    "ema",
                    format!(
                        "`{name}`: checkpoint shape {:?}, model {:?}",
                        t.shape(),
                        e.shape()
                    ),
                );
            }
            let v = t.to_vec();
            e.update_data(|d| d.copy_from_slice(&v))?;
        }
        Ok(())
    }
}
