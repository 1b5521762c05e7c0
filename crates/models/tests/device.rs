//! Device moves: `Model::to_device` / `copy_to_device` carry every parameter and buffer (and
//! the fused structure, strides, names, frozen flags), and no forward code creates tensors on a
//! hard-coded device. Only the CPU exists in CI, so the copy path is exercised CPU → CPU (the
//! same rebuild-and-copy a CUDA move runs).

use std::path::{Path, PathBuf};
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

use yolo_testutil::root;

fn model(name: &str, seed: u64) -> Model {
    let cfg = ModelConfig::from_file(root().join("configs/models").join(name)).unwrap();
    Model::new(ModelConfig { nc: 3, ..cfg }, seed).unwrap()
}

fn input(n: usize, s: usize) -> Tensor {
    let len = n * 3 * s * s;
    Tensor::from_vec(
        (0..len).map(|i| ((i * 37) % 101) as f32 / 101.0).collect(),
        &[n, 3, s, s],
        Device::Cpu,
    )
    .unwrap()
}

fn outputs(m: &Model, x: &Tensor, train: bool) -> Vec<Vec<f32>> {
    let _g = yolo_tensor::no_grad();
    let out = m.forward(x, train).unwrap();
    for r in &out.raw {
        assert_eq!(r.device(), x.device(), "raw level on the input's device");
    }
    let mut v: Vec<Vec<f32>> = out.raw.iter().map(Tensor::to_vec).collect();
    if let Some(p) = out.pred {
        assert_eq!(
            p.device(),
            x.device(),
            "decoded output on the input's device"
        );
        v.push(p.to_vec());
    }
    v
}

#[test]
fn to_device_on_the_own_device_keeps_the_same_tensors() {
    let mut m = model("yolov5n.yaml", 1);
    assert_eq!(m.device(), Device::Cpu);
    let before: Vec<usize> = m.named_tensors().iter().map(|(_, t, _)| t.id()).collect();
    m.to_device(Device::Cpu).unwrap();
    let after: Vec<usize> = m.named_tensors().iter().map(|(_, t, _)| t.id()).collect();
    assert_eq!(before, after, "a no-op move keeps every tensor handle");
    let x = input(1, 64);
    assert_eq!(outputs(&m, &x, false).len(), 4);
}

#[test]
fn a_device_copy_is_a_deep_copy_that_computes_the_same() {
    for name in ["yolov5n.yaml", "yolov7-tiny.yaml"] {
        // weights other than a fresh init's (seed 1 vs the rebuild's seed 0), a frozen layer,
        // changed anchors and names: all must survive the copy
        let mut m = model(name, 1);
        m.names = vec!["a".into(), "b".into(), "c".into()];
        let frozen: Vec<String> = m
            .named_tensors()
            .into_iter()
            .filter(|(n, t, _)| n.starts_with("model.0.") && t.requires_grad())
            .map(|(n, t, _)| {
                t.set_requires_grad(false).unwrap();
                n
            })
            .collect();
        assert!(!frozen.is_empty());
        let anchors = &m.detect().anchors;
        anchors
            .update_data(|v| v.iter_mut().for_each(|a| *a *= 1.25))
            .unwrap();
        let c = m.copy_to_device(Device::Cpu).unwrap();
        assert_eq!(c.device(), Device::Cpu);
        assert_eq!(c.stride, m.stride);
        assert_eq!(c.names, m.names);
        let (a, b) = (m.named_tensors(), c.named_tensors());
        assert_eq!(a.len(), b.len());
        for ((na, ta, ka), (nb, tb, kb)) in a.iter().zip(&b) {
            assert_eq!((na, ka), (nb, kb));
            assert_eq!(ta.to_vec(), tb.to_vec(), "{name}: `{na}` copied");
            assert_eq!(
                ta.requires_grad(),
                tb.requires_grad(),
                "{name}: `{na}` flag"
            );
            assert!(!ta.same_storage(tb), "{name}: `{na}` is a copy, not shared");
        }
        let x = input(2, 64);
        assert_eq!(
            outputs(&m, &x, false),
            outputs(&c, &x, false),
            "{name}: eval"
        );
        // training mode updates BN running statistics: they must be the copy's own
        let before = m.named_tensors()[2].1.to_vec();
        assert_eq!(
            outputs(&m, &x, true),
            outputs(&c, &x, true),
            "{name}: train"
        );
        let after_m: Vec<Vec<f32>> = m.named_tensors().iter().map(|t| t.1.to_vec()).collect();
        let after_c: Vec<Vec<f32>> = c.named_tensors().iter().map(|t| t.1.to_vec()).collect();
        assert_eq!(
            after_m, after_c,
            "{name}: both updated their statistics alike"
        );
        assert!(
            m.named_tensors()
                .iter()
                .any(|(n, t, _)| n.ends_with("running_mean") && t.to_vec() != before),
            "{name}: the training pass moved a running mean"
        );
        // a fused model copies as fused
        let mut f = m.copy_to_device(Device::Cpu).unwrap();
        f.fuse().unwrap();
        let fc = f.copy_to_device(Device::Cpu).unwrap();
        assert!(fc.is_fused());
        assert_eq!(
            f.named_tensors().len(),
            fc.named_tensors().len(),
            "{name}: fused structure"
        );
        assert_eq!(
            outputs(&f, &x, false),
            outputs(&fc, &x, false),
            "{name}: fused"
        );
    }
}

