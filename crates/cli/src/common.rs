//! Shared pieces of the subcommands: model loading, built-in configs, run folders, devices.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use yolo_models::{Model, ModelConfig};
use yolo_tensor::Device;

/// Model YAML files compiled into the binary, usable by name from any folder
/// (`--cfg yolov5n.yaml`), as upstream resolves names inside its repository.
pub const BUILTIN_MODELS: &[(&str, &str)] = &[
    (
        "yolov5n.yaml",
        include_str!("../../../configs/models/yolov5n.yaml"),
    ),
    (
        "yolov5s.yaml",
        include_str!("../../../configs/models/yolov5s.yaml"),
    ),
    (
        "yolov5m.yaml",
        include_str!("../../../configs/models/yolov5m.yaml"),
    ),
    (
        "yolov7-tiny.yaml",
        include_str!("../../../configs/models/yolov7-tiny.yaml"),
    ),
];

/// Hyper-parameter files compiled into the binary.
pub const BUILTIN_HYPS: &[(&str, &str)] = &[
    (
        "hyp.scratch-low.yaml",
        include_str!("../../../configs/hyp/hyp.scratch-low.yaml"),
    ),
    (
        "hyp.scratch-med.yaml",
        include_str!("../../../configs/hyp/hyp.scratch-med.yaml"),
    ),
    (
        "hyp.scratch-high.yaml",
        include_str!("../../../configs/hyp/hyp.scratch-high.yaml"),
    ),
    (
        "hyp.scratch.p5.yaml",
        include_str!("../../../configs/hyp/hyp.scratch.p5.yaml"),
    ),
    (
        "hyp.scratch.tiny.yaml",
        include_str!("../../../configs/hyp/hyp.scratch.tiny.yaml"),
    ),
    (
        "hyp.synth.yaml",
        include_str!("../../../configs/hyp/hyp.synth.yaml"),
    ),
    (
        "hyp.siou-focal.yaml",
        include_str!("../../../configs/hyp/hyp.siou-focal.yaml"),
    ),
];

/// A file given on the command line, or the built-in file of that name. Returns the path to
/// read: the file itself, or the built-in text written into `spill_dir`.
pub fn resolve_config(
    given: &Path,
    builtins: &[(&str, &str)],
    spill_dir: &Path,
    what: &str,
) -> Result<PathBuf> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let name = given
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let want = if name.ends_with(".yaml") {
        name.clone()
    } else {
        format!("{name}.yaml")
    };
    if let Some((n, text)) = builtins.iter().find(|(n, _)| *n == want) {
        std::fs::create_dir_all(spill_dir)
            .with_context(|| format!("creating {}", spill_dir.display()))?;
        let p = spill_dir.join(n);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        return Ok(p);
    }
    let known: Vec<&str> = builtins.iter().map(|(n, _)| *n).collect();
    bail!(
        "{what} file {} does not exist (built-in names: {})",
        given.display(),
        known.join(", ")
    )
}

/// What `--device` asks for, parsed as upstream `select_device` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// `cpu`, or nothing given.
    Cpu,
    /// `0`, `0,1,2,3`, `cuda:0`, `cuda`: these CUDA ordinals, in order.
    Cuda(Vec<usize>),
}

/// Parses `--device`: `cpu`, `0`, `0,1,2,3`, `cuda:0` (also `cuda:0,cuda:1`, `cuda`), or empty
/// (the default: CPU, as long as there is no CUDA op backend). Malformed lists are errors.
pub fn parse_device(device: &str) -> Result<DeviceRequest> {
    let d = device.trim().to_ascii_lowercase();
    if d.is_empty() || d == "cpu" || d == "none" {
        return Ok(DeviceRequest::Cpu);
    }
    if d == "mps" {
        bail!("--device {device}: Apple MPS is not supported; use --device cpu");
    }
    if d == "cuda" {
        return Ok(DeviceRequest::Cuda(vec![0]));
    }
    let mut ordinals = Vec::new();
    for (i, part) in d.split(',').enumerate() {
        let p = part.trim();
        let p = p.strip_prefix("cuda:").unwrap_or(p).trim();
        if p.is_empty() {
            bail!(
                "--device {device}: item {} of the list is empty; give cpu, a CUDA ordinal (0), a list (0,1,2,3) or cuda:0",
                i + 1
            );
        }
        let n: usize = p.parse().map_err(|_| {
            anyhow::anyhow!(
                "--device {device}: {part:?} is not a CUDA device ordinal; give cpu, 0, 0,1,2,3 or cuda:0"
            )
        })?;
        if ordinals.contains(&n) {
            bail!("--device {device}: CUDA device {n} is listed twice");
        }
        ordinals.push(n);
    }
    Ok(DeviceRequest::Cuda(ordinals))
}

