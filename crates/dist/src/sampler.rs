//! Sharding a dataset over ranks with PyTorch's `DistributedSampler` semantics.

use crate::error::{arg_err, Result};

/// Splits `0..len` over `world` ranks per epoch, as `torch.utils.data.DistributedSampler`
/// (`drop_last=False`): optionally shuffled by `seed + epoch` (same permutation on every
/// rank), padded by repeating from the start to a multiple of `world`, then every
/// `world`-th index from `rank`. Each rank gets `ceil(len / world)` indices.
///
/// The shuffle uses SplitMix64 + Fisher–Yates, so it is deterministic and portable, but not
/// the same permutation as `torch.randperm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    world: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
}

/// SplitMix64: tiny, fast, and the same sequence everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias (Lemire's method with rejection).
    fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

impl DistributedSampler {
    /// A sampler over a dataset of `len` items for `rank` of `world`. Errors on `world == 0`
    /// or `rank >= world`.
    pub fn new(
        len: usize,
        world: usize,
        rank: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<DistributedSampler> {
        if world == 0 {
            return arg_err("DistributedSampler::new", "world size must be at least 1");
        }
        if rank >= world {
            return arg_err(
                "DistributedSampler::new",
                format!("rank {rank} out of range for world size {world}"),
            );
        }
        Ok(DistributedSampler {
            len,
            world,
            rank,
            shuffle,
            seed,
        })
    }

    /// Indices per rank per epoch: `ceil(len / world)`.
    pub fn num_samples(&self) -> usize {
        self.len.div_ceil(self.world)
    }

    /// Indices over all ranks per epoch, padding included: `num_samples() * world`.
    pub fn total_size(&self) -> usize {
        self.num_samples() * self.world
    }

    /// The permutation of `0..len` every rank uses in `epoch` (identity without shuffle).
    pub fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = SplitMix64(self.seed.wrapping_add(epoch));
            for i in (1..idx.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                idx.swap(i, j);
            }
        }
        idx
    }

    /// This rank's indices in `epoch`.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let perm = self.permutation(epoch);
        if perm.is_empty() {
            return Vec::new();
        }
        let total = self.total_size();
        // pad by repeating from the start (cycling when padding exceeds len, as PyTorch does)
        (self.rank..total)
            .step_by(self.world)
            .map(|i| perm[i % perm.len()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn shards(len: usize, world: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
        (0..world)
            .map(|r| {
                DistributedSampler::new(len, world, r, shuffle, seed)
                    .unwrap()
                    .indices(epoch)
            })
            .collect()
    }

    #[test]
    fn shards_cover_everything_and_overlap_only_by_padding() {
        for (len, world) in [(10, 3), (12, 4), (7, 1), (2, 5), (1, 3), (100, 8)] {
            for shuffle in [false, true] {
                let s = shards(len, world, shuffle, 42, 3);
                let n = len.div_ceil(world);
                assert!(s.iter().all(|x| x.len() == n), "{len} {world}: {s:?}");
                let all: Vec<usize> = s.iter().flatten().copied().collect();
                let set: HashSet<usize> = all.iter().copied().collect();
                assert_eq!(set, (0..len).collect::<HashSet<_>>(), "{len} {world}");
                // duplicates are exactly the padding
                assert_eq!(all.len() - set.len(), n * world - len, "{len} {world}");
            }
        }
    }

    #[test]
    fn ranks_interleave_one_shared_permutation() {
        let (len, world) = (11, 3);
        let s = shards(len, world, true, 7, 5);
        let perm = DistributedSampler::new(len, world, 0, true, 7)
            .unwrap()
            .permutation(5);
        assert_ne!(perm, (0..len).collect::<Vec<_>>(), "shuffled");
        // rebuild the padded permutation from the shards: it must be perm + perm[..pad]
        let mut rebuilt = vec![usize::MAX; 12];
        for (r, shard) in s.iter().enumerate() {
            for (k, &i) in shard.iter().enumerate() {
                rebuilt[r + k * world] = i;
            }
        }
        let mut padded = perm.clone();
        padded.push(perm[0]);
        assert_eq!(rebuilt, padded);
        // PyTorch's pattern without shuffle: padded [0..10, 0, 1], rank r takes r, r+3, …
        let s = shards(10, 3, false, 0, 0);
        assert_eq!(
            s,
            vec![vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]
        );
        // padding longer than the dataset cycles through it again
        assert_eq!(
            shards(2, 5, false, 0, 0),
            vec![vec![0], vec![1], vec![0], vec![1], vec![0]]
        );
    }

    #[test]
    fn epochs_and_seeds_change_the_order_deterministically() {
        let a = shards(50, 2, true, 1, 0);
        assert_eq!(a, shards(50, 2, true, 1, 0));
        assert_ne!(a, shards(50, 2, true, 1, 1));
        assert_ne!(a, shards(50, 2, true, 2, 0));
        // seed + epoch is what counts, as in PyTorch
        assert_eq!(shards(50, 2, true, 1, 1), shards(50, 2, true, 2, 0));
        // no shuffle: the same every epoch
        assert_eq!(shards(50, 2, false, 1, 0), shards(50, 2, false, 1, 9));
    }

    #[test]
    fn bad_arguments_and_empty_datasets() {
        assert!(DistributedSampler::new(10, 0, 0, false, 0).is_err());
        assert!(DistributedSampler::new(10, 2, 2, false, 0).is_err());
        let s = DistributedSampler::new(0, 2, 1, true, 0).unwrap();
        assert_eq!((s.num_samples(), s.indices(0)), (0, vec![]));
    }

    #[test]
    fn bounded_draws_are_in_range_and_cover_it() {
        let mut rng = SplitMix64(3);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }
}
