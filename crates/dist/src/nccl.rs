//! The NCCL communicator (cargo feature `nccl`), through cudarc's `nccl` module.
//!
//! cudarc loads libcuda and libnccl at run time, so this compiles anywhere; at run time the
//! driver and NCCL libraries are probed before the first call (cudarc panics on a missing
//! library), and setup runs under `catch_unwind`, so a machine without them gets an error.
//! Collectives take host buffers (copied to the device and back) until tensors live on the
//! GPU.

use crate::comm::Communicator;
use crate::env::DistEnv;
use crate::error::{arg_err, DistError, Result};
use crate::rendezvous::{share_from_rank0, NCCL_UNIQUE_ID_BYTES};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An NCCL communicator plus the stream its collectives run on.
struct Inner {
    comm: Comm,
    stream: Arc<CudaStream>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls are not
// concurrent (the Mutex in `NcclComm` serialises them) and the CUDA context is current on the
// calling thread (bound before every call).
unsafe impl Send for Inner {}

/// A [`Communicator`] over NCCL: one process per GPU, ranks as in [`DistEnv`].
pub struct NcclComm {
    inner: Mutex<Inner>,
    rank: usize,
    world: usize,
    ordinal: usize,
}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NcclComm {{ rank: {}, world: {}, device: cuda:{} }}",
            self.rank, self.world, self.ordinal
        )
    }
}

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> DistError {
    DistError::Nccl(format!("{what}: {e:?}"))
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(DistError::Nccl(format!("{what}: {msg}")))
    })
}

/// Errors unless the CUDA device and the NCCL library are usable.
fn check_present(ordinal: usize) -> Result<()> {
    yolo_tensor::Device::cuda(ordinal)?;
    // SAFETY: only tries to open the library with libloading.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Err(DistError::Nccl(
            "libnccl.so could not be loaded: NCCL is not installed (or not on LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    Ok(())
}

impl NcclComm {
    /// Joins the job described by `env` on GPU `env.local_rank`: rank 0 creates the NCCL unique
    /// id and shares it over TCP (waiting up to `timeout` for the others).
    pub fn from_env(env: &DistEnv, timeout: Duration) -> Result<NcclComm> {
        check_present(env.local_rank)?;
        let id = share_from_rank0(
            env,
            || {
                guarded("ncclGetUniqueId", || {
                    let id = Id::new().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
                    Ok(id.internal().iter().map(|&c| c as u8).collect())
                })
            },
            timeout,
        )?;
        NcclComm::from_unique_id(env.local_rank, env.rank, env.world_size, &id)
    }

    /// Joins a job given the NCCL unique id bytes (128) directly, on GPU `ordinal`.
    pub fn from_unique_id(
        ordinal: usize,
        rank: usize,
        world: usize,
        id: &[u8],
    ) -> Result<NcclComm> {
        if world == 0 || rank >= world || world > i32::MAX as usize {
            return arg_err(
                "NcclComm",
                format!("rank {rank} out of range for world size {world}"),
            );
        }
        if id.len() != NCCL_UNIQUE_ID_BYTES {
            return arg_err(
                "NcclComm",
                format!(
                    "unique id of {} bytes, NCCL uses {NCCL_UNIQUE_ID_BYTES}",
                    id.len()
                ),
            );
        }
        check_present(ordinal)?;
        let mut raw = [0 as std::ffi::c_char; NCCL_UNIQUE_ID_BYTES];
        for (r, &b) in raw.iter_mut().zip(id) {
            *r = b as std::ffi::c_char;
        }
        let inner = guarded("ncclCommInitRank", || {
            let ctx = CudaContext::new(ordinal).map_err(|e| nccl_err("cuda context", e))?;
            let stream = ctx.new_stream().map_err(|e| nccl_err("cuda stream", e))?;
            let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(raw))
                .map_err(|e| nccl_err("ncclCommInitRank", e))?;
            Ok(Inner { comm, stream })
        })?;
        Ok(NcclComm {
            inner: Mutex::new(inner),
            rank,
            world,
            ordinal,
        })
    }

    /// Runs `f` on the device copy of `buf` and copies the result back.
    fn on_device(
        &self,
        what: &'static str,
        buf: &mut [f32],
        f: impl FnOnce(&Comm, &mut cudarc::driver::CudaSlice<f32>) -> Result<()>,
    ) -> Result<()> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guarded(what, || {
            let s = &inner.stream;
            s.context()
                .bind_to_thread()
                .map_err(|e| nccl_err("bind context", e))?;
            // NCCL rejects zero-length buffers on some versions; one float keeps ranks in step
            let host: Vec<f32> = if buf.is_empty() {
                vec![0.0]
            } else {
                buf.to_vec()
            };
            let mut dev = s
                .clone_htod(&host)
                .map_err(|e| nccl_err("copy to device", e))?;
            f(&inner.comm, &mut dev)?;
            let back = s
                .clone_dtoh(&dev)
                .map_err(|e| nccl_err("copy to host", e))?;
            s.synchronize().map_err(|e| nccl_err("synchronize", e))?;
            if !buf.is_empty() {
                buf.copy_from_slice(&back);
            }
            Ok(())
        })
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.on_device("ncclAllReduce", buf, |comm, dev| {
            comm.all_reduce_in_place(dev, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclAllReduce", e))
        })
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.world {
            return arg_err(
                "broadcast",
                format!("root {root} out of range for world size {}", self.world),
            );
        }
        self.on_device("ncclBroadcast", buf, |comm, dev| {
            comm.broadcast_in_place(dev, root as i32)
                .map(|_| ())
                .map_err(|e| nccl_err("ncclBroadcast", e))
        })
    }

    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_comm_world_of_one_or_a_clear_error() {
        let env = DistEnv::single();
        match NcclComm::from_env(&env, Duration::from_secs(30)) {
            Ok(c) => {
                println!("NCCL present: testing world size 1 on cuda:0");
                let mut b = vec![1.5f32, -2.0];
                c.all_reduce_sum(&mut b).unwrap();
                assert_eq!(b, vec![1.5, -2.0]);
                c.broadcast(&mut b, 0).unwrap();
                c.barrier().unwrap();
                assert!(c.broadcast(&mut b, 1).is_err());
            }
            Err(e) => {
                println!("skipped: no CUDA device or NCCL here: {e}");
                let msg = e.to_string();
                assert!(msg.contains("unavailable") || msg.contains("NCCL"), "{msg}");
            }
        }
        assert!(NcclComm::from_unique_id(0, 2, 2, &[0; 128]).is_err());
        assert!(NcclComm::from_unique_id(0, 0, 1, &[0; 12]).is_err());
    }
}
