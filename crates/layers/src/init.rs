//! Parameter initialisation as PyTorch's defaults, from a seeded generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use yolo_tensor::{Device, Result, Tensor};

/// The `--sync-bn` switch shared by every batch norm of one model: when it holds a collective,
/// training-mode batch norms compute their statistics over all data-parallel replicas
/// ([`yolo_tensor::Tensor::batch_norm2d_sync_train`]).
#[derive(Clone, Default)]
pub struct SyncBn(std::sync::Arc<std::sync::RwLock<Option<yolo_tensor::AllReduceSum>>>);

impl SyncBn {
    /// Sets (or, with `None`, clears) the collective for every batch norm sharing this switch.
    pub fn set(&self, sync: Option<yolo_tensor::AllReduceSum>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = sync;
    }
    /// The collective, when synchronised batch norm is on.
    pub fn get(&self) -> Option<yolo_tensor::AllReduceSum> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl std::fmt::Debug for SyncBn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SyncBn({})",
            if self.get().is_some() { "on" } else { "off" }
        )
    }
}

/// A seeded source of initial parameter values (shared by every block of one model).
#[derive(Debug)]
pub struct Init {
    rng: RefCell<StdRng>,
    /// Device new parameters are created on.
    pub device: Device,
    /// The model's synchronised-batch-norm switch, handed to every batch norm built.
    pub sync_bn: SyncBn,
}

impl Init {
    /// A generator with `seed`, creating tensors on the CPU.
    pub fn new(seed: u64) -> Init {
        Init {
            rng: RefCell::new(StdRng::seed_from_u64(seed)),
            device: Device::Cpu,
            sync_bn: SyncBn::default(),
        }
    }

    /// A seed for a sub-generator (activations build their own parameters).
    pub fn next_seed(&self) -> u64 {
        self.rng.borrow_mut().random()
    }

    /// `U(-bound, bound)` of `shape`, as a parameter.
    pub fn uniform(&self, shape: &[usize], bound: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut r = self.rng.borrow_mut();
        let v = (0..n).map(|_| r.random_range(-bound..=bound)).collect();
        Ok(Tensor::from_vec(v, shape, self.device)?.with_grad())
    }

    /// PyTorch's default for conv/linear weights and biases: `U(±1/√fan_in)`.
    pub fn kaiming_uniform(&self, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        self.uniform(shape, 1.0 / (fan_in.max(1) as f32).sqrt())
    }

    /// A constant parameter.
    pub fn constant(&self, shape: &[usize], v: f32) -> Result<Tensor> {
        Ok(Tensor::full(v, shape, self.device)?.with_grad())
    }

    /// A constant buffer (no gradient).
    pub fn buffer(&self, shape: &[usize], v: f32) -> Result<Tensor> {
        Tensor::full(v, shape, self.device)
    }
}
