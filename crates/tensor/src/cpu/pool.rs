//! Max pooling and nearest upsampling on N×C×H×W planes, parallel over planes.

use crate::op::Pool2dParams;
use rayon::prelude::*;

/// Output size of a pooling window along one axis (floor mode).
pub(crate) fn pooled(len: usize, k: usize, s: usize, p: usize) -> usize {
    (len + 2 * p - k) / s + 1
}

/// Max pooling; padded positions never win (PyTorch pads with −inf). Separable: a row pass
/// then a column pass, 2k compares per output instead of k².
pub(crate) fn max_pool2d(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    p: &Pool2dParams,
) -> Vec<f32> {
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.stride;
    let (ph, pw) = p.padding;
    let (oh, ow) = (pooled(h, kh, sh, ph), pooled(w, kw, sw, pw));
    let mut out = super::buffer::alloc(planes * oh * ow);
    if sw == 1 && oh * ow > 0 && h * w > 0 {
        // Several planes per task (≥ 4 K outputs, at least 4 tasks per thread where there are
        // enough planes), scratch rows reused across them.
        let per = (4096 / (oh * ow))
            .max(1)
            .min(planes.div_ceil(4 * crate::threads::num_threads()).max(1));
        super::par_chunks_mut(&mut out, per * oh * ow, |i, o| {
            let xs = &x[i * per * h * w..][..o.len() / (oh * ow) * h * w];
            pool_s1_planes(xs, o, (h, w), p);
        });
        return out;
    }
    super::par_chunks_mut(&mut out, oh * ow, |pl, o| {
        let xp = &x[pl * h * w..(pl + 1) * h * w];
        // Row pass: hmax[iy][ox] = max over the window's columns.
        let mut hmax = vec![f32::NEG_INFINITY; h * ow];
        for iy in 0..h {
            let xr = &xp[iy * w..(iy + 1) * w];
            for ox in 0..ow {
                let start = (ox * sw) as isize - pw as isize;
                let mut m = f32::NEG_INFINITY;
                for kx in 0..kw {
                    let ix = start + kx as isize;
                    if ix >= 0 && (ix as usize) < w {
                        m = nan_max(m, xr[ix as usize]);
                    }
                }
                hmax[iy * ow + ox] = m;
            }
        }
        for oy in 0..oh {
            let dst = &mut o[oy * ow..(oy + 1) * ow];
            dst.fill(f32::NEG_INFINITY);
            let start = (oy * sh) as isize - ph as isize;
            for ky in 0..kh {
                let iy = start + ky as isize;
                if iy >= 0 && (iy as usize) < h {
                    let src = &hmax[iy as usize * ow..(iy as usize + 1) * ow];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = nan_max(*d, v);
                    }
                }
            }
        }
    });
    out
}

/// The forward of a pool with horizontal stride 1 over consecutive planes `x` (each h×w) into
/// `o`, on the widest vectors the CPU has.
fn pool_s1_planes(x: &[f32], o: &mut [f32], hw: (usize, usize), p: &Pool2dParams) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::has_avx512() {
            // SAFETY: the CPU has AVX-512 F (checked above).
            return unsafe { pool_s1_planes_512(x, o, hw, p) };
        }
        if super::simd::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return unsafe { pool_s1_planes_avx2(x, o, hw, p) };
        }
    }
    pool_s1_planes_generic(x, o, hw, p)
}

/// [`pool_s1_planes`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pool_s1_planes_512(x: &[f32], o: &mut [f32], hw: (usize, usize), p: &Pool2dParams) {
    pool_s1_planes_generic(x, o, hw, p)
}

/// [`pool_s1_planes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_s1_planes_avx2(x: &[f32], o: &mut [f32], hw: (usize, usize), p: &Pool2dParams) {
    pool_s1_planes_generic(x, o, hw, p)
}

