//! `yolo-forge train`: upstream train.py's flags; with no `--data`, a built-in synthetic
//! dataset generated into a cache folder.

use crate::common::{print_val_table, resolve_config, train_device, BUILTIN_HYPS, BUILTIN_MODELS};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use yolo_train::trainer::increment_path;
use yolo_train::{Hyp, TrainOptions};

/// `train` flags (names as upstream train.py).
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Dataset YAML; omitted: the built-in synthetic shapes dataset (generated once into the
    /// cache folder, see `yolo-forge dataset synth`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model YAML, a path or a built-in name (yolov5n.yaml, yolov5s.yaml, yolov5m.yaml,
    /// yolov7-tiny.yaml).
    #[arg(long, default_value = "yolov5n.yaml")]
    pub cfg: PathBuf,
    /// Initial weights (.safetensors): tensors whose name and shape match are loaded.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Hyper-parameter YAML, a path or a built-in name (default hyp.scratch-low.yaml;
    /// hyp.synth.yaml on the built-in dataset).
    #[arg(long)]
    pub hyp: Option<PathBuf>,
    /// Epochs (default 100; 24 on the built-in dataset).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Train and val image size in pixels (default 640; 256 on the built-in dataset).
    #[arg(long, visible_aliases = ["img", "img-size"])]
    pub imgsz: Option<usize>,
    /// Device: cpu, a CUDA ordinal (0), or a list (0,1,2,3: one process per GPU under
    /// torchrun; without it the first is used).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Mixed precision on CUDA (upstream's AMP: bf16 convolution and matrix-product inputs,
    /// f32 accumulation, a dynamic loss scaler). Off by default; the CPU trains in f32.
    #[arg(long)]
    pub amp: bool,
    /// Synchronised batch norm over all replicas (upstream's SyncBatchNorm; only with more
    /// than one process under torchrun).
    #[arg(long)]
    pub sync_bn: bool,
    /// Data loader worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Project folder.
    #[arg(long, default_value = "runs/train")]
    pub project: PathBuf,
    /// Run name (the folder `project/name`, `name2`, …).
    #[arg(long, default_value = "exp")]
    pub name: String,
    /// Reuse `project/name` instead of incrementing.
    #[arg(long)]
    pub exist_ok: bool,
    /// Resume from a checkpoint (alone: the most recent `last.safetensors` under the project).
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    pub resume: Option<PathBuf>,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cache decoded images: `ram` (the default of a bare `--cache`) or `disk` (next to the
    /// images, as `<name>.yfraw`).
    #[arg(long, num_args = 0..=1, default_missing_value = "ram")]
    pub cache: Option<String>,
    /// Optimiser: SGD, Adam or AdamW.
    #[arg(long, default_value = "SGD")]
    pub optimizer: String,
    /// Cosine learning-rate schedule.
    #[arg(long)]
    pub cos_lr: bool,
    /// Early-stopping patience (epochs without improvement).
    #[arg(long, default_value_t = 100)]
    pub patience: usize,
    /// Validate only the final epoch.
    #[arg(long)]
    pub noval: bool,
    /// Save only the final checkpoint.
    #[arg(long)]
    pub nosave: bool,
    /// Train multi-class data as single-class.
    #[arg(long)]
    pub single_cls: bool,
    /// Disable AutoAnchor.
    #[arg(long)]
    pub noautoanchor: bool,
    /// AutoAnchor k-means seeded with k-means++.
    #[arg(long)]
    pub kmeans_pp: bool,
    /// Also save `weights/epoch<N>.safetensors` every N epochs (0 = off).
    #[arg(long, default_value_t = 0)]
    pub save_period: usize,
    /// Do not write plots.
    #[arg(long)]
    pub noplots: bool,
    /// Label smoothing epsilon (overrides the hyp file).
    #[arg(long)]
    pub label_smoothing: Option<f32>,
    /// CPU threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Vary the image size ±50 % per batch (a random multiple of the max stride).
    #[arg(long)]
    pub multi_scale: bool,
    /// Stop every epoch after this many batches (quick experiments, tests).
    #[arg(long, default_value_t = 0)]
    pub max_batches: usize,
    /// Built-in dataset: training images.
    #[arg(long, default_value_t = 600)]
    pub synth_train: usize,
    /// Built-in dataset: validation images.
    #[arg(long, default_value_t = 100)]
    pub synth_val: usize,
}

/// Where built-in data goes: `$YOLO_FORGE_CACHE`, else `$XDG_CACHE_HOME/yolo-forge`, else
/// `~/.cache/yolo-forge`, else `./datasets`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("YOLO_FORGE_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("yolo-forge");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/yolo-forge");
    }
    PathBuf::from("datasets")
}

