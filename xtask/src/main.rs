//! `cargo xtask <command>`: the project's own automation.
//!
//! - `ci`: format check, clippy with warnings denied (also yolo-dist's `nccl` feature), every
//!   test of the workspace, then `e2e`.
//! - `e2e`: synthetic data → train → val → detect with the release CLI; asserts mAP@0.5.
//! - `bench`: criterion benches of every crate plus model-level benchmarks → `target/bench/
//!   report.md` and `report.json`; `--compare-torch` runs the PyTorch side in the same call.
//! - `ablation`: the same model trained with each activation on the same data and seed.
//! - `gpu-check`: every op and one training step on the GPU against the CPU, NCCL at world
//!   size 1, and GPU benchmarks next to PyTorch → `target/gpu-check.md` (needs an NVIDIA GPU).

mod ablation;
mod bench;
mod e2e;
mod gpu_check;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <ci | e2e [--quick] | bench [--quick] [--compare-torch] | \
ablation --acts silu,gelu,… [--model M] [--epochs N] [--imgsz S] [--data YAML] [--hyp YAML] | \
gpu-check [--deadline-s 480] [--torch-repo DIR] [--skip-torch] [--dev] [--force] [--prepare] [--prebuilt DIR]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = if args.is_empty() { &[][..] } else { &args[1..] };
    match args.first().map(String::as_str) {
        Some("ci") => ci(rest),
        Some("e2e") => e2e::run(rest),
        Some("bench") => bench::run(rest),
        Some("ablation") => ablation::run(rest),
        Some("gpu-check") => gpu_check::run_check(rest),
        Some("-h" | "--help" | "help") | None => {
            eprintln!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n{USAGE}"),
    }
}

/// What `.ci/run` calls: formatting, lints, all tests, then the end-to-end run.
fn ci(args: &[String]) -> Result<()> {
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The NCCL communicator is behind a feature (cudarc loads NCCL at run time, so it builds
    // without CUDA): lint it too, or it would rot unseen on GPU-less CI.
    util::cargo(&[
        "clippy",
        "-p",
        "yolo-dist",
        "--features",
        "nccl",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    util::cargo(&[
        "clippy",
        "-p",
        "yolo-cli",
        "--features",
        "nccl",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    util::cargo(&["test", "--workspace"])?;
    // Without a GPU the CUDA op table above only checks its CPU half; run it again on the CUDA
    // emulator (the CUDA kernels compiled for the CPU), so the backend's logic is checked here.
    util::cargo_env(
        &[("YOLO_CUDA_EMULATE", "1"), ("YOLO_REQUIRE_GPU", "1")],
        &["test", "-p", "yolo-tensor", "--test", "cuda_ops"],
    )?;
    if args.iter().any(|a| a == "--no-e2e") {
        eprintln!("xtask ci: e2e skipped (--no-e2e)");
        return Ok(());
    }
    e2e::run(&[])
}
