//! Raw outputs equal the upstream PyTorch model's (fixtures from `tools/make_parity_fixtures.py`)
//! for the same deterministic weights and input, in training mode (batch statistics) and in
//! inference mode (running statistics, decoded boxes), to 1e-4 relative.
//!
//! The reference is PyTorch in float64. In training mode, batch statistics of a batch of one
//! over 10×10 maps amplify float32 rounding: PyTorch's own float32 run differs from its float64
//! run by up to 1.5e-4 on yolov7-tiny (recorded per output in the fixture as `f32_err.*`), so
//! there the bound is max(1e-4, 1.5 × PyTorch's own float32 error).

use safetensors::SafeTensors;
use std::path::PathBuf;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// The generator of the fixture script: fmix32(hash(name) ^ i·0x9E3779B9) / 2^32.
fn unit(name: &str, n: usize) -> Vec<f64> {
    let h = fnv1a(name);
    (0..n)
        .map(|i| {
            let mut x = h ^ (i as u32).wrapping_mul(0x9E37_79B9);
            x ^= x >> 16;
            x = x.wrapping_mul(0x85EB_CA6B);
            x ^= x >> 13;
            x = x.wrapping_mul(0xC2B2_AE35);
            x ^= x >> 16;
            x as f64 / 4_294_967_296.0
        })
        .collect()
}

/// Mirrors `value()` of the fixture script.
fn value(name: &str, shape: &[usize], head: usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = unit(name, n);
    let leaf = name.rsplit('.').next().unwrap();
    let is_head_bias =
        leaf == "bias" && name.contains(".m.") && name.starts_with(&format!("model.{head}."));
    u.iter()
        .map(|&u| {
            let v = if leaf == "running_var" {
                0.5 + u
            } else if leaf == "running_mean" {
                (2.0 * u - 1.0) * 0.2
            } else if leaf == "implicit" {
                (if name.contains(".im.") { 1.0 } else { 0.0 }) + (2.0 * u - 1.0) * 0.05
            } else if leaf == "weight" && shape.len() == 1 {
                0.5 + u
            } else if is_head_bias {
                (2.0 * u - 1.0) * 2.0 - 1.0
            } else if leaf == "bias" {
                (2.0 * u - 1.0) * 0.2
            } else if shape.len() >= 2 {
                let fan_in: usize = shape[1..].iter().product();
                (2.0 * u - 1.0) * (3.0 / fan_in as f64).sqrt()
            } else {
                (2.0 * u - 1.0) * 0.2
            };
            v as f32
        })
        .collect()
}

fn set_weights(model: &Model) {
    let head = model.nodes.len() - 1;
    for (name, t, _) in model.named_tensors() {
        if name.ends_with("anchors") {
            continue;
        }
        t.assign(&Tensor::from_vec(value(&name, t.shape(), head), t.shape(), Device::Cpu).unwrap())
            .unwrap();
    }
}

fn compare(what: &str, ours: &Tensor, st: &SafeTensors<'_>, key: &str, torch_f32_err: f32) {
    let bound = 1e-4f32.max(1.5 * torch_f32_err);
    let v = st.tensor(key).unwrap();
    assert_eq!(ours.shape(), v.shape(), "{what}: shape of {key}");
    let want: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let got = ours.to_vec();
    let mut worst = 0.0f32;
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        if err > worst {
            worst = err;
            if err > bound {
                println!("{what} {key}[{i}]: ours {a} vs upstream {b}");
            }
        }
    }
    println!(
        "{what} {key}: {} values, worst relative error {worst:.2e} (PyTorch float32: {torch_f32_err:.2e}, bound {bound:.2e})",
        got.len()
    );
    assert!(
        worst <= bound,
        "{what} {key}: worst relative error {worst:.2e} > {bound:.2e}"
    );
}

fn check(cfg_name: &str, fixture: &str, imgsz: usize) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(root.join("tests/fixtures").join(fixture)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = md.metadata().clone().unwrap();
    let keys = meta["keys"].clone();
    let f32_err = |k: &str| {
        meta.get(&format!("f32_err.{k}"))
            .map_or(0.0, |v| v.parse::<f32>().unwrap())
    };
    let cfg = ModelConfig::from_file(root.join("../../configs/models").join(cfg_name)).unwrap();
    let model = Model::new(cfg, 0).unwrap();
    // Same state_dict names as upstream.
    let mut ours: Vec<String> = model
        .named_tensors()
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| !n.ends_with("anchors"))
        .collect();
    ours.sort();
    let theirs: Vec<String> = keys.split(',').map(String::from).collect();
    assert_eq!(ours, theirs, "{cfg_name}: state_dict names");
    set_weights(&model);
    let x = Tensor::from_vec(
        unit("input", 3 * imgsz * imgsz)
            .iter()
            .map(|&v| v as f32)
            .collect(),
        &[1, 3, imgsz, imgsz],
        Device::Cpu,
    )
    .unwrap();
    let _g = yolo_tensor::no_grad();
    let train = model.forward(&x, true).unwrap();
    set_weights(&model); // the training pass moved the running statistics, as upstream's did
    let eval = model.forward(&x, false).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compare(
            cfg_name,
            eval.pred.as_ref().unwrap(),
            &st,
            "eval.pred",
            f32_err("eval.pred"),
        )
    }));
    for (i, r) in train.raw.iter().enumerate() {
        let key = format!("train.{i}");
        compare(cfg_name, r, &st, &key, f32_err(&key));
    }
    r.unwrap();
}

#[test]
fn yolov5n_matches_pytorch() {
    check("yolov5n.yaml", "parity_yolov5n.safetensors", 320);
}

#[test]
fn yolov7_tiny_matches_pytorch() {
    check("yolov7-tiny.yaml", "parity_yolov7-tiny.safetensors", 320);
}
