//! `yolo-forge`: build, train, validate, run and benchmark YOLOv5/YOLOv7 models.

mod common;
mod dataset_cmd;
mod detect_cmd;
mod devices_cmd;
mod dist_setup;
mod export_cmd;
mod inspect;
mod train_cmd;
mod val_cmd;

use clap::{Parser, Subcommand};

/// Cache-line-aligned large blocks for the tensor buffers (see `yolo_tensor::AlignedAlloc`).
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

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
    /// Train a model (upstream train.py); with no --data, on a built-in synthetic dataset.
    Train(Box<train_cmd::TrainArgs>),
    /// Validate weights on a dataset split, or score a folder of prediction files.
    Val(Box<val_cmd::ValArgs>),
    /// Run a model on images and save annotated images and labels.
    Detect(Box<detect_cmd::DetectArgs>),
    /// Print a model's layer table and summary (upstream `model.info()`).
    Info(inspect::InfoArgs),
    /// Write the fused inference model: safetensors weights or an ONNX graph.
    Export(export_cmd::ExportArgs),
    /// Time a model's forward pass or training step on random input.
    Bench(inspect::BenchArgs),
    /// Dataset tools.
    #[command(subcommand)]
    Dataset(dataset_cmd::DatasetCommand),
    /// List compute devices: CPU threads, and what the CUDA driver reports.
    Devices,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // under torchrun, ranks other than 0 report only warnings and errors
                let quiet = std::env::var("RANK").is_ok_and(|r| r.trim() != "0");
                (if quiet { "warn" } else { "info" }).into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Train(a) => train_cmd::train(*a),
        Command::Val(a) => val_cmd::val(*a),
        Command::Detect(a) => detect_cmd::detect(*a),
        Command::Info(a) => inspect::info(a),
        Command::Export(a) => export_cmd::export(a),
        Command::Bench(a) => inspect::bench(a),
        Command::Dataset(c) => dataset_cmd::dataset(c),
        Command::Devices => devices_cmd::devices(),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
