//! Test helpers: seeded inputs and a finite-difference gradient check of a layer w.r.t. its
//! input and every learnable parameter (adapted from yolo-tensor's tests).
#![allow(dead_code, unused_imports)]

use yolo_activations::ActivationLayer;
use yolo_tensor::Tensor;
pub use yolo_testutil::{distinct, t, uniform};
use yolo_testutil::{gradcheck_wrt, Stencil};

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

/// Checks the autograd gradients of `layer.forward(x, train)` w.r.t. `x` and every tensor of
/// `layer.named_parameters()` against finite differences (five-point stencil: its O(h⁴)
/// truncation error lets `h` be large enough that the f32 rounding of the outputs, divided by
/// h, stays small when a parameter moves every output) of `L = Σ f(x)·r` for a fixed random
/// `r`. Parameters are perturbed in place and restored. Returns how many values it checked.
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
    let mut wrt: Vec<(&str, &Tensor)> = vec![("input", &xt)];
    wrt.extend(params.iter().map(|(n, p)| (n.as_str(), p)));
    let shared = yolo_testutil::Tol {
        eps: tol.eps,
        atol: tol.atol,
        rtol: tol.rtol,
        samples: tol.samples,
        stencil: Stencil::FivePoint,
    };
    let checked = gradcheck_wrt(name, &wrt, shared, || {
        let out = layer
            .forward(&xt, train)
            .unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
        assert_eq!(out.shape(), shape, "{name}: output shape");
        Ok(out)
    });
    for (_, p) in &params {
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
