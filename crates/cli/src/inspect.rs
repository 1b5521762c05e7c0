//! `info` and `bench`: inspect and time a model.

use crate::common::{group, load_model, select_device, ModelArgs};
use anyhow::{bail, Result};
use clap::Args;
use std::time::Instant;
use yolo_tensor::{Device, Tensor};

/// `info` flags.
#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image size for the GFLOPs figure.
    #[arg(long, default_value_t = 640)]
    imgsz: usize,
    /// Fuse Conv+BN (and other inference structure) first.
    #[arg(long)]
    fuse: bool,
    /// Print only {"layers", "params", "gflops"} as JSON.
    #[arg(long)]
    json: bool,
}

/// `bench` flags.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Square input size.
    #[arg(long, default_value_t = 640)]
    imgsz: usize,
    /// Batch size.
    #[arg(long, alias = "batch-size", default_value_t = 1)]
    batch: usize,
    /// CPU threads (0 = all cores; default from YOLO_THREADS or all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Device: cpu or a CUDA ordinal (0); of a list, the first. On CUDA the peak device
    /// memory is reported too.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed runs (after 2 warm-up runs).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Do not fuse Conv+BN before timing.
    #[arg(long)]
    no_fuse: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Time one training step instead (forward in training mode, ComputeLoss, backward, SGD
    /// step; 4 targets per image).
    #[arg(long)]
    train: bool,
    /// Also print where the time goes: for inference, each layer's median time (upstream's
    /// `profile=True`); with --train, the median time of each phase (forward, loss, backward,
    /// optimiser) and the backward pass's time per op.
    #[arg(long)]
    profile: bool,
}

/// `yolo-forge info`.
pub fn info(a: InfoArgs) -> Result<()> {
    let mut model = load_model(&a.model)?;
    if a.fuse {
        model.fuse()?;
    }
    let s = model.info(a.imgsz)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"layers": s.layers, "params": s.params, "gflops": (s.gflops * 10.0).round() / 10.0})
        );
        return Ok(());
    }
    println!(
        "{:>3}{:>18}{:>3}{:>10}  {:<40}{:<30}",
        "", "from", "n", "params", "module", "arguments"
    );
    for r in model.layer_table() {
        println!(
            "{:>3}{:>18}{:>3}{:>10}  {:<40}{:<30}",
            r.index, r.from, r.n, r.params, r.module, r.args
        );
    }
    let name = a
        .model
        .model
        .as_ref()
        .or(a.model.weights.as_ref())
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    println!(
        "{name} summary{}: {} layers, {} parameters, {} gradients, {:.1} GFLOPs",
        if a.fuse { " (fused)" } else { "" },
        s.layers,
        group(s.params),
        group(s.gradients),
        s.gflops
    );
    Ok(())
}

/// `yolo-forge bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    if let Some(t) = a.threads {
        yolo_tensor::set_num_threads(t);
    }
    if a.runs == 0 || a.batch == 0 || a.imgsz == 0 {
        bail!("--runs, --batch and --imgsz must be positive");
    }
    let device = select_device(&a.device)?;
    if a.train {
        return bench_train(&a, device);
    }
    let mut model = load_model(&a.model)?;
    if !a.no_fuse {
        model.fuse()?;
    }
    model.to_device(device)?;
    let stride = model.stride.iter().cloned().fold(32.0f32, f32::max) as usize;
    let imgsz = a.imgsz.div_ceil(stride) * stride;
    if imgsz != a.imgsz {
        tracing::warn!(
            "--imgsz {} is not a multiple of the max stride {stride}; using {imgsz}",
            a.imgsz
        );
    }
    let x = bench_input(a.batch, model.config.ch, imgsz, device)?;
    let _g = yolo_tensor::no_grad();
    let mut times = Vec::with_capacity(a.runs);
    reset_peak(device);
    // per layer: one time (ms) per timed run, and its GFLOPs
    let mut layers: Vec<Vec<f64>> = Vec::new();
    let mut gflops: Vec<f64> = Vec::new();
    for i in 0..a.runs + 2 {
        let t = Instant::now();
        // With --profile a run is the sum of its layers (forward_profiled also makes an
        // untimed FLOP-counting pass).
        let mut layer_sum = None;
        let out = if a.profile {
            let (out, dt) = model.forward_profiled(&x, false)?;
            layer_sum = Some(dt.iter().map(|d| d.0 * 1e3).sum::<f64>());
            if i >= 2 {
                layers.resize_with(dt.len(), Vec::new);
                gflops = dt.iter().map(|d| d.1).collect();
                for (l, d) in layers.iter_mut().zip(dt) {
                    l.push(d.0 * 1e3);
                }
            }
            out
        } else {
            model.forward(&x, false)?
        };
        // kernels run asynchronously on a GPU: the clock is read once they are done
        yolo_tensor::synchronize(device)?;
        std::hint::black_box(out);
        if i >= 2 {
            times.push(layer_sum.unwrap_or_else(|| t.elapsed().as_secs_f64() * 1e3));
        }
    }
    if a.profile && !a.json {
        print_layer_profile(&model, &mut layers, &gflops);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    let threads = yolo_tensor::num_threads();
    let peak_dev = peak_device_mib(device);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"imgsz": imgsz, "batch": a.batch, "threads": threads, "fused": !a.no_fuse, "runs": a.runs, "median_ms": median, "min_ms": min, "device": device.to_string(), "peak_device_mib": peak_dev})
        );
    } else {
        println!("forward {imgsz}×{imgsz} batch {} on {}{}: median {median:.1} ms, min {min:.1} ms over {} runs{}", a.batch, where_text(device, threads), if a.no_fuse { "" } else { ", fused" }, a.runs, peak_text(peak_dev));
    }
    Ok(())
}

