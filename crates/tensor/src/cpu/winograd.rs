//! Winograd F(2×2, 3×3) forward convolution for ungrouped 3×3 stride-1 undilated convolutions
//! whose output channels come in blocks of 16 (AVX2 + FMA): every 2 × 2 output tile is
//! `Aᵀ·[Σ_c U_c ⊙ V_c]·A` with `U = G·g·Gᵀ` (the 3 × 3 kernel) and `V = Bᵀ·d·B` (the 4 × 4 input
//! patch), so the product step takes 16 multiplications per tile and channel pair instead of
//! 36, as 16 independent products over channels, one per transformed position ξ.
//!
//! Those products run on the direct convolution's microkernel (6 tiles × 16 output channels
//! in registers, a broadcast per tile and channel); the input transform vectorises over 8 tiles
//! of a row (even and odd columns split with two shuffles), the output transform over the 16
//! channels of a block, and finished output rows go to NCHW through the same 8 × 8 transposes
//! (16 × 16 with AVX-512).
//! Every transform coefficient is 0, ±1 or ±½, so the results stay within a few ulp of the
//! direct sum's (the reference tests hold them to the f64 naive result at 1e-5).
//!
//! With AVX-512 the input transform takes 16 tiles per vector (each row's last partial vector
//! through masked loads and stores) and the products run two channel blocks per pass.
//!
//! Tasks are (image, band of tile rows), the band's transformed input (16 × C × tiles floats)
//! sized to stay in L2 while every block of output channels reads it. The stride-1 input
//! gradient, a forward convolution of dy, takes the same path. `YOLO_CONV_WINOGRAD=off` (or
//! [`set_winograd`]) keeps these convolutions on the direct kernel.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::direct::OB;
use crate::op::ConvGeom;

/// Transformed positions per 4 × 4 tile.
const XI: usize = 16;
/// Floats of transformed input per task (kept in L2 while every channel block reads it).
const V_BUDGET: usize = 96 * 1024;
/// Input channels per product chunk (their 16 weights per channel stay in L1).
const CHUNK: usize = 256;

/// Winograd, or the direct kernel (`YOLO_CONV_WINOGRAD=off`).
static WINOGRAD: super::KernelSwitch = super::KernelSwitch::new("YOLO_CONV_WINOGRAD", "off");

/// Chooses the Winograd path at run time (benchmarks compare both in one process): on by
/// default, off (the direct kernel) with `YOLO_CONV_WINOGRAD=off`.
pub fn set_winograd(on: bool) {
    WINOGRAD.set(on);
}

/// Whether the forward convolution `g` takes this path: the direct kernel's convolutions
/// (see [`super::direct::enabled`]) that are 3 × 3, stride 1 and undilated.
pub(crate) fn enabled(g: &ConvGeom) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.p.stride == (1, 1)
        && g.p.dilation == (1, 1)
        && super::direct::enabled(g)
        && WINOGRAD.on()
}

/// `U = G·g·Gᵀ` of one 3 × 3 kernel (row-major `g`), as 16 values in ξ order.
fn kernel_transform(g: &[f32]) -> [f32; XI] {
    let mut a = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
        a[0][j] = g0;
        a[1][j] = 0.5 * (g0 + g1 + g2);
        a[2][j] = 0.5 * (g0 - g1 + g2);
        a[3][j] = g2;
    }
    let mut u = [0.0; XI];
    for (i, &[h0, h1, h2]) in a.iter().enumerate() {
        u[i * 4] = h0;
        u[i * 4 + 1] = 0.5 * (h0 + h1 + h2);
        u[i * 4 + 2] = 0.5 * (h0 - h1 + h2);
        u[i * 4 + 3] = h2;
    }
    u
}

