//! CPU kernels. Each takes contiguous row-major slices plus shapes and returns a new buffer.
//! Shapes were validated by the caller (`ops`), so kernels only assert internal consistency.

pub(crate) mod buffer;
pub(crate) mod conv;
pub(crate) mod convgemm;
pub(crate) mod direct;
pub(crate) mod gemm;
pub(crate) mod norm;
pub(crate) mod packed;
pub(crate) mod pool;
pub(crate) mod simd;
pub(crate) mod winograd;

use crate::op::{BinaryOp, ReduceOp, UnaryOp};
use crate::shape::{broadcast_strides, numel, strides};
use rayon::prelude::*;

/// A kernel choice made at run time: on by default, off when the environment variable `var`
/// has the value `off_value` (read at first use), or as set by [`KernelSwitch::set`]
/// (benchmarks compare both settings in one process).
pub(crate) struct KernelSwitch {
    /// 0: not read yet, 1: on, 2: off.
    mode: std::sync::atomic::AtomicU8,
    var: &'static str,
    off_value: &'static str,
}

impl KernelSwitch {
    /// A switch read from `var` (off when it equals `off_value`).
    pub(crate) const fn new(var: &'static str, off_value: &'static str) -> Self {
        KernelSwitch {
            mode: std::sync::atomic::AtomicU8::new(0),
            var,
            off_value,
        }
    }

    /// Overrides the environment.
    pub(crate) fn set(&self, on: bool) {
        self.mode
            .store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the kernel is on.
    pub(crate) fn on(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut mode = self.mode.load(Relaxed);
        if mode == 0 {
            let off = std::env::var(self.var).is_ok_and(|v| v == self.off_value);
            mode = if off { 2 } else { 1 };
            self.mode.store(mode, Relaxed);
        }
        mode == 1
    }
}

/// Elements per parallel chunk of pointwise kernels (at most).
const CHUNK: usize = 1 << 15;
/// Fewest elements a pointwise kernel splits across threads.
const MIN_PARALLEL: usize = 1 << 13;

/// The chunk length of a pointwise kernel over `len` elements, or `None` to run it on this
/// thread: chunks of at most [`CHUNK`], as many as a multiple of the thread count and of
/// equal length (in whole cache lines), so that every thread gets the same share.
fn chunk_len(len: usize) -> Option<usize> {
    let threads = crate::threads::num_threads();
    if threads < 2 || len < MIN_PARALLEL {
        return (len > CHUNK).then_some(CHUNK);
    }
    let parts = len.div_ceil(CHUNK).next_multiple_of(threads);
    Some(len.div_ceil(parts).next_multiple_of(16))
}

/// Applies `op` to every element.
pub(crate) fn unary(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    let mut y = buffer::alloc(x.len());
    let (c, a, b) = op.code();
    par_chunks1(x, &mut y, |s, d| simd::unary(c, a, b, s, d));
    y
}

/// The CPU's L2 cache per core in bytes (Linux sysfs, cpu 0's level-2 data or unified
/// cache), or 512 KiB where that is unknown; clamped to 256 KiB..8 MiB. Read once.
pub(crate) fn l2_bytes() -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L2.get_or_init(|| {
        let read = |i: usize, f: &str| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/{f}"))
                .map(|s| s.trim().to_string())
                .ok()
        };
        (0..8)
            .find_map(|i| {
                let level = read(i, "level")?;
                let kind = read(i, "type")?;
                if level != "2" || kind == "Instruction" {
                    return None;
                }
                parse_cache_size(&read(i, "size")?)
            })
            .unwrap_or(512 << 10)
            .clamp(256 << 10, 8 << 20)
    })
}

/// A sysfs cache size (`2048K`, `2M`, or bytes) in bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