/// Upstream's per-layer profile: median ms per layer, its share, GFLOPs, the rate they ran at,
/// parameters and module.
fn print_layer_profile(model: &yolo_models::Model, layers: &mut [Vec<f64>], gflops: &[f64]) {
    let med: Vec<f64> = layers
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    let total: f64 = med.iter().sum();
    let rate = |g: f64, ms: f64| if ms > 0.0 { g / ms * 1e3 } else { 0.0 };
    println!(
        "{:>3} {:>10} {:>6} {:>8} {:>8} {:>10}  module (median of the timed runs)",
        "", "time (ms)", "%", "GFLOPs", "GFLOP/s", "params"
    );
    for ((row, ms), g) in model.layer_table().iter().zip(&med).zip(gflops) {
        println!(
            "{:>3} {ms:>10.2} {:>6.1} {g:>8.3} {:>8.1} {:>10}  {}",
            row.index,
            100.0 * ms / total.max(f64::MIN_POSITIVE),
            rate(*g, *ms),
            row.params,
            row.module
        );
    }
    let g: f64 = gflops.iter().sum();
    println!(
        "    {total:>10.2} {:>6.1} {g:>8.3} {:>8.1} {:>10}  total",
        100.0,
        rate(g, total),
        ""
    );
}

/// The benchmark input: a deterministic N×C×S×S pattern in 0..1 on `device`.
fn bench_input(batch: usize, ch: usize, imgsz: usize, device: Device) -> Result<Tensor> {
    let n = batch * ch * imgsz * imgsz;
    Ok(Tensor::from_vec(
        (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect(),
        &[batch, ch, imgsz, imgsz],
        Device::Cpu,
    )?
    .to_device(device)?)
}

/// Starts the device-memory peak afresh (CUDA; nothing on the CPU).
fn reset_peak(device: Device) {
    if let Device::Cuda(n) = device {
        yolo_tensor::reset_cuda_peak_memory(n);
    }
}

/// Peak device memory in MiB since [`reset_peak`] (CUDA only; `None` on the CPU or when the
/// backend keeps no counters).
fn peak_device_mib(device: Device) -> Option<f64> {
    match device {
        Device::Cuda(n) => {
            yolo_tensor::cuda_memory_stats(n).map(|s| s.peak as f64 / (1u64 << 20) as f64)
        }
        Device::Cpu => None,
    }
}

/// "4 thread(s)" on the CPU, "cuda:0" on a GPU.
fn where_text(device: Device, threads: usize) -> String {
    match device {
        Device::Cpu => format!("{threads} thread(s)"),
        d => d.to_string(),
    }
}

/// ", peak device memory N MiB" when known.
fn peak_text(peak: Option<f64>) -> String {
    peak.map(|p| format!(", peak device memory {p:.0} MiB"))
        .unwrap_or_default()
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Deterministic pseudo-random targets: `per_image` boxes of every image.
fn bench_targets(batch: usize, per_image: usize, nc: usize) -> Result<Tensor> {
    let mut rows = Vec::new();
    let mut s = 0x9e37_79b9u32;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 10_000) as f32 / 10_000.0
    };
    for b in 0..batch {
        for _ in 0..per_image {
            let c = (next() * nc as f32) as usize % nc.max(1);
            let (w, h) = (0.05 + 0.3 * next(), 0.05 + 0.3 * next());
            let (x, y) = (w / 2.0 + (1.0 - w) * next(), h / 2.0 + (1.0 - h) * next());
            rows.extend_from_slice(&[b as f32, c as f32, x, y, w, h]);
        }
    }
    let n = rows.len() / 6;
    Ok(Tensor::from_vec(rows, &[n, 6], Device::Cpu)?)
}