/// The transformed weights as `[block][ξ][c][16]`: per (block, ξ) one `c × 16` matrix whose
/// rows are the microkernel's 64-byte weight lines.
fn transform_weights(w: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut u = vec![0.0f32; cout * XI * cin];
    crate::threads::install(|| {
        u.par_chunks_mut(XI * cin * OB)
            .enumerate()
            .for_each(|(b, ub)| {
                for c in 0..cin {
                    let t: [[f32; XI]; OB] = std::array::from_fn(|o| {
                        kernel_transform(&w[((b * OB + o) * cin + c) * 9..][..9])
                    });
                    for xi in 0..XI {
                        let line = &mut ub[(xi * cin + c) * OB..][..OB];
                        for (o, d) in line.iter_mut().enumerate() {
                            *d = t[o][xi];
                        }
                    }
                }
            })
    });
    u
}

/// Add and subtract on one lane type (a float, or 8 floats in an AVX register), so the
/// transforms are written once for the vector path and the scalar tail.
trait Lane: Copy {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
}

impl Lane for f32 {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
}

#[cfg(target_arch = "x86_64")]
impl Lane for std::arch::x86_64::__m256 {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: only reached from `#[target_feature(enable = "avx2,fma")]` functions,
        // called after `has_avx2_fma` (through `enabled`).
        unsafe { std::arch::x86_64::_mm256_add_ps(self, o) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { std::arch::x86_64::_mm256_sub_ps(self, o) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lane for std::arch::x86_64::__m512 {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: only reached from `#[target_feature(enable = "avx512f")]` functions,
        // called after `has_avx512`.
        unsafe { std::arch::x86_64::_mm512_add_ps(self, o) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: as in `add`.
        unsafe { std::arch::x86_64::_mm512_sub_ps(self, o) }
    }
}

#[cfg(target_arch = "x86_64")]
/// [`input_tile`] on 16 tiles, as its own function: inside the whole transform LLVM left the
/// add and sub intrinsics as calls (11 % of yolov5n's time).
///
/// # Safety
/// The CPU has AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_512(d: [[std::arch::x86_64::__m512; 4]; 4]) -> [std::arch::x86_64::__m512; XI] {
    input_tile(d)
}

#[cfg(target_arch = "x86_64")]
/// Where the AVX-512 input transform reads a band's input straight from the image (no padded
/// copy): channel `c`'s input row `iy` at `ptr + c·plane + iy·w`; the band's padded row `i`
/// is input row `row0 + i`, padded column `j` input column `j − pw`; rows and columns outside
/// the image read as zeros (masked loads, which touch no masked-off lane).
#[derive(Clone, Copy)]
struct Image {
    ptr: *const f32,
    plane: usize,
    h: usize,
    w: usize,
    row0: isize,
    pw: usize,
}

#[cfg(target_arch = "x86_64")]
/// [`input_transform`] on AVX-512, reading the image itself ([`Image`]): 16 tiles per vector
/// through masked loads and stores (a row's last partial vector reads and writes only its own
/// lanes, the padding is the masked-off lanes).
///
/// # Safety
/// The CPU has AVX-512 F; `src` covers `cin` planes of `h` rows of `w` floats; `v` holds
/// `16·cin·tmax` floats; `geo.tw` tiles per row read at most `2·tw + 2` padded columns.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn input_transform_512(src: Image, geo: TileGeom, v: &mut [f32]) {
    use std::arch::x86_64::*;
    let TileGeom {
        cin,
        rows,
        tw,
        tmax,
        ..
    } = geo;
    debug_assert!(v.len() >= XI * cin * tmax);
    let xs = cin * tmax;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let w = src.w as isize;
    // Lanes lo..hi (of 32) as two load masks.
    let lanes = |lo: isize, hi: isize| -> (u16, u16) {
        let bits = |k: isize| ((1u32 << k.clamp(0, 16)) - 1) as u16;
        let below = |k: isize| (bits(k), bits(k - 16));
        let (h0, h1) = below(hi.max(lo));
        let (l0, l1) = below(lo);
        (h0 & !l0, h1 & !l1)
    };
    // Even and odd elements of the `len` floats of row `r` from column `col` (zeros outside
    // the row and past `len`).
    let split = |r: *const f32, col: isize, len: usize| {
        let (m0, m1) = lanes(-col, (len as isize).min(w - col));
        let p = r.wrapping_offset(col);
        let (a, b) = (
            _mm512_maskz_loadu_ps(m0, p),
            _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)),
        );
        (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        )
    };
    let zero = _mm512_setzero_ps();
    for c in 0..cin {
        let xc = src.ptr.wrapping_add(c * src.plane);
        for r in 0..rows {
            let vt = v.as_mut_ptr().add(c * tmax + r * tw);
            // The patch rows' starts (None: outside the image, zeros).
            let mut rp: [Option<*const f32>; 4] = [None; 4];
            for (i, p) in rp.iter_mut().enumerate() {
                let iy = src.row0 + (2 * r + i) as isize;
                if iy >= 0 && iy < src.h as isize {
                    *p = Some(xc.wrapping_add(iy as usize * src.w));
                }
            }
            // 16 tiles per vector; a row's last n < 16 read only the 2n + 2 columns they
            // need and store n lanes.
            for t in (0..tw).step_by(16) {
                let n = (tw - t).min(16);
                let col = (2 * t) as isize - src.pw as isize;
                let d: [[__m512; 4]; 4] = std::array::from_fn(|i| match rp[i] {
                    Some(p) => {
                        let ((e0, o0), (e1, o1)) = (split(p, col, 2 * n), split(p, col + 2, 2 * n));
                        [e0, o0, e1, o1]
                    }
                    None => [zero; 4],
                });
                let keep = lanes(0, n as isize).0;
                for (xi, val) in tile_512(d).into_iter().enumerate() {
                    _mm512_mask_storeu_ps(vt.add(xi * xs + t), keep, val);
                }
            }
        }
    }
}

