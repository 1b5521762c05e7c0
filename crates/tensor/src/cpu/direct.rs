//! Direct (im2col-free) convolution kernels for ungrouped convolutions whose output channels
//! come in blocks of [`OB`] (AVX2 + FMA): the forward pass of k > 1 convolutions, and the
//! weight gradient of those and of 1×1 ones.
//!
//! Forward: the microkernel keeps [`PX`] output pixels × 16 output channels in registers (two
//! 8-channel vectors per pixel: 12 accumulators); for every (input channel, tap) it loads 16
//! packed weights and broadcasts each pixel's input value, so any stride or dilation is only a
//! different address, and the input is read from a zero-padded copy of the task's rows instead
//! of being unrolled k² times. Groups of six pixels run flat over a band's rows; finished
//! pixel-major tiles are transposed into the NCHW output with 8 × 8 register transposes
//! (16 × 16 with AVX-512).
//!
//! With AVX-512 (forward, horizontal strides 1 and 2) each register holds one pixel's 16
//! channels: groups of up to 12 pixels of one row take their inputs as broadcast operands
//! from one pointer, and two channel blocks run per pass ([`conv_pixels_pair`], one
//! broadcast feeding both blocks: 24 accumulators). Winograd's products take the same pass.
//!
//! 1×1 convolutions on small maps ([`pointwise`], ≤ 256 pixels) take the same kernels with an
//! image's pixels as one row read in place (no slab): the 1×1 GEMM's 48-pixel strips leave
//! most of a tile empty there (10 × 10 = two strips and 4 pixels on a 16-lane tile).
//!
//! Weight gradient: the same 12 accumulators hold 6 (input channel, tap) pairs × 16 output
//! channels, summed over every output pixel of the task (dy transposed to pixel-major per
//! group of pixels, the input broadcast from the same padded rows).
//!
//! Measured (docs/benchmarks.md, in one process, alternating): a yolov5n training step at
//! batch 8 takes 0.90 of the time with these kernels off (median of 12 pairs, 1 thread) and
//! 0.88 at 2 threads; yolov5n / yolov5s inference at 320 px, 1 thread: 0.91 / 0.93. The strided
//! input gradient by stride phases with the same microkernel was slower than col2im (K is only
//! Cout × 1–4 taps per phase), so it stays on im2col + GEMM.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::simd::has_avx2_fma;
use crate::op::ConvGeom;
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;

/// Output channels per block (two AVX vectors).
pub(crate) const OB: usize = 16;
/// Output pixels per microkernel call.
const PX: usize = 6;
/// Floats of one channel block's weights for one chunk of input channels (kept in L1).
const CHUNK_WEIGHTS: usize = 4096;
/// Floats of pixel-major output tile per group of pixels (kept in L1 next to the weights;
/// 2048 measured 4–6 % faster than 4096 on yolov5s at batch 1).
const TILE_BUDGET: usize = 2048;
/// Floats of zero-padded input rows per task (kept in L2 while every channel block reads it):
/// 3/8 of the L2 cache ([`super::l2_bytes`]), 48 Ki floats on a 512 KiB L2. A band's weights
/// are read once per band, so on a larger L2 the longer bands re-read the deep layers'
/// megabytes of weights fewer times (a 2 MB L2, 256→512 3×3 s2 at 40²: 6.1 against 7.0 ms
/// with the 512 KiB budget; the whole yolov5s @ 640 1–2 % faster).
fn slab_budget() -> usize {
    super::l2_bytes() * 3 / 8 / 4
}

/// The direct kernels, or im2col + GEMM (`YOLO_CONV_DIRECT=off`).
static DIRECT: super::KernelSwitch = super::KernelSwitch::new("YOLO_CONV_DIRECT", "off");

/// Chooses the direct convolution at run time (benchmarks compare both in one process): on by
/// default, off (im2col + GEMM) with `YOLO_CONV_DIRECT=off`.
pub fn set_direct_conv(on: bool) {
    DIRECT.set(on);
}

/// Whether the direct kernels are on (`YOLO_CONV_DIRECT`, [`set_direct_conv`]).
fn direct_on() -> bool {
    DIRECT.on()
}

