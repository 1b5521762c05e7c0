//! The GEMM of 1×1 convolutions (AVX2 + FMA): `out[co, p] = bias[co] + Σ_c w[co, c] · x[c, p]`
//! over a band of pixels `p`. The microkernel keeps a tile of [`NR`] output channels × [`MR`]
//! pixels in registers (three 8-float vectors of pixels per channel: 12 accumulators); the
//! band of input rows is packed once into `[pixel strip][c][MR]` (zero-padded), the weights are
//! read in place as four row streams, and the bias is the accumulators' start. On yolov5n's
//! pointwise shapes with ≥ 64 channels forward + backward took 0.87–0.96 of the `gemm` crate's
//! time (`conv_layers` with `AB=1`); with 16–32 channels forward + backward, and on 3×3
//! convolutions through im2col, it was no faster, so the input gradient of those keeps the
//! general GEMM. The forward alone takes this GEMM from 8 input channels on
//! ([`enabled_forward`]).
//!
//! With AVX-512 ([`mr`]) the tile is [`NR512`] = 8 channels × [`MR512`] = 48 pixels (24
//! accumulators of 16 floats), and whole strips read their rows in place ([`Panel::rows`]):
//! only the band's last partial strip is packed. On a 2-core Xeon with AVX-512 that made
//! 64→32 at 160 × 160 0.89 ms instead of 1.20 (packing had taken a third of the time).

/// Pixels per AVX2 microkernel tile (three AVX vectors).
pub(crate) const MR: usize = 24;
/// Pixels per AVX-512 microkernel tile (three 16-float vectors).
pub(crate) const MR512: usize = 48;

/// Pixels per tile of the microkernel this CPU runs ([`MR512`] with AVX-512, else [`MR`]):
/// the packing, the pixel bands and [`multiply`] take it together.
pub(crate) fn mr() -> usize {
    if super::simd::has_avx512() {
        MR512
    } else {
        MR
    }
}
/// Output channels per AVX2 microkernel tile.
pub(crate) const NR: usize = 4;
/// Output channels per AVX-512 microkernel tile.
pub(crate) const NR512: usize = 8;

/// Output channels per tile of the microkernel for tiles of `mr` pixels.
pub(crate) fn nr(mr: usize) -> usize {
    if mr == MR512 {
        NR512
    } else {
        NR
    }
}
/// Largest block of the reduction dimension per packed strip (48-pixel strips of 128 rows,
/// sized for L1, measured no faster; the same blocks at both widths keep the AVX2 and
/// AVX-512 sums bitwise equal).
const KC: usize = 256;

/// Reduction blocks `(k0, len)` of about equal length, none longer than [`KC`].
pub(crate) fn k_blocks(k: usize) -> Vec<(usize, usize)> {
    let nb = k.div_ceil(KC).max(1);
    let len = k.div_ceil(nb).max(1);
    (0..k)
        .step_by(len)
        .map(|k0| (k0, len.min(k - k0)))
        .collect()
}

/// Floats of packed input for `t` pixels in tiles of `mr` and a reduction block of `kcl`.
pub(crate) fn packed_len(t: usize, kcl: usize, mr: usize) -> usize {
    t.div_ceil(mr) * mr * kcl
}

/// Scatters one input row (`row[p]` for the band's pixels) into the packed layout of tiles of
/// `mr` pixels ([`MR`] or [`MR512`]) at reduction index `kk` of a block of `kcl`.
#[inline]
pub(crate) fn scatter_row(row: &[f32], kk: usize, kcl: usize, packed: &mut [f32], mr: usize) {
    if mr == MR512 {
        #[cfg(target_arch = "x86_64")]
        if super::simd::cpu_has_avx512() {
            // SAFETY: the CPU has AVX-512 F (checked above).
            return unsafe { scatter_row_512(row, kk, kcl, packed) };
        }
        scatter_row_mr::<MR512>(row, kk, kcl, packed)
    } else {
        scatter_row_mr::<MR>(row, kk, kcl, packed)
    }
}

/// [`scatter_row`] for tiles of [`MR512`] pixels, where each tile's copy is three vector
/// moves (compiled without AVX-512 it was a `memmove` call: 3 % of yolov5n's time).
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scatter_row_512(row: &[f32], kk: usize, kcl: usize, packed: &mut [f32]) {
    scatter_row_mr::<MR512>(row, kk, kcl, packed)
}

