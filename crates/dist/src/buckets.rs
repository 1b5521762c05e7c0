//! Gradient averaging in flat buckets after backward, as PyTorch DDP's reducer does.
//!
//! Gradients are read with [`Tensor::grad`] and written back in place with
//! [`Tensor::update_data`] on the gradient tensor. Autograd may hand the same gradient tensor
//! to several parameters (e.g. both operands of an `add`); such aliases are reduced once,
//! which leaves every alias holding the averaged values.

use crate::comm::Communicator;
use crate::error::{arg_err, DistError, Result};
use std::ops::Range;
use yolo_tensor::Tensor;

/// What one synchronisation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Collectives run on gradient data (not counting the presence check).
    pub buckets: usize,
    /// Floats reduced in all.
    pub floats: usize,
    /// Parameters whose gradient was another parameter's gradient tensor (reduced once).
    pub aliased: usize,
    /// Parameters with no gradient on any rank (left alone).
    pub without_grad: usize,
}

/// Packs gradients into flat buckets of at most a given size and averages them over ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradBuckets {
    cap_floats: usize,
}

impl Default for GradBuckets {
    fn default() -> Self {
        GradBuckets {
            cap_floats: mib_to_floats(GradBuckets::DEFAULT_CAP_MIB),
        }
    }
}

fn mib_to_floats(mib: f64) -> usize {
    ((mib * (1u64 << 20) as f64) / std::mem::size_of::<f32>() as f64).floor() as usize
}

/// Pairs of (parameter index, gradient) with aliases of earlier gradients dropped.
fn unique_grads(params: &[Tensor], keep: impl Fn(usize) -> bool) -> (Vec<(usize, Tensor)>, usize) {
    let mut out: Vec<(usize, Tensor)> = Vec::new();
    let mut aliased = 0;
    for (i, p) in params.iter().enumerate() {
        if !keep(i) {
            continue;
        }
        let Some(g) = p.grad() else { continue };
        if out.iter().any(|(_, h)| h.same_storage(&g)) {
            aliased += 1;
            continue;
        }
        out.push((i, g));
    }
    (out, aliased)
}

/// Runs `reduce` on buckets of `tensors` packed flat, then writes each bucket back.
fn bucketed(
    buckets: &GradBuckets,
    tensors: &[Tensor],
    mut reduce: impl FnMut(&mut [f32]) -> Result<()>,
) -> Result<(usize, usize)> {
    let numels: Vec<usize> = tensors.iter().map(Tensor::numel).collect();
    let plan = buckets.plan(&numels);
    let mut floats = 0;
    for range in &plan {
        let len: usize = numels[range.clone()].iter().sum();
        let mut buf = Vec::with_capacity(len);
        for t in &tensors[range.clone()] {
            buf.extend_from_slice(&t.to_vec());
        }
        reduce(&mut buf)?;
        let mut off = 0;
        for t in &tensors[range.clone()] {
            let n = t.numel();
            let src = &buf[off..off + n];
            t.update_data(|d| d.copy_from_slice(src))?;
            off += n;
        }
        floats += len;
    }
    Ok((plan.len(), floats))
}

impl GradBuckets {
    /// Bucket size of PyTorch DDP (`bucket_cap_mb=25`).
    pub const DEFAULT_CAP_MIB: f64 = 25.0;

    /// Buckets of at most `cap_mib` MiB of f32 (a tensor larger than that gets a bucket of its
    /// own). Errors unless `cap_mib` is finite and holds at least one float.
    pub fn new(cap_mib: f64) -> Result<GradBuckets> {
        if !cap_mib.is_finite() || mib_to_floats(cap_mib) == 0 {
            return arg_err(
                "GradBuckets::new",
                format!("bucket size {cap_mib} MiB must be positive and hold at least one f32"),
            );
        }
        Ok(GradBuckets {
            cap_floats: mib_to_floats(cap_mib),
        })
    }

    /// The bucket capacity in floats.
    pub fn cap_floats(&self) -> usize {
        self.cap_floats
    }

