//! 2-D convolution: 1×1 stride-1 convs are plain GEMMs on the input; the rest run as tiled
//! im2col + GEMM, where each task unrolls a band of output rows into a cache-sized scratch
//! buffer and multiplies it on its own thread. Backward-data splits work by input channel so
//! col2im writes never collide; backward-weight keeps one partial sum per task. On AVX2 CPUs,
//! ungrouped convolutions with output channels in blocks of 16 take [`super::direct`] instead
//! for the forward pass (k > 1) and the weight gradient, and the 3×3 stride-1 ones among them
//! [`super::winograd`] for the forward pass; without autograd recording their packed weights
//! are kept across calls ([`super::packed`]).

use super::gemm::{sgemm_raw, sgemm_raw_strided, MatRef};
use crate::op::{ConvGeom, UnaryOp};
use rayon::prelude::*;
use std::cell::RefCell;

/// Floats of im2col scratch per task (sized to stay in L2/L3 while GEMM streams it).
const COL_BUDGET: usize = 1 << 18;
/// Floats of im2col scratch per band of the weight gradient.
const WGRAD_BUDGET: usize = 4 * COL_BUDGET;
/// Output pixels per task of pointwise convs.
const POINTWISE_COLS: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// A raw pointer that tasks share to write disjoint parts of one output buffer.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);
// SAFETY: tasks write disjoint elements (documented at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Splits `oh` output rows into bands of about `budget` im2col floats, leaving at least
/// `min_tasks` tasks overall (`others` is the count of independent (image, group) pairs).
fn row_bands(g: &ConvGeom, others: usize, min_tasks: usize) -> Vec<(usize, usize)> {
    row_bands_budget(g, others, min_tasks, COL_BUDGET)
}

fn row_bands_budget(
    g: &ConvGeom,
    others: usize,
    min_tasks: usize,
    budget: usize,
) -> Vec<(usize, usize)> {
    let cols_budget = (budget / g.k().max(1)).max(1);
    let mut rows = (cols_budget / g.ow.max(1)).clamp(1, g.oh.max(1));
    while rows > 1 && others * g.oh.div_ceil(rows) < min_tasks {
        rows = rows.div_ceil(2);
    }
    (0..g.oh)
        .step_by(rows)
        .map(|r| (r, (r + rows).min(g.oh)))
        .collect()
}

/// Pixel bands of a 1×1 convolution: at most [`POINTWISE_COLS`] pixels, and more bands while
/// there are fewer than `min_tasks` tasks and the bands keep ≥ 256 pixels; bands of equal
/// length in whole strips of the 1×1 GEMM's tile width (24 or 48 pixels, [`super::convgemm::mr`];
/// only the last shorter), so that the threads' shares match.
fn pointwise_bands(g: &ConvGeom, others: usize, min_tasks: usize) -> Vec<(usize, usize)> {
    let hw = g.oh * g.ow;
    let mut nb = hw.div_ceil(POINTWISE_COLS).max(1);
    while others * nb < min_tasks && hw.div_ceil(nb + 1) >= 256 {
        nb += 1;
    }
    let cols = hw
        .div_ceil(nb)
        .next_multiple_of(super::convgemm::mr())
        .min(hw.max(1));
    (0..hw)
        .step_by(cols)
        .map(|p| (p, (p + cols).min(hw)))
        .collect()
}

/// Valid output-column range `[lo, hi)` for kernel column `kj`: those with 0 <= ix < w.
#[inline]
fn valid_cols(g: &ConvGeom, kj: usize) -> (usize, usize, isize) {
    let (sw, pw, dw) = (g.p.stride.1, g.p.padding.1 as isize, g.p.dilation.1);
    let off = (kj * dw) as isize - pw; // ix = ox·sw + off
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(sw)
    };
    let last = g.w as isize - 1 - off; // ox·sw <= last
    let hi = if last < 0 {
        0
    } else {
        (last as usize / sw + 1).min(g.ow)
    };
    (lo.min(hi), hi, off)
}

/// Band rows `ra..rb` (of `oy0..oy1`) whose input row for kernel row `ki` is inside the
/// image, and the input row of band row `ra`.
#[inline]
fn valid_rows(g: &ConvGeom, ki: usize, oy0: usize, oy1: usize) -> (usize, usize, usize) {
    let (sh, ph, dh) = (g.p.stride.0, g.p.padding.0 as isize, g.p.dilation.0);
    let iy = |oy: usize| (oy * sh + ki * dh) as isize - ph;
    let mut ra = 0;
    while oy0 + ra < oy1 && iy(oy0 + ra) < 0 {
        ra += 1;
    }
    let mut rb = oy1 - oy0;
    while rb > ra && iy(oy0 + rb - 1) >= g.h as isize {
        rb -= 1;
    }
    let iy_a = if ra < rb { iy(oy0 + ra) as usize } else { 0 };
    (ra, rb, iy_a)
}

