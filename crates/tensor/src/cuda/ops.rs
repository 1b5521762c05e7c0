//! Every storage op on CUDA buffers: kernels from `kernels.cu` and GEMMs from cuBLAS.
//! Each function mirrors the CPU kernel of the same name in `crate::cpu`.

use std::sync::Arc;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use super::backend::{cfg, cfg_blocks, launch, CudaBuf, Gpu};
use super::cudnn::Pass;
use crate::cpu::coalesce;
use crate::op::{BinaryOp, ConvGeom, Pool2dParams, ReduceOp, UnaryOp};
use crate::shape::{broadcast_strides, numel, strides};
use crate::{Error, Result};

const MAXD: usize = 8;
type Dims = [i64; MAXD];

fn dims(gpu: &Gpu, v: &[usize]) -> Result<Dims> {
    if v.len() > MAXD {
        return Err(Error::InvalidArgument {
            op: "cuda",
            detail: format!(
                "{} dimensions after merging contiguous axes on {}; the CUDA kernels take at most {MAXD}",
                v.len(),
                gpu.device()
            ),
        });
    }
    let mut d = [0i64; MAXD];
    for (o, &x) in d.iter_mut().zip(v) {
        *o = x as i64;
    }
    Ok(d)
}

fn ptr_or_null(b: Option<&CudaBuf>) -> u64 {
    b.map_or(0, |b| b.ptr)
}

pub(crate) fn fill(gpu: &Arc<Gpu>, n: usize, v: f32) -> Result<CudaBuf> {
    let y = gpu.alloc(n)?;
    if n > 0 {
        launch!(gpu, "fill", cfg(n), y.ptr, v, n as i64);
    }
    Ok(y)
}

pub(crate) fn unary(x: &CudaBuf, op: UnaryOp) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let y = gpu.alloc(x.len)?;
    let (code, a, b) = op.code();
    if x.len > 0 {
        launch!(
            gpu,
            "unary_fwd",
            cfg(x.len),
            code as i32,
            a,
            b,
            x.ptr,
            y.ptr,
            x.len as i64
        );
    }
    Ok(y)
}

pub(crate) fn unary_backward(x: &CudaBuf, op: UnaryOp, dy: &CudaBuf) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let dx = gpu.alloc(x.len)?;
    let (code, a, b) = op.code();
    if x.len > 0 {
        launch!(
            gpu,
            "unary_bwd",
            cfg(x.len),
            code as i32,
            a,
            b,
            x.ptr,
            dy.ptr,
            dx.ptr,
            x.len as i64
        );
    }
    Ok(dx)
}

fn binary_code(op: BinaryOp) -> i32 {
    use BinaryOp::*;
    match op {
        Add => 0,
        Sub => 1,
        Mul => 2,
        Div => 3,
        Maximum => 4,
        Minimum => 5,
        Pow => 6,
        Eq => 7,
        Gt => 8,
        Ge => 9,
        Lt => 10,
        Le => 11,
    }
}

pub(crate) fn binary(
    op: BinaryOp,
    a: &CudaBuf,
    a_shape: &[usize],
    b: &CudaBuf,
    b_shape: &[usize],
    out: &[usize],
) -> Result<CudaBuf> {
    let gpu = &a.gpu;
    let n = numel(out);
    let y = gpu.alloc(n)?;
    if n == 0 {
        return Ok(y);
    }
    let code = binary_code(op);
    if a_shape == b_shape {
        launch!(
            gpu,
            "binary_same",
            cfg(n),
            code,
            a.ptr,
            b.ptr,
            y.ptr,
            n as i64
        );
    } else {
        let sa = broadcast_strides(a_shape, out);
        let sb = broadcast_strides(b_shape, out);
        let (cs, st) = coalesce(out, &[sa, sb]);
        let (d, da, db) = (dims(gpu, &cs)?, dims(gpu, &st[0])?, dims(gpu, &st[1])?);
        launch!(
            gpu,
            "binary_bcast",
            cfg(n),
            code,
            a.ptr,
            b.ptr,
            y.ptr,
            n as i64,
            cs.len() as i32,
            d,
            da,
            db
        );
    }
    Ok(y)
}

