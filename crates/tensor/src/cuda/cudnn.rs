//! Convolutions through cuDNN (forward, backward-data, backward-filter, with groups), used
//! when the cuDNN library loads; otherwise, or with `YOLO_CUDNN=0`, the im2col + cuBLAS and
//! direct kernels of `ops` run instead. The algorithm for each geometry comes from cuDNN's
//! heuristics (the fastest whose workspace fits in 1 GiB) and is cached. In f32 the math is
//! plain FMA (no TF32), so results stay within f32 rounding of the CPU; with mixed precision
//! on, cuDNN may use tensor cores with down-conversion.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use cudarc::cudnn::{result as dnn, sys};

use super::backend::{CudaBuf, Gpu};
use crate::op::ConvGeom;
use crate::{Error, Result};

/// Workspace cap per call.
const MAX_WORKSPACE: usize = 1 << 30;

/// Which of the three convolution passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

/// An algorithm of one of the three passes.
#[derive(Clone, Copy)]
enum Algo {
    F(sys::cudnnConvolutionFwdAlgo_t),
    D(sys::cudnnConvolutionBwdDataAlgo_t),
    W(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// One cuDNN handle (bound to the GPU's stream) and the algorithm cache.
pub(crate) struct Dnn {
    handle: sys::cudnnHandle_t,
    algos: HashMap<(ConvGeomKey, Pass, bool), (Algo, usize)>,
}

// SAFETY: the handle is only used under the GPU's `Mutex<Dnn>`.
unsafe impl Send for Dnn {}

/// `ConvGeom` as a hashable key.
type ConvGeomKey = [usize; 15];

fn key(g: &ConvGeom) -> ConvGeomKey {
    [
        g.n,
        g.c_in,
        g.h,
        g.w,
        g.c_out,
        g.kh,
        g.kw,
        g.oh,
        g.ow,
        g.p.stride.0,
        g.p.stride.1,
        g.p.padding.0,
        g.p.padding.1,
        g.p.dilation.0 * 65536 + g.p.dilation.1,
        g.p.groups,
    ]
}

/// Opens cuDNN on `stream`, or says why not.
pub(crate) fn open(
    stream: cudarc::driver::sys::CUstream,
) -> std::result::Result<Mutex<Dnn>, String> {
    if std::env::var("YOLO_CUDNN").is_ok_and(|v| v == "0") {
        return Err("disabled by YOLO_CUDNN=0".into());
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: only tries to open the library.
        if !unsafe { sys::is_culib_present() } {
            return Err("the cuDNN library (libcudnn.so) could not be loaded".to_string());
        }
        let handle = dnn::create_handle().map_err(|e| format!("cudnnCreate: {e:?}"))?;
        // SAFETY: a fresh handle and the GPU's live stream.
        unsafe { dnn::set_stream(handle, stream as _) }
            .map_err(|e| format!("cudnnSetStream: {e:?}"))?;
        Ok(Mutex::new(Dnn {
            handle,
            algos: HashMap::new(),
        }))
    }))
    .unwrap_or_else(|_| Err("cuDNN misbehaved while loading".into()))
}

/// Descriptors of one convolution call, destroyed on drop.
struct Descs {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Drop for Descs {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created by `Descs::new` and is destroyed once.
        unsafe {
            let _ = dnn::destroy_tensor_descriptor(self.x);
            let _ = dnn::destroy_tensor_descriptor(self.y);
            let _ = dnn::destroy_filter_descriptor(self.w);
            let _ = dnn::destroy_convolution_descriptor(self.conv);
        }
    }
}

fn err(gpu: &Gpu, what: &str, e: impl std::fmt::Debug) -> Error {
    gpu.err(format!("cuDNN {what}: {e:?}"))
}