/// Whether the forward convolution `g` takes this path.
pub(crate) fn enabled(g: &ConvGeom) -> bool {
    direct_on()
        && g.p.groups == 1
        && g.kh * g.kw > 1
        && g.c_out.is_multiple_of(OB)
        && g.oh > 0
        && g.ow > 0
        && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// This thread's padded input rows and its pixel-major output tile.
    static BUFS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The forward's tasks ([`split_work`]): output-row bands whose padded input rows fit
/// [`slab_budget`], and at least `min_tasks` tasks overall.
fn bands(g: &ConvGeom, wp: usize, min_tasks: usize) -> Work {
    let (sh, dh) = (g.p.stride.0, g.p.dilation.0);
    let budget = slab_budget();
    let slab_rows = |r: usize| (r - 1) * sh + (g.kh - 1) * dh + 1;
    split_work(g.oh, g.n, g.c_out / OB, min_tasks, |rows| {
        g.c_in * slab_rows(rows) * wp <= budget
    })
}

/// Splits `total` rows into the fewest bands of equal size (the first `total % bands` one row
/// longer) such that `fits(longest band)` holds and `images` × bands makes at least
/// `min_tasks` tasks, and a multiple of `multiple` where the rows allow. Equal bands keep the
/// threads' shares equal (10 rows in four tasks are 3, 3, 2, 2, not 3, 3, 3, 1), and so does a
/// task count that the threads divide: three bands on two threads left one thread idle for
/// a third of the convolution (yolov5s @ 320, two threads: the caller waited 50–270 µs on
/// each such job, about 3 % of the run).
fn split_rows(
    total: usize,
    images: usize,
    (min_tasks, multiple): (usize, usize),
    fits: impl Fn(usize) -> bool,
) -> Vec<(usize, usize)> {
    let total1 = total.max(1);
    let mut nb = 1;
    while nb < total1 && !fits(total1.div_ceil(nb)) {
        nb += 1;
    }
    while nb < total1 && images * nb < min_tasks {
        nb += 1;
    }
    let mut even = nb;
    while even < total1 && !(images * even).is_multiple_of(multiple.max(1)) {
        even += 1;
    }
    if (images * even).is_multiple_of(multiple.max(1)) {
        nb = even;
    }
    let (q, r) = (total / nb, total % nb);
    let mut start = 0;
    (0..nb)
        .map(|i| {
            let band = (start, start + q + usize::from(i < r));
            start = band.1;
            band
        })
        .filter(|b| b.1 > b.0)
        .collect()
}

/// The tasks of a banded kernel: row bands, blocks of 16 output channels per part, and every
/// (image, band, part) triple.
pub(super) struct Work {
    pub(super) bands: Vec<(usize, usize)>,
    pub(super) per: usize,
    pub(super) tasks: Vec<(usize, usize, usize)>,
}

/// The tasks of a banded kernel over `blocks` blocks of 16 output channels: row bands within
/// the budget (`fits`), and when, with several threads, the (image, band) pairs are fewer than
/// `min_tasks`, the blocks split into equal parts first (no output row is then split, and
/// equal parts balance), the rows only past that.
pub(super) fn split_work(
    total: usize,
    images: usize,
    blocks: usize,
    min_tasks: usize,
    fits: impl Fn(usize) -> bool,
) -> Work {
    // One thread: no parts (each would fill the slab again); the rows alone make the tasks,
    // as before the parts.
    let threads = crate::threads::num_threads();
    let one = threads == 1;
    let at_least = if one { (min_tasks, 1) } else { (1, threads) };
    let mut bands = split_rows(total, images, at_least, &fits);
    let pairs = images * bands.len();
    let mut per = blocks.max(1);
    if !one && pairs < min_tasks {
        per = blocks.div_ceil(min_tasks.div_ceil(pairs)).max(1);
        let parts = blocks.div_ceil(per);
        if pairs * parts < min_tasks {
            // (image, band) pairs × parts a multiple of the threads.
            let multiple = threads / gcd(threads, parts);
            bands = split_rows(total, images, (min_tasks.div_ceil(parts), multiple), fits);
        }
    }
    let parts = blocks.div_ceil(per).max(1);
    let nb = bands.len();
    let tasks = (0..images)
        .flat_map(|n| (0..nb).flat_map(move |b| (0..parts).map(move |p| (n, b, p))))
        .collect();
    Work { bands, per, tasks }
}

/// The greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Grows `v` to at least `len` floats (a thread's scratch, kept between calls).
pub(super) fn reserve(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// The zero-padded input rows of one (image, band) task: their layout, the bands, and the
/// offset of every (input channel, tap) from a pixel's top-left input.
struct Slabs {
    /// Padded row length.
    wp: usize,
    /// Floats per channel (rows of the longest band).
    plane: usize,
    /// Output-row bands, blocks per part and the tasks.
    work: Work,
    /// `c·plane + ki·dh·wp + kj·dw` for every (c, ki, kj), in weight order.
    offs: Vec<isize>,
}

impl Slabs {
    fn new(g: &ConvGeom, min_tasks: usize) -> Self {
        let (sh, dh, dw) = (g.p.stride.0, g.p.dilation.0, g.p.dilation.1);
        let wp = g.w + 2 * g.p.padding.1;
        let work = bands(g, wp, min_tasks);
        let max_rows = work.bands.iter().map(|b| b.1 - b.0).max().unwrap_or(1);
        let plane = ((max_rows - 1) * sh + (g.kh - 1) * dh + 1) * wp;
        let offs = (0..g.c_in)
            .flat_map(|c| {
                (0..g.kh).flat_map(move |ki| {
                    (0..g.kw).map(move |kj| (c * plane + ki * dh * wp + kj * dw) as isize)
                })
            })
            .collect();
        Self {
            wp,
            plane,
            work,
            offs,
        }
    }
}

/// Copies the padded input rows that output rows `oy0..oy1` of image `n` read into `slab`
/// (padded row `oy0·sh + r` is input row `oy0·sh + r − ph`; outside the image, zeros).
pub(super) fn fill_slab(
    x: &[f32],
    g: &ConvGeom,
    n: usize,
    (oy0, oy1): (usize, usize),
    wp: usize,
    plane: usize,
    slab: &mut [f32],
) {
    let (sh, dh) = (g.p.stride.0, g.p.dilation.0);
    let (ph, pw) = g.p.padding;
    let rows = (oy1 - oy0 - 1) * sh + (g.kh - 1) * dh + 1;
    for c in 0..g.c_in {
        let xc = &x[(n * g.c_in + c) * g.h * g.w..][..g.h * g.w];
        for r in 0..rows {
            let dst = &mut slab[c * plane + r * wp..][..wp];
            let iy = (oy0 * sh + r) as isize - ph as isize;
            if iy < 0 || iy >= g.h as isize {
                dst.fill(0.0);
                continue;
            }
            // The pads are a few floats: plain stores (`fill` called memset for each).
            let (left, rest) = dst.split_at_mut(pw);
            let (mid, right) = rest.split_at_mut(g.w);
            for v in left.iter_mut().chain(right) {
                *v = 0.0;
            }
            mid.copy_from_slice(&xc[iy as usize * g.w..][..g.w]);
        }
    }
}

/// The weights `w` (`nb`·16 rows of `k`) as `[block][k][16]`, each k's 16 weights one
/// 64-byte line; kept in the packed cache under `w_stamp`.
fn packed_weights(w: &[f32], w_stamp: Option<u64>, nb: usize, k: usize) -> PackedBlocks {
    let wbuf = super::packed::packed(super::packed::Form::Direct, w, w_stamp, || {
        let mut wbuf = vec![0.0f32; nb * k * OB + 16];
        let w0 = wbuf.as_ptr().align_offset(64).min(16);
        crate::threads::install(|| {
            wbuf[w0..w0 + nb * k * OB]
                .par_chunks_mut(k * OB)
                .enumerate()
                .for_each(|(b, dst)| {
                    super::simd::transpose(&w[b * OB * k..(b + 1) * OB * k], k, dst, OB, OB, k)
                })
        });
        wbuf
    });
    PackedBlocks {
        buf: wbuf,
        len: nb * k * OB,
    }
}

/// Packed `[block][k][16]` weights ([`packed_weights`]).
struct PackedBlocks {
    buf: std::sync::Arc<Vec<f32>>,
    len: usize,
}

impl PackedBlocks {
    /// The weights from their 64-byte-aligned start (the Vec kept in the cache never moves, so
    /// that start is the one packed).
    fn get(&self) -> &[f32] {
        let w0 = self.buf.as_ptr().align_offset(64).min(16);
        &self.buf[w0..w0 + self.len]
    }
}

#[cfg(target_arch = "x86_64")]
/// Forward convolution (see [`enabled`] for which): `x` is N×C×H×W, `w` is Cout×C×kh×kw;
/// `w_stamp` as in [`super::conv::forward`].
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    w_stamp: Option<u64>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    epi: super::Epilogue<'_>,
    min_tasks: usize,
) -> Vec<f32> {
    let (kh, kw, cin, cout) = (g.kh, g.kw, g.c_in, g.c_out);
    let (sh, sw) = g.p.stride;
    let (kk, k) = (kh * kw, cin * kh * kw);
    let nb = cout / OB;
    let packed = packed_weights(w, w_stamp, nb, k);
    let wpk = packed.get();
    let biasv: Vec<f32> = bias.map_or_else(|| vec![0.0; cout], |b| b.to_vec());
    let Slabs {
        wp,
        plane: slab_plane,
        work: Work { bands, per, tasks },
        offs,
    } = Slabs::new(g, min_tasks);
    let ohw = g.oh * g.ow;
    let mut out = super::buffer::alloc(g.n * cout * ohw);
    // Tasks write disjoint output rows through it (see the store below).
    let out_nchw = Nchw::new(&mut out, cout, ohw, epi);
    crate::threads::par_for(tasks.len(), |ti| {
        let (n, band, part) = tasks[ti];
        let (oy0, oy1) = bands[band];
        let (b0, b1) = (part * per, ((part + 1) * per).min(nb));
        BUFS.with(|bufs| {
            let (slab, tile) = &mut *bufs.borrow_mut();
            reserve(slab, cin * slab_plane);
            reserve(tile, 2 * TILE_BUDGET.max(PX * OB));
            fill_slab(x, g, n, (oy0, oy1), wp, slab_plane, slab);
            let pix = PixMap {
                ow: g.ow,
                row_step: sh * wp,
                sw,
            };
            let blocks = Blocks::range(wpk, &biasv, &offs, kk, (b0, b1));
            let store = |b: usize, q0: usize, tile: &mut [f32]| {
                // SAFETY: pixels oy0·ow + q0.. of channels (b0 + b)·16.. of image n are this
                // task's alone; the CPU has AVX2.
                unsafe { out_nchw.store(n, b0 + b, oy0 * g.ow + q0, tile) }
            };
            blocks.run(&[(slab, cin)], pix, (oy1 - oy0) * g.ow, tile, store);
        });
    });
    out
}

/// Largest map (output pixels) whose 1×1 convolutions take [`pointwise`] rather than the 1×1
/// GEMM: 256 (`YOLO_POINTWISE_SMALL=n` for measurements, 0 for none). One thread, alone:
/// 10 × 10 1024→512 0.71 against 0.91 ms, 512→256 0.21 against 0.24; 20 × 20 level.
fn pointwise_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("YOLO_POINTWISE_SMALL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    })
}

/// Whether the 1×1 convolution `g` takes [`pointwise`]: a small map, ungrouped, whole blocks
/// of output channels, a CPU with AVX2 and FMA.
pub(crate) fn pointwise_enabled(g: &ConvGeom) -> bool {
    direct_on()
        && g.is_pointwise()
        && g.p.groups == 1
        && g.c_out.is_multiple_of(OB)
        && g.oh * g.ow > 0
        && g.oh * g.ow <= pointwise_max()
        && has_avx2_fma()
}

#[cfg(target_arch = "x86_64")]
/// A 1×1 convolution ([`pointwise_enabled`]) of the channel concatenation of `parts` (each
/// N×Cᵢ×H×W with its Cᵢ; one part for a plain convolution) by the direct kernels: each
/// image's pixels are one flat row, pixels broadcast and 16 output channels per register, so
/// a small map fills every vector (a 10 × 10 map in the 1×1 GEMM's 48-pixel strips leaves a
/// 4-pixel strip on a 16-lane tile).
pub(crate) fn pointwise(
    parts: &[(&[f32], usize)],
    w: &[f32],
    w_stamp: Option<u64>,
    bias: Option<&[f32]>,
    g: &ConvGeom,
    epi: super::Epilogue<'_>,
    min_tasks: usize,
) -> Vec<f32> {
    let (cin, cout) = (g.c_in, g.c_out);
    debug_assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), cin);
    let nb = cout / OB;
    let packed = packed_weights(w, w_stamp, nb, cin);
    let wpk = packed.get();
    let biasv: Vec<f32> = bias.map_or_else(|| vec![0.0; cout], |b| b.to_vec());
    let ohw = g.oh * g.ow;
    // Each source's channels at plane strides from its own start.
    let offs: Vec<isize> = parts
        .iter()
        .flat_map(|&(_, ci)| (0..ci).map(move |c| (c * ohw) as isize))
        .collect();
    let Work { per, tasks, .. } = split_work(1, g.n, nb, min_tasks, |_| true);
    let mut out = super::buffer::alloc(g.n * cout * ohw);
    let out_nchw = Nchw::new(&mut out, cout, ohw, epi);
    crate::threads::par_for(tasks.len(), |ti| {
        let (n, _, part) = tasks[ti];
        let (b0, b1) = (part * per, ((part + 1) * per).min(nb));
        let srcs: Vec<(&[f32], usize)> = parts
            .iter()
            .map(|&(x, ci)| (&x[n * ci * ohw..(n + 1) * ci * ohw], ci))
            .collect();
        BUFS.with(|bufs| {
            let (_, tile) = &mut *bufs.borrow_mut();
            reserve(tile, 2 * TILE_BUDGET.max(PX * OB));
            let pix = PixMap {
                ow: ohw,
                row_step: 0,
                sw: 1,
            };
            let blocks = Blocks::range(wpk, &biasv, &offs, 1, (b0, b1));
            let store = |b: usize, q0: usize, tile: &mut [f32]| {
                // SAFETY: pixels q0.. of channels (b0 + b)·16.. of image n are this task's
                // alone; the CPU has AVX2.
                unsafe { out_nchw.store(n, b0 + b, q0, tile) }
            };
            blocks.run(&srcs, pix, ohw, tile, store);
        });
    });
    out
}