pub(crate) fn where_cond(c: &CudaBuf, a: &CudaBuf, b: &CudaBuf) -> Result<CudaBuf> {
    let gpu = &c.gpu;
    let y = gpu.alloc(c.len)?;
    if c.len > 0 {
        launch!(
            gpu,
            "where_cond",
            cfg(c.len),
            c.ptr,
            a.ptr,
            b.ptr,
            y.ptr,
            c.len as i64
        );
    }
    Ok(y)
}

/// `y[by + Σ i·sy] = x[bx + Σ i·sx]` over the box `shape` (axes merged where possible).
#[allow(clippy::too_many_arguments)]
fn copy_nd(
    gpu: &Arc<Gpu>,
    x: u64,
    y: u64,
    shape: &[usize],
    sx: Vec<usize>,
    bx: usize,
    sy: Vec<usize>,
    by: usize,
) -> Result<()> {
    let n = numel(shape);
    if n == 0 {
        return Ok(());
    }
    let (cs, st) = coalesce(shape, &[sx, sy]);
    let (d, dx, dy) = (dims(gpu, &cs)?, dims(gpu, &st[0])?, dims(gpu, &st[1])?);
    launch!(
        gpu,
        "copy_nd",
        cfg(n),
        x,
        y,
        n as i64,
        cs.len() as i32,
        d,
        dx,
        bx as i64,
        dy,
        by as i64
    );
    Ok(())
}

pub(crate) fn broadcast_to(x: &CudaBuf, shape: &[usize], target: &[usize]) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let y = gpu.alloc(numel(target))?;
    copy_nd(
        gpu,
        x.ptr,
        y.ptr,
        target,
        broadcast_strides(shape, target),
        0,
        strides(target),
        0,
    )?;
    Ok(y)
}

pub(crate) fn permute(x: &CudaBuf, shape: &[usize], perm: &[usize]) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let sx = strides(shape);
    let src: Vec<usize> = perm.iter().map(|&p| sx[p]).collect();
    let y = gpu.alloc(x.len)?;
    copy_nd(
        gpu,
        x.ptr,
        y.ptr,
        &out_shape,
        src,
        0,
        strides(&out_shape),
        0,
    )?;
    Ok(y)
}

fn base(start: &[usize], st: &[usize]) -> usize {
    start.iter().zip(st).map(|(a, b)| a * b).sum()
}

pub(crate) fn crop(
    x: &CudaBuf,
    shape: &[usize],
    start: &[usize],
    region: &[usize],
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let y = gpu.alloc(numel(region))?;
    let ss = strides(shape);
    let bx = base(start, &ss);
    copy_nd(gpu, x.ptr, y.ptr, region, ss, bx, strides(region), 0)?;
    Ok(y)
}

pub(crate) fn assemble(
    gpu: &Arc<Gpu>,
    parts: &[(&CudaBuf, &[usize], Vec<usize>)],
    dst_shape: &[usize],
    fill_value: Option<f32>,
) -> Result<CudaBuf> {
    let n = numel(dst_shape);
    let y = match fill_value {
        Some(v) => fill(gpu, n, v)?,
        None => gpu.alloc(n)?,
    };
    let ds = strides(dst_shape);
    for (p, shape, start) in parts {
        copy_nd(
            gpu,
            p.ptr,
            y.ptr,
            shape,
            strides(shape),
            0,
            ds.clone(),
            base(start, &ds),
        )?;
    }
    Ok(y)
}

