//! Registry extension from outside the crate, weights round trips, fusing, and errors.

use yolo_layers::{Conv, Kind, Module, Visitor};
use yolo_models::{Built, Model, ModelConfig, ModelError, Registry};
use yolo_tensor::{Device, Tensor};

use yolo_testutil::root;

fn input(seed: u32, imgsz: usize) -> Tensor {
    let n = 3 * imgsz * imgsz;
    let v = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
        })
        .collect();
    Tensor::from_vec(v, &[1, 3, imgsz, imgsz], Device::Cpu).unwrap()
}

/// An out-of-tree block: a conv whose output is gated by a learned per-channel scale.
#[derive(Debug)]
struct ScaledConv {
    conv: Conv,
    scale: Tensor,
}

impl Module for ScaledConv {
    fn forward(&self, x: &Tensor, train: bool) -> yolo_layers::Result<Tensor> {
        let y = self.conv.forward(x, train)?;
        let c = self.scale.numel();
        Ok(y.mul(&self.scale.reshape(&[1, c, 1, 1])?)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.conv.visit(&yolo_layers::join(prefix, "conv"), f);
        f(
            &yolo_layers::join(prefix, "scale"),
            &self.scale,
            Kind::Param,
        );
    }
}

const CUSTOM_YAML: &str = "
nc: 2
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10, 13, 16, 30, 33, 23]
backbone:
  [[-1, 1, Conv, [8, 3, 2]],
   [-1, 1, ScaledConv, [16, 3, 2]],
   [-1, 1, Conv, [16, 3, 2]]]
head:
  [[[2], 1, Detect, [nc, anchors]]]
";

#[test]
fn out_of_tree_module_registers_and_builds() {
    let mut reg = Registry::with_builtins();
    assert!(Registry::with_builtins().get("ScaledConv").is_none());
    reg.register("ScaledConv", |row| {
        let c2 = row.c2_scaled()?;
        let k = row.usize_or(1, 1)?;
        let s = row.usize_or(2, 1)?;
        let conv = Conv::new(
            row.c1(),
            c2,
            k,
            s,
            None,
            1,
            1,
            yolo_layers::Act::Default,
            row.ctx,
        )
        .map_err(|e| e.to_string())?;
        let scale = row
            .ctx
            .init
            .constant(&[c2], 0.5)
            .map_err(|e| e.to_string())?;
        Ok(Built {
            layer: Box::new(ScaledConv { conv, scale }),
            c2,
            args: row.conv_args(c2),
            uses_repeats: false,
        })
    });
    let cfg = ModelConfig::from_yaml(CUSTOM_YAML).unwrap();
    let model = Model::with_registry(cfg.clone(), &reg, 1).unwrap();
    // conv 8·16·9 + BN 2·16 + scale 16
    assert_eq!(model.layer_table()[1].params, 8 * 16 * 9 + 2 * 16 + 16);
    assert!(model
        .named_tensors()
        .iter()
        .any(|(n, _, _)| n == "model.1.scale"));
    assert_eq!(model.stride, vec![8.0]);
    let out = model.forward(&input(1, 64), false).unwrap();
    assert_eq!(out.pred.unwrap().shape(), &[1, 3 * 8 * 8, 7]);
    // Without the registration the same YAML is a clear error naming the row.
    let e = Model::new(cfg, 1).unwrap_err().to_string();
    assert!(
        e.contains("layer 1 (ScaledConv)") && e.contains("unknown module"),
        "{e}"
    );
}

fn yolov5n() -> Model {
    Model::new(
        ModelConfig::from_file(root().join("configs/models/yolov5n.yaml")).unwrap(),
        7,
    )
    .unwrap()
}

