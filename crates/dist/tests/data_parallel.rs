//! Data-parallel training logic on the in-process communicator: averaged shard gradients equal
//! the full-batch gradient, broadcast makes replicas equal, SyncBatchNorm statistics equal the
//! concatenated batch's.

use std::sync::Arc;
use yolo_dist::{
    broadcast_parameters, sync_batch_stats, ChannelStats, Communicator, DistError, GradBuckets,
    LocalComm, LocalGroup, SingleProcess,
};
use yolo_tensor::{Conv2dParams, Device, Tensor};

/// Deterministic values in [-1, 1) from a seed.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn param(seed: u64, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let v = values(seed, n).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, shape, Device::Cpu).unwrap().with_grad()
}

/// A small conv → SiLU → linear model with three output biases whose gradients alias (they are
/// operands of `add`s).
struct Model {
    params: Vec<Tensor>,
}

impl Model {
    fn new(seed: u64) -> Model {
        Model {
            params: vec![
                param(seed, &[3, 2, 3, 3], 0.4),
                param(seed + 1, &[3], 0.1),
                param(seed + 2, &[75, 4], 0.2),
                param(seed + 3, &[4], 0.1),
                param(seed + 4, &[4], 0.1),
                param(seed + 5, &[4], 0.1),
            ],
        }
    }

    /// Mean squared error of the model on `x` ([b, 2, 5, 5]) against `t` ([b, 4]).
    fn loss(&self, x: &Tensor, t: &Tensor) -> Tensor {
        let p = &self.params;
        let b = x.shape()[0];
        let h = x
            .conv2d(&p[0], Some(&p[1]), Conv2dParams::new(1, 1))
            .unwrap()
            .silu();
        let out = h.reshape(&[b, 75]).unwrap().matmul(&p[2]).unwrap();
        let bias = p[4].add(&p[5]).unwrap().add(&p[3]).unwrap();
        let out = out.add(&bias).unwrap();
        out.sub(t).unwrap().powf(2.0).mean_all().unwrap()
    }

    fn grads(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|p| p.grad().expect("every parameter has a gradient").to_vec())
            .collect()
    }
}

fn batch(b: usize) -> (Vec<f32>, Vec<f32>) {
    (values(100, b * 2 * 25), values(200, b * 4))
}

/// Rows `[start, start + len)` of a batch as tensors.
fn shard(x: &[f32], t: &[f32], start: usize, len: usize) -> (Tensor, Tensor) {
    let xs = x[start * 50..(start + len) * 50].to_vec();
    let ts = t[start * 4..(start + len) * 4].to_vec();
    (
        Tensor::from_vec(xs, &[len, 2, 5, 5], Device::Cpu).unwrap(),
        Tensor::from_vec(ts, &[len, 4], Device::Cpu).unwrap(),
    )
}

