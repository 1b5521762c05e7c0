//! Runtime dispatch to AVX2+FMA code paths (and AVX-512 for SiLU and sigmoid, 16 lanes). The
//! generic loop bodies are `#[inline(always)]` so that they are compiled again inside a
//! `#[target_feature]` function, where LLVM vectorises them 8-wide.

use crate::op::UnaryOp;
use std::sync::OnceLock;

/// Whether this CPU has AVX2 and FMA.
pub(crate) fn has_avx2_fma() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The AVX-512 kernels, or AVX2 only (`YOLO_AVX512=off`, [`set_avx512`]).
static AVX512: super::KernelSwitch = super::KernelSwitch::new("YOLO_AVX512", "off");

/// Chooses the AVX-512 microkernels at run time where the CPU has them (on by default; off,
/// the AVX2 ones, with `YOLO_AVX512=off`): tests and benchmarks compare both in one process.
pub fn set_avx512(on: bool) {
    AVX512.set(on);
}

/// Whether the AVX-512 microkernels run: the CPU has AVX-512 F (with AVX2 and FMA) and they
/// are not switched off.
pub(crate) fn has_avx512() -> bool {
    cpu_has_avx512() && AVX512.on()
}

/// Whether the CPU has AVX-512 F (with AVX2 and FMA), switched off or not.
pub fn cpu_has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `dst[i] = f(src[i])`.
#[inline(always)]
fn map1_generic<F: Fn(f32) -> f32>(src: &[f32], dst: &mut [f32], f: &F) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

/// `dst[i] = f(a[i], b[i])`.
#[inline(always)]
fn map2_generic<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], dst: &mut [f32], f: &F) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = f(x, y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map1_avx2<F: Fn(f32) -> f32>(src: &[f32], dst: &mut [f32], f: &F) {
    map1_generic(src, dst, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map2_avx2<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], dst: &mut [f32], f: &F) {
    map2_generic(a, b, dst, f)
}

/// `dst[i] = f(src[i])`, vectorised where the CPU allows (small closures only: bigger ones
/// may not inline into the AVX2 body).
#[inline(always)]
pub(crate) fn map1<F: Fn(f32) -> f32>(src: &[f32], dst: &mut [f32], f: F) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { map1_avx2(src, dst, &f) };
    }
    map1_generic(src, dst, &f)
}

/// `d[i] += s[i]`, vectorised where the CPU allows.
pub(crate) fn add_assign(d: &mut [f32], s: &[f32]) {
    #[inline(always)]
    fn generic(d: &mut [f32], s: &[f32]) {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(d: &mut [f32], s: &[f32]) {
        generic(d, s)
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { avx2(d, s) };
    }
    generic(d, s)
}

/// `dst[i] = f(a[i], b[i])`, vectorised where the CPU allows.
#[inline(always)]
pub(crate) fn map2<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], dst: &mut [f32], f: F) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { map2_avx2(a, b, dst, &f) };
    }
    map2_generic(a, b, dst, &f)
}

