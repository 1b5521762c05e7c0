//! Data-parallel training on the in-process communicator (two threads = two ranks): replicas
//! stay bitwise identical, a step equals a step on the ranks' mean gradient, only rank 0
//! writes the run, and the ranks' shards of the training set are disjoint and cover it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use yolo_data::{Dataset, DatasetConfig, DatasetOptions, Loader};
use yolo_dist::{Communicator, LocalGroup, SingleProcess};
use yolo_layers::Kind;
use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};
use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};
use yolo_train::trainer::MAX_GRAD_NORM;
use yolo_train::{Checkpoint, Criterion, DataParallel, Hyp, TrainOptions};

/// Three strided convolutions (with batch norm) and a one-level head: a YOLO model small
/// enough for a few steps per test on a slow machine.
const TINY_YAML: &str = "
nc: 2
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30, 33,23]
backbone:
  [[-1, 1, Conv, [4, 3, 2]],
   [-1, 1, Conv, [8, 3, 2]],
   [-1, 1, Conv, [8, 3, 2]],
  ]
head:
  [[[2], 1, Detect, [nc, anchors]]]
";

fn tiny(seed: u64) -> Model {
    Model::new(ModelConfig::from_yaml(TINY_YAML).unwrap(), seed).unwrap()
}

/// Deterministic images `[b, 3, 32, 32]` in 0..1.
fn images(b: usize, salt: usize) -> Tensor {
    let n = b * 3 * 32 * 32;
    let v = (0..n)
        .map(|i| ((i * 31 + salt * 17) % 97) as f32 / 97.0)
        .collect();
    Tensor::from_vec(v, &[b, 3, 32, 32], Device::Cpu).unwrap()
}

/// Two labelled boxes per image of a batch of `b`.
fn targets(b: usize, salt: usize) -> Tensor {
    let mut v = Vec::new();
    for i in 0..b {
        let o = ((i + salt) % 4) as f32 * 0.1;
        v.extend_from_slice(&[i as f32, 0.0, 0.3 + o, 0.4, 0.3, 0.25]);
        v.extend_from_slice(&[i as f32, 1.0, 0.6, 0.5 + o, 0.2, 0.4]);
    }
    Tensor::from_vec(v, &[2 * b, 6], Device::Cpu).unwrap()
}

fn optimizer(model: &Model) -> Optimizer {
    Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        0.05,
        0.9,
        0.0005,
    )
}

fn param_values(model: &Model) -> Vec<Vec<f32>> {
    model.parameters().iter().map(Tensor::to_vec).collect()
}

const STEPS: usize = 2;

/// One replica's steps as the trainer takes them: rank 0's start, its shard (2 images),
/// loss × world, averaged gradients, clipped SGD step.
fn replica(comm: &dyn Communicator) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dp = DataParallel::new(comm);
    let r = dp.rank();
    // every rank starts from different weights: the broadcast must make them rank 0's
    let model = tiny(1 + r as u64);
    let before = param_values(&model);
    let named = model.named_tensors();
    let all: Vec<Tensor> = named.iter().map(|(_, t, _)| t.clone()).collect();
    dp.broadcast_from_main(&all).unwrap();
    let crit = Criterion::new(&model, &Hyp::default(), 32, false).unwrap();
    let mut opt = optimizer(&model);
    let params = model.parameters();
    for step in 0..STEPS {
        dp.broadcast_buffers(&named).unwrap();
        let out = model.forward(&images(2, 2 * step + r), true).unwrap();
        let l = crit
            .loss(&out, &targets(2, 2 * step + r), [32, 32])
            .unwrap();
        l.total.mul_scalar(dp.world() as f32).backward().unwrap();
        dp.average_gradients(&params).unwrap();
        opt.step_clipped(MAX_GRAD_NORM).unwrap();
        opt.zero_grad();
    }
    (before, param_values(&model))
}

