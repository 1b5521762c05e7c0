//! Runtime dispatch to AVX2+FMA code paths. The generic loop bodies are `#[inline(always)]` so that
//! they are compiled again inside a `#[target_feature]` function, where LLVM vectorises them 8-wide.

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

/// `dst[i] = f(src[i])`, vectorised where the CPU allows.
#[inline(always)]
pub(crate) fn map1<F: Fn(f32) -> f32>(src: &[f32], dst: &mut [f32], f: F) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports the enabled features (checked above).
        return unsafe { map1_avx2(src, dst, &f) };
    }
    map1_generic(src, dst, &f)
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