fn bench_train(a: &BenchArgs, device: Device) -> Result<()> {
    use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};
    let mut model = load_model(&a.model)?;
    // moved before the optimiser takes its parameter handles
    model.to_device(device)?;
    let stride = crate::common::max_stride(&model);
    let imgsz = a.imgsz.div_ceil(stride) * stride;
    let hyp = yolo_train::Hyp::default();
    let criterion = yolo_train::Criterion::new(&model, &hyp, imgsz, false)?;
    let mut opt = Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        hyp.lr0 as f64,
        hyp.momentum as f64,
        hyp.weight_decay as f64,
    );
    let x = bench_input(a.batch, model.config.ch, imgsz, device)?;
    // targets stay on the host: the loss builds its target tensors from them on the
    // predictions' device
    let targets = bench_targets(a.batch, 4, model.config.nc)?;
    let sync = || yolo_tensor::synchronize(device);
    reset_peak(device);
    let mut times = Vec::with_capacity(a.runs);
    // Per phase: forward, loss, backward, optimiser step + zero_grad (ms).
    let mut phases: [Vec<f64>; 4] = Default::default();
    let mut last_loss = 0.0;
    for i in 0..a.runs + 2 {
        if a.profile && i == 2 {
            yolo_tensor::take_backward_profile();
            yolo_tensor::set_backward_profiling(true);
        }
        let t = Instant::now();
        let out = model.forward(&x, true)?;
        sync()?;
        let t1 = Instant::now();
        let loss = criterion.loss(&out, &targets, [imgsz, imgsz])?;
        sync()?;
        let t2 = Instant::now();
        loss.total.backward()?;
        drop(out);
        sync()?;
        let t3 = Instant::now();
        opt.step()?;
        opt.zero_grad();
        sync()?;
        let t4 = Instant::now();
        last_loss = loss.total.item()?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
            for (p, (a, b)) in phases
                .iter_mut()
                .zip([(t, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                p.push((b - a).as_secs_f64() * 1e3);
            }
        }
    }
    yolo_tensor::set_backward_profiling(false);
    if a.profile && !a.json {
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let names = ["forward", "loss", "backward", "optimiser"];
        for (name, v) in names.iter().zip(phases.iter_mut()) {
            println!("{name:>10}: median {:.1} ms", med(v));
        }
        println!("backward per op (all {} runs, ms per run):", a.runs);
        for (op, calls, secs) in yolo_tensor::take_backward_profile() {
            println!(
                "{op:>24} {:8.1} ms {:6} calls",
                secs * 1e3 / a.runs as f64,
                calls / a.runs as u64
            );
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    let threads = yolo_tensor::num_threads();
    let peak = peak_rss_mib();
    let peak_dev = peak_device_mib(device);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"mode": "train_step", "imgsz": imgsz, "batch": a.batch, "threads": threads, "runs": a.runs, "median_ms": median, "min_ms": min, "peak_rss_mib": peak, "loss": last_loss, "device": device.to_string(), "peak_device_mib": peak_dev})
        );
    } else {
        println!("train step {imgsz}×{imgsz} batch {} on {}: median {median:.1} ms, min {min:.1} ms over {} runs, peak RSS {peak:.0} MiB{} (loss {last_loss:.3})", a.batch, where_text(device, threads), a.runs, peak_text(peak_dev));
    }
    Ok(())
}