/// `--device`, checked: `[Device::Cpu]`, or every listed CUDA device after making sure the
/// driver reports it and it can hold a tensor (so a machine without a GPU, or a build whose
/// CUDA backend cannot run, fails here before anything is loaded). The error says what cudarc
/// found on this machine.
pub fn select_devices(device: &str) -> Result<Vec<Device>> {
    let ordinals = match parse_device(device)? {
        DeviceRequest::Cpu => return Ok(vec![Device::Cpu]),
        DeviceRequest::Cuda(o) => o,
    };
    let status = yolo_tensor::cuda_status()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let mut unusable = Vec::new();
    for &n in &ordinals {
        let why = match Device::cuda(n) {
            Err(yolo_tensor::Error::DeviceUnavailable { reason, .. }) => Some(reason),
            Err(e) => Some(e.to_string()),
            Ok(d) => yolo_tensor::Tensor::zeros(&[1], d)
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(why) = why {
            unusable.push((n, why));
        }
    }
    if unusable.is_empty() {
        return Ok(ordinals.into_iter().map(Device::Cuda).collect());
    }
    let which: Vec<String> = unusable.iter().map(|(n, _)| format!("cuda:{n}")).collect();
    // per-device findings the driver summary does not already say (missing ordinals, a
    // backend that cannot allocate)
    let extra: Vec<String> = unusable
        .iter()
        .filter(|(_, why)| !status.contains(why.as_str()))
        .map(|(n, why)| format!("cuda:{n}: {why}"))
        .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join("; "))
    };
    bail!(
        "--device {device}: CUDA requested, but {} not available here; use --device cpu. What cudarc found on this machine: {status}{extra}.",
        if which.len() == 1 {
            format!("{} is", which[0])
        } else {
            format!("{} are", which.join(", "))
        }
    )
}

/// `--device` for a command that runs on one device: the CPU or the first listed CUDA device
/// (checked as [`select_devices`] does; further ones are ignored with a warning).
pub fn select_device(device: &str) -> Result<Device> {
    let devices = select_devices(device)?;
    if devices.len() > 1 {
        tracing::warn!(
            "--device {device}: this command runs on one device; using {}",
            devices[0]
        );
    }
    Ok(devices[0])
}

/// The device `train` runs on: the CPU, or under torchrun (`local_rank` given) with CUDA
/// devices, `cuda:LOCAL_RANK` as upstream (one process per GPU; it must be listed), else the
/// first listed CUDA device (several without torchrun: the others are ignored with a warning,
/// as data-parallel training needs one process per GPU).
pub fn train_device(device: &str, local_rank: Option<usize>) -> Result<Device> {
    let devices = select_devices(device)?;
    match (devices[0], local_rank) {
        (Device::Cpu, _) => Ok(Device::Cpu),
        (_, Some(k)) => {
            if !devices.contains(&Device::Cuda(k)) {
                bail!(
                    "--device {device}: under torchrun the process with LOCAL_RANK={k} trains on cuda:{k}, which the list does not name"
                );
            }
            Ok(Device::Cuda(k))
        }
        (first, None) => {
            if devices.len() > 1 {
                tracing::warn!(
                    "--device {device}: several GPUs in one process; training on {first} only (start one process per GPU with torchrun for data-parallel training)"
                );
            }
            Ok(first)
        }
    }
}

/// Sets the tensor kernels' thread count when given.
pub fn set_threads(threads: Option<usize>) {
    if let Some(t) = threads {
        yolo_tensor::set_num_threads(t);
    }
}

/// Model source flags shared by `info` and `bench`.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model YAML (e.g. configs/models/yolov5s.yaml, or a built-in name like yolov5n.yaml).
    #[arg(long, alias = "cfg")]
    pub model: Option<PathBuf>,
    /// Weights file (.safetensors); holds its own YAML.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Number of classes (overrides the YAML's nc).
    #[arg(long)]
    pub nc: Option<usize>,
}

