//! One yolov5s training step on `cuda:0` against the same step on the CPU.
//!
//! Same weights (two models built with one seed, checked equal after the move), a fixed random
//! batch of 2 images at 320 px with 5 targets: training-mode forward, YOLOv5 `ComputeLoss`,
//! backward, one SGD step (nesterov, momentum 0.937, weight decay 5e-4 as upstream). Compared:
//!
//! - the raw head outputs and BN running statistics: `max|Δ| / max(1, max|cpu|)` ≤ 1e-4;
//! - the loss items (box, obj, cls, total): relative difference ≤ 1e-4;
//! - every parameter gradient and every parameter's SGD update: per tensor
//!   `max|Δ| / max(max|cpu tensor|, 1e-3·max over all tensors)` ≤ 1e-3 (the floor keeps
//!   tensors whose gradient is nearly zero from measuring only rounding noise).
//!
//! Prints `cuda_step | …` lines (collected by `cargo xtask gpu-check`), the worst tensor by
//! name. Without a GPU it prints `skipped: <reason>` and passes, unless `YOLO_REQUIRE_GPU=1`.
//!
//! The GPU model is built on the CPU and moved with `Model::to_device`. The CPU test checks
//! the step itself: seeded models are identical and the step is reproducible, so a GPU
//! difference can only come from the device.

use std::time::Instant;

use yolo_models::{Model, ModelConfig};
use yolo_tensor::{cuda_status, set_mixed_precision, synchronize, Device, Tensor};
use yolo_testutil::uniform;
use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};
use yolo_train::{Criterion, Hyp};

type R<T> = std::result::Result<T, String>;

const SEED: u64 = 11;
const IMGSZ: usize = 320;
const BATCH: usize = 2;
const OUT_TOL: f32 = 1e-4;
const LOSS_TOL: f32 = 1e-4;
const GRAD_TOL: f32 = 1e-3;

fn model_on(dev: Device) -> R<Model> {
    let cfg = ModelConfig::from_yaml(include_str!("../../../configs/models/yolov5s.yaml"))
        .map_err(|e| e.to_string())?;
    let mut m = Model::new(cfg, SEED).map_err(|e| e.to_string())?;
    if !dev.is_cpu() {
        m.to_device(dev).map_err(|e| e.to_string())?;
    }
    Ok(m)
}

/// Targets `[image, class, cx, cy, w, h]` (normalised).
const TARGETS: [[f32; 6]; 5] = [
    [0.0, 3.0, 0.30, 0.40, 0.20, 0.30],
    [0.0, 17.0, 0.70, 0.62, 0.10, 0.15],
    [1.0, 0.0, 0.50, 0.50, 0.60, 0.50],
    [1.0, 45.0, 0.21, 0.80, 0.05, 0.08],
    [1.0, 79.0, 0.85, 0.15, 0.25, 0.20],
];

/// Everything one step produces, on the host.
struct Step {
    /// lbox, lobj, lcls, total.
    loss: [f32; 4],
    /// (name, data) of the raw head outputs and the BN running statistics after the forward.
    outputs: Vec<(String, Vec<f32>)>,
    /// (name, gradient) of every parameter.
    grads: Vec<(String, Vec<f32>)>,
    /// (name, new − old) of every parameter after one SGD step.
    updates: Vec<(String, Vec<f32>)>,
    /// Per parameter, 2 ulp of its largest magnitude: `new − old` is measured on stored f32
    /// weights, so two devices whose updates differ in the 5th digit can round a weight near 1
    /// (BN) one ulp apart; that much is allowed on top of the tolerance.
    update_slack: Vec<f32>,
    ms: f64,
}

