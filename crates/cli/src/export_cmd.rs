//! `yolo-forge export`: the fused inference model (Conv+BN folded, RepConv re-parameterised,
//! implicit layers merged), without training state, as safetensors (the default) and/or ONNX
//! (upstream export.py's graph: input `images` [1, 3, H, W], output `output0` [1, N, 5 + nc]).

use crate::common::max_stride;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use yolo_models::Model;
use yolo_train::trainer::check_img_size;

/// `export` flags.
#[derive(Args, Clone)]
pub struct ExportArgs {
    /// Weights to export (.safetensors, a checkpoint or a model file).
    #[arg(long)]
    pub weights: PathBuf,
    /// Formats to write: safetensors (fused weights), onnx (opset 17, batch 1, static size).
    #[arg(long, visible_alias = "format", num_args = 1.., value_delimiter = ',', default_value = "safetensors")]
    pub include: Vec<String>,
    /// Output file (default: `<weights stem>-fused.safetensors` or `<weights stem>.onnx`
    /// beside the input); one format per call when given.
    #[arg(long, visible_alias = "output")]
    pub out: Option<PathBuf>,
    /// Image size: the ONNX input's (h, or h w; rounded up to a multiple of the largest
    /// stride) and the printed GFLOPs'.
    #[arg(long, visible_aliases = ["img", "img-size"], num_args = 1..=2, default_value = "640")]
    pub imgsz: Vec<usize>,
}

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    Onnx,
}

fn parse_formats(include: &[String]) -> Result<Vec<Format>> {
    let mut v = Vec::new();
    for f in include {
        let fmt = match f.to_ascii_lowercase().as_str() {
            "safetensors" => Format::Safetensors,
            "onnx" => Format::Onnx,
            _ => bail!("--include {f}: unknown format; use safetensors or onnx"),
        };
        if !v.contains(&fmt) {
            v.push(fmt);
        }
    }
    Ok(v)
}

fn default_out(weights: &Path, fmt: Format) -> PathBuf {
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    weights.with_file_name(match fmt {
        Format::Safetensors => format!("{stem}-fused.safetensors"),
        Format::Onnx => format!("{stem}.onnx"),
    })
}

/// `yolo-forge export`.
pub fn export(a: ExportArgs) -> Result<()> {
    let formats = parse_formats(&a.include)?;
    if a.out.is_some() && formats.len() > 1 {
        bail!("--out names one file: export one format per call when giving it");
    }
    if !a.weights.exists() {
        bail!("weights file {} does not exist", a.weights.display());
    }
    let mut model = Model::from_safetensors(&a.weights)
        .with_context(|| format!("loading {}", a.weights.display()))?;
    model.fuse()?;
    let gs = max_stride(&model);
    let (h, w) = match a.imgsz[..] {
        [s] => (s, s),
        [h, w] => (h, w),
        _ => bail!("--imgsz takes one or two sizes"),
    };
    let (h, w) = (check_img_size(h, gs), check_img_size(w, gs));
    let s = model.info(h)?;
    let summary = format!(
        "fused: {} layers, {} parameters, {:.1} GFLOPs at {h}",
        s.layers,
        crate::common::group(s.params),
        s.gflops,
    );
    for fmt in formats {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| default_out(&a.weights, fmt));
        match fmt {
            Format::Safetensors => {
                model.save_safetensors(&out)?;
                println!("exported {} ({summary})", out.display());
            }
            Format::Onnx => {
                model
                    .save_onnx(&out, h, w)
                    .with_context(|| format!("exporting {} to ONNX", a.weights.display()))?;
                let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
                println!(
                    "exported {} (ONNX opset {}, input images [1, {}, {h}, {w}], output output0; \
                     {:.1} MB; {summary})",
                    out.display(),
                    yolo_onnx::OPSET,
                    model.config.ch,
                    bytes as f64 / 1e6
                );
            }
        }
    }
    Ok(())
}