/// Per-variant loops: the op code is a const generic, so after inlining `UnaryOp::f` each
/// instance is one straight-line vectorisable body (closures proved not to inline here).
macro_rules! unary_kernels {
    ($($c:literal)*) => {
        #[inline(always)]
        fn fwd_generic<const C: u8>(a: f32, b: f32, x: &[f32], y: &mut [f32]) {
            let op = UnaryOp::from_code(C, a, b);
            for (d, &s) in y.iter_mut().zip(x) {
                *d = op.f(s);
            }
        }
        #[inline(always)]
        fn bwd_generic<const C: u8>(a: f32, b: f32, x: &[f32], g: &[f32], dx: &mut [f32]) {
            let op = UnaryOp::from_code(C, a, b);
            for ((d, &s), &gy) in dx.iter_mut().zip(x).zip(g) {
                *d = gy * op.df(s);
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fwd_avx2<const C: u8>(a: f32, b: f32, x: &[f32], y: &mut [f32]) {
            fwd_generic::<C>(a, b, x, y)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn bwd_avx2<const C: u8>(a: f32, b: f32, x: &[f32], g: &[f32], dx: &mut [f32]) {
            bwd_generic::<C>(a, b, x, g, dx)
        }
        /// `y = op(x)` for the op with code `c` (see `UnaryOp::code`).
        pub(crate) fn unary(c: u8, a: f32, b: f32, x: &[f32], y: &mut [f32]) {
            debug_assert!(c < UnaryOp::COUNT);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU supports the enabled features (checked above).
                unsafe {
                    let wide = has_avx512();
                    if c == SILU {
                        return if wide { silu::fwd512(x, y) } else { silu::fwd(x, y) };
                    }
                    if c == SIGMOID {
                        return if wide { silu::sigmoid512(x, y) } else { silu::sigmoid(x, y) };
                    }
                    match c {
                        $($c => fwd_avx2::<$c>(a, b, x, y),)*
                        _ => fwd_avx2::<24>(a, b, x, y),
                    }
                }
                return;
            }
            match c {
                $($c => fwd_generic::<$c>(a, b, x, y),)*
                _ => fwd_generic::<24>(a, b, x, y),
            }
        }
        /// `y = op(y)` in place for the op with code `c` (the same values as [`unary`]).
        pub(crate) fn unary_in_place(c: u8, a: f32, b: f32, y: &mut [f32]) {
            debug_assert!(c < UnaryOp::COUNT);
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU supports the enabled features (checked above).
                unsafe {
                    let wide = has_avx512();
                    match (c, wide) {
                        (SILU, true) => return silu::in_place512::<false>(y),
                        (SILU, false) => return silu::in_place::<false>(y),
                        (SIGMOID, true) => return silu::in_place512::<true>(y),
                        (SIGMOID, false) => return silu::in_place::<true>(y),
                        _ => {}
                    }
                    match c {
                        $($c => in_place_avx2::<$c>(a, b, y),)*
                        _ => in_place_avx2::<24>(a, b, y),
                    }
                }
                return;
            }
            match c {
                $($c => in_place_generic::<$c>(a, b, y),)*
                _ => in_place_generic::<24>(a, b, y),
            }
        }
        #[inline(always)]
        fn in_place_generic<const C: u8>(a: f32, b: f32, y: &mut [f32]) {
            let op = UnaryOp::from_code(C, a, b);
            for v in y.iter_mut() {
                *v = op.f(*v);
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn in_place_avx2<const C: u8>(a: f32, b: f32, y: &mut [f32]) {
            in_place_generic::<C>(a, b, y)
        }
        /// `dx = dy · op'(x)` for the op with code `c`.
        pub(crate) fn unary_backward(c: u8, a: f32, b: f32, x: &[f32], g: &[f32], dx: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the CPU supports the enabled features (checked above).
                unsafe {
                    if c == SILU {
                        return if has_avx512() { silu::bwd512(x, g, dx) } else { silu::bwd(x, g, dx) };
                    }
                    match c {
                        $($c => bwd_avx2::<$c>(a, b, x, g, dx),)*
                        _ => bwd_avx2::<24>(a, b, x, g, dx),
                    }
                }
                return;
            }
            match c {
                $($c => bwd_generic::<$c>(a, b, x, g, dx),)*
                _ => bwd_generic::<24>(a, b, x, g, dx),
            }
        }
    };
}

unary_kernels!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23);

/// `UnaryOp::Silu`'s code.
const SILU: u8 = 18;
/// `UnaryOp::Sigmoid`'s code.
const SIGMOID: u8 = 6;

/// SiLU and its derivative by hand, four vectors interleaved per step, with `math::exp`'s range
/// reduction and polynomial in FMAs and the division as a reciprocal estimate plus a Newton
/// step: about half the time of the auto-vectorised `UnaryOp::f`/`df` (0.54–0.59 against
/// 1.14–1.18 ns per element forward, 0.71 against 1.38–1.40 for the derivative; that loop cannot
/// contract into FMAs and runs one latency-bound vector at a time), within a few ulp of it.
#[cfg(target_arch = "x86_64")]
mod silu {
    use std::arch::x86_64::*;

    /// The float-vector operations the kernels need, on 8 (AVX2) or 16 (AVX-512) lanes, so
    /// that exp, SiLU and its derivative are written once. Only reached from functions with
    /// the matching `#[target_feature]`, into which these inline.
    pub(super) trait Vf: Copy {
        const LANES: usize;
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn sub(self, o: Self) -> Self;
        unsafe fn mul(self, o: Self) -> Self;
        unsafe fn min(self, o: Self) -> Self;
        unsafe fn max(self, o: Self) -> Self;
        /// `self · b + c`.
        unsafe fn fmadd(self, b: Self, c: Self) -> Self;
        /// `c − self · b`.
        unsafe fn fnmadd(self, b: Self, c: Self) -> Self;
        /// `−(self · b) − c`.
        unsafe fn fnmsub(self, b: Self, c: Self) -> Self;
        /// `y · 2^n` for integral `n`, where `t = n + magic` also holds `n` in its low
        /// mantissa bits (AVX2 builds the power from those; AVX-512 scales by `n` itself).
        unsafe fn ldexp(y: Self, n: Self, t: Self, magic: f32) -> Self;
        /// The hardware reciprocal estimate.
        unsafe fn rcp(self) -> Self;
        /// `2^n` where `t = n + MAGIC` holds `n` in its low mantissa bits.
        unsafe fn pow2(t: Self, magic: f32) -> Self;
    }

    impl Vf for __m256 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm256_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            _mm256_add_ps(self, o)
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            _mm256_sub_ps(self, o)
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            _mm256_mul_ps(self, o)
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            _mm256_min_ps(self, o)
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            _mm256_max_ps(self, o)
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn fnmadd(self, b: Self, c: Self) -> Self {
            _mm256_fnmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn fnmsub(self, b: Self, c: Self) -> Self {
            _mm256_fnmsub_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn ldexp(y: Self, _n: Self, t: Self, magic: f32) -> Self {
            y.mul(Self::pow2(t, magic))
        }
        #[inline(always)]
        unsafe fn rcp(self) -> Self {
            _mm256_rcp_ps(self)
        }
        #[inline(always)]
        unsafe fn pow2(t: Self, magic: f32) -> Self {
            let n = _mm256_sub_epi32(
                _mm256_castps_si256(t),
                _mm256_set1_epi32(magic.to_bits() as i32),
            );
            _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_add_epi32(n, _mm256_set1_epi32(127)),
                23,
            ))
        }
    }

    impl Vf for __m512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            _mm512_set1_ps(v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            _mm512_add_ps(self, o)
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            _mm512_sub_ps(self, o)
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            _mm512_mul_ps(self, o)
        }
        #[inline(always)]
        unsafe fn min(self, o: Self) -> Self {
            _mm512_min_ps(self, o)
        }
        #[inline(always)]
        unsafe fn max(self, o: Self) -> Self {
            _mm512_max_ps(self, o)
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn fnmadd(self, b: Self, c: Self) -> Self {
            _mm512_fnmadd_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn fnmsub(self, b: Self, c: Self) -> Self {
            _mm512_fnmsub_ps(self, b, c)
        }
        #[inline(always)]
        unsafe fn ldexp(y: Self, n: Self, _t: Self, _magic: f32) -> Self {
            // One instruction for the power and the multiply (n is integral and in range).
            _mm512_scalef_ps(y, n)
        }
        #[inline(always)]
        unsafe fn rcp(self) -> Self {
            _mm512_rcp14_ps(self)
        }
        #[inline(always)]
        unsafe fn pow2(t: Self, magic: f32) -> Self {
            let n = _mm512_sub_epi32(
                _mm512_castps_si512(t),
                _mm512_set1_epi32(magic.to_bits() as i32),
            );
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                n,
                _mm512_set1_epi32(127),
            )))
        }
    }

    /// `e^-x` on N vectors (`math::exp(-x)`'s range reduction and polynomial, with the
    /// negation folded into the reduction and the last two polynomial steps into FMAs), step
    /// by step across the vectors so that their dependency chains interleave (one vector at a
    /// time was latency bound). Plain loops, not closures: a closure would not inherit the
    /// caller's target features.
    #[inline(always)]
    unsafe fn exp_neg<V: Vf, const N: usize>(x: [V; N]) -> [V; N] {
        const MAGIC: f32 = 12_582_912.0;
        let ps = |v| V::splat(v);
        let z = ps(0.0);
        let (mut xc, mut t, mut n, mut r, mut p) = ([z; N], [z; N], [z; N], [z; N], [z; N]);
        for i in 0..N {
            // −x clamped to exp's range; f32::clamp's NaN rule: vmaxps/vminps return their
            // second operand on NaN.
            xc[i] = ps(87.336_55).min(ps(-88.376_26).max(x[i]));
            t[i] = xc[i].fmadd(ps(-std::f32::consts::LOG2_E), ps(MAGIC));
        }
        for i in 0..N {
            n[i] = t[i].sub(ps(MAGIC));
            // r = −x − n·ln 2, in two parts
            r[i] = n[i].fnmsub(ps(0.693_359_4), xc[i]);
            r[i] = n[i].fnmadd(ps(-2.121_944_4e-4), r[i]);
            p[i] = ps(1.987_569_1e-4);
        }
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
            1.0,
            1.0,
        ] {
            for i in 0..N {
                p[i] = p[i].fmadd(r[i], ps(c));
            }
        }
        for i in 0..N {
            p[i] = V::ldexp(p[i], n[i], t[i], MAGIC);
        }
        p
    }

    /// `1/d` from the hardware estimate and one Newton step, within 2^-22 relative: the
    /// division's throughput bounded these loops.
    #[inline(always)]
    unsafe fn recip<V: Vf>(d: V) -> V {
        let r = d.rcp();
        r.mul(d.fnmadd(r, V::splat(2.0)))
    }

    /// `x·σ(x)`, or `σ(x)` alone when `SIG`.
    #[inline(always)]
    unsafe fn fwd_v<V: Vf, const N: usize, const SIG: bool>(x: [V; N]) -> [V; N] {
        let mut e = exp_neg(x);
        for i in 0..N {
            let s = recip(V::splat(1.0).add(e[i]));
            e[i] = if SIG { s } else { x[i].mul(s) };
        }
        e
    }

    /// σ(x)·(1 + x·(1 − σ(x))), with 1 − σ(x) = e^−x·σ(x) (no cancellation when σ ≈ 1,
    /// where the reciprocal's last-bit error would otherwise be multiplied by x).
    #[inline(always)]
    unsafe fn df_v<V: Vf, const N: usize>(x: [V; N]) -> [V; N] {
        let one = V::splat(1.0);
        let mut e = exp_neg(x);
        for i in 0..N {
            let s = recip(one.add(e[i]));
            let q = e[i].mul(s);
            e[i] = s.mul(x[i].fmadd(q, one));
        }
        e
    }

    /// Four consecutive vectors from `p`.
    #[inline(always)]
    unsafe fn load4<V: Vf>(p: *const f32) -> [V; 4] {
        std::array::from_fn(|j| V::load(p.add(V::LANES * j)))
    }

    /// [`fwd_ptr`]'s whole steps of `M` vectors; returns the floats done.
    #[inline(always)]
    unsafe fn fwd_steps<V: Vf, const M: usize, const SIG: bool>(
        xp: *const f32,
        yp: *mut f32,
        n: usize,
    ) -> usize {
        let l = V::LANES;
        let mut i = 0;
        while i + M * l <= n {
            let x: [V; M] = std::array::from_fn(|j| V::load(xp.add(i + l * j)));
            let r = fwd_v::<V, M, SIG>(x);
            for (j, r) in r.iter().enumerate() {
                r.store(yp.add(i + l * j));
            }
            i += M * l;
        }
        i
    }

    /// `y = silu(x)`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fwd(x: &[f32], y: &mut [f32]) {
        fwd_any::<__m256, false>(x, y)
    }

    /// `y = σ(x)` (the same exp and reciprocal; `σ(x)` of NaN is NaN).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sigmoid(x: &[f32], y: &mut [f32]) {
        fwd_any::<__m256, true>(x, y)
    }

    /// [`fwd`] on AVX-512.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn fwd512(x: &[f32], y: &mut [f32]) {
        fwd_any::<__m512, false>(x, y)
    }

    /// [`sigmoid`] on AVX-512.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn sigmoid512(x: &[f32], y: &mut [f32]) {
        fwd_any::<__m512, true>(x, y)
    }

    /// `y = silu(y)` (or `σ(y)` when `SIG`) in place on AVX-512.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn in_place512<const SIG: bool>(y: &mut [f32]) {
        fwd_ptr::<__m512, SIG>(y.as_ptr(), y.as_mut_ptr(), y.len())
    }

    /// [`in_place512`] on AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn in_place<const SIG: bool>(y: &mut [f32]) {
        fwd_ptr::<__m256, SIG>(y.as_ptr(), y.as_mut_ptr(), y.len())
    }

    /// `y = silu(x)`, or `σ(x)` when `SIG`.
    #[inline(always)]
    unsafe fn fwd_any<V: Vf, const SIG: bool>(x: &[f32], y: &mut [f32]) {
        fwd_ptr::<V, SIG>(x.as_ptr(), y.as_mut_ptr(), x.len().min(y.len()))
    }

    /// [`fwd_any`] on `n` floats at `xp` into `yp` (the same address, or not overlapping):
    /// every vector is loaded before its result is stored.
    #[inline(always)]
    unsafe fn fwd_ptr<V: Vf, const SIG: bool>(xp: *const f32, yp: *mut f32, n: usize) {
        let l = V::LANES;
        // Eight vectors per step with AVX-512's 32 registers (with four the 19-op chains are
        // latency bound: in cache 0.266-0.278 against 0.280-0.289 ns per float, silu_speed),
        // four with AVX2's 16.
        let mut i = if l == 16 {
            fwd_steps::<V, 8, SIG>(xp, yp, n)
        } else {
            fwd_steps::<V, 4, SIG>(xp, yp, n)
        };
        while i + l <= n {
            fwd_v::<V, 1, SIG>([V::load(xp.add(i))])[0].store(yp.add(i));
            i += l;
        }
        if i < n {
            // The tail through a zero-padded vector, so every element takes the same path.
            let mut buf = [0.0f32; 16];
            std::ptr::copy_nonoverlapping(xp.add(i), buf.as_mut_ptr(), n - i);
            fwd_v::<V, 1, SIG>([V::load(buf.as_ptr())])[0].store(buf.as_mut_ptr());
            std::ptr::copy_nonoverlapping(buf.as_ptr(), yp.add(i), n - i);
        }
    }

    /// `dx = g · silu'(x)`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn bwd(x: &[f32], g: &[f32], dx: &mut [f32]) {
        bwd_any::<__m256>(x, g, dx)
    }

    /// [`bwd`] on AVX-512.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn bwd512(x: &[f32], g: &[f32], dx: &mut [f32]) {
        bwd_any::<__m512>(x, g, dx)
    }

    /// `dx = g · silu'(x)` on vectors of `V`.
    #[inline(always)]
    unsafe fn bwd_any<V: Vf>(x: &[f32], g: &[f32], dx: &mut [f32]) {
        let n = x.len().min(g.len()).min(dx.len());
        let (xp, gp, dp) = (x.as_ptr(), g.as_ptr(), dx.as_mut_ptr());
        let l = V::LANES;
        let mut i = 0;
        while i + 4 * l <= n {
            let d = df_v::<V, 4>(load4(xp.add(i)));
            for (j, d) in d.iter().enumerate() {
                V::load(gp.add(i + l * j)).mul(*d).store(dp.add(i + l * j));
            }
            i += 4 * l;
        }
        while i + l <= n {
            let d = df_v::<V, 1>([V::load(xp.add(i))])[0];
            V::load(gp.add(i)).mul(d).store(dp.add(i));
            i += l;
        }
        if i < n {
            let (mut bx, mut bg) = ([0.0f32; 16], [0.0f32; 16]);
            bx[..n - i].copy_from_slice(&x[i..n]);
            bg[..n - i].copy_from_slice(&g[i..n]);
            let r = V::load(bg.as_ptr()).mul(df_v::<V, 1>([V::load(bx.as_ptr())])[0]);
            r.store(bx.as_mut_ptr());
            dx[i..n].copy_from_slice(&bx[..n - i]);
        }
    }
}

