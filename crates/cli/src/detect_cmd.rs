//! `yolo-forge detect`: images or a folder → annotated images and optional YOLO txt labels.

use crate::common::{max_stride, select_device};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use yolo_data::io::{list_images, load_rgb, save_rgb};
use yolo_data::{letterbox, RgbBuf};
use yolo_models::Model;
use yolo_tensor::{Device, Tensor};
use yolo_train::trainer::{check_img_size, increment_path};
use yolo_train::{non_max_suppression, NmsConfig};

/// `detect` flags (names as upstream detect.py).
#[derive(Args, Clone)]
pub struct DetectArgs {
    /// Model weights (.safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// An image, a folder of images, or a .txt list of image paths.
    #[arg(long)]
    pub source: PathBuf,
    /// Inference size in pixels.
    #[arg(long, visible_aliases = ["img", "img-size"], default_value_t = 640)]
    pub imgsz: usize,
    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    pub conf_thres: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.45)]
    pub iou_thres: f32,
    /// Maximum detections per image.
    #[arg(long, default_value_t = 1000)]
    pub max_det: usize,
    /// Keep only these class ids.
    #[arg(long, num_args = 1..)]
    pub classes: Option<Vec<usize>>,
    /// Class-agnostic NMS.
    #[arg(long)]
    pub agnostic_nms: bool,
    /// Augmented inference (TTA: scales 1, 0.83 flipped, 0.67).
    #[arg(long)]
    pub augment: bool,
    /// Device: cpu or a CUDA ordinal (0); of a list, the first.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Save results as YOLO txt (`labels/<stem>.txt`: class cx cy w h, normalised).
    #[arg(long)]
    pub save_txt: bool,
    /// Add the confidence to the txt rows.
    #[arg(long)]
    pub save_conf: bool,
    /// Do not save annotated images.
    #[arg(long)]
    pub nosave: bool,
    /// Project folder.
    #[arg(long, default_value = "runs/detect")]
    pub project: PathBuf,
    /// Run name.
    #[arg(long, default_value = "exp")]
    pub name: String,
    /// Reuse `project/name`.
    #[arg(long)]
    pub exist_ok: bool,
    /// Box line thickness in pixels.
    #[arg(long, default_value_t = 3)]
    pub line_thickness: u32,
    /// Draw boxes without labels.
    #[arg(long)]
    pub hide_labels: bool,
    /// Labels without confidences.
    #[arg(long)]
    pub hide_conf: bool,
    /// CPU threads for the kernels.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// An RGB image as a `[1, 3, H, W]` tensor in 0..1.
pub fn image_tensor(im: &RgbBuf) -> Result<Tensor> {
    let plane = im.width * im.height;
    let mut v = vec![0.0f32; 3 * plane];
    for (i, px) in im.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            v[c * plane + i] = px[c] as f32 / 255.0;
        }
    }
    Ok(Tensor::from_vec(
        v,
        &[1, 3, im.height, im.width],
        Device::Cpu,
    )?)
}

