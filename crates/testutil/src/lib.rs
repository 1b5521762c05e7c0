//! Test helpers shared by the yolo-forge crates (a dev-dependency only): seeded inputs and a
//! finite-difference gradient check that works on any leaf tensors — inputs or parameters.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use yolo_tensor::{Device, Result, Tensor};

/// `n` uniform values in `[lo, hi)` from `seed`.
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

/// Copies the folder `src` into `dst` recursively, leaving out label caches (`*.cache.json`,
/// `*.cache`, `*.cache.tmp`), so a test's private copy of a sample dataset starts uncached.
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&from, &to);
        } else if !name.contains(".cache") {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// A CPU tensor of `shape` (panics on a size mismatch: test code only).
pub fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, Device::Cpu).unwrap()
}

/// Finite-difference formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stencil {
    /// `(L(h) − L(−h)) / 2h`, O(h²) error.
    Central,
    /// `(−L(2h) + 8L(h) − 8L(−h) + L(−2h)) / 12h`, O(h⁴) error: lets `h` be large enough that
    /// f32 rounding of the outputs (divided by h) stays small when a perturbation moves every
    /// output (parameters of a layer).
    FivePoint,
}

/// How finely to check.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Step.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// At most this many elements per tensor are perturbed (all if fewer).
    pub samples: usize,
    /// Difference formula.
    pub stencil: Stencil,
}

/// Smooth functions: eps 1e-2 keeps the O(eps²) truncation error near 1e-5 while the f32
/// rounding of the few outputs a perturbation touches (~1e-7 relative) divided by 2·eps stays
/// far below 1e-4; the loss is summed in f64 so untouched outputs cancel exactly.
pub const SMOOTH: Tol = Tol {
    eps: 1e-2,
    atol: 2e-4,
    rtol: 2e-3,
    samples: 48,
    stencil: Stencil::Central,
};
/// Piecewise-linear functions on `distinct` inputs (gap 1e-2): eps below half the gap.
pub const PIECEWISE: Tol = Tol {
    eps: 2e-3,
    atol: 5e-4,
    rtol: 2e-3,
    samples: 48,
    stencil: Stencil::Central,
};

fn difference(tol: &Tol, mut l: impl FnMut(f32) -> f64) -> f64 {
    let h = tol.eps;
    match tol.stencil {
        Stencil::Central => (l(h) - l(-h)) / (2.0 * h as f64),
        Stencil::FivePoint => {
            (-l(2.0 * h) + 8.0 * l(h) - 8.0 * l(-h) + l(-2.0 * h)) / (12.0 * h as f64)
        }
    }
}

/// Checks the autograd gradient of `L = Σ f()·r` (fixed random `r`) w.r.t. each named leaf in
/// `wrt` against finite differences, perturbing each leaf in place and restoring it. Leaves must
/// require grad and start with no gradient. Returns how many values were checked.
pub fn gradcheck_wrt(
    name: &str,
    wrt: &[(&str, &Tensor)],
    tol: Tol,
    f: impl Fn() -> Result<Tensor>,
) -> usize {
    let out = f().unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let r = uniform(out.numel(), -1.0, 1.0, 4242);
    let rt = t(r.clone(), out.shape());
    out.mul(&rt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    let loss = || -> f64 {
        let _g = yolo_tensor::no_grad();
        let o = f().unwrap().to_vec();
        o.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    let mut checked = 0;
    for (pname, p) in wrt {
        let analytic = p
            .grad()
            .unwrap_or_else(|| panic!("{name}: {pname} got no gradient"))
            .to_vec();
        assert_eq!(
            analytic.len(),
            p.numel(),
            "{name}: gradient size of {pname}"
        );
        let data = p.to_vec();
        let step = (data.len() / tol.samples).max(1);
        for j in (0..data.len()).step_by(step) {
            let numeric = difference(&tol, |delta| {
                let mut d = data.clone();
                d[j] += delta;
                p.assign(&t(d, p.shape())).unwrap();
                loss()
            });
            p.assign(&t(data.clone(), p.shape())).unwrap();
            let a = analytic[j] as f64;
            let bound = tol.atol + tol.rtol * a.abs().max(numeric.abs());
            if std::env::var_os("GRADCHECK_DEBUG").is_some() {
                eprintln!(
                    "{name} {pname}[{j}] ratio {:.2} autograd {a:.6} numeric {numeric:.6}",
                    (a - numeric).abs() / bound
                );
            }
            assert!(
                (a - numeric).abs() <= bound,
                "{name}: d/d {pname}[{j}] (shape {:?}): autograd {a:.6} vs finite difference {numeric:.6}",
                p.shape()
            );
            checked += 1;
        }
    }
    checked
}

/// [`gradcheck_wrt`] for a function of fresh leaves built from `inputs` (data, shape).
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
    let names: Vec<String> = (0..leaves.len()).map(|i| format!("input{i}")).collect();
    let wrt: Vec<(&str, &Tensor)> = names
        .iter()
        .map(String::as_str)
        .zip(leaves.iter())
        .collect();
    gradcheck_wrt(name, &wrt, tol, || f(&leaves));
}

/// Asserts `a` and `b` agree to `rel` relative (with an absolute floor of `rel` for values near 0).
pub fn assert_close(name: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let bound = rel * x.abs().max(y.abs()).max(1.0);
        assert!((x - y).abs() <= bound, "{name}[{i}]: {x} vs {y}");
    }
}

