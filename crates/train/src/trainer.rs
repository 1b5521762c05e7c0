//! The training loop as upstream `train.py`: data, model, AutoAnchor, SGD/Adam/AdamW in three
//! groups with nominal batch 64 (gradient accumulation, weight-decay scaling), warmup, linear or
//! cosine LR, ModelEMA, gradient-norm clipping, validation of the EMA each epoch, fitness,
//! `last`/`best` checkpoints written atomically, early stopping and `--resume`; and its DDP mode,
//! one replica per rank of a data-parallel job ([`train_distributed`]). The model trains on
//! `TrainOptions::device` (batches are moved there; NMS and metrics run on the host), with
//! mixed precision and a dynamic loss scaler under `--amp` on CUDA.

use crate::amp::{GradScaler, MixedPrecisionGuard, ScalerState};
use crate::autoanchor::{apply_anchors, check_anchors, AutoAnchorConfig};
use crate::checkpoint::{assign_named, Checkpoint};
use crate::criterion::Criterion;
use crate::ddp::DataParallel;
use crate::ema::ModelEma;
use crate::error::{Result, TrainError};
use crate::hyp::Hyp;
use crate::metrics::DetectionMetrics;
use crate::optim::{scaled_weight_decay, Optimizer, OptimizerKind, ParamGroups};
use crate::predfiles::write_file_atomic;
use crate::schedule::{nominal_accumulate, warmup_iters, warmup_state, LrSchedule, WarmupHyp};
use crate::validate::{ValBatch, ValReport, ValSettings, Validator};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use yolo_data::{Batch, Dataset, DatasetConfig, DatasetOptions, Loader};
use yolo_dist::{Communicator, SingleProcess};
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

/// Gradient-norm clipping bound (upstream `clip_grad_norm_(…, max_norm=10.0)`).
pub const MAX_GRAD_NORM: f64 = 10.0;
/// The columns of `results.csv`, as upstream writes them.
pub const RESULTS_COLUMNS: [&str; 14] = [
    "epoch",
    "train/box_loss",
    "train/obj_loss",
    "train/cls_loss",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    "val/box_loss",
    "val/obj_loss",
    "val/cls_loss",
    "x/lr0",
    "x/lr1",
    "x/lr2",
];

/// The run's options (upstream `opt`), saved as `opt.yaml` and in checkpoints for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainOptions {
    /// Dataset YAML.
    pub data: PathBuf,
    /// Model YAML (`--cfg`); with `--weights` only, the weights' own YAML.
    pub cfg: Option<PathBuf>,
    /// Initial weights (`--weights`): matching tensors are loaded (transfer learning).
    pub weights: Option<PathBuf>,
    /// Hyper-parameters (from `--hyp`).
    pub hyp: Hyp,
    /// Epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Training and validation image size (rounded up to a multiple of the max stride).
    pub imgsz: usize,
    /// Loader worker threads.
    pub workers: usize,
    /// Run folder (`runs/train/exp…`).
    pub save_dir: PathBuf,
    /// Seed of model init, shuffling and augmentation.
    pub seed: u64,
    /// Keep decoded images in RAM (`--cache ram`).
    pub cache_ram: bool,
    /// Keep decoded images on disk next to the images (`--cache disk`).
    pub cache_disk: bool,
    /// `SGD`, `Adam` or `AdamW`.
    pub optimizer: String,
    /// Cosine LR schedule.
    pub cos_lr: bool,
    /// Early-stopping patience in epochs without fitness improvement (0 = off).
    pub patience: usize,
    /// Validate only after the last epoch.
    pub noval: bool,
    /// Save only the final checkpoint.
    pub nosave: bool,
    /// Train as a single class.
    pub single_cls: bool,
    /// Skip the AutoAnchor check.
    pub noautoanchor: bool,
    /// AutoAnchor k-means with k-means++ seeding instead of upstream's plain k-means.
    pub kmeans_pp: bool,
    /// Also save `weights/epoch<N>.safetensors` every this many epochs (0 = off).
    pub save_period: usize,
    /// Stop each epoch after this many batches (quick tests and benchmarks; 0 = all).
    pub max_batches: usize,
    /// CPU threads for the tensor kernels (0 = default).
    pub threads: usize,
    /// Draw progress bars.
    pub progress: bool,
    /// Multi-scale training (`--multi-scale`): each batch resized to a random size in
    /// [imgsz·0.5, imgsz·1.5] (a multiple of the max stride).
    pub multi_scale: bool,
    /// Write plots (labels.jpg, train_batch*.jpg, results.png, val_batch*, confusion matrix,
    /// PR/F1/P/R curves).
    pub plots: bool,
    /// Device to train on (`--device`). Not saved: a resumed run trains where it is told to.
    #[serde(skip)]
    pub device: Device,
    /// Mixed precision (`--amp`): bf16 convolution and matrix-product inputs with a dynamic
    /// loss scaler on a CUDA device; the CPU trains in f32 whatever this says.
    pub amp: bool,
    /// Synchronised batch norm (`--sync-bn`): with more than one replica, batch statistics are
    /// taken over the whole global batch (ignored in a single process, as upstream).
    #[serde(default)]
    pub sync_bn: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            data: PathBuf::new(),
            cfg: None,
            weights: None,
            hyp: Hyp::default(),
            epochs: 100,
            batch_size: 16,
            imgsz: 640,
            workers: 2,
            save_dir: PathBuf::from("runs/train/exp"),
            seed: 0,
            cache_ram: false,
            cache_disk: false,
            optimizer: "SGD".into(),
            cos_lr: false,
            patience: 100,
            noval: false,
            nosave: false,
            single_cls: false,
            noautoanchor: false,
            kmeans_pp: false,
            save_period: 0,
            max_batches: 0,
            threads: 0,
            progress: true,
            multi_scale: false,
            plots: true,
            device: Device::Cpu,
            amp: false,
            sync_bn: false,
        }
    }
}