/// Sum with 16 independent lanes (a strict left-to-right float sum cannot vectorise).
#[inline(always)]
fn lanes_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

#[inline(always)]
fn lanes_sum2(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let (cx, cy) = (x.chunks_exact(16), y.chunks_exact(16));
    let (rx, ry) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        for ((s, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *s += f(u, v);
        }
    }
    acc.iter().sum::<f32>() + rx.iter().zip(ry).map(|(&u, &v)| f(u, v)).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    lanes_sum(x, |v| v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_sq_dev_avx2(x: &[f32], m: f32) -> f32 {
    lanes_sum(x, |v| (v - m) * (v - m))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_prod_dev_avx2(g: &[f32], x: &[f32], m: f32) -> f32 {
    lanes_sum2(g, x, |a, b| a * (b - m))
}

/// `Σ x`.
pub(crate) fn sum(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { sum_avx2(x) };
    }
    lanes_sum(x, |v| v)
}

/// `Σ (x − m)²`.
pub(crate) fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { sum_sq_dev_avx2(x, m) };
    }
    lanes_sum(x, |v| (v - m) * (v - m))
}

/// `Σ g·(x − m)`.
pub(crate) fn sum_prod_dev(g: &[f32], x: &[f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { sum_prod_dev_avx2(g, x, m) };
    }
    lanes_sum2(g, x, |a, b| a * (b - m))
}