/// What a convolution applies to each finished piece of its output while it is in cache: an
/// activation, then a residual of the output's shape added (`act(conv(x)) + res`, YOLO's
/// bottleneck shortcut).
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// The activation, if any.
    pub(crate) act: Option<UnaryOp>,
    /// The residual (the whole output's shape), if any.
    pub(crate) add: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Whether there is nothing to apply.
    pub(crate) fn is_empty(&self) -> bool {
        self.act.is_none() && self.add.is_none()
    }

    /// The activation on a pixel-major tile (before its transposed store).
    pub(crate) fn tile(&self, t: &mut [f32]) {
        act_in_place(self.act, t);
    }

    /// The residual added to `rows` stored runs of `len` floats, run `r` at `dst + r·rs`,
    /// which is output element `at + r·rs`.
    ///
    /// # Safety
    /// Those floats are valid for reads and writes and this caller's alone.
    pub(crate) unsafe fn add_rows(
        &self,
        dst: *mut f32,
        at: usize,
        rows: usize,
        len: usize,
        rs: usize,
    ) {
        if let Some(res) = self.add {
            for r in 0..rows {
                let d = std::slice::from_raw_parts_mut(dst.add(r * rs), len);
                simd::add_assign(d, &res[at + r * rs..at + r * rs + len]);
            }
        }
    }

    /// Both, in place, on stored rows (the GEMM paths' output).
    ///
    /// # Safety
    /// As [`Epilogue::add_rows`].
    pub(crate) unsafe fn rows(&self, dst: *mut f32, at: usize, rows: usize, len: usize, rs: usize) {
        if self.act.is_some() {
            for r in 0..rows {
                act_in_place(
                    self.act,
                    std::slice::from_raw_parts_mut(dst.add(r * rs), len),
                );
            }
        }
        self.add_rows(dst, at, rows, len, rs);
    }
}

/// `y = op(y)` in place when there is an op: the activation a convolution applies to each
/// finished piece of its output while it is still in cache (the same values as [`unary`]).
pub(crate) fn act_in_place(op: Option<UnaryOp>, y: &mut [f32]) {
    if let Some(op) = op {
        let (c, a, b) = op.code();
        simd::unary_in_place(c, a, b, y);
    }
}

/// `dx = dy · f'(x)`, fused in one pass.
pub(crate) fn unary_backward(op: UnaryOp, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = buffer::alloc(x.len());
    let (c, a, b) = op.code();
    match chunk_len(x.len()) {
        None => simd::unary_backward(c, a, b, x, dy, &mut dx),
        Some(n) => crate::threads::install(|| {
            dx.par_chunks_mut(n)
                .zip(x.par_chunks(n).zip(dy.par_chunks(n)))
                .for_each(|(d, (s, g))| simd::unary_backward(c, a, b, s, g, d));
        }),
    }
    dx
}

fn par_chunks1(x: &[f32], y: &mut [f32], f: impl Fn(&[f32], &mut [f32]) + Sync + Send) {
    match chunk_len(x.len()) {
        None => f(x, y),
        Some(n) => par_chunks_mut(y, n, |i, d| f(&x[i * n..i * n + d.len()], d)),
    }
}

/// `f(i, chunk)` for every chunk `i` of `len` floats of `out` (the last may be shorter), in
/// the kernel pool ([`crate::threads::par_for`]).
pub(crate) fn par_chunks_mut(
    out: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let (total, len) = (out.len(), len.max(1));
    let p = conv::SharedMut(out.as_mut_ptr());
    crate::threads::par_for(total.div_ceil(len), |i| {
        let lo = i * len;
        let n = len.min(total - lo);
        // SAFETY: chunk i is out[lo..lo + n], in bounds and disjoint from every other chunk.
        f(i, unsafe {
            std::slice::from_raw_parts_mut(p.get().add(lo), n)
        })
    });
}

/// `dst[i] += src[i]` in place (gradient accumulation without a new buffer).
pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
    par_chunks1(src, dst, |s, d| simd::add_assign(d, s));
}

fn par_map2<F: Fn(f32, f32) -> f32 + Sync + Send>(a: &[f32], b: &[f32], y: &mut [f32], f: F) {
    match chunk_len(a.len()) {
        None => simd::map2(a, b, y, f),
        Some(n) => par_chunks_mut(y, n, |i, d| {
            let r = i * n..i * n + d.len();
            simd::map2(&a[r.clone()], &b[r], d, &f)
        }),
    }
}

/// Merges adjacent axes that every operand walks the same way, so inner loops run long.
/// `strides[j]` are the strides of operand j over `shape` (0 on broadcast axes).
pub(crate) fn coalesce(shape: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().unwrap() == s[i] * d);
        if mergeable {
            *out_shape.last_mut().unwrap() *= d;
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().unwrap() = s[i];
            }
        } else {
            out_shape.push(d);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[i]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for o in out_strides.iter_mut() {
            o.push(0);
        }
    }
    (out_shape, out_strides)
}