pub(crate) fn reduce(
    op: ReduceOp,
    x: &CudaBuf,
    shape: &[usize],
    axes: &[usize],
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let sx = strides(shape);
    let (mut oshape, mut ost, mut rshape, mut rst) = (vec![], vec![], vec![], vec![]);
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            rshape.push(d);
            rst.push(sx[i]);
        } else {
            oshape.push(d);
            ost.push(sx[i]);
        }
    }
    let nout = numel(&oshape);
    let rlen = numel(&rshape);
    let y = gpu.alloc(nout)?;
    if nout == 0 {
        return Ok(y);
    }
    let (oc, os) = coalesce(&oshape, &[ost.clone(), ost]);
    let (rc, rs) = coalesce(&rshape, &[rst.clone(), rst]);
    let code: i32 = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    };
    let (od, ods, rd, rds) = (
        dims(gpu, &oc)?,
        dims(gpu, &os[0])?,
        dims(gpu, &rc)?,
        dims(gpu, &rs[0])?,
    );
    if rlen <= 64 {
        launch!(
            gpu,
            "reduce_thread",
            cfg(nout),
            code,
            x.ptr,
            y.ptr,
            nout as i64,
            oc.len() as i32,
            od,
            ods,
            rlen as i64,
            rc.len() as i32,
            rd,
            rds
        );
    } else {
        launch!(
            gpu,
            "reduce_block",
            cfg_blocks(nout),
            code,
            x.ptr,
            y.ptr,
            nout as i64,
            oc.len() as i32,
            od,
            ods,
            rlen as i64,
            rc.len() as i32,
            rd,
            rds
        );
    }
    Ok(y)
}

