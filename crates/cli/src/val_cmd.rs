//! `yolo-forge val`: a model's metrics on a dataset split (val.py), or a folder of prediction
//! files scored without a model (`--pred DIR`).

use crate::common::{max_stride, print_val_table, select_device};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use yolo_data::{Dataset, DatasetConfig, DatasetOptions, Loader};
use yolo_models::Model;
use yolo_train::trainer::{check_img_size, increment_path, validate_loader};
use yolo_train::{LabelledImage, ValSettings};

/// `val` flags (names as upstream val.py).
#[derive(Args, Clone)]
pub struct ValArgs {
    /// Dataset YAML.
    #[arg(long)]
    pub data: PathBuf,
    /// Model weights (.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Evaluate a folder of prediction files (`<image stem>.txt`, rows `class cx cy w h conf`)
    /// instead of running a model.
    #[arg(long)]
    pub pred: Option<PathBuf>,
    /// Split: train, val or test.
    #[arg(long, default_value = "val")]
    pub task: String,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Inference size in pixels.
    #[arg(long, visible_aliases = ["img", "img-size"], default_value_t = 640)]
    pub imgsz: usize,
    /// NMS confidence threshold.
    #[arg(long, default_value_t = 0.001)]
    pub conf_thres: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.6)]
    pub iou_thres: f32,
    /// Maximum detections per image.
    #[arg(long, default_value_t = 300)]
    pub max_det: usize,
    /// Treat as single-class.
    #[arg(long)]
    pub single_cls: bool,
    /// Augmented inference (TTA: scales 1, 0.83 flipped, 0.67).
    #[arg(long)]
    pub augment: bool,
    /// Device: cpu or a CUDA ordinal (0); of a list, the first.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Save predictions as YOLO txt (`labels/<stem>.txt`).
    #[arg(long)]
    pub save_txt: bool,
    /// Add the confidence to the txt rows.
    #[arg(long)]
    pub save_conf: bool,
    /// Save a COCO-style predictions JSON.
    #[arg(long)]
    pub save_json: bool,
    /// Project folder.
    #[arg(long, default_value = "runs/val")]
    pub project: PathBuf,
    /// Run name.
    #[arg(long, default_value = "exp")]
    pub name: String,
    /// Reuse `project/name`.
    #[arg(long)]
    pub exist_ok: bool,
    /// Do not write plots (confusion matrix, PR/F1/P/R curves, val_batch images).
    #[arg(long)]
    pub noplots: bool,
    /// Per-class table.
    #[arg(long, default_value_t = true)]
    pub verbose: bool,
    /// CPU threads for the kernels.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn split(dc: &DatasetConfig, task: &str) -> Result<Vec<PathBuf>> {
    let s = match task {
        "train" => &dc.train,
        "val" => &dc.val,
        "test" => &dc.test,
        other => bail!("--task {other}: expected train, val or test"),
    };
    if s.is_empty() {
        bail!("{}: the dataset has no `{task}` split", dc.file.display());
    }
    Ok(s.clone())
}