/// Offsets of row `row` (all axes but the last) for each operand.
fn row_offsets(row: usize, shape: &[usize], strides: &[Vec<usize>], out: &mut [usize]) {
    out.iter_mut().for_each(|o| *o = 0);
    let mut r = row;
    for ax in (0..shape.len() - 1).rev() {
        let i = r % shape[ax];
        r /= shape[ax];
        for (o, s) in out.iter_mut().zip(strides) {
            *o += i * s[ax];
        }
    }
}

/// `op(a, b)` with numpy broadcasting to `out_shape`.
pub(crate) fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<f32> {
    let n = numel(out_shape);
    let mut out = buffer::alloc(n);
    macro_rules! go {
        ($f:expr) => {{
            let f = $f;
            if a_shape == b_shape {
                par_map2(a, b, &mut out, f);
            } else {
                binary_bcast(a, a_shape, b, b_shape, out_shape, &mut out, f);
            }
        }};
    }
    use BinaryOp as B;
    match op {
        B::Add => go!(|x: f32, y: f32| x + y),
        B::Sub => go!(|x: f32, y: f32| x - y),
        B::Mul => go!(|x: f32, y: f32| x * y),
        B::Div => go!(|x: f32, y: f32| x / y),
        other => go!(move |x: f32, y: f32| other.f(x, y)),
    }
    out
}

fn binary_bcast<F: Fn(f32, f32) -> f32 + Sync + Send>(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
    out: &mut [f32],
    f: F,
) {
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let (shape, st) = coalesce(out_shape, &[sa, sb]);
    let inner = *shape.last().unwrap();
    let (ia, ib) = (st[0][shape.len() - 1], st[1][shape.len() - 1]);
    let body = |(row, dst): (usize, &mut [f32])| {
        let mut off = [0usize; 2];
        row_offsets(row, &shape, &st, &mut off);
        match (ia, ib) {
            (1, 1) => simd::map2(
                &a[off[0]..off[0] + inner],
                &b[off[1]..off[1] + inner],
                dst,
                &f,
            ),
            (1, 0) => {
                let y = b[off[1]];
                simd::map1(&a[off[0]..off[0] + inner], dst, |x| f(x, y))
            }
            (0, 1) => {
                let x = a[off[0]];
                simd::map1(&b[off[1]..off[1] + inner], dst, |y| f(x, y))
            }
            _ => {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = f(a[off[0] + j * ia], b[off[1] + j * ib]);
                }
            }
        }
    };
    if out.len() > CHUNK && shape.len() > 1 {
        par_chunks_mut(out, inner, |i, d| body((i, d)));
    } else {
        out.chunks_mut(inner).enumerate().for_each(body);
    }
}

/// `cond != 0 ? a : b` on equal shapes.
pub(crate) fn where_cond(cond: &[f32], a: &[f32], b: &[f32]) -> Vec<f32> {
    cond.iter()
        .zip(a.iter().zip(b))
        .map(|(&c, (&x, &y))| if c != 0.0 { x } else { y })
        .collect()
}

/// Copies `x` broadcast to `target` (the materialised expand).
pub(crate) fn broadcast_to(x: &[f32], shape: &[usize], target: &[usize]) -> Vec<f32> {
    let sx = broadcast_strides(shape, target);
    let zeros = vec![0usize; target.len()];
    let (cs, st) = coalesce(target, &[sx, zeros]);
    let inner = *cs.last().unwrap();
    let ix = st[0][cs.len() - 1];
    let mut out = buffer::alloc(numel(target));
    out.chunks_mut(inner).enumerate().for_each(|(row, dst)| {
        let mut off = [0usize; 2];
        row_offsets(row, &cs, &st, &mut off);
        if ix == 1 {
            dst.copy_from_slice(&x[off[0]..off[0] + inner]);
        } else {
            dst.iter_mut()
                .enumerate()
                .for_each(|(j, d)| *d = x[off[0] + j * ix]);
        }
    });
    out
}