    /// Splits tensors of the given sizes, in order, into consecutive index ranges of at most
    /// [`GradBuckets::cap_floats`] floats each (an oversized tensor alone in its range).
    pub fn plan(&self, numels: &[usize]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut fill = 0;
        for (i, &n) in numels.iter().enumerate() {
            if i > start && fill + n > self.cap_floats {
                out.push(start..i);
                start = i;
                fill = 0;
            }
            fill += n;
        }
        if start < numels.len() {
            out.push(start..numels.len());
        }
        out
    }

    /// Replaces every parameter's gradient by its mean over the ranks of `comm`: one presence
    /// check (a parameter must have a gradient on all ranks or on none), then one sum
    /// all-reduce per bucket, divided by the world size. Every rank must pass the same
    /// parameter list (same order, same shapes). Gradients must be on the CPU for now.
    pub fn all_reduce_mean(
        &self,
        params: &[Tensor],
        comm: &dyn Communicator,
    ) -> Result<SyncReport> {
        let world = comm.world_size();
        let mut report = SyncReport::default();
        if world == 1 {
            report.without_grad = params.iter().filter(|p| p.grad().is_none()).count();
            return Ok(report);
        }
        let mut present: Vec<f32> = params
            .iter()
            .map(|p| if p.grad().is_some() { 1.0 } else { 0.0 })
            .collect();
        comm.all_reduce_sum(&mut present)?;
        for (i, &k) in present.iter().enumerate() {
            let k = k.round() as usize;
            if k == 0 {
                report.without_grad += 1;
            } else if k != world {
                return Err(DistError::Grad(format!(
                    "parameter {i} (shape {:?}) has a gradient on {k} of {world} ranks: every rank must use every parameter in its forward pass, or none may",
                    params[i].shape()
                )));
            }
        }
        let (grads, aliased) = unique_grads(params, |_| true);
        report.aliased = aliased;
        let tensors: Vec<Tensor> = grads.into_iter().map(|(_, g)| g).collect();
        let scale = world as f32;
        let (buckets, floats) = bucketed(self, &tensors, |buf| {
            comm.all_reduce_sum(buf)?;
            buf.iter_mut().for_each(|x| *x /= scale);
            Ok(())
        })?;
        report.buckets = buckets;
        report.floats = floats;
        Ok(report)
    }
}

/// Overwrites the data of `tensors` (parameters and buffers such as BN running statistics) on
/// every rank with `root`'s, in buckets of the default size: replicas start identical.
pub fn broadcast_parameters(
    tensors: &[Tensor],
    comm: &dyn Communicator,
    root: usize,
) -> Result<()> {
    if root >= comm.world_size() {
        return arg_err(
            "broadcast_parameters",
            format!(
                "root {root} out of range for world size {}",
                comm.world_size()
            ),
        );
    }
    if comm.world_size() == 1 {
        return Ok(());
    }
    // tied parameters (one storage, several handles) travel once
    let mut unique: Vec<Tensor> = Vec::new();
    for t in tensors {
        if !unique.iter().any(|u| u.same_storage(t)) {
            unique.push(t.clone());
        }
    }
    bucketed(&GradBuckets::default(), &unique, |buf| {
        comm.broadcast(buf, root)
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_respects_the_cap_in_order() {
        let b = GradBuckets { cap_floats: 10 };
        assert_eq!(b.plan(&[]), Vec::<Range<usize>>::new());
        assert_eq!(b.plan(&[4, 6, 1]), vec![0..2, 2..3]);
        assert_eq!(
            b.plan(&[4, 7, 3, 3, 3, 25, 1]),
            vec![0..1, 1..3, 3..5, 5..6, 6..7]
        );
        assert_eq!(GradBuckets::default().cap_floats(), 25 * (1 << 20) / 4);
        assert_eq!(GradBuckets::new(1.0).unwrap().cap_floats(), 1 << 18);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-9] {
            assert!(GradBuckets::new(bad).is_err(), "{bad}");
        }
    }
}
