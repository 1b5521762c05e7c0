//! Batch normalisation (training statistics), softmax and BCE-with-logits.

use rayon::prelude::*;

/// Output of the training-mode batch-norm forward.
pub(crate) struct BnForward {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    /// Biased variance (what normalises the batch).
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

/// Batch-norm forward with batch statistics over N, H, W, per channel.
/// With `act` (a unary op's code, see `UnaryOp::code`) the output is `act(bn(x))`, computed in
/// the same pass: the normalised values never go to memory.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    act: Option<OpCode>,
) -> BnForward {
    let m = (n * hw) as f64;
    let stats: Vec<(f32, f32, f32)> = crate::threads::install(|| {
        (0..c)
            .into_par_iter()
            .map(|ch| {
                // Two passes (mean, then squared deviations): no cancellation in the variance.
                // f32 sums within a plane, f64 across planes.
                let mut s = 0.0f64;
                for i in 0..n {
                    s += super::simd::sum(&x[(i * c + ch) * hw..][..hw]) as f64;
                }
                let mean = s / m;
                let mut v = 0.0f64;
                for i in 0..n {
                    v += super::simd::sum_sq_dev(&x[(i * c + ch) * hw..][..hw], mean as f32) as f64;
                }
                let var = v / m;
                (
                    mean as f32,
                    var as f32,
                    (1.0 / (var + eps as f64).sqrt()) as f32,
                )
            })
            .collect()
    });
    let mut y = super::buffer::alloc(x.len());
    crate::threads::install(|| {
        // The activation's staging buffer is made once per task, not zeroed per plane (small
        // planes, e.g. 10×10, would otherwise zero 40× the data they process).
        let scratch = || vec![0.0f32; ACT_CHUNK.min(hw)];
        y.par_chunks_mut(hw)
            .enumerate()
            .for_each_init(scratch, |tmp, (plane, dst)| {
                let ch = plane % c;
                let (mean, _, invstd) = stats[ch];
                let scale = invstd * weight[ch];
                let shift = bias[ch] - mean * scale;
                let src = &x[plane * hw..(plane + 1) * hw];
                match act {
                    None => {
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = v * scale + shift;
                        }
                    }
                    Some((code, a, b)) => {
                        for (dc, sc) in dst.chunks_mut(ACT_CHUNK).zip(src.chunks(ACT_CHUNK)) {
                            let t = &mut tmp[..sc.len()];
                            for (o, &v) in t.iter_mut().zip(sc) {
                                *o = v * scale + shift;
                            }
                            super::simd::unary(code, a, b, t, dc);
                        }
                    }
                }
            })
    });
    BnForward {
        y,
        mean: stats.iter().map(|s| s.0).collect(),
        var: stats.iter().map(|s| s.1).collect(),
        invstd: stats.iter().map(|s| s.2).collect(),
    }
}

/// Batch-norm backward (training statistics). Returns (dx, dweight, dbias).
///
/// With `act = Some((bias, op code))` the forward was `act(bn(x))` and `dy` is the gradient of
/// the activation's output: the normalised values are recomputed from `x` and the activation's
/// derivative applied on the way (no saved intermediate).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f32],
    mean: &[f32],
    invstd: &[f32],
    act: Option<(&[f32], OpCode)>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if let Some((bias, op)) = act {
        return batch_norm_act_train_backward(x, dy, n, c, hw, weight, bias, mean, invstd, op);
    }
    let m = (n * hw) as f32;
    // Per channel: Σdy and Σdy·x̂.
    let sums: Vec<(f32, f32)> = crate::threads::install(|| {
        (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mu, is) = (mean[ch], invstd[ch]);
                let (mut sd, mut sdx) = (0.0f64, 0.0f64);
                for i in 0..n {
                    let off = (i * c + ch) * hw;
                    let (g, v) = (&dy[off..off + hw], &x[off..off + hw]);
                    sd += super::simd::sum(g) as f64;
                    sdx += super::simd::sum_prod_dev(g, v, mu) as f64 * is as f64;
                }
                (sd as f32, sdx as f32)
            })
            .collect()
    });
    let mut dx = super::buffer::alloc(x.len());
    crate::threads::install(|| {
        dx.par_chunks_mut(hw).enumerate().for_each(|(plane, d)| {
            let ch = plane % c;
            let (sd, sdx) = sums[ch];
            let (mu, is) = (mean[ch], invstd[ch]);
            let k = weight[ch] * is / m;
            let off = plane * hw;
            for ((o, &v), &g) in d.iter_mut().zip(&x[off..off + hw]).zip(&dy[off..off + hw]) {
                let xhat = (v - mu) * is;
                *o = k * (m * g - sd - xhat * sdx);
            }
        })
    });
    (
        dx,
        sums.iter().map(|s| s.1).collect(),
        sums.iter().map(|s| s.0).collect(),
    )
}

/// A unary op as `UnaryOp::code` gives it: (code, first parameter, second parameter).
type OpCode = (u8, f32, f32);

/// Elements per stack chunk of the fused batch-norm + activation passes (stays in L1).
const ACT_CHUNK: usize = 1024;

