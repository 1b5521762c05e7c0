//! `cargo xtask gpu-check`: everything that needs an NVIDIA GPU, in one run under a deadline.
//!
//! 1. every tensor op forward + backward on `cuda:0` vs the CPU (`yolo-tensor` test
//!    `cuda_ops`, 1e-4 relative), with `YOLO_REQUIRE_GPU=1` so a missing GPU fails;
//! 2. one yolov5s training step on `cuda:0` vs the CPU (`yolo-train` test `cuda_step`);
//! 3. the NCCL communicator at world size 1 (`yolo-dist --features nccl`, test `nccl_world1`);
//! 4. benchmarks with the release CLI: yolov5s training images/s at batch 32 × 640
//!    (`yolo-forge bench --device 0 --train`), forward latency at batch 1 and 32, peak device
//!    memory (the bench's own counter when it prints one, and the highest `nvidia-smi` reading
//!    during the training bench);
//! 5. when `python3 -c 'import torch; assert torch.cuda.is_available()'` works,
//!    `tools/bench_torch_gpu.py` (upstream YOLOv5 on the same GPU: fp32, fp32 without TF32,
//!    AMP; inference b1/b32) for the side-by-side table.
//!
//! Writes a markdown report to `target/gpu-check.md` (per-step logs in `target/gpu-check/logs/`)
//! and exits non-zero when a check fails or times out. The whole run, builds included, is held
//! to `--deadline-s` (default 480 s): a step still running then is killed (its process group)
//! and reported as timed out; later steps are reported as not run. Without a GPU it stops at
//! once with the reason (`--force` runs the steps anyway, e.g. to test this script).
//!
//! Options: `--torch-repo DIR` (upstream checkout for the PyTorch side; default
//! `$YOLOV5_REPO`, then `target/gpu-check/yolov5`, then the PyPI `yolov5` package),
//! `--skip-torch`, `--dev` (debug-profile builds: quicker to build, slower CPU references),
//! `--prepare` (build only, and copy the binaries, this program and a `--torch-repo` checkout
//! into `target/gpu-check/` for a machine without a toolchain or network), `--prebuilt DIR`
//! (use the binaries `--prepare` left in DIR instead of building).

use crate::util::{flag, has, md_table, root};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_DEADLINE_S: u64 = 480;
const MODEL: &str = "configs/models/yolov5s.yaml";

/// The executables the checks run.
#[derive(Clone, Debug, Default)]
struct Bins {
    cli: Option<PathBuf>,
    cuda_ops: Option<PathBuf>,
    cuda_step: Option<PathBuf>,
    nccl: Option<PathBuf>,
}

/// How one child process ended.
#[derive(Clone, Debug, PartialEq)]
enum End {
    Exited(i32),
    Signalled,
    TimedOut(u64),
    NotStarted(String),
}

struct Outcome {
    end: End,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.end == End::Exited(0)
    }

    fn verdict(&self) -> String {
        match &self.end {
            End::Exited(0) => "pass".into(),
            End::Exited(c) => format!("FAIL (exit {c})"),
            End::Signalled => "FAIL (killed by a signal)".into(),
            End::TimedOut(s) => format!("TIMED OUT (killed after {s} s)"),
            End::NotStarted(why) => format!("FAIL (not started: {why})"),
        }
    }
}

/// The run's clock: a hard deadline for the whole check.
struct Clock {
    start: Instant,
    deadline: Instant,
}

