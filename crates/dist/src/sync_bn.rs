//! SyncBatchNorm statistics: per-channel mean and variance over the whole global batch.
//!
//! Two small all-reduces: first the per-channel sums and counts (→ global mean), then each
//! rank's sum of squared deviations from that global mean. Local sums are taken in f64, and
//! the second round adds only non-negative terms, so there is no `E[x²] − E[x]²`
//! cancellation even when the mean is large next to the spread.

use crate::comm::Communicator;
use crate::error::{arg_err, DistError, Result};

/// One rank's per-channel statistics of its part of the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// Σx per channel.
    pub sum: Vec<f64>,
    /// Σx² per channel.
    pub sum_sq: Vec<f64>,
    /// Values per channel on this rank (N·H·W).
    pub count: u64,
}

/// Statistics of the global batch, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalStats {
    /// Mean over all ranks' values.
    pub mean: Vec<f32>,
    /// Biased variance (divides by the count): what normalisation uses.
    pub var: Vec<f32>,
    /// Unbiased variance (divides by count − 1): what running statistics track.
    pub var_unbiased: Vec<f32>,
    /// Values per channel over all ranks.
    pub count: u64,
}

impl ChannelStats {
    /// Statistics of an NCHW f32 buffer of shape `shape`.
    pub fn from_nchw(x: &[f32], shape: [usize; 4]) -> Result<ChannelStats> {
        let [n, c, h, w] = shape;
        if x.len() != n * c * h * w {
            return arg_err(
                "ChannelStats::from_nchw",
                format!("buffer of {} values for shape {shape:?}", x.len()),
            );
        }
        let mut sum = vec![0.0f64; c];
        let mut sum_sq = vec![0.0f64; c];
        let plane = h * w;
        for (i, chunk) in x.chunks_exact(plane.max(1)).enumerate().take(n * c) {
            let ch = i % c;
            for &v in chunk {
                let v = v as f64;
                sum[ch] += v;
                sum_sq[ch] += v * v;
            }
        }
        Ok(ChannelStats {
            sum,
            sum_sq,
            count: (n * plane) as u64,
        })
    }
}

/// Bits per limb when a count travels as f32: limb sums stay exact below 2^24 for up to 4096
/// ranks.
const LIMB_BITS: u32 = 12;
const LIMBS: usize = 3;

fn count_to_limbs(count: u64) -> [f32; LIMBS] {
    let mask = (1u64 << LIMB_BITS) - 1;
    std::array::from_fn(|i| ((count >> (LIMB_BITS * i as u32)) & mask) as f32)
}

fn limbs_to_count(limbs: &[f32]) -> u64 {
    limbs
        .iter()
        .enumerate()
        .map(|(i, &l)| (l.round() as u64) << (LIMB_BITS * i as u32))
        .sum()
}

/// All-reduces the local statistics of every rank into the global batch's mean and variance.
/// Every rank must pass the same channel count; errors when the global count is below 2 (as
/// PyTorch: "expected more than 1 value per channel when training").
pub fn sync_batch_stats(local: &ChannelStats, comm: &dyn Communicator) -> Result<GlobalStats> {
    let c = local.sum.len();
    if local.sum_sq.len() != c {
        return arg_err(
            "sync_batch_stats",
            format!("{} sums but {} sums of squares", c, local.sum_sq.len()),
        );
    }
    if local.count >= 1 << (LIMB_BITS * LIMBS as u32) {
        return arg_err(
            "sync_batch_stats",
            format!("count {} too large to reduce exactly", local.count),
        );
    }
    // round 1: sums and counts → global mean
    let mut buf: Vec<f32> = local.sum.iter().map(|&s| s as f32).collect();
    buf.extend_from_slice(&count_to_limbs(local.count));
    comm.all_reduce_sum(&mut buf)?;
    let count = limbs_to_count(&buf[c..]);
    if count < 2 {
        return Err(DistError::InvalidArgument {
            op: "sync_batch_stats",
            detail: format!("expected more than 1 value per channel over all ranks, got {count}"),
        });
    }
    let mean: Vec<f64> = buf[..c].iter().map(|&s| s as f64 / count as f64).collect();
    // round 2: Σ(x − mean)² = Σx² − 2·mean·Σx + n·mean², per rank in f64 (≥ 0 up to rounding)
    let n = local.count as f64;
    let mut dev: Vec<f32> = (0..c)
        .map(|k| {
            let m = mean[k];
            (local.sum_sq[k] - 2.0 * m * local.sum[k] + n * m * m).max(0.0) as f32
        })
        .collect();
    comm.all_reduce_sum(&mut dev)?;
    let var = dev
        .iter()
        .map(|&d| (d as f64 / count as f64) as f32)
        .collect();
    let var_unbiased = dev
        .iter()
        .map(|&d| (d as f64 / (count - 1) as f64) as f32)
        .collect();
    Ok(GlobalStats {
        mean: mean.iter().map(|&m| m as f32).collect(),
        var,
        var_unbiased,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_the_f32_round_trip() {
        for c in [0u64, 1, 4095, 4096, 13_107_200, (1 << 36) - 1] {
            assert_eq!(limbs_to_count(&count_to_limbs(c)), c);
        }
        // and sums of limbs from many ranks stay exact
        let ranks = [13_107_200u64, 99_999_999, 123];
        let mut acc = [0.0f32; LIMBS];
        for r in ranks {
            for (a, l) in acc.iter_mut().zip(count_to_limbs(r)) {
                *a += l;
            }
        }
        assert_eq!(limbs_to_count(&acc), ranks.iter().sum::<u64>());
    }

    #[test]
    fn from_nchw_checks_the_shape() {
        assert!(ChannelStats::from_nchw(&[1.0; 5], [1, 2, 1, 2]).is_err());
        let s = ChannelStats::from_nchw(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [2, 2, 1, 2])
            .unwrap();
        assert_eq!(s.sum, vec![1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0]);
        assert_eq!(s.count, 4);
    }
}
