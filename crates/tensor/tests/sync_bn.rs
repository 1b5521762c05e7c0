//! Synchronised batch norm against plain batch norm: with one replica they agree, and two
//! replicas holding halves of a batch compute what one process with the whole batch computes
//! (outputs, input gradients, parameter gradients summed over replicas, running statistics).

use std::sync::Arc;

use yolo_tensor::{AllReduceSum, Device, Tensor, UnaryOp};

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 1.5
        })
        .collect()
}

/// BN (sync or plain) + act on `x`, loss Σ y·r, backward: (y, dx, dw, db, running mean, var).
fn run(x: &[f32], shape: &[usize], r: &[f32], sync: Option<&AllReduceSum>) -> [Vec<f32>; 6] {
    let c = shape[1];
    let dev = Device::Cpu;
    let x = Tensor::from_vec(x.to_vec(), shape, dev)
        .unwrap()
        .with_grad();
    let w = Tensor::from_vec(rand(c, 7), &[c], dev).unwrap().with_grad();
    let b = Tensor::from_vec(rand(c, 8), &[c], dev).unwrap().with_grad();
    let rm = Tensor::zeros(&[c], dev).unwrap();
    let rv = Tensor::ones(&[c], dev).unwrap();
    let act = Some(UnaryOp::Silu);
    let y = match sync {
        Some(s) => x.batch_norm2d_sync_train(&w, &b, &rm, &rv, 0.03, 1e-3, act, s),
        None => x.batch_norm2d_act_train(&w, &b, &rm, &rv, 0.03, 1e-3, act),
    }
    .unwrap();
    let r = Tensor::from_vec(r.to_vec(), shape, dev).unwrap();
    y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    [
        y.to_vec(),
        x.grad().unwrap().to_vec(),
        w.grad().unwrap().to_vec(),
        b.grad().unwrap().to_vec(),
        rm.to_vec(),
        rv.to_vec(),
    ]
}

#[test]
fn one_replica_equals_plain_batch_norm() {
    let shape = [3, 5, 6, 7];
    let n: usize = shape.iter().product();
    let (x, r) = (rand(n, 1), rand(n, 2));
    let noop: AllReduceSum = Arc::new(|_: &mut [f64]| Ok(()));
    let plain = run(&x, &shape, &r, None);
    let synced = run(&x, &shape, &r, Some(&noop));
    for (i, what) in ["y", "dx", "dw", "db", "running_mean", "running_var"]
        .iter()
        .enumerate()
    {
        let e = yolo_testutil::max_rel(&plain[i], &synced[i]);
        assert!(e < 2e-5, "{what}: {e}");
    }
}

#[test]
fn two_replicas_equal_one_process_with_the_whole_batch() {
    let shape = [4, 6, 5, 5];
    let n: usize = shape.iter().product();
    let half = n / 2;
    let (x, r) = (rand(n, 3), rand(n, 4));
    let full = run(&x, &shape, &r, None);
    let comms = yolo_testutil::sum_group(2);
    let handles: Vec<_> = comms
        .into_iter()
        .enumerate()
        .map(|(rank, comm)| {
            let xs = x[rank * half..(rank + 1) * half].to_vec();
            let rs = r[rank * half..(rank + 1) * half].to_vec();
            std::thread::spawn(move || {
                // replicas block in their collective inside kernel code: one pool each
                yolo_tensor::use_private_pool(1);
                run(&xs, &[2, 6, 5, 5], &rs, Some(&comm))
            })
        })
        .collect();
    let parts: Vec<[Vec<f32>; 6]> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let cat = |i: usize| [parts[0][i].clone(), parts[1][i].clone()].concat();
    assert!(
        yolo_testutil::max_rel(&full[0], &cat(0)) < 2e-5,
        "y: {}",
        yolo_testutil::max_rel(&full[0], &cat(0))
    );
    assert!(
        yolo_testutil::max_rel(&full[1], &cat(1)) < 2e-5,
        "dx: {}",
        yolo_testutil::max_rel(&full[1], &cat(1))
    );
    for (i, what) in [(2, "dw"), (3, "db")] {
        let summed: Vec<f32> = parts[0][i]
            .iter()
            .zip(&parts[1][i])
            .map(|(a, b)| a + b)
            .collect();
        assert!(
            yolo_testutil::max_rel(&full[i], &summed) < 2e-5,
            "{what}: {}",
            yolo_testutil::max_rel(&full[i], &summed)
        );
    }
    for (i, what) in [(4, "running_mean"), (5, "running_var")] {
        for p in &parts {
            assert!(
                yolo_testutil::max_rel(&full[i], &p[i]) < 2e-5,
                "{what}: {}",
                yolo_testutil::max_rel(&full[i], &p[i])
            );
        }
    }
    // and without synchronisation the halves would differ from the whole batch
    let alone = run(&x[..half], &[2, 6, 5, 5], &r[..half], None);
    assert!(yolo_testutil::max_rel(&full[0][..half], &alone[0]) > 1e-3);
}