#[test]
fn two_ranks_stay_identical_and_step_on_the_mean_gradient() {
    let out = LocalGroup::run(2, |c| replica(&c)).unwrap();
    let (before0, after0) = &out[0];
    let (before1, after1) = &out[1];
    assert_ne!(
        before0, before1,
        "the ranks must start from different weights"
    );
    assert_eq!(after0, after1, "(a) replicas must end bitwise identical");
    assert_ne!(after0, before0, "the steps must change the weights");

    // (b) a single process that averages the two shards' gradients by hand
    let model = tiny(1);
    let crit = Criterion::new(&model, &Hyp::default(), 32, false).unwrap();
    let mut opt = optimizer(&model);
    let params = model.parameters();
    let mut shard_grads_differ = false;
    for step in 0..STEPS {
        let mut grads: Vec<Vec<Vec<f32>>> = Vec::new();
        for r in 0..2 {
            let out = model.forward(&images(2, 2 * step + r), true).unwrap();
            let l = crit
                .loss(&out, &targets(2, 2 * step + r), [32, 32])
                .unwrap();
            l.total.mul_scalar(2.0).backward().unwrap();
            grads.push(params.iter().map(|p| p.grad().unwrap().to_vec()).collect());
            if r == 0 {
                opt.zero_grad();
            }
        }
        shard_grads_differ |= grads[0] != grads[1];
        // parameters whose gradients alias share one tensor: each is written the same mean
        for (k, p) in params.iter().enumerate() {
            let mean: Vec<f32> = grads[0][k]
                .iter()
                .zip(&grads[1][k])
                .map(|(a, b)| (a + b) / 2.0)
                .collect();
            p.grad()
                .unwrap()
                .update_data(|d| d.copy_from_slice(&mean))
                .unwrap();
        }
        opt.step_clipped(MAX_GRAD_NORM).unwrap();
        opt.zero_grad();
    }
    assert!(
        shard_grads_differ,
        "the shards must give different gradients"
    );
    let want = param_values(&model);
    let mut worst = 0.0f32;
    for (a, b) in after0.iter().flatten().zip(want.iter().flatten()) {
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    assert!(
        worst <= 1e-6,
        "DDP step differs from the mean-gradient step by {worst}"
    );
}

#[test]
fn buffers_follow_rank0_before_each_forward() {
    let out = LocalGroup::run(2, |c| {
        let dp = DataParallel::new(&c);
        let model = tiny(1);
        let named = model.named_tensors();
        // a forward in training mode moves BN running statistics by the rank's own batch
        let _ = model.forward(&images(2, dp.rank()), true).unwrap();
        let bufs = |m: &[(String, Tensor, Kind)]| -> Vec<Vec<f32>> {
            m.iter()
                .filter(|(_, _, k)| *k == Kind::Buffer)
                .map(|(_, t, _)| t.to_vec())
                .collect()
        };
        let local = bufs(&named);
        dp.broadcast_buffers(&named).unwrap();
        (local, bufs(&named))
    })
    .unwrap();
    assert_ne!(out[0].0, out[1].0, "ranks saw different batches");
    assert_eq!(out[1].1, out[0].0, "rank 1 now holds rank 0's buffers");
    assert_eq!(out[0].1, out[0].0, "rank 0's are unchanged");
}

/// A private copy of the sample dataset and the tiny model's YAML.
fn workspace(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = yolo_testutil::sample_copy(&format!("ddp-{tag}"));
    let cfg = dir.join("tiny.yaml");
    std::fs::write(&cfg, TINY_YAML).unwrap();
    (dir.join("data/data.yaml"), cfg, dir)
}

fn options(data: PathBuf, cfg: PathBuf, save_dir: PathBuf) -> TrainOptions {
    TrainOptions {
        data,
        cfg: Some(cfg),
        epochs: 2,
        batch_size: 4,
        imgsz: 64,
        workers: 0,
        save_dir,
        seed: 5,
        noautoanchor: true,
        progress: false,
        plots: false,
        ..TrainOptions::default()
    }
}

#[test]
fn two_rank_training_run_matches_and_only_rank0_writes() {
    let (data, cfg, dir) = workspace("run");
    let (d, c, base) = (data.clone(), cfg.clone(), dir.clone());
    let out = LocalGroup::run(2, move |comm| {
        let r = comm.rank();
        let o = options(d.clone(), c.clone(), base.join(format!("rank{r}/exp")));
        yolo_train::train_distributed(&o, None, std::sync::Arc::new(comm))
    })
    .unwrap();
    let s0 = out[0].as_ref().unwrap();
    let s1 = out[1].as_ref().unwrap();
    assert_eq!(s0.epochs.len(), 2);
    assert_eq!(s1.epochs.len(), s0.epochs.len());
    assert_eq!(s1.stopped_early, s0.stopped_early);
    // (a) every tensor, parameters and buffers, ends the same on both ranks
    assert!(!s0.weights.is_empty());
    let names0: Vec<&String> = s0.weights.iter().map(|(n, _)| n).collect();
    let names1: Vec<&String> = s1.weights.iter().map(|(n, _)| n).collect();
    assert_eq!(names0, names1);
    for ((n, a), (_, b)) in s0.weights.iter().zip(&s1.weights) {
        assert_eq!(a.to_vec(), b.to_vec(), "{n} differs between the ranks");
    }
    // the ranks trained on different images
    assert_ne!(s0.epochs[0].train_loss, s1.epochs[0].train_loss);
    // (c) rank 0 wrote the run, and its checkpoint holds the shared weights
    let run0 = dir.join("rank0/exp");
    for f in [
        "results.csv",
        "opt.yaml",
        "hyp.yaml",
        "weights/last.safetensors",
        "weights/best.safetensors",
    ] {
        assert!(run0.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run0.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let ck = Checkpoint::load(run0.join("weights/last.safetensors")).unwrap();
    for (n, t) in &ck.model {
        let (_, w) = s0.weights.iter().find(|(m, _)| m == n).unwrap();
        assert_eq!(&t.to_vec(), &w.to_vec(), "checkpoint {n}");
    }
    // … and rank 1 wrote nothing at all
    let rank1 = dir.join("rank1");
    let left: Vec<_> = std::fs::read_dir(&rank1)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "rank 1 wrote {left:?}");
    assert!(s1.final_val.is_none() && s0.final_val.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_size_the_world_does_not_divide_is_an_error_on_every_rank() {
    let (data, cfg, dir) = workspace("badbatch");
    let (d, c, base) = (data.clone(), cfg.clone(), dir.clone());
    let out = LocalGroup::run(2, move |comm| {
        let mut o = options(d.clone(), c.clone(), base.join("exp"));
        o.batch_size = 5;
        yolo_train::train_distributed(&o, None, std::sync::Arc::new(comm)).map(|_| ())
    })
    .unwrap();
    for r in out {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("multiple of WORLD_SIZE 2"), "{e}");
    }
    assert!(!dir.join("exp").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rank_shards_are_disjoint_cover_the_data_and_change_per_epoch() {
    // (d) the sampler alone, sizes with and without padding
    for (len, world) in [(8usize, 2usize), (10, 4), (7, 3)] {
        let shards: Vec<Vec<usize>> = LocalGroup::run(world, move |c| {
            DataParallel::new(&c).sampler(len, 5).unwrap().indices(3)
        })
        .unwrap();
        let n = len.div_ceil(world);
        assert!(shards.iter().all(|s| s.len() == n), "{shards:?}");
        let all: Vec<usize> = shards.iter().flatten().copied().collect();
        let set: HashSet<usize> = all.iter().copied().collect();
        assert_eq!(set, (0..len).collect(), "{len}/{world}: {shards:?}");
        assert_eq!(
            all.len() - set.len(),
            n * world - len,
            "only padding repeats"
        );
    }

    // … and through the loader the trainer uses: 8 images, 2 ranks, 2 images per batch
    let (data, _cfg, dir) = workspace("shards");
    let dc = DatasetConfig::load(&data).unwrap();
    let ds = Arc::new(
        Dataset::new(
            &dc.train,
            DatasetOptions {
                imgsz: 64,
                stride: 32,
                batch_size: 2,
                ..DatasetOptions::default()
            },
        )
        .unwrap(),
    );
    let epoch_paths = |epoch: u64| -> Vec<Vec<PathBuf>> {
        let ds = ds.clone();
        LocalGroup::run(2, move |c| {
            let l = DataParallel::new(&c)
                .shard_loader(Loader::new(ds.clone(), 2, true, 5, 0), 5)
                .unwrap();
            assert_eq!(l.len(), 2, "4 images per rank in batches of 2");
            let mut paths = Vec::new();
            for b in l.epoch(epoch) {
                let b = b.unwrap();
                assert_eq!(b.len(), 2);
                paths.extend(b.paths);
            }
            paths
        })
        .unwrap()
    };
    let e0 = epoch_paths(0);
    let a: HashSet<&PathBuf> = e0[0].iter().collect();
    let b: HashSet<&PathBuf> = e0[1].iter().collect();
    assert_eq!((a.len(), b.len()), (4, 4));
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    let mut union: Vec<&PathBuf> = a.union(&b).copied().collect();
    union.sort();
    let mut every: Vec<PathBuf> = ds.records().iter().map(|r| r.path.clone()).collect();
    every.sort();
    assert_eq!(union, every.iter().collect::<Vec<_>>());
    assert_ne!(e0, epoch_paths(1), "the shuffle follows the epoch");
    // a single process keeps the plain loader
    let plain = DataParallel::new(&SingleProcess)
        .shard_loader(Loader::new(ds.clone(), 2, true, 5, 0), 5)
        .unwrap();
    assert_eq!(plain.order(0), Loader::new(ds, 2, true, 5, 0).order(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sync_bn_is_wired_and_keeps_the_ranks_identical() {
    let (data, cfg, dir) = workspace("syncbn");
    let run = |sync_bn: bool| {
        let (d, c, base) = (data.clone(), cfg.clone(), dir.clone());
        LocalGroup::run(2, move |comm| {
            // replicas block in their collective inside kernel code: one pool each
            yolo_tensor::use_private_pool(1);
            let r = comm.rank();
            let mut o = options(
                d.clone(),
                c.clone(),
                base.join(format!("{sync_bn}/rank{r}/exp")),
            );
            o.epochs = 1;
            o.sync_bn = sync_bn;
            yolo_train::train_distributed(&o, None, std::sync::Arc::new(comm))
        })
        .unwrap()
    };
    let synced = run(true);
    let plain = run(false);
    let (s0, s1) = (synced[0].as_ref().unwrap(), synced[1].as_ref().unwrap());
    for ((n, a), (_, b)) in s0.weights.iter().zip(&s1.weights) {
        assert_eq!(a.to_vec(), b.to_vec(), "{n} differs between the ranks");
    }
    // global batch statistics change the training: some tensor ends differently
    let p0 = plain[0].as_ref().unwrap();
    let differs = s0
        .weights
        .iter()
        .zip(&p0.weights)
        .any(|((_, a), (_, b))| a.to_vec() != b.to_vec());
    assert!(differs, "--sync-bn had no effect");
}
