//! Data-parallel runs under torchrun: the communicator the environment and `--device` ask for.

use crate::common::{parse_device, DeviceRequest};
use anyhow::{Context, Result};
use yolo_dist::{Communicator, DistEnv, SingleProcess, TcpComm};

/// The communicator of this process: a single process without the torchrun variables (or
/// with WORLD_SIZE=1); NCCL for CUDA devices (cargo feature `nccl`); TCP through rank 0 for
/// `--device cpu`.
pub fn communicator(env: &DistEnv, device: &str) -> Result<Box<dyn Communicator>> {
    if !env.is_distributed() {
        return Ok(Box::new(SingleProcess));
    }
    let timeout = yolo_dist::rendezvous::DEFAULT_TIMEOUT;
    let what = format!(
        "joining the data-parallel group as rank {} of {} (MASTER_ADDR={}, port {})",
        env.rank, env.world_size, env.master_addr, env.rendezvous_port
    );
    match parse_device(device)? {
        DeviceRequest::Cpu => Ok(Box::new(TcpComm::from_env(env, timeout).context(what)?)),
        // torchrun starts one process per GPU: LOCAL_RANK is its device ordinal, as upstream
        DeviceRequest::Cuda(_) => cuda_communicator(env, timeout, &what),
    }
}

#[cfg(feature = "nccl")]
fn cuda_communicator(
    env: &DistEnv,
    timeout: std::time::Duration,
    what: &str,
) -> Result<Box<dyn Communicator>> {
    let c = yolo_dist::NcclComm::from_env(env, timeout).with_context(|| what.to_string())?;
    Ok(Box::new(c))
}

#[cfg(not(feature = "nccl"))]
fn cuda_communicator(
    env: &DistEnv,
    _timeout: std::time::Duration,
    _what: &str,
) -> Result<Box<dyn Communicator>> {
    anyhow::bail!(
        "WORLD_SIZE={} with CUDA devices needs NCCL, but this yolo-forge was built without it: rebuild with `cargo build --release -p yolo-cli --features nccl`, or train on the CPU with --device cpu",
        env.world_size
    )
}
