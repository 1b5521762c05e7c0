//! The collective-communication interface every data-parallel piece is written against.

use crate::error::{arg_err, Result};

/// Collectives over a fixed group of ranks, with NCCL's semantics: every rank calls the same
/// collectives in the same order with buffers of the same length.
pub trait Communicator: Send + Sync {
    /// This replica's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of replicas in the group.
    fn world_size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum over ranks (identical on all ranks).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Replaces `buf` on every rank by `root`'s `buf`.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// The communicator of a single, non-distributed process: world size 1, every collective a
/// no-op.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<()> {
        if root != 0 {
            return arg_err(
                "broadcast",
                format!("root {root} out of range for world size 1"),
            );
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
