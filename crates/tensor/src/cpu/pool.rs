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
    crate::threads::install(|| {
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(pl, o)| {
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
                            let v = xr[ix as usize];
                            if v > m || v.is_nan() {
                                m = v;
                            }
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
                            if v > *d || v.is_nan() {
                                *d = v;
                            }
                        }
                    }
                }
            }
        })
    });
    out
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
    crate::threads::install(|| {
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(pl, o)| {
            let xp = &x[pl * h * w..(pl + 1) * h * w];
            for iy in 0..h {
                let row = &mut o[iy * sh * ow..(iy * sh + 1) * ow];
                for (ox, v) in row.iter_mut().enumerate() {
                    *v = xp[iy * w + ox / sw];
                }
                for r in 1..sh {
                    o.copy_within(iy * sh * ow..(iy * sh + 1) * ow, (iy * sh + r) * ow);
                }
            }
        })
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
            for oy in 0..oh {
                for ox in 0..ow {
                    d[(oy / sh) * w + ox / sw] += g[oy * ow + ox];
                }
            }
        })
    });
    dx
}