/// The N×`cout`×`ohw` output of the direct kernels' tasks, and the epilogue its finished
/// tiles take.
#[derive(Clone, Copy)]
struct Nchw<'a> {
    out: super::conv::SharedMut,
    cout: usize,
    ohw: usize,
    epi: super::Epilogue<'a>,
}

impl<'a> Nchw<'a> {
    /// `out` (N×`cout`×`ohw`), written by the tasks at disjoint places.
    fn new(out: &mut [f32], cout: usize, ohw: usize, epi: super::Epilogue<'a>) -> Self {
        let out = super::conv::SharedMut(out.as_mut_ptr());
        Nchw {
            out,
            cout,
            ohw,
            epi,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Nchw<'_> {
    /// Stores block `b`'s finished tile (pixels × 16) at flat pixel `p` of image `n`, through
    /// the epilogue.
    ///
    /// # Safety
    /// Those pixels of channels b·16.. are the caller's alone; the CPU has AVX2.
    unsafe fn store(&self, n: usize, b: usize, p: usize, tile: &mut [f32]) {
        let at = (n * self.cout + b * OB) * self.ohw + p;
        let dst = (self.out.get().add(at), at);
        store_tile_with(self.epi, tile, tile.len() / OB, dst, self.ohw);
    }
}

/// Packed weights and offsets of one convolution-like product: `nb` blocks of 16 output
/// channels, each `[k][16]` with `k` = source channel × tap.
#[derive(Clone, Copy)]
struct Blocks<'a> {
    /// `[block][k][16]`.
    w: &'a [f32],
    /// 16 starting values per block.
    bias: &'a [f32],
    /// Offset of every (source channel, tap) in the source, in `k` order.
    offs: &'a [isize],
    /// Taps per source channel.
    taps: usize,
}

impl<'a> Blocks<'a> {
    /// Blocks `b0..b1` of the packed weights `w` (`[block][k][16]`, k = `offs.len()`) and of
    /// the starting values `bias` (16 per block).
    fn range(
        w: &'a [f32],
        bias: &'a [f32],
        offs: &'a [isize],
        taps: usize,
        (b0, b1): (usize, usize),
    ) -> Self {
        let k = offs.len();
        Blocks {
            w: &w[b0 * k * OB..b1 * k * OB],
            bias: &bias[b0 * OB..b1 * OB],
            offs,
            taps,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Blocks<'_> {
    /// For every block, the `px` output pixels reading `srcs` (the source channels in order,
    /// each source with its channel count; `offs` within a source relative to its start)
    /// through `pix`, in groups whose
    /// tiles fit L1 next to one chunk of source channels' weights (so that chunk stays in L1
    /// over the group); `store(block, q0, tile)` takes each finished group (`tile` is its
    /// pixels × 16).
    fn run(
        &self,
        srcs: &[(&[f32], usize)],
        pix: PixMap,
        px: usize,
        tile: &mut [f32],
        mut store: impl FnMut(usize, usize, &mut [f32]),
    ) {
        let k = self.offs.len();
        let channels = k / self.taps;
        debug_assert_eq!(srcs.iter().map(|s| s.1).sum::<usize>(), channels);
        let group = (TILE_BUDGET / OB).max(PX);
        let nb = self.bias.len() / OB;
        let pairs = wide(pix);
        let (t0, t1) = tile.split_at_mut(group * OB);
        let mut b = 0;
        while b < nb {
            // With AVX-512, two blocks per pass (one broadcast feeds both), the chunk's weights
            // of the pair taking the L1 share of one block's.
            let two = pairs && b + 1 < nb;
            let chunk = (CHUNK_WEIGHTS / ((1 + usize::from(two)) * OB * self.taps))
                .clamp(1, channels.max(1));
            let wb = &self.w[b * k * OB..];
            let bias: [&[f32; OB]; 2] = std::array::from_fn(|i| {
                let o = (b + i).min(nb - 1) * OB;
                self.bias[o..o + OB]
                    .try_into()
                    .expect("a block of 16 starting values")
            });
            for q0 in (0..px).step_by(group) {
                let q1 = (q0 + group).min(px);
                // Chunks never span two sources (each source's offsets are its own).
                let mut s0 = 0;
                let chunks = srcs.iter().flat_map(|&(src, cs)| {
                    let start = s0;
                    s0 += cs;
                    (start..start + cs)
                        .step_by(chunk)
                        .map(move |c0| (src, c0, (c0 + chunk).min(start + cs)))
                });
                for (src, c0, c1) in chunks {
                    let offs = &self.offs[c0 * self.taps..c1 * self.taps];
                    let wc = &wb[c0 * self.taps * OB..];
                    // SAFETY: every pixel's reads (its offset through `pix` + offs[kk]) stay
                    // inside `src` by the callers' size arithmetic; each tile holds
                    // group·16 ≥ (q1 − q0)·16 floats. One block: the CPU has AVX2 and FMA
                    // (the callers' `enabled…`); a pair: it has AVX-512 F (`wide`), and the
                    // weights are `[block][k][16]`, so block b + 1's line for offset i is
                    // k·16 floats past block b's.
                    unsafe {
                        if two {
                            let first = (c0 == 0).then_some(bias);
                            let tiles = [&mut *t0, &mut *t1];
                            conv_pixels_pair(src, pix, (q0, q1), wc, k * OB, offs, first, tiles)
                        } else {
                            let first = (c0 == 0).then_some(bias[0]);
                            conv_pixels(src, pix, (q0, q1), wc, offs, first, t0)
                        }
                    };
                }
                let len = (q1 - q0) * OB;
                store(b, q0, &mut t0[..len]);
                if two {
                    store(b + 1, q0, &mut t1[..len]);
                }
            }
            b += 1 + usize::from(two);
        }
    }
}

/// Whether the AVX-512 passes take pixels read through `pix`: the CPU has AVX-512 (not
/// switched off) and the horizontal stride is 1 or 2.
fn wide(pix: PixMap) -> bool {
    super::simd::has_avx512() && (pix.sw == 1 || pix.sw == 2)
}

/// Where a band's output pixels read their input in the slab: pixel `q` (flat over the band's
/// rows) at `(q / ow)·row_step + (q % ow)·sw`.
#[derive(Clone, Copy)]
pub(super) struct PixMap {
    pub(super) ow: usize,
    pub(super) row_step: usize,
    pub(super) sw: usize,
}

#[cfg(target_arch = "x86_64")]
/// Output pixels `q0..q1` of one channel block: `tile[(q − q0)·16 + o] = start + Σ_kk w[kk, o]
/// · slab[pixel q's offset + offs[kk]]`, where `start` is `bias[o]`, or with no bias the
/// tile's own value (the next chunk of input channels accumulates). Groups of six pixels may
/// span rows, so only the last group of the range is shorter.
///
/// # Safety
/// The CPU has AVX2 and FMA; `slab` holds every element read; `tile` holds `(q1 − q0)·16`
/// floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn conv_pixels(
    slab: &[f32],
    pix: PixMap,
    (q0, q1): (usize, usize),
    w: &[f32],
    offs: &[isize],
    bias: Option<&[f32; OB]>,
    tile: &mut [f32],
) {
    debug_assert!(tile.len() >= (q1 - q0) * OB && w.len() >= offs.len() * OB);
    if wide(pix) {
        return conv_pixels_512(slab, pix, (q0, q1), w, offs, bias, tile);
    }
    let at = |q: usize| {
        slab.as_ptr()
            .add((q / pix.ow) * pix.row_step + (q % pix.ow) * pix.sw)
    };
    let mut q = q0;
    while q < q1 {
        let n = (q1 - q).min(PX);
        let x: [*const f32; PX] = std::array::from_fn(|j| at(q + j.min(n - 1)));
        let t = tile.as_mut_ptr().add((q - q0) * OB);
        let w = w.as_ptr();
        // The accumulators' start: the bias for every pixel, or this tile's partial sums.
        let b = bias.map_or((t as *const f32, OB), |b| (b.as_ptr(), 0));
        match n {
            6 => pixels::<6>(&x, w, offs, b, t),
            5 => pixels::<5>(&x, w, offs, b, t),
            4 => pixels::<4>(&x, w, offs, b, t),
            3 => pixels::<3>(&x, w, offs, b, t),
            2 => pixels::<2>(&x, w, offs, b, t),
            _ => pixels::<1>(&x, w, offs, b, t),
        }
        q += n;
    }
}

/// Most output pixels per AVX-512 microkernel call (one 16-channel register each).
const PX512: usize = 12;

/// Calls the AVX-512 microkernel `$f::<N, SW>` for a group of `$n` (1 to 12) pixels at
/// horizontal stride `$sw` (1 or 2).
#[cfg(target_arch = "x86_64")]
macro_rules! by_size {
    ($f:ident, $n:expr, $sw:expr, $args:tt) => {
        by_size!(@ $f, $n, $sw, $args, 1 2 3 4 5 6 7 8 9 10 11 12)
    };
    (@ $f:ident, $n:expr, $sw:expr, $args:tt, $($k:literal)*) => {
        match ($n, $sw) {
            $(($k, 1) => $f::<$k, 1> $args,
              ($k, 2) => $f::<$k, 2> $args,)*
            _ => unreachable!("groups of 1 to 12 pixels, strides 1 and 2"),
        }
    };
}

/// Calls `f(q, at, n)` for each group of the AVX-512 kernels over pixels `q0..q1`: each row's
/// pixels of the range in near-equal groups of at most [`PX512`] (a group never spans rows),
/// `q` the group's first pixel, `at` its input's offset in the slab, `n` its size.
#[inline(always)]
fn for_row_groups(pix: PixMap, (q0, q1): (usize, usize), mut f: impl FnMut(usize, usize, usize)) {
    let mut q = q0;
    while q < q1 {
        let (row, col) = (q / pix.ow, q % pix.ow);
        let len = (pix.ow - col).min(q1 - q);
        let groups = len.div_ceil(PX512);
        let (size, extra) = (len / groups, len % groups);
        for i in 0..groups {
            let n = size + usize::from(i < extra);
            f(q, row * pix.row_step + (q % pix.ow) * pix.sw, n);
            q += n;
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// [`conv_pixels`] on AVX-512 for horizontal strides 1 and 2: each row's pixels of the range
/// run in near-equal groups of at most [`PX512`] (a group never spans rows, so its inputs are
/// one pointer plus constant offsets and every FMA takes its input as a broadcast operand).
///
/// # Safety
/// As [`conv_pixels`], and the CPU has AVX-512 F; `pix.sw` is 1 or 2.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_pixels_512(
    slab: &[f32],
    pix: PixMap,
    (q0, q1): (usize, usize),
    w: &[f32],
    offs: &[isize],
    bias: Option<&[f32; OB]>,
    tile: &mut [f32],
) {
    for_row_groups(pix, (q0, q1), |q, at, n| {
        let x = slab.as_ptr().add(at);
        let t = tile.as_mut_ptr().add((q - q0) * OB);
        let b = bias.map_or((t as *const f32, OB), |b| (b.as_ptr(), 0));
        let w = w.as_ptr();
        by_size!(pixels512, n, pix.sw, (x, w, offs, b, t));
    });
}

#[cfg(target_arch = "x86_64")]
/// [`conv_pixels_512`] for two blocks at once: block 1's weight line for offset i is `wdist`
/// floats past block 0's; `init` is the two blocks' bias (or, when `None`, each tile's own
/// partial sums); `tiles` are the two blocks' pixel-major tiles.
///
/// # Safety
/// As [`conv_pixels_512`] for each block; `w` holds `wdist + offs.len()·16` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn conv_pixels_pair(
    slab: &[f32],
    pix: PixMap,
    (q0, q1): (usize, usize),
    w: &[f32],
    wdist: usize,
    offs: &[isize],
    init: Option<[&[f32; OB]; 2]>,
    tiles: [&mut [f32]; 2],
) {
    debug_assert!(w.len() >= wdist + offs.len() * OB);
    debug_assert!(tiles.iter().all(|t| t.len() >= (q1 - q0) * OB));
    let [t0, t1] = tiles;
    for_row_groups(pix, (q0, q1), |q, at, n| {
        let x = slab.as_ptr().add(at);
        let t = [
            t0.as_mut_ptr().add((q - q0) * OB),
            t1.as_mut_ptr().add((q - q0) * OB),
        ];
        let b = init.map_or([(t[0] as *const f32, OB), (t[1] as *const f32, OB)], |b| {
            [(b[0].as_ptr(), 0), (b[1].as_ptr(), 0)]
        });
        let w = (w.as_ptr(), wdist);
        by_size!(pixels_pair, n, pix.sw, (x, w, offs, b, t));
    });
}

#[cfg(target_arch = "x86_64")]
/// [`pixels512`] for two blocks: each input broadcast feeds both (24 accumulators for 12
/// pixels, two weight lines per offset).
#[inline(always)]
unsafe fn pixels_pair<const N: usize, const SW: usize>(
    x: *const f32,
    (w, wdist): (*const f32, usize),
    offs: &[isize],
    init: [(*const f32, usize); 2],
    tile: [*mut f32; 2],
) {
    use std::arch::x86_64::*;
    let mut a0: [__m512; N] =
        std::array::from_fn(|j| _mm512_loadu_ps(init[0].0.add(j * init[0].1)));
    let mut a1: [__m512; N] =
        std::array::from_fn(|j| _mm512_loadu_ps(init[1].0.add(j * init[1].1)));
    let mut wk = w;
    for &o in offs {
        let (w0, w1) = (_mm512_loadu_ps(wk), _mm512_loadu_ps(wk.add(wdist)));
        let p = x.offset(o);
        for j in 0..N {
            let v = _mm512_set1_ps(*p.add(j * SW));
            a0[j] = _mm512_fmadd_ps(v, w0, a0[j]);
            a1[j] = _mm512_fmadd_ps(v, w1, a1[j]);
        }
        wk = wk.add(OB);
    }
    for j in 0..N {
        _mm512_storeu_ps(tile[0].add(j * OB), a0[j]);
        _mm512_storeu_ps(tile[1].add(j * OB), a1[j]);
    }
}

#[cfg(target_arch = "x86_64")]
/// The AVX-512 microkernel: `N` pixels of one row (input at `x + j·SW`) × 16 channels, over
/// every offset; pixel `j` starts from the 16 floats at `init + j·init_step`.
#[inline(always)]
unsafe fn pixels512<const N: usize, const SW: usize>(
    x: *const f32,
    w: *const f32,
    offs: &[isize],
    (init, init_step): (*const f32, usize),
    tile: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc: [__m512; N] = std::array::from_fn(|j| _mm512_loadu_ps(init.add(j * init_step)));
    let mut wk = w;
    for &o in offs {
        let wv = _mm512_loadu_ps(wk);
        let p = x.offset(o);
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(_mm512_set1_ps(*p.add(j * SW)), wv, *a);
        }
        wk = wk.add(OB);
    }
    for (j, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(tile.add(j * OB), *a);
    }
}

#[cfg(target_arch = "x86_64")]
/// The microkernel: `N` pixels (input at `x[j]`) × 16 channels, over every offset; pixel `j`
/// starts from the 16 floats at `init + j·init_step`.
#[inline(always)]
unsafe fn pixels<const N: usize>(
    x: &[*const f32; PX],
    w: *const f32,
    offs: &[isize],
    (init, init_step): (*const f32, usize),
    tile: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut lo: [__m256; N] = std::array::from_fn(|j| _mm256_loadu_ps(init.add(j * init_step)));
    let mut hi: [__m256; N] = std::array::from_fn(|j| _mm256_loadu_ps(init.add(j * init_step + 8)));
    let x: [*const f32; N] = std::array::from_fn(|j| x[j]);
    let mut wk = w;
    for &o in offs {
        let (w0, w1) = (_mm256_loadu_ps(wk), _mm256_loadu_ps(wk.add(8)));
        for j in 0..N {
            fma16(*x[j].offset(o), (w0, w1), &mut lo[j], &mut hi[j]);
        }
        wk = wk.add(OB);
    }
    store16(&lo, &hi, tile);
}

#[cfg(target_arch = "x86_64")]
/// `lo/hi += v · (v0, v1)`: one broadcast value times 16 channels.
#[inline(always)]
unsafe fn fma16(
    v: f32,
    (v0, v1): (std::arch::x86_64::__m256, std::arch::x86_64::__m256),
    lo: &mut std::arch::x86_64::__m256,
    hi: &mut std::arch::x86_64::__m256,
) {
    use std::arch::x86_64::*;
    let b = _mm256_set1_ps(v);
    *lo = _mm256_fmadd_ps(b, v0, *lo);
    *hi = _mm256_fmadd_ps(b, v1, *hi);
}

#[cfg(target_arch = "x86_64")]
/// Stores `N` accumulator pairs as `N` rows of 16 floats at `dst`.
#[inline(always)]
unsafe fn store16<const N: usize>(
    lo: &[std::arch::x86_64::__m256; N],
    hi: &[std::arch::x86_64::__m256; N],
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    for j in 0..N {
        _mm256_storeu_ps(dst.add(j * OB), lo[j]);
        _mm256_storeu_ps(dst.add(j * OB + 8), hi[j]);
    }
}

#[cfg(target_arch = "x86_64")]
/// [`store_tile`] through the epilogue: its activation on the tile, then its residual added
/// to the stored rows (`at`: `dst`'s element offset in the output).
///
/// # Safety
/// As [`store_tile`], and those rows are the caller's alone.
pub(super) unsafe fn store_tile_with(
    epi: super::Epilogue<'_>,
    tile: &mut [f32],
    ow: usize,
    (dst, at): (*mut f32, usize),
    rs: usize,
) {
    epi.tile(&mut tile[..ow * OB]);
    store_tile(tile, ow, dst, rs);
    epi.add_rows(dst, at, OB, ow, rs);
}

#[cfg(target_arch = "x86_64")]
/// Writes a pixel-major tile (`ow` rows of 16 channels) as 16 output rows of `ow` pixels
/// (stride `rs`).
///
/// # Safety
/// The CPU has AVX2; `dst` is valid for writes at `o·rs + j`, `o < 16`, `j < ow`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn store_tile(tile: &[f32], ow: usize, dst: *mut f32, rs: usize) {
    let done = if super::simd::has_avx512() {
        store_tile_512(tile, ow, dst, rs)
    } else {
        0
    };
    let full = ow / 8 * 8;
    for j in (done..full).step_by(8) {
        for h in 0..2 {
            super::simd::transpose8_avx2(
                tile.as_ptr().add(j * OB + h * 8),
                OB,
                dst.add(h * 8 * rs + j),
                rs,
            );
        }
    }
    for j in full.max(done)..ow {
        for o in 0..OB {
            *dst.add(o * rs + j) = tile[j * OB + o];
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// The whole 16-pixel runs of [`store_tile`] with 16 × 16 register transposes; returns how
/// many pixels it stored (the rest is left to the AVX2 loop).
///
/// # Safety
/// As [`store_tile`], and the CPU has AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store_tile_512(tile: &[f32], ow: usize, dst: *mut f32, rs: usize) -> usize {
    use std::arch::x86_64::*;
    let full = ow / 16 * 16;
    debug_assert!(tile.len() >= ow * OB);
    for j in (0..full).step_by(16) {
        let src = tile.as_ptr().add(j * OB);
        let mut r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * OB)));
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let (lo, hi) = (
            |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            },
            |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            },
        );
        for g in (0..16).step_by(4) {
            r[g] = lo(t[g], t[g + 2]);
            r[g + 1] = hi(t[g], t[g + 2]);
            r[g + 2] = lo(t[g + 1], t[g + 3]);
            r[g + 3] = hi(t[g + 1], t[g + 3]);
        }
        for h in [0, 8] {
            for i in 0..4 {
                t[h + i] = _mm512_shuffle_f32x4::<0x88>(r[h + i], r[h + 4 + i]);
                t[h + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(r[h + i], r[h + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
        }
        for (o, v) in r.iter().enumerate() {
            _mm512_storeu_ps(dst.add(o * rs + j), *v);
        }
    }
    full
}

/// Whether the weight gradient of `g` takes this path: the convolutions of [`enabled`], and
/// 1×1 stride-1 unpadded ones (their input read in place as one long row).
pub(crate) fn enabled_wgrad(g: &ConvGeom) -> bool {
    let pointwise = g.is_pointwise();
    (pointwise || g.kh * g.kw > 1)
        && WGRAD.load(Relaxed)
        && direct_on()
        && g.p.groups == 1
        && g.c_out.is_multiple_of(OB)
        && g.oh > 0
        && g.ow > 0
        && has_avx2_fma()
}

/// Whether the weight gradient uses the direct kernel (with the forward pass on).
static WGRAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switches the direct weight gradient alone (benchmarks compare it in one process).
pub fn set_direct_wgrad(on: bool) {
    WGRAD.store(on, Relaxed);
}

/// Floats of transposed output gradient per group of pixels (kept in L1).
const DY_TILE: usize = 4096;

#[cfg(target_arch = "x86_64")]
/// Weight gradient (see [`enabled_wgrad`] for which): `dW[o, k] = Σ_n Σ_p dy[n, o, p] ·
/// col[k, p]`, where `col` is the im2col matrix, read in place from padded row slabs. Each
/// task sums a share of the (image, band) pairs into its own `[block][k][16]` partial.
pub(crate) fn backward_weight(x: &[f32], dy: &[f32], g: &ConvGeom, min_tasks: usize) -> Vec<f32> {
    let (cin, cout) = (g.c_in, g.c_out);
    let k = cin * g.kh * g.kw;
    let nb = cout / OB;
    let ohw = g.oh * g.ow;
    let pointwise = g.is_pointwise();
    // A 1×1 convolution reads its input in place: one band per image, pixels in groups of
    // DY_TILE / 16 along the flat plane. Otherwise padded row slabs, as the forward pass.
    let slabs = (!pointwise).then(|| Slabs::new(g, 1));
    let nbands = slabs.as_ref().map_or(1, |s| s.work.bands.len());
    // 1×1: channel c of the image at c·ohw.
    let plane_offs: Vec<isize> = (0..cin).map(|c| (c * ohw) as isize).collect();
    let items: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|n| (0..nbands).map(move |b| (n, b)))
        .collect();
    let chunks = (min_tasks / 2).clamp(1, items.len());
    let per = items.len().div_ceil(chunks);
    let partials: Vec<Vec<f32>> = crate::threads::install(|| {
        items
            .par_chunks(per)
            .map(|items| {
                let mut part = vec![0.0f32; nb * k * OB];
                BUFS.with(|bufs| {
                    let (slab, dyt) = &mut *bufs.borrow_mut();
                    if dyt.len() < DY_TILE.max(g.ow * OB) {
                        dyt.resize(DY_TILE.max(g.ow * OB), 0.0);
                    }
                    for &(n, band) in items {
                        match &slabs {
                            None => {
                                let xn = &x[n * cin * ohw..(n + 1) * cin * ohw];
                                let group = DY_TILE / OB;
                                for p0 in (0..ohw).step_by(group) {
                                    let len = group.min(ohw - p0);
                                    let px = Pixels {
                                        rows: 1,
                                        map: PixMap {
                                            ow: len,
                                            row_step: 0,
                                            sw: 1,
                                        },
                                    };
                                    wgrad_group(
                                        &xn[p0..],
                                        &plane_offs,
                                        dy,
                                        g,
                                        n,
                                        (p0, len),
                                        px,
                                        dyt,
                                        &mut part,
                                    );
                                }
                            }
                            Some(s) => {
                                let (oy0, oy1) = s.work.bands[band];
                                if slab.len() < cin * s.plane {
                                    slab.resize(cin * s.plane, 0.0);
                                }
                                fill_slab(x, g, n, (oy0, oy1), s.wp, s.plane, slab);
                                let (sh, sw) = g.p.stride;
                                let group = (DY_TILE / (g.ow * OB)).clamp(1, oy1 - oy0);
                                for r0 in (oy0..oy1).step_by(group) {
                                    let r1 = (r0 + group).min(oy1);
                                    let px = Pixels {
                                        rows: r1 - r0,
                                        map: PixMap {
                                            ow: g.ow,
                                            row_step: sh * s.wp,
                                            sw,
                                        },
                                    };
                                    let src = &slab[(r0 - oy0) * sh * s.wp..];
                                    wgrad_group(
                                        src,
                                        &s.offs,
                                        dy,
                                        g,
                                        n,
                                        (r0 * g.ow, (r1 - r0) * g.ow),
                                        px,
                                        dyt,
                                        &mut part,
                                    );
                                }
                            }
                        }
                    }
                });
                part
            })
            .collect()
    });
    let mut parts = partials.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0.0; nb * k * OB]);
    for p in parts {
        for (a, b) in sum.iter_mut().zip(&p) {
            *a += b;
        }
    }
    // [block][k][16] → [o][k].
    let mut dw = vec![0.0f32; cout * k];
    for b in 0..nb {
        let src = &sum[b * k * OB..(b + 1) * k * OB];
        super::simd::transpose(src, OB, &mut dw[b * OB * k..(b + 1) * OB * k], k, k, OB);
    }
    dw
}

