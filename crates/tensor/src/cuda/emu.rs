//! The CPU side of the CUDA emulator: the C-compiled kernels' dispatcher (built by `build.rs`)
//! and a reference column-major GEMM standing in for cuBLAS (f32, and bf16 inputs with f32
//! accumulation), taking the very arguments the backend passes to cuBLAS.

use std::ffi::{c_char, c_int, c_void};

extern "C" {
    /// Runs kernel `name` once (one block of one thread) with CUDA-style parameters;
    /// returns -1 for an unknown kernel.
    pub(crate) fn yf_emu_launch(name: *const c_char, args: *mut *mut c_void) -> c_int;
}

/// An element of a GEMM operand, as f32.
pub(crate) trait Elem: Copy {
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

/// bf16 as its 16 high bits.
impl Elem for u16 {
    fn to_f32(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
}

/// cuBLAS `gemmStridedBatched` semantics, column-major: for each batch `i`,
/// `C_i = alpha·op(A_i)·op(B_i) + beta·C_i` with `op(A)` m×k, `op(B)` k×n, `C` m×n.
///
/// # Safety
/// The pointers must cover every element the sizes, leading dimensions and strides address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided_batched<T: Elem>(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const T,
    lda: usize,
    stride_a: usize,
    b: *const T,
    ldb: usize,
    stride_b: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    stride_c: usize,
    batch: usize,
) {
    for bi in 0..batch {
        let (ab, bb, cb) = (
            a.add(bi * stride_a),
            b.add(bi * stride_b),
            c.add(bi * stride_c),
        );
        for j in 0..n {
            for i in 0..m {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if trans_a {
                        *ab.add(p + i * lda)
                    } else {
                        *ab.add(i + p * lda)
                    };
                    let bv = if trans_b {
                        *bb.add(j + p * ldb)
                    } else {
                        *bb.add(p + j * ldb)
                    };
                    s += av.to_f32() as f64 * bv.to_f32() as f64;
                }
                let out = cb.add(i + j * ldc);
                let prev = if beta == 0.0 { 0.0 } else { beta * *out };
                *out = alpha * s as f32 + prev;
            }
        }
    }
}