/// Generates (once) the built-in synthetic dataset and returns its YAML.
pub fn builtin_dataset(train: usize, val: usize, imgsz: u32, seed: u64) -> Result<PathBuf> {
    let out = cache_dir().join(format!("synth-3c-{train}-{val}-{imgsz}-s{seed}"));
    let yaml = out.join("data.yaml");
    let done = out.join(".complete");
    if yaml.exists() && done.exists() {
        return Ok(yaml);
    }
    tracing::info!(
        "generating the built-in synthetic dataset into {}",
        out.display()
    );
    let cfg = yolo_data::SynthConfig {
        out: out.clone(),
        classes: vec!["circle".into(), "square".into(), "triangle".into()],
        train,
        val,
        imgsz,
        seed,
        ..Default::default()
    };
    let y = yolo_data::generate(&cfg)?;
    std::fs::write(&done, b"ok").with_context(|| format!("writing {}", done.display()))?;
    Ok(y)
}

/// The most recent `last.safetensors` under `root`.
fn latest_last(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let entries = std::fs::read_dir(root).ok()?;
    for e in entries.flatten() {
        let p = e.path().join("weights/last.safetensors");
        if let Ok(m) = p.metadata().and_then(|m| m.modified()) {
            if best.as_ref().is_none_or(|(t, _)| m > *t) {
                best = Some((m, p));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// `yolo-forge train`. Under torchrun (WORLD_SIZE > 1) every process runs this as one rank of a
/// data-parallel job: `--batch-size` is the total, and only rank 0 writes the run.
pub fn train(a: TrainArgs) -> Result<()> {
    let env = yolo_dist::DistEnv::from_env()?;
    let comm = crate::dist_setup::communicator(&env, &a.device)?;
    let main = comm.rank() == 0;
    let device = train_device(&a.device, env.is_distributed().then_some(env.local_rank))?;
    // Ctrl-C: finish the current batch, keep the checkpoints, exit 130
    let _ = ctrlc::set_handler(|| {
        yolo_train::trainer::STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    if let Some(c) = &a.cache {
        if c != "ram" && c != "disk" {
            bail!("--cache {c}: expected `ram` or `disk`");
        }
    }
    if let Some(r) = &a.resume {
        let ck = if r.as_os_str() == "latest" {
            latest_last(&a.project).with_context(|| {
                format!(
                    "--resume: no last.safetensors under {}",
                    a.project.display()
                )
            })?
        } else {
            r.clone()
        };
        if !ck.exists() {
            bail!("--resume: checkpoint {} does not exist", ck.display());
        }
        // the run's own options come from the checkpoint (--amp included); the device is
        // this command's
        let opts = TrainOptions {
            threads: a.threads.unwrap_or(0),
            progress: true,
            device,
            ..TrainOptions::default()
        };
        let s = yolo_train::train_distributed(&opts, Some(&ck), std::sync::Arc::from(comm))?;
        return report(&s, main);
    }
    let builtin = a.data.is_none();
    let imgsz = a.imgsz.unwrap_or(if builtin { 256 } else { 640 });
    let epochs = a.epochs.unwrap_or(if builtin { 24 } else { 100 });
    let hyp_file = a.hyp.clone().unwrap_or_else(|| {
        PathBuf::from(if builtin {
            "hyp.synth.yaml"
        } else {
            "hyp.scratch-low.yaml"
        })
    });
    let data = match &a.data {
        Some(d) => {
            if !d.exists() {
                bail!("dataset file {} does not exist", d.display());
            }
            d.clone()
        }
        // rank 0 generates it, the others then find it complete
        None if main => {
            let d = builtin_dataset(a.synth_train, a.synth_val, 256, 0);
            comm.barrier()?;
            d?
        }
        None => {
            comm.barrier()?;
            builtin_dataset(a.synth_train, a.synth_val, 256, 0)?
        }
    };
    let save_dir = increment_path(&a.project.join(&a.name), a.exist_ok);
    // built-in configs are written into the run folder; other ranks write nothing there and
    // read private copies instead
    let spill_dir = if main {
        std::fs::create_dir_all(&save_dir)
            .with_context(|| format!("creating {}", save_dir.display()))?;
        save_dir.clone()
    } else {
        std::env::temp_dir().join(format!(
            "yolo-forge-rank{}-{}",
            comm.rank(),
            std::process::id()
        ))
    };
    let cfg = resolve_config(&a.cfg, BUILTIN_MODELS, &spill_dir, "model")?;
    let hyp_path = resolve_config(&hyp_file, BUILTIN_HYPS, &spill_dir, "hyp")?;
    let mut hyp = Hyp::load(&hyp_path)?;
    if let Some(ls) = a.label_smoothing {
        hyp.label_smoothing = ls;
    }
    if let Some(w) = &a.weights {
        if !w.exists() {
            bail!("weights file {} does not exist", w.display());
        }
    }
    let opts = TrainOptions {
        data,
        cfg: Some(cfg),
        weights: a.weights.clone(),
        hyp,
        epochs,
        batch_size: a.batch_size,
        imgsz,
        workers: a.workers,
        save_dir,
        seed: a.seed,
        cache_ram: a.cache.as_deref() == Some("ram"),
        cache_disk: a.cache.as_deref() == Some("disk"),
        optimizer: a.optimizer.clone(),
        cos_lr: a.cos_lr,
        patience: a.patience,
        noval: a.noval,
        nosave: a.nosave,
        single_cls: a.single_cls,
        noautoanchor: a.noautoanchor,
        kmeans_pp: a.kmeans_pp,
        save_period: a.save_period,
        max_batches: a.max_batches,
        threads: a.threads.unwrap_or(0),
        progress: true,
        multi_scale: a.multi_scale,
        plots: !a.noplots,
        device,
        amp: a.amp,
        sync_bn: a.sync_bn,
    };
    let s = yolo_train::train_distributed(&opts, None, std::sync::Arc::from(comm));
    if !main {
        let _ = std::fs::remove_dir_all(&spill_dir);
    }
    report(&s?, main)
}

/// Prints the run's summary (rank 0 only: other ranks of a data-parallel job stay quiet).
fn report(s: &yolo_train::TrainSummary, main: bool) -> Result<()> {
    if s.interrupted {
        eprintln!(
            "interrupted: {} holds the last completed epoch; continue with `yolo-forge train --resume {}`",
            s.last.display(),
            s.last.display()
        );
        std::process::exit(130);
    }
    if !main {
        return Ok(());
    }
    if let Some(r) = &s.final_val {
        println!("Validating {}...", s.best.display());
        print_val_table(&s.names, r, true);
    }
    if let Some(e) = s.epochs.last() {
        println!(
            "epochs run {}, last epoch {}: mAP50 {:.3}, mAP50-95 {:.3}; best fitness {:.4}",
            s.epochs.len(),
            e.epoch,
            e.metrics[2],
            e.metrics[3],
            s.best_fitness
        );
    }
    println!("Results saved to {}", s.save_dir.display());
    Ok(())
}