impl Clock {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// One row of the checks table.
struct CheckRow {
    name: String,
    verdict: String,
    secs: Option<f64>,
    detail: String,
}

impl CheckRow {
    fn failed(&self) -> bool {
        self.verdict != "pass" && !self.verdict.starts_with("skipped")
    }
}

fn logs_dir() -> PathBuf {
    root().join("target/gpu-check/logs")
}

/// Kills the whole process group of a child (cargo and the compilers or tests it started).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

/// Runs `cmd` with at most `cap` (and never past the deadline); stdout is collected (and
/// echoed unless `quiet`), stderr echoed; both go to `logs/<log>.log`.
fn run(clock: &Clock, log: &str, cmd: &mut Command, cap: Duration, quiet: bool) -> Outcome {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let limit = cap.min(clock.left());
    if limit < Duration::from_secs(2) {
        return Outcome {
            end: End::NotStarted("the deadline has passed".into()),
            stdout: String::new(),
            stderr: String::new(),
            secs: 0.0,
        };
    }
    let _ = std::fs::create_dir_all(logs_dir());
    let log_path = logs_dir().join(format!("{log}.log"));
    let logf = Arc::new(Mutex::new(std::fs::File::create(&log_path).ok()));
    if let Some(f) = logf.lock().unwrap().as_mut() {
        let _ = writeln!(f, "$ {cmd:?}");
    }
    eprintln!("gpu-check: [{log}] {cmd:?} (limit {} s)", limit.as_secs());
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                end: End::NotStarted(format!("{e}")),
                stdout: String::new(),
                stderr: String::new(),
                secs: 0.0,
            }
        }
    };
    let pid = child.id();
    let collected = Arc::new(Mutex::new(String::new()));
    let collected_err = Arc::new(Mutex::new(String::new()));
    let pump = |r: Box<dyn Read + Send>, stdout: bool, echo: bool| {
        let collected = if stdout {
            collected.clone()
        } else {
            collected_err.clone()
        };
        let logf = logf.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
                if echo {
                    eprintln!("{line}");
                }
                if let Some(f) = logf.lock().unwrap().as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let mut c = collected.lock().unwrap();
                if stdout || c.len() < 1 << 20 {
                    c.push_str(&line);
                    c.push('\n');
                }
            }
        })
    };
    let out_thread = pump(Box::new(child.stdout.take().unwrap()), true, !quiet);
    let err_thread = pump(Box::new(child.stderr.take().unwrap()), false, true);
    let end = loop {
        match child.try_wait() {
            Ok(Some(st)) => break exit_end(st),
            Ok(None) if t0.elapsed() >= limit => {
                kill_group(pid);
                let _ = child.kill();
                let _ = child.wait();
                break End::TimedOut(limit.as_secs());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => break End::NotStarted(format!("wait: {e}")),
        }
    };
    // grandchildren may hold the pipes open after a kill: do not wait on them forever
    for t in [out_thread, err_thread] {
        let t1 = Instant::now();
        while !t.is_finished() && t1.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let stdout = collected.lock().unwrap().clone();
    let stderr = collected_err.lock().unwrap().clone();
    if let End::TimedOut(s) = end {
        eprintln!("gpu-check: [{log}] killed after {s} s");
    }
    Outcome {
        end,
        stdout,
        stderr,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// The most telling line of a failed child's stderr: a test's panic message, else the last
/// line that says `error`, else the last line.
fn why(o: &Outcome) -> String {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        if let Some(msg) = lines.get(i + 1) {
            return msg.trim().to_string();
        }
    }
    lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .map(|l| l.trim().chars().take(400).collect())
        .unwrap_or_default()
}

fn exit_end(st: ExitStatus) -> End {
    match st.code() {
        Some(c) => End::Exited(c),
        None => End::Signalled,
    }
}

fn cargo_cmd() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// The executables a cargo `--message-format=json` build reported, by target name.
fn executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter_map(|v| {
            let exe = v["executable"].as_str()?;
            Some((
                v["target"]["name"].as_str().unwrap_or_default().to_string(),
                PathBuf::from(exe),
            ))
        })
        .collect()
}

/// The GPUs `nvidia-smi` lists, or why there are none.
fn nvidia_gpus() -> std::result::Result<Vec<String>, String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let gpus: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            if gpus.is_empty() {
                Err("nvidia-smi lists no GPU".into())
            } else {
                Ok(gpus)
            }
        }
        Ok(o) => Err(format!(
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => {
            let proc_gpus = std::fs::read_dir("/proc/driver/nvidia/gpus")
                .map(|d| d.count())
                .unwrap_or(0);
            if proc_gpus > 0 {
                Ok(vec![format!(
                    "{proc_gpus} NVIDIA GPU(s) in /proc/driver/nvidia/gpus (nvidia-smi not runnable: {e})"
                )])
            } else {
                Err(format!(
                    "no NVIDIA driver: nvidia-smi not runnable ({e}) and /proc/driver/nvidia/gpus absent"
                ))
            }
        }
    }
}