/// `max|a − b| / max|a|` (the scale floored at 1e-6): the worst error relative to the
/// reference `a`'s largest magnitude.
pub fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The workspace root (every crate sits two levels below it).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A private, fresh copy of the committed sample dataset (`datasets/samples/shapes`) in
/// `<temp>/yf-<tag>-<pid>/data` (the loader writes a label cache beside the labels, so tests
/// never share one); returns that `yf-<tag>-<pid>` folder.
pub fn sample_copy(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("yf-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&root().join("datasets/samples/shapes"), &dir.join("data"));
    dir
}

/// Reads `tests/fixtures/<name>` of the crate whose manifest directory is `manifest_dir`
/// (pass `env!("CARGO_MANIFEST_DIR")`).
pub fn read_fixture(manifest_dir: &str, name: &str) -> Vec<u8> {
    let p = format!("{manifest_dir}/tests/fixtures/{name}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A fixture tensor as f64 values and its shape (F64, F32, I64 and U8 are converted).
pub fn tensor_f64(st: &safetensors::SafeTensors<'_>, key: &str) -> (Vec<f64>, Vec<usize>) {
    use safetensors::Dtype;
    let v = st
        .tensor(key)
        .unwrap_or_else(|e| panic!("fixture tensor `{key}`: {e}"));
    let d = v.data();
    let out = match v.dtype() {
        Dtype::F64 => d
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => d
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => d
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
        other => panic!("fixture tensor `{key}`: unsupported dtype {other:?}"),
    };
    (out, v.shape().to_vec())
}

/// An in-process all-reduce over `world` threads for synchronised batch norm: rank `r` uses
/// element `r` of the result from its own thread; each call sums the ranks' vectors (in rank
/// order, so every rank gets the same bits).
pub fn sum_group(world: usize) -> Vec<yolo_tensor::AllReduceSum> {
    use std::sync::{Arc, Barrier, Mutex};
    let barrier = Arc::new(Barrier::new(world));
    let slots: Arc<Mutex<Vec<Vec<f64>>>> = Arc::new(Mutex::new(vec![Vec::new(); world]));
    (0..world)
        .map(|rank| {
            let (barrier, slots) = (barrier.clone(), slots.clone());
            let f: yolo_tensor::AllReduceSum = Arc::new(move |v: &mut [f64]| {
                slots.lock().unwrap_or_else(|e| e.into_inner())[rank] = v.to_vec();
                barrier.wait();
                let sum: Vec<f64> = {
                    let s = slots.lock().unwrap_or_else(|e| e.into_inner());
                    (0..v.len()).map(|i| s.iter().map(|p| p[i]).sum()).collect()
                };
                barrier.wait();
                v.copy_from_slice(&sum);
                Ok(())
            });
            f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "autograd")]
    fn catches_a_wrong_gradient() {
        // detach() hides x² from autograd: the analytic gradient (1) misses 2x.
        gradcheck(
            "detached",
            &[(uniform(6, 0.5, 1.0, 1), vec![6])],
            SMOOTH,
            |x| x[0].detach().sqr().add(&x[0]),
        );
    }

    #[test]
    fn five_point_checks_parameters_in_place() {
        let w = t(uniform(5, -1.0, 1.0, 2), &[5]).with_grad();
        let x = t(uniform(5, -1.0, 1.0, 3), &[5]);
        let tol = Tol {
            stencil: Stencil::FivePoint,
            ..SMOOTH
        };
        let before = w.to_vec();
        let n = gradcheck_wrt("w·tanh(x·w)", &[("w", &w)], tol, || {
            w.mul(&x.mul(&w)?.tanh())
        });
        assert_eq!(n, 5);
        assert_eq!(w.to_vec(), before, "restored after perturbation");
    }
}
