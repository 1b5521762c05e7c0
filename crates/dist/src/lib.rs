//! `yolo-dist`: data-parallel training for yolo-forge, independent of the device backend.
//!
//! One process (or, in tests, one thread) per replica. Replicas talk through a
//! [`Communicator`]: [`SingleProcess`] for plain runs, [`LocalGroup`] for in-process tests
//! with exactly NCCL's sum semantics, [`TcpComm`] for CPU processes (rank 0 as the hub), and
//! `NcclComm` (cargo feature `nccl`) for GPUs.
//! Processes find each other through the torchrun environment ([`DistEnv`]) and rank 0 shares
//! the NCCL unique id over TCP ([`rendezvous`]). After backward, [`GradBuckets`] averages the
//! gradients in flat buckets, as PyTorch DDP does; [`DistributedSampler`] shards the dataset
//! and [`sync_batch_stats`] gives SyncBatchNorm its global statistics.

#![deny(missing_docs)]

mod buckets;
mod comm;
mod env;
mod error;
mod local;
#[cfg(feature = "nccl")]
mod nccl;
pub mod rendezvous;
mod sampler;
mod sync_bn;
mod tcp;

pub use buckets::{broadcast_parameters, GradBuckets, SyncReport};
pub use comm::{Communicator, SingleProcess};
pub use env::{DistEnv, DEFAULT_MASTER_ADDR, DEFAULT_MASTER_PORT};
pub use error::{DistError, Result};
pub use local::{LocalComm, LocalGroup};
#[cfg(feature = "nccl")]
pub use nccl::NcclComm;
pub use sampler::DistributedSampler;
pub use sync_bn::{sync_batch_stats, ChannelStats, GlobalStats};
pub use tcp::TcpComm;
