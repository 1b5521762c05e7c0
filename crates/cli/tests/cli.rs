//! The `yolo-forge` binary: output and exit codes.

use assert_cmd::Command;

use yolo_testutil::root;

fn bin() -> Command {
    let mut c = Command::cargo_bin("yolo-forge").unwrap();
    c.current_dir(root());
    c
}

#[test]
fn info_prints_table_and_summary() {
    let out = bin()
        .args(["info", "--model", "configs/models/yolov5s.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("module") && s.contains("SPPF") && s.contains("Detect"),
        "{s}"
    );
    assert!(
        s.contains("7,235,389 parameters") && s.contains("16.6 GFLOPs"),
        "{s}"
    );
}

#[test]
fn info_json() {
    let out = bin()
        .args(["info", "--model", "configs/models/yolov5s.yaml", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 7_235_389);
    assert_eq!(v["gflops"], 16.6);
    assert_eq!(v["layers"], 25);
    let out = bin()
        .args([
            "info",
            "--model",
            "configs/models/yolov5s.yaml",
            "--json",
            "--fuse",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 7_225_885);
}

#[test]
fn bad_inputs_exit_2_with_a_message() {
    for (args, needle) in [
        (vec!["info", "--model", "nope.yaml"], "nope.yaml"),
        (vec!["info"], "--model"),
        (vec!["info", "--weights", "README.md"], "README.md"),
        (
            vec![
                "bench",
                "--model",
                "configs/models/yolov5n.yaml",
                "--runs",
                "0",
            ],
            "positive",
        ),
    ] {
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// `yolo-forge bench` on yolov5n at 64 px, two runs, with `extra` flags; its stdout (the
/// command must succeed).
fn bench_yolov5n_64(extra: &str) -> Vec<u8> {
    let out = bin()
        .args([
            "bench",
            "--model",
            "configs/models/yolov5n.yaml",
            "--imgsz",
            "64",
            "--runs",
            "2",
            extra,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn bench_json() {
    let v: serde_json::Value = serde_json::from_slice(&bench_yolov5n_64("--json")).unwrap();
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["imgsz"], 64);
    assert_eq!(v["device"], "cpu");
    assert!(
        v["peak_device_mib"].is_null(),
        "no device memory on the CPU"
    );
}

#[test]
fn bench_profile_prints_every_layer() {
    let text = String::from_utf8(bench_yolov5n_64("--profile")).unwrap();
    // A header, the 25 layers of yolov5n (0 … 24, Detect last), the total and the summary.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<usize>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 25, "{text}");
    assert!(
        rows[24].ends_with("Detect") && rows[0].ends_with("Conv"),
        "{text}"
    );
    assert!(text.contains("GFLOP/s") && text.contains("total"), "{text}");
}

#[test]
fn bench_train_step_json_on_the_chosen_device() {
    let out = bin()
        .args([
            "bench",
            "--model",
            "configs/models/yolov5n.yaml",
            "--imgsz",
            "64",
            "--batch",
            "2",
            "--runs",
            "1",
            "--train",
            "--device",
            "cpu",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], "train_step");
    assert_eq!(v["batch"], 2);
    assert_eq!(v["device"], "cpu");
    assert!(v["peak_device_mib"].is_null());
    assert!(v["loss"].as_f64().unwrap() > 0.0);
}