/// `d[j] = s[2·j]` (`s` holds at least `2·d.len() − 1` values): the stride-2 im2col gather.
#[inline(always)]
fn gather2_generic(d: &mut [f32], s: &[f32]) {
    let n = d.len();
    if n == 0 {
        return;
    }
    for (v, p) in d[..n - 1].iter_mut().zip(s[..2 * (n - 1)].chunks_exact(2)) {
        *v = p[0];
    }
    d[n - 1] = s[2 * (n - 1)];
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather2_avx2(d: &mut [f32], s: &[f32]) {
    gather2_generic(d, s)
}

/// `d[j] = s[2·j]` for every `j < d.len()`.
pub(crate) fn gather2(d: &mut [f32], s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { gather2_avx2(d, s) };
    }
    gather2_generic(d, s)
}

/// `dst[c·dst_rs + r] = src[r·src_rs + c]` for `r < rows`, `c < cols`: a matrix transpose
/// between strided row-major buffers (8×8 register blocks with AVX2, scalar edges).
pub(crate) fn transpose(
    src: &[f32],
    src_rs: usize,
    dst: &mut [f32],
    dst_rs: usize,
    rows: usize,
    cols: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_rs + cols <= src.len(),
        "transpose source too small"
    );
    assert!(
        (cols - 1) * dst_rs + rows <= dst.len(),
        "transpose target too small"
    );
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        for r0 in (0..r8).step_by(8) {
            for c0 in (0..c8).step_by(8) {
                // SAFETY: the CPU supports AVX2; rows r0..r0+8 and columns c0..c0+8 are in
                // range of both buffers (asserted above, r0+8 <= rows, c0+8 <= cols).
                unsafe {
                    transpose8_avx2(
                        src.as_ptr().add(r0 * src_rs + c0),
                        src_rs,
                        dst.as_mut_ptr().add(c0 * dst_rs + r0),
                        dst_rs,
                    )
                };
            }
        }
        transpose_scalar(src, src_rs, dst, dst_rs, (0, r8), (c8, cols));
        transpose_scalar(src, src_rs, dst, dst_rs, (r8, rows), (0, cols));
        return;
    }
    transpose_scalar(src, src_rs, dst, dst_rs, (0, rows), (0, cols));
}