/// Reduces over `axes` (sorted, unique) keeping them as size-1 axes.
pub(crate) fn reduce(op: ReduceOp, x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let so = broadcast_strides(&out_shape, shape);
    let sx = strides(shape);
    let (cs, st) = coalesce(shape, &[sx, so]);
    let inner = *cs.last().unwrap();
    let io = st[1][cs.len() - 1];
    let rows = x.len() / inner.max(1);
    let n_out = numel(&out_shape);
    let mut off = [0usize; 2];
    match op {
        ReduceOp::Sum => {
            let mut acc = vec![0.0f64; n_out];
            for row in 0..rows {
                row_offsets(row, &cs, &st, &mut off);
                let src = &x[off[0]..off[0] + inner];
                if io == 0 {
                    acc[off[1]] += src.iter().map(|&v| v as f64).sum::<f64>();
                } else {
                    for (j, &v) in src.iter().enumerate() {
                        acc[off[1] + j * io] += v as f64;
                    }
                }
            }
            acc.into_iter().map(|v| v as f32).collect()
        }
        ReduceOp::Max | ReduceOp::Min => {
            let is_max = op == ReduceOp::Max;
            let init = if is_max {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
            let mut acc = vec![init; n_out];
            let pick = |a: f32, b: f32| {
                if b.is_nan() || (is_max && b > a) || (!is_max && b < a) {
                    b
                } else {
                    a
                }
            };
            for row in 0..rows {
                row_offsets(row, &cs, &st, &mut off);
                let src = &x[off[0]..off[0] + inner];
                if io == 0 {
                    let cur = &mut acc[off[1]];
                    *cur = src.iter().fold(*cur, |m, &v| pick(m, v));
                } else {
                    for (j, &v) in src.iter().enumerate() {
                        let cur = &mut acc[off[1] + j * io];
                        *cur = pick(*cur, v);
                    }
                }
            }
            acc
        }
    }
}

/// Copies the box `region` starting at `src_start` in `src` into `dst` at `dst_start`, through
/// `op` when given (each run written once, as `op` of its source).
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_region(
    src: &[f32],
    src_shape: &[usize],
    src_start: &[usize],
    dst: &mut [f32],
    dst_shape: &[usize],
    dst_start: &[usize],
    region: &[usize],
    op: Option<UnaryOp>,
) {
    let put = |d: &mut [f32], s: &[f32]| match op {
        Some(op) => {
            let (c, a, b) = op.code();
            simd::unary(c, a, b, s, d)
        }
        None => d.copy_from_slice(s),
    };
    let n = numel(region);
    if n == 0 {
        return;
    }
    let ss = strides(src_shape);
    let ds = strides(dst_shape);
    let r = region.len();
    if r == 0 {
        put(&mut dst[..1], &src[..1]);
        return;
    }
    let base_s: usize = src_start.iter().zip(&ss).map(|(a, b)| a * b).sum();
    let base_d: usize = dst_start.iter().zip(&ds).map(|(a, b)| a * b).sum();
    // Trailing axes that the region spans whole in both shapes join the contiguous run (a
    // channel slice of an N×C×H×W map is one run of C'·H·W per image, not C'·H rows).
    let mut k = r - 1;
    let mut inner = region[k];
    while k > 0 && region[k] == src_shape[k] && region[k] == dst_shape[k] {
        k -= 1;
        inner *= region[k];
    }
    let rows = n / inner;
    let offsets = |row: usize| {
        let (mut os, mut od, mut rem) = (base_s, base_d, row);
        for ax in (0..k).rev() {
            let i = rem % region[ax];
            rem /= region[ax];
            os += i * ss[ax];
            od += i * ds[ax];
        }
        (os, od)
    };
    if n < 2 * CHUNK {
        for row in 0..rows {
            let (os, od) = offsets(row);
            put(&mut dst[od..od + inner], &src[os..os + inner]);
        }
        return;
    }
    // Rows, and long rows in pieces of CHUNK floats (a concat's input along channels is one
    // run per image), go to disjoint destination ranges.
    let pieces = inner.div_ceil(CHUNK);
    let dp = conv::SharedMut(dst.as_mut_ptr());
    let dlen = dst.len();
    crate::threads::par_for(rows * pieces, |i| {
        let (row, lo) = (i / pieces, (i % pieces) * CHUNK);
        let len = CHUNK.min(inner - lo);
        let (os, od) = offsets(row);
        assert!(
            od + lo + len <= dlen,
            "copy_region: destination piece in bounds"
        );
        // SAFETY: in bounds (checked); distinct (row, piece) pairs map to disjoint ranges
        // of `dst`.
        let d = unsafe { std::slice::from_raw_parts_mut(dp.get().add(od + lo), len) };
        put(d, &src[os + lo..os + lo + len]);
    });
}

/// Transposes axes: output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let sx = strides(shape);
    let src_strides: Vec<usize> = perm.iter().map(|&p| sx[p]).collect();
    let so = strides(&out_shape);
    let (cs, st) = coalesce(&out_shape, &[src_strides, so]);
    let inner = *cs.last().unwrap();
    let is = st[0][cs.len() - 1];
    let mut out = buffer::alloc(x.len());
    let nd = cs.len();
    if is != 1 && nd >= 2 && st[0][nd - 2] == 1 {
        // A batch of 2-D transposes (out[.., p, q] = x[base + p + q·is], e.g. Detect's
        // (…, no, ny·nx) → (…, ny·nx, no)): 8×8 register blocks read and write whole
        // 32-byte runs instead of one strided element at a time.
        let pp = cs[nd - 2];
        let tile = |(o, dst): (usize, &mut [f32])| {
            let mut off = [0usize; 2];
            row_offsets(o * pp, &cs, &st, &mut off);
            simd::transpose(&x[off[0]..], is, dst, inner, inner, pp);
        };
        if x.len() > CHUNK {
            par_chunks_mut(&mut out, pp * inner, |i, d| tile((i, d)));
        } else {
            out.chunks_mut(pp * inner).enumerate().for_each(tile);
        }
        return out;
    }
    let body = |(row, dst): (usize, &mut [f32])| {
        let mut off = [0usize; 2];
        row_offsets(row, &cs, &st, &mut off);
        if is == 1 {
            dst.copy_from_slice(&x[off[0]..off[0] + inner]);
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = x[off[0] + j * is];
            }
        }
    };
    if x.len() > CHUNK {
        par_chunks_mut(&mut out, inner, |i, d| body((i, d)));
    } else {
        out.chunks_mut(inner).enumerate().for_each(body);
    }
    out
}

