//! Every upstream zoo file builds unchanged, with upstream's parameter counts (exact, before and
//! after fusing) and GFLOPs (within 1%). Reference numbers: `fixtures/upstream_stats.json`,
//! produced by `tools/upstream_model_stats.py` from the upstream PyTorch code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use yolo_models::{Model, ModelConfig};

use yolo_testutil::root;

/// A tiny flat JSON reader for the fixture: {"file": {"key": number, …}, …}.
fn fixture() -> BTreeMap<String, BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream_stats.json"),
    )
    .unwrap();
    let mut out = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\"") {
        rest = &rest[i + 1..];
        let j = rest.find('"').unwrap();
        let name = rest[..j].to_string();
        rest = &rest[j + 1..];
        let body_start = rest.find('{').unwrap();
        let body_end = rest.find('}').unwrap();
        let body = &rest[body_start + 1..body_end];
        let mut m = BTreeMap::new();
        for kv in body.split(',') {
            let (k, v) = kv.split_once(':').unwrap();
            m.insert(
                k.trim().trim_matches('"').to_string(),
                v.trim().parse::<f64>().unwrap(),
            );
        }
        out.insert(name, m);
        rest = &rest[body_end + 1..];
    }
    out
}

fn check(name: &str, want: &BTreeMap<String, f64>) {
    let cfg = ModelConfig::from_file(root().join("configs/models").join(name))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut model = Model::new(cfg, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
    let info = model.info(640).unwrap();
    assert_eq!(info.params as f64, want["params"], "{name}: parameters");
    let rel = (info.gflops - want["gflops"]).abs() / want["gflops"];
    assert!(
        rel < 0.01,
        "{name}: {:.4} GFLOPs vs upstream {:.4}",
        info.gflops,
        want["gflops"]
    );
    model.fuse().unwrap();
    let fused = model.info(640).unwrap();
    assert_eq!(
        fused.params as f64, want["params_fused"],
        "{name}: fused parameters"
    );
    let rel = (fused.gflops - want["gflops_fused"]).abs() / want["gflops_fused"];
    assert!(
        rel < 0.01,
        "{name}: fused {:.4} GFLOPs vs upstream {:.4}",
        fused.gflops,
        want["gflops_fused"]
    );
    println!(
        "{name}: {} params, {:.2} GFLOPs, fused {} / {:.2} — matches upstream",
        info.params, info.gflops, fused.params, fused.gflops
    );
}

#[test]
fn small_v5_models_match_upstream() {
    let f = fixture();
    for name in [
        "yolov5n.yaml",
        "yolov5s.yaml",
        "yolov5s-ghost.yaml",
        "yolov5s-transformer.yaml",
        "yolov5-p34.yaml",
        "yolov3-tiny.yaml",
        "yolov5n6.yaml",
    ] {
        check(name, &f[name]);
    }
}

#[test]
fn large_zoo_matches_upstream() {
    let f = fixture();
    let small = [
        "yolov5n.yaml",
        "yolov5s.yaml",
        "yolov5s-ghost.yaml",
        "yolov5s-transformer.yaml",
        "yolov5-p34.yaml",
        "yolov3-tiny.yaml",
        "yolov5n6.yaml",
    ];
    for (name, want) in &f {
        if !small.contains(&name.as_str()) {
            check(name, want);
        }
    }
}