/// Row-major `C[b] = op(A[b])·op(B[b])` through cuBLAS (column-major: `Cᵀ = op(B)ᵀ·op(A)ᵀ`).
/// `sa`/`sb`/`sc` are the batch strides in floats (0 repeats one matrix); `beta` 1 accumulates.
/// With mixed precision on, A and B are rounded to bf16 and the product accumulates in f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    gpu: &Arc<Gpu>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: u64,
    ta: bool,
    sa: usize,
    b: u64,
    tb: bool,
    sb: usize,
    c: u64,
    sc: usize,
    beta: f32,
) -> Result<()> {
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let big = |v: usize| v > i32::MAX as usize;
    if big(m) || big(n) || big(k) || big(batch) {
        return Err(Error::InvalidArgument {
            op: "matmul",
            detail: format!("{m}×{k}·{k}×{n} (batch {batch}) exceeds cuBLAS's 32-bit sizes"),
        });
    }
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
    let alpha = 1.0f32;
    if super::mixed_precision() {
        // bf16 copies of both operands (the whole batch span).
        let span = |s: usize, one: usize| if s == 0 { one } else { s * (batch - 1) + one };
        let (na, nb) = (span(sa, m * k), span(sb, k * n));
        let (pa, ba) = gpu.alloc_bytes(na * 2)?;
        let (pb, bb) = gpu.alloc_bytes(nb * 2)?;
        let res = (|| {
            launch!(gpu, "to_bf16", cfg(na), a, pa, na as i64);
            launch!(gpu, "to_bf16", cfg(nb), b, pb, nb as i64);
            let status = gpu.with_blas(|h| match h {
                // SAFETY: device pointers sized above; host scalars outlive the call.
                Some(h) => unsafe {
                    cudarc::cublas::result::gemm_strided_batched_ex(
                        h,
                        op(tb),
                        op(ta),
                        n as i32,
                        m as i32,
                        k as i32,
                        &alpha as *const f32 as *const _,
                        pb as *const _,
                        cudaDataType::CUDA_R_16BF,
                        ldb as i32,
                        sb as i64,
                        pa as *const _,
                        cudaDataType::CUDA_R_16BF,
                        lda as i32,
                        sa as i64,
                        &beta as *const f32 as *const _,
                        c as *mut _,
                        cudaDataType::CUDA_R_32F,
                        n as i32,
                        sc as i64,
                        batch as i32,
                        cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                    .map_err(|e| format!("{e:?}"))
                },
                // SAFETY: the same operands, read as cuBLAS would.
                None => unsafe {
                    super::emu::gemm_strided_batched(
                        tb,
                        ta,
                        n,
                        m,
                        k,
                        alpha,
                        pb as *const u16,
                        ldb,
                        sb,
                        pa as *const u16,
                        lda,
                        sa,
                        beta,
                        c as *mut f32,
                        n,
                        sc,
                        batch,
                    );
                    Ok(())
                },
            })?;
            status.map_err(|e| gpu.err(format!("cuBLAS bf16 GEMM: {e}")))
        })();
        gpu.release(pa, ba);
        gpu.release(pb, bb);
        return res;
    }
    let status = gpu.with_blas(|h| match h {
        // SAFETY: device pointers of the sizes the strides and shapes describe.
        Some(h) => unsafe {
            cudarc::cublas::result::sgemm_strided_batched(
                h,
                op(tb),
                op(ta),
                n as i32,
                m as i32,
                k as i32,
                &alpha,
                b as *const f32,
                ldb as i32,
                sb as i64,
                a as *const f32,
                lda as i32,
                sa as i64,
                &beta,
                c as *mut f32,
                n as i32,
                sc as i64,
                batch as i32,
            )
            .map_err(|e| format!("{e:?}"))
        },
        // SAFETY: the same operands, read as cuBLAS would.
        None => unsafe {
            super::emu::gemm_strided_batched(
                tb,
                ta,
                n,
                m,
                k,
                alpha,
                b as *const f32,
                ldb,
                sb,
                a as *const f32,
                lda,
                sa,
                beta,
                c as *mut f32,
                n,
                sc,
                batch,
            );
            Ok(())
        },
    })?;
    status.map_err(|e| gpu.err(format!("cuBLAS SGEMM: {e}")))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    a: &CudaBuf,
    b: &CudaBuf,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Result<CudaBuf> {
    let gpu = &a.gpu;
    let c = gpu.alloc(batch * m * n)?;
    if k == 0 {
        return fill(gpu, batch * m * n, 0.0);
    }
    gemm(
        gpu,
        batch,
        m,
        k,
        n,
        a.ptr,
        ta,
        m * k,
        b.ptr,
        tb,
        k * n,
        c.ptr,
        m * n,
        0.0,
    )?;
    Ok(c)
}

pub(crate) fn index_select(
    x: &CudaBuf,
    outer: usize,
    size: usize,
    inner: usize,
    idx: &[usize],
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let n = outer * idx.len() * inner;
    let y = gpu.alloc(n)?;
    if n > 0 {
        let ib = gpu.upload_index(idx)?;
        launch!(
            gpu,
            "index_select",
            cfg(n),
            x.ptr,
            y.ptr,
            outer as i64,
            size as i64,
            inner as i64,
            ib.ptr,
            idx.len() as i64
        );
        gpu.synchronize()?;
    }
    Ok(y)
}

pub(crate) fn index_add(
    src: &CudaBuf,
    outer: usize,
    size: usize,
    inner: usize,
    idx: &[usize],
) -> Result<CudaBuf> {
    let gpu = &src.gpu;
    let y = fill(gpu, outer * size * inner, 0.0)?;
    let n = outer * idx.len() * inner;
    if n > 0 {
        let ib = gpu.upload_index(idx)?;
        launch!(
            gpu,
            "index_add",
            cfg(n),
            src.ptr,
            y.ptr,
            outer as i64,
            size as i64,
            inner as i64,
            ib.ptr,
            idx.len() as i64
        );
        gpu.synchronize()?;
    }
    Ok(y)
}

pub(crate) fn gather(
    x: &CudaBuf,
    shape: &[usize],
    axis: usize,
    index: &[usize],
    index_shape: &[usize],
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let n = index.len();
    let y = gpu.alloc(n)?;
    if n > 0 {
        let ib = gpu.upload_index(index)?;
        let (is, st) = (dims(gpu, index_shape)?, dims(gpu, &strides(shape))?);
        launch!(
            gpu,
            "gather",
            cfg(n),
            x.ptr,
            y.ptr,
            ib.ptr,
            n as i64,
            index_shape.len() as i32,
            is,
            st,
            axis as i32
        );
        gpu.synchronize()?;
    }
    Ok(y)
}

pub(crate) fn scatter_add(
    base_buf: &CudaBuf,
    shape: &[usize],
    axis: usize,
    index: &[usize],
    index_shape: &[usize],
    src: &CudaBuf,
) -> Result<CudaBuf> {
    let gpu = &base_buf.gpu;
    let y = base_buf.clone();
    gpu.check()?;
    let n = index.len();
    if n > 0 {
        let ib = gpu.upload_index(index)?;
        let (is, st) = (dims(gpu, index_shape)?, dims(gpu, &strides(shape))?);
        launch!(
            gpu,
            "scatter_add",
            cfg(n),
            src.ptr,
            y.ptr,
            ib.ptr,
            n as i64,
            index_shape.len() as i32,
            is,
            st,
            axis as i32
        );
        gpu.synchronize()?;
    }
    Ok(y)
}

/// `(first image, count)` of each chunk of `nb` images out of `n`.
fn image_chunks(n: usize, nb: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(nb.max(1))
        .map(move |i0| (i0, nb.min(n - i0)))
}

/// Unrolls images `i0..i0 + cnt` into `col` (`kp` = K·P floats per image).
fn im2col(
    gpu: &Arc<Gpu>,
    x: u64,
    col: u64,
    i0: usize,
    cnt: usize,
    kp: usize,
    cg: [i32; 16],
) -> Result<()> {
    launch!(
        gpu,
        "im2col",
        cfg(cnt * kp),
        x,
        col,
        cnt as i32,
        i0 as i32,
        cg
    );
    Ok(())
}

/// Images per im2col chunk: the column buffer stays under 64 Mi floats.
fn chunk_images(g: &ConvGeom) -> usize {
    let per = (g.k() * g.oh * g.ow).max(1);
    ((64usize << 20) / per).clamp(1, g.n.max(1))
}

/// The `ConvG` kernel argument: n, c_in, h, w, c_out, groups, kh, kw, oh, ow, stride,
/// padding, dilation (rows, cols each).
fn conv_arg(g: &ConvGeom) -> [i32; 16] {
    [
        g.n,
        g.c_in,
        g.h,
        g.w,
        g.c_out,
        g.p.groups,
        g.kh,
        g.kw,
        g.oh,
        g.ow,
        g.p.stride.0,
        g.p.stride.1,
        g.p.padding.0,
        g.p.padding.1,
        g.p.dilation.0,
        g.p.dilation.1,
    ]
    .map(|v| v as i32)
}

pub(crate) fn conv2d(
    x: &CudaBuf,
    w: &CudaBuf,
    bias: Option<&CudaBuf>,
    g: &ConvGeom,
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let p = g.oh * g.ow;
    let y = gpu.alloc(g.n * g.c_out * p)?;
    if y.len == 0 {
        return Ok(y);
    }
    let cg = conv_arg(g);
    let k = g.k();
    if let Ok(dnn) = &gpu.dnn {
        super::cudnn::run(gpu, dnn, g, Pass::Forward, x.ptr, w.ptr, &y)?;
    } else if g.p.groups > 1 {
        launch!(
            gpu,
            "conv_direct",
            cfg(y.len),
            x.ptr,
            w.ptr,
            ptr_or_null(bias),
            y.ptr,
            cg
        );
        return Ok(y);
    } else if g.is_pointwise() {
        // y_i[cout × P] = W[cout × cin] · x_i[cin × P], all images in one batched call.
        gemm(
            gpu,
            g.n,
            g.c_out,
            k,
            p,
            w.ptr,
            false,
            0,
            x.ptr,
            false,
            g.c_in * p,
            y.ptr,
            g.c_out * p,
            0.0,
        )?;
    } else {
        let nb = chunk_images(g);
        let col = gpu.alloc(nb * k * p)?;
        for (i0, cnt) in image_chunks(g.n, nb) {
            im2col(gpu, x.ptr, col.ptr, i0, cnt, k * p, cg)?;
            let yc = y.ptr + (i0 * g.c_out * p * 4) as u64;
            gemm(
                gpu,
                cnt,
                g.c_out,
                k,
                p,
                w.ptr,
                false,
                0,
                col.ptr,
                false,
                k * p,
                yc,
                g.c_out * p,
                0.0,
            )?;
        }
    }
    if let Some(b) = bias {
        launch!(
            gpu,
            "add_channel_bias",
            cfg(y.len),
            y.ptr,
            b.ptr,
            y.len as i64,
            g.c_out as i32,
            p as i64
        );
    }
    Ok(y)
}

pub(crate) fn conv2d_backward_input(dy: &CudaBuf, w: &CudaBuf, g: &ConvGeom) -> Result<CudaBuf> {
    let gpu = &dy.gpu;
    let p = g.oh * g.ow;
    let n_in = g.n * g.c_in * g.h * g.w;
    if let Ok(dnn) = &gpu.dnn {
        let dx = gpu.alloc(n_in)?;
        super::cudnn::run(gpu, dnn, g, Pass::BackwardData, w.ptr, dy.ptr, &dx)?;
        return Ok(dx);
    }
    let cg = conv_arg(g);
    if g.p.groups > 1 {
        let dx = gpu.alloc(n_in)?;
        launch!(
            gpu,
            "conv_direct_bwd_input",
            cfg(n_in),
            dy.ptr,
            w.ptr,
            dx.ptr,
            cg
        );
        return Ok(dx);
    }
    let k = g.k();
    if g.is_pointwise() {
        let dx = gpu.alloc(n_in)?;
        // dx_i[cin × P] = Wᵀ[cin × cout] · dy_i[cout × P]
        gemm(
            gpu,
            g.n,
            g.c_in,
            g.c_out,
            p,
            w.ptr,
            true,
            0,
            dy.ptr,
            false,
            g.c_out * p,
            dx.ptr,
            g.c_in * p,
            0.0,
        )?;
        return Ok(dx);
    }
    let dx = fill(gpu, n_in, 0.0)?;
    let nb = chunk_images(g);
    let col = gpu.alloc(nb * k * p)?;
    for (i0, cnt) in image_chunks(g.n, nb) {
        let dyc = dy.ptr + (i0 * g.c_out * p * 4) as u64;
        gemm(
            gpu,
            cnt,
            k,
            g.c_out,
            p,
            w.ptr,
            true,
            0,
            dyc,
            false,
            g.c_out * p,
            col.ptr,
            k * p,
            0.0,
        )?;
        launch!(
            gpu,
            "col2im",
            cfg(cnt * g.c_in * g.h * g.w),
            col.ptr,
            dx.ptr,
            cnt as i32,
            i0 as i32,
            cg
        );
    }
    Ok(dx)
}

pub(crate) fn conv2d_backward_weight(x: &CudaBuf, dy: &CudaBuf, g: &ConvGeom) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let p = g.oh * g.ow;
    let k = g.k();
    let nw = g.c_out * k;
    if let Ok(dnn) = &gpu.dnn {
        let dw = gpu.alloc(nw)?;
        super::cudnn::run(gpu, dnn, g, Pass::BackwardFilter, x.ptr, dy.ptr, &dw)?;
        return Ok(dw);
    }
    let cg = conv_arg(g);
    if g.p.groups > 1 {
        let dw = gpu.alloc(nw)?;
        launch!(
            gpu,
            "conv_direct_bwd_weight",
            cfg_blocks(nw),
            x.ptr,
            dy.ptr,
            dw.ptr,
            cg
        );
        return Ok(dw);
    }
    let dw = fill(gpu, nw, 0.0)?;
    if g.is_pointwise() {
        for i in 0..g.n {
            // dW[cout × cin] += dy_i[cout × P] · x_iᵀ[P × cin]
            let dyi = dy.ptr + (i * g.c_out * p * 4) as u64;
            let xi = x.ptr + (i * g.c_in * p * 4) as u64;
            gemm(
                gpu, 1, g.c_out, p, g.c_in, dyi, false, 0, xi, true, 0, dw.ptr, 0, 1.0,
            )?;
        }
        return Ok(dw);
    }
    let nb = chunk_images(g);
    let col = gpu.alloc(nb * k * p)?;
    for (i0, cnt) in image_chunks(g.n, nb) {
        im2col(gpu, x.ptr, col.ptr, i0, cnt, k * p, cg)?;
        for j in 0..cnt {
            let dyi = dy.ptr + ((i0 + j) * g.c_out * p * 4) as u64;
            let ci = col.ptr + (j * k * p * 4) as u64;
            gemm(
                gpu, 1, g.c_out, p, k, dyi, false, 0, ci, true, 0, dw.ptr, 0, 1.0,
            )?;
        }
    }
    Ok(dw)
}

/// The `PoolG` kernel argument: h, w, oh, ow, kernel, stride, padding (rows, cols each).
fn pool_arg(h: usize, w: usize, p: &Pool2dParams) -> [i32; 10] {
    let (oh, ow) = pool_ints(h, w, p);
    [
        h as i32,
        w as i32,
        oh,
        ow,
        p.kernel.0 as i32,
        p.kernel.1 as i32,
        p.stride.0 as i32,
        p.stride.1 as i32,
        p.padding.0 as i32,
        p.padding.1 as i32,
    ]
}

fn pool_ints(h: usize, w: usize, p: &Pool2dParams) -> (i32, i32) {
    (
        crate::cpu::pool::pooled(h, p.kernel.0, p.stride.0, p.padding.0) as i32,
        crate::cpu::pool::pooled(w, p.kernel.1, p.stride.1, p.padding.1) as i32,
    )
}

pub(crate) fn max_pool2d(
    x: &CudaBuf,
    planes: usize,
    h: usize,
    w: usize,
    p: &Pool2dParams,
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let (oh, ow) = pool_ints(h, w, p);
    let n = planes * oh as usize * ow as usize;
    let y = gpu.alloc(n)?;
    let pg = pool_arg(h, w, p);
    if n > 0 {
        launch!(gpu, "max_pool_fwd", cfg(n), x.ptr, y.ptr, planes as i64, pg);
    }
    Ok(y)
}

pub(crate) fn max_pool2d_backward(
    x: &CudaBuf,
    dy: &CudaBuf,
    planes: usize,
    h: usize,
    w: usize,
    p: &Pool2dParams,
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let (oh, ow) = pool_ints(h, w, p);
    let dx = fill(gpu, planes * h * w, 0.0)?;
    let n = planes * oh as usize * ow as usize;
    let pg = pool_arg(h, w, p);
    if n > 0 {
        launch!(
            gpu,
            "max_pool_bwd",
            cfg(n),
            x.ptr,
            dy.ptr,
            dx.ptr,
            planes as i64,
            pg
        );
    }
    Ok(dx)
}

pub(crate) fn upsample_nearest(
    x: &CudaBuf,
    planes: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let n = planes * h * sh * w * sw;
    let y = gpu.alloc(n)?;
    if n > 0 {
        launch!(
            gpu,
            "upsample_fwd",
            cfg(n),
            x.ptr,
            y.ptr,
            planes as i64,
            h as i32,
            w as i32,
            sh as i32,
            sw as i32
        );
    }
    Ok(y)
}

pub(crate) fn upsample_nearest_backward(
    dy: &CudaBuf,
    planes: usize,
    h: usize,
    w: usize,
    sh: usize,
    sw: usize,
) -> Result<CudaBuf> {
    let gpu = &dy.gpu;
    let n = planes * h * w;
    let dx = gpu.alloc(n)?;
    if n > 0 {
        launch!(
            gpu,
            "upsample_bwd",
            cfg(n),
            dy.ptr,
            dx.ptr,
            planes as i64,
            h as i32,
            w as i32,
            sh as i32,
            sw as i32
        );
    }
    Ok(dx)
}

fn act_args(act: Option<UnaryOp>) -> (i32, f32, f32) {
    match act {
        None => (-1, 0.0, 0.0),
        Some(op) => {
            let (c, a, b) = op.code();
            (c as i32, a, b)
        }
    }
}

/// Training batch-norm output: (y, mean, biased var, invstd), statistics on the host.
pub(crate) type BnOut = (CudaBuf, Vec<f32>, Vec<f32>, Vec<f32>);

/// Training batch norm: (y, mean, biased var, invstd) with statistics copied to the host.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train(
    x: &CudaBuf,
    n: usize,
    c: usize,
    hw: usize,
    weight: &CudaBuf,
    bias: &CudaBuf,
    eps: f32,
    act: Option<UnaryOp>,
) -> Result<BnOut> {
    let gpu = &x.gpu;
    let stats = gpu.alloc(3 * c)?;
    launch!(
        gpu,
        "bn_stats",
        cfg_blocks(c),
        x.ptr,
        stats.ptr,
        n as i32,
        c as i32,
        hw as i64,
        eps
    );
    let y = gpu.alloc(x.len)?;
    let (code, a, b) = act_args(act);
    if x.len > 0 {
        launch!(
            gpu,
            "bn_apply",
            cfg(x.len),
            x.ptr,
            stats.ptr,
            weight.ptr,
            bias.ptr,
            y.ptr,
            x.len as i64,
            c as i32,
            hw as i64,
            code,
            a,
            b
        );
    }
    let s = gpu.download(&stats)?;
    Ok((
        y,
        s[..c].to_vec(),
        s[c..2 * c].to_vec(),
        s[2 * c..].to_vec(),
    ))
}