fn step(model: &Model, dev: Device) -> R<Step> {
    let e = |e: &dyn std::fmt::Display| format!("on {dev}: {e}");
    let t0 = Instant::now();
    let images = Tensor::from_vec(
        uniform(BATCH * 3 * IMGSZ * IMGSZ, 0.0, 1.0, 5),
        &[BATCH, 3, IMGSZ, IMGSZ],
        dev,
    )
    .map_err(|x| e(&x))?;
    let targets = Tensor::from_vec(
        TARGETS.iter().flatten().copied().collect(),
        &[TARGETS.len(), 6],
        Device::Cpu,
    )
    .map_err(|x| e(&x))?;
    let crit = Criterion::new(model, &Hyp::default(), IMGSZ, false).map_err(|x| e(&x))?;
    let out = model.forward(&images, true).map_err(|x| e(&x))?;
    let loss = crit
        .loss(&out, &targets, [IMGSZ, IMGSZ])
        .map_err(|x| e(&x))?;
    let total = loss.total.item().map_err(|x| e(&x))?;
    let mut outputs: Vec<(String, Vec<f32>)> = out
        .raw
        .iter()
        .enumerate()
        .map(|(l, t)| (format!("raw[{l}]"), t.to_vec()))
        .collect();
    for (l, t) in out.raw.iter().enumerate() {
        if t.device() != dev {
            return Err(format!(
                "raw[{l}] came back on {} instead of {dev}",
                t.device()
            ));
        }
    }
    loss.total.backward().map_err(|x| e(&x))?;
    drop(out);
    let named = model.named_tensors();
    for (name, t, kind) in &named {
        if *kind == yolo_layers::Kind::Buffer && name.contains("running_") {
            outputs.push((name.clone(), t.to_vec()));
        }
    }
    let mut grads = Vec::new();
    let mut before = Vec::new();
    for (name, t, kind) in &named {
        if *kind != yolo_layers::Kind::Param {
            continue;
        }
        let g = t
            .grad()
            .ok_or_else(|| format!("on {dev}: no gradient reached {name}"))?;
        if g.device() != dev {
            return Err(format!(
                "grad of {name} is on {} instead of {dev}",
                g.device()
            ));
        }
        grads.push((name.clone(), g.to_vec()));
        before.push(t.to_vec());
    }
    let mut opt = Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        0.01,
        0.937,
        0.0005,
    );
    opt.step().map_err(|x| e(&x))?;
    opt.zero_grad();
    synchronize(dev).map_err(|x| e(&x))?;
    let update_slack: Vec<f32> = before
        .iter()
        .map(|old| 2.0 * f32::EPSILON * max_abs(old))
        .collect();
    let updates = named
        .iter()
        .filter(|(_, _, k)| *k == yolo_layers::Kind::Param)
        .zip(before)
        .map(|((name, t, _), old)| {
            let new = t.to_vec();
            (
                name.clone(),
                new.iter().zip(&old).map(|(a, b)| a - b).collect(),
            )
        })
        .collect();
    Ok(Step {
        loss: [loss.lbox, loss.lobj, loss.lcls, total],
        outputs,
        grads,
        updates,
        update_slack,
        ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// Worst `(error, name)` of `got` against `reference`, each tensor normalised by
/// `max(max|ref tensor|, floor)`; `floor = None` means `max(1, …)`, `Some(f)` means
/// `f · max over all reference tensors`; `slack[i]` (if given) is an absolute error allowed
/// on tensor `i` before normalising.
fn worst(
    reference: &[(String, Vec<f32>)],
    got: &[(String, Vec<f32>)],
    floor: Option<f32>,
    slack: Option<&[f32]>,
) -> R<(f32, String)> {
    if reference.len() != got.len() {
        return Err(format!(
            "{} tensors on the CPU, {} on the device",
            reference.len(),
            got.len()
        ));
    }
    let global = reference.iter().fold(0.0f32, |m, (_, v)| m.max(max_abs(v)));
    let mut w = (0.0f32, String::from("-"));
    for (i, ((n, r), (m, g))) in reference.iter().zip(got).enumerate() {
        if n != m || r.len() != g.len() {
            return Err(format!("CPU {n} [{}] vs device {m} [{}]", r.len(), g.len()));
        }
        let scale = match floor {
            None => max_abs(r).max(1.0),
            Some(f) => max_abs(r).max(f * global).max(f32::MIN_POSITIVE),
        };
        let allowed = slack.and_then(|s| s.get(i)).copied().unwrap_or(0.0);
        let e = (max_diff(r, g) - allowed).max(0.0) / scale;
        if e > w.0 || (e.is_nan() && !w.0.is_nan()) {
            w = (e, n.clone());
        }
    }
    Ok(w)
}

/// Compares two steps; `Ok(report lines)` when they agree, `Err(report lines)` otherwise.
fn compare(cpu: &Step, gpu: &Step) -> std::result::Result<Vec<String>, Vec<String>> {
    let mut lines = Vec::new();
    let mut ok = true;
    for (k, name) in ["lbox", "lobj", "lcls", "total"].iter().enumerate() {
        let (c, g) = (cpu.loss[k], gpu.loss[k]);
        let rel = (c - g).abs() / c.abs().max(1e-6);
        let pass = rel <= LOSS_TOL;
        ok &= pass;
        lines.push(format!(
            "cuda_step | loss {name} | {} | cpu {c:.6} gpu {g:.6} rel {rel:.1e}",
            if pass { "ok" } else { "FAIL" }
        ));
    }
    for (what, r, g, floor, tol, slack) in [
        ("outputs", &cpu.outputs, &gpu.outputs, None, OUT_TOL, None),
        ("grads", &cpu.grads, &gpu.grads, Some(1e-3), GRAD_TOL, None),
        (
            "sgd updates",
            &cpu.updates,
            &gpu.updates,
            Some(1e-3),
            GRAD_TOL,
            Some(&cpu.update_slack[..]),
        ),
    ] {
        match worst(r, g, floor, slack) {
            Ok((e, at)) => {
                let pass = e <= tol;
                ok &= pass;
                lines.push(format!(
                    "cuda_step | {what} ({} tensors) | {} | worst {e:.1e} at {at} (tolerance {tol:.0e})",
                    r.len(),
                    if pass { "ok" } else { "FAIL" }
                ));
            }
            Err(msg) => {
                ok = false;
                lines.push(format!("cuda_step | {what} | FAIL | {msg}"));
            }
        }
    }
    lines.push(format!(
        "cuda_step | time | cpu {:.0} ms | gpu {:.0} ms (first step, includes warm-up)",
        cpu.ms, gpu.ms
    ));
    if ok {
        Ok(lines)
    } else {
        Err(lines)
    }
}

fn gpu_or_skip() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => {
            println!("{}", cuda_status());
            Some(d)
        }
        Err(e) => {
            let required = std::env::var("YOLO_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1");
            assert!(
                !required,
                "YOLO_REQUIRE_GPU=1 but cuda:0 is unusable: {e}\n{}",
                cuda_status()
            );
            println!("skipped: {e}");
            None
        }
    }
}

