//! Seeded randomness: one independent generator per (seed, epoch, sample), so results do not
//! depend on how many workers run or in which order.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// SplitMix64 finaliser: a well-mixed 64-bit function of its input.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one sample in one epoch.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix64(mix64(mix64(seed) ^ epoch) ^ index))
}

/// The generator of an epoch's shuffle order (distinct stream from any sample's).
pub fn epoch_rng(seed: u64, epoch: u64) -> StdRng {
    StdRng::seed_from_u64(mix64(mix64(seed ^ 0x5348_5546_464C_4521) ^ epoch))
}

/// Uniform in [lo, hi) (returns lo when the range is empty), as Python's `random.uniform`.
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// A standard normal draw (Box–Muller).
pub fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = rng.random::<f64>().max(1e-300);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(shape, 1) draw for shape ≥ 1 (Marsaglia–Tsang).
pub fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.random::<f64>().max(1e-300);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(a, b) draw for a, b ≥ 1.
pub fn beta<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    x / (x + y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_mean() {
        let mut r = sample_rng(1, 2, 3);
        let n = 4000;
        let m: f64 = (0..n).map(|_| beta(&mut r, 32.0, 32.0)).sum::<f64>() / n as f64;
        assert!((m - 0.5).abs() < 0.01, "{m}");
    }

    #[test]
    fn streams_differ() {
        let a: u64 = sample_rng(0, 0, 1).random();
        let b: u64 = sample_rng(0, 1, 0).random();
        let c: u64 = sample_rng(0, 0, 1).random();
        assert_ne!(a, b);
        assert_eq!(a, c);
    }
}