/// [`scatter_row`] for tiles of `MR` pixels.
#[inline(always)]
fn scatter_row_mr<const MR: usize>(row: &[f32], kk: usize, kcl: usize, packed: &mut [f32]) {
    let mut chunks = row.chunks_exact(MR);
    let mut s = 0;
    for ch in chunks.by_ref() {
        // Fixed-size copies, so that they compile to three vector moves, not a memcpy call.
        let src: &[f32; MR] = ch.try_into().expect("chunk of MR");
        let dst: &mut [f32; MR] = (&mut packed[s * kcl * MR + kk * MR..][..MR])
            .try_into()
            .expect("strip of MR");
        *dst = *src;
        s += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let d = &mut packed[s * kcl * MR + kk * MR..][..MR];
        d[..rest.len()].copy_from_slice(rest);
        d[rest.len()..].fill(0.0);
    }
}

/// Where one reduction block of the right-hand matrix lies: pixel strip `s`'s row `kk` (its
/// `mr` pixels) at `ptr + s·strip + kk·rs`.
#[derive(Clone, Copy)]
pub(crate) struct Panel {
    pub(crate) ptr: *const f32,
    pub(crate) strip: usize,
    pub(crate) rs: usize,
}

impl Panel {
    /// A block packed by [`scatter_row`]: strips of `kcl` rows of `mr`.
    pub(crate) fn packed(b: &[f32], kcl: usize, mr: usize) -> Self {
        Panel {
            ptr: b.as_ptr(),
            strip: kcl * mr,
            rs: mr,
        }
    }

    /// Rows read in place: row `kk` at `src + kk·rs`, strip `s` at its pixel `s·mr`.
    pub(crate) fn rows(src: *const f32, rs: usize, mr: usize) -> Self {
        Panel {
            ptr: src,
            strip: mr,
            rs,
        }
    }
}

/// Multiplies one reduction block into the output: for every pixel strip and channel block,
/// `c[co·c_rs + p] = (first ? bias[co] : c[..]) + Σ_kk w[co, k0 + kk] · b[kk, p]`.
///
/// # Safety
/// `c` must be valid for reads and writes at `co·c_rs + p` for `co < cout`, `p < t`, with no
/// other thread touching them; `w` is `cout` rows of `k` (`k0 + kcl <= k`); `b` is valid for
/// reads of `mr` floats at every strip's row, for `t.div_ceil(mr)` strips (in place, only
/// whole strips: `t` a multiple of `mr`); the CPU has AVX2 and FMA, and AVX-512 F when `mr`
/// is [`MR512`].
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn multiply(
    mr: usize,
    cout: usize,
    t: usize,
    kb: (usize, usize, usize),
    w: &[f32],
    b: Panel,
    c: *mut f32,
    c_rs: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    if mr == MR512 {
        multiply_512(cout, t, kb, w, b, c, c_rs, first, bias)
    } else {
        multiply_avx2(cout, t, kb, w, b, c, c_rs, first, bias)
    }
}

/// [`multiply`] with the AVX2 microkernel.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn multiply_avx2(
    cout: usize,
    t: usize,
    kb: (usize, usize, usize),
    w: &[f32],
    b: Panel,
    c: *mut f32,
    c_rs: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    multiply_mr::<MR, NR>(cout, t, kb, w, b, c, c_rs, first, bias, [kernel; 3])
}

/// [`multiply`] with the AVX-512 microkernel.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn multiply_512(
    cout: usize,
    t: usize,
    kb: (usize, usize, usize),
    w: &[f32],
    b: Panel,
    c: *mut f32,
    c_rs: usize,
    first: bool,
    bias: Option<&[f32]>,
) {
    let kernels: [Kernel<NR512>; 3] = [kernel512::<1>, kernel512::<2>, kernel512::<3>];
    multiply_mr::<MR512, NR512>(cout, t, kb, w, b, c, c_rs, first, bias, kernels)
}

/// One R × MR tile kernel: `(kcl, row streams, strip, strip row stride, c, c_rs, acc, init,
/// next)`; `next`, when not null, is the next strip's start, whose rows the kernel may
/// prefetch as it goes (one strip row per reduction step, at the same row stride).
type Kernel<const R: usize> = unsafe fn(
    usize,
    [*const f32; R],
    *const f32,
    usize,
    *mut f32,
    usize,
    bool,
    &[f32; R],
    *const f32,
);