/// The scalar transpose of rows `r.0..r.1` and columns `c.0..c.1`, in 8-row strips so the
/// source lines stay in cache while the strip's columns are written.
fn transpose_scalar(
    src: &[f32],
    src_rs: usize,
    dst: &mut [f32],
    dst_rs: usize,
    r: (usize, usize),
    c: (usize, usize),
) {
    for r0 in (r.0..r.1).step_by(8) {
        let r1 = (r0 + 8).min(r.1);
        for col in c.0..c.1 {
            let d = &mut dst[col * dst_rs + r0..col * dst_rs + r1];
            for (k, v) in d.iter_mut().enumerate() {
                *v = src[(r0 + k) * src_rs + col];
            }
        }
    }
}

/// One 8×8 block: rows of `src` (stride `srs`) become columns of `dst` (stride `drs`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn transpose8_avx2(src: *const f32, srs: usize, dst: *mut f32, drs: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * srs)));
    // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (i, v) in out.iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * drs), *v);
    }
}

#[cfg(test)]
mod transpose_tests {
    /// Every shape from 1×1 to 19×21 (all edge cases of the 8×8 blocks), with padded strides,
    /// against the definition; cells outside the written block stay untouched.
    #[test]
    fn transpose_matches_the_definition() {
        for rows in 1..20 {
            for cols in 1..22 {
                let (srs, drs) = (cols + 3, rows + 5);
                let src: Vec<f32> = (0..rows * srs).map(|i| i as f32 * 0.5 - 7.0).collect();
                let mut dst = vec![f32::NAN; cols * drs];
                super::transpose(&src, srs, &mut dst, drs, rows, cols);
                for c in 0..cols {
                    for r in 0..drs {
                        let got = dst[c * drs + r];
                        if r < rows {
                            assert_eq!(got, src[r * srs + c], "{rows}×{cols} at ({r}, {c})");
                        } else {
                            assert!(got.is_nan(), "{rows}×{cols}: padding ({r}, {c}) written");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod silu_tests {
    use crate::op::UnaryOp;

    fn silu64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    fn dsilu64(x: f64) -> f64 {
        let s = 1.0 / (1.0 + (-x).exp());
        s * (1.0 + x * (1.0 - s))
    }

    /// A ramp over ±95 and every kind of edge input: the exp clamp's edges, ±0, denormals,
    /// huge, infinite and NaN values.
    fn edge_inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0237).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            87.0,
            -87.0,
            88.4,
            -88.4,
            100.0,
            -100.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ]);
        xs
    }

    /// The vector SiLU and derivative against f64 and against the scalar `UnaryOp::f`/`df`,
    /// on every kind of input: the clamp's edges, ±0, denormals, huge, infinite and NaN
    /// values, and lengths that use the 4-vector, 1-vector and padded tails.
    #[test]
    fn silu_kernels_match_f64_and_the_scalar_definition() {
        let xs = edge_inputs();
        let g: Vec<f32> = (0..xs.len()).map(|i| 0.5 - (i % 7) as f32 * 0.3).collect();
        for len in [xs.len(), 37, 8, 5, 0] {
            let (x, gy) = (&xs[xs.len() - len..], &g[..len]);
            let mut y = vec![0.0; len];
            let mut dx = vec![0.0; len];
            super::unary(super::SILU, 0.0, 0.0, x, &mut y);
            super::unary_backward(super::SILU, 0.0, 0.0, x, gy, &mut dx);
            for i in 0..len {
                let v = x[i];
                let sy = UnaryOp::Silu.f(v);
                if v.is_nan() {
                    assert!(
                        y[i].is_nan() && dx[i].is_nan(),
                        "silu(NaN) = {}, {}",
                        y[i],
                        dx[i]
                    );
                    continue;
                }
                if v.is_infinite() || v.abs() > 1e29 {
                    // Beyond exp's clamp: the limits, x and 0 (∞·0 is NaN for the scalar
                    // definition as well), and 1·g and 0 for the derivative.
                    let (ok_y, ok_d) = if v.is_infinite() {
                        // silu(−∞) has no useful value: the reciprocal estimate gives NaN
                        // (∞·0), the scalar division −∞; neither form defines the derivative
                        // at ±∞ (∞·0 in both, grouped differently).
                        let y_ok = y[i] == sy || (v < 0.0 && y[i].is_nan());
                        (y_ok, true)
                    } else if v > 0.0 {
                        let near_v = (y[i] - v).abs() <= 1e-6 * v;
                        (near_v, (dx[i] - gy[i]).abs() <= 1e-6 * gy[i].abs())
                    } else {
                        (y[i].abs() <= 1e-8, dx[i].abs() <= 1e-8)
                    };
                    assert!(ok_y && ok_d, "silu({v}): {} {}", y[i], dx[i]);
                    continue;
                }
                let (ey, ed) = (silu64(v as f64), gy[i] as f64 * dsilu64(v as f64));
                let close = (y[i] as f64 - ey).abs() <= 4e-7 * ey.abs() + 1e-30;
                assert!(close, "silu({v}) = {} not {ey}", y[i]);
                // Error relative to |g|·(1 + |x|): the derivative crosses zero near x = −1.28,
                // and 1 − σ(x) cancels for large x (its rounding error is scaled by x).
                let dtol = 4e-7 * ed.abs() + 2e-7 * (gy[i].abs() * (1.0 + v.abs())) as f64;
                assert!(
                    (dx[i] as f64 - ed).abs() <= dtol,
                    "silu'({v}): {} not {ed}",
                    dx[i]
                );
                // Both forms round differently (on a Xeon with AVX-512 silu(−30.64) differed
                // by 2.7e-7 relative, each within 4e-7 of f64): the f64 check above is the
                // reference, this one only catches a form that drifted from the definition.
                assert!(
                    (y[i] - sy).abs() <= 5e-7 * sy.abs() + 1e-30,
                    "silu({v}): {} vs scalar {sy}",
                    y[i]
                );
            }
        }
        assert_eq!(UnaryOp::Silu.code().0, super::SILU);
    }

    /// The vector sigmoid against f64 and the scalar definition, on the same inputs.
    #[test]
    fn sigmoid_kernel_matches_f64_and_the_scalar_definition() {
        let xs = edge_inputs();
        for len in [xs.len(), 37, 8, 5, 0] {
            let x = &xs[xs.len() - len..];
            let mut y = vec![0.0; len];
            super::unary(super::SIGMOID, 0.0, 0.0, x, &mut y);
            for (&v, &got) in x.iter().zip(&y) {
                if v.is_nan() {
                    assert!(got.is_nan(), "sigmoid(NaN) = {got}");
                    continue;
                }
                let want = 1.0 / (1.0 + (-(v as f64)).exp());
                let close = (got as f64 - want).abs() <= 4e-7 * want + 1e-30;
                assert!(close, "sigmoid({v}) = {got} not {want}");
                let scalar = UnaryOp::Sigmoid.f(v);
                assert!(
                    (got - scalar).abs() <= 5e-7 * scalar + 1e-30,
                    "sigmoid({v}): {got} vs {scalar}"
                );
            }
        }
        assert_eq!(UnaryOp::Sigmoid.code().0, super::SIGMOID);
    }
}
