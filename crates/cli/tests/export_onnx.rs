//! `yolo-forge export --format onnx` (alias of `--include onnx`): the file, its default name,
//! size rounding, and bad requests exiting 2.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use yolo_models::{Model, ModelConfig};
use yolo_onnx::ModelProto;

use yolo_testutil::root;

fn bin(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("yolo-forge").unwrap();
    c.current_dir(dir);
    c
}

fn weights(dir: &Path) -> PathBuf {
    let cfg = ModelConfig::from_file(root().join("configs/models/yolov5n.yaml")).unwrap();
    let mut m = Model::new(cfg, 0).unwrap();
    m.names = vec!["cat".into(); 80];
    let p = dir.join("best.safetensors");
    m.save_safetensors(&p).unwrap();
    p
}

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = bin(dir).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn export_onnx_files() {
    let dir = std::env::temp_dir().join(format!("yf-cli-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = weights(&dir);
    let w = w.to_str().unwrap();

    let out = dir.join("m.onnx");
    let (ok, so, se) = run(
        &dir,
        &[
            "export",
            "--weights",
            w,
            "--format",
            "onnx",
            "--imgsz",
            "64",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{se}");
    assert!(
        so.contains("ONNX opset 17") && so.contains("m.onnx"),
        "{so}"
    );
    let m = ModelProto::decode(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(m.graph.input[0].name, "images");
    assert_eq!(m.graph.input[0].shape, [1, 3, 64, 64]);
    assert_eq!(m.graph.output[0].name, "output0");
    assert_eq!(m.graph.output[0].shape, [1, 252, 85]);
    let meta: std::collections::HashMap<_, _> = m.metadata_props.into_iter().collect();
    assert!(meta["names"].starts_with("{0: 'cat', 1: 'cat'"), "{meta:?}");
    // fused: no batch norm left
    assert!(m
        .graph
        .node
        .iter()
        .all(|n| n.op_type != "BatchNormalization"));

    // upstream's spelling, the default name beside the weights, a size rounded up to the
    // stride, and a rectangular size
    let (ok, _, se) = run(
        &dir,
        &[
            "export",
            "--weights",
            w,
            "--include",
            "onnx",
            "--img",
            "40",
            "72",
        ],
    );
    assert!(ok, "{se}");
    assert!(se.contains("updating to 64"), "{se}");
    let m = ModelProto::decode(&std::fs::read(dir.join("best.onnx")).unwrap()).unwrap();
    assert_eq!(m.graph.input[0].shape, [1, 3, 64, 96]);
    assert_eq!(
        m.graph.output[0].shape,
        [1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 85]
    );

    // both formats in one call
    let (ok, so, se) = run(
        &dir,
        &[
            "export",
            "--weights",
            w,
            "--include",
            "safetensors",
            "onnx",
            "--imgsz",
            "64",
        ],
    );
    assert!(ok, "{se}");
    assert_eq!(
        so.lines().filter(|l| l.starts_with("exported")).count(),
        2,
        "{so}"
    );
    assert!(dir.join("best-fused.safetensors").exists());

    // bad requests: exit 2, one message, no panic
    for (args, needle) in [
        (
            vec!["export", "--weights", w, "--format", "tflite"],
            "tflite",
        ),
        (
            vec![
                "export",
                "--weights",
                w,
                "--include",
                "onnx",
                "safetensors",
                "--out",
                "x",
            ],
            "one format",
        ),
        (
            vec![
                "export",
                "--weights",
                "nope.safetensors",
                "--format",
                "onnx",
            ],
            "nope",
        ),
    ] {
        let out = bin(&dir).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