/// Samples `nvidia-smi` memory.used of GPU 0 until dropped; `max_mib()` is the highest reading.
struct MemSampler {
    child: Option<std::process::Child>,
    max: Arc<Mutex<Option<f64>>>,
}

impl MemSampler {
    fn start() -> MemSampler {
        let max = Arc::new(Mutex::new(None));
        let child = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-i",
                "0",
                "-lms",
                "200",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut child = child;
        if let Some(out) = child.as_mut().and_then(|c| c.stdout.take()) {
            let max = max.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if let Ok(v) = l.trim().parse::<f64>() {
                        let mut m = max.lock().unwrap();
                        *m = Some(m.map_or(v, |x: f64| x.max(v)));
                    }
                }
            });
        }
        MemSampler { child, max }
    }

    fn max_mib(&self) -> Option<f64> {
        *self.max.lock().unwrap()
    }
}

impl Drop for MemSampler {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last JSON object line of `stdout`.
fn last_json(stdout: &str) -> Option<Value> {
    stdout
        .lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
}

/// A peak device-memory figure in a bench JSON, in MiB, with its key: any key naming a peak and
/// the GPU (`peak_device_mib`, `cuda_peak_bytes`, `peak_gpu_mem_mib`…).
fn peak_device_mib(v: &Value) -> Option<(String, f64)> {
    let obj = v.as_object()?;
    for (k, val) in obj {
        let lk = k.to_ascii_lowercase();
        if lk.contains("peak")
            && ["gpu", "cuda", "device", "vram"]
                .iter()
                .any(|d| lk.contains(d))
        {
            if let Some(x) = val.as_f64() {
                let mib = if lk.ends_with("bytes") {
                    x / (1u64 << 20) as f64
                } else if lk.ends_with("gib") {
                    x * 1024.0
                } else {
                    x
                };
                return Some((k.clone(), mib));
            }
        }
        if val.is_object() {
            if let Some(r) = peak_device_mib(val) {
                return Some(r);
            }
        }
    }
    None
}

/// Lines of a test's output that carry the given prefix (`cuda_ops |`…) or a skip/panic notice.
fn report_lines<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| l.starts_with(prefix) || l.starts_with("skipped:"))
        .collect()
}

/// Copies `src` (a directory) into `dst`, skipping `.git`.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_name() == ".git" {
            continue;
        }
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// Builds what the checks need; `None` entries did not build.
fn build(clock: &Clock, dev: bool, rows: &mut Vec<CheckRow>) -> Bins {
    let mut bins = Bins::default();
    let profile: &[&str] = if dev { &[] } else { &["--release"] };
    let specs: [(&str, Vec<&str>, &str); 4] = [
        ("build-cli", vec!["build", "-p", "yolo-cli"], "yolo-forge"),
        (
            "build-cuda_ops",
            vec![
                "test",
                "--no-run",
                "-p",
                "yolo-tensor",
                "--test",
                "cuda_ops",
            ],
            "cuda_ops",
        ),
        (
            "build-cuda_step",
            vec![
                "test",
                "--no-run",
                "-p",
                "yolo-train",
                "--test",
                "cuda_step",
            ],
            "cuda_step",
        ),
        (
            "build-nccl",
            vec![
                "test",
                "--no-run",
                "-p",
                "yolo-dist",
                "--features",
                "nccl",
                "--test",
                "nccl_world1",
            ],
            "nccl_world1",
        ),
    ];
    let mut total = 0.0;
    let mut failures = Vec::new();
    for (log, args, target) in specs {
        let mut c = cargo_cmd();
        c.args(&args)
            .args(profile)
            .arg("--message-format=json-render-diagnostics");
        let o = run(clock, log, &mut c, Duration::from_secs(3600), true);
        total += o.secs;
        let exe = executables(&o.stdout)
            .into_iter()
            .find(|(n, _)| n == target)
            .map(|(_, p)| p);
        match (&o.end, exe) {
            (End::Exited(0), Some(p)) => match target {
                "yolo-forge" => bins.cli = Some(p),
                "cuda_ops" => bins.cuda_ops = Some(p),
                "cuda_step" => bins.cuda_step = Some(p),
                _ => bins.nccl = Some(p),
            },
            (End::Exited(0), None) => failures.push(format!("{target}: no executable reported")),
            _ => failures.push(format!("{target}: {}: {}", o.verdict(), why(&o))),
        }
    }
    rows.push(CheckRow {
        name: format!("build ({} profile)", if dev { "dev" } else { "release" }),
        verdict: if failures.is_empty() {
            "pass".into()
        } else {
            "FAIL".into()
        },
        secs: Some(total),
        detail: if failures.is_empty() {
            "yolo-forge, cuda_ops, cuda_step, nccl_world1".into()
        } else {
            format!(
                "{} (logs: target/gpu-check/logs/build-*.log)",
                failures.join("; ")
            )
        },
    });
    bins
}