/// `yolo-forge detect`.
pub fn detect(a: DetectArgs) -> Result<()> {
    let device = select_device(&a.device)?;
    crate::common::set_threads(a.threads);
    if !a.weights.exists() {
        bail!("weights file {} does not exist", a.weights.display());
    }
    if !a.source.exists() {
        bail!("source {} does not exist", a.source.display());
    }
    let mut model = Model::from_safetensors(&a.weights)
        .with_context(|| format!("loading {}", a.weights.display()))?;
    model.to_device(device)?;
    let gs = max_stride(&model);
    let imgsz = check_img_size(a.imgsz, gs);
    let list = list_images(std::slice::from_ref(&a.source))?;
    if list.images.is_empty() {
        bail!("no images found in {}", a.source.display());
    }
    let save_dir = increment_path(&a.project.join(&a.name), a.exist_ok);
    std::fs::create_dir_all(&save_dir)
        .with_context(|| format!("creating {}", save_dir.display()))?;
    if a.save_txt {
        std::fs::create_dir_all(save_dir.join("labels"))?;
    }
    let cfg = NmsConfig {
        conf_thres: a.conf_thres,
        iou_thres: a.iou_thres,
        max_det: a.max_det,
        classes: a.classes.clone(),
        agnostic: a.agnostic_nms,
        ..NmsConfig::default()
    };
    let _g = yolo_tensor::no_grad();
    let mut total = 0;
    for path in &list.images {
        let im0 = match load_rgb(path) {
            Ok(im) => im,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", path.display());
                continue;
            }
        };
        let t = std::time::Instant::now();
        let (im, lb) = letterbox(&im0, (imgsz, imgsz), true, false, true, gs);
        let x = image_tensor(&im)?.to_device(device)?;
        let pred = if a.augment {
            yolo_train::forward_augment(&model, &x, gs)?
        } else {
            let out = model.forward(&x, false)?;
            out.pred.context("the model gave no inference output")?
        };
        // NMS runs on the host
        let pred = pred.to_device(Device::Cpu)?;
        let dets = non_max_suppression(&pred, &cfg)?.remove(0);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (w0, h0) = (im0.width as f32, im0.height as f32);
        let mut canvas = im0.clone();
        let mut notes = Vec::with_capacity(dets.len());
        let mut txt = String::new();
        let mut counts = std::collections::BTreeMap::new();
        for d in &dets {
            let b = [
                ((d[0] - lb.pad.0) / lb.ratio.0).clamp(0.0, w0),
                ((d[1] - lb.pad.1) / lb.ratio.1).clamp(0.0, h0),
                ((d[2] - lb.pad.0) / lb.ratio.0).clamp(0.0, w0),
                ((d[3] - lb.pad.1) / lb.ratio.1).clamp(0.0, h0),
            ];
            let c = d[5] as usize;
            *counts.entry(c).or_insert(0usize) += 1;
            let name = model.names.get(c).cloned().unwrap_or_else(|| c.to_string());
            notes.push(yolo_train::Annotation {
                xyxy: b,
                class: c,
                label: match (a.hide_labels, a.hide_conf) {
                    (true, _) => None,
                    (false, true) => Some(name),
                    (false, false) => Some(format!("{name} {:.2}", d[4])),
                },
            });
            let (cx, cy) = ((b[0] + b[2]) / 2.0 / w0, (b[1] + b[3]) / 2.0 / h0);
            let (bw, bh) = ((b[2] - b[0]) / w0, (b[3] - b[1]) / h0);
            txt.push_str(&format!("{c} {cx:.6} {cy:.6} {bw:.6} {bh:.6}"));
            if a.save_conf {
                txt.push_str(&format!(" {:.6}", d[4]));
            }
            txt.push('\n');
        }
        total += dets.len();
        let summary: Vec<String> = counts
            .iter()
            .map(|(c, n)| {
                let name = model
                    .names
                    .get(*c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string());
                format!("{n} {name}")
            })
            .collect();
        println!(
            "{} {}x{}: {}, {ms:.1}ms",
            path.display(),
            im.height,
            im.width,
            if summary.is_empty() {
                "(no detections)".to_string()
            } else {
                summary.join(", ")
            }
        );
        let name = path.file_name().context("image path without a file name")?;
        if !a.nosave {
            yolo_train::annotate(
                &mut canvas.data,
                canvas.width as u32,
                canvas.height as u32,
                &notes,
                Some(a.line_thickness),
            )
            .with_context(|| format!("annotating {}", path.display()))?;
            let mut out_path = save_dir.join(name);
            if out_path
                .extension()
                .is_some_and(|e| e == "webp" || e == "tif" || e == "tiff")
            {
                out_path.set_extension("png");
            }
            save_rgb(&canvas, &out_path)?;
        }
        if a.save_txt {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let p = save_dir.join("labels").join(format!("{stem}.txt"));
            std::fs::write(&p, txt).with_context(|| format!("writing {}", p.display()))?;
        }
    }
    println!(
        "{} detections in {} images. Results saved to {}",
        total,
        list.images.len(),
        save_dir.display()
    );
    Ok(())
}