/// Builds the model a [`ModelArgs`] names.
pub fn load_model(a: &ModelArgs) -> Result<Model> {
    let mut model = match (&a.model, &a.weights) {
        (_, Some(w)) => {
            if !w.exists() {
                bail!("weights file {} does not exist", w.display());
            }
            Model::from_safetensors(w)
                .with_context(|| format!("loading weights {}", w.display()))?
        }
        (Some(m), None) => {
            let tmp = std::env::temp_dir().join(format!("yolo-forge-cfg-{}", std::process::id()));
            let p = resolve_config(m, BUILTIN_MODELS, &tmp, "model")?;
            let mut cfg = ModelConfig::from_file(&p)?;
            if let Some(nc) = a.nc {
                cfg.nc = nc;
            }
            Model::new(cfg, 0)?
        }
        (None, None) => {
            bail!("give a model YAML with --model (or --cfg) or a weights file with --weights")
        }
    };
    if let Some(nc) = a.nc {
        if a.weights.is_some() && nc != model.config.nc {
            bail!(
                "--nc {nc} differs from the weights' {} classes",
                model.config.nc
            );
        }
        model.names.truncate(nc);
    }
    Ok(model)
}

/// The largest stride of a model (at least 32), for image-size rounding.
pub fn max_stride(model: &Model) -> usize {
    model.stride.iter().cloned().fold(32.0f32, f32::max) as usize
}

/// 7235389 → "7,235,389", as upstream prints counts.
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The per-class validation table of val.py.
pub fn print_val_table(names: &[String], r: &yolo_train::ValReport, verbose: bool) {
    let m = &r.metrics;
    println!(
        "{:>22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"
    );
    println!(
        "{:>22}{:>11}{:>11}{:>11.3}{:>11.3}{:>11.3}{:>11.3}",
        "all", r.seen, r.instances, m.mp, m.mr, m.map50, m.map
    );
    if verbose {
        let pc = &m.per_class;
        for (i, &c) in pc.classes.iter().enumerate() {
            let name = names.get(c).cloned().unwrap_or_else(|| c.to_string());
            let n = m.labels_per_class.get(c).copied().unwrap_or(0);
            println!(
                "{:>22}{:>11}{:>11}{:>11.3}{:>11.3}{:>11.3}{:>11.3}",
                name,
                r.seen,
                n,
                pc.p[i],
                pc.r[i],
                pc.ap_at(i, 0),
                pc.ap_mean()[i]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_as_upstream() {
        use DeviceRequest::{Cpu, Cuda};
        for (s, want) in [
            ("cpu", Cpu),
            (" CPU ", Cpu),
            ("", Cpu),
            ("0", Cuda(vec![0])),
            ("0,1,2,3", Cuda(vec![0, 1, 2, 3])),
            ("cuda:0", Cuda(vec![0])),
            ("cuda:1,cuda:0", Cuda(vec![1, 0])),
            ("CUDA:2", Cuda(vec![2])),
            ("cuda", Cuda(vec![0])),
            ("1, 2", Cuda(vec![1, 2])),
        ] {
            assert_eq!(parse_device(s).unwrap(), want, "{s:?}");
        }
        for (s, needle) in [
            ("0,,x", "item 2 of the list is empty"),
            ("0,", "item 2"),
            ("x", "\"x\" is not a CUDA device ordinal"),
            ("-1", "not a CUDA device ordinal"),
            ("gpu0", "not a CUDA device ordinal"),
            ("cuda:", "item 1"),
            ("0,0", "listed twice"),
            ("mps", "MPS"),
        ] {
            let e = parse_device(s).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("--device"), "{s:?}: {e}");
        }
    }

    #[test]
    fn cpu_is_accepted_and_cuda_explains_itself() {
        select_devices("cpu").unwrap();
        assert_eq!(select_devices("").unwrap(), vec![Device::Cpu]);
        assert_eq!(select_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(train_device("cpu", Some(3)).unwrap(), Device::Cpu);
        if yolo_tensor::cuda_device_count() == 0 {
            let e = select_devices("0").unwrap_err().to_string();
            assert!(
                e.contains("--device 0") && e.contains("cuda:0 is not available"),
                "{e}"
            );
            assert!(
                e.contains(yolo_tensor::cuda_status().lines().next().unwrap()),
                "{e}"
            );
            let e = select_device("0,1").unwrap_err().to_string();
            assert!(e.contains("cuda:0, cuda:1 are not available"), "{e}");
            assert!(train_device("0", None).is_err());
        }
        if yolo_tensor::cuda_device_count() < 8 {
            let e = select_devices("7").unwrap_err().to_string();
            if yolo_tensor::cuda_device_count() > 0 {
                assert!(e.contains("device 7 requested"), "{e}");
            }
        }
    }
}
