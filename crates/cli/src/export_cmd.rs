//! `yolo-forge export`: a fused, inference-only safetensors file (Conv+BN folded, RepConv
//! re-parameterised, implicit layers merged), without training state.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use yolo_models::Model;

/// `export` flags.
#[derive(Args, Clone)]
pub struct ExportArgs {
    /// Weights to export (.safetensors, a checkpoint or a model file).
    #[arg(long)]
    pub weights: PathBuf,
    /// Formats: safetensors (ONNX is not implemented yet).
    #[arg(long, num_args = 1.., default_value = "safetensors")]
    pub include: Vec<String>,
    /// Output file (default: `<weights stem>-fused.safetensors` beside the input).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Image size for the printed GFLOPs.
    #[arg(long, visible_aliases = ["img", "img-size"], default_value_t = 640)]
    pub imgsz: usize,
}

/// `yolo-forge export`.
pub fn export(a: ExportArgs) -> Result<()> {
    for f in &a.include {
        if f != "safetensors" {
            bail!("--include {f}: only `safetensors` export exists (ONNX is not implemented yet)");
        }
    }
    if !a.weights.exists() {
        bail!("weights file {} does not exist", a.weights.display());
    }
    let mut model = Model::from_safetensors(&a.weights)
        .with_context(|| format!("loading {}", a.weights.display()))?;
    model.fuse()?;
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .weights
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        a.weights
            .with_file_name(format!("{stem}-fused.safetensors"))
    });
    model.save_safetensors(&out)?;
    let s = model.info(a.imgsz)?;
    println!(
        "exported {} (fused: {} layers, {} parameters, {:.1} GFLOPs at {})",
        out.display(),
        s.layers,
        crate::common::group(s.params),
        s.gflops,
        a.imgsz
    );
    Ok(())
}