impl Descs {
    fn new(gpu: &Gpu, g: &ConvGeom, amp: bool) -> Result<Descs> {
        let i = |v: usize| v as i32;
        let e = |what: &str, x: dnn::CudnnError| err(gpu, what, x);
        let d = Descs {
            x: dnn::create_tensor_descriptor().map_err(|x| e("tensor descriptor", x))?,
            y: dnn::create_tensor_descriptor().map_err(|x| e("tensor descriptor", x))?,
            w: dnn::create_filter_descriptor().map_err(|x| e("filter descriptor", x))?,
            conv: dnn::create_convolution_descriptor()
                .map_err(|x| e("convolution descriptor", x))?,
        };
        let f32t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        // SAFETY: descriptors created above; plain value arguments.
        unsafe {
            dnn::set_tensor4d_descriptor(d.x, nchw, f32t, [i(g.n), i(g.c_in), i(g.h), i(g.w)])
                .map_err(|x| e("input shape", x))?;
            dnn::set_tensor4d_descriptor(d.y, nchw, f32t, [i(g.n), i(g.c_out), i(g.oh), i(g.ow)])
                .map_err(|x| e("output shape", x))?;
            dnn::set_filter4d_descriptor(
                d.w,
                f32t,
                nchw,
                [i(g.c_out), i(g.cin_g()), i(g.kh), i(g.kw)],
            )
            .map_err(|x| e("filter shape", x))?;
            dnn::set_convolution2d_descriptor(
                d.conv,
                i(g.p.padding.0),
                i(g.p.padding.1),
                i(g.p.stride.0),
                i(g.p.stride.1),
                i(g.p.dilation.0),
                i(g.p.dilation.1),
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                f32t,
            )
            .map_err(|x| e("convolution geometry", x))?;
            dnn::set_convolution_group_count(d.conv, i(g.p.groups))
                .map_err(|x| e("group count", x))?;
            let math = if amp {
                sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
            } else {
                sys::cudnnMathType_t::CUDNN_FMA_MATH
            };
            dnn::set_convolution_math_type(d.conv, math).map_err(|x| e("math type", x))?;
        }
        Ok(d)
    }
}

/// Picks (and caches) the algorithm for `pass`: cuDNN's heuristic order, the first that
/// succeeds with a workspace under [`MAX_WORKSPACE`].
fn algo(
    dnn_: &mut Dnn,
    gpu: &Gpu,
    g: &ConvGeom,
    d: &Descs,
    pass: Pass,
    amp: bool,
) -> Result<(Algo, usize)> {
    let k = (key(g), pass, amp);
    if let Some(&a) = dnn_.algos.get(&k) {
        return Ok(a);
    }
    let h = dnn_.handle;
    let mut found = None;
    // SAFETY: valid handle and descriptors; the perf arrays have room for `n` results and
    // all-zero bytes are valid values of their fields.
    unsafe {
        let mut count = 0i32;
        match pass {
            Pass::Forward => {
                let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; 8] = std::mem::zeroed();
                dnn::get_convolution_forward_algorithm(
                    h,
                    d.x,
                    d.w,
                    d.conv,
                    d.y,
                    8,
                    &mut count,
                    perf.as_mut_ptr(),
                )
                .map_err(|x| err(gpu, "forward heuristics", x))?;
                for p in &perf[..count.max(0) as usize] {
                    if p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                        && p.memory <= MAX_WORKSPACE
                    {
                        if let Ok(ws) = dnn::get_convolution_forward_workspace_size(
                            h, d.x, d.w, d.conv, d.y, p.algo,
                        ) {
                            found = Some((Algo::F(p.algo), ws));
                            break;
                        }
                    }
                }
            }
            Pass::BackwardData => {
                let mut perf: [sys::cudnnConvolutionBwdDataAlgoPerf_t; 8] = std::mem::zeroed();
                dnn::get_convolution_backward_data_algorithm(
                    h,
                    d.w,
                    d.y,
                    d.conv,
                    d.x,
                    8,
                    &mut count,
                    perf.as_mut_ptr(),
                )
                .map_err(|x| err(gpu, "backward-data heuristics", x))?;
                for p in &perf[..count.max(0) as usize] {
                    if p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                        && p.memory <= MAX_WORKSPACE
                    {
                        if let Ok(ws) = dnn::get_convolution_backward_data_workspace_size(
                            h, d.w, d.y, d.conv, d.x, p.algo,
                        ) {
                            found = Some((Algo::D(p.algo), ws));
                            break;
                        }
                    }
                }
            }
            Pass::BackwardFilter => {
                let mut perf: [sys::cudnnConvolutionBwdFilterAlgoPerf_t; 8] = std::mem::zeroed();
                dnn::get_convolution_backward_filter_algorithm(
                    h,
                    d.x,
                    d.y,
                    d.conv,
                    d.w,
                    8,
                    &mut count,
                    perf.as_mut_ptr(),
                )
                .map_err(|x| err(gpu, "backward-filter heuristics", x))?;
                for p in &perf[..count.max(0) as usize] {
                    if p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                        && p.memory <= MAX_WORKSPACE
                    {
                        if let Ok(ws) = dnn::get_convolution_backward_filter_workspace_size(
                            h, d.x, d.y, d.conv, d.w, p.algo,
                        ) {
                            found = Some((Algo::W(p.algo), ws));
                            break;
                        }
                    }
                }
            }
        }
    }
    let a = found.ok_or_else(|| {
        err(
            gpu,
            "algorithm choice",
            format!("no algorithm for {g:?} ({pass:?})"),
        )
    })?;
    dnn_.algos.insert(k, a);
    Ok(a)
}

