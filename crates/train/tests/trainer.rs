//! The trainer end to end on the committed sample dataset (8 training images at 128 px):
//! the loss goes down, checkpoints reload to identical outputs, and a resumed run equals an
//! uninterrupted one bit for bit.

use std::path::{Path, PathBuf};
use yolo_models::Model;
use yolo_tensor::{Device, Tensor};
use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};
use yolo_train::{Checkpoint, Criterion, Hyp, TrainOptions};

use yolo_testutil::root;

/// A private copy of the sample dataset (the loader writes a label cache beside the labels).
fn sample_data(tag: &str) -> (PathBuf, PathBuf) {
    let dir = yolo_testutil::sample_copy(&format!("trainer-{tag}"));
    (dir.join("data/data.yaml"), dir)
}

fn options(data: PathBuf, save_dir: PathBuf, epochs: usize) -> TrainOptions {
    TrainOptions {
        data,
        cfg: Some(root().join("configs/models/yolov5n.yaml")),
        epochs,
        batch_size: 4,
        imgsz: 64,
        workers: 1,
        save_dir,
        seed: 3,
        noautoanchor: true,
        progress: false,
        ..TrainOptions::default()
    }
}

fn tensors_of(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ck = Checkpoint::load(path).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = ck
        .ema
        .iter()
        .map(|(n, t)| (format!("ema.{n}"), t.to_vec()))
        .collect();
    v.extend(
        ck.model
            .iter()
            .map(|(n, t)| (format!("model.{n}"), t.to_vec())),
    );
    v.extend(
        ck.optimizer
            .iter()
            .map(|(n, t)| (format!("optim.{n}"), t.to_vec())),
    );
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn sgd_steps_lower_the_loss_on_a_fixed_batch() {
    let cfg =
        yolo_models::ModelConfig::from_file(root().join("configs/models/yolov5n.yaml")).unwrap();
    let cfg = yolo_models::ModelConfig { nc: 3, ..cfg };
    let model = Model::new(cfg, 1).unwrap();
    let hyp = Hyp::default();
    let crit = Criterion::new(&model, &hyp, 64, false).unwrap();
    let mut opt = Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        0.02,
        0.9,
        0.0005,
    );
    let n = 2 * 3 * 64 * 64;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 31) % 97) as f32 / 97.0).collect(),
        &[2, 3, 64, 64],
        Device::Cpu,
    )
    .unwrap();
    let t = Tensor::from_vec(
        vec![
            0.0, 0.0, 0.3, 0.3, 0.25, 0.3, //
            0.0, 2.0, 0.7, 0.6, 0.3, 0.2, //
            1.0, 1.0, 0.5, 0.5, 0.4, 0.4,
        ],
        &[3, 6],
        Device::Cpu,
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let out = model.forward(&x, true).unwrap();
        let l = crit.loss(&out, &t, [64, 64]).unwrap();
        losses.push(l.total.item().unwrap());
        l.total.backward().unwrap();
        opt.step().unwrap();
        opt.zero_grad();
    }
    eprintln!("losses {losses:?}");
    assert!(
        losses[19] < 0.85 * losses[0],
        "loss did not go down: {losses:?}"
    );
}

