//! Typed errors of the data-parallel layer.

use std::time::Duration;

/// Everything distributed training can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A torchrun environment variable is unparseable or inconsistent with the others.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// Its value as given (empty when absent).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument is out of range (rank, world size, root, bucket size…).
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Ranks called a collective with different buffer lengths or different collectives.
    #[error("{op}: ranks disagree: {detail}")]
    Mismatch {
        /// The collective.
        op: &'static str,
        /// Which ranks gave what.
        detail: String,
    },
    /// A rank left the group (dropped its communicator or panicked) while others waited.
    #[error("{op}: rank {rank} left the group")]
    PeerGone {
        /// The collective that was waiting.
        op: &'static str,
        /// The rank that left.
        rank: usize,
    },
    /// The rendezvous that shares the NCCL unique id failed.
    #[error("rendezvous at {addr}: {reason}")]
    Rendezvous {
        /// MASTER_ADDR:port.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The rendezvous did not complete in time.
    #[error("rendezvous at {addr}: timed out after {:.1} s: {reason}", waited.as_secs_f64())]
    RendezvousTimeout {
        /// MASTER_ADDR:port.
        addr: String,
        /// How long this rank waited.
        waited: Duration,
        /// Who was missing, and the last error seen.
        reason: String,
    },
    /// Gradients cannot be synchronised (missing on some ranks, wrong device…).
    #[error("gradient sync: {0}")]
    Grad(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
    /// CUDA or NCCL failed or is not present.
    #[error("NCCL: {0}")]
    Nccl(String),
}

/// Result alias of the data-parallel layer.
pub type Result<T> = std::result::Result<T, DistError>;

pub(crate) fn arg_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(DistError::InvalidArgument {
        op,
        detail: detail.into(),
    })
}
