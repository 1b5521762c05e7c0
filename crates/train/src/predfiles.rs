//! Prediction files: YOLO txt predictions (`class cx cy w h conf`, normalised, one file per
//! image, as `detect.py --save-txt --save-conf` writes them) evaluated against labels without a
//! model (`yolo-forge val --pred DIR`), and the COCO JSON writer of `--save-json`.

use crate::error::{Result, TrainError};
use crate::metrics::{DetectionMetrics, MetricsAccumulator};
use crate::postprocess::Detection;
use std::io::Write;
use std::path::{Path, PathBuf};

fn file_err(path: impl Into<String>, detail: impl Into<String>) -> TrainError {
    TrainError::File {
        path: path.into(),
        detail: detail.into(),
    }
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it, flushed to disk, then
/// renamed over `path`, so a crash never leaves a truncated file and an existing one stays
/// intact until the new one is complete.
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .ok_or_else(|| file_err(path.display().to_string(), "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let io = |e: std::io::Error| file_err(path.display().to_string(), format!("cannot write: {e}"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Writes COCO-style detection entries (see [`crate::coco_json_entries`]) as one JSON array,
/// atomically.
pub fn write_coco_json(path: impl AsRef<Path>, entries: &[serde_json::Value]) -> Result<()> {
    let text = serde_json::to_string(entries)
        .map_err(|e| file_err(path.as_ref().display().to_string(), e.to_string()))?;
    write_file_atomic(path, text.as_bytes())
}

/// Reads one YOLO prediction file: rows `class cx cy w h conf` (normalised to the image). A
/// missing file means no detections. Errors name the file and line.
pub fn read_yolo_predictions(path: impl AsRef<Path>) -> Result<Vec<[f32; 6]>> {
    let path = path.as_ref();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(file_err(
                path.display().to_string(),
                format!("cannot read: {e}"),
            ))
        }
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let vals: Vec<f32> = line
            .split_whitespace()
            .map(|t| t.parse::<f32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| file_err(at(), format!("`{line}`: not a number ({e})")))?;
        if vals.len() != 6 {
            return Err(file_err(
                at(),
                format!(
                    "expected 6 columns `class cx cy w h conf` (save with --save-conf), got {}",
                    vals.len()
                ),
            ));
        }
        if vals.iter().any(|v| !v.is_finite()) || vals[0] < 0.0 || vals[0].fract() != 0.0 {
            return Err(file_err(
                at(),
                format!("`{line}`: bad class or non-finite value"),
            ));
        }
        if vals[3] < 0.0 || vals[4] < 0.0 {
            return Err(file_err(
                at(),
                format!("`{line}`: negative width or height"),
            ));
        }
        rows.push([vals[0], vals[1], vals[2], vals[3], vals[4], vals[5]]);
    }
    Ok(rows)
}

/// One image of the evaluated split: its name stem, labels `[class, cx, cy, w, h]` normalised,
/// and its size in pixels `(width, height)`.
#[derive(Clone, Debug)]
pub struct LabelledImage {
    /// File stem; the prediction file is `<stem>.txt`.
    pub stem: String,
    /// Labels `[class, cx, cy, w, h]`, normalised.
    pub labels: Vec<[f32; 5]>,
    /// Image width and height in pixels.
    pub size: (u32, u32),
}

/// What [`evaluate_prediction_folder`] found.
#[derive(Clone, Debug)]
pub struct PredictionFolderReport {
    /// The metrics (val.py's "all" row and per class).
    pub metrics: DetectionMetrics,
    /// Images without a prediction file (counted as no detections).
    pub missing: Vec<PathBuf>,
    /// Prediction files that match no image of the split.
    pub unmatched: Vec<PathBuf>,
    /// Detections read.
    pub detections: usize,
}

fn to_pixels(r: &[f32], w: f32, h: f32) -> [f32; 4] {
    let (cx, cy, bw, bh) = (r[0] * w, r[1] * h, r[2] * w, r[3] * h);
    [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]
}

/// Evaluates a folder of YOLO prediction files against `images` (`nc` classes), as val.py does
/// with a model's detections: boxes in pixels of each image, matching at IoU 0.50:0.95,
/// AP per class. A class id ≥ `nc` in a prediction file is an error naming the file.
pub fn evaluate_prediction_folder(
    pred_dir: impl AsRef<Path>,
    images: &[LabelledImage],
    nc: usize,
) -> Result<PredictionFolderReport> {
    let dir = pred_dir.as_ref();
    if !dir.is_dir() {
        return Err(file_err(
            dir.display().to_string(),
            "not a folder of prediction files",
        ));
    }
    let mut acc = MetricsAccumulator::new();
    let mut missing = Vec::new();
    let mut detections = 0;
    for img in images {
        let p = dir.join(format!("{}.txt", img.stem));
        if !p.exists() {
            missing.push(p.clone());
        }
        let rows = read_yolo_predictions(&p)?;
        let (w, h) = (img.size.0 as f32, img.size.1 as f32);
        let mut dets: Vec<Detection> = Vec::with_capacity(rows.len());
        for r in &rows {
            if r[0] as usize >= nc {
                return Err(file_err(
                    p.display().to_string(),
                    format!("class {} ≥ nc {nc} of the dataset", r[0]),
                ));
            }
            let b = to_pixels(&r[1..5], w, h);
            dets.push([b[0], b[1], b[2], b[3], r[5], r[0]]);
        }
        // highest confidence first, as NMS output is
        dets.sort_by(|a, b| b[4].total_cmp(&a[4]));
        detections += dets.len();
        let labels: Vec<[f32; 5]> = img
            .labels
            .iter()
            .map(|l| {
                let b = to_pixels(&l[1..5], w, h);
                [l[0], b[0], b[1], b[2], b[3]]
            })
            .collect();
        acc.add_image(&dets, &labels);
    }
    let known: std::collections::HashSet<&str> = images.iter().map(|i| i.stem.as_str()).collect();
    let mut unmatched = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_err(dir.display().to_string(), format!("cannot list: {e}")))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "txt") {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if !known.contains(stem) {
                unmatched.push(p);
            }
        }
    }
    unmatched.sort();
    Ok(PredictionFolderReport {
        metrics: acc.compute(nc)?,
        missing,
        unmatched,
        detections,
    })
}
