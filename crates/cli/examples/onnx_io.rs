//! Dumps a model's input and inference output as raw little-endian f32 files, to compare an
//! exported ONNX graph in another runtime (`tools/check_onnx_export.py`):
//!
//! ```text
//! cargo run -p yolo-cli --example onnx_io -- --weights best.safetensors --imgsz 320 --out DIR
//! cargo run -p yolo-cli --example onnx_io -- --cfg configs/models/yolov7-tiny.yaml --imgsz 320 --out DIR
//! ```
//!
//! The model is fused first, as `yolo-forge export` does. With `--cfg` a seeded random model
//! is built, its batch-norm statistics perturbed so that fusing changes something, and saved
//! as `DIR/model.safetensors` for `yolo-forge export --weights DIR/model.safetensors`.
//! Writes `DIR/input.f32` (1×3×H×W uniform noise from `--seed`), `DIR/output.f32`
//! (1×N×(5+nc), the decoded predictions) and `DIR/shapes.json`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

#[derive(Parser)]
struct Args {
    /// Weights file (as `yolo-forge export --weights`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Or a model YAML: a seeded random model.
    #[arg(long)]
    cfg: Option<PathBuf>,
    /// Input size (square).
    #[arg(long, default_value_t = 320)]
    imgsz: usize,
    /// Seed of the input noise and the random model.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Uniform [0, 1) values from a fixed integer hash of (index, seed).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761);
            ((h ^ (h >> 15)).wrapping_mul(0x85eb_ca6b) >> 8) as f32 / 16_777_216.0
        })
        .collect()
}

/// Batch-norm statistics and scales away from their initial values.
fn perturb_bn(m: &Model, seed: u32) -> Result<()> {
    let _g = yolo_tensor::no_grad();
    for (k, (name, t, _)) in m.named_tensors().iter().enumerate() {
        let leaf = name.rsplit('.').next().unwrap_or("");
        let is_bn = [".bn.", ".rbr_identity.", ".rbr_dense.1.", ".rbr_1x1.1."]
            .iter()
            .any(|p| name.contains(p));
        if !is_bn {
            continue;
        }
        let r = noise(t.numel(), seed ^ (k as u32).wrapping_mul(7919));
        let v: Vec<f32> = r
            .iter()
            .map(|u| match leaf {
                "running_mean" => 0.2 * (u - 0.5),
                "running_var" => 0.5 + u,
                "weight" => 0.6 + 0.8 * u,
                _ => 0.2 * (u - 0.5),
            })
            .collect();
        t.assign(&Tensor::from_vec(v, t.shape(), Device::Cpu)?)?;
    }
    Ok(())
}

fn write_f32(path: &PathBuf, v: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out)?;
    let mut model = match (&a.weights, &a.cfg) {
        (Some(w), None) => Model::from_safetensors(w)?,
        (None, Some(c)) => {
            let m = Model::new(ModelConfig::from_file(c)?, a.seed as u64)?;
            perturb_bn(&m, a.seed)?;
            let p = a.out.join("model.safetensors");
            m.save_safetensors(&p)?;
            println!("saved {}", p.display());
            m
        }
        _ => bail!("give --weights or --cfg"),
    };
    model.fuse()?;
    let shape = [1, model.config.ch, a.imgsz, a.imgsz];
    let x = noise(shape.iter().product(), a.seed);
    let xt = Tensor::from_vec(x.clone(), &shape, Device::Cpu)?;
    let pred = {
        let _g = yolo_tensor::no_grad();
        model
            .forward(&xt, false)?
            .pred
            .context("no decoded output")?
    };
    write_f32(&a.out.join("input.f32"), &x)?;
    write_f32(&a.out.join("output.f32"), &pred.to_vec())?;
    let shapes = serde_json::json!({ "input": shape, "output": pred.shape() });
    std::fs::write(a.out.join("shapes.json"), shapes.to_string())?;
    println!(
        "wrote {}/input.f32 {:?} and output.f32 {:?}",
        a.out.display(),
        shape,
        pred.shape()
    );
    Ok(())
}