/// [`batch_norm_train_backward`] through an activation: pass 1 recomputes `y = bn(x)` per
/// chunk, writes `dy = dz · act'(y)` into the output buffer and sums Σdy and Σdy·x̂ per plane;
/// pass 2 turns `dy` into `dx` in place.
#[allow(clippy::too_many_arguments)]
fn batch_norm_act_train_backward(
    x: &[f32],
    dz: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    weight: &[f32],
    bias: &[f32],
    mean: &[f32],
    invstd: &[f32],
    (code, a, b): OpCode,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * hw) as f32;
    let mut dx = super::buffer::alloc(x.len());
    let plane_sums: Vec<(f64, f64)> = crate::threads::install(|| {
        dx.par_chunks_mut(hw)
            .enumerate()
            .map_init(
                || vec![0.0f32; ACT_CHUNK.min(hw)],
                |tmp, (plane, d)| {
                    let ch = plane % c;
                    let (mu, is) = (mean[ch], invstd[ch]);
                    let scale = is * weight[ch];
                    let shift = bias[ch] - mu * scale;
                    let off = plane * hw;
                    let (xs, gs) = (&x[off..off + hw], &dz[off..off + hw]);
                    let (mut sd, mut sdx) = (0.0f64, 0.0f64);
                    for ((dc, xc), gc) in d
                        .chunks_mut(ACT_CHUNK)
                        .zip(xs.chunks(ACT_CHUNK))
                        .zip(gs.chunks(ACT_CHUNK))
                    {
                        let t = &mut tmp[..xc.len()];
                        for (o, &v) in t.iter_mut().zip(xc) {
                            *o = v * scale + shift;
                        }
                        super::simd::unary_backward(code, a, b, t, gc, dc);
                        sd += super::simd::sum(dc) as f64;
                        sdx += super::simd::sum_prod_dev(dc, xc, mu) as f64 * is as f64;
                    }
                    (sd, sdx)
                },
            )
            .collect()
    });
    // Per channel, summed over images in order (deterministic for any thread count).
    let sums: Vec<(f32, f32)> = (0..c)
        .map(|ch| {
            let (mut sd, mut sdx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let (a, b) = plane_sums[i * c + ch];
                sd += a;
                sdx += b;
            }
            (sd as f32, sdx as f32)
        })
        .collect();
    crate::threads::install(|| {
        dx.par_chunks_mut(hw).enumerate().for_each(|(plane, d)| {
            let ch = plane % c;
            let (sd, sdx) = sums[ch];
            let (mu, is) = (mean[ch], invstd[ch]);
            let k = weight[ch] * is / m;
            let off = plane * hw;
            for (o, &v) in d.iter_mut().zip(&x[off..off + hw]) {
                let xhat = (v - mu) * is;
                *o = k * (m * *o - sd - xhat * sdx);
            }
        })
    });
    (
        dx,
        sums.iter().map(|s| s.1).collect(),
        sums.iter().map(|s| s.0).collect(),
    )
}

/// Softmax (or log-softmax) along the middle axis of an (outer, size, inner) split.
pub(crate) fn softmax(x: &[f32], outer: usize, size: usize, inner: usize, log: bool) -> Vec<f32> {
    let mut y = super::buffer::alloc(x.len());
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * size + j) * inner + i;
            let mx = (0..size)
                .map(|j| x[at(j)])
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..size).map(|j| (x[at(j)] - mx).exp()).sum();
            for j in 0..size {
                y[at(j)] = if log {
                    x[at(j)] - mx - sum.ln()
                } else {
                    (x[at(j)] - mx).exp() / sum
                };
            }
        }
    }
    y
}

/// Gradient of [`softmax`] from its output `y`.
pub(crate) fn softmax_backward(
    y: &[f32],
    dy: &[f32],
    outer: usize,
    size: usize,
    inner: usize,
    log: bool,
) -> Vec<f32> {
    let mut dx = super::buffer::alloc(y.len());
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * size + j) * inner + i;
            if log {
                // dx = dy − softmax·Σdy
                let s: f32 = (0..size).map(|j| dy[at(j)]).sum();
                for j in 0..size {
                    dx[at(j)] = dy[at(j)] - y[at(j)].exp() * s;
                }
            } else {
                // dx = y·(dy − Σ y·dy)
                let s: f32 = (0..size).map(|j| y[at(j)] * dy[at(j)]).sum();
                for j in 0..size {
                    dx[at(j)] = y[at(j)] * (dy[at(j)] - s);
                }
            }
        }
    }
    dx
}

/// Elementwise `BCEWithLogits(x, t)` with optional positive weight (broadcast already applied):
/// `(1−t)·x + (1+(pw−1)·t)·(ln(1+e^(−|x|)) + max(−x, 0))`.
pub(crate) fn bce_with_logits(x: &[f32], t: &[f32], pw: Option<&[f32]>) -> Vec<f32> {
    x.iter()
        .zip(t)
        .enumerate()
        .map(|(i, (&x, &t))| {
            let lw = pw.map_or(1.0, |p| 1.0 + (p[i] - 1.0) * t);
            (1.0 - t) * x + lw * ((-x.abs()).exp().ln_1p() + (-x).max(0.0))
        })
        .collect()
}