/// The running maximum's rule: a strictly larger value or any NaN replaces (padding is −inf,
/// so it never wins over an in-image value, and the result equals the first-maximum rule's).
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// The body of [`pool_s1_planes`]. Each plane is copied once into a −inf-bordered grid
/// (`ph` rows above and below, `pw` columns either side), so both passes run flat over the
/// whole plane in long vectors, even for 10 × 10 maps: the row pass takes the maximum of `kw`
/// neighbours along the grid, the column pass of `kh` rows of that (stride 1; with a
/// vertical stride the column pass takes every `sh`-th output row), and the output keeps
/// each row's first `ow` columns.
#[inline(always)]
fn pool_s1_planes_generic(x: &[f32], o: &mut [f32], (h, w): (usize, usize), p: &Pool2dParams) {
    let ((kh, kw), (sh, _), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let (oh, ow) = (pooled(h, kh, sh, ph), pooled(w, kw, 1, pw));
    let (gw, gh) = (w + 2 * pw, h + 2 * ph);
    let mut grid = vec![f32::NEG_INFINITY; gh * gw];
    // Row maxima at every grid position whose window fits the grid.
    let n = gh * gw - (kw - 1);
    let mut rmax = vec![f32::NEG_INFINITY; gh * gw];
    let mut cmax = vec![f32::NEG_INFINITY; if sh == 1 { (oh - 1) * gw + ow } else { ow }];
    for (xp, op) in x.chunks_exact(h * w).zip(o.chunks_exact_mut(oh * ow)) {
        for (iy, row) in xp.chunks_exact(w).enumerate() {
            grid[(iy + ph) * gw + pw..][..w].copy_from_slice(row);
        }
        rmax[..n].copy_from_slice(&grid[..n]);
        for kx in 1..kw {
            for (m, &v) in rmax[..n].iter_mut().zip(&grid[kx..kx + n]) {
                *m = nan_max(*m, v);
            }
        }
        if sh == 1 {
            // Output row oy, column ox is the maximum of rmax rows oy..oy + kh at column ox.
            let len = cmax.len();
            cmax.copy_from_slice(&rmax[..len]);
            for ky in 1..kh {
                for (m, &v) in cmax.iter_mut().zip(&rmax[ky * gw..ky * gw + len]) {
                    *m = nan_max(*m, v);
                }
            }
            for (oy, orow) in op.chunks_exact_mut(ow).enumerate() {
                orow.copy_from_slice(&cmax[oy * gw..oy * gw + ow]);
            }
        } else {
            for (oy, orow) in op.chunks_exact_mut(ow).enumerate() {
                cmax[..ow].copy_from_slice(&rmax[oy * sh * gw..][..ow]);
                for ky in 1..kh {
                    let src = &rmax[(oy * sh + ky) * gw..][..ow];
                    for (m, &v) in cmax[..ow].iter_mut().zip(src) {
                        *m = nan_max(*m, v);
                    }
                }
                orow.copy_from_slice(&cmax[..ow]);
            }
        }
    }
}

/// Gradient of [`max_pool2d`]: each output's gradient goes to the first maximum of its window
/// in row-major order (as PyTorch's CPU kernel picks it).
pub(crate) fn max_pool2d_backward(
    x: &[f32],
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    p: &Pool2dParams,
) -> Vec<f32> {
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.stride;
    let (ph, pw) = p.padding;
    let (oh, ow) = (pooled(h, kh, sh, ph), pooled(w, kw, sw, pw));
    let mut dx = super::buffer::filled(planes * h * w, 0.0);
    crate::threads::install(|| {
        dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, d)| {
            let xp = &x[pl * h * w..(pl + 1) * h * w];
            let g = &dy[pl * oh * ow..(pl + 1) * oh * ow];
            // Separable, like the forward: the row pass picks each window row's winner (value,
            // column), the column pass picks among those rows with the same rule. The rule
            // (first strict maximum, but any NaN replaces: the last NaN) picks the same element
            // over rows of row winners as over the whole window in row-major order.
            if sw == 1 {
                return winners_s1_backward(xp, g, d, (h, w), (oh, ow), p);
            }
            let pick = |best: usize, m: f32, v: f32| best == usize::MAX || v > m || v.is_nan();
            let mut rv = vec![f32::NEG_INFINITY; h * ow];
            let mut ri = vec![usize::MAX; h * ow];
            for iy in 0..h {
                let xr = &xp[iy * w..(iy + 1) * w];
                for ox in 0..ow {
                    let start = (ox * sw) as isize - pw as isize;
                    let (mut best, mut m) = (usize::MAX, f32::NEG_INFINITY);
                    for kx in 0..kw {
                        let ix = start + kx as isize;
                        if ix >= 0 && (ix as usize) < w {
                            let v = xr[ix as usize];
                            if pick(best, m, v) {
                                m = v;
                                best = ix as usize;
                            }
                        }
                    }
                    rv[iy * ow + ox] = m;
                    ri[iy * ow + ox] = best;
                }
            }
            for oy in 0..oh {
                let start = (oy * sh) as isize - ph as isize;
                for ox in 0..ow {
                    let (mut best, mut m) = (usize::MAX, f32::NEG_INFINITY);
                    for ky in 0..kh {
                        let iy = start + ky as isize;
                        if iy < 0 || iy as usize >= h {
                            continue;
                        }
                        let j = iy as usize * ow + ox;
                        if ri[j] != usize::MAX && pick(best, m, rv[j]) {
                            m = rv[j];
                            best = iy as usize * w + ri[j];
                        }
                    }
                    if best != usize::MAX {
                        d[best] += g[oy * ow + ox];
                    }
                }
            }
        })
    });
    dx
}

