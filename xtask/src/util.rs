//! Helpers: running cargo and the release CLI, flags, tables.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root: the nearest folder above the working directory holding
/// `xtask/Cargo.toml` (so a copied xtask binary works in another checkout, as
/// `gpu-check --prebuilt` needs), else xtask's parent at build time.
pub fn root() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(r) = cwd
            .ancestors()
            .find(|d| d.join("xtask/Cargo.toml").is_file() && d.join("Cargo.toml").is_file())
        {
            return r.to_path_buf();
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Runs `cargo args…` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(&[], args)
}

/// [`cargo`] with extra environment variables for the child.
pub fn cargo_env(env: &[(&str, &str)], args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("xtask: {}cargo {}", shown.concat(), args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the release CLI and returns its path.
pub fn release_cli() -> Result<PathBuf> {
    cargo(&["build", "--release", "-p", "yolo-cli"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let p = target.join("release/yolo-forge");
    if !p.exists() {
        bail!("built the CLI but {} is missing", p.display());
    }
    Ok(p)
}

/// Runs the CLI with `args` in `cwd`; fails with its stderr on a non-zero exit.
pub fn cli(bin: &Path, cwd: &Path, args: &[&str]) -> Result<Output> {
    eprintln!("xtask: yolo-forge {}", args.join(" "));
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("`yolo-forge {}` failed ({})", args.join(" "), out.status);
    }
    Ok(out)
}

/// The value after `--name` in `args`, if present.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Whether `--name` is present.
pub fn has(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// Parses the `all` row of a validation table: (P, R, mAP50, mAP50-95).
pub fn parse_all_row(stdout: &str) -> Result<[f64; 4]> {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("all"))
        .context("no `all` row in the validation output")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(3)
        .map(|t| t.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("bad `all` row: {line}"))?;
    if v.len() != 4 {
        bail!("bad `all` row: {line}");
    }
    Ok([v[0], v[1], v[2], v[3]])
}

/// A markdown table.
pub fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        vec!["---"; header.len()].join("|")
    );
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

/// Machine facts for reports: CPU model, cores, date.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {date}")
}
