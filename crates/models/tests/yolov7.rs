//! YOLOv7 models end to end: strides, the v7 `Conv` argument layout, IDetect / IAuxDetect
//! outputs, and fusing (RepConv, Conv+BN, implicit layers) that keeps the predictions.

use std::collections::HashSet;
use std::path::PathBuf;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

fn model(name: &str) -> Model {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/models")
        .join(name);
    let cfg = ModelConfig::from_file(path).unwrap_or_else(|e| panic!("{e}"));
    Model::new(cfg, 0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn input(imgsz: usize) -> Tensor {
    let n = 3 * imgsz * imgsz;
    let v = (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0)
        .collect();
    Tensor::from_vec(v, &[1, 3, imgsz, imgsz], Device::Cpu).unwrap()
}

/// Non-trivial BN statistics and scales everywhere (RepConv branches included).
fn perturb_bn(m: &Model) {
    let _g = yolo_tensor::no_grad();
    let named = m.named_tensors();
    let bn: HashSet<String> = named
        .iter()
        .filter_map(|(n, _, _)| n.strip_suffix(".running_var").map(String::from))
        .collect();
    for (name, t, _) in &named {
        let Some((prefix, leaf)) = name.rsplit_once('.') else {
            continue;
        };
        if !bn.contains(prefix) {
            continue;
        }
        let v: Vec<f32> = (0..t.numel())
            .map(|i| match leaf {
                "running_mean" => 0.05 * ((i % 7) as f32 - 3.0),
                "running_var" => 0.8 + 0.1 * (i % 5) as f32,
                "weight" => 0.7 + 0.05 * (i % 4) as f32,
                _ => 0.02 * ((i % 3) as f32 - 1.0),
            })
            .collect();
        t.assign(&Tensor::from_vec(v, t.shape(), Device::Cpu).unwrap())
            .unwrap();
    }
}

fn assert_fuse_keeps_pred(name: &str, m: &mut Model, imgsz: usize) {
    perturb_bn(m);
    let x = input(imgsz);
    let before = m.forward(&x, false).unwrap().pred.unwrap().to_vec();
    m.fuse().unwrap();
    let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    assert!(!names
        .iter()
        .any(|n| n.contains(".bn.") || (n.contains("rbr_") && !n.contains("rbr_reparam"))));
    let after = m.forward(&x, false).unwrap().pred.unwrap().to_vec();
    assert_eq!(before.len(), after.len());
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert!(
            (a - b).abs() <= 2e-4 * a.abs().max(1.0),
            "{name} pred[{i}]: {a} unfused vs {b} fused"
        );
    }
}

#[test]
fn yolov7_tiny_uses_leaky_relu_convs_and_fuses() {
    let mut m = model("yolov7-tiny.yaml");
    assert_eq!(m.stride, vec![8.0, 16.0, 32.0]);
    let table = m.layer_table();
    assert_eq!(table[0].args, "[3, 32, 3, 2, None, 1, nn.LeakyReLU(0.1)]");
    assert_eq!(table[8].module, "MP");
    assert_eq!(table.last().unwrap().module, "IDetect");
    let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    assert!(names.contains(&"model.77.ia.2.implicit".to_string()));
    assert!(names.contains(&"model.77.im.0.implicit".to_string()));
    let out = m.forward(&input(64), true).unwrap();
    let shapes: Vec<Vec<usize>> = out.raw.iter().map(|r| r.shape().to_vec()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![1, 3, 8, 8, 85],
            vec![1, 3, 4, 4, 85],
            vec![1, 3, 2, 2, 85]
        ]
    );
    assert!(out.aux.is_empty());
    assert_fuse_keeps_pred("yolov7-tiny", &mut m, 64);
}

#[test]
fn yolov7_repconv_and_idetect_fuse_keeps_predictions() {
    let mut m = model("yolov7.yaml");
    let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    // c1 = 128 ≠ c2 = 256: no identity branch.
    assert!(!names.contains(&"model.102.rbr_identity.running_var".to_string()));
    assert!(names.contains(&"model.102.rbr_dense.0.weight".to_string()));
    assert!(names.contains(&"model.104.rbr_1x1.1.running_mean".to_string()));
    assert_fuse_keeps_pred("yolov7", &mut m, 64);
    let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    assert!(names.contains(&"model.102.rbr_reparam.bias".to_string()));
}

#[test]
fn yolov7_w6_aux_head_returns_aux_levels_until_fused() {
    let mut m = model("yolov7-w6.yaml");
    assert_eq!(m.stride, vec![8.0, 16.0, 32.0, 64.0]);
    assert_eq!(m.detect().nl(), 4);
    let out = m.forward(&input(128), true).unwrap();
    assert_eq!(out.raw.len(), 4);
    assert_eq!(out.aux.len(), 4);
    for (r, a) in out.raw.iter().zip(&out.aux) {
        assert_eq!(r.shape(), a.shape());
    }
    assert_eq!(out.raw[3].shape(), &[1, 3, 2, 2, 85]);
    assert_fuse_keeps_pred("yolov7-w6", &mut m, 128);
    assert!(m.forward(&input(128), true).unwrap().aux.is_empty());
}