/// Runs `f(comm)` on one thread per rank and returns the results by rank.
fn on_ranks<T: Send + 'static>(
    world: usize,
    f: impl Fn(LocalComm) -> T + Send + Sync + 'static,
) -> Vec<T> {
    LocalGroup::run(world, f).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: all-zero reference");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * scale.max(w.abs()),
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

#[test]
fn averaged_shard_gradients_equal_the_full_batch_gradient() {
    const B: usize = 6;
    let (x, t) = batch(B);
    let full = Model::new(1);
    let (xb, tb) = shard(&x, &t, 0, B);
    full.loss(&xb, &tb).backward().unwrap();
    let want = full.grads();
    // the aliasing this test relies on: autograd hands one gradient tensor to both operands
    // of `(p[4] + p[5]) + p[3]`, so the three biases share it
    let g3 = full.params[3].grad().unwrap();
    assert!(g3.same_storage(&full.params[4].grad().unwrap()));
    assert!(g3.same_storage(&full.params[5].grad().unwrap()));

    for world in [2, 3] {
        // a small cap so the parameters spread over several buckets
        let buckets = GradBuckets::new(200.0 * 4.0 / (1 << 20) as f64).unwrap();
        let (x, t) = (Arc::new(x.clone()), Arc::new(t.clone()));
        let results = on_ranks(world, move |comm| {
            let model = Model::new(1);
            let per = B / world;
            let (xs, ts) = shard(&x, &t, comm.rank() * per, per);
            model.loss(&xs, &ts).backward().unwrap();
            let before = model.grads();
            let report = buckets.all_reduce_mean(&model.params, &comm).unwrap();
            (before, model.grads(), report)
        });
        for (rank, (before, after, report)) in results.iter().enumerate() {
            assert_eq!(report.aliased, 2, "rank {rank}");
            assert!(report.buckets >= 3, "{report:?}");
            assert_eq!(report.floats, 54 + 3 + 300 + 4, "{report:?}");
            for (i, (g, w)) in after.iter().zip(&want).enumerate() {
                assert_close(g, w, &format!("world {world} rank {rank} param {i}"));
            }
            // the shard gradient alone is not the answer: the reduction did something
            assert!(before[0]
                .iter()
                .zip(&want[0])
                .any(|(a, b)| (a - b).abs() > 1e-4));
            // and all ranks hold bit-identical gradients
            assert_eq!(after, &results[0].1, "rank {rank} differs from rank 0");
        }
    }
}

#[test]
fn single_process_sync_changes_nothing() {
    let m = Model::new(3);
    let (x, t) = batch(2);
    let (xb, tb) = shard(&x, &t, 0, 2);
    m.loss(&xb, &tb).backward().unwrap();
    let before = m.grads();
    let r = GradBuckets::default()
        .all_reduce_mean(&m.params, &SingleProcess)
        .unwrap();
    assert_eq!(r.buckets, 0);
    assert_eq!(m.grads(), before);
}

#[test]
fn a_gradient_missing_on_some_ranks_is_an_error_everywhere() {
    let results = on_ranks(2, |comm| {
        let p = param(1, &[3], 1.0);
        let q = param(2, &[3], 1.0);
        // rank 1 does not use q
        let loss = if comm.rank() == 0 {
            p.add(&q).unwrap().sum_all().unwrap()
        } else {
            p.sum_all().unwrap()
        };
        loss.backward().unwrap();
        GradBuckets::default().all_reduce_mean(&[p, q], &comm)
    });
    for r in results {
        let e = r.unwrap_err();
        assert!(matches!(e, DistError::Grad(_)), "{e}");
        assert!(
            e.to_string().contains("parameter 1") && e.to_string().contains("1 of 2 ranks"),
            "{e}"
        );
    }
    // a parameter unused on every rank is simply skipped
    let results = on_ranks(2, |comm| {
        let p = param(1, &[3], 1.0);
        let q = param(2, &[3], 1.0);
        p.mul_scalar(comm.rank() as f32 + 1.0)
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let r = GradBuckets::default()
            .all_reduce_mean(&[p.clone(), q.clone()], &comm)
            .unwrap();
        (
            r.without_grad,
            p.grad().unwrap().to_vec(),
            q.grad().is_none(),
        )
    });
    for (without, g, q_none) in results {
        assert_eq!((without, q_none), (1, true));
        assert_eq!(g, vec![1.5; 3]);
    }
}

#[test]
fn broadcast_from_rank0_makes_replicas_equal() {
    for world in [2, 3] {
        let results = on_ranks(world, |comm| {
            // every rank initialises differently
            let model = Model::new(10 + comm.rank() as u64);
            let before: Vec<Vec<f32>> = model.params.iter().map(Tensor::to_vec).collect();
            broadcast_parameters(&model.params, &comm, 0).unwrap();
            let after: Vec<Vec<f32>> = model.params.iter().map(Tensor::to_vec).collect();
            // training afterwards gives identical losses everywhere
            let (x, t) = batch(2);
            let (xb, tb) = shard(&x, &t, 0, 2);
            let loss = model.loss(&xb, &tb).item().unwrap();
            (before, after, loss)
        });
        let reference: Vec<Vec<f32>> = Model::new(10).params.iter().map(Tensor::to_vec).collect();
        for (rank, (before, after, loss)) in results.iter().enumerate() {
            if rank > 0 {
                assert_ne!(before, &reference, "replicas must start different");
            }
            assert_eq!(after, &reference, "world {world} rank {rank}");
            assert_eq!(*loss, results[0].2);
        }
    }
    assert!(broadcast_parameters(&[], &SingleProcess, 1).is_err());
}

/// Reference statistics of the concatenated batch, straight from the definition in f64.
fn reference_stats(
    parts: &[(Vec<f32>, usize)],
    c: usize,
    hw: usize,
) -> (Vec<f64>, Vec<f64>, usize) {
    let mut vals: Vec<Vec<f64>> = vec![Vec::new(); c];
    for (x, n) in parts {
        for i in 0..*n {
            for (ch, v) in vals.iter_mut().enumerate() {
                let o = (i * c + ch) * hw;
                v.extend(x[o..o + hw].iter().map(|&v| v as f64));
            }
        }
    }
    let mean: Vec<f64> = vals
        .iter()
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        .collect();
    let var = vals
        .iter()
        .zip(&mean)
        .map(|(v, m)| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64)
        .collect();
    (mean, var, vals[0].len())
}

#[test]
fn sync_batch_norm_statistics_equal_the_concatenated_batch() {
    let (c, hw) = (4, 6);
    for world in [2, 3] {
        // uneven shards (rank r has r + 1 images) with a large offset against the spread
        let parts: Vec<(Vec<f32>, usize)> = (0..world)
            .map(|r| {
                let n = r + 1;
                let v = values(300 + r as u64, n * c * hw)
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| 50.0 + ((i / hw) % c) as f32 + 0.5 * x)
                    .collect();
                (v, n)
            })
            .collect();
        let (mean, var, count) = reference_stats(&parts, c, hw);
        let shared = Arc::new(parts);
        let results = on_ranks(world, move |comm| {
            let (x, n) = &shared[comm.rank()];
            let local = ChannelStats::from_nchw(x, [*n, c, 2, 3]).unwrap();
            sync_batch_stats(&local, &comm).unwrap()
        });
        for g in &results {
            assert_eq!(g, &results[0]);
            assert_eq!(g.count as usize, count);
            for ch in 0..c {
                let rel = |a: f32, b: f64| ((a as f64 - b) / b).abs();
                assert!(
                    rel(g.mean[ch], mean[ch]) < 1e-6,
                    "mean {ch}: {} vs {}",
                    g.mean[ch],
                    mean[ch]
                );
                assert!(
                    rel(g.var[ch], var[ch]) < 1e-5,
                    "var {ch}: {} vs {}",
                    g.var[ch],
                    var[ch]
                );
                let unbiased = var[ch] * count as f64 / (count - 1) as f64;
                assert!(rel(g.var_unbiased[ch], unbiased) < 1e-5);
            }
        }
    }
}

#[test]
fn sync_batch_norm_needs_two_values() {
    let one = ChannelStats {
        sum: vec![1.0],
        sum_sq: vec![1.0],
        count: 1,
    };
    let e = sync_batch_stats(&one, &SingleProcess).unwrap_err();
    assert!(e.to_string().contains("more than 1 value"), "{e}");
    let bad = ChannelStats {
        sum: vec![1.0],
        sum_sq: vec![],
        count: 3,
    };
    assert!(sync_batch_stats(&bad, &SingleProcess).is_err());
}

#[test]
fn communicator_is_object_safe_and_shareable() {
    fn takes(_: &dyn Communicator) {}
    takes(&SingleProcess);
    let g = LocalGroup::new(1).unwrap();
    takes(&g[0]);
}
