//! `cargo xtask ablation --acts silu,gelu,gelu_tanh,frelu,aconc,metaacon [--model M]
//! [--epochs N] [--imgsz S] [--data YAML] [--hyp YAML] [--batch-size B] [--seed K]`: trains the same model with
//! each activation on the same data and seed, and tabulates mAP@0.5, mAP@0.5:0.95, parameters,
//! GFLOPs, training time per epoch and inference latency, each relative to the first (SiLU).

use crate::util::{cli, flag, machine, md_table, parse_all_row, release_cli, root};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::Instant;

/// The YAML `activation:` value of a short name.
fn activation_value(name: &str) -> Result<&'static str> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "silu" | "swish" => "nn.SiLU()",
        "gelu" => "nn.GELU()",
        "gelu_tanh" | "gelu-tanh" => "nn.GELU(approximate='tanh')",
        "hardswish" => "nn.Hardswish()",
        "mish" => "nn.Mish()",
        "relu" => "nn.ReLU()",
        "leaky_relu" | "leakyrelu" => "nn.LeakyReLU(0.1)",
        "frelu" => "FReLU",
        "aconc" | "acon" => "AconC",
        "metaaconc" | "metaacon" => "MetaAconC",
        other => bail!(
            "unknown activation `{other}`; known: silu gelu gelu_tanh hardswish mish relu leaky_relu frelu aconc metaacon"
        ),
    })
}

/// Runs the ablation.
pub fn run(args: &[String]) -> Result<()> {
    let acts: Vec<String> = flag(args, "--acts")
        .unwrap_or("silu,gelu,gelu_tanh,frelu,aconc,metaacon")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let model = flag(args, "--model").unwrap_or("yolov5n");
    let epochs = flag(args, "--epochs").unwrap_or("10");
    let imgsz = flag(args, "--imgsz").unwrap_or("128");
    let bs = flag(args, "--batch-size").unwrap_or("16");
    let seed = flag(args, "--seed").unwrap_or("0");
    // built-in data: the small-dataset hyp file; a user's data: upstream's default
    let hyp = flag(args, "--hyp").unwrap_or(if flag(args, "--data").is_some() {
        "hyp.scratch-low.yaml"
    } else {
        "hyp.synth.yaml"
    });
    let r = root();
    let base_path = {
        let p = std::path::PathBuf::from(model);
        if p.exists() {
            p
        } else {
            r.join(format!(
                "configs/models/{}.yaml",
                model.trim_end_matches(".yaml")
            ))
        }
    };
    let base = std::fs::read_to_string(&base_path)
        .with_context(|| format!("reading model {}", base_path.display()))?;
    let bin = release_cli()?;
    let dir = r.join("target/ablation");
    std::fs::create_dir_all(&dir)?;
    let data = match flag(args, "--data") {
        Some(d) => std::path::PathBuf::from(d).canonicalize()?,
        None => {
            let d = dir.join("data/data.yaml");
            if !d.exists() {
                cli(
                    &bin,
                    &dir,
                    &[
                        "dataset", "synth", "--out", "data", "--train", "240", "--val", "40",
                        "--imgsz", imgsz, "--seed", "0",
                    ],
                )?;
            }
            d
        }
    };
    let mut results: Vec<Value> = Vec::new();
    for act in &acts {
        let value = activation_value(act)?;
        // the base YAML with its activation line replaced (or added)
        let mut lines: Vec<String> = base
            .lines()
            .filter(|l| !l.trim_start().starts_with("activation:"))
            .map(String::from)
            .collect();
        lines.insert(0, format!("activation: {value} # xtask ablation"));
        let yaml = dir.join(format!(
            "{}-{act}.yaml",
            base_path.file_stem().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&yaml, lines.join("\n") + "\n")?;
        let y = yaml.to_string_lossy().to_string();
        let info: Value = serde_json::from_slice(
            &cli(
                &bin,
                &dir,
                &["info", "--model", &y, "--imgsz", "640", "--json"],
            )?
            .stdout,
        )?;
        let t = Instant::now();
        let out = cli(
            &bin,
            &dir,
            &[
                "train",
                "--data",
                &data.to_string_lossy(),
                "--cfg",
                &y,
                "--epochs",
                epochs,
                "--imgsz",
                imgsz,
                "--batch-size",
                bs,
                "--seed",
                seed,
                "--workers",
                "2",
                "--project",
                "runs",
                "--name",
                act,
                "--exist-ok",
            ],
        )?;
        let secs = t.elapsed().as_secs_f64();
        let m = parse_all_row(&String::from_utf8_lossy(&out.stdout))?;
        let lat: Value = {
            let o = cli(
                &bin,
                &dir,
                &[
                    "bench",
                    "--model",
                    &y,
                    "--imgsz",
                    "640",
                    "--threads",
                    "1",
                    "--runs",
                    "5",
                    "--json",
                ],
            )?;
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            serde_json::from_str(s.lines().last().unwrap_or("{}"))?
        };
        let ep: f64 = epochs.parse().unwrap_or(1.0);
        results.push(json!({
            "activation": act, "yaml_value": value, "map50": m[2], "map": m[3],
            "params": info["params"], "gflops": info["gflops"], "epoch_s": secs / ep,
            "latency_ms": lat["median_ms"],
        }));
    }
    let b = &results[0];
    let rel = |v: &Value, k: &str| {
        let (x, y) = (
            v[k].as_f64().unwrap_or(f64::NAN),
            b[k].as_f64().unwrap_or(f64::NAN),
        );
        format!("{x:.3} ({:+.1} %)", (x / y - 1.0) * 100.0)
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|v| {
            vec![
                v["activation"].as_str().unwrap_or("").to_string(),
                rel(v, "map50"),
                rel(v, "map"),
                format!("{}", v["params"]),
                format!("{}", v["gflops"]),
                rel(v, "epoch_s"),
                rel(v, "latency_ms"),
            ]
        })
        .collect();
    let md = format!(
        "# Activation ablation: {} on {} ({epochs} epochs, {imgsz} px, {hyp}, seed {seed})\n\nMachine: {}. \
         Relative to {} in parentheses; latency: batch 1 at 640, 1 thread, fused.\n\n{}",
        base_path.display(),
        data.display(),
        machine(),
        acts[0],
        md_table(
            &["activation", "mAP@0.5", "mAP@0.5:0.95", "params", "GFLOPs@640", "train s/epoch", "latency ms"],
            &rows
        )
    );
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("{md}\nwrote {}", dir.join("report.md").display());
    Ok(())
}