/// Lanes of the vectorised stride-1 passes.
const LANES: usize = 8;

/// The row pass of a stride-1 pool over every row of one plane (`xp`, h×w): per output
/// column, the window's winning value into `vals` (h×ow) and, unless `cols` is empty, its
/// input column into `cols` (−1 where the window holds no in-image column). The rule is the
/// backward's: the first in-image value, then a strictly larger one or any NaN replaces it;
/// padding never wins. Lane-parallel so it compiles to vector compares and blends.
fn row_winners_s1(
    xp: &[f32],
    (h, w): (usize, usize),
    kw: usize,
    pw: usize,
    vals: &mut [f32],
    cols: &mut [i32],
) {
    let ow = w + 2 * pw + 1 - kw;
    let mut pad = vec![f32::NEG_INFINITY; w + 2 * pw + LANES];
    for iy in 0..h {
        pad[pw..pw + w].copy_from_slice(&xp[iy * w..(iy + 1) * w]);
        for o0 in (0..ow).step_by(LANES) {
            let (mut m, mut b) = ([f32::NEG_INFINITY; LANES], [-1i32; LANES]);
            for kx in 0..kw {
                let v = &pad[o0 + kx..o0 + kx + LANES];
                for l in 0..LANES {
                    let ix = (o0 + l + kx) as i32 - pw as i32;
                    let valid = (ix >= 0) & (ix < w as i32);
                    let take = valid & ((b[l] < 0) | (v[l] > m[l]) | v[l].is_nan());
                    m[l] = if take { v[l] } else { m[l] };
                    b[l] = if take { ix } else { b[l] };
                }
            }
            let (at, n) = (iy * ow + o0, LANES.min(ow - o0));
            vals[at..at + n].copy_from_slice(&m[..n]);
            if !cols.is_empty() {
                cols[at..at + n].copy_from_slice(&b[..n]);
            }
        }
    }
}

/// Backward of a stride-1 pool (vertical stride any) for one plane: finds each window's
/// first maximum in row-major order (a NaN replaces, so the last NaN wins: PyTorch's CPU rule)
/// with lane-parallel row and column passes, then adds `g` into `d` at the winners.
fn winners_s1_backward(
    xp: &[f32],
    g: &[f32],
    d: &mut [f32],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    p: &Pool2dParams,
) {
    let ((kh, kw), (sh, _), (ph, pw)) = (p.kernel, p.stride, p.padding);
    let mut rv = vec![f32::NEG_INFINITY; h * ow];
    let mut ri = vec![-1i32; h * ow];
    row_winners_s1(xp, (h, w), kw, pw, &mut rv, &mut ri);
    // Column pass over the row winners, same rule, then the scatter.
    let mut best = vec![-1i64; ow];
    let mut m = vec![f32::NEG_INFINITY; ow];
    for oy in 0..oh {
        best.fill(-1);
        m.fill(f32::NEG_INFINITY);
        let start = (oy * sh) as isize - ph as isize;
        for ky in 0..kh {
            let iy = start + ky as isize;
            if iy < 0 || iy as usize >= h {
                continue;
            }
            let iy = iy as usize;
            let (vr, ir) = (&rv[iy * ow..(iy + 1) * ow], &ri[iy * ow..(iy + 1) * ow]);
            for ox in 0..ow {
                let (v, c) = (vr[ox], ir[ox]);
                let take = (c >= 0) & ((best[ox] < 0) | (v > m[ox]) | v.is_nan());
                m[ox] = if take { v } else { m[ox] };
                best[ox] = if take {
                    (iy * w) as i64 + c as i64
                } else {
                    best[ox]
                };
            }
        }
        for (ox, &b) in best.iter().enumerate() {
            if b >= 0 {
                d[b as usize] += g[oy * ow + ox];
            }
        }
    }
}

/// Nearest upsampling by integer factors (sh, sw).
pub(crate) fn upsample_nearest(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
) -> Vec<f32> {
    let (oh, ow) = (h * sh, w * sw);
    let mut out = super::buffer::alloc(planes * oh * ow);
    super::par_chunks_mut(&mut out, oh * ow, |pl, o| {
        let xp = &x[pl * h * w..(pl + 1) * h * w];
        if (sh, sw) == (2, 2) {
            // YOLO's neck: both output rows written from one read of the input row, each value
            // stored as a pair (vector shuffles, not a fill and a memmove per row).
            for (src, rows) in xp.chunks_exact(w).zip(o.chunks_exact_mut(2 * ow)) {
                let (r0, r1) = rows.split_at_mut(ow);
                let (p0, _) = r0.as_chunks_mut::<2>();
                let (p1, _) = r1.as_chunks_mut::<2>();
                for ((a, b), &v) in p0.iter_mut().zip(p1.iter_mut()).zip(src) {
                    *a = [v, v];
                    *b = [v, v];
                }
            }
            return;
        }
        for iy in 0..h {
            let row = &mut o[iy * sh * ow..(iy * sh + 1) * ow];
            for (run, &v) in row.chunks_exact_mut(sw).zip(&xp[iy * w..(iy + 1) * w]) {
                run.fill(v);
            }
            for r in 1..sh {
                o.copy_within(iy * sh * ow..(iy * sh + 1) * ow, (iy * sh + r) * ow);
            }
        }
    });
    out
}