#[test]
fn a_copy_keeps_user_registered_modules() {
    use yolo_models::{Built, Registry};
    let mut reg = Registry::with_builtins();
    reg.register("MyConv", |r| {
        let c2 = r.c2_scaled()?;
        let layer = yolo_layers::Conv::new(
            r.c1(),
            c2,
            3,
            2,
            None,
            1,
            1,
            yolo_layers::Act::Default,
            r.ctx,
        )
        .map_err(|e| e.to_string())?;
        Ok(Built {
            layer: Box::new(layer),
            c2,
            args: r.conv_args(c2),
            uses_repeats: false,
        })
    });
    let yaml = std::fs::read_to_string(root().join("configs/models/yolov5n.yaml"))
        .unwrap()
        .replacen(
            "[-1, 1, Conv, [128, 3, 2]]",
            "[-1, 1, MyConv, [128, 3, 2]]",
            1,
        );
    assert!(yaml.contains("MyConv"));
    let cfg = ModelConfig::from_yaml(&yaml).unwrap();
    let m = Model::with_registry(cfg, &reg, 2).unwrap();
    let c = m.copy_to_device(Device::Cpu).unwrap();
    let x = input(1, 64);
    assert_eq!(outputs(&m, &x, false), outputs(&c, &x, false));
}

/// Source files of `dir` (recursively), each cut at its `#[cfg(test)]` module.
fn library_sources(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            library_sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            let lib = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            out.push((p, lib));
        }
    }
}

/// The review that keeps forward passes and losses device-generic: outside tests, the crates
/// that run between the input batch and the loss create tensors only on a device taken from
/// an existing tensor (`x.device()`, `init.device`), never on `Device::Cpu`, and never with
/// the CPU-only `Tensor::scalar` unless moved at once. Each allowed use is listed with why.
#[test]
fn forward_and_loss_code_names_no_fixed_device() {
    let allowed: &[(&str, &str)] = &[
        // the default device of a fresh initialiser; `Model::to_device` sets its own
        ("layers/src/init.rs", "device: Device::Cpu,"),
        // the documented CPU convenience over `build_on(…, device)`
        (
            "activations/src/spec.rs",
            "self.build_on(channels, init_seed, Device::Cpu)",
        ),
        // models are built on the CPU, then moved with `Model::to_device`
        (
            "models/src/model.rs",
            "Model::assemble(config, registry, seed, Device::Cpu)",
        ),
        // doc example
        ("activations/src/lib.rs", "//! let x = Tensor::full"),
        // a branch on the device (the in-place decode runs on host data), not a placement
        (
            "layers/src/detect.rs",
            "if !records && raw.iter().all(|r| r.device() == Device::Cpu) {",
        ),
        // no prediction tensors at all: nothing to match
        (
            "losses/src/compute_loss.rs",
            ".unwrap_or(yolo_tensor::Device::Cpu)",
        ),
    ];
    let mut files = Vec::new();
    for c in ["layers", "models", "activations", "losses"] {
        library_sources(&root().join("crates").join(c).join("src"), &mut files);
    }
    assert!(files.len() > 20, "found the sources: {}", files.len());
    let mut bad = Vec::new();
    for (p, text) in &files {
        let rel = p.strip_prefix(root().join("crates")).unwrap();
        let rel = rel.to_string_lossy().replace('\\', "/");
        for (i, line) in text.lines().enumerate() {
            let fixed = line.contains("Device::Cpu")
                || (line.contains("Tensor::scalar(") && !line.contains(".to_device("));
            if fixed && !allowed.iter().any(|(f, l)| rel == *f && line.contains(l)) {
                bad.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "tensors on a fixed device in forward/loss code:\n{}",
        bad.join("\n")
    );
}
