//! The workflow subcommands end to end on tiny data: dataset synth → train → val → detect →
//! export, `val --pred`, resume, Ctrl-C, and every bad input exits 2 with a one-paragraph
//! message (never a panic).

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("yf-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bin_in(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("yolo-forge").unwrap();
    c.current_dir(dir);
    c.env("YOLO_FORGE_CACHE", dir.join("cache"));
    c
}

fn run_ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = bin_in(dir).args(args).output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{args:?} failed:\n{so}\n{se}");
    (so, se)
}

fn run_err(dir: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = bin_in(dir).args(args).output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {se}");
    assert!(
        !se.contains("panicked") && !se.contains("RUST_BACKTRACE"),
        "{args:?}: {se}"
    );
    for n in needles {
        assert!(se.contains(n), "{args:?}: expected `{n}` in: {se}");
    }
    se
}

/// One small synthetic dataset and one trained run, shared by the tests.
struct Shared {
    dir: PathBuf,
    data: PathBuf,
    weights: PathBuf,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tmp("shared");
        let (so, _) = run_ok(
            &dir,
            &[
                "dataset", "synth", "--out", "synth", "--train", "8", "--val", "4", "--imgsz",
                "96", "--seed", "1",
            ],
        );
        assert!(so.contains("data.yaml"), "{so}");
        let data = dir.join("synth/data.yaml");
        assert!(dir.join("synth/images/train").read_dir().unwrap().count() == 8);
        assert!(dir.join("synth/labels/val").read_dir().unwrap().count() <= 4);
        let (so, se) = run_ok(
            &dir,
            &[
                "train",
                "--data",
                data.to_str().unwrap(),
                "--cfg",
                "yolov5n.yaml",
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--imgsz",
                "64",
                "--workers",
                "1",
                "--noautoanchor",
            ],
        );
        assert!(so.contains("Results saved to"), "{so}\n{se}");
        assert!(so.contains("mAP50"), "{so}");
        let run = dir.join("runs/train/exp");
        for f in [
            "results.csv",
            "opt.yaml",
            "hyp.yaml",
            "yolov5n.yaml",
            "hyp.scratch-low.yaml",
        ] {
            assert!(run.join(f).exists(), "{f}");
        }
        Shared {
            weights: run.join("weights/best.safetensors"),
            dir,
            data,
        }
    })
}