/// Gradient of [`upsample_nearest`]: sums each sh×sw block.
pub(crate) fn upsample_nearest_backward(
    dy: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
) -> Vec<f32> {
    let (oh, ow) = (h * sh, w * sw);
    let mut dx = super::buffer::filled(planes * h * w, 0.0);
    crate::threads::install(|| {
        dx.par_chunks_mut(h * w).enumerate().for_each(|(pl, d)| {
            let g = &dy[pl * oh * ow..(pl + 1) * oh * ow];
            // Row by row, each output's sw inputs in order: the same sums as visiting the
            // sh×sw block in row-major order, with no division per element.
            for (oy, grow) in g.chunks_exact(ow).enumerate() {
                let drow = &mut d[(oy / sh) * w..(oy / sh + 1) * w];
                for (dv, run) in drow.iter_mut().zip(grow.chunks_exact(sw)) {
                    for &v in run {
                        *dv += v;
                    }
                }
            }
        })
    });
    dx
}

#[cfg(test)]
mod tests {
    use crate::op::Pool2dParams;

    /// The definition: each output's winner is the first maximum of its window in row-major
    /// order, a NaN replacing the current best (so the last NaN wins).
    fn naive_winners(x: &[f32], h: usize, w: usize, p: &Pool2dParams) -> Vec<Option<usize>> {
        let ((kh, kw), (sh, sw), (ph, pw)) = (p.kernel, p.stride, p.padding);
        let (oh, ow) = (super::pooled(h, kh, sh, ph), super::pooled(w, kw, sw, pw));
        let mut out = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut m) = (None, f32::NEG_INFINITY);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * sh + ky) as isize - ph as isize;
                        let ix = (ox * sw + kx) as isize - pw as isize;
                        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                            continue;
                        }
                        let i = iy as usize * w + ix as usize;
                        if best.is_none() || x[i] > m || x[i].is_nan() {
                            (best, m) = (Some(i), x[i]);
                        }
                    }
                }
                out.push(best);
            }
        }
        out
    }

    #[test]
    fn stride_one_backward_picks_the_first_maximum_like_the_definition() {
        // Few distinct values (many ties), some −inf and NaN; widths below, at and above the
        // lane count; odd and even kernels, vertical strides 1 and 2.
        for (k, sy, pad) in [
            (5, 1, 2),
            (3, 1, 1),
            (2, 1, 1),
            (2, 1, 0),
            (9, 1, 4),
            (3, 2, 1),
        ] {
            for (h, w) in [(5, 3), (6, 8), (7, 13), (10, 10), (4, 17)] {
                if h + 2 * pad < k || w + 2 * pad < k {
                    continue;
                }
                let x: Vec<f32> = (0..h * w)
                    .map(|i| match (i * 7 + k) % 11 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        r => (r % 4) as f32,
                    })
                    .collect();
                let p = Pool2dParams {
                    kernel: (k, k),
                    stride: (sy, 1),
                    padding: (pad, pad),
                };
                let (oh, ow) = (super::pooled(h, k, sy, pad), super::pooled(w, k, 1, pad));
                let dy: Vec<f32> = (0..oh * ow).map(|i| 1.0 + i as f32).collect();
                let win = naive_winners(&x, h, w, &p);
                let mut want = vec![0.0; h * w];
                for (o, i) in win.iter().enumerate() {
                    want[i.unwrap()] += dy[o];
                }
                let got = super::max_pool2d_backward(&x, &dy, 1, h, w, &p);
                assert_eq!(got, want, "backward k{k} sy{sy} p{pad} {h}×{w}");
                // The forward's values are the winners' (NaN where a NaN won).
                let y = super::max_pool2d(&x, 1, h, w, &p);
                for (o, i) in win.iter().enumerate() {
                    let v = x[i.unwrap()];
                    assert!(
                        y[o] == v || (y[o].is_nan() && v.is_nan()),
                        "forward k{k} at {o}"
                    );
                }
            }
        }
    }
}
