//! Data-parallel training as upstream's DDP mode: one replica per rank, each reading its shard
//! of the training set; parameters and buffers start as rank 0's, gradients are averaged after
//! every backward, and rank 0 alone validates, keeps the EMA and writes the run.
//!
//! With a [`SingleProcess`] communicator every method is a no-op (or the identity), so the
//! trainer's single-process path is unchanged.

use crate::error::{invalid, Result};
use yolo_data::{Loader, Sampler};
use yolo_dist::{
    broadcast_parameters, Communicator, DistributedSampler, GradBuckets, SingleProcess, SyncReport,
};
use yolo_layers::Kind;
use yolo_tensor::Tensor;

/// A replica's view of its data-parallel group.
#[derive(Clone, Copy)]
pub struct DataParallel<'a> {
    comm: &'a dyn Communicator,
    buckets: GradBuckets,
}

impl std::fmt::Debug for DataParallel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataParallel {{ rank: {}, world: {} }}",
            self.rank(),
            self.world()
        )
    }
}

/// The communicator of a plain run.
static SINGLE: SingleProcess = SingleProcess;

impl Default for DataParallel<'static> {
    fn default() -> Self {
        DataParallel::new(&SINGLE)
    }
}

impl<'a> DataParallel<'a> {
    /// A replica talking through `comm`, averaging gradients in PyTorch DDP's 25 MiB buckets.
    pub fn new(comm: &'a dyn Communicator) -> DataParallel<'a> {
        DataParallel {
            comm,
            buckets: GradBuckets::default(),
        }
    }

    /// This replica's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of replicas.
    pub fn world(&self) -> usize {
        self.comm.world_size()
    }

    /// Whether this replica is rank 0, the one that validates and writes the run.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Whether more than one replica takes part.
    pub fn is_distributed(&self) -> bool {
        self.world() > 1
    }

    /// Images per batch on each rank for a total batch of `total` (upstream: `batch_size //
    /// WORLD_SIZE`, which must divide evenly).
    pub fn per_rank_batch(&self, total: usize) -> Result<usize> {
        let w = self.world();
        if total == 0 || !total.is_multiple_of(w) {
            return invalid(
                "--batch-size",
                format!("{total} must be a positive multiple of WORLD_SIZE {w} for data-parallel training"),
            );
        }
        Ok(total / w)
    }

    /// Overwrites every rank's tensors (parameters and buffers) with rank 0's.
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        broadcast_parameters(tensors, self.comm, 0)?;
        Ok(())
    }

    /// Broadcasts the model's buffers (BN running statistics, anchors) from rank 0, as DDP's
    /// `broadcast_buffers=True` does before every forward pass.
    pub fn broadcast_buffers(&self, named: &[(String, Tensor, Kind)]) -> Result<()> {
        if !self.is_distributed() {
            return Ok(());
        }
        let buffers: Vec<Tensor> = named
            .iter()
            .filter(|(_, _, k)| *k == Kind::Buffer)
            .map(|(_, t, _)| t.clone())
            .collect();
        self.broadcast_from_main(&buffers)
    }

    /// Replaces every parameter's gradient by its mean over the ranks (bucketed all-reduce).
    pub fn average_gradients(&self, params: &[Tensor]) -> Result<SyncReport> {
        Ok(self.buckets.all_reduce_mean(params, self.comm)?)
    }

    /// For each flag: whether it is set on any rank (the same answer on every rank).
    pub fn any(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let mut buf: Vec<f32> = flags.iter().map(|&f| f32::from(u8::from(f))).collect();
        self.comm.all_reduce_sum(&mut buf)?;
        Ok(buf.iter().map(|&x| x > 0.5).collect())
    }

    /// Rank 0's value of `flag`, on every rank (e.g. the early-stopping decision).
    pub fn from_main(&self, flag: bool) -> Result<bool> {
        if !self.is_distributed() {
            return Ok(flag);
        }
        let mut buf = [f32::from(u8::from(flag))];
        self.comm.broadcast(&mut buf, 0)?;
        Ok(buf[0] > 0.5)
    }

    /// Returns once every rank got here (upstream `torch_distributed_zero_first` uses one
    /// before and one after rank 0's work).
    pub fn barrier(&self) -> Result<()> {
        Ok(self.comm.barrier()?)
    }

    /// This rank's shard of a dataset of `len` items: PyTorch's `DistributedSampler` with
    /// shuffling seeded by `seed + epoch` (the same permutation on every rank, disjoint
    /// shards of equal size, padded by repetition).
    pub fn sampler(&self, len: usize, seed: u64) -> Result<DistributedSampler> {
        Ok(DistributedSampler::new(
            len,
            self.world(),
            self.rank(),
            true,
            seed,
        )?)
    }

    /// `loader` reading only this rank's shard (see [`DataParallel::sampler`]); unchanged in a
    /// single process.
    pub fn shard_loader(&self, loader: Loader, seed: u64) -> Result<Loader> {
        if !self.is_distributed() {
            return Ok(loader);
        }
        let s = self.sampler(loader.dataset().len(), seed)?;
        let n = s.num_samples();
        Ok(loader.with_sampler(Sampler::new(n, move |epoch| s.indices(epoch))))
    }
}