/// One epoch's results (a `results.csv` row).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochResult {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Mean training losses (box, obj, cls).
    pub train_loss: [f64; 3],
    /// Precision, recall, mAP@0.5, mAP@0.5:0.95 of the EMA model.
    pub metrics: [f64; 4],
    /// Validation losses (box, obj, cls).
    pub val_loss: [f64; 3],
    /// Learning rate per optimiser group during the epoch's last batch.
    pub lr: [f64; 3],
    /// Fitness = 0.1·mAP@0.5 + 0.9·mAP@0.5:0.95.
    pub fitness: f64,
    /// Seconds the epoch took (training + validation).
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The run folder.
    pub save_dir: PathBuf,
    /// Every epoch run by this call.
    pub epochs: Vec<EpochResult>,
    /// Best fitness over the whole run.
    pub best_fitness: f64,
    /// The final validation of the best checkpoint (per class), if validation ran.
    pub final_val: Option<ValReport>,
    /// `weights/last.safetensors`.
    pub last: PathBuf,
    /// `weights/best.safetensors`.
    pub best: PathBuf,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Class names.
    pub names: Vec<String>,
    /// Whether [`STOP`] (Ctrl-C) ended the run.
    pub interrupted: bool,
    /// The training model's final tensors (parameters and buffers) by state-dict name.
    pub weights: Vec<(String, Tensor)>,
}

/// Progress and resume bookkeeping stored in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainState {
    epoch: usize,
    best_fitness: f64,
    ema_updates: u64,
    last_opt_step: i64,
    opt: TrainOptions,
    /// The loss scaler of an `--amp` run on CUDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scaler: Option<ScalerState>,
}

/// Set by a Ctrl-C handler: the loop stops after the current batch (checkpoints stay valid).
pub static STOP: AtomicBool = AtomicBool::new(false);

fn cfg_err(what: &'static str, detail: impl Into<String>) -> TrainError {
    TrainError::Invalid {
        what,
        detail: detail.into(),
    }
}

/// Upstream `increment_path`: `base`, else `base2`, `base3`, … (the first that does not exist);
/// `base` itself when `exist_ok`.
pub fn increment_path(base: &Path, exist_ok: bool) -> PathBuf {
    if exist_ok || !base.exists() {
        return base.to_path_buf();
    }
    let s = base.as_os_str().to_string_lossy().to_string();
    (2..)
        .map(|n| PathBuf::from(format!("{s}{n}")))
        .find(|p| !p.exists())
        .expect("unbounded search")
}

/// Rounds `imgsz` up to a multiple of the stride `gs` (at least 2·gs?, upstream floor = gs).
pub fn check_img_size(imgsz: usize, gs: usize) -> usize {
    let s = imgsz.div_ceil(gs).max(1) * gs;
    if s != imgsz {
        tracing::warn!("--img-size {imgsz} must be a multiple of max stride {gs}, updating to {s}");
    }
    s
}

/// The data of a run: class names, training and validation datasets and loaders.
pub struct RunData {
    /// Class names (one `item` with `--single-cls`).
    pub names: Vec<String>,
    /// Training loader (augmenting, shuffled).
    pub train: Loader,
    /// Validation loader (rectangular batches), if the dataset has a val split.
    pub val: Option<Loader>,
    /// The training dataset.
    pub train_set: Arc<Dataset>,
}

/// The class names a run trains: the dataset's, or one `item` with `--single-cls`.
pub fn run_names(dc: &DatasetConfig, single_cls: bool) -> Vec<String> {
    if single_cls {
        vec!["item".to_string()]
    } else {
        dc.names.clone()
    }
}

/// Builds the loaders of a run as `train.py` does, for the dataset `dc` (from `opts.data`).
pub fn build_data(
    opts: &TrainOptions,
    dc: &DatasetConfig,
    stride: usize,
    imgsz: usize,
) -> Result<RunData> {
    build_run_data(opts, dc, stride, imgsz, true)
}

/// [`build_data`], with or without the validation loader (data-parallel ranks other than 0
/// never validate).
fn build_run_data(
    opts: &TrainOptions,
    dc: &DatasetConfig,
    stride: usize,
    imgsz: usize,
    with_val: bool,
) -> Result<RunData> {
    let names = run_names(dc, opts.single_cls);
    let nc = dc.nc();
    let aug = opts.hyp.aug();
    let train_opts = DatasetOptions {
        imgsz,
        stride,
        augment: true,
        rect: false,
        batch_size: opts.batch_size,
        aug,
        cache_ram: opts.cache_ram,
        cache_disk: opts.cache_disk,
        single_cls: opts.single_cls,
        nc: Some(nc),
        pad: 0.0,
        label_cache: true,
    };
    if dc.train.is_empty() {
        return Err(cfg_err(
            "dataset",
            format!("{}: no `train` split", opts.data.display()),
        ));
    }
    let train_set = Arc::new(Dataset::new(&dc.train, train_opts.clone())?);
    let train = Loader::new(
        train_set.clone(),
        opts.batch_size,
        true,
        opts.seed,
        opts.workers,
    );
    let val = if dc.val.is_empty() || !with_val {
        None
    } else {
        let vb = opts.batch_size * 2;
        let vs = Dataset::new(
            &dc.val,
            DatasetOptions {
                augment: false,
                rect: true,
                batch_size: vb,
                pad: 0.5,
                ..train_opts
            },
        )?;
        Some(Loader::new(
            Arc::new(vs),
            vb,
            false,
            opts.seed,
            opts.workers,
        ))
    };
    Ok(RunData {
        names,
        train,
        val,
        train_set,
    })
}

