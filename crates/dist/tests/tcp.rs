//! The TCP communicator with real sockets, one thread per rank: sums agree bit for bit with the
//! in-process group's, broadcasts from any root, and disagreements are errors, not hangs.

use std::net::TcpListener;
use std::thread;
use std::time::Duration;
use yolo_dist::{Communicator, DistEnv, DistError, TcpComm};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `f` on `world` ranks joined through a fresh TCP group.
fn run<T: Send + 'static>(
    world: usize,
    f: impl Fn(TcpComm) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            thread::spawn(move || {
                let env = DistEnv {
                    rank,
                    world_size: world,
                    local_rank: rank,
                    master_addr: "127.0.0.1".into(),
                    master_port: port,
                    rendezvous_port: port,
                };
                f(TcpComm::from_env(&env, Duration::from_secs(20)).unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn collectives_agree_on_every_rank() {
    let out = run(3, |c| {
        let r = c.rank() as f32;
        // a sum whose float result depends on the order: rank order, as LocalComm
        let mut sum = vec![1e8 * (1.0 - 2.0 * (r % 2.0)), r * 0.3 + 0.1, r];
        c.all_reduce_sum(&mut sum).unwrap();
        let mut seen = Vec::new();
        for root in [2, 0, 1] {
            let mut b = vec![(c.rank() * 10 + root) as f32; 5];
            c.broadcast(&mut b, root).unwrap();
            seen.push(b);
        }
        c.barrier().unwrap();
        let mut empty: Vec<f32> = Vec::new();
        c.all_reduce_sum(&mut empty).unwrap();
        (sum, seen)
    });
    let mut want = vec![0.0f32; 3];
    for r in 0..3 {
        let r = r as f32;
        for (w, x) in want
            .iter_mut()
            .zip([1e8 * (1.0 - 2.0 * (r % 2.0)), r * 0.3 + 0.1, r])
        {
            *w += x;
        }
    }
    for (sum, seen) in &out {
        assert_eq!(sum, &want);
        let roots: Vec<f32> = seen.iter().map(|b| b[0]).collect();
        assert_eq!(roots, vec![22.0, 0.0, 11.0]);
    }
}

#[test]
fn disagreements_are_errors_on_every_rank() {
    let out = run(2, |c| {
        let mut b = vec![1.0; 2 + c.rank()];
        let e = c.all_reduce_sum(&mut b);
        // the group stays usable afterwards
        let mut ok = vec![c.rank() as f32 + 1.0];
        c.all_reduce_sum(&mut ok).unwrap();
        (e, ok)
    });
    for (e, ok) in out {
        let e = e.unwrap_err();
        assert!(matches!(e, DistError::Mismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("2 floats") && e.to_string().contains("3 floats"),
            "{e}"
        );
        assert_eq!(ok, vec![3.0]);
    }
}

#[test]
fn a_rank_that_leaves_is_reported() {
    let out = run(2, |c| {
        if c.rank() == 1 {
            drop(c);
            return None;
        }
        Some(c.barrier())
    });
    let e = out[0].as_ref().unwrap().as_ref().unwrap_err();
    assert!(matches!(e, DistError::PeerGone { rank: 1, .. }), "{e}");
}

#[test]
fn a_single_process_needs_no_network() {
    let c = TcpComm::from_env(&DistEnv::single(), Duration::ZERO).unwrap();
    let mut b = [2.0];
    c.all_reduce_sum(&mut b).unwrap();
    c.broadcast(&mut b, 0).unwrap();
    c.barrier().unwrap();
    assert_eq!((b, c.world_size()), ([2.0], 1));
    assert!(c.broadcast(&mut b, 1).is_err());
}