/// Runs one pass into `out` (overwritten). `a` and `b` are the pass's two inputs:
/// forward (x, w) → y; backward-data (w, dy) → dx; backward-filter (x, dy) → dw.
pub(crate) fn run(
    gpu: &Gpu,
    dnn_lock: &Mutex<Dnn>,
    g: &ConvGeom,
    pass: Pass,
    a: u64,
    b: u64,
    out: &CudaBuf,
) -> Result<()> {
    let amp = super::mixed_precision();
    let mut dnn_ = dnn_lock.lock().unwrap_or_else(|e| e.into_inner());
    let d = Descs::new(gpu, g, amp)?;
    let (algo_id, ws_bytes) = algo(&mut dnn_, gpu, g, &d, pass, amp)?;
    let wrong = || err(gpu, "algorithm cache", "an algorithm of another pass");
    let (ws, ws_cap) = gpu.alloc_bytes(ws_bytes)?;
    let (alpha, beta) = (1.0f32, 0.0f32);
    let h = dnn_.handle;
    let p = |v: u64| v as *const std::ffi::c_void;
    let res = gpu.bind().and_then(|_| {
        // SAFETY: device buffers of the sizes the descriptors describe; workspace of the size
        // cuDNN asked for; the algorithm ids come from cuDNN's own list for this pass.
        unsafe {
            match (pass, algo_id) {
                (Pass::Forward, Algo::F(al)) => dnn::convolution_forward(
                    h,
                    &alpha as *const f32 as _,
                    d.x,
                    p(a),
                    d.w,
                    p(b),
                    d.conv,
                    al,
                    ws as _,
                    ws_bytes,
                    &beta as *const f32 as _,
                    d.y,
                    out.ptr as _,
                ),
                (Pass::BackwardData, Algo::D(al)) => dnn::convolution_backward_data(
                    h,
                    &alpha as *const f32 as _,
                    d.w,
                    p(a),
                    d.y,
                    p(b),
                    d.conv,
                    al,
                    ws as _,
                    ws_bytes,
                    &beta as *const f32 as _,
                    d.x,
                    out.ptr as _,
                ),
                (Pass::BackwardFilter, Algo::W(al)) => dnn::convolution_backward_filter(
                    h,
                    &alpha as *const f32 as _,
                    d.x,
                    p(a),
                    d.y,
                    p(b),
                    d.conv,
                    al,
                    ws as _,
                    ws_bytes,
                    &beta as *const f32 as _,
                    d.w,
                    out.ptr as _,
                ),
                _ => return Err(wrong()),
            }
        }
        .map_err(|x| err(gpu, &format!("{pass:?}"), x))
    });
    gpu.release(ws, ws_cap);
    res
}