/// Validates `model` on every batch of `loader`.
pub fn validate_loader(
    model: &Model,
    loader: &Loader,
    criterion: Option<&Criterion>,
    nc: usize,
    settings: ValSettings,
    mut on_batch: impl FnMut(usize, &Batch, &[crate::validate::ImageResult]),
) -> Result<(ValReport, crate::metrics::ConfusionMatrix)> {
    let mut v = Validator::new(nc, settings);
    for (bi, batch) in loader.epoch(0).enumerate() {
        let batch = batch?;
        let (h, w) = (
            batch.images.shape()[2] as f32,
            batch.images.shape()[3] as f32,
        );
        let content = batch
            .shapes
            .iter()
            .map(|s| {
                let (h0, w0) = s.orig_hw;
                let b = s.to_input([0.0, 0.0, w0 as f32, h0 as f32]);
                [b[0].max(0.0), b[1].max(0.0), b[2].min(w), b[3].min(h)]
            })
            .collect();
        let vb = ValBatch {
            images: &batch.images,
            targets: &batch.targets,
            content,
        };
        let r = v.run_batch(model, &vb, criterion)?;
        on_batch(bi, &batch, &r);
    }
    Ok((v.finish()?, v.confusion.clone()))
}

fn metrics_row(m: &DetectionMetrics) -> [f64; 4] {
    [m.mp, m.mr, m.map50, m.map]
}

fn write_results_csv(path: &Path, rows: &[EpochResult]) -> Result<()> {
    let mut s = String::new();
    let header: Vec<String> = RESULTS_COLUMNS.iter().map(|c| format!("{c:>20}")).collect();
    s.push_str(&header.join(","));
    s.push('\n');
    for r in rows {
        let mut cells = vec![format!("{:>20}", r.epoch)];
        for v in r
            .train_loss
            .iter()
            .chain(&r.metrics)
            .chain(&r.val_loss)
            .chain(&r.lr)
        {
            cells.push(format!("{:>20.5}", v));
        }
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    write_file_atomic(path, s.as_bytes())
}

fn read_results_csv(path: &Path) -> Vec<EpochResult> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split(',')
                .map(|c| c.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .ok()?;
            (v.len() == 14).then(|| EpochResult {
                epoch: v[0] as usize,
                train_loss: [v[1], v[2], v[3]],
                metrics: [v[4], v[5], v[6], v[7]],
                val_loss: [v[8], v[9], v[10]],
                lr: [v[11], v[12], v[13]],
                fitness: crate::metrics::fitness(v[4], v[5], v[6], v[7]),
                seconds: 0.0,
            })
        })
        .collect()
}

