//! Parameter initialisation as PyTorch's defaults, from a seeded generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use yolo_tensor::{Device, Result, Tensor};

/// A seeded source of initial parameter values (shared by every block of one model).
#[derive(Debug)]
pub struct Init {
    rng: RefCell<StdRng>,
    /// Device new parameters are created on.
    pub device: Device,
}

impl Init {
    /// A generator with `seed`, creating tensors on the CPU.
    pub fn new(seed: u64) -> Init {
        Init {
            rng: RefCell::new(StdRng::seed_from_u64(seed)),
            device: Device::Cpu,
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
