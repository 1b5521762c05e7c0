//! `yolo-forge`: build, inspect and benchmark YOLOv5/YOLOv7 models.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

#[derive(Parser)]
#[command(
    name = "yolo-forge",
    version,
    about = "Build, train and run YOLOv5/YOLOv7 detectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's layer table and summary (upstream `model.info()`).
    Info(InfoArgs),
    /// Time the forward pass of a model on random input.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model YAML (e.g. configs/models/yolov5s.yaml).
    #[arg(long, alias = "cfg")]
    model: Option<PathBuf>,
    /// Weights file (.safetensors); holds its own YAML.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Number of classes (overrides the YAML's nc).
    #[arg(long)]
    nc: Option<usize>,
}

#[derive(Args)]
struct InfoArgs {
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

#[derive(Args)]
struct BenchArgs {
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
    /// Timed runs (after 2 warm-up runs).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Do not fuse Conv+BN before timing.
    #[arg(long)]
    no_fuse: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn load_model(a: &ModelArgs) -> Result<Model> {
    let mut model = match (&a.model, &a.weights) {
        (_, Some(w)) => Model::from_safetensors(w)
            .with_context(|| format!("loading weights {}", w.display()))?,
        (Some(m), None) => {
            let mut cfg = ModelConfig::from_file(m)?;
            if let Some(nc) = a.nc {
                cfg.nc = nc;
            }
            Model::new(cfg, 0)?
        }
        (None, None) => {
            bail!("give a model YAML with --model (or --cfg) or a weights file with --weights")
        }
    };
    if let Some(nc) = a.nc {
        if a.weights.is_some() && nc != model.config.nc {
            bail!(
                "--nc {nc} differs from the weights' {} classes",
                model.config.nc
            );
        }
        model.names.truncate(nc);
    }
    Ok(model)
}

fn info(a: InfoArgs) -> Result<()> {
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

/// 7235389 → "7,235,389", as upstream prints counts.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bench(a: BenchArgs) -> Result<()> {
    if let Some(t) = a.threads {
        yolo_tensor::set_num_threads(t);
    }
    if a.runs == 0 || a.batch == 0 || a.imgsz == 0 {
        bail!("--runs, --batch and --imgsz must be positive");
    }
    let mut model = load_model(&a.model)?;
    if !a.no_fuse {
        model.fuse()?;
    }
    let stride = model.stride.iter().cloned().fold(32.0f32, f32::max) as usize;
    let imgsz = a.imgsz.div_ceil(stride) * stride;
    if imgsz != a.imgsz {
        tracing::warn!(
            "--imgsz {} is not a multiple of the max stride {stride}; using {imgsz}",
            a.imgsz
        );
    }
    let n = a.batch * model.config.ch * imgsz * imgsz;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect(),
        &[a.batch, model.config.ch, imgsz, imgsz],
        Device::Cpu,
    )?;
    let _g = yolo_tensor::no_grad();
    let mut times = Vec::with_capacity(a.runs);
    for i in 0..a.runs + 2 {
        let t = Instant::now();
        let out = model.forward(&x, false)?;
        std::hint::black_box(out);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    let threads = yolo_tensor::num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"imgsz": imgsz, "batch": a.batch, "threads": threads, "fused": !a.no_fuse, "runs": a.runs, "median_ms": median, "min_ms": min})
        );
    } else {
        println!("forward {imgsz}×{imgsz} batch {} on {threads} thread(s){}: median {median:.1} ms, min {min:.1} ms over {} runs", a.batch, if a.no_fuse { "" } else { ", fused" }, a.runs);
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Info(a) => info(a),
        Command::Bench(a) => bench(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