/// The binaries `--prepare` copied into `dir`.
fn prebuilt(dir: &Path) -> Bins {
    let p = |n: &str| Some(dir.join(n)).filter(|p| p.exists());
    Bins {
        cli: p("yolo-forge"),
        cuda_ops: p("cuda_ops"),
        cuda_step: p("cuda_step"),
        nccl: p("nccl_world1"),
    }
}

/// `--prepare`: copies the built binaries (stripped) and this program to `target/gpu-check/bin`,
/// and a `--torch-repo` checkout to `target/gpu-check/yolov5`.
fn prepare(bins: &Bins, args: &[String]) -> Result<()> {
    let dir = root().join("target/gpu-check/bin");
    std::fs::create_dir_all(&dir)?;
    let me = std::env::current_exe().context("locating this program")?;
    let list = [
        (bins.cli.as_ref(), "yolo-forge"),
        (bins.cuda_ops.as_ref(), "cuda_ops"),
        (bins.cuda_step.as_ref(), "cuda_step"),
        (bins.nccl.as_ref(), "nccl_world1"),
        (Some(&me), "xtask"),
    ];
    let mut total = 0u64;
    for (src, name) in list {
        let src = src.with_context(|| format!("{name} did not build"))?;
        let dst = dir.join(name);
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(src, &dst).with_context(|| format!("copying {}", src.display()))?;
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(&dst)
            .status();
        total += std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
    }
    if let Some(repo) = flag(args, "--torch-repo") {
        let dst = root().join("target/gpu-check/yolov5");
        let _ = std::fs::remove_dir_all(&dst);
        copy_tree(Path::new(repo), &dst)?;
        println!("copied the upstream checkout {repo} to {}", dst.display());
    }
    println!(
        "prepared {} ({:.1} MiB of binaries). On the GPU machine, from the repository root:\n  \
         target/gpu-check/bin/xtask gpu-check --prebuilt target/gpu-check/bin\n\
         (carry target/gpu-check: it holds the binaries and, with --torch-repo, the checkout)",
        dir.display(),
        total as f64 / (1u64 << 20) as f64
    );
    Ok(())
}

/// Runs one test binary as a check.
#[allow(clippy::too_many_arguments)]
fn test_check(
    clock: &Clock,
    rows: &mut Vec<CheckRow>,
    name: &str,
    log: &str,
    exe: Option<&PathBuf>,
    prefix: &str,
    cap: u64,
    env: &[(&str, &str)],
) -> Vec<String> {
    let Some(exe) = exe else {
        rows.push(CheckRow {
            name: name.into(),
            verdict: "FAIL (not built)".into(),
            secs: None,
            detail: "see the build row".into(),
        });
        return Vec::new();
    };
    let mut c = Command::new(exe);
    c.args(["--nocapture", "--test-threads=1"])
        .env("YOLO_REQUIRE_GPU", "1")
        .envs(env.iter().copied())
        .current_dir(root());
    let o = run(clock, log, &mut c, Duration::from_secs(cap), false);
    let lines: Vec<String> = report_lines(&o.stdout, prefix)
        .into_iter()
        .map(String::from)
        .collect();
    let fails: Vec<&String> = lines.iter().filter(|l| l.contains("| FAIL")).collect();
    let detail = if !fails.is_empty() {
        let shown: Vec<String> = fails.iter().take(8).map(|l| l.to_string()).collect();
        format!(
            "{} failing: {}{}",
            fails.len(),
            shown.join("; "),
            if fails.len() > 8 { "; …" } else { "" }
        )
    } else if let Some(s) = lines.iter().find(|l| l.contains("summary")) {
        s.clone()
    } else if !lines.is_empty() {
        lines.join("; ")
    } else if o.ok() {
        "passed".into()
    } else {
        format!("{} (target/gpu-check/logs/{log}.log)", why(&o))
    };
    rows.push(CheckRow {
        name: name.into(),
        verdict: o.verdict(),
        secs: Some(o.secs),
        detail,
    });
    lines
}