/// `Bᵀ·d·B` of a 4 × 4 patch `d[row][col]`, in ξ order (row-major).
#[inline(always)]
fn input_tile<T: Lane>(d: [[T; 4]; 4]) -> [T; XI] {
    // Bᵀ rows: (1, 0, −1, 0), (0, 1, 1, 0), (0, −1, 1, 0), (0, 1, 0, −1).
    let bt = |a: [T; 4]| {
        [
            a[0].sub(a[2]),
            a[1].add(a[2]),
            a[2].sub(a[1]),
            a[1].sub(a[3]),
        ]
    };
    let cols: [[T; 4]; 4] = std::array::from_fn(|j| bt([d[0][j], d[1][j], d[2][j], d[3][j]]));
    // cols[j][i] = (Bᵀ·d)[i][j]; now the same on every row.
    let mut v = [d[0][0]; XI];
    for i in 0..4 {
        let r = bt([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
        v[i * 4..i * 4 + 4].copy_from_slice(&r);
    }
    v
}

/// `Aᵀ·m·A` of a 4 × 4 product tile `m` (ξ order): the 2 × 2 outputs, row-major.
#[inline(always)]
fn output_tile<T: Lane>(m: &[T; XI]) -> [T; 4] {
    // Aᵀ rows: (1, 1, 1, 0), (0, 1, −1, −1).
    let at = |a: [T; 4]| [a[0].add(a[1]).add(a[2]), a[1].sub(a[2]).sub(a[3])];
    let s: [[T; 2]; 4] = std::array::from_fn(|j| at([m[j], m[4 + j], m[8 + j], m[12 + j]]));
    let r0 = at([s[0][0], s[1][0], s[2][0], s[3][0]]);
    let r1 = at([s[0][1], s[1][1], s[2][1], s[3][1]]);
    [r0[0], r0[1], r1[0], r1[1]]
}

#[cfg(target_arch = "x86_64")]
std::thread_local! {
    /// This thread's padded input rows, transformed input, one or two blocks' products and
    /// two pixel-major output rows.
    static BUFS: std::cell::RefCell<[Vec<f32>; 4]> =
        const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}

#[cfg(target_arch = "x86_64")]
/// Forward convolution (see [`enabled`] for which): `x` is N×C×H×W, `w` is Cout×C×3×3;
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
    use super::direct::{
        conv_pixels, conv_pixels_pair, fill_slab, reserve, split_work, PixMap, Work,
    };
    let (cin, cout) = (g.c_in, g.c_out);
    let u = super::packed::packed(super::packed::Form::Winograd, w, w_stamp, || {
        transform_weights(w, cin, cout)
    });
    let biasv: Vec<f32> = bias.map_or_else(|| vec![0.0; cout], |b| b.to_vec());
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let Work { bands, per, tasks } = split_work(th, g.n, cout / OB, min_tasks, |rows| {
        XI * cin * rows * tw <= V_BUDGET
    });
    let rows = bands.iter().map(|b| b.1 - b.0).max().unwrap_or(1);
    // Tiles per band (the transformed input's row length), padded row length (two columns
    // past the last tile) and floats per padded channel.
    let tmax = rows * tw;
    let wp = (g.w + 2 * g.p.padding.1).max(2 * tw + 2);
    let plane = (2 * rows + 2) * wp;
    // Product row (ξ, c) of the transformed input starts at (ξ·C + c)·tmax.
    let offs: Vec<isize> = (0..XI * cin).map(|i| (i * tmax) as isize).collect();
    let ohw = g.oh * g.ow;
    let mut out = super::buffer::alloc(g.n * cout * ohw);
    // Tasks write disjoint output rows through it (see the store below).
    let outp = super::conv::SharedMut(out.as_mut_ptr());
    static ZERO: [f32; OB] = [0.0; OB];
    crate::threads::par_for(tasks.len(), |ti| {
        let (n, band, part) = tasks[ti];
        let (ty0, ty1) = bands[band];
        let (b0, b1) = (part * per, ((part + 1) * per).min(cout / OB));
        let tiles = (ty1 - ty0) * tw;
        BUFS.with(|bufs| {
            let [slab, v, m, rowbuf] = &mut *bufs.borrow_mut();
            reserve(v, XI * cin * tmax);
            // With AVX-512, two blocks per product pass (one input broadcast feeds both),
            // their chunk of weights halved to keep the pair's share of L1; `m` holds the
            // pair's products (read once: the buffer's size and the passes must agree);
            // and the input transform reads the image itself (no padded copy).
            let wide = super::simd::has_avx512();
            reserve(m, (1 + usize::from(wide)) * XI * tmax * OB);
            reserve(rowbuf, 2 * 2 * tw * OB);
            let geo = TileGeom {
                cin,
                plane,
                wp,
                rows: ty1 - ty0,
                tw,
                tmax,
            };
            if wide {
                let src = Image {
                    ptr: x[n * cin * g.h * g.w..].as_ptr(),
                    plane: g.h * g.w,
                    h: g.h,
                    w: g.w,
                    row0: (2 * ty0) as isize - g.p.padding.0 as isize,
                    pw: g.p.padding.1,
                };
                // SAFETY: the CPU has AVX-512 F; image n's planes are in x; v holds
                // 16·C·tmax floats; the tiles read at most 2·tw + 2 columns.
                unsafe { input_transform_512(src, geo, v) };
            } else {
                reserve(slab, cin * plane);
                fill_slab(x, g, n, (2 * ty0, 2 * ty1), wp, plane, slab);
                // SAFETY: the CPU has AVX2 and FMA (`enabled`); the slab holds 2·rows + 2
                // padded rows of wp ≥ 2·tw + 2 floats per channel, v holds 16·C·tmax
                // floats.
                unsafe { input_transform(slab, geo, v) };
            }
            let pix = PixMap {
                ow: tmax,
                row_step: 0,
                sw: 1,
            };
            let (m0, m1) = m.split_at_mut(XI * tmax * OB);
            let mut b = b0;
            while b < b1 {
                let two = wide && b + 1 < b1;
                let ub = &u[b * XI * cin * OB..];
                let chunk = if two { CHUNK / 2 } else { CHUNK };
                for xi in 0..XI {
                    for c0 in (0..cin).step_by(chunk) {
                        let c1 = (c0 + chunk).min(cin);
                        let row = xi * cin;
                        let at = xi * tmax * OB;
                        // SAFETY: as above; tile q of row (ξ, c) is v[(ξ·C + c)·tmax + q]
                        // with q < tiles ≤ tmax; m0 and m1 hold tmax·16 floats per ξ; a
                        // pair's second block's weights are 16·C·16 floats past the
                        // first's; the CPU has AVX-512 F for pairs (`has_avx512`).
                        unsafe {
                            if two {
                                conv_pixels_pair(
                                    v,
                                    pix,
                                    (0, tiles),
                                    &ub[(row + c0) * OB..],
                                    XI * cin * OB,
                                    &offs[row + c0..row + c1],
                                    (c0 == 0).then_some([&ZERO, &ZERO]),
                                    [&mut m0[at..], &mut m1[at..]],
                                )
                            } else {
                                conv_pixels(
                                    v,
                                    pix,
                                    (0, tiles),
                                    &ub[(row + c0) * OB..(row + c1) * OB],
                                    &offs[row + c0..row + c1],
                                    (c0 == 0).then_some(&ZERO),
                                    &mut m0[at..],
                                )
                            }
                        };
                    }
                }
                let done = if two { 2 } else { 1 };
                for (i, mi) in [&*m0, &*m1].into_iter().take(done).enumerate() {
                    let bb: &[f32; OB] = biasv[(b + i) * OB..(b + i + 1) * OB]
                        .try_into()
                        .expect("a block of 16 biases");
                    // SAFETY: output rows 2·ty0.. (below oh) of channels (b + i)·16.. of
                    // image n are this task's alone; the CPU has AVX2.
                    unsafe {
                        let at = (n * cout + (b + i) * OB) * ohw;
                        let dst = outp.get().add(at);
                        let out = (dst, at);
                        output_transform(mi, geo, bb, (g.oh, g.ow, ty0), epi, rowbuf, out);
                    }
                }
                b += done;
            }
        });
    });
    out
}

/// The tile layout of one task.
#[derive(Clone, Copy)]
struct TileGeom {
    /// Input channels.
    cin: usize,
    /// Floats per padded channel in the slab.
    plane: usize,
    /// Padded row length.
    wp: usize,
    /// Tile rows in the band.
    rows: usize,
    /// Tiles per row.
    tw: usize,
    /// Tiles per transformed row (the band capacity).
    tmax: usize,
}

#[cfg(target_arch = "x86_64")]
/// `v[(ξ·C + c)·tmax + r·tw + t] = (Bᵀ·d·B)[ξ]` of the 4 × 4 patch at padded rows 2r.., columns
/// 2t.. of channel c; 8 tiles per vector, the row's remainder one by one.
///
/// # Safety
/// The CPU has AVX2; the slab holds `cin` planes of `2·rows + 2` rows of `wp ≥ 2·tw + 2`
/// floats; `v` holds `16·cin·tmax` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn input_transform(slab: &[f32], geo: TileGeom, v: &mut [f32]) {
    use std::arch::x86_64::*;
    let TileGeom {
        cin,
        plane,
        wp,
        rows,
        tw,
        tmax,
    } = geo;
    debug_assert!(slab.len() >= cin * plane && v.len() >= XI * cin * tmax);
    debug_assert!(wp >= 2 * tw + 2 && plane >= (2 * rows + 2) * wp);
    let xs = cin * tmax;
    // Even and odd elements of 16 consecutive floats at p.
    let split = |p: *const f32| {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        (
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                even,
            ))),
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                odd,
            ))),
        )
    };
    for c in 0..cin {
        for r in 0..rows {
            let base = slab.as_ptr().add(c * plane + 2 * r * wp);
            let vt = v.as_mut_ptr().add(c * tmax + r * tw);
            let vector = |t: usize| {
                let d: [[__m256; 4]; 4] = std::array::from_fn(|i| {
                    let p = base.add(i * wp + 2 * t);
                    let ((e0, o0), (e1, o1)) = (split(p), split(p.add(2)));
                    [e0, o0, e1, o1]
                });
                for (xi, val) in input_tile(d).into_iter().enumerate() {
                    _mm256_storeu_ps(vt.add(xi * xs + t), val);
                }
            };
            let mut t = 0;
            while t + 8 <= tw {
                vector(t);
                t += 8;
            }
            if t < tw && tw >= 8 {
                // The remainder as the row's last 8 tiles (some computed twice, same values).
                vector(tw - 8);
                continue;
            }
            for t in t..tw {
                let d: [[f32; 4]; 4] =
                    std::array::from_fn(|i| std::array::from_fn(|j| *base.add(i * wp + 2 * t + j)));
                for (xi, val) in input_tile(d).into_iter().enumerate() {
                    *vt.add(xi * xs + t) = val;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// Turns one block's products `m[(ξ·tmax + t)·16 + o]` into output rows: per tile row, two
/// pixel-major rows (`Aᵀ·m·A` + bias, 16 channels at a time) stored to NCHW at `dst` (the
/// block's first channel of the image; `(oh, ow, ty0)`: output size and the band's first tile
/// row). A last odd row or column is computed and dropped.
///
/// # Safety
/// The CPU has AVX2; `m` holds `16·tmax·16` floats, `rowbuf` `4·tw·16`; `dst` is valid for
/// writes at `o·oh·ow + y·ow + x` for `o < 16` and the band's rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn output_transform(
    m: &[f32],
    geo: TileGeom,
    bias: &[f32; OB],
    (oh, ow, ty0): (usize, usize, usize),
    epi: super::Epilogue<'_>,
    rowbuf: &mut [f32],
    (dst, at): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    let TileGeom { rows, tw, tmax, .. } = geo;
    debug_assert!(m.len() >= XI * tmax * OB && rowbuf.len() >= 4 * tw * OB);
    let (r0, r1) = rowbuf.split_at_mut(2 * tw * OB);
    let ohw = oh * ow;
    for r in 0..rows {
        for t in 0..tw {
            let q = r * tw + t;
            for h in 0..2 {
                let mv: [__m256; XI] = std::array::from_fn(|xi| {
                    _mm256_loadu_ps(m.as_ptr().add((xi * tmax + q) * OB + h * 8))
                });
                let bv = _mm256_loadu_ps(bias.as_ptr().add(h * 8));
                let y = output_tile(&mv);
                let at = |row: &mut [f32], j: usize| row.as_mut_ptr().add((2 * t + j) * OB + h * 8);
                _mm256_storeu_ps(at(r0, 0), _mm256_add_ps(y[0], bv));
                _mm256_storeu_ps(at(r0, 1), _mm256_add_ps(y[1], bv));
                _mm256_storeu_ps(at(r1, 0), _mm256_add_ps(y[2], bv));
                _mm256_storeu_ps(at(r1, 1), _mm256_add_ps(y[3], bv));
            }
        }
        let oy = 2 * (ty0 + r);
        for (j, row) in [(0, &mut *r0), (1, &mut *r1)] {
            if oy + j < oh {
                let y = (oy + j) * ow;
                super::direct::store_tile_with(epi, row, ow, (dst.add(y), at + y), ohw);
            }
        }
    }
}
