//! Seeded parameter initialisation, following PyTorch's defaults.

use crate::error::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_tensor::{Device, Tensor};

/// A seeded generator for one layer's parameters.
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Standard normal values (Box–Muller), as `torch.randn`.
pub(crate) fn randn(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // 1 − U lies in (0, 1]: the logarithm stays finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// `U(−1/√fan_in, 1/√fan_in)`: what PyTorch's `Conv2d.reset_parameters` gives both the weight
/// (kaiming-uniform with a = √5) and the bias.
pub(crate) fn conv_uniform(rng: &mut StdRng, n: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// A learnable leaf tensor.
pub(crate) fn param(data: Vec<f32>, shape: &[usize], device: Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, shape, device)?.with_grad())
}

/// A constant leaf tensor (a buffer: running statistics).
pub(crate) fn buffer(value: f32, shape: &[usize], device: Device) -> Result<Tensor> {
    Ok(Tensor::full(value, shape, device)?)
}