/// Rows `idx` along `axis` (shape split as outer × size × inner).
pub(crate) fn index_select(
    x: &[f32],
    outer: usize,
    size: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let s = (o * size + i) * inner;
            out.extend_from_slice(&x[s..s + inner]);
        }
    }
    out
}

/// Inverse of [`index_select`]: adds row j of `src` into row `idx[j]` of a zero tensor.
pub(crate) fn index_add(
    src: &[f32],
    outer: usize,
    size: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<f32> {
    let mut out = buffer::filled(outer * size * inner, 0.0);
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let s = (o * idx.len() + j) * inner;
            let d = (o * size + i) * inner;
            for (a, b) in out[d..d + inner].iter_mut().zip(&src[s..s + inner]) {
                *a += b;
            }
        }
    }
    out
}

/// Offset into a tensor of `shape` of the element at `index_shape` position `flat`, with the
/// coordinate on `axis` replaced by `along`.
fn gather_offset(
    flat: usize,
    index_shape: &[usize],
    shape_strides: &[usize],
    axis: usize,
    along: usize,
) -> usize {
    let mut rem = flat;
    let mut off = 0;
    for ax in (0..index_shape.len()).rev() {
        let i = rem % index_shape[ax];
        rem /= index_shape[ax];
        off += if ax == axis { along } else { i } * shape_strides[ax];
    }
    off
}

/// PyTorch `gather`: `out[..i..] = x[..index[..i..]..]` on `axis`; output has the index's shape.
pub(crate) fn gather(
    x: &[f32],
    shape: &[usize],
    axis: usize,
    index: &[usize],
    index_shape: &[usize],
) -> Vec<f32> {
    let st = strides(shape);
    index
        .iter()
        .enumerate()
        .map(|(flat, &j)| x[gather_offset(flat, index_shape, &st, axis, j)])
        .collect()
}

/// PyTorch `scatter_add`: `base[..index[..i..]..] += src[..i..]` on `axis`.
pub(crate) fn scatter_add(
    base: &[f32],
    shape: &[usize],
    axis: usize,
    index: &[usize],
    index_shape: &[usize],
    src: &[f32],
) -> Vec<f32> {
    let st = strides(shape);
    let mut out = base.to_vec();
    for (flat, (&j, &v)) in index.iter().zip(src).enumerate() {
        out[gather_offset(flat, index_shape, &st, axis, j)] += v;
    }
    out
}

#[cfg(test)]
mod cache_size_tests {
    #[test]
    fn sysfs_cache_sizes_parse() {
        assert_eq!(super::parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(super::parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(super::parse_cache_size("524288"), Some(512 << 10));
        assert_eq!(super::parse_cache_size("big"), None);
        assert_eq!(super::parse_cache_size(""), None);
        let l2 = super::l2_bytes();
        assert!((256 << 10..=8 << 20).contains(&l2), "L2 {l2} bytes");
    }
}
