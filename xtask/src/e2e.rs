//! `cargo xtask e2e`: the whole workflow with the release CLI on CPU — generate the synthetic
//! dataset, train a small model, validate, detect on a few images — and assert mAP@0.5.

use crate::util::{cli, flag, has, parse_all_row, release_cli, root};
use anyhow::{bail, Result};

/// mAP@0.5 the e2e run must reach (random guessing scores about 0.01).
const MIN_MAP50: f64 = 0.35;

/// Runs the end-to-end check.
pub fn run(args: &[String]) -> Result<()> {
    let t0 = std::time::Instant::now();
    let quick = has(args, "--quick");
    let bin = release_cli()?;
    let dir = root().join("target/e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let epochs = flag(args, "--epochs").unwrap_or(if quick { "3" } else { "24" });
    let (ntrain, nval) = if quick { ("64", "16") } else { ("600", "60") };
    cli(
        &bin,
        &dir,
        &[
            "dataset", "synth", "--out", "data", "--train", ntrain, "--val", nval, "--imgsz",
            "128", "--seed", "0",
        ],
    )?;
    cli(
        &bin,
        &dir,
        &[
            "train",
            "--data",
            "data/data.yaml",
            "--cfg",
            "yolov5n.yaml",
            "--hyp",
            "hyp.synth.yaml",
            "--epochs",
            epochs,
            "--batch-size",
            "16",
            "--imgsz",
            "128",
            "--workers",
            "2",
            "--seed",
            "0",
            "--name",
            "e2e",
            "--exist-ok",
        ],
    )?;
    let w = "runs/train/e2e/weights/best.safetensors";
    let out = cli(
        &bin,
        &dir,
        &[
            "val",
            "--data",
            "data/data.yaml",
            "--weights",
            w,
            "--imgsz",
            "128",
            "--batch-size",
            "16",
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{stdout}");
    let m = parse_all_row(&stdout)?;
    let out = cli(
        &bin,
        &dir,
        &[
            "detect",
            "--weights",
            w,
            "--source",
            "data/images/val",
            "--imgsz",
            "128",
            "--save-txt",
            "--save-conf",
        ],
    )?;
    let det = String::from_utf8_lossy(&out.stdout).to_string();
    let annotated = std::fs::read_dir(dir.join("runs/detect/exp"))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count();
    println!(
        "e2e: mAP@0.5 {:.3}, mAP@0.5:0.95 {:.3} after {epochs} epochs; detect wrote {annotated} images ({}); {:.0} s",
        m[2],
        m[3],
        det.lines().last().unwrap_or(""),
        t0.elapsed().as_secs_f64()
    );
    let min = if quick { 0.0 } else { MIN_MAP50 };
    if m[2] < min {
        bail!("e2e: mAP@0.5 {:.3} is below {min}", m[2]);
    }
    if annotated == 0 {
        bail!("e2e: detect wrote no image");
    }
    Ok(())
}