/// A group of output pixels for the weight gradient: `rows` rows of `map.ow` pixels, read
/// through `map` (pixel (r, ox) at `r·row_step + ox·sw` from a (channel, tap)'s offset).
#[derive(Clone, Copy)]
struct Pixels {
    rows: usize,
    map: PixMap,
}

#[cfg(target_arch = "x86_64")]
/// Adds one group of output pixels (flat range `q0..q0+len` of image `n`'s output plane) to
/// every channel block of `part`: dy's 16 rows are transposed into `dyt`, then every 6
/// (channel, tap) offsets run the kernel over the group's pixels.
#[allow(clippy::too_many_arguments)]
fn wgrad_group(
    src: &[f32],
    offs: &[isize],
    dy: &[f32],
    g: &ConvGeom,
    n: usize,
    (q0, len): (usize, usize),
    px: Pixels,
    dyt: &mut [f32],
    part: &mut [f32],
) {
    let ohw = g.oh * g.ow;
    let k = offs.len();
    for b in 0..g.c_out / OB {
        let rows = &dy[(n * g.c_out + b * OB) * ohw + q0..];
        super::simd::transpose(rows, ohw, dyt, OB, OB, len);
        let pb = &mut part[b * k * OB..(b + 1) * k * OB];
        let mut k0 = 0;
        while k0 < k {
            let m = (k - k0).min(PX);
            // SAFETY: the CPU has AVX2 and FMA (`enabled_wgrad`); every read at offs[kk] +
            // r·row_step + ox·sw stays inside `src` (the slab or the image) by the output
            // size arithmetic; `dyt` holds len·16 floats; `pb` holds k·16.
            unsafe {
                let acc = pb.as_mut_ptr().add(k0 * OB);
                let o = &offs[k0..k0 + m];
                match (m, px.map.sw) {
                    (6, 1) => wgrad::<6, 1>(src, o, px, dyt, acc),
                    (6, 2) => wgrad::<6, 2>(src, o, px, dyt, acc),
                    (6, _) => wgrad::<6, 0>(src, o, px, dyt, acc),
                    (5, _) => wgrad::<5, 0>(src, o, px, dyt, acc),
                    (4, _) => wgrad::<4, 0>(src, o, px, dyt, acc),
                    (3, _) => wgrad::<3, 0>(src, o, px, dyt, acc),
                    (2, _) => wgrad::<2, 0>(src, o, px, dyt, acc),
                    _ => wgrad::<1, 0>(src, o, px, dyt, acc),
                }
            }
            k0 += m;
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// The weight-gradient microkernel: `acc[j·16 + o] += Σ_p dyt[p·16 + o] · src[offs[j] +
/// pixel p's offset]` for `N` (channel, tap) offsets, over every pixel of the group (the
/// horizontal stride `S`, or `px.map.sw` when `S` is 0).
#[target_feature(enable = "avx2,fma")]
unsafe fn wgrad<const N: usize, const S: usize>(
    src: &[f32],
    offs: &[isize],
    px: Pixels,
    dyt: &[f32],
    acc: *mut f32,
) {
    use std::arch::x86_64::*;
    let PixMap { ow, row_step, sw } = px.map;
    debug_assert!(offs.len() == N && dyt.len() >= px.rows * ow * OB);
    let sw = if S == 0 { sw } else { S };
    let mut lo: [__m256; N] = std::array::from_fn(|j| _mm256_loadu_ps(acc.add(j * OB)));
    let mut hi: [__m256; N] = std::array::from_fn(|j| _mm256_loadu_ps(acc.add(j * OB + 8)));
    let base: [*const f32; N] = std::array::from_fn(|j| src.as_ptr().offset(offs[j]));
    let mut d = dyt.as_ptr();
    for r in 0..px.rows {
        let row: [*const f32; N] = std::array::from_fn(|j| base[j].add(r * row_step));
        for ox in 0..ow {
            let (d0, d1) = (_mm256_loadu_ps(d), _mm256_loadu_ps(d.add(8)));
            for j in 0..N {
                fma16(*row[j].add(ox * sw), (d0, d1), &mut lo[j], &mut hi[j]);
            }
            d = d.add(OB);
        }
    }
    store16(&lo, &hi, acc);
}

#[cfg(test)]
mod tests {
    use super::split_rows;

    #[test]
    fn split_rows_makes_equal_bands_within_the_budget() {
        // Enough tasks: 10 rows, 4 wanted → 3, 3, 2, 2.
        assert_eq!(
            split_rows(10, 1, (4, 1), |_| true),
            vec![(0, 3), (3, 6), (6, 8), (8, 10)]
        );
        // The budget alone: at most 7 rows → 3 bands of 7, 7, 6.
        assert_eq!(
            split_rows(20, 2, (1, 1), |r| r <= 7),
            vec![(0, 7), (7, 14), (14, 20)]
        );
        // Images count as tasks; never more bands than rows; every row covered once.
        assert_eq!(split_rows(5, 4, (4, 1), |_| true), vec![(0, 5)]);
        assert_eq!(split_rows(3, 1, (8, 1), |_| true).len(), 3);
        for total in 1..40 {
            for budget in 1..9 {
                let b = split_rows(total, 1, (3, 1), |r| r <= budget);
                assert_eq!((b[0].0, b[b.len() - 1].1), (0, total));
                assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
                let (lo, hi) = b.iter().fold((usize::MAX, 0), |(lo, hi), (s, e)| {
                    (lo.min(e - s), hi.max(e - s))
                });
                assert!(hi - lo <= 1 && hi <= budget, "{total} {budget}: {b:?}");
                assert!(b.len() >= 3.min(total));
            }
        }
        assert!(split_rows(0, 1, (4, 1), |_| true).is_empty());
        // A multiple of two threads: the budget's 3 bands become 4; with 2 images, 3 stay;
        // 3 rows cannot make 4 bands, so they keep 3.
        assert_eq!(split_rows(20, 1, (1, 2), |r| r <= 7).len(), 4);
        assert_eq!(split_rows(20, 2, (1, 2), |r| r <= 7).len(), 3);
        assert_eq!(split_rows(3, 1, (3, 2), |_| true).len(), 3);
        for total in 2..40 {
            for budget in 1..9 {
                let b = split_rows(total, 1, (1, 2), |r| r <= budget);
                assert!(
                    b.len() % 2 == 0 || b.len() == total,
                    "{total} {budget}: {b:?}"
                );
                assert!(b.iter().all(|(s, e)| e - s <= budget));
            }
        }
    }
}