/// Numbers of one yolo-forge bench run.
#[derive(Default)]
struct BenchNums {
    median_ms: Option<f64>,
    peak: Option<(String, f64)>,
    smi_peak_mib: Option<f64>,
}

fn bench_cli(
    clock: &Clock,
    rows: &mut Vec<CheckRow>,
    cli: &Path,
    name: &str,
    log: &str,
    extra: &[&str],
    cap: u64,
) -> BenchNums {
    let mut c = Command::new(cli);
    c.args([
        "bench", "--device", "0", "--model", MODEL, "--imgsz", "640", "--json",
    ])
    .args(extra)
    .current_dir(root());
    let sampler = MemSampler::start();
    let o = run(clock, log, &mut c, Duration::from_secs(cap), false);
    let smi = sampler.max_mib();
    drop(sampler);
    let v = last_json(&o.stdout);
    let nums = BenchNums {
        median_ms: v.as_ref().and_then(|v| v["median_ms"].as_f64()),
        peak: v.as_ref().and_then(peak_device_mib),
        smi_peak_mib: smi,
    };
    let detail = match (&nums.median_ms, o.ok()) {
        (Some(ms), true) => format!("median {ms:.1} ms"),
        (None, true) => "no median_ms in the bench JSON".into(),
        _ => format!("{} (target/gpu-check/logs/{log}.log)", why(&o)),
    };
    let verdict = if o.ok() && nums.median_ms.is_none() {
        "FAIL (no JSON)".into()
    } else {
        o.verdict()
    };
    rows.push(CheckRow {
        name: name.into(),
        verdict,
        secs: Some(o.secs),
        detail,
    });
    nums
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.prec$}"))
}