#[test]
fn train_then_val_detect_export_info() {
    let s = shared();
    let w = s.weights.to_str().unwrap();
    let d = s.data.to_str().unwrap();
    // val: the table and speed, txt and COCO JSON
    let (so, _) = run_ok(
        &s.dir,
        &[
            "val",
            "--data",
            d,
            "--weights",
            w,
            "--imgsz",
            "64",
            "--save-txt",
            "--save-conf",
            "--save-json",
        ],
    );
    assert!(
        so.contains("Class") && so.contains("all") && so.contains("mAP50-95"),
        "{so}"
    );
    for f in [
        "confusion_matrix.png",
        "val_batch0_labels.jpg",
        "val_batch0_pred.jpg",
    ] {
        assert!(s.dir.join("runs/val/exp").join(f).exists(), "val plot {f}");
    }
    let json = s.dir.join("runs/val/exp/best_predictions.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v.is_array());
    // detect: annotated images and labels
    let src = s.dir.join("synth/images/val");
    let (so, _) = run_ok(
        &s.dir,
        &[
            "detect",
            "--weights",
            w,
            "--source",
            src.to_str().unwrap(),
            "--imgsz",
            "64",
            "--save-txt",
            "--conf-thres",
            "0.01",
        ],
    );
    assert!(so.contains("Results saved to"), "{so}");
    let out = s.dir.join("runs/detect/exp");
    let imgs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(imgs, 4, "annotated images");
    // export: fused weights that info reads
    let fused = s.dir.join("fused.safetensors");
    let (so, _) = run_ok(
        &s.dir,
        &["export", "--weights", w, "--out", fused.to_str().unwrap()],
    );
    assert!(so.contains("fused"), "{so}");
    let (so, _) = run_ok(
        &s.dir,
        &["info", "--weights", fused.to_str().unwrap(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(so.trim()).unwrap();
    assert!(v["params"].as_u64().unwrap() > 1_000_000);
    // the fused model validates to the same metrics as the unfused one
    let (a, _) = run_ok(
        &s.dir,
        &["val", "--data", d, "--weights", w, "--imgsz", "64"],
    );
    let (b, _) = run_ok(
        &s.dir,
        &[
            "val",
            "--data",
            d,
            "--weights",
            fused.to_str().unwrap(),
            "--imgsz",
            "64",
        ],
    );
    let all = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("all"))
            .unwrap()
            .to_string()
    };
    assert_eq!(all(&a), all(&b));
}

#[test]
fn val_pred_scores_prediction_files() {
    let s = shared();
    let d = s.data.to_str().unwrap();
    // the labels themselves as predictions (confidence 0.9): a perfect score
    let pred = tmp("pred");
    for e in std::fs::read_dir(s.dir.join("synth/labels/val")).unwrap() {
        let p = e.unwrap().path();
        let rows: String = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| format!("{l} 0.9\n"))
            .collect();
        std::fs::write(pred.join(p.file_name().unwrap()), rows).unwrap();
    }
    let (so, _) = run_ok(
        &s.dir,
        &["val", "--data", d, "--pred", pred.to_str().unwrap()],
    );
    let all = so
        .lines()
        .find(|l| l.trim_start().starts_with("all"))
        .unwrap();
    let cols: Vec<&str> = all.split_whitespace().collect();
    assert_eq!(cols[cols.len() - 2], "0.995", "{so}");
    // a bad prediction row names file and line
    let bad = tmp("pred-bad");
    let first = std::fs::read_dir(s.dir.join("synth/images/val"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let stem = first.file_stem().unwrap().to_string_lossy().to_string();
    std::fs::write(bad.join(format!("{stem}.txt")), "0 0.5 0.5 0.1\n").unwrap();
    run_err(
        &s.dir,
        &["val", "--data", d, "--pred", bad.to_str().unwrap()],
        &[&format!("{stem}.txt:1"), "6 columns"],
    );
}

#[test]
fn resume_continues_a_run() {
    let s = shared();
    let dir = tmp("resume");
    let d = s.data.to_str().unwrap();
    run_ok(
        &dir,
        &[
            "train",
            "--data",
            d,
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--imgsz",
            "64",
            "--workers",
            "1",
            "--noautoanchor",
            "--max-batches",
            "1",
            "--save-period",
            "1",
        ],
    );
    let run = dir.join("runs/train/exp");
    std::fs::copy(
        run.join("weights/epoch0.safetensors"),
        run.join("weights/last.safetensors"),
    )
    .unwrap();
    let (so, se) = run_ok(&dir, &["train", "--resume"]);
    assert!(
        se.contains("Resuming training") && se.contains("epoch 1"),
        "{se}"
    );
    assert!(so.contains("epochs run 1"), "{so}");
    // nothing left to resume
    run_err(
        &dir,
        &[
            "train",
            "--resume",
            run.join("weights/last.safetensors").to_str().unwrap(),
        ],
        &["finished"],
    );
}

#[test]
fn bad_inputs_exit_2_with_one_paragraph() {
    let s = shared();
    let dir = tmp("bad");
    let d = s.data.to_str().unwrap();
    let w = s.weights.to_str().unwrap();
    // missing files
    run_err(
        &dir,
        &["train", "--data", "nope.yaml"],
        &["nope.yaml", "does not exist"],
    );
    run_err(
        &dir,
        &["val", "--data", d, "--weights", "nope.safetensors"],
        &["nope.safetensors"],
    );
    run_err(
        &dir,
        &["detect", "--weights", w, "--source", "nowhere"],
        &["nowhere"],
    );
    run_err(
        &dir,
        &["train", "--data", d, "--cfg", "yolov9.yaml"],
        &["yolov9.yaml", "built-in names"],
    );
    // YAML syntax error with line and column; unknown hyp key
    std::fs::write(dir.join("bad.yaml"), "path: .\ntrain: [a, b\nval: x\n").unwrap();
    run_err(
        &dir,
        &["train", "--data", "bad.yaml", "--epochs", "1"],
        &["bad.yaml", "line"],
    );
    std::fs::write(dir.join("hyp.yaml"), "lr0: 0.01\nfl_gama: 1.5\n").unwrap();
    run_err(
        &dir,
        &["train", "--data", d, "--hyp", "hyp.yaml", "--epochs", "1"],
        &["hyp.yaml", "fl_gama", "line 2"],
    );
    // devices this build does not have
    run_err(
        &dir,
        &["train", "--data", d, "--device", "0"],
        &["--device 0", "cpu"],
    );
    // weights that do not fit: a file whose tensors are not those of its YAML
    let model = dir.join("mismatch.safetensors");
    let fused = dir.join("f.safetensors");
    run_ok(
        &dir,
        &["export", "--weights", w, "--out", fused.to_str().unwrap()],
    );
    let bytes = std::fs::read(&fused).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().collect();
    // the fused file's tensors without the `fused` mark: the unfused model misses its `bn`
    let mut md = meta.metadata().clone().unwrap();
    assert!(md.remove("yolo_forge.fused").is_some());
    safetensors::serialize_to_file(tensors, Some(md), &model).unwrap();
    run_err(
        &dir,
        &["info", "--weights", model.to_str().unwrap()],
        &["missing", "bn"],
    );
    // a dataset whose classes differ from the model's
    std::fs::write(
        dir.join("other.yaml"),
        format!(
            "path: {}\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n",
            s.dir.join("synth").display()
        ),
    )
    .unwrap();
    run_err(
        &dir,
        &[
            "val",
            "--data",
            "other.yaml",
            "--weights",
            w,
            "--imgsz",
            "64",
        ],
        &["classes"],
    );
    // a dataset with no usable image
    std::fs::create_dir_all(dir.join("empty/images")).unwrap();
    std::fs::write(
        dir.join("empty.yaml"),
        "path: empty\ntrain: images\nval: images\nnames: [a]\n",
    )
    .unwrap();
    run_err(
        &dir,
        &["train", "--data", "empty.yaml", "--epochs", "1"],
        &["image"],
    );
    // impossible sizes
    run_err(
        &dir,
        &["train", "--data", d, "--batch-size", "0"],
        &["positive"],
    );
}

#[test]
fn imgsz_not_a_multiple_of_the_stride_is_rounded_with_a_warning() {
    let s = shared();
    let dir = tmp("imgsz");
    let (_, se) = run_ok(
        &dir,
        &[
            "train",
            "--data",
            s.data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--imgsz",
            "70",
            "--max-batches",
            "1",
            "--noautoanchor",
            "--noval",
        ],
    );
    assert!(
        se.contains("multiple of max stride 32, updating to 96"),
        "{se}"
    );
}

#[test]
fn ctrl_c_leaves_a_valid_checkpoint() {
    let s = shared();
    let dir = tmp("ctrlc");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("yolo-forge"))
        .current_dir(&dir)
        .args([
            "train",
            "--data",
            s.data.to_str().unwrap(),
            "--epochs",
            "500",
            "--batch-size",
            "4",
            "--imgsz",
            "64",
            "--workers",
            "1",
            "--noautoanchor",
            "--noval",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let last = dir.join("runs/train/exp/weights/last.safetensors");
    let t = std::time::Instant::now();
    while !last.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(last.exists(), "no checkpoint within 2 minutes");
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(130) || out.status.success(),
        "{se}"
    );
    assert!(se.contains("interrupted"), "{se}");
    // the checkpoint is complete and loads as a model and as a training state
    let (so, _) = run_ok(
        &dir,
        &["info", "--weights", last.to_str().unwrap(), "--json"],
    );
    assert!(so.contains("params"));
    let leftovers: Vec<_> = std::fs::read_dir(last.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn augment_and_multi_scale() {
    let s = shared();
    let w = s.weights.to_str().unwrap();
    let d = s.data.to_str().unwrap();
    let dir = tmp("tta");
    // val --augment: the table, and as many txt files as a plain run writes
    let (so, _) = run_ok(
        &dir,
        &[
            "val",
            "--data",
            d,
            "--weights",
            w,
            "--imgsz",
            "64",
            "--augment",
            "--save-txt",
            "--name",
            "aug",
        ],
    );
    assert!(so.contains("all") && so.contains("mAP50-95"), "{so}");
    assert!(dir.join("runs/val/aug/labels").is_dir());
    // detect --augment: annotated images and labels for every image
    let src = s.dir.join("synth/images/val");
    let (so, _) = run_ok(
        &dir,
        &[
            "detect",
            "--weights",
            w,
            "--source",
            src.to_str().unwrap(),
            "--imgsz",
            "64",
            "--augment",
            "--save-txt",
            "--conf-thres",
            "0.001",
        ],
    );
    assert!(so.contains("in 4 images. Results saved to"), "{so}");
    let out = dir.join("runs/detect/exp");
    let imgs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(imgs, 4, "annotated images");
    assert!(out.join("labels").read_dir().unwrap().count() > 0);
    // train --multi-scale: one epoch, the sizes drawn logged at debug level
    let mut c = bin_in(&dir);
    c.env("RUST_LOG", "info,yolo_train=debug");
    let out = c
        .args([
            "train",
            "--data",
            d,
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--imgsz",
            "64",
            "--workers",
            "1",
            "--noautoanchor",
            "--multi-scale",
        ])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{so}\n{se}");
    assert!(so.contains("epochs run 1"), "{so}");
    assert!(se.contains("Multi-scale training"), "{se}");
    assert!(se.contains("multi-scale: epoch 0 batch 0: size"), "{se}");
    assert!(se.contains("| sizes "), "{se}");
    let opt = std::fs::read_to_string(dir.join("runs/train/exp/opt.yaml")).unwrap();
    assert!(opt.contains("multi_scale: true"), "{opt}");
}