#[test]
fn weights_round_trip_and_metadata() {
    let dir = std::env::temp_dir().join(format!("yolo-forge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("n.safetensors");
    let mut a = yolov5n();
    a.names = vec!["cat".into(); 80];
    a.names[1] = "dog".into();
    a.save_safetensors(&path).unwrap();
    let b = Model::from_safetensors(&path).unwrap();
    assert_eq!(b.names[1], "dog");
    let x = input(3, 128);
    let _g = yolo_tensor::no_grad();
    let (ya, yb) = (
        a.forward(&x, false).unwrap().pred.unwrap(),
        b.forward(&x, false).unwrap().pred.unwrap(),
    );
    assert_eq!(
        ya.to_vec(),
        yb.to_vec(),
        "reloaded model gives identical outputs"
    );
    // Another model's weights: a clear error naming the first mismatching tensor, nothing changed.
    let s = Model::new(
        ModelConfig::from_file(root().join("configs/models/yolov5s.yaml")).unwrap(),
        0,
    )
    .unwrap();
    let before = s.named_tensors()[0].1.to_vec();
    let e = s.load_safetensors(&path, true).unwrap_err().to_string();
    assert!(
        e.contains("model.0.conv.weight")
            && e.contains("[16, 3, 6, 6]")
            && e.contains("[32, 3, 6, 6]"),
        "{e}"
    );
    assert_eq!(s.named_tensors()[0].1.to_vec(), before);
    // Non-strict: matching tensors load, the rest are reported.
    let report = s.load_safetensors(&path, false).unwrap();
    assert!(!report.is_exact() && !report.mismatched.is_empty());
    // Not a safetensors file.
    std::fs::write(dir.join("bad.safetensors"), b"not weights").unwrap();
    let e = Model::from_safetensors(dir.join("bad.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuse_keeps_outputs() {
    let mut m = yolov5n();
    // Non-trivial BN statistics, so folding has something to do.
    let _g = yolo_tensor::no_grad();
    for (name, t, _) in m.named_tensors() {
        if name.ends_with("running_var")
            || name.ends_with("running_mean")
            || name.ends_with("bn.weight")
        {
            let v: Vec<f32> = (0..t.numel())
                .map(|i| {
                    if name.ends_with("mean") {
                        0.1 * ((i % 7) as f32 - 3.0)
                    } else {
                        0.6 + 0.1 * (i % 5) as f32
                    }
                })
                .collect();
            t.assign(&Tensor::from_vec(v, t.shape(), Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let x = input(5, 160);
    let before = m.forward(&x, false).unwrap().pred.unwrap().to_vec();
    m.fuse().unwrap();
    assert_eq!(
        m.info(640).unwrap().params,
        1_867_405,
        "upstream's fused count"
    );
    assert!(!m.named_tensors().iter().any(|(n, _, _)| n.contains(".bn.")));
    let after = m.forward(&x, false).unwrap().pred.unwrap().to_vec();
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "pred[{i}]: {a} unfused vs {b} fused"
        );
    }
}

#[test]
fn config_errors_are_clear() {
    let e = ModelConfig::from_yaml("nc: 80\nanchors: [[1, 2]\nbackbone: []").unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::Yaml {
                line: Some(_),
                column: Some(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("line"), "{e}");
    let e = ModelConfig::from_yaml("nc: 80\nanchorz: 3\nanchors: 3\nbackbone: []\nhead: []")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown top-level key `anchorz`"), "{e}");
    let e = ModelConfig::from_yaml("nc: 80\nanchors: 3\nbackbone: [[-1, 1, Conv]]\nhead: []")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 0 (Conv)") && e.contains("4 entries"),
        "{e}"
    );
    let bad_from = CUSTOM_YAML
        .replace("[[2], 1, Detect", "[[7], 1, Detect")
        .replace("ScaledConv", "Conv");
    let e = Model::new(ModelConfig::from_yaml(&bad_from).unwrap(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 3 (Detect)") && e.contains("does not point to an earlier layer"),
        "{e}"
    );
    let e = ModelConfig::from_file("/nonexistent/model.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.yaml"), "{e}");
}

#[test]
fn forward_profiled_times_every_layer_and_counts_its_flops() {
    let model = yolov5n();
    let x = input(3, 64);
    let _g = yolo_tensor::no_grad();
    let plain = model.forward(&x, false).unwrap();
    let (out, layers) = model.forward_profiled(&x, false).unwrap();
    assert_eq!(
        layers.len(),
        model.layer_table().len(),
        "one entry per layer"
    );
    assert!(layers.iter().all(|&(s, g)| s >= 0.0 && g >= 0.0));
    // The per-layer GFLOPs add up to the summary's (info counts at 64 px for this model).
    let total: f64 = layers.iter().map(|l| l.1).sum();
    let info = model.info(64).unwrap().gflops;
    assert!(
        (total - info).abs() <= 1e-9 * info.max(1.0),
        "{total} vs {info}"
    );
    // Convolution rows count, parameter-free rows (Upsample, Concat) do not.
    assert!(layers[0].1 > 0.0);
    let up = model
        .layer_table()
        .iter()
        .position(|r| r.module == "nn.Upsample")
        .unwrap();
    assert_eq!(layers[up].1, 0.0);
    // Profiling changes nothing in the result.
    assert_eq!(
        out.pred.unwrap().to_vec(),
        plain.pred.unwrap().to_vec(),
        "same predictions"
    );
}