/// Training batch-norm backward: (dx, dweight, dbias).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_train_backward(
    x: &CudaBuf,
    dy: &CudaBuf,
    n: usize,
    c: usize,
    hw: usize,
    weight: &CudaBuf,
    mean: &[f32],
    invstd: &[f32],
    act: Option<(&CudaBuf, UnaryOp)>,
) -> Result<(CudaBuf, CudaBuf, CudaBuf)> {
    let gpu = &x.gpu;
    let mean_d = gpu.upload(mean)?;
    let invstd_d = gpu.upload(invstd)?;
    let sums = gpu.alloc(2 * c)?;
    let (code, a, b) = act_args(act.map(|(_, op)| op));
    let bias_ptr = act.map_or(0, |(b, _)| b.ptr);
    // With an activation, the activation's gradient g = dy·act'(bn(x)) goes to a buffer first.
    let g = if act.is_some() {
        Some(gpu.alloc(x.len)?)
    } else {
        None
    };
    let g_ptr = ptr_or_null(g.as_ref());
    launch!(
        gpu,
        "bn_bwd_sums",
        cfg_blocks(c),
        x.ptr,
        dy.ptr,
        mean_d.ptr,
        invstd_d.ptr,
        weight.ptr,
        bias_ptr,
        g_ptr,
        sums.ptr,
        n as i32,
        c as i32,
        hw as i64,
        code,
        a,
        b
    );
    let dx = gpu.alloc(x.len)?;
    let src_g = if act.is_some() { g_ptr } else { dy.ptr };
    if x.len > 0 {
        launch!(
            gpu,
            "bn_bwd_dx",
            cfg(x.len),
            x.ptr,
            src_g,
            mean_d.ptr,
            invstd_d.ptr,
            weight.ptr,
            sums.ptr,
            dx.ptr,
            x.len as i64,
            c as i32,
            hw as i64,
            (n * hw) as f32
        );
    }
    // dweight = Σ g·x̂ (sums[c..]), dbias = Σ g (sums[..c]).
    let dw = gpu.alloc(c)?;
    let db = gpu.alloc(c)?;
    gpu.copy(dw.ptr, sums.ptr + (c * 4) as u64, c)?;
    gpu.copy(db.ptr, sums.ptr, c)?;
    gpu.synchronize()?;
    Ok((dx, dw, db))
}