/// The body of [`multiply`] for tiles of `R` channels × `MR` pixels and their microkernels:
/// `kernels[v]` computes the tile's first `(v + 1)·MR/3` pixels (a partial last strip takes
/// the narrowest that covers it; the AVX2 one always computes all `MR`).
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn multiply_mr<const MR: usize, const R: usize>(
    cout: usize,
    t: usize,
    (k, k0, kcl): (usize, usize, usize),
    w: &[f32],
    b: Panel,
    c: *mut f32,
    c_rs: usize,
    first: bool,
    bias: Option<&[f32]>,
    kernels: [Kernel<R>; 3],
) {
    let mut tile = [0.0f32; NR512 * MR512];
    let strips = t.div_ceil(MR);
    for s in 0..strips {
        let bs = b.ptr.add(s * b.strip);
        // Rows read in place lie a whole input plane apart, beyond the hardware prefetchers'
        // reach: the strip's first tile prefetches the next whole strip's rows (its other
        // tiles then find them in L1).
        let next = if b.strip == MR && s + 1 < strips && (s + 2) * MR <= t {
            bs.wrapping_add(MR)
        } else {
            std::ptr::null()
        };
        let p0 = s * MR;
        let pw = MR.min(t - p0);
        for co0 in (0..cout).step_by(R) {
            let rows = R.min(cout - co0);
            // Rows past the last channel repeat it (their results are not stored).
            let a: [*const f32; R] = std::array::from_fn(|r| {
                let co = (co0 + r).min(cout - 1);
                w[co * k + k0..co * k + k0 + kcl].as_ptr()
            });
            let mut init = [0.0f32; R];
            if let (true, Some(bias)) = (first, bias) {
                init[..rows].copy_from_slice(&bias[co0..co0 + rows]);
            }
            let cp = c.add(co0 * c_rs + p0);
            let pf = if co0 == 0 { next } else { std::ptr::null() };
            if rows == R && pw == MR {
                kernels[2](kcl, a, bs, b.rs, cp, c_rs, !first, &init, pf);
                continue;
            }
            let narrow = kernels[(pw - 1) / (MR / 3)];
            narrow(kcl, a, bs, b.rs, tile.as_mut_ptr(), MR, false, &init, pf);
            for r in 0..rows {
                let dst = std::slice::from_raw_parts_mut(cp.add(r * c_rs), pw);
                let src = &tile[r * MR..r * MR + pw];
                if first {
                    dst.copy_from_slice(src);
                } else {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// One NR × MR tile: `c[r·c_rs + j] = (acc ? c : init[r]) + Σ_k a[r][k] · b[k·b_rs + j]`.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn kernel(
    kcl: usize,
    a: [*const f32; NR],
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    acc: bool,
    init: &[f32; NR],
    _next: *const f32,
) {
    use std::arch::x86_64::*;
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c02) = (z, z, z);
    let (mut c10, mut c11, mut c12) = (z, z, z);
    let (mut c20, mut c21, mut c22) = (z, z, z);
    let (mut c30, mut c31, mut c32) = (z, z, z);
    if kcl > 0 {
        // Written out by hand: with 12 accumulators, 3 pixel vectors and a broadcast all 16
        // registers are live, and LLVM's allocation of the intrinsic form spilled an
        // accumulator per iteration (half the FMA rate).
        std::arch::asm!(
            "2:",
            "vmovups ymm12, [{b}]",
            "vmovups ymm13, [{b} + 32]",
            "vmovups ymm14, [{b} + 64]",
            "vbroadcastss ymm15, dword ptr [{a0} + {i}]",
            "vfmadd231ps ymm0, ymm15, ymm12",
            "vfmadd231ps ymm1, ymm15, ymm13",
            "vfmadd231ps ymm2, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a1} + {i}]",
            "vfmadd231ps ymm3, ymm15, ymm12",
            "vfmadd231ps ymm4, ymm15, ymm13",
            "vfmadd231ps ymm5, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a2} + {i}]",
            "vfmadd231ps ymm6, ymm15, ymm12",
            "vfmadd231ps ymm7, ymm15, ymm13",
            "vfmadd231ps ymm8, ymm15, ymm14",
            "vbroadcastss ymm15, dword ptr [{a3} + {i}]",
            "vfmadd231ps ymm9, ymm15, ymm12",
            "vfmadd231ps ymm10, ymm15, ymm13",
            "vfmadd231ps ymm11, ymm15, ymm14",
            "add {i}, 4",
            "add {b}, {bs}",
            "dec {k}",
            "jnz 2b",
            a0 = in(reg) a[0],
            a1 = in(reg) a[1],
            a2 = in(reg) a[2],
            a3 = in(reg) a[3],
            i = inout(reg) 0usize => _,
            b = inout(reg) b => _,
            bs = in(reg) b_rs * 4,
            k = inout(reg) kcl => _,
            inout("ymm0") c00,
            inout("ymm1") c01,
            inout("ymm2") c02,
            inout("ymm3") c10,
            inout("ymm4") c11,
            inout("ymm5") c12,
            inout("ymm6") c20,
            inout("ymm7") c21,
            inout("ymm8") c22,
            inout("ymm9") c30,
            inout("ymm10") c31,
            inout("ymm11") c32,
            out("ymm12") _,
            out("ymm13") _,
            out("ymm14") _,
            out("ymm15") _,
            options(nostack, readonly),
        );
    }
    let rows = [
        [c00, c01, c02],
        [c10, c11, c12],
        [c20, c21, c22],
        [c30, c31, c32],
    ];
    for (r, v) in rows.iter().enumerate() {
        let d = c.add(r * c_rs);
        for (j, v) in v.iter().enumerate() {
            let base = if acc {
                _mm256_loadu_ps(d.add(8 * j))
            } else {
                _mm256_set1_ps(init[r])
            };
            _mm256_storeu_ps(d.add(8 * j), _mm256_add_ps(base, *v));
        }
    }
}

/// The AVX-512 NR512 × (16·V) tile: `c[r·c_rs + j] = (acc ? c : init[r]) + Σ_k a[r][k] ·
/// b[k·b_rs + j]` for `j < 16·V` (V = 3, a whole [`MR512`] tile: 24 accumulators of 16 floats,
/// 3 pixel vectors and a broadcast, 28 of the 32 registers; V = 1 or 2 for a partial last
/// strip, so its padding is not multiplied).
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel512<const V: usize>(
    kcl: usize,
    a: [*const f32; NR512],
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    acc: bool,
    init: &[f32; NR512],
    next: *const f32,
) {
    use std::arch::x86_64::*;
    let r = if next.is_null() {
        products512::<V, false>(kcl, a, b, b_rs, next)
    } else {
        products512::<V, true>(kcl, a, b, b_rs, next)
    };
    for (i, row) in r.iter().enumerate() {
        let d = c.add(i * c_rs);
        for (j, v) in row.iter().enumerate() {
            let base = if acc {
                _mm512_loadu_ps(d.add(16 * j))
            } else {
                _mm512_set1_ps(init[i])
            };
            _mm512_storeu_ps(d.add(16 * j), _mm512_add_ps(base, *v));
        }
    }
}

/// [`kernel512`]'s sums; with `PF`, each step also prefetches row `kk` of the strip at `next`
/// (its 48 floats: the lines of its first and last float and the two between).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn products512<const V: usize, const PF: bool>(
    kcl: usize,
    a: [*const f32; NR512],
    b: *const f32,
    b_rs: usize,
    next: *const f32,
) -> [[std::arch::x86_64::__m512; V]; NR512] {
    use std::arch::x86_64::*;
    let mut r = [[_mm512_setzero_ps(); V]; NR512];
    let mut bp = b;
    let mut np = next;
    for kk in 0..kcl {
        if PF {
            for o in [0, 16, 32, 47] {
                _mm_prefetch::<_MM_HINT_T0>(np.wrapping_add(o) as *const i8);
            }
            np = np.wrapping_add(b_rs);
        }
        let bv: [__m512; V] = std::array::from_fn(|j| _mm512_loadu_ps(bp.add(16 * j)));
        for (row, ap) in r.iter_mut().zip(&a) {
            let s = _mm512_set1_ps(*ap.add(kk));
            for (v, bj) in row.iter_mut().zip(&bv) {
                *v = _mm512_fmadd_ps(s, *bj, *v);
            }
        }
        bp = bp.add(b_rs);
    }
    r
}

/// This GEMM for 1×1 convolutions, or the `gemm` crate's (`YOLO_CONV_GEMM=crate`).
static OWN: super::KernelSwitch = super::KernelSwitch::new("YOLO_CONV_GEMM", "crate");

/// Chooses the 1×1 convolutions' GEMM at run time (benchmarks compare both in one process):
/// this one by default, the `gemm` crate's with `YOLO_CONV_GEMM=crate`.
pub fn set_pointwise_gemm(own: bool) {
    OWN.set(own);
}

/// Whether a 1×1 convolution's input-gradient product with `m` output rows and an inner size
/// of `k` takes this path: at `k` ≤ 32 (the 16- and 32-channel stages of yolov5n) forward +
/// backward measured no faster.
pub(crate) fn enabled(m: usize, k: usize) -> bool {
    OWN.on() && m >= NR && k >= 64 && super::simd::has_avx2_fma()
}

/// Whether a 1×1 convolution's forward product takes this path: from 8 input channels on.
/// Batch 1, one thread, alternating in one process, this GEMM took 0.74–0.87 of the `gemm`
/// crate's time on yolov5n/s's 16- and 32-channel shapes (e.g. 32→32 at 160 × 160: 1.34
/// against 1.81 ms; 16→32: 0.55 against 0.86 ms).
pub(crate) fn enabled_forward(m: usize, k: usize) -> bool {
    OWN.on() && m >= NR && k >= 8 && super::simd::has_avx2_fma()
}
