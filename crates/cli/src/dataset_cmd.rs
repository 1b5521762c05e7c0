//! `yolo-forge dataset synth`: writes the synthetic shapes dataset.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `dataset` subcommands.
#[derive(Subcommand, Clone)]
pub enum DatasetCommand {
    /// Generate the synthetic shapes dataset (images, labels, data.yaml).
    Synth(SynthArgs),
}

/// `dataset synth` flags.
#[derive(Args, Clone)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long, default_value = "datasets/synth")]
    pub out: PathBuf,
    /// Class names, each a shape kind (circle, square, triangle, cross, star, ring…);
    /// comma-separated or repeated.
    #[arg(long, value_delimiter = ',', default_value = "circle,square,triangle")]
    pub classes: Vec<String>,
    /// Training images.
    #[arg(long, default_value_t = 600)]
    pub train: usize,
    /// Validation images.
    #[arg(long, default_value_t = 100)]
    pub val: usize,
    /// Square image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub imgsz: u32,
    /// Seed (the same seed writes the same files).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `yolo-forge dataset …`.
pub fn dataset(c: DatasetCommand) -> Result<()> {
    match c {
        DatasetCommand::Synth(a) => {
            if a.classes.is_empty() {
                bail!("--classes: give at least one shape kind");
            }
            let t = std::time::Instant::now();
            let cfg = yolo_data::SynthConfig {
                out: a.out.clone(),
                classes: a.classes.clone(),
                train: a.train,
                val: a.val,
                imgsz: a.imgsz,
                seed: a.seed,
                ..Default::default()
            };
            let yaml = yolo_data::generate(&cfg)?;
            println!(
                "wrote {} training and {} validation images ({} classes) in {:.1}s; dataset YAML {}",
                a.train,
                a.val,
                a.classes.len(),
                t.elapsed().as_secs_f64(),
                yaml.display()
            );
            Ok(())
        }
    }
}
