//! Single-precision GEMM on strided matrices, from the `gemm` crate.
//!
//! Chosen by measurement against `matrixmultiply` (see `benches/gemm_choice.rs` and
//! `docs/benchmarks.md`): on the conv-shaped products this crate runs (M = output channels,
//! K = C·kh·kw, N = a tile of output pixels) `gemm` was the faster of the two.

/// A read-only strided matrix: element (r, c) is at `ptr[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major matrix with row stride `rs`.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn t(data: &'a [f32], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
            assert!(last < self.data.len(), "gemm operand too small");
        }
    }
}

/// `c[m×n] = (accumulate ? c : 0) + a[m×k] · b[k×n]`; `c` is row-major with row stride `c_rs`.
/// Runs on the calling thread; callers parallelise over independent tiles.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * c_rs + n <= c.len(), "gemm output too small");
    // SAFETY: `c` covers every element written (checked above) and is exclusively borrowed.
    unsafe { sgemm_raw(m, n, k, c.as_mut_ptr(), c_rs, accumulate, a, b) }
}

/// [`sgemm`] writing through a raw pointer, for tiles of a buffer that several threads fill.
///
/// # Safety
/// `c` must be valid for writes at `r·c_rs + j` for `r < m`, `j < n`, and no other thread may
/// touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
) {
    sgemm_raw_strided(m, n, k, c, c_rs, 1, accumulate, a, b)
}

/// [`sgemm_raw`] with an output column stride too (element (r, j) at `c[r·c_rs + j·c_cs]`).
///
/// # Safety
/// As [`sgemm_raw`], for the elements `r·c_rs + j·c_cs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw_strided(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
    a: MatRef<'_>,
    b: MatRef<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for j in 0..n {
                    *c.add(r * c_rs + j * c_cs) = 0.0;
                }
            }
        }
        return;
    }
    a.check(m, k);
    b.check(k, n);
    gemm::gemm(
        m,
        n,
        k,
        c,
        c_cs as isize,
        c_rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Batched `C[b] = op(A[b]) · op(B[b])` with A m×k (k×m stored if `ta`) and B k×n (n×k stored
/// if `tb`). Parallel over batches, or over row blocks of a single product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batched(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = super::buffer::alloc(batch * m * n);
    if m == 0 || n == 0 {
        return out;
    }
    let view_a = |i: usize, r0: usize| {
        let s = &a[i * m * k..(i + 1) * m * k];
        if ta {
            MatRef::t(&s[r0..], m)
        } else {
            MatRef::rows(&s[r0 * k..], k)
        }
    };
    let view_b = |i: usize| {
        let s = &b[i * k * n..(i + 1) * k * n];
        if tb {
            MatRef::t(s, k)
        } else {
            MatRef::rows(s, n)
        }
    };
    // Row blocks so that a single large product still uses every thread.
    let rows = if batch == 1 {
        m.div_ceil(2 * crate::threads::num_threads()).max(16)
    } else {
        m
    };
    crate::threads::install(|| {
        out.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| {
            c.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(blk, cb)| {
                    let r0 = blk * rows;
                    let mm = cb.len() / n;
                    sgemm(mm, n, k, cb, n, false, view_a(i, r0), view_b(i));
                })
        })
    });
    out
}