/// Unrolls output rows `oy0..oy1` of image `n`, group `grp` into `col` (k × t, row-major).
fn im2col(x: &[f32], g: &ConvGeom, n: usize, grp: usize, oy0: usize, oy1: usize, col: &mut [f32]) {
    let (ow, t) = (g.ow, (oy1 - oy0) * g.ow);
    let (sh, sw) = g.p.stride;
    let plane = g.h * g.w;
    // Stride 1 with as many output as input columns: the band of one kernel tap is one shifted
    // contiguous run of the input plane, so it is copied whole and only the padded edge
    // columns (which picked up neighbouring rows' values) are zeroed afterwards.
    let contiguous = sw == 1 && sh == 1 && ow == g.w;
    for c in 0..g.cin_g() {
        let xc = &x[(n * g.c_in + grp * g.cin_g() + c) * plane..][..plane];
        for ki in 0..g.kh {
            let (ra, rb, iy_a) = valid_rows(g, ki, oy0, oy1);
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut col[row * t..(row + 1) * t];
                let (lo, hi, off) = valid_cols(g, kj);
                if lo >= hi || ra >= rb {
                    dst.fill(0.0);
                    continue;
                }
                dst[..ra * ow].fill(0.0);
                dst[rb * ow..].fill(0.0);
                if contiguous {
                    let (d0, d1) = (ra * ow + lo, (rb - 1) * ow + hi);
                    let s0 = ((iy_a * g.w + lo) as isize + off) as usize;
                    dst[d0..d1].copy_from_slice(&xc[s0..s0 + (d1 - d0)]);
                    if lo > 0 || hi < ow {
                        for r in ra..rb {
                            dst[r * ow..r * ow + lo].fill(0.0);
                            dst[r * ow + hi..(r + 1) * ow].fill(0.0);
                        }
                    }
                    continue;
                }
                let start = ((lo * sw) as isize + off) as usize;
                for r in ra..rb {
                    let d = &mut dst[r * ow..(r + 1) * ow];
                    let iy = iy_a + (r - ra) * sh;
                    let xr = &xc[iy * g.w..][..g.w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    match sw {
                        1 => d[lo..hi].copy_from_slice(&xr[start..start + (hi - lo)]),
                        2 => super::simd::gather2(&mut d[lo..hi], &xr[start..]),
                        _ => {
                            for (j, v) in d[lo..hi].iter_mut().enumerate() {
                                *v = xr[start + j * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `col` (rows for input channels `c0..c0+cc` of group `grp`, t columns) back into the
/// image `dx` of image `n`: the adjoint of [`im2col`].
///
/// # Safety
/// `dx` must point at the whole input-gradient buffer, and no other thread may write the
/// channels touched here during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn col2im(
    col: &[f32],
    g: &ConvGeom,
    n: usize,
    grp: usize,
    c0: usize,
    cc: usize,
    oy0: usize,
    oy1: usize,
    dx: SharedMut,
) {
    let t = (oy1 - oy0) * g.ow;
    let (sh, ph, dh) = (g.p.stride.0, g.p.padding.0 as isize, g.p.dilation.0);
    let sw = g.p.stride.1;
    let plane = g.h * g.w;
    for c in 0..cc {
        let base = (n * g.c_in + grp * g.cin_g() + c0 + c) * plane;
        let xc = std::slice::from_raw_parts_mut(dx.get().add(base), plane);
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &col[row * t..(row + 1) * t];
                let (lo, hi, off) = valid_cols(g, kj);
                if lo >= hi {
                    continue;
                }
                for (r, oy) in (oy0..oy1).enumerate() {
                    let iy = (oy * sh + ki * dh) as isize - ph;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let s = &src[r * g.ow..(r + 1) * g.ow];
                    let xr = &mut xc[iy as usize * g.w..][..g.w];
                    let start = ((lo * sw) as isize + off) as usize;
                    if sw == 1 {
                        for (a, b) in xr[start..start + (hi - lo)].iter_mut().zip(&s[lo..hi]) {
                            *a += b;
                        }
                    } else if sw == 2 {
                        let m = hi - lo;
                        for (a, b) in xr[start..start + 2 * (m - 1)]
                            .chunks_exact_mut(2)
                            .zip(&s[lo..hi - 1])
                        {
                            a[0] += b;
                        }
                        xr[start + 2 * (m - 1)] += s[hi - 1];
                    } else {
                        for (j, b) in s[lo..hi].iter().enumerate() {
                            xr[start + j * sw] += b;
                        }
                    }
                }
            }
        }
    }
}

/// Every (image, group, item) triple, items being bands or channel chunks.
fn task_list(n: usize, groups: usize, items: usize) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::with_capacity(n * groups * items);
    for i in 0..n {
        for grp in 0..groups {
            for b in 0..items {
                v.push((i, grp, b));
            }
        }
    }
    v
}

fn min_tasks() -> usize {
    2 * crate::threads::num_threads()
}

/// The fewest tasks a forward convolution splits into: one per thread. The kernel pool's
/// fork/join hands out task indices dynamically at little cost, and fewer, larger tasks fill
/// fewer slab halos and pack fewer panels (yolov5n@320 at 2 threads: 6.5 against 6.8 ms with
/// two per thread, interleaved; level at 1 thread).
fn forward_tasks() -> usize {
    crate::threads::num_threads()
}

/// Units (output channels, heads) per task when `pairs` (image, band) pairs are split
/// further so that the threads get [`forward_tasks`] tasks: all of them when the pairs
/// suffice, else an equal share in multiples of `multiple` (the 1×1 GEMM's tile rows).
fn units_per_task(units: usize, multiple: usize, pairs: usize) -> usize {
    let parts = forward_tasks().div_ceil(pairs.max(1)).max(1);
    units.div_ceil(parts).next_multiple_of(multiple)
}

/// Forward convolution: `x` is N×C×H×W, `w` is Cout×(C/groups)×kh×kw; with `w_stamp` (see
/// [`super::packed`]) the weights' packed forms are kept for later calls.
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    w_stamp: Option<u64>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    epi: super::Epilogue<'_>,
) -> Vec<f32> {
    if is_depthwise(g) {
        let mut out = depthwise_forward(x, w, bias, g);
        if !epi.is_empty() {
            let len = out.len();
            let chunk = len.div_ceil(forward_tasks()).max(1);
            super::par_chunks_mut(&mut out, chunk, |i, y| {
                // SAFETY: chunk i (output elements from i·chunk) is this task's alone.
                unsafe { epi.rows(y.as_mut_ptr(), i * chunk, 1, y.len(), 0) }
            });
        }
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if super::winograd::enabled(g) {
        return super::winograd::forward(x, w, w_stamp, bias, g, epi, forward_tasks());
    }
    #[cfg(target_arch = "x86_64")]
    if super::direct::enabled(g) {
        return super::direct::forward(x, w, w_stamp, bias, g, epi, forward_tasks());
    }
    #[cfg(target_arch = "x86_64")]
    if super::direct::pointwise_enabled(g) {
        let parts = [(x, g.c_in)];
        return super::direct::pointwise(&parts, w, w_stamp, bias, g, epi, forward_tasks());
    }
    let ohw = g.oh * g.ow;
    let mut out = super::buffer::alloc(g.n * g.c_out * ohw);
    let (cout_g, k) = (g.cout_g(), g.k());
    let outp = SharedMut(out.as_mut_ptr());
    let others = g.n * g.p.groups;
    let pointwise = g.is_pointwise();
    let bands = if pointwise {
        pointwise_bands(g, others, forward_tasks())
    } else {
        row_bands(g, others, forward_tasks())
    };
    let own = pointwise && super::convgemm::enabled_forward(cout_g, k);
    // With several threads, too few pixel bands (the deep layers' 10×10 maps are one band)
    // also split the output channels, in multiples of the microkernel's rows; each part packs
    // its band itself (so one thread keeps one part).
    let per = if own {
        let nr = super::convgemm::nr(super::convgemm::mr());
        units_per_task(cout_g, nr, others * bands.len())
    } else {
        cout_g
    };
    let parts = cout_g.div_ceil(per);
    let tasks = task_list(g.n, g.p.groups, bands.len() * parts);
    crate::threads::par_for(tasks.len(), |ti| {
        let (n, grp, bp) = tasks[ti];
        let (b, part) = (bp / parts, bp % parts);
        let (lo, hi) = bands[b];
        let (p0, t) = if pointwise {
            (lo, hi - lo)
        } else {
            (lo * g.ow, (hi - lo) * g.ow)
        };
        let obase = (n * g.c_out + grp * cout_g) * ohw + p0;
        // SAFETY: this task alone writes its part of rows grp·cout_g.. of image n, pixels
        // p0..p0+t.
        let c = unsafe { outp.get().add(obase) };
        if own {
            let (o0, o1) = (part * per, ((part + 1) * per).min(cout_g));
            let xb = &x[(n * g.c_in + grp * g.cin_g()) * ohw + p0..];
            let (r0, r1) = (grp * cout_g + o0, grp * cout_g + o1);
            let wg = &w[r0 * k..r1 * k];
            let bg = bias.map(|b| &b[r0..r1]);
            // SAFETY: as above, channels o0..o1 of them being this part's; the CPU has
            // AVX2 and FMA (convgemm::enabled_forward).
            unsafe { pointwise_own(&[(xb, k)], ohw, wg, o1 - o0, t, c.add(o0 * ohw), ohw, bg) };
            // SAFETY: as above (rows o0..o1, pixels p0..p0+t are this task's).
            unsafe { epi.rows(c.add(o0 * ohw), obase + o0 * ohw, o1 - o0, t, ohw) };
            return;
        }
        if let Some(bias) = bias {
            for o in 0..cout_g {
                let v = bias[grp * cout_g + o];
                unsafe { std::slice::from_raw_parts_mut(c.add(o * ohw), t) }.fill(v);
            }
        }
        let wg = MatRef::rows(&w[grp * cout_g * k..(grp + 1) * cout_g * k], k);
        if pointwise {
            let xb = &x[(n * g.c_in + grp * g.cin_g()) * ohw + p0..];
            unsafe {
                sgemm_raw(
                    cout_g,
                    t,
                    k,
                    c,
                    ohw,
                    bias.is_some(),
                    wg,
                    MatRef::rows(xb, ohw),
                )
            };
        } else {
            with_scratch(k * t, |col| {
                im2col(x, g, n, grp, lo, hi, col);
                unsafe {
                    sgemm_raw(
                        cout_g,
                        t,
                        k,
                        c,
                        ohw,
                        bias.is_some(),
                        wg,
                        MatRef::rows(col, t),
                    )
                };
            });
        }
        // SAFETY: as above.
        unsafe { epi.rows(c, obase, cout_g, t, ohw) };
    });
    out
}

/// Whether [`forward_parts`] takes the 1×1 convolution `g` (over the channels of several
/// tensors, without joining them first).
pub(crate) fn parts_enabled(g: &ConvGeom) -> bool {
    cfg!(target_arch = "x86_64")
        && g.is_pointwise()
        && g.p.groups == 1
        && super::convgemm::enabled_forward(g.c_out, g.k())
}

/// The 1×1 convolution ([`parts_enabled`]) of the channel concatenation of `parts` (each
/// N×Cᵢ×H×W with its Cᵢ; ΣCᵢ = `g.c_in`), then `act`: each part's rows are the reduction's
/// next blocks, read in place, so the concatenation is never written (YOLO's C3 and SPPF end
/// in a 1×1 convolution of a concat); `w_stamp` as in [`forward`].
pub(crate) fn forward_parts(
    parts: &[(&[f32], usize)],
    w: &[f32],
    w_stamp: Option<u64>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    act: Option<UnaryOp>,
) -> Vec<f32> {
    debug_assert!(parts_enabled(g));
    let epi = super::Epilogue { act, add: None };
    #[cfg(target_arch = "x86_64")]
    if super::direct::pointwise_enabled(g) {
        return super::direct::pointwise(parts, w, w_stamp, bias, g, epi, forward_tasks());
    }
    debug_assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), g.c_in);
    let ohw = g.oh * g.ow;
    let (cout, k) = (g.c_out, g.k());
    let mut out = super::buffer::alloc(g.n * cout * ohw);
    let outp = SharedMut(out.as_mut_ptr());
    pointwise_tasks(g, |n, (p0, p1), (o0, o1)| {
        let srcs: Vec<(&[f32], usize)> = parts
            .iter()
            .map(|&(x, ci)| (&x[n * ci * ohw + p0..], ci))
            .collect();
        // SAFETY: this task alone writes channels o0..o1, pixels p0..p1 of image n; the CPU
        // has AVX2 and FMA (parts_enabled).
        unsafe {
            let c = outp.get().add(n * cout * ohw + p0);
            let bg = bias.map(|b| &b[o0..o1]);
            let (wg, t) = (&w[o0 * k..o1 * k], p1 - p0);
            pointwise_own(&srcs, ohw, wg, o1 - o0, t, c.add(o0 * ohw), ohw, bg);
            epi.rows(c.add(o0 * ohw), 0, o1 - o0, t, ohw);
        }
    });
    out
}

/// Runs `f(image, pixels p0..p1, output channels o0..o1)` over the tasks of a 1×1
/// convolution `g` through the GEMM: pixel bands, and with several threads too few of them
/// also split the output channels (in multiples of the microkernel's rows).
fn pointwise_tasks(g: &ConvGeom, f: impl Fn(usize, (usize, usize), (usize, usize)) + Sync) {
    let cout = g.c_out;
    let bands = pointwise_bands(g, g.n, forward_tasks());
    let nr = super::convgemm::nr(super::convgemm::mr());
    let per = units_per_task(cout, nr, g.n * bands.len());
    let chunks = cout.div_ceil(per);
    let tasks = task_list(g.n, 1, bands.len() * chunks);
    crate::threads::par_for(tasks.len(), |ti| {
        let (n, _, bp) = tasks[ti];
        let (b, chunk) = (bp / chunks, bp % chunks);
        f(n, bands[b], (chunk * per, ((chunk + 1) * per).min(cout)))
    });
}

/// [`forward_parts`] where parts may be upsampled (nearest, `(data, channels, factor)`; a
/// factor-f part is N×Cᵢ×H/f×W/f, `g` the full-size geometry): a 1×1 convolution commutes
/// with nearest upsampling, so each such part's products are taken at its own size (f² times
/// fewer), spread to the full map as the output's starting values, and the other parts'
/// products added to them — the upsampled map is never written (YOLO's neck: `Upsample` →
/// `Concat` → C3).
pub(crate) fn forward_parts_up(
    parts: &[(&[f32], usize, usize)],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
    act: Option<UnaryOp>,
) -> Vec<f32> {
    debug_assert!(parts_enabled(g) && parts.iter().any(|p| p.2 > 1));
    let (cout, k) = (g.c_out, g.k());
    let ohw = g.oh * g.ow;
    // The upsampled parts' products at their own size (the bias in the first), through the
    // GEMM reading the part's weight columns in place.
    let mut lows: Vec<(Vec<f32>, usize)> = Vec::new();
    let mut bias_left = Some(bias);
    let mut col = 0;
    let mut rest: Vec<(&[f32], usize, usize)> = Vec::new();
    for &(x, ci, f) in parts {
        if f > 1 {
            let (lh, lw) = (g.h / f, g.w / f);
            let lg = ConvGeom {
                c_in: ci,
                h: lh,
                w: lw,
                oh: lh,
                ow: lw,
                ..*g
            };
            let lhw = lh * lw;
            let mut low = super::buffer::alloc(g.n * cout * lhw);
            let lowp = SharedMut(low.as_mut_ptr());
            // With no bias, a part after the first adds to zero (`Some(None)`).
            let start = bias_left.take().unwrap_or(None);
            pointwise_tasks(&lg, |n, (p0, p1), (o0, o1)| {
                let src = [(&x[n * ci * lhw + p0..], ci, col)];
                // SAFETY: this task alone writes channels o0..o1, pixels p0..p1 of image n
                // of `low`; the CPU has AVX2 and FMA (parts_enabled).
                unsafe {
                    let c = lowp.get().add((n * cout + o0) * lhw + p0);
                    let (wg, bg) = (&w[o0 * k..o1 * k], start.map(|b| &b[o0..o1]));
                    pointwise_cols(&src, lhw, (wg, k), o1 - o0, p1 - p0, (c, lhw), Some(bg));
                }
            });
            lows.push((low, f));
        } else {
            rest.push((x, ci, col));
        }
        col += ci;
    }
    let epi = super::Epilogue { act, add: None };
    let mut out = super::buffer::alloc(g.n * cout * ohw);
    let outp = SharedMut(out.as_mut_ptr());
    pointwise_tasks(g, |n, (p0, p1), (o0, o1)| {
        let t = p1 - p0;
        // SAFETY: this task alone writes channels o0..o1, pixels p0..p1 of image n.
        let c = unsafe { outp.get().add(n * cout * ohw + p0) };
        for o in o0..o1 {
            // SAFETY: as above.
            let dst = unsafe { std::slice::from_raw_parts_mut(c.add(o * ohw), t) };
            for (li, (low, f)) in lows.iter().enumerate() {
                let (lh, lw) = (g.oh / f, g.ow / f);
                let lo = &low[(n * cout + o) * lh * lw..][..lh * lw];
                let mut p = p0;
                while p < p1 {
                    let (y, x0) = (p / g.ow, p % g.ow);
                    let x1 = g.ow.min(x0 + p1 - p);
                    let lrow = &lo[(y / f) * lw..][..lw];
                    let d = &mut dst[p - p0..p - p0 + x1 - x0];
                    match (li, *f) {
                        (0, 2) if x0 == 0 && x1 == 2 * lw => {
                            // A whole row: each value stored as a pair (vector shuffles).
                            let (pairs, _) = d.as_chunks_mut::<2>();
                            pairs.iter_mut().zip(lrow).for_each(|(d, &v)| *d = [v, v]);
                        }
                        (0, f) => (x0..x1).zip(d).for_each(|(x, d)| *d = lrow[x / f]),
                        (_, f) => (x0..x1).zip(d).for_each(|(x, d)| *d += lrow[x / f]),
                    }
                    p += x1 - x0;
                }
            }
        }
        let srcs: Vec<(&[f32], usize, usize)> = rest
            .iter()
            .map(|&(x, ci, col)| (&x[n * ci * ohw + p0..], ci, col))
            .collect();
        // SAFETY: as above; the CPU has AVX2 and FMA (parts_enabled).
        unsafe {
            let wg = &w[o0 * k..o1 * k];
            let c = c.add(o0 * ohw);
            if !srcs.is_empty() {
                pointwise_cols(&srcs, ohw, (wg, k), o1 - o0, t, (c, ohw), None);
            }
            epi.rows(c, 0, o1 - o0, t, ohw);
        }
    });
    out
}

/// A 1×1 stride-1 convolution (`g`, ungrouped, [`parts_enabled`]) whose `heads`·k output
/// channels are stored N×heads×H×W×k (the detection head's permuted layout) straight from
/// the 1×1 GEMM with the roles of pixels and channels swapped: a band's input transposed to
/// pixel-major rows takes the weights' place, each head's weights transposed (k padded to
/// whole strips) the input's, so every tile lands in k-contiguous output rows and no NCHW
/// result is transposed.
pub(crate) fn pointwise_heads(
    x: &[f32],
    w: &[f32],
    w_stamp: Option<u64>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    heads: usize,
) -> Vec<f32> {
    debug_assert!(parts_enabled(g) && g.c_out.is_multiple_of(heads));
    let (hw, cin, per) = (g.oh * g.ow, g.c_in, g.c_out / heads);
    let mut out = super::buffer::alloc(g.n * g.c_out * hw);
    #[cfg(target_arch = "x86_64")]
    {
        use super::convgemm::{k_blocks, mr, multiply, Panel};
        let mr = mr();
        let wide = per.next_multiple_of(mr);
        // Head h's weights as [c][wide], zero past k (kept across inference calls, like the
        // other packed forms).
        let form = super::packed::Form::Heads { heads, wide };
        let wt = super::packed::packed(form, w, w_stamp, || {
            let mut wt = vec![0.0f32; heads * cin * wide];
            for h in 0..heads {
                let src = &w[h * per * cin..(h + 1) * per * cin];
                super::simd::transpose(src, cin, &mut wt[h * cin * wide..], wide, per, cin);
            }
            wt
        });
        let outp = SharedMut(out.as_mut_ptr());
        let bands = pointwise_bands(g, g.n, forward_tasks());
        // Too few bands for the threads (small maps): the heads split between tasks too
        // (each transposing the band itself).
        let per_task = units_per_task(heads, 1, g.n * bands.len());
        let parts = heads.div_ceil(per_task);
        let tasks = task_list(g.n, 1, bands.len() * parts);
        crate::threads::par_for(tasks.len(), |ti| {
            let (n, _, bp) = tasks[ti];
            let (b, part) = (bp / parts, bp % parts);
            let (p0, p1) = bands[b];
            let t = p1 - p0;
            with_scratch(t * cin, |xt| {
                super::simd::transpose(&x[n * cin * hw + p0..], hw, xt, cin, cin, t);
                for h in part * per_task..((part + 1) * per_task).min(heads) {
                    // SAFETY: this task alone writes pixels p0..p1 of its heads of image n.
                    let c = unsafe { outp.get().add(((n * heads + h) * hw + p0) * per) };
                    let rows = unsafe { std::slice::from_raw_parts_mut(c, t * per) };
                    match bias {
                        Some(b) => rows
                            .chunks_exact_mut(per)
                            .for_each(|px| px.copy_from_slice(&b[h * per..(h + 1) * per])),
                        None => rows.fill(0.0),
                    }
                    let wh = &wt[h * cin * wide..(h + 1) * cin * wide];
                    for (k0, kcl) in k_blocks(cin) {
                        let panel = Panel::rows(wh[k0 * wide..].as_ptr(), wide, mr);
                        // SAFETY: pixel rows of `per` floats at c are this task's; xt holds t
                        // rows of cin; the panel's strips cover `wide` ≥ per floats per row;
                        // the CPU has AVX2 and FMA (and AVX-512 for its tile width).
                        unsafe {
                            multiply(mr, t, per, (cin, k0, kcl), xt, panel, c, per, false, None)
                        };
                    }
                }
            });
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, w_stamp, bias, heads, per, cin, &mut out);
        unreachable!("parts_enabled is false off x86-64");
    }
    out
}

/// `c[o·c_rs + p] = bias[o] + Σ_j w[o, j] · src[j·src_rs + p]` for `o < m`, `j < k`, `p < t`:
/// one band of a 1×1 convolution through [`super::convgemm`], the rows `src` in `srcs`'
/// parts one after another (each `(first row, rows)`; k = Σ rows). One part keeps the
/// reduction blocks of `k` rows; several block each part's rows on their own.
///
/// # Safety
/// As [`super::convgemm::multiply`]: `c` is this task's alone for those elements, and the CPU
/// has AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_own(
    srcs: &[(&[f32], usize)],
    src_rs: usize,
    w: &[f32],
    m: usize,
    t: usize,
    c: *mut f32,
    c_rs: usize,
    bias: Option<&[f32]>,
) {
    let k: usize = srcs.iter().map(|s| s.1).sum();
    let mut at = 0;
    let cols: Vec<(&[f32], usize, usize)> = srcs
        .iter()
        .map(|&(x, rows)| {
            at += rows;
            (x, rows, at - rows)
        })
        .collect();
    pointwise_cols(&cols, src_rs, (w, k), m, t, (c, c_rs), Some(bias))
}

/// [`pointwise_own`] with each source's first weight column given (`(source, rows, column)`;
/// `w` is `m` rows of `k`), the sources' columns need not cover `k`; `bias: None` adds the
/// products to `c` instead of starting from the bias (`Some(None)`: from zero).
///
/// # Safety
/// As [`pointwise_own`].
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_cols(
    srcs: &[(&[f32], usize, usize)],
    src_rs: usize,
    (w, k): (&[f32], usize),
    m: usize,
    t: usize,
    (c, c_rs): (*mut f32, usize),
    bias: Option<Option<&[f32]>>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::convgemm::{k_blocks, mr, multiply, packed_len, scatter_row, Panel, MR512};
        let mr = mr();
        let fresh = bias.is_some();
        let bias = bias.flatten();
        // (part, block start in the part, weight column, length).
        let mut blocks = Vec::new();
        for (i, &(_, rows, col)) in srcs.iter().enumerate() {
            blocks.extend(
                k_blocks(rows)
                    .into_iter()
                    .map(|(k0, l)| (i, k0, col + k0, l)),
            );
        }
        let most = blocks.iter().map(|b| b.3).max().unwrap_or(0);
        // With AVX-512 the whole strips read their rows in place (packing them cost a third
        // of a small 1×1 convolution's time); the last partial strip, and every strip on
        // AVX2, is packed.
        let inplace = if mr == MR512 { t / mr * mr } else { 0 };
        let rest = t - inplace;
        with_scratch(packed_len(rest, most, mr), |packed| {
            for (bi, &(i, kl, k0, kcl)) in blocks.iter().enumerate() {
                let src = &srcs[i].0[kl * src_rs..];
                let first = fresh && bi == 0;
                if inplace > 0 {
                    let b = Panel::rows(src.as_ptr(), src_rs, mr);
                    multiply(mr, m, inplace, (k, k0, kcl), w, b, c, c_rs, first, bias);
                }
                if rest > 0 {
                    for kk in 0..kcl {
                        let row = &src[kk * src_rs + inplace..][..rest];
                        scatter_row(row, kk, kcl, packed, mr);
                    }
                    let b = Panel::packed(packed, kcl, mr);
                    let c = c.add(inplace);
                    multiply(mr, m, rest, (k, k0, kcl), w, b, c, c_rs, first, bias);
                }
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (srcs, src_rs, w, k, m, t, c, c_rs, bias);
        unreachable!("convgemm::enabled is false without AVX2")
    }
}

/// Gradient of the input: `dy` is N×Cout×OH×OW.
pub(crate) fn backward_input(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (ohw, hw) = (g.oh * g.ow, g.h * g.w);
    let (cout_g, cin_g, k) = (g.cout_g(), g.cin_g(), g.k());
    let others = g.n * g.p.groups;
    if g.p.stride == (1, 1)
        && !g.is_pointwise()
        && g.p.padding.0 <= g.p.dilation.0 * (g.kh - 1)
        && g.p.padding.1 <= g.p.dilation.1 * (g.kw - 1)
    {
        return backward_input_as_conv(dy, w, g);
    }
    if g.is_pointwise() {
        // The GEMMs overwrite every element (no accumulation), so no zero fill.
        let mut dx = super::buffer::alloc(g.n * g.c_in * hw);
        let dxp = SharedMut(dx.as_mut_ptr());
        let bands = pointwise_bands(g, others, min_tasks());
        let tasks = task_list(g.n, g.p.groups, bands.len());
        if super::convgemm::enabled(cin_g, cout_g) {
            // Wᵀ per group (cin_g rows of cout_g), so that the weights are row streams.
            let mut wt = vec![0.0f32; w.len()];
            for grp in 0..g.p.groups {
                let (src, dst) = (&w[grp * cout_g * k..], &mut wt[grp * cin_g * cout_g..]);
                for co in 0..cout_g {
                    for ci in 0..cin_g {
                        dst[ci * cout_g + co] = src[co * k + ci];
                    }
                }
            }
            crate::threads::install(|| {
                tasks.par_iter().for_each(|&(n, grp, b)| {
                    let (p0, p1) = bands[b];
                    let dyb = &dy[(n * g.c_out + grp * cout_g) * ohw + p0..];
                    let wg = &wt[grp * cin_g * cout_g..(grp + 1) * cin_g * cout_g];
                    // SAFETY: this task alone writes channels of group grp, image n, pixels
                    // p0..p1; the CPU has AVX2 and FMA (convgemm::enabled).
                    unsafe {
                        let c = dxp.get().add((n * g.c_in + grp * cin_g) * hw + p0);
                        pointwise_own(&[(dyb, cout_g)], ohw, wg, cin_g, p1 - p0, c, hw, None)
                    };
                })
            });
            return dx;
        }
        crate::threads::install(|| {
            tasks.par_iter().for_each(|&(n, grp, b)| {
                let (p0, p1) = bands[b];
                let wt = MatRef::t(&w[grp * cout_g * k..(grp + 1) * cout_g * k], k);
                let dyb = MatRef::rows(&dy[(n * g.c_out + grp * cout_g) * ohw + p0..], ohw);
                // SAFETY: this task alone writes channels of group grp, image n, pixels p0..p1.
                let c = unsafe { dxp.get().add((n * g.c_in + grp * cin_g) * hw + p0) };
                unsafe { sgemm_raw(cin_g, p1 - p0, cout_g, c, hw, false, wt, dyb) };
            })
        });
        return dx;
    }
    let mut dx = super::buffer::filled(g.n * g.c_in * hw, 0.0);
    let dxp = SharedMut(dx.as_mut_ptr());
    let kk = g.kh * g.kw;
    let chunks = (min_tasks().div_ceil(others)).clamp(1, cin_g);
    let per = cin_g.div_ceil(chunks);
    let bands = row_bands(g, 1, 1);
    let tasks = task_list(g.n, g.p.groups, cin_g.div_ceil(per));
    crate::threads::install(|| {
        tasks.par_iter().for_each(|&(n, grp, chunk)| {
            let c0 = chunk * per;
            let cc = per.min(cin_g - c0);
            let rows = cc * kk;
            let wt = MatRef::t(&w[grp * cout_g * k + c0 * kk..], k);
            for &(oy0, oy1) in &bands {
                let t = (oy1 - oy0) * g.ow;
                let dyb = MatRef::rows(&dy[(n * g.c_out + grp * cout_g) * ohw + oy0 * g.ow..], ohw);
                with_scratch(rows * t, |col| {
                    // SAFETY: col is this thread's scratch; dx channels c0..c0+cc of (n, grp)
                    // belong to this task alone.
                    unsafe {
                        sgemm_raw(rows, t, cout_g, col.as_mut_ptr(), t, false, wt, dyb);
                        col2im(col, g, n, grp, c0, cc, oy0, oy1, dxp);
                    }
                });
            }
        })
    });
    dx
}

/// Stride-1 input gradient as a forward convolution of `dy` with the flipped, transposed
/// kernel and padding `d·(k−1) − p`: the same dense GEMMs as the forward pass instead of a
/// thin GEMM (inner size Cout/groups) followed by col2im.
fn backward_input_as_conv(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (cin_g, cout_g, kk) = (g.cin_g(), g.cout_g(), g.kh * g.kw);
    let mut wt = vec![0.0f32; w.len()];
    for grp in 0..g.p.groups {
        for co in 0..cout_g {
            for ci in 0..cin_g {
                let src = &w[((grp * cout_g + co) * cin_g + ci) * kk..][..kk];
                let dst = &mut wt[((grp * cin_g + ci) * cout_g + co) * kk..][..kk];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
    let gt = ConvGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.oh,
        w: g.ow,
        c_out: g.c_in,
        kh: g.kh,
        kw: g.kw,
        oh: g.h,
        ow: g.w,
        p: crate::op::Conv2dParams {
            stride: (1, 1),
            padding: (
                g.p.dilation.0 * (g.kh - 1) - g.p.padding.0,
                g.p.dilation.1 * (g.kw - 1) - g.p.padding.1,
            ),
            dilation: g.p.dilation,
            groups: g.p.groups,
        },
    };
    forward(dy, &wt, None, None, &gt, Default::default())
}

/// Gradient of the weight: Cout×(C/groups)×kh×kw.
pub(crate) fn backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    if is_depthwise(g) {
        return depthwise_backward_weight(x, dy, g);
    }
    #[cfg(target_arch = "x86_64")]
    if super::direct::enabled_wgrad(g) {
        return super::direct::backward_weight(x, dy, g, min_tasks());
    }
    let ohw = g.oh * g.ow;
    let (cout_g, k) = (g.cout_g(), g.k());
    let pointwise = g.is_pointwise();
    // Longer bands than the forward pass: each band is one accumulation into dW, and a longer
    // inner dimension amortises the GEMM's packing.
    let bands = if pointwise {
        pointwise_bands(g, 1, 1)
    } else {
        row_bands_budget(g, 1, 1, WGRAD_BUDGET)
    };
    // Work items of one group: (image, band); split them into a few chunks per group.
    let items: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|n| (0..bands.len()).map(move |b| (n, b)))
        .collect();
    let chunks = (min_tasks() / 2)
        .div_ceil(g.p.groups)
        .clamp(1, items.len().max(1));
    let per = items.len().div_ceil(chunks).max(1);
    let tasks: Vec<(usize, usize)> = (0..g.p.groups)
        .flat_map(|grp| (0..items.len()).step_by(per).map(move |s| (grp, s)))
        .collect();
    let partials: Vec<(usize, Vec<f32>)> = crate::threads::install(|| {
        tasks
            .par_iter()
            .map(|&(grp, s)| {
                let mut dw = vec![0.0f32; cout_g * k];
                for &(n, b) in &items[s..(s + per).min(items.len())] {
                    let (lo, hi) = bands[b];
                    let (p0, t) = if pointwise {
                        (lo, hi - lo)
                    } else {
                        (lo * g.ow, (hi - lo) * g.ow)
                    };
                    let dyb = MatRef::rows(&dy[(n * g.c_out + grp * cout_g) * ohw + p0..], ohw);
                    // SAFETY: dw is this task's own buffer.
                    if pointwise {
                        let xt = MatRef::t(&x[(n * g.c_in + grp * g.cin_g()) * ohw + p0..], ohw);
                        unsafe { sgemm_raw(cout_g, k, t, dw.as_mut_ptr(), k, true, dyb, xt) };
                    } else {
                        with_scratch(k * t, |col| {
                            im2col(x, g, n, grp, lo, hi, col);
                            // dW (cout_g × k) += dY (cout_g × t) · colᵀ, stored transposed
                            // (k × cout_g) so that the GEMM's output is column-major: then the
                            // GEMM packs only dY (cout_g × t) and reads the k/cout_g times
                            // larger col in place, instead of packing (transposing) col.
                            unsafe {
                                sgemm_raw_strided(
                                    cout_g,
                                    k,
                                    t,
                                    dw.as_mut_ptr(),
                                    1,
                                    cout_g,
                                    true,
                                    dyb,
                                    MatRef::t(col, t),
                                )
                            };
                        });
                    }
                }
                (grp, dw)
            })
            .collect()
    });
    let mut dw = vec![0.0f32; g.c_out * k];
    for (grp, p) in partials {
        let dst = &mut dw[grp * cout_g * k..(grp + 1) * cout_g * k];
        if pointwise {
            for (a, b) in dst.iter_mut().zip(&p) {
                *a += b;
            }
        } else {
            // The partial is dWᵀ (k × cout_g).
            for (co, row) in dst.chunks_exact_mut(k).enumerate() {
                for (kk, a) in row.iter_mut().enumerate() {
                    *a += p[kk * cout_g + co];
                }
            }
        }
    }
    dw
}

/// One input and one output channel per group: a direct kernel beats a 1-row GEMM.
fn is_depthwise(g: &ConvGeom) -> bool {
    g.p.groups > 1 && g.cin_g() == 1 && g.cout_g() == 1
}

/// Calls `f(oy, iy, lo, hi, off)` for every output row and kernel tap (ky, kx) whose input row is
/// inside the image: output columns `lo..hi` read input columns `ox·sw + off`.
#[inline]
fn depthwise_taps(
    g: &ConvGeom,
    ky: usize,
    kx: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (sh, ph, dh) = (g.p.stride.0, g.p.padding.0 as isize, g.p.dilation.0);
    let (lo, hi, off) = valid_cols(g, kx);
    if lo >= hi {
        return;
    }
    let start = ((lo * g.p.stride.1) as isize + off) as usize;
    for oy in 0..g.oh {
        let iy = (oy * sh + ky * dh) as isize - ph;
        if iy >= 0 && (iy as usize) < g.h {
            f(oy, iy as usize, lo, hi, start);
        }
    }
}

/// Depthwise forward, one (image, channel) plane per task: out += w[ky,kx] · shifted input rows.
fn depthwise_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let (hw, ohw, kk, sw) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw, g.p.stride.1);
    let mut out = super::buffer::alloc(g.n * g.c_out * ohw);
    crate::threads::install(|| {
        out.par_chunks_mut(ohw).enumerate().for_each(|(plane, o)| {
            let c = plane % g.c_out;
            o.fill(bias.map_or(0.0, |b| b[c]));
            let xp = &x[plane * hw..(plane + 1) * hw];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let wv = w[c * kk + ky * g.kw + kx];
                    depthwise_taps(g, ky, kx, |oy, iy, lo, hi, start| {
                        let orow = &mut o[oy * g.ow + lo..oy * g.ow + hi];
                        let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                        if sw == 1 {
                            for (a, b) in orow.iter_mut().zip(&xrow[start..start + (hi - lo)]) {
                                *a += wv * b;
                            }
                        } else {
                            for (j, a) in orow.iter_mut().enumerate() {
                                *a += wv * xrow[start + j * sw];
                            }
                        }
                    });
                }
            }
        })
    });
    out
}

/// Depthwise weight gradient, one channel per task (summing over images).
fn depthwise_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (hw, ohw, kk, sw) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw, g.p.stride.1);
    let mut dw = vec![0.0f32; g.c_out * kk];
    crate::threads::install(|| {
        dw.par_chunks_mut(kk).enumerate().for_each(|(c, dwc)| {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let mut acc = 0.0f64;
                    for n in 0..g.n {
                        let plane = n * g.c_out + c;
                        let (xp, gp) = (
                            &x[plane * hw..(plane + 1) * hw],
                            &dy[plane * ohw..(plane + 1) * ohw],
                        );
                        depthwise_taps(g, ky, kx, |oy, iy, lo, hi, start| {
                            let grow = &gp[oy * g.ow + lo..oy * g.ow + hi];
                            let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                            let s: f32 = if sw == 1 {
                                grow.iter()
                                    .zip(&xrow[start..start + (hi - lo)])
                                    .map(|(a, b)| a * b)
                                    .sum()
                            } else {
                                grow.iter()
                                    .enumerate()
                                    .map(|(j, a)| a * xrow[start + j * sw])
                                    .sum()
                            };
                            acc += s as f64;
                        });
                    }
                    dwc[ky * g.kw + kx] = acc as f32;
                }
            }
        })
    });
    dw
}