#[test]
fn training_writes_a_run_and_checkpoints_reload_to_identical_outputs() {
    let (data, dir) = sample_data("run");
    let run = dir.join("runs/exp");
    let s = yolo_train::train(&options(data, run.clone(), 3), None).unwrap();
    assert_eq!(s.epochs.len(), 3);
    let first = s.epochs[0].train_loss.iter().sum::<f64>();
    let last = s.epochs[2].train_loss.iter().sum::<f64>();
    eprintln!("train loss {first} → {last}");
    assert!(last.is_finite() && first.is_finite());
    for f in [
        "results.csv",
        "opt.yaml",
        "hyp.yaml",
        "weights/last.safetensors",
        "weights/best.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("metrics/mAP_0.5:0.95"));
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // the checkpoint is a model: its EMA weights load by name and give identical outputs
    let m = Model::from_safetensors(run.join("weights/last.safetensors")).unwrap();
    let ck = Checkpoint::load(run.join("weights/last.safetensors")).unwrap();
    assert!(ck.resumable());
    let m2 = Model::new(m.config.clone(), 99).unwrap();
    yolo_train::checkpoint::assign_named(&m2.named_tensors(), &ck.ema, "ema").unwrap();
    let x = Tensor::from_vec(
        (0..3 * 64 * 64).map(|i| (i % 13) as f32 / 13.0).collect(),
        &[1, 3, 64, 64],
        Device::Cpu,
    )
    .unwrap();
    let _g = yolo_tensor::no_grad();
    let a = m.forward(&x, false).unwrap().pred.unwrap().to_vec();
    let b = m2.forward(&x, false).unwrap().pred.unwrap().to_vec();
    assert_eq!(a, b);
    // save → load round trip of the whole checkpoint is exact
    let p = dir.join("copy.safetensors");
    ck.save(&p).unwrap();
    assert_eq!(
        tensors_of(&p),
        tensors_of(&run.join("weights/last.safetensors"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let (data, dir) = sample_data("resume");
    let a_dir = dir.join("runs/a");
    let mut o = options(data, a_dir.clone(), 3);
    o.save_period = 1;
    let a = yolo_train::train(&o, None).unwrap();
    assert_eq!(a.epochs.len(), 3);

    // a copy of the run as it was after epoch 1, resumed
    let b_dir = dir.join("runs/b");
    std::fs::create_dir_all(b_dir.join("weights")).unwrap();
    std::fs::copy(
        a_dir.join("weights/epoch1.safetensors"),
        b_dir.join("weights/last.safetensors"),
    )
    .unwrap();
    let b = yolo_train::train(
        &TrainOptions {
            progress: false,
            ..TrainOptions::default()
        },
        Some(&b_dir.join("weights/last.safetensors")),
    )
    .unwrap();
    assert_eq!(b.save_dir, b_dir);
    assert_eq!(b.epochs.len(), 1, "only epoch 2 runs after resuming");
    assert_eq!(b.epochs[0].epoch, 2);
    assert_eq!(b.epochs[0].train_loss, a.epochs[2].train_loss);
    assert_eq!(b.epochs[0].metrics, a.epochs[2].metrics);
    assert_eq!(
        tensors_of(&a_dir.join("weights/last.safetensors")),
        tensors_of(&b_dir.join("weights/last.safetensors")),
        "weights, EMA and optimiser state after epoch 2"
    );
    // resuming a finished run is an error, not a silent restart
    let e = yolo_train::train(
        &TrainOptions::default(),
        Some(&a_dir.join("weights/last.safetensors")),
    );
    assert!(e.unwrap_err().to_string().contains("finished"));
    // a model-only file cannot be resumed
    let e = yolo_train::train(
        &TrainOptions::default(),
        Some(&a_dir.join("weights/best.safetensors")),
    );
    assert!(e.unwrap_err().to_string().contains("no training state"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn multi_scale_run_resumes_identically() {
    // the sizes seed 3 draws for epoch 1 (2 batches of 4 from 8 images) include one ≠ 64, so
    // a resume that lost the flag or drew different sizes would differ
    let draws: Vec<usize> = (0..2)
        .map(|b| yolo_train::multi_scale_size(&mut yolo_train::multi_scale_rng(3, 1, b), 64, 32))
        .collect();
    assert!(draws.iter().any(|&s| s != 64), "{draws:?}");
    let (data, dir) = sample_data("multiscale");
    let a_dir = dir.join("runs/a");
    let mut o = options(data, a_dir.clone(), 2);
    o.save_period = 1;
    o.multi_scale = true;
    let a = yolo_train::train(&o, None).unwrap();
    assert_eq!(a.epochs.len(), 2);
    assert!(a
        .epochs
        .iter()
        .all(|e| e.train_loss.iter().all(|v| v.is_finite())));
    let opt_yaml = std::fs::read_to_string(a_dir.join("opt.yaml")).unwrap();
    assert!(opt_yaml.contains("multi_scale: true"), "{opt_yaml}");
    // the same run at a fixed size trains differently
    let mut plain = options(o.data.clone(), dir.join("runs/plain"), 2);
    plain.plots = false;
    let p = yolo_train::train(&plain, None).unwrap();
    assert_ne!(p.epochs[1].train_loss, a.epochs[1].train_loss);

    let b_dir = dir.join("runs/b");
    std::fs::create_dir_all(b_dir.join("weights")).unwrap();
    std::fs::copy(
        a_dir.join("weights/epoch0.safetensors"),
        b_dir.join("weights/last.safetensors"),
    )
    .unwrap();
    let b = yolo_train::train(
        &TrainOptions {
            progress: false,
            ..TrainOptions::default()
        },
        Some(&b_dir.join("weights/last.safetensors")),
    )
    .unwrap();
    assert_eq!(b.epochs.len(), 1);
    assert_eq!(b.epochs[0].train_loss, a.epochs[1].train_loss);
    assert_eq!(
        tensors_of(&a_dir.join("weights/last.safetensors")),
        tensors_of(&b_dir.join("weights/last.safetensors")),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
