//! The NCCL communicator at world size 1 on `cuda:0`, over real NCCL (cargo feature `nccl`):
//! the unique id travels through the TCP rendezvous on 127.0.0.1 (a free port), the
//! communicator is built from it, and all-reduce, broadcast and barrier run on the GPU.
//!
//! `cargo test -p yolo-dist --features nccl --test nccl_world1 -- --nocapture`. Without a GPU or
//! the NCCL library it prints `skipped: <reason>` and passes, unless `YOLO_REQUIRE_GPU=1`.
//! Prints `nccl | …` lines for `cargo xtask gpu-check`.
#![cfg(feature = "nccl")]

use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use yolo_dist::rendezvous::{fetch_blob, RendezvousServer, NCCL_UNIQUE_ID_BYTES};
use yolo_dist::{Communicator, DistEnv, NcclComm};
use yolo_tensor::{cuda_status, Device};

/// Why the check cannot run here, or `None`.
fn unavailable() -> Option<String> {
    if let Err(e) = Device::cuda(0) {
        return Some(e.to_string());
    }
    // SAFETY: only tries to open the library with libloading.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Some(
            "libnccl.so could not be loaded: NCCL is not installed (or not on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    None
}

fn skip_or_fail(reason: &str) {
    let required = std::env::var("YOLO_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1");
    assert!(
        !required,
        "YOLO_REQUIRE_GPU=1 but NCCL on cuda:0 is unusable: {reason}\n{}",
        cuda_status()
    );
    println!("skipped: {reason}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh NCCL unique id (`ncclGetUniqueId`), as bytes.
fn unique_id() -> Result<Vec<u8>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        cudarc::nccl::safe::Id::new()
            .map(|id| id.internal().iter().map(|&c| c as u8).collect::<Vec<u8>>())
            .map_err(|e| format!("ncclGetUniqueId: {e:?}"))
    }))
    .unwrap_or_else(|_| Err("ncclGetUniqueId panicked".into()))
}

/// Sends `id` from a rendezvous server on 127.0.0.1:`port` to a client thread (as rank 0 does
/// for the other ranks of a job) and returns what the client received.
fn through_rendezvous(id: &[u8], port: u16) -> Vec<u8> {
    let addr = format!("127.0.0.1:{port}");
    // the server counts ranks 1..world: a world of 2 makes it wait for the one client
    let server = RendezvousServer::bind(&addr, 2).unwrap();
    let client = {
        let addr = addr.clone();
        std::thread::spawn(move || fetch_blob(&addr, 1, 2, Duration::from_secs(20)))
    };
    server.serve(id, Duration::from_secs(20)).unwrap();
    client.join().unwrap().unwrap()
}

fn check_collectives(comm: &NcclComm, label: &str) {
    assert_eq!(comm.rank(), 0);
    assert_eq!(comm.world_size(), 1);
    // odd length, a few MiB: several NCCL chunks; world 1 sum is the identity, bit for bit
    let n = (3 << 20) + 17;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32) * 0.618_034).sin() * 1e3 + 1e-7 * i as f32)
        .collect();
    let mut buf = data.clone();
    let t = Instant::now();
    comm.all_reduce_sum(&mut buf).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        buf == data,
        "{label}: all_reduce_sum changed values at world size 1"
    );
    let mut small = vec![1.5f32, -2.0, 3.25];
    comm.all_reduce_sum(&mut small).unwrap();
    assert_eq!(small, vec![1.5, -2.0, 3.25]);
    let mut empty: Vec<f32> = Vec::new();
    comm.all_reduce_sum(&mut empty).unwrap();
    comm.broadcast(&mut small, 0).unwrap();
    assert_eq!(small, vec![1.5, -2.0, 3.25]);
    assert!(
        comm.broadcast(&mut small, 1).is_err(),
        "root 1 of a world of 1"
    );
    comm.barrier().unwrap();
    println!(
        "nccl | {label} | ok | all_reduce of {n} floats ({:.1} MiB) in {ms:.1} ms, broadcast, barrier",
        n as f64 * 4.0 / (1 << 20) as f64
    );
}

#[test]
fn nccl_world_of_one_on_cuda0() {
    if let Some(reason) = unavailable() {
        skip_or_fail(&reason);
        return;
    }
    println!("{}", cuda_status());
    // 1. the unique id through the TCP rendezvous, then the communicator from it
    let id = unique_id().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id.len(), NCCL_UNIQUE_ID_BYTES);
    let port = free_port();
    let got = through_rendezvous(&id, port);
    assert_eq!(got, id, "the rendezvous changed the unique id");
    let comm = NcclComm::from_unique_id(0, 0, 1, &got)
        .unwrap_or_else(|e| panic!("ncclCommInitRank from the shared id: {e}"));
    check_collectives(&comm, &format!("unique id via rendezvous 127.0.0.1:{port}"));
    drop(comm);
    // 2. the torchrun path: a world-1 environment on a free port (rank 0 makes the id itself)
    let env = DistEnv {
        master_port: free_port(),
        ..DistEnv::single()
    };
    let env = DistEnv {
        rendezvous_port: env.master_port,
        ..env
    };
    let comm = NcclComm::from_env(&env, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("NcclComm::from_env: {e}"));
    check_collectives(&comm, "NcclComm::from_env (world 1)");
    // bad arguments are refused before NCCL is touched
    assert!(NcclComm::from_unique_id(0, 1, 1, &id).is_err());
    assert!(NcclComm::from_unique_id(0, 0, 1, &id[..12]).is_err());
}

#[test]
fn without_nccl_the_error_names_the_reason() {
    if unavailable().is_none() {
        return; // covered by the test above
    }
    let e = NcclComm::from_env(&DistEnv::single(), Duration::from_secs(5)).unwrap_err();
    let msg = e.to_string();
    println!("NcclComm::from_env without a GPU/NCCL: {msg}");
    assert!(
        msg.contains("cuda:0") || msg.contains("NCCL") || msg.contains("nccl"),
        "{msg}"
    );
}
