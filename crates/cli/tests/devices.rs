//! `--device` and `yolo-forge devices`: CUDA requests are explained, malformed values refused.

use assert_cmd::Command;

use yolo_testutil::root;

fn bin() -> Command {
    let mut c = Command::cargo_bin("yolo-forge").unwrap();
    c.current_dir(root());
    c
}

/// Runs the binary, expects exit code 2, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn a_cuda_device_is_refused_with_what_cudarc_found() {
    if yolo_tensor::cuda_device_count() > 0 {
        println!("a CUDA device is present: nothing to refuse");
        return;
    }
    // --device is checked before anything is loaded, in every command that takes it
    for args in [
        vec!["train", "--device", "0", "--epochs", "1"],
        vec!["val", "--data", "nope.yaml", "--device", "0"],
        vec![
            "detect",
            "--weights",
            "nope.safetensors",
            "--source",
            "nowhere",
            "--device",
            "0",
        ],
        vec![
            "detect",
            "--weights",
            "w",
            "--source",
            "s",
            "--device",
            "cuda:0,cuda:1",
        ],
        vec!["bench", "--model", "yolov5n.yaml", "--device", "0"],
        vec![
            "bench",
            "--model",
            "yolov5n.yaml",
            "--train",
            "--batch",
            "2",
            "--device",
            "0",
        ],
        vec!["train", "--device", "0", "--amp", "--epochs", "1"],
    ] {
        let err = fails(&args);
        assert!(
            err.contains("--device") && err.contains("CUDA") && err.contains("not available"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("What cudarc found on this machine: CUDA:"),
            "{err}"
        );
        assert!(err.contains("--device cpu"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one paragraph: {err}");
    }
}

#[test]
fn a_malformed_device_is_a_clear_error() {
    let err = fails(&["train", "--device", "0,,x", "--epochs", "1"]);
    assert!(
        err.contains("--device 0,,x") && err.contains("empty"),
        "{err}"
    );
    let err = fails(&[
        "detect",
        "--weights",
        "w",
        "--source",
        "s",
        "--device",
        "gpu",
    ]);
    assert!(
        err.contains("\"gpu\" is not a CUDA device ordinal"),
        "{err}"
    );
}

#[test]
fn devices_lists_cpu_and_cuda_status() {
    let out = bin().arg("devices").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("cpu: ") && s.contains("kernel threads"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("CUDA:")), "{s}");
    if yolo_tensor::cuda_device_count() == 0 {
        println!("no CUDA device here: checking that `devices` says why");
        assert!(
            s.contains("not available") || s.contains("no CUDA devices") || s.contains("unusable"),
            "{s}"
        );
    } else {
        assert!(s.contains("cuda:0"), "{s}");
    }
}

/// `train --device 0` end to end on the CUDA emulator (the CUDA kernels compiled for the CPU;
/// no GPU needed): the model, every batch, the optimiser and EMA updates, validation and the
/// checkpoints go through the CUDA backend, and the run ends with the weights a CPU run gets.
#[test]
fn training_on_the_emulated_gpu_matches_the_cpu() {
    // a private copy of the sample dataset (training writes label caches next to the labels)
    let dir = yolo_testutil::sample_copy("emu-train");
    let data_yaml = dir.join("data/data.yaml");
    let run = |device: &str, emulate: bool| {
        let mut c = bin();
        if emulate {
            c.env("YOLO_CUDA_EMULATE", "1");
        }
        let out = c
            .args([
                "train",
                "--data",
                data_yaml.to_str().unwrap(),
                "--cfg",
                "yolov5n.yaml",
                "--imgsz",
                "64",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--noplots",
                "--device",
                device,
                "--project",
                dir.to_str().unwrap(),
                "--name",
                device,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "--device {device}: {err}");
        std::fs::read(dir.join(device).join("weights/last.safetensors")).unwrap()
    };
    let (cpu, gpu) = (run("cpu", false), run("0", true));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&cpu).unwrap(),
        safetensors::SafeTensors::deserialize(&gpu).unwrap(),
    );
    let floats = |v: &[u8]| -> Vec<f32> {
        v.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut compared = 0;
    for (name, ta) in a.tensors() {
        let tb = b.tensor(&name).unwrap();
        assert_eq!(ta.shape(), tb.shape(), "{name}");
        if ta.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let (x, y) = (floats(ta.data()), floats(tb.data()));
        let scale = x.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = x
            .iter()
            .zip(&y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()))
            / scale;
        assert!(err < 2e-3, "{name}: {err}");
        compared += 1;
    }
    assert!(compared > 300, "{compared} tensors compared");
    let _ = std::fs::remove_dir_all(&dir);
}