#[test]
fn yolov5s_training_step_on_cuda_matches_the_cpu() {
    let Some(dev) = gpu_or_skip() else {
        return;
    };
    set_mixed_precision(false);
    let cpu_model = model_on(Device::Cpu).unwrap();
    let gpu_model = match model_on(dev) {
        Ok(m) => m,
        Err(e) => {
            println!("cuda_step | model to {dev} | FAIL | {e}");
            panic!("{e}");
        }
    };
    // same weights and buffers after the move
    let a = cpu_model.named_tensors();
    let b = gpu_model.named_tensors();
    assert_eq!(a.len(), b.len());
    for ((n, x, _), (m, y, _)) in a.iter().zip(&b) {
        assert_eq!(n, m);
        assert_eq!(y.device(), dev, "{m} was not moved to {dev}");
        assert!(x.to_vec() == y.to_vec(), "{n} differs after the move");
    }
    let cpu = step(&cpu_model, Device::Cpu).unwrap();
    let gpu = match step(&gpu_model, dev) {
        Ok(s) => s,
        Err(e) => {
            println!("cuda_step | step on {dev} | FAIL | {e}");
            panic!("{e}");
        }
    };
    match compare(&cpu, &gpu) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            panic!(
                "the {dev} training step differs from the CPU's:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// The reference side alone: two seeded models are identical, the step is reproducible, and
/// the comparison would notice a perturbed gradient.
#[test]
fn the_cpu_reference_step_is_reproducible_and_the_comparison_bites() {
    let m1 = model_on(Device::Cpu).unwrap();
    let m2 = model_on(Device::Cpu).unwrap();
    let s1 = step(&m1, Device::Cpu).unwrap();
    let s2 = step(&m2, Device::Cpu).unwrap();
    assert!(
        s1.loss.iter().all(|v| v.is_finite() && *v > 0.0),
        "{:?}",
        s1.loss
    );
    assert!(s1.grads.len() > 100, "{} gradients", s1.grads.len());
    assert_eq!(s1.grads.len(), s1.updates.len());
    assert!(
        s1.outputs.iter().any(|(n, _)| n.contains("running_mean")),
        "BN statistics are compared"
    );
    let lines = compare(&s1, &s2).unwrap_or_else(|l| panic!("{}", l.join("\n")));
    assert!(lines.iter().any(|l| l.contains("grads")));
    // every parameter got a nonzero gradient and a nonzero update
    for ((n, g), (_, u)) in s1.grads.iter().zip(&s1.updates) {
        assert!(max_abs(g) > 0.0, "{n}: zero gradient");
        assert!(max_abs(u) > 0.0, "{n}: no SGD update");
    }
    // a 1 % error in one gradient tensor is caught and named
    let mut bad = Step {
        loss: s2.loss,
        outputs: s2.outputs.clone(),
        grads: s2.grads.clone(),
        updates: s2.updates.clone(),
        update_slack: s2.update_slack.clone(),
        ms: 0.0,
    };
    let (name, g) = &mut bad.grads[7];
    let i = g
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap()
        .0;
    g[i] *= 1.01;
    let name = name.clone();
    let lines = compare(&s1, &bad).expect_err("a perturbed gradient passed");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("FAIL") && l.contains(&name)),
        "{lines:?}"
    );
    // and a loss item off by 1e-3
    bad.grads = s2.grads.clone();
    bad.loss[1] *= 1.001;
    assert!(compare(&s1, &bad).is_err());
}