/// Runs the check.
pub fn run_check(args: &[String]) -> Result<()> {
    let deadline_s = flag(args, "--deadline-s")
        .map(|s| s.parse::<u64>())
        .transpose()
        .context("--deadline-s takes seconds")?
        .unwrap_or(DEFAULT_DEADLINE_S);
    let start = Instant::now();
    let clock = Clock {
        start,
        deadline: start + Duration::from_secs(deadline_s),
    };
    let dev = has(args, "--dev");
    let mut rows: Vec<CheckRow> = Vec::new();

    if has(args, "--prepare") {
        let bins = build(&clock, dev, &mut rows);
        for r in &rows {
            eprintln!("{}: {} {}", r.name, r.verdict, r.detail);
        }
        return prepare(&bins, args);
    }

    let gpus = nvidia_gpus();
    let gpu_desc = match (&gpus, has(args, "--force")) {
        (Ok(g), _) => g.join("; "),
        (Err(why), false) => {
            // a plain message and exit status 2, no error chain: this is the expected answer
            // on a machine without a GPU
            eprintln!(
                "gpu-check needs an NVIDIA GPU and this machine has none: {why}.\n\
                 Run it on a machine where `nvidia-smi` lists a GPU (--force runs the steps anyway)."
            );
            std::process::exit(2);
        }
        (Err(why), true) => format!("none ({why}); --force given"),
    };
    eprintln!("gpu-check: GPU: {gpu_desc}; deadline {deadline_s} s");

    let bins = match flag(args, "--prebuilt") {
        Some(dir) => {
            let b = prebuilt(Path::new(dir));
            rows.push(CheckRow {
                name: "prebuilt binaries".into(),
                verdict: if b.cli.is_some()
                    && b.cuda_ops.is_some()
                    && b.cuda_step.is_some()
                    && b.nccl.is_some()
                {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
                secs: None,
                detail: format!("from {dir}"),
            });
            b
        }
        None => build(&clock, dev, &mut rows),
    };

    // what the CUDA driver says, through our own probe
    let mut cuda_status = String::new();
    if let Some(cli) = &bins.cli {
        let mut c = Command::new(cli);
        c.arg("devices").current_dir(root());
        let o = run(&clock, "devices", &mut c, Duration::from_secs(30), true);
        cuda_status = o.stdout.trim().to_string();
    }

    // 1-3: correctness
    let ops_lines = test_check(
        &clock,
        &mut rows,
        "every op fwd+bwd, cuda:0 vs CPU (1e-4)",
        "cuda_ops",
        bins.cuda_ops.as_ref(),
        "cuda_ops |",
        150,
        &[],
    );
    // the same table with cuDNN switched off: the im2col + cuBLAS and direct conv kernels
    test_check(
        &clock,
        &mut rows,
        "every op again without cuDNN (YOLO_CUDNN=0)",
        "cuda_ops_no_cudnn",
        bins.cuda_ops.as_ref(),
        "cuda_ops | summary",
        120,
        &[("YOLO_CUDNN", "0")],
    );
    let step_lines = test_check(
        &clock,
        &mut rows,
        "yolov5s training step, cuda:0 vs CPU",
        "cuda_step",
        bins.cuda_step.as_ref(),
        "cuda_step |",
        180,
        &[],
    );
    test_check(
        &clock,
        &mut rows,
        "NCCL communicator, world size 1",
        "nccl",
        bins.nccl.as_ref(),
        "nccl |",
        90,
        &[],
    );

    // 4: benchmarks with the CLI
    let (mut train, mut b1, mut b32) = (
        BenchNums::default(),
        BenchNums::default(),
        BenchNums::default(),
    );
    match &bins.cli {
        None => rows.push(CheckRow {
            name: "benchmarks".into(),
            verdict: "FAIL (CLI not built)".into(),
            secs: None,
            detail: String::new(),
        }),
        Some(cli) => {
            let help = Command::new(cli)
                .args(["bench", "--help"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if !help.contains("--device") {
                rows.push(CheckRow {
                    name: "benchmarks".into(),
                    verdict: "FAIL".into(),
                    secs: None,
                    detail: "`yolo-forge bench` has no --device flag yet (it is being added to \
                             crates/cli); the GPU benchmarks need `bench --device 0 [--train] \
                             --batch N`"
                        .into(),
                });
            } else {
                train = bench_cli(
                    &clock,
                    &mut rows,
                    cli,
                    "bench: yolov5s train step b32@640",
                    "bench-train",
                    &["--train", "--batch", "32", "--runs", "10"],
                    180,
                );
                b1 = bench_cli(
                    &clock,
                    &mut rows,
                    cli,
                    "bench: yolov5s forward b1@640",
                    "bench-b1",
                    &["--batch", "1", "--runs", "30"],
                    60,
                );
                b32 = bench_cli(
                    &clock,
                    &mut rows,
                    cli,
                    "bench: yolov5s forward b32@640",
                    "bench-b32",
                    &["--batch", "32", "--runs", "10"],
                    90,
                );
            }
        }
    }

    // 5: PyTorch on the same GPU
    let mut torch: Option<Value> = None;
    if has(args, "--skip-torch") {
        rows.push(CheckRow {
            name: "PyTorch side".into(),
            verdict: "skipped (--skip-torch)".into(),
            secs: None,
            detail: String::new(),
        });
    } else {
        let mut probe = Command::new("python3");
        probe.args([
            "-c",
            "import torch; assert torch.cuda.is_available(); print(torch.__version__)",
        ]);
        let p = run(
            &clock,
            "torch-probe",
            &mut probe,
            Duration::from_secs(60),
            true,
        );
        if !p.ok() {
            rows.push(CheckRow {
                name: "PyTorch side".into(),
                verdict: "skipped (no CUDA PyTorch)".into(),
                secs: Some(p.secs),
                detail: "python3 -c 'import torch; assert torch.cuda.is_available()' failed".into(),
            });
        } else {
            let repo = flag(args, "--torch-repo")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("YOLOV5_REPO").map(PathBuf::from))
                .or_else(|| {
                    Some(root().join("target/gpu-check/yolov5"))
                        .filter(|p| p.join("models/yolo.py").exists())
                });
            let mut c = Command::new("python3");
            c.arg(root().join("tools/bench_torch_gpu.py"))
                .args(["--cfg", MODEL, "--device", "cuda:0"]);
            if let Some(r) = &repo {
                c.arg("--repo").arg(r);
            }
            c.current_dir(root());
            let o = run(&clock, "torch", &mut c, Duration::from_secs(240), false);
            torch = last_json(&o.stdout);
            rows.push(CheckRow {
                name: "PyTorch side (tools/bench_torch_gpu.py)".into(),
                verdict: if o.ok() && torch.is_some() {
                    "pass".into()
                } else {
                    o.verdict()
                },
                secs: Some(o.secs),
                detail: torch.as_ref().map_or_else(
                    || "see target/gpu-check/logs/torch.log".into(),
                    |t| {
                        format!(
                            "torch {}, {}; loss: {}",
                            t["torch"].as_str().unwrap_or("?"),
                            t["upstream"].as_str().unwrap_or("?"),
                            t["loss"].as_str().unwrap_or("?")
                        )
                    },
                ),
            });
        }
    }

    // report
    let elapsed = clock.start.elapsed().as_secs_f64();
    let mut md = String::from("## yolo-forge gpu-check\n\n");
    md.push_str(&format!("GPU (nvidia-smi): {gpu_desc}\n\n"));
    if !cuda_status.is_empty() {
        md.push_str(&format!(
            "`yolo-forge devices`:\n```\n{cuda_status}\n```\n\n"
        ));
    }
    md.push_str(&format!(
        "Total {elapsed:.0} s of a {deadline_s} s deadline; machine: {}\n\n",
        crate::util::machine()
    ));
    md.push_str("### Checks\n\n");
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.verdict.clone(),
                r.secs.map_or("–".into(), |s| format!("{s:.0} s")),
                r.detail.replace('|', "/"),
            ]
        })
        .collect();
    md.push_str(&md_table(&["check", "result", "time", "detail"], &table));
    if !step_lines.is_empty() {
        md.push_str("\nTraining step details:\n\n```\n");
        for l in &step_lines {
            md.push_str(l);
            md.push('\n');
        }
        md.push_str("```\n");
    }
    let op_fails: Vec<&String> = ops_lines.iter().filter(|l| l.contains("| FAIL")).collect();
    if !op_fails.is_empty() {
        md.push_str("\nOps that differ:\n\n```\n");
        for l in &op_fails {
            md.push_str(l);
            md.push('\n');
        }
        md.push_str("```\n");
    }

    md.push_str("\n### Benchmarks (yolov5s, 640 px)\n\n");
    let t = |mode: &str, key: &str| torch.as_ref().and_then(|t| t["train"][mode][key].as_f64());
    let ti = |b: &str| {
        torch
            .as_ref()
            .and_then(|t| t["infer"][b]["median_ms"].as_f64())
    };
    let ips = |n: &BenchNums, batch: f64| n.median_ms.map(|ms| batch * 1e3 / ms);
    let ours_peak = match (&train.peak, train.smi_peak_mib) {
        (Some((k, v)), Some(s)) => format!("{v:.0} ({k}); nvidia-smi max {s:.0}"),
        (Some((k, v)), None) => format!("{v:.0} ({k})"),
        (None, Some(s)) => format!("nvidia-smi max {s:.0}"),
        (None, None) => "–".into(),
    };
    let bench_rows = vec![
        vec![
            "train step b32, images/s".into(),
            fmt_opt(ips(&train, 32.0), 1),
            fmt_opt(t("fp32", "images_per_s"), 1),
            fmt_opt(t("fp32_strict", "images_per_s"), 1),
            fmt_opt(t("amp", "images_per_s"), 1),
        ],
        vec![
            "forward b1 (fused), ms".into(),
            fmt_opt(b1.median_ms, 2),
            fmt_opt(ti("b1"), 2),
            "–".into(),
            "–".into(),
        ],
        vec![
            "forward b32 (fused), ms".into(),
            fmt_opt(b32.median_ms, 1),
            fmt_opt(ti("b32"), 1),
            "–".into(),
            "–".into(),
        ],
        vec![
            "peak device memory, train b32, MiB".into(),
            ours_peak,
            fmt_opt(t("fp32", "peak_mem_mib"), 0),
            fmt_opt(t("fp32_strict", "peak_mem_mib"), 0),
            fmt_opt(t("amp", "peak_mem_mib"), 0),
        ],
    ];
    md.push_str(&md_table(
        &[
            "workload",
            "yolo-forge (f32)",
            "PyTorch fp32 (TF32 conv default)",
            "PyTorch fp32, TF32 off",
            "PyTorch AMP fp16",
        ],
        &bench_rows,
    ));
    md.push_str(
        "\nyolo-forge: `yolo-forge bench --device 0` medians (training step: forward, \
         ComputeLoss, backward, SGD); PyTorch: `tools/bench_torch_gpu.py`, same workloads, \
         cudnn.benchmark on, peak = torch.cuda.max_memory_allocated (nvidia-smi readings add \
         the CUDA context).\n",
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.name.as_str())
        .collect();
    md.push_str(&format!(
        "\n**{}**\n",
        if failed.is_empty() {
            "All checks passed.".to_string()
        } else {
            format!("Failed: {}", failed.join(", "))
        }
    ));
    let path = root().join("target/gpu-check.md");
    std::fs::create_dir_all(root().join("target"))?;
    std::fs::write(&path, &md)?;
    println!("{md}");
    println!("wrote {}", path.display());
    if !failed.is_empty() {
        bail!(
            "gpu-check: {} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_keys_are_found_in_any_unit() {
        let v: Value = serde_json::from_str(
            r#"{"median_ms": 3.0, "peak_rss_mib": 900, "stats": {"cuda_peak_bytes": 2097152}}"#,
        )
        .unwrap();
        assert_eq!(peak_device_mib(&v), Some(("cuda_peak_bytes".into(), 2.0)));
        let v: Value = serde_json::from_str(r#"{"peak_device_mib": 512.5}"#).unwrap();
        assert_eq!(peak_device_mib(&v), Some(("peak_device_mib".into(), 512.5)));
        let v: Value = serde_json::from_str(r#"{"peak_rss_mib": 900}"#).unwrap();
        assert_eq!(peak_device_mib(&v), None);
    }

    #[test]
    fn cargo_json_executables_are_parsed() {
        let s = r#"{"reason":"compiler-artifact","target":{"name":"cuda_ops"},"executable":"/t/cuda_ops-1"}
{"reason":"compiler-artifact","target":{"name":"yolo_tensor"},"executable":null}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables(s),
            vec![("cuda_ops".to_string(), PathBuf::from("/t/cuda_ops-1"))]
        );
    }

    #[test]
    fn a_child_past_its_limit_is_killed_with_its_group() {
        let clock = Clock {
            start: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        let t = Instant::now();
        let mut c = Command::new("sh");
        // the grandchild `sleep` must die too (process-group kill)
        c.args(["-c", "echo started; sleep 30; echo never"]);
        let o = run(
            &clock,
            "selftest-timeout",
            &mut c,
            Duration::from_secs(3),
            true,
        );
        assert_eq!(o.end, End::TimedOut(3));
        assert!(o.stdout.contains("started") && !o.stdout.contains("never"));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo 'cuda_ops | x | ok'; echo noise; exit 0"]);
        let o = run(
            &clock,
            "selftest-ok",
            &mut ok,
            Duration::from_secs(10),
            true,
        );
        assert!(o.ok());
        assert_eq!(
            report_lines(&o.stdout, "cuda_ops |"),
            vec!["cuda_ops | x | ok"]
        );
    }

    #[test]
    fn nothing_starts_past_the_deadline() {
        let clock = Clock {
            start: Instant::now(),
            deadline: Instant::now(),
        };
        let o = run(
            &clock,
            "selftest-late",
            Command::new("true").arg("x"),
            Duration::from_secs(5),
            true,
        );
        assert!(matches!(o.end, End::NotStarted(_)));
        assert!(!o.ok());
    }
}