/// `yolo-forge val`.
pub fn val(a: ValArgs) -> Result<()> {
    let device = select_device(&a.device)?;
    crate::common::set_threads(a.threads);
    if !a.data.exists() {
        bail!("dataset file {} does not exist", a.data.display());
    }
    let dc = DatasetConfig::load(&a.data)?;
    let sources = split(&dc, &a.task)?;
    let names = if a.single_cls {
        vec!["item".to_string()]
    } else {
        dc.names.clone()
    };
    if let Some(dir) = &a.pred {
        if a.weights.is_some() {
            bail!(
                "give either --weights (run a model) or --pred (score prediction files), not both"
            );
        }
        return val_pred(&a, dir, &sources, &names, dc.nc());
    }
    let Some(w) = &a.weights else {
        bail!("give --weights (a model to run) or --pred DIR (prediction files to score)");
    };
    if !w.exists() {
        bail!("weights file {} does not exist", w.display());
    }
    let mut model =
        Model::from_safetensors(w).with_context(|| format!("loading {}", w.display()))?;
    // each batch follows the model there; predictions come back to the host for NMS
    model.to_device(device)?;
    if model.config.nc != names.len() && !a.single_cls {
        bail!(
            "{} has {} classes, the dataset {} ({})",
            w.display(),
            model.config.nc,
            names.len(),
            a.data.display()
        );
    }
    let gs = max_stride(&model);
    let imgsz = check_img_size(a.imgsz, gs);
    let ds = Dataset::new(
        &sources,
        DatasetOptions {
            imgsz,
            stride: gs,
            augment: false,
            rect: true,
            batch_size: a.batch_size,
            single_cls: a.single_cls,
            nc: Some(dc.nc()),
            pad: 0.5,
            ..DatasetOptions::default()
        },
    )?;
    let loader = Loader::new(Arc::new(ds), a.batch_size, false, 0, a.workers);
    let save_dir = increment_path(&a.project.join(&a.name), a.exist_ok);
    let labels_dir = save_dir.join("labels");
    std::fs::create_dir_all(&save_dir)
        .with_context(|| format!("creating {}", save_dir.display()))?;
    if a.save_txt || a.save_json {
        std::fs::create_dir_all(&labels_dir)
            .with_context(|| format!("creating {}", labels_dir.display()))?;
    }
    let mut json = Vec::new();
    let mut io_err: Option<anyhow::Error> = None;
    let mut plot_errs: Vec<yolo_train::TrainError> = Vec::new();
    let (r, cm) = validate_loader(
        &model,
        &loader,
        None,
        names.len(),
        ValSettings {
            conf_thres: a.conf_thres,
            iou_thres: a.iou_thres,
            max_det: a.max_det,
            single_cls: a.single_cls,
            augment: a.augment,
        },
        |bi, batch, results| {
            if !a.noplots && bi < 3 {
                if let Err(e) =
                    yolo_train::trainer::plot_val_batch(batch, results, &names, &save_dir, bi)
                {
                    plot_errs.push(e);
                }
            }
            for (k, res) in results.iter().enumerate() {
                let shape = &batch.shapes[k];
                let stem = batch.paths[k]
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                let (h0, w0) = (shape.orig_hw.0 as f32, shape.orig_hw.1 as f32);
                let native: Vec<[f32; 6]> = res
                    .detections
                    .iter()
                    .map(|d| {
                        let b = shape.to_original([d[0], d[1], d[2], d[3]]);
                        [
                            b[0].clamp(0.0, w0),
                            b[1].clamp(0.0, h0),
                            b[2].clamp(0.0, w0),
                            b[3].clamp(0.0, h0),
                            d[4],
                            d[5],
                        ]
                    })
                    .collect();
                if a.save_txt {
                    let mut s = String::new();
                    for d in &native {
                        let (cx, cy) = ((d[0] + d[2]) / 2.0 / w0, (d[1] + d[3]) / 2.0 / h0);
                        let (bw, bh) = ((d[2] - d[0]) / w0, (d[3] - d[1]) / h0);
                        s.push_str(&format!(
                            "{} {cx:.6} {cy:.6} {bw:.6} {bh:.6}",
                            d[5] as usize
                        ));
                        if a.save_conf {
                            s.push_str(&format!(" {:.6}", d[4]));
                        }
                        s.push('\n');
                    }
                    let p = labels_dir.join(format!("{stem}.txt"));
                    if let Err(e) = std::fs::write(&p, s) {
                        io_err.get_or_insert(anyhow::anyhow!("writing {}: {e}", p.display()));
                    }
                }
                if a.save_json {
                    match yolo_train::coco_json_entries(&stem, &native, &[]) {
                        Ok(v) => json.extend(v),
                        Err(e) => {
                            io_err.get_or_insert(e.into());
                        }
                    }
                }
            }
        },
    )?;
    if let Some(e) = io_err {
        return Err(e);
    }
    print_val_table(&names, &r, a.verbose);
    if !a.noplots {
        plot_errs.extend(
            yolo_train::plot_confusion(&cm, &names, &save_dir.join("confusion_matrix.png")).err(),
        );
        if !r.metrics.per_class.classes.is_empty() {
            plot_errs
                .extend(yolo_train::plot_ap_curves(&r.metrics.per_class, &names, &save_dir).err());
        }
        for e in plot_errs {
            tracing::warn!("plot not written: {e}");
        }
    }
    println!(
        "Speed: {:.1} ms inference, {:.1} ms NMS per image at shape ({}, 3, {imgsz}, {imgsz})",
        r.ms_per_image[0], r.ms_per_image[1], a.batch_size
    );
    if a.save_json {
        let p = save_dir.join(format!(
            "{}_predictions.json",
            w.file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        yolo_train::write_coco_json(&p, &json)?;
        println!("Saving {}... ({} detections)", p.display(), json.len());
    }
    println!("Results saved to {}", save_dir.display());
    Ok(())
}

fn val_pred(
    a: &ValArgs,
    dir: &std::path::Path,
    sources: &[PathBuf],
    names: &[String],
    nc: usize,
) -> Result<()> {
    if !dir.is_dir() {
        bail!("--pred {}: not a folder of prediction files", dir.display());
    }
    // the labels as the dataset scan verified them (bad rows handled as in training)
    let ds = Dataset::new(
        sources,
        DatasetOptions {
            nc: Some(nc),
            single_cls: a.single_cls,
            ..DatasetOptions::default()
        },
    )?;
    let images: Vec<LabelledImage> = ds
        .records()
        .iter()
        .map(|r| LabelledImage {
            stem: r
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
            labels: r.labels.clone(),
            size: (r.width, r.height),
        })
        .collect();
    let rep = yolo_train::evaluate_prediction_folder(dir, &images, names.len().max(nc))?;
    if !rep.missing.is_empty() {
        tracing::warn!(
            "{} of {} images have no prediction file (counted as no detections), e.g. {}",
            rep.missing.len(),
            images.len(),
            rep.missing[0].display()
        );
    }
    if !rep.unmatched.is_empty() {
        tracing::warn!(
            "{} prediction files match no image of the split, e.g. {}",
            rep.unmatched.len(),
            rep.unmatched[0].display()
        );
    }
    let r = yolo_train::ValReport {
        instances: rep.metrics.labels_per_class.iter().sum(),
        seen: images.len(),
        metrics: rep.metrics,
        losses: [0.0; 3],
        ms_per_image: [0.0; 2],
    };
    print_val_table(names, &r, a.verbose);
    println!("{} detections read from {}", rep.detections, dir.display());
    Ok(())
}
