//! Times a CPU training step (forward in training mode, ComputeLoss, backward, SGD step, as
//! `yolo-forge bench --train`) with a kernel switch on and off, alternating in one process:
//! on a shared, noisy host two separate runs differ by more than most kernel changes.
//!
//! ```text
//! YOLO_THREADS=1 cargo run --release -p yolo-cli --example ab_step -- --switch direct --rounds 12
//! ```
//!
//! `--switch direct`: the direct convolution kernels (`YOLO_CONV_DIRECT`); `wgrad`: the direct
//! weight gradient alone; `winograd`: Winograd for stride-1 3×3 convolutions
//! (`YOLO_CONV_WINOGRAD`); `pointwise`: the 1×1 convolutions' own GEMM (`YOLO_CONV_GEMM`).
//! Prints the median and minimum step time of each setting and their ratio (on / off).

use anyhow::{bail, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};
use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};

#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

#[derive(Parser)]
struct Args {
    /// Model YAML.
    #[arg(long, default_value = "configs/models/yolov5n.yaml")]
    cfg: PathBuf,
    /// Number of classes.
    #[arg(long, default_value_t = 80)]
    nc: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Input size (square).
    #[arg(long, default_value_t = 320)]
    imgsz: usize,
    /// Timed steps per setting (after one untimed step each).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// What to switch: `direct`, `wgrad`, `winograd` or `pointwise`.
    #[arg(long, default_value = "direct")]
    switch: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a = Args::parse();
    let set: fn(bool) = match a.switch.as_str() {
        "direct" => yolo_tensor::set_direct_conv,
        "wgrad" => yolo_tensor::set_direct_wgrad,
        "pointwise" => yolo_tensor::set_pointwise_gemm,
        "winograd" => yolo_tensor::set_winograd,
        s => bail!("--switch {s}: expected direct, wgrad, winograd or pointwise"),
    };
    let mut cfg = ModelConfig::from_file(&a.cfg)?;
    cfg.nc = a.nc;
    let model = Model::new(cfg, 0)?;
    let hyp = yolo_train::Hyp::default();
    let criterion = yolo_train::Criterion::new(&model, &hyp, a.imgsz, false)?;
    let mut opt = Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        hyp.lr0 as f64,
        hyp.momentum as f64,
        hyp.weight_decay as f64,
    );
    let n = a.batch * 3 * a.imgsz * a.imgsz;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect(),
        &[a.batch, 3, a.imgsz, a.imgsz],
        Device::Cpu,
    )?;
    // Four boxes per image, fixed.
    let mut rows = Vec::new();
    for b in 0..a.batch {
        for j in 0..4 {
            let f = (b * 4 + j) as f32;
            let c = (b * 4 + j) % a.nc.max(1);
            rows.extend_from_slice(&[
                b as f32,
                c as f32,
                0.2 + 0.15 * (j as f32),
                0.3 + 0.1 * (f % 5.0),
                0.1 + 0.05 * (j as f32),
                0.12 + 0.04 * (f % 3.0),
            ]);
        }
    }
    let targets = Tensor::from_vec(rows, &[a.batch * 4, 6], Device::Cpu)?;
    let mut step = || -> Result<f64> {
        let t = Instant::now();
        let out = model.forward(&x, true)?;
        let loss = criterion.loss(&out, &targets, [a.imgsz, a.imgsz])?;
        loss.total.backward()?;
        drop(out);
        opt.step()?;
        opt.zero_grad();
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let (mut on, mut off) = (vec![], vec![]);
    for i in 0..2 * (a.rounds + 1) {
        // on, off, off, on, on, off, …: each setting runs first in half of the pairs.
        let first_on = (i / 2) % 2 == 0;
        let is_on = (i % 2 == 0) == first_on;
        set(is_on);
        let ms = step()?;
        if i >= 2 {
            if is_on {
                on.push(ms)
            } else {
                off.push(ms)
            }
        }
    }
    set(true);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (mon, moff) = (min(&on), min(&off));
    let (don, doff) = (median(on), median(off));
    println!(
        "{} on: median {don:.1} ms, min {mon:.1} | off: median {doff:.1} ms, min {moff:.1} | on/off {:.3} (median), {:.3} (min)",
        a.switch,
        don / doff,
        mon / moff
    );
    Ok(())
}