/// A batch's images as RGB u8 HWC buffers (for plots).
pub fn batch_rgb(images: &yolo_tensor::Tensor) -> Vec<(u32, u32, Vec<u8>)> {
    let s = images.shape();
    let (b, h, w) = (s[0], s[2], s[3]);
    let v = images.to_vec();
    let plane = h * w;
    (0..b)
        .map(|k| {
            let base = k * 3 * plane;
            let mut rgb = vec![0u8; 3 * plane];
            for i in 0..plane {
                for c in 0..3 {
                    rgb[i * 3 + c] =
                        (v[base + c * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
            (w as u32, h as u32, rgb)
        })
        .collect()
}

/// Target rows of a batch as plot boxes per image (pixels).
pub fn target_boxes(
    targets: &yolo_tensor::Tensor,
    n: usize,
    h: usize,
    w: usize,
) -> Vec<Vec<crate::plots::ImageBox>> {
    let mut out = vec![Vec::new(); n];
    for t in targets.to_vec().chunks_exact(6) {
        let k = t[0] as usize;
        if k < n {
            let (cx, cy, bw, bh) = (
                t[2] * w as f32,
                t[3] * h as f32,
                t[4] * w as f32,
                t[5] * h as f32,
            );
            out[k].push((
                [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
                t[1] as usize,
                None,
            ));
        }
    }
    out
}

/// Writes `val_batch<bi>_labels.jpg` and `val_batch<bi>_pred.jpg` into `dir`: a validation
/// batch with its labels, and with the detections of `results` (see [`Validator::run_batch`]).
pub fn plot_val_batch(
    batch: &Batch,
    results: &[crate::validate::ImageResult],
    names: &[String],
    dir: &Path,
    bi: usize,
) -> Result<()> {
    let s = batch.images.shape();
    let labels = target_boxes(&batch.targets, s[0], s[2], s[3]);
    let preds: Vec<Vec<crate::plots::ImageBox>> = results
        .iter()
        .map(|r| {
            r.detections
                .iter()
                .map(|d| ([d[0], d[1], d[2], d[3]], d[5] as usize, Some(d[4])))
                .collect()
        })
        .collect();
    for (tag, b) in [("labels", &labels), ("pred", &preds)] {
        plot_batch(
            batch,
            b,
            names,
            &dir.join(format!("val_batch{bi}_{tag}.jpg")),
        )?;
    }
    Ok(())
}

/// Writes a grid image of a batch with `boxes` per image (see [`crate::plots::plot_images`]).
pub fn plot_batch(
    batch: &Batch,
    boxes: &[Vec<crate::plots::ImageBox>],
    names: &[String],
    out: &Path,
) -> Result<()> {
    let imgs = batch_rgb(&batch.images);
    let views: Vec<crate::plots::ImageView<'_>> = imgs
        .iter()
        .map(|(w, h, rgb)| crate::plots::ImageView {
            width: *w,
            height: *h,
            rgb,
        })
        .collect();
    crate::plots::plot_images(&views, boxes, names, out, 16).map(|_| ())
}

fn build_model(opts: &TrainOptions, nc: usize, names: &[String]) -> Result<Model> {
    let initial = opts.weights.as_ref().map(Checkpoint::load).transpose()?;
    let mut model = match (&opts.cfg, &opts.weights, &initial) {
        (Some(cfg), _, _) => {
            let mut c = ModelConfig::from_file(cfg)?;
            c.nc = nc;
            Model::new(c, opts.seed)?
        }
        (None, Some(w), Some(ck)) => {
            if ck.yaml.is_empty() {
                return Err(cfg_err(
                    "weights",
                    format!("{}: no model YAML inside; pass --cfg", w.display()),
                ));
            }
            let mut c = ModelConfig::from_yaml(&ck.yaml)?;
            c.nc = nc;
            Model::new(c, opts.seed)?
        }
        _ => {
            return Err(cfg_err(
                "model",
                "give a model YAML with --cfg or initial weights with --weights",
            ))
        }
    };
    model.names = names.to_vec();
    if let (Some(w), Some(ck)) = (&opts.weights, &initial) {
        // transfer: every tensor whose name and shape match (upstream intersect_dicts,
        // anchors excluded so the model's own — or AutoAnchor's — stay)
        let named = model.named_tensors();
        let mut loaded = 0;
        for (n, t, _) in &named {
            if n.ends_with(".anchors") {
                continue;
            }
            if let Some((_, src)) = ck.ema.iter().find(|(m, _)| m == n) {
                if src.shape() == t.shape() {
                    t.assign(src)?;
                    loaded += 1;
                }
            }
        }
        tracing::info!(
            "Transferred {loaded}/{} items from {}",
            named.len(),
            w.display()
        );
    }
    Ok(model)
}

fn optimizer_kind(name: &str) -> Result<OptimizerKind> {
    name.parse::<OptimizerKind>().map_err(|_| {
        cfg_err(
            "--optimizer",
            format!("`{name}`: expected SGD, Adam or AdamW"),
        )
    })
}

fn progress_bar(n: usize, on: bool) -> indicatif::ProgressBar {
    if !on {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {wide_bar} {pos}/{len} [{elapsed}<{eta}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// Trains as `train.py` does and returns the run's summary. With `resume`, the options are
/// those stored in the checkpoint and training continues after its epoch.
pub fn train(opts: &TrainOptions, resume: Option<&Path>) -> Result<TrainSummary> {
    train_distributed(opts, resume, std::sync::Arc::new(SingleProcess))
}

/// The all-reduce synchronised batch norm needs, over `comm`. Each f64 travels as two f32s
/// (the value rounded, then its remainder), so per-channel sums keep ~48 bits through an f32
/// collective.
fn sync_bn_collective(comm: std::sync::Arc<dyn Communicator>) -> yolo_tensor::AllReduceSum {
    std::sync::Arc::new(move |v: &mut [f64]| {
        let mut buf: Vec<f32> = Vec::with_capacity(2 * v.len());
        for &x in v.iter() {
            let hi = x as f32;
            buf.push(hi);
            buf.push((x - hi as f64) as f32);
        }
        comm.all_reduce_sum(&mut buf)
            .map_err(|e| yolo_tensor::Error::Backward(format!("--sync-bn all-reduce: {e}")))?;
        for (x, p) in v.iter_mut().zip(buf.chunks_exact(2)) {
            *x = p[0] as f64 + p[1] as f64;
        }
        Ok(())
    })
}

/// [`train`] as one replica of a data-parallel job over `comm` (upstream's DDP mode): every
/// rank calls it with the same options. `opts.batch_size` is the total over all ranks; each
/// rank reads its shard of the training set in batches of `batch_size / world`; parameters
/// and buffers start as rank 0's; the loss is scaled by the world size (as upstream) and the
/// gradients averaged over ranks after every backward; buffers follow rank 0's before every
/// forward. Rank 0 alone keeps the EMA, validates, plots and writes the run folder; other
/// ranks write nothing, and report zero metrics. Early stopping and Ctrl-C stop all ranks at
/// the same step.
pub fn train_distributed(
    opts: &TrainOptions,
    resume: Option<&Path>,
    comm: std::sync::Arc<dyn Communicator>,
) -> Result<TrainSummary> {
    let dp = DataParallel::new(&*comm);
    let main = dp.is_main();
    let t_start = Instant::now();
    let resume_ck = match resume {
        Some(p) => {
            let ck = Checkpoint::load(p)?;
            if !ck.resumable() {
                return Err(cfg_err(
                    "--resume",
                    format!(
                        "{}: holds no training state (a stripped or exported model?)",
                        p.display()
                    ),
                ));
            }
            Some(ck)
        }
        None => None,
    };
    let state: Option<TrainState> = match &resume_ck {
        Some(ck) => Some(
            serde_json::from_value(ck.state.clone())
                .map_err(|e| cfg_err("--resume", format!("bad training state: {e}")))?,
        ),
        None => None,
    };
    let opts = match (&state, resume) {
        // the run folder is the one holding the checkpoint (runs may be moved or copied)
        (Some(s), Some(p)) => TrainOptions {
            progress: opts.progress,
            threads: opts.threads,
            device: opts.device,
            save_dir: p
                .parent()
                .and_then(|w| w.parent())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| s.opt.save_dir.clone()),
            ..s.opt.clone()
        },
        _ => opts.clone(),
    };
    if opts.threads > 0 {
        yolo_tensor::set_num_threads(opts.threads);
    }
    if opts.epochs == 0 || opts.batch_size == 0 {
        return Err(cfg_err(
            "options",
            "--epochs and --batch-size must be positive",
        ));
    }
    // images per batch on this rank (the total in a single process)
    let rank_batch = dp.per_rank_batch(opts.batch_size)?;
    let hyp = &opts.hyp;
    let save_dir = opts.save_dir.clone();
    let wdir = save_dir.join("weights");
    let last = wdir.join("last.safetensors");
    let best = wdir.join("best.safetensors");
    if main {
        std::fs::create_dir_all(&wdir).map_err(|e| TrainError::File {
            path: wdir.display().to_string(),
            detail: format!("cannot create: {e}"),
        })?;
        write_file_atomic(save_dir.join("hyp.yaml"), hyp.to_yaml().as_bytes())?;
        let opt_yaml = serde_yaml_ng::to_string(&opts).unwrap_or_default();
        write_file_atomic(save_dir.join("opt.yaml"), opt_yaml.as_bytes())?;
    }

    // names first (nc decides the head), then the model, then the data at the model's stride
    let dc = DatasetConfig::load(&opts.data)?;
    let names = run_names(&dc, opts.single_cls);
    let nc = names.len();
    let model = build_model(&opts, nc, &names)?;
    let gs = (model.stride.iter().cloned().fold(32.0f32, f32::max)) as usize;
    let imgsz = check_img_size(opts.imgsz, gs);
    let data = if dp.is_distributed() {
        // rank 0 first (it writes the label cache), then the others read it, as upstream's
        // torch_distributed_zero_first; only rank 0 validates
        let rank_opts = TrainOptions {
            batch_size: rank_batch,
            ..opts.clone()
        };
        let mut data = if main {
            let d = build_run_data(&rank_opts, &dc, gs, imgsz, true);
            dp.barrier()?;
            d?
        } else {
            dp.barrier()?;
            build_run_data(&rank_opts, &dc, gs, imgsz, false)?
        };
        data.train = dp.shard_loader(data.train, opts.seed)?;
        data
    } else {
        build_data(&opts, &dc, gs, imgsz)?
    };
    let nb_full = data.train.len();
    if nb_full == 0 {
        return Err(cfg_err("dataset", "the training split has no batch"));
    }
    let nb = if opts.max_batches > 0 {
        nb_full.min(opts.max_batches)
    } else {
        nb_full
    };
    let aux = model.nodes.last().is_some_and(|n| n.module == "IAuxDetect");

    if main && opts.plots && state.is_none() {
        let all: Vec<[f32; 5]> = data
            .train_set
            .records()
            .iter()
            .flat_map(|r| r.labels.iter().copied())
            .collect();
        if let Err(e) = crate::plots::plot_labels(&all, &names, &save_dir.join("labels.jpg")) {
            tracing::warn!("labels.jpg not written: {e}");
        }
    }

    // AutoAnchor (before the optimiser sees the parameters; anchors are buffers); on rank 0
    // alone, the others get its anchors with the other tensors below
    if main && state.is_none() && !opts.noautoanchor {
        let recs = data.train_set.records();
        let shapes: Vec<[f32; 2]> = recs
            .iter()
            .map(|r| [r.width as f32, r.height as f32])
            .collect();
        let labels: Vec<Vec<[f32; 2]>> = recs
            .iter()
            .map(|r| r.labels.iter().map(|l| [l[3], l[4]]).collect())
            .collect();
        if labels.iter().any(|l| !l.is_empty()) {
            let det = model.detect();
            let strides = det.stride.clone();
            let a = det.anchors.to_vec();
            let px: Vec<[f32; 2]> = a
                .chunks(2)
                .enumerate()
                .map(|(k, p)| {
                    let s = strides[k / det.na];
                    [p[0] * s, p[1] * s]
                })
                .collect();
            let cfg = AutoAnchorConfig {
                img_size: imgsz,
                anchor_t: hyp.anchor_t as f64,
                seed: opts.seed,
                init: if opts.kmeans_pp {
                    crate::autoanchor::KmeansInit::PlusPlus
                } else {
                    crate::autoanchor::KmeansInit::Plain
                },
                ..AutoAnchorConfig::default()
            };
            let chk = check_anchors(&shapes, &labels, &px, &strides, &cfg)?;
            tracing::info!(
                "AutoAnchor: {:.2} anchors/target, best possible recall {:.4}",
                chk.current.aat,
                chk.current.bpr
            );
            if let Some(new) = chk.anchors {
                apply_anchors(&det.anchors, &new, &strides)?;
                tracing::info!(
                    "AutoAnchor: new anchors (BPR {:.4}) written into the model",
                    chk.new_bpr.unwrap_or(0.0)
                );
            }
        }
    }

    // the model moves to its device once built and its anchors checked: the optimiser, the
    // EMA and every batch follow it there
    if let Device::Cuda(n) = opts.device {
        Device::cuda(n)?;
    }
    let mut model = model;
    model.to_device(opts.device)?;
    if opts.sync_bn && dp.is_distributed() {
        model.set_sync_bn(Some(sync_bn_collective(comm.clone())));
        tracing::info!(
            "--sync-bn: batch statistics over all {} replicas",
            comm.world_size()
        );
    } else if opts.sync_bn {
        tracing::warn!("--sync-bn only acts with more than one replica (DDP); ignored");
    }
    let amp = opts.amp && !opts.device.is_cpu();
    if opts.amp && !amp {
        tracing::warn!(
            "--amp: mixed precision is CUDA-only; training on the CPU in f32 (upstream also disables AMP on the CPU)"
        );
    }
    let _mixed_precision = amp.then(MixedPrecisionGuard::enable);
    let mut scaler = GradScaler::new(amp);

    // optimiser: nominal batch 64 by accumulation, weight decay scaled
    let kind = optimizer_kind(&opts.optimizer)?;
    let accumulate0 = nominal_accumulate(hyp.nbs, opts.batch_size);
    let wd = scaled_weight_decay(hyp.weight_decay as f64, opts.batch_size, hyp.nbs);
    let mut optimizer = Optimizer::smart(
        kind,
        ParamGroups::split(model.named_tensors()),
        hyp.lr0 as f64,
        hyp.momentum as f64,
        wd,
    );
    let schedule = LrSchedule::new(opts.cos_lr, opts.epochs, hyp.lrf as f64);
    let mut ema = ModelEma::new(&model.named_tensors())?;
    let mut ema_model = Model::new(model.config.clone(), opts.seed)?;
    ema_model.to_device(opts.device)?;
    let mut start_epoch = 0;
    let mut best_fitness = 0.0f64;
    let mut last_opt_step: i64 = -1;
    let mut rows = Vec::new();
    if let (Some(ck), Some(s)) = (&resume_ck, &state) {
        assign_named(&model.named_tensors(), &ck.model, "training weights")?;
        ema = ModelEma::from_tensors(&ck.ema, s.ema_updates)?;
        optimizer.load_state_tensors(&ck.optimizer)?;
        if let Some(sc) = &s.scaler {
            scaler.load_state(sc)?;
        }
        start_epoch = s.epoch + 1;
        best_fitness = s.best_fitness;
        last_opt_step = s.last_opt_step;
        rows = read_results_csv(&save_dir.join("results.csv"));
        rows.retain(|r| r.epoch <= s.epoch);
        if start_epoch >= opts.epochs {
            return Err(cfg_err(
                "--resume",
                format!(
                    "training to {} epochs is finished, nothing to resume",
                    opts.epochs
                ),
            ));
        }
        tracing::info!(
            "Resuming training from {} at epoch {start_epoch} of {}",
            resume.map(|p| p.display().to_string()).unwrap_or_default(),
            opts.epochs
        );
    }
    // replicas start as rank 0's model (parameters and buffers, anchors included)
    let named_tensors = model.named_tensors();
    if dp.is_distributed() {
        let all: Vec<Tensor> = named_tensors.iter().map(|(_, t, _)| t.clone()).collect();
        dp.broadcast_from_main(&all)?;
    }
    let params = model.parameters();
    // the obj gain is scaled by the nominal imgsz once, as upstream (also with --multi-scale);
    // everything else the losses need comes from each batch's own prediction and image shapes
    let criterion = Criterion::new(&model, hyp, imgsz, aux)?;
    let val_criterion = Criterion::new(&model, hyp, imgsz, false)?;
    let nw = warmup_iters(hyp.warmup_epochs as f64, nb, 100);
    let warm = WarmupHyp {
        lr0: hyp.lr0 as f64,
        momentum: hyp.momentum as f64,
        warmup_momentum: hyp.warmup_momentum as f64,
        warmup_bias_lr: hyp.warmup_bias_lr as f64,
        nbs: hyp.nbs,
        batch_size: opts.batch_size,
    };
    tracing::info!(
        "Image sizes {imgsz} train, {imgsz} val; {} training images in {nb} batches of {}; \
         {} loss; logging results to {}; starting training for {} epochs…",
        data.train_set.len(),
        opts.batch_size,
        criterion.name(),
        save_dir.display(),
        opts.epochs
    );
    if dp.is_distributed() {
        tracing::info!(
            "Data-parallel rank {} of {}: {nb} batches of {rank_batch} images per epoch",
            dp.rank(),
            dp.world()
        );
    }

    if opts.multi_scale {
        tracing::info!(
            "Multi-scale training: each batch at a random size in [{}, {}) rounded down to a multiple of {gs}",
            imgsz / 2,
            imgsz * 3 / 2 + gs
        );
    }

    let mut epochs_run = Vec::new();
    let mut stopped_early = false;
    let mut interrupted = false;
    let mut best_epoch = rows
        .iter()
        .max_by(|a, b| a.fitness.total_cmp(&b.fitness))
        .map_or(0, |r| r.epoch);
    for epoch in start_epoch..opts.epochs {
        let t_epoch = Instant::now();
        // scheduler: lr = initial_lr · lf(epoch) (warmup overrides it during the first nw)
        optimizer.apply_lr_factor(schedule.factor(epoch as f64));
        let pb = progress_bar(nb, opts.progress && main);
        pb.set_prefix(format!("{epoch}/{}", opts.epochs - 1));
        let mut mloss = [0.0f64; 3];
        let mut accumulate = accumulate0;
        let mut seen_batches = 0usize;
        let mut sizes = (usize::MAX, 0usize);
        // a stop agreed by all ranks (data-parallel: Ctrl-C seen by any rank)
        let mut stop_all = false;
        for (i, batch) in data.train.epoch(epoch as u64).enumerate() {
            if i >= nb || (!dp.is_distributed() && STOP.load(Ordering::Relaxed)) {
                break;
            }
            let mut batch = batch?;
            let ni = (i + nb * epoch) as i64;
            if opts.multi_scale {
                // a draw from (seed, epoch, batch) alone: --resume sees the same sizes
                let mut rng = crate::scale::multi_scale_rng(opts.seed, epoch as u64, i as u64);
                let sz = crate::scale::multi_scale_size(&mut rng, imgsz, gs);
                let s = batch.images.shape();
                if let Some(ns) = crate::scale::multi_scale_shape([s[2], s[3]], sz, gs) {
                    batch.images = crate::scale::interpolate_bilinear(&batch.images, ns)?;
                }
                tracing::debug!(
                    "multi-scale: epoch {epoch} batch {i}: size {sz}, images {:?}",
                    batch.images.shape()
                );
            }
            {
                let s = batch.images.shape();
                let m = s[2].max(s[3]);
                sizes = (sizes.0.min(m), sizes.1.max(m));
            }
            if main && opts.plots && ni < 3 {
                let s = batch.images.shape();
                let boxes = target_boxes(&batch.targets, s[0], s[2], s[3]);
                let p = save_dir.join(format!("train_batch{ni}.jpg"));
                if let Err(e) = plot_batch(&batch, &boxes, &names, &p) {
                    tracing::warn!("{} not written: {e}", p.display());
                }
            }
            if let Some(w) = warmup_state(ni as usize, nw, epoch, &warm, &schedule) {
                accumulate = w.accumulate;
                optimizer.apply_warmup(&w);
            }
            let s = batch.images.shape();
            let hw = [s[2], s[3]];
            dp.broadcast_buffers(&named_tensors)?;
            // targets stay on the host: the loss builds them there and creates its tensors
            // on the predictions' device
            let images = batch.images.to_device(opts.device)?;
            let out = model.forward(&images, true)?;
            let loss = criterion.loss(&out, &batch.targets, hw)?;
            let v = loss.total.item()?;
            let bad = if dp.is_distributed() {
                // every rank leaves at the same step, or the collectives would wait forever
                let f = dp.any(&[STOP.load(Ordering::Relaxed), !v.is_finite()])?;
                stop_all = f[0];
                f[1]
            } else {
                !v.is_finite()
            };
            if bad {
                let on = if dp.is_distributed() {
                    format!(" on rank {} or another", dp.rank())
                } else {
                    String::new()
                };
                return Err(cfg_err(
                    "training",
                    format!("the loss became {v} at epoch {epoch}, batch {i}{on}; lower lr0 or check the labels"),
                ));
            }
            if stop_all {
                break;
            }
            if dp.is_distributed() {
                // DDP averages gradients over ranks: scaling by the world size makes the
                // step that of the whole batch, as upstream's `loss *= WORLD_SIZE`
                scaler
                    .scale_loss(&loss.total.mul_scalar(dp.world() as f32))
                    .backward()?;
                dp.average_gradients(&params)?;
            } else {
                scaler.scale_loss(&loss.total).backward()?;
            }
            drop(out);
            if ni - last_opt_step >= accumulate as i64 {
                // unscale, clip, step (skipped on an inf/NaN gradient under --amp), as upstream
                scaler.step_clipped(&mut optimizer, MAX_GRAD_NORM)?;
                optimizer.zero_grad();
                if main {
                    ema.update(&model.named_tensors())?;
                }
                last_opt_step = ni;
            }
            let items = [loss.lbox as f64, loss.lobj as f64, loss.lcls as f64];
            for k in 0..3 {
                mloss[k] = (mloss[k] * i as f64 + items[k]) / (i + 1) as f64;
            }
            seen_batches += 1;
            pb.set_message(format!(
                "box {:.4} obj {:.4} cls {:.4} inst {} size {}",
                mloss[0],
                mloss[1],
                mloss[2],
                batch.targets.shape()[0],
                s[3]
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
        // data-parallel ranks only act on the agreed flag: a local one may be one rank's alone
        if stop_all || (!dp.is_distributed() && STOP.load(Ordering::Relaxed)) {
            tracing::warn!(
                "interrupted during epoch {epoch}; {} is intact",
                last.display()
            );
            interrupted = true;
            break;
        }
        if seen_batches == 0 {
            return Err(cfg_err("dataset", "the training loader gave no batch"));
        }
        let lr = {
            let g = optimizer.groups();
            [g[0].lr, g[1].lr, g[2].lr]
        };
        let final_epoch = epoch + 1 == opts.epochs;
        if main {
            ema.copy_to(&ema_model.named_tensors())?;
        }
        let (metrics, val_loss) = match (&data.val, !opts.noval || final_epoch) {
            (Some(vl), true) => {
                let (r, _) = validate_loader(
                    &ema_model,
                    vl,
                    Some(&val_criterion),
                    nc,
                    ValSettings {
                        single_cls: opts.single_cls,
                        ..ValSettings::default()
                    },
                    |_, _, _| {},
                )?;
                (metrics_row(&r.metrics), r.losses)
            }
            _ => ([0.0; 4], [0.0; 3]),
        };
        let fi = crate::metrics::fitness(metrics[0], metrics[1], metrics[2], metrics[3]);
        let row = EpochResult {
            epoch,
            train_loss: mloss,
            metrics,
            val_loss,
            lr,
            fitness: fi,
            seconds: t_epoch.elapsed().as_secs_f64(),
        };
        let size_note = if opts.multi_scale {
            format!(" | sizes {}-{}", sizes.0, sizes.1)
        } else {
            String::new()
        };
        if main {
            tracing::info!(
            "epoch {epoch}/{}: box {:.4} obj {:.4} cls {:.4} | P {:.3} R {:.3} mAP50 {:.3} mAP50-95 {:.3} | {:.1}s{size_note}",
            opts.epochs - 1,
            mloss[0],
            mloss[1],
            mloss[2],
            metrics[0],
            metrics[1],
            metrics[2],
            metrics[3],
            row.seconds
        );
        }
        rows.push(row.clone());
        epochs_run.push(row);
        if main {
            write_results_csv(&save_dir.join("results.csv"), &rows)?;
        }
        let improved = fi > best_fitness;
        if improved {
            best_fitness = fi;
            best_epoch = epoch;
        }
        if main && (!opts.nosave || final_epoch) {
            let ts = TrainState {
                epoch,
                best_fitness,
                ema_updates: ema.updates,
                last_opt_step,
                opt: opts.clone(),
                scaler: scaler.state(),
            };
            let ck = Checkpoint {
                yaml: model.config.yaml.clone(),
                names: names.clone(),
                nc: model.config.nc,
                ema: ema.tensors().to_vec(),
                model: model
                    .named_tensors()
                    .into_iter()
                    .map(|(n, t, _)| (n, t))
                    .collect(),
                optimizer: optimizer.state_tensors()?,
                state: serde_json::to_value(&ts).unwrap_or_default(),
            };
            ck.save(&last)?;
            if opts.save_period > 0 && (epoch + 1) % opts.save_period == 0 {
                ck.save(wdir.join(format!("epoch{epoch}.safetensors")))?;
            }
            if improved || !best.exists() {
                Checkpoint {
                    model: Vec::new(),
                    optimizer: Vec::new(),
                    state: serde_json::Value::Null,
                    ..ck
                }
                .save(&best)?;
            }
        }
        // rank 0's decision (the only rank that validates) stops every rank
        if dp.from_main(opts.patience > 0 && epoch >= best_epoch + opts.patience)? {
            tracing::info!(
                "Stopping training early as no improvement observed in last {} epochs; best results at epoch {best_epoch}",
                opts.patience
            );
            stopped_early = true;
            break;
        }
    }
    // replicas end identical, buffers included (each rank's last forward moved its own)
    dp.broadcast_buffers(&named_tensors)?;
    tracing::info!(
        "{} epochs completed in {:.3} hours.",
        epochs_run.len(),
        t_start.elapsed().as_secs_f64() / 3600.0
    );
    // final validation of the best weights, per class
    let final_val = match (&data.val, main && best.exists() && !interrupted) {
        (Some(vl), true) => {
            let mut bm = Model::from_safetensors(&best)?;
            bm.to_device(opts.device)?;
            let mut plot_errs = Vec::new();
            let (r, cm) = validate_loader(
                &bm,
                vl,
                Some(&val_criterion),
                nc,
                ValSettings {
                    single_cls: opts.single_cls,
                    ..ValSettings::default()
                },
                |bi, batch, res| {
                    if opts.plots && bi < 3 {
                        if let Err(e) = plot_val_batch(batch, res, &names, &save_dir, bi) {
                            plot_errs.push(e);
                        }
                    }
                },
            )?;
            if opts.plots {
                let mut res = vec![
                    crate::plots::plot_confusion(
                        &cm,
                        &names,
                        &save_dir.join("confusion_matrix.png"),
                    ),
                    crate::plots::plot_results(
                        &save_dir.join("results.csv"),
                        &save_dir.join("results.png"),
                    ),
                ];
                if !r.metrics.per_class.classes.is_empty() {
                    res.push(crate::plots::plot_ap_curves(
                        &r.metrics.per_class,
                        &names,
                        &save_dir,
                    ));
                }
                for e in plot_errs.into_iter().map(Err).chain(res) {
                    if let Err(e) = e {
                        tracing::warn!("plot not written: {e}");
                    }
                }
            }
            Some(r)
        }
        _ => None,
    };
    Ok(TrainSummary {
        save_dir,
        epochs: epochs_run,
        best_fitness,
        final_val,
        last,
        best,
        stopped_early,
        names,
        interrupted,
        weights: named_tensors.into_iter().map(|(n, t, _)| (n, t)).collect(),
    })
}