pub(crate) fn softmax(
    x: &CudaBuf,
    outer: usize,
    size: usize,
    inner: usize,
    log: bool,
) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let y = gpu.alloc(x.len)?;
    if outer * inner > 0 {
        launch!(
            gpu,
            "softmax_fwd",
            cfg(outer * inner),
            x.ptr,
            y.ptr,
            outer as i64,
            size as i64,
            inner as i64,
            log as i32
        );
    }
    Ok(y)
}

pub(crate) fn softmax_backward(
    y: &CudaBuf,
    dy: &CudaBuf,
    outer: usize,
    size: usize,
    inner: usize,
    log: bool,
) -> Result<CudaBuf> {
    let gpu = &y.gpu;
    let dx = gpu.alloc(y.len)?;
    if outer * inner > 0 {
        launch!(
            gpu,
            "softmax_bwd",
            cfg(outer * inner),
            y.ptr,
            dy.ptr,
            dx.ptr,
            outer as i64,
            size as i64,
            inner as i64,
            log as i32
        );
    }
    Ok(dx)
}

pub(crate) fn bce_with_logits(x: &CudaBuf, t: &CudaBuf, pw: Option<&CudaBuf>) -> Result<CudaBuf> {
    let gpu = &x.gpu;
    let y = gpu.alloc(x.len)?;
    if x.len > 0 {
        launch!(
            gpu,
            "bce_logits",
            cfg(x.len),
            x.ptr,
            t.ptr,
            ptr_or_null(pw),
            y.ptr,
            x.len as i64
        );
    }
    Ok(y)
}
