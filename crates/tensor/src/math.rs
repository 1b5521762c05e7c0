//! Scalar math written so that loops over slices auto-vectorise (no libm calls in hot paths).

/// `e^x` (Cephes-style range reduction and degree-6 polynomial, ~1 ulp, no libm call).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_55, 88.376_26);
    // Round x/ln2 to nearest with the 1.5·2^23 trick: vectorises on plain SSE2.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // t's low mantissa bits hold n (offset by MAGIC's): 2^n from integer ops alone, which
    // vectorise (a float→int cast would be saturating and scalar).
    let scale = f32::from_bits((t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23);
    y * scale
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Hyperbolic tangent without libm: an odd series below |x| = 0.3 (no cancellation), else
/// `(1 − e^(−2|x|)) / (1 + e^(−2|x|))` with the sign restored; both branches are computed and
/// selected, so loops vectorise.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let e = exp(-2.0 * a);
    let big = ((1.0 - e) / (1.0 + e)).copysign(x);
    let x2 = x * x;
    let small = x
        * (1.0
            + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    if a < 0.3 {
        small
    } else {
        big
    }
}

/// `tanh(softplus(x))`, the gate of Mish, with one exponential.
#[inline(always)]
pub fn tanh_softplus(x: f32) -> f32 {
    let n = exp(x.min(20.0));
    let m = n * (n + 2.0);
    m / (m + 2.0)
}

/// `ln(1 + e^x)` without overflow.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// sqrt(2/pi), used by the tanh form of GELU.
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// 1/sqrt(2).
pub const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/sqrt(2 pi).
pub const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let a = super::exp(x) as f64;
            let b = (x as f64).exp();
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn tanh_matches_std() {
        let mut x = -12.0f32;
        while x < 12.0 {
            let (a, b) = (super::tanh(x) as f64, (x as f64).tanh());
            assert!(
                (a - b).abs() <= 2e-7 * b.abs().max(1e-30) + 1e-9 && (a - b).abs() < 3e-7,
                "tanh({x}): {a} vs {b}"
            );
            x += 0.00731;
        }
    }

    #[test]
    fn erf_matches_reference_points() {
        // erf values from tables (Abramowitz & Stegun, table 7.1).
        for (x, e) in [
            (0.5f32, 0.520_499_9f64),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
        ] {
            assert!((super::erf(x) as f64 - e).abs() < 3e-7, "erf({x})");
        }
    }
}
