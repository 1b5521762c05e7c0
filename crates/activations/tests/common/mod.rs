//! Test helpers: seeded inputs and a finite-difference gradient check of a layer w.r.t. its
//! input and every learnable parameter (adapted from yolo-tensor's tests).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use yolo_activations::ActivationLayer;
use yolo_tensor::{Device, Tensor};

/// Uniform values in [lo, hi).
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Distinct values `gap` apart, shuffled, centred on 0: finite differences that reach less
/// than gap/2 never cross a kink that sits on the grid.
pub fn distinct(n: usize, gap: f32, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * gap)
        .collect();
    v.shuffle(&mut r);
    v
}

/// A CPU tensor.
pub fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, Device::Cpu).unwrap()
}

/// How finely to check.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub eps: f32,
    pub atol: f64,
    pub rtol: f64,
    /// At most this many elements per tensor are perturbed (all if fewer).
    pub samples: usize,
}

/// Smooth functions: with the five-point stencil, eps 2e-2 keeps the O(eps⁴) truncation
/// error near 1e-6 even for steep gates; the loss is summed in f64 so untouched outputs
/// cancel exactly.
pub const SMOOTH: Tol = Tol {
    eps: 2e-2,
    atol: 2e-4,
    rtol: 2e-3,
    samples: 48,
};
/// Piecewise-linear functions on `distinct` inputs: the stencil's reach (2·eps) stays below
/// the 0.005 distance to the nearest kink.
pub const PIECEWISE: Tol = Tol {
    eps: 2e-3,
    atol: 5e-4,
    rtol: 2e-3,
    samples: 48,
};

/// Five-point central difference `(−L(2h) + 8L(h) − 8L(−h) + L(−2h)) / 12h` of `L(δ)`: its
/// O(h⁴) truncation error lets `h` be large enough that the f32 rounding of the outputs
/// (divided by h) stays small, which matters when one perturbation moves every output.
fn stencil(h: f32, mut l: impl FnMut(f32) -> f64) -> f64 {
    (-l(2.0 * h) + 8.0 * l(h) - 8.0 * l(-h) + l(-2.0 * h)) / (12.0 * h as f64)
}

/// Checks the autograd gradients of `layer.forward(x, train)` w.r.t. `x` and every tensor of
/// `layer.named_parameters()` against finite differences (five-point stencil) of
/// `L = Σ f(x)·r` for a fixed random `r`. Parameters are perturbed in place and restored.
/// Returns how many values it checked.
pub fn gradcheck_layer(
    name: &str,
    layer: &dyn ActivationLayer,
    x: &[f32],
    shape: &[usize],
    train: bool,
    tol: Tol,
) -> usize {
    let params = layer.named_parameters();
    for (_, p) in &params {
        assert!(p.requires_grad(), "{name}: parameter without requires_grad");
        p.zero_grad();
    }
    let xt = t(x.to_vec(), shape).with_grad();
    let out = layer
        .forward(&xt, train)
        .unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert_eq!(out.shape(), shape, "{name}: output shape");
    let r = uniform(out.numel(), -1.0, 1.0, 4242);
    out.mul(&t(r.clone(), out.shape()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let loss = |x: &[f32]| -> f64 {
        let _g = yolo_tensor::no_grad();
        let o = layer
            .forward(&t(x.to_vec(), shape), train)
            .unwrap()
            .to_vec();
        o.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let mut checked = 0;
    let mut check = |what: &str, analytic: &[f32], numeric_at: &mut dyn FnMut(usize) -> f64| {
        let step = (analytic.len() / tol.samples).max(1);
        for j in (0..analytic.len()).step_by(step) {
            let numeric = numeric_at(j);
            let a = analytic[j] as f64;
            let bound = tol.atol + tol.rtol * a.abs().max(numeric.abs());
            // GRADCHECK_DEBUG=1 prints every comparison (how close each is to its bound).
            if std::env::var_os("GRADCHECK_DEBUG").is_some() {
                let ratio = (a - numeric).abs() / bound;
                eprintln!(
                    "{name} {what}[{j}] ratio {ratio:.2} autograd {a:.6} numeric {numeric:.6}"
                );
            }
            assert!(
                (a - numeric).abs() <= bound,
                "{name}: d/d {what}[{j}]: autograd {a:.6} vs finite difference {numeric:.6}"
            );
            checked += 1;
        }
    };
    let gx = xt
        .grad()
        .unwrap_or_else(|| panic!("{name}: input got no gradient"))
        .to_vec();
    check("input", &gx, &mut |j| {
        stencil(tol.eps, |d| {
            let mut xp = x.to_vec();
            xp[j] += d;
            loss(&xp)
        })
    });
    for (pname, p) in &params {
        let analytic = p
            .grad()
            .unwrap_or_else(|| panic!("{name}: parameter {pname} got no gradient"))
            .to_vec();
        assert_eq!(analytic.len(), p.numel(), "{name}: {pname} gradient size");
        let orig = p.to_vec();
        let set = |d: Vec<f32>| p.assign(&t(d, p.shape())).unwrap();
        check(pname, &analytic, &mut |j| {
            let g = stencil(tol.eps, |d| {
                let mut v = orig.clone();
                v[j] = orig[j] + d;
                set(v);
                loss(x)
            });
            set(orig.clone());
            g
        });
        p.zero_grad();
    }
    checked
}

/// Asserts `a` and `b` agree within `atol + rtol·|b|` elementwise.
pub fn assert_close(name: &str, a: &[f32], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let bound = atol + rtol * y.abs();
        assert!(
            (x as f64 - y).abs() <= bound,
            "{name}[{i}]: got {x}, expected {y}"
        );
    }
}
