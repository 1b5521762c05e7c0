//! Test helpers: seeded inputs and a central finite-difference gradient check.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use yolo_tensor::{Device, Result, Tensor};

/// Uniform values in [lo, hi).
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Distinct values at least `gap` apart, shuffled, centred on 0, none closer than gap/2 to 0:
/// finite differences with eps < gap/2 never cross a kink or flip an arg-max.
pub fn distinct(n: usize, gap: f32, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * gap)
        .collect();
    v.shuffle(&mut r);
    v
}

pub fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, Device::Cpu).unwrap()
}

/// How finely to check.
#[derive(Clone, Copy)]
pub struct Tol {
    pub eps: f32,
    pub atol: f64,
    pub rtol: f64,
    /// At most this many elements per input are perturbed (all if fewer).
    pub samples: usize,
}

/// Smooth functions: eps 1e-2 keeps the O(eps²) truncation error near 1e-5 while the f32
/// rounding of the few outputs a perturbation touches (~1e-7 relative) divided by 2·eps stays
/// far below 1e-4; the loss is summed in f64 so untouched outputs cancel exactly.
pub const SMOOTH: Tol = Tol {
    eps: 1e-2,
    atol: 2e-4,
    rtol: 2e-3,
    samples: 48,
};
/// Piecewise-linear functions on `distinct` inputs (gap 1e-2): eps below half the gap.
pub const PIECEWISE: Tol = Tol {
    eps: 2e-3,
    atol: 5e-4,
    rtol: 2e-3,
    samples: 48,
};

/// Checks the autograd gradient of `f` w.r.t. every input against central differences of the
/// scalar loss `L = Σ f(x)·r` for fixed random `r`.
pub fn gradcheck(
    name: &str,
    inputs: &[(Vec<f32>, Vec<usize>)],
    tol: Tol,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|(d, s)| t(d.clone(), s).with_grad())
        .collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let r = uniform(out.numel(), -1.0, 1.0, 4242);
    let rt = t(r.clone(), out.shape());
    out.mul(&rt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let loss = |xs: &[Tensor]| -> f64 {
        let _g = yolo_tensor::no_grad();
        let o = f(xs).unwrap().to_vec();
        o.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    for (i, (data, shape)) in inputs.iter().enumerate() {
        let analytic = leaves[i]
            .grad()
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"))
            .to_vec();
        assert_eq!(
            analytic.len(),
            data.len(),
            "{name}: gradient size of input {i}"
        );
        let step = (data.len() / tol.samples).max(1);
        for j in (0..data.len()).step_by(step) {
            let at = |delta: f32| -> f64 {
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, (d, s))| {
                        let mut d = d.clone();
                        if k == i {
                            d[j] += delta;
                        }
                        t(d, s)
                    })
                    .collect();
                loss(&xs)
            };
            let numeric = (at(tol.eps) - at(-tol.eps)) / (2.0 * tol.eps as f64);
            let a = analytic[j] as f64;
            let bound = tol.atol + tol.rtol * a.abs().max(numeric.abs());
            assert!(
                (a - numeric).abs() <= bound,
                "{name}: d/d input{i}[{j}] (shape {shape:?}): autograd {a:.6} vs finite difference {numeric:.6}"
            );
        }
    }
}

/// Asserts `a` and `b` agree to `rel` relative (with an absolute floor of rel for values near 0).
pub fn assert_close(name: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let bound = rel * x.abs().max(y.abs()).max(1.0);
        assert!((x - y).abs() <= bound, "{name}[{i}]: {x} vs {y}");
    }
}
