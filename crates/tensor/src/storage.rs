//! The backend seam: a tensor's data is a [`Storage`], and every kernel is a method here that
//! dispatches on the variant: host memory runs the CPU kernels (`crate::cpu`), device memory the
//! CUDA kernels (`crate::cuda::ops`). Nothing above this module branches on the device.
//!
//! Operands on another device than `self` (the ops above check devices first, so this is a
//! fallback, not a path) are copied over. A failing CUDA op records the GPU's sticky error and
//! returns a null buffer; see `crate::cuda::backend`.

use std::borrow::Cow;
use std::sync::Arc;

use crate::cpu;
use crate::cpu::buffer::CpuBuf;
use crate::cuda::backend::{CudaBuf, Gpu};
use crate::cuda::ops as gpu_ops;
use crate::error::Result;
use crate::op::{BinaryOp, ConvGeom, Pool2dParams, ReduceOp, UnaryOp};
use crate::Device;

/// Device memory of one tensor (contiguous, row-major, f32).
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// Host memory.
    Cpu(CpuBuf),
    /// Memory of one NVIDIA GPU.
    Cuda(CudaBuf),
}

/// Output of the training-mode batch-norm kernel.
pub(crate) struct BnTrain {
    pub y: Storage,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

/// A CUDA result as storage: on failure the GPU keeps the error and the tensor gets a null
/// buffer of the right length.
fn done(gpu: &Arc<Gpu>, len: usize, r: Result<CudaBuf>) -> Storage {
    Storage::Cuda(r.unwrap_or_else(|e| {
        gpu.fail(&e);
        CudaBuf::null(gpu, len)
    }))
}

/// `s` as host data (downloaded when it lives on a GPU).
fn host(s: &Storage) -> Cow<'_, [f32]> {
    match s {
        Storage::Cpu(v) => Cow::Borrowed(&v[..]),
        Storage::Cuda(_) => Cow::Owned(s.to_vec()),
    }
}

/// The stamp under which the convolution kernels keep packed forms of the weights `w`: on the
/// CPU without autograd recording (inference), else none (training changes them every step).
fn packing_stamp(w: &Storage) -> Option<u64> {
    match w {
        Storage::Cpu(wb) if !crate::is_grad_enabled() => Some(wb.stamp()),
        _ => None,
    }
}

/// `s` as device data on `gpu` (uploaded when it lives elsewhere).
fn dev<'a>(s: &'a Storage, gpu: &Arc<Gpu>) -> Cow<'a, CudaBuf> {
    match s {
        Storage::Cuda(b) if b.gpu.ordinal == gpu.ordinal => Cow::Borrowed(b),
        _ => {
            let data = s.to_vec();
            Cow::Owned(gpu.upload(&data).unwrap_or_else(|e| {
                gpu.fail(&e);
                CudaBuf::null(gpu, data.len())
            }))
        }
    }
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(b) => b.gpu.device(),
        }
    }

    /// Copies the data to host memory (zeros when a failed CUDA op left no data; the GPU's
    /// sticky error reports that failure at the next fallible call).
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Storage::Cpu(v) => v.to_vec(),
            Storage::Cuda(b) => b.gpu.download(b).unwrap_or_else(|e| {
                b.gpu.fail(&e);
                vec![0.0; b.len]
            }),
        }
    }

    /// `Err` with the GPU's pending error, if an earlier op on this storage's GPU failed.
    pub fn check(&self) -> Result<()> {
        match self {
            Storage::Cpu(_) => Ok(()),
            Storage::Cuda(b) => b.gpu.take_error(),
        }
    }

    /// Builds storage on `device` from host data.
    pub fn from_vec(data: Vec<f32>, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(data.into())),
            Device::Cuda(n) => {
                let gpu = crate::cuda::backend::gpu(n)?;
                Ok(Storage::Cuda(gpu.upload(&data)?))
            }
        }
    }

    /// A buffer of `len` copies of `value` on `device`.
    pub fn full(value: f32, len: usize, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(cpu::buffer::filled(len, value).into())),
            Device::Cuda(n) => {
                let gpu = crate::cuda::backend::gpu(n)?;
                Ok(Storage::Cuda(gpu_ops::fill(&gpu, len, value)?))
            }
        }
    }

    /// Runs `f` on host data in place (CUDA: a download, `f`, an upload).
    pub fn update_host(&mut self, f: impl FnOnce(&mut [f32])) -> Result<()> {
        match self {
            Storage::Cpu(buf) => {
                f(buf);
                Ok(())
            }
            Storage::Cuda(b) => {
                let mut v = b.gpu.download(b)?;
                f(&mut v);
                let gpu = b.gpu.clone();
                *b = gpu.upload(&v)?;
                Ok(())
            }
        }
    }

    pub fn unary(&self, op: UnaryOp) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::unary(op, x).into()),
            Storage::Cuda(x) => done(&x.gpu, x.len, gpu_ops::unary(x, op)),
        }
    }

    pub fn unary_backward(&self, op: UnaryOp, dy: &Storage) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::unary_backward(op, x, &host(dy)).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                x.len,
                gpu_ops::unary_backward(x, op, &dev(dy, &x.gpu)),
            ),
        }
    }

    pub fn binary(
        &self,
        op: BinaryOp,
        shape: &[usize],
        rhs: &Storage,
        rhs_shape: &[usize],
        out: &[usize],
    ) -> Storage {
        match self {
            Storage::Cpu(a) => {
                Storage::Cpu(cpu::binary(op, a, shape, &host(rhs), rhs_shape, out).into())
            }
            Storage::Cuda(a) => done(
                &a.gpu,
                crate::shape::numel(out),
                gpu_ops::binary(op, a, shape, &dev(rhs, &a.gpu), rhs_shape, out),
            ),
        }
    }

    pub fn where_cond(&self, a: &Storage, b: &Storage) -> Storage {
        match self {
            Storage::Cpu(c) => Storage::Cpu(cpu::where_cond(c, &host(a), &host(b)).into()),
            Storage::Cuda(c) => done(
                &c.gpu,
                c.len,
                gpu_ops::where_cond(c, &dev(a, &c.gpu), &dev(b, &c.gpu)),
            ),
        }
    }

    pub fn broadcast_to(&self, shape: &[usize], target: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::broadcast_to(x, shape, target).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                crate::shape::numel(target),
                gpu_ops::broadcast_to(x, shape, target),
            ),
        }
    }

    pub fn reduce(&self, op: ReduceOp, shape: &[usize], axes: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::reduce(op, x, shape, axes).into()),
            Storage::Cuda(x) => {
                let n: usize = shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d)
                    .product();
                done(&x.gpu, n, gpu_ops::reduce(op, x, shape, axes))
            }
        }
    }

    /// Batched `C[b] = op(A[b]) · op(B[b])`; `ta`/`tb` read A/B as stored transposed.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        rhs: &Storage,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
    ) -> Storage {
        match self {
            Storage::Cpu(a) => {
                Storage::Cpu(cpu::gemm::batched(a, &host(rhs), batch, m, k, n, ta, tb).into())
            }
            Storage::Cuda(a) => done(
                &a.gpu,
                batch * m * n,
                gpu_ops::matmul(a, &dev(rhs, &a.gpu), batch, m, k, n, ta, tb),
            ),
        }
    }

    pub fn permute(&self, shape: &[usize], perm: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::permute(x, shape, perm).into()),
            Storage::Cuda(x) => done(&x.gpu, x.len, gpu_ops::permute(x, shape, perm)),
        }
    }

    /// A new buffer of `dst_shape` filled with `fill`, with each `(part, part_shape, start)`
    /// copied in at `start` (through `op` when given); covers concat, pad and the backward of
    /// narrow. `fill: None` is for parts that cover every element.
    pub fn assemble(
        parts: &[(&Storage, &[usize], Vec<usize>)],
        dst_shape: &[usize],
        fill: Option<f32>,
        op: Option<UnaryOp>,
        device: Device,
    ) -> Result<Storage> {
        match device {
            Device::Cpu => {
                let n = crate::shape::numel(dst_shape);
                // `None`: the parts tile the whole output (concat), so no fill is needed.
                let mut out = match fill {
                    Some(v) => cpu::buffer::filled(n, v),
                    None => cpu::buffer::alloc(n),
                };
                for (p, shape, start) in parts {
                    let src = host(p);
                    let zeros = vec![0; shape.len()];
                    cpu::copy_region(&src, shape, &zeros, &mut out, dst_shape, start, shape, op);
                }
                Ok(Storage::Cpu(out.into()))
            }
            Device::Cuda(n) => {
                let gpu = crate::cuda::backend::gpu(n)?;
                let bufs: Vec<Cow<'_, CudaBuf>> =
                    parts.iter().map(|(p, _, _)| dev(p, &gpu)).collect();
                let views: Vec<(&CudaBuf, &[usize], Vec<usize>)> = bufs
                    .iter()
                    .zip(parts)
                    .map(|(b, (_, shape, start))| (&**b, *shape, start.clone()))
                    .collect();
                let out = Storage::Cuda(gpu_ops::assemble(&gpu, &views, dst_shape, fill)?);
                Ok(match op {
                    Some(op) => out.unary(op),
                    None => out,
                })
            }
        }
    }

    /// The box of `region` starting at `start` (narrow / crop).
    pub fn crop(&self, shape: &[usize], start: &[usize], region: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => {
                let mut out = cpu::buffer::alloc(crate::shape::numel(region));
                let zeros = vec![0; region.len()];
                cpu::copy_region(x, shape, start, &mut out, region, &zeros, region, None);
                Storage::Cpu(out.into())
            }
            Storage::Cuda(x) => done(
                &x.gpu,
                crate::shape::numel(region),
                gpu_ops::crop(x, shape, start, region),
            ),
        }
    }

    pub fn index_select(&self, outer: usize, size: usize, inner: usize, idx: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::index_select(x, outer, size, inner, idx).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                outer * idx.len() * inner,
                gpu_ops::index_select(x, outer, size, inner, idx),
            ),
        }
    }

    pub fn index_add(&self, outer: usize, size: usize, inner: usize, idx: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::index_add(x, outer, size, inner, idx).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                outer * size * inner,
                gpu_ops::index_add(x, outer, size, inner, idx),
            ),
        }
    }

    pub fn gather(
        &self,
        shape: &[usize],
        axis: usize,
        index: &[usize],
        index_shape: &[usize],
    ) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::gather(x, shape, axis, index, index_shape).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                index.len(),
                gpu_ops::gather(x, shape, axis, index, index_shape),
            ),
        }
    }

    pub fn scatter_add(
        &self,
        shape: &[usize],
        axis: usize,
        index: &[usize],
        index_shape: &[usize],
        src: &Storage,
    ) -> Storage {
        match self {
            Storage::Cpu(b) => Storage::Cpu(
                cpu::scatter_add(b, shape, axis, index, index_shape, &host(src)).into(),
            ),
            Storage::Cuda(b) => done(
                &b.gpu,
                b.len,
                gpu_ops::scatter_add(b, shape, axis, index, index_shape, &dev(src, &b.gpu)),
            ),
        }
    }

    /// The convolution, then `act` when given, then `add` (of the output's shape) added: on the
    /// CPU fused into the kernels' stores.
    pub fn conv2d(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        g: &ConvGeom,
        act: Option<UnaryOp>,
        add: Option<&Storage>,
    ) -> Storage {
        match self {
            Storage::Cpu(x) => {
                let b = bias.map(host);
                let stamp = packing_stamp(w);
                let res = add.map(host);
                let epi = cpu::Epilogue {
                    act,
                    add: res.as_deref(),
                };
                let y = cpu::conv::forward(x, &host(w), stamp, b.as_deref(), g, epi);
                Storage::Cpu(y.into())
            }
            Storage::Cuda(x) => {
                let b = bias.map(|b| dev(b, &x.gpu));
                let y = done(
                    &x.gpu,
                    g.n * g.c_out * g.oh * g.ow,
                    gpu_ops::conv2d(x, &dev(w, &x.gpu), b.as_deref(), g),
                );
                let y = match act {
                    Some(op) => y.unary(op),
                    None => y,
                };
                match add {
                    Some(r) => {
                        let shape = [g.n, g.c_out, g.oh, g.ow];
                        y.binary(BinaryOp::Add, &shape, r, &shape, &shape)
                    }
                    None => y,
                }
            }
        }
    }

    /// The 1×1 convolution ([`cpu::conv::parts_enabled`]) of the channel concatenation of
    /// `parts` (each with its channel count and a nearest upsampling factor, `g` the full-size
    /// geometry), then `act`, on the CPU: [`cpu::conv::forward_parts_up`] when a part is
    /// upsampled, else [`cpu::conv::forward_parts`].
    pub fn conv2d_parts(
        parts: &[(&Storage, usize, usize)],
        w: &Storage,
        bias: Option<&Storage>,
        g: &ConvGeom,
        act: Option<UnaryOp>,
    ) -> Storage {
        let hosts: Vec<Cow<'_, [f32]>> = parts.iter().map(|(s, _, _)| host(s)).collect();
        let srcs: Vec<(&[f32], usize, usize)> = hosts
            .iter()
            .zip(parts)
            .map(|(h, p)| (&h[..], p.1, p.2))
            .collect();
        let b = bias.map(host);
        let y = if srcs.iter().any(|s| s.2 > 1) {
            cpu::conv::forward_parts_up(&srcs, &host(w), b.as_deref(), g, act)
        } else {
            let srcs: Vec<(&[f32], usize)> = srcs.iter().map(|s| (s.0, s.1)).collect();
            let stamp = packing_stamp(w);
            cpu::conv::forward_parts(&srcs, &host(w), stamp, b.as_deref(), g, act)
        };
        Storage::Cpu(y.into())
    }

    /// The 1×1 convolution `g` stored N×heads×H×W×(Cout/heads) ([`cpu::conv::pointwise_heads`]).
    pub fn conv2d_heads(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        g: &ConvGeom,
        heads: usize,
    ) -> Storage {
        let b = bias.map(host);
        let stamp = packing_stamp(w);
        let y = cpu::conv::pointwise_heads(&host(self), &host(w), stamp, b.as_deref(), g, heads);
        Storage::Cpu(y.into())
    }

    pub fn conv2d_backward_input(&self, w: &Storage, g: &ConvGeom) -> Storage {
        match self {
            Storage::Cpu(dy) => Storage::Cpu(cpu::conv::backward_input(dy, &host(w), g).into()),
            Storage::Cuda(dy) => done(
                &dy.gpu,
                g.n * g.c_in * g.h * g.w,
                gpu_ops::conv2d_backward_input(dy, &dev(w, &dy.gpu), g),
            ),
        }
    }

    pub fn conv2d_backward_weight(&self, dy: &Storage, g: &ConvGeom) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::conv::backward_weight(x, &host(dy), g).into()),
            Storage::Cuda(x) => done(
                &x.gpu,
                g.c_out * g.k(),
                gpu_ops::conv2d_backward_weight(x, &dev(dy, &x.gpu), g),
            ),
        }
    }

    pub fn max_pool2d(&self, planes: usize, h: usize, w: usize, p: &Pool2dParams) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::pool::max_pool2d(x, planes, h, w, p).into()),
            Storage::Cuda(x) => {
                let oh = cpu::pool::pooled(h, p.kernel.0, p.stride.0, p.padding.0);
                let ow = cpu::pool::pooled(w, p.kernel.1, p.stride.1, p.padding.1);
                done(
                    &x.gpu,
                    planes * oh * ow,
                    gpu_ops::max_pool2d(x, planes, h, w, p),
                )
            }
        }
    }

    pub fn max_pool2d_backward(
        &self,
        dy: &Storage,
        planes: usize,
        h: usize,
        w: usize,
        p: &Pool2dParams,
    ) -> Storage {
        match self {
            Storage::Cpu(x) => {
                Storage::Cpu(cpu::pool::max_pool2d_backward(x, &host(dy), planes, h, w, p).into())
            }
            Storage::Cuda(x) => done(
                &x.gpu,
                planes * h * w,
                gpu_ops::max_pool2d_backward(x, &dev(dy, &x.gpu), planes, h, w, p),
            ),
        }
    }

    pub fn upsample_nearest(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        sh: usize,
        sw: usize,
    ) -> Storage {
        match self {
            Storage::Cpu(x) => {
                Storage::Cpu(cpu::pool::upsample_nearest(x, planes, h, w, sh, sw).into())
            }
            Storage::Cuda(x) => done(
                &x.gpu,
                planes * h * sh * w * sw,
                gpu_ops::upsample_nearest(x, planes, h, w, sh, sw),
            ),
        }
    }

    pub fn upsample_nearest_backward(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        sh: usize,
        sw: usize,
    ) -> Storage {
        match self {
            Storage::Cpu(g) => {
                Storage::Cpu(cpu::pool::upsample_nearest_backward(g, planes, h, w, sh, sw).into())
            }
            Storage::Cuda(g) => done(
                &g.gpu,
                planes * h * w,
                gpu_ops::upsample_nearest_backward(g, planes, h, w, sh, sw),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train(
        &self,
        n: usize,
        c: usize,
        hw: usize,
        weight: &Storage,
        bias: &Storage,
        eps: f32,
        act: Option<UnaryOp>,
    ) -> BnTrain {
        match self {
            Storage::Cpu(x) => {
                let (w, b) = (host(weight), host(bias));
                let r =
                    cpu::norm::batch_norm_train(x, n, c, hw, &w, &b, eps, act.map(|o| o.code()));
                BnTrain {
                    y: Storage::Cpu(r.y.into()),
                    mean: r.mean,
                    var: r.var,
                    invstd: r.invstd,
                }
            }
            Storage::Cuda(x) => {
                let (w, b) = (dev(weight, &x.gpu), dev(bias, &x.gpu));
                match gpu_ops::batch_norm_train(x, n, c, hw, &w, &b, eps, act) {
                    Ok((y, mean, var, invstd)) => BnTrain {
                        y: Storage::Cuda(y),
                        mean,
                        var,
                        invstd,
                    },
                    Err(e) => {
                        x.gpu.fail(&e);
                        BnTrain {
                            y: Storage::Cuda(CudaBuf::null(&x.gpu, x.len)),
                            mean: vec![0.0; c],
                            var: vec![1.0; c],
                            invstd: vec![1.0; c],
                        }
                    }
                }
            }
        }
    }

    /// Returns (dx, dweight, dbias). With `act` (the bias and the activation of a fused
    /// forward), `dy` is the gradient of the activation's output.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_backward(
        &self,
        dy: &Storage,
        n: usize,
        c: usize,
        hw: usize,
        weight: &Storage,
        mean: &[f32],
        invstd: &[f32],
        act: Option<(&Storage, UnaryOp)>,
    ) -> (Storage, Storage, Storage) {
        match self {
            Storage::Cpu(x) => {
                let (g, w) = (host(dy), host(weight));
                let act_host = act.map(|(b, op)| (host(b), op.code()));
                let act = act_host.as_ref().map(|(b, op)| (&b[..], *op));
                let (dx, dw, db) =
                    cpu::norm::batch_norm_train_backward(x, &g, n, c, hw, &w, mean, invstd, act);
                (
                    Storage::Cpu(dx.into()),
                    Storage::Cpu(dw.into()),
                    Storage::Cpu(db.into()),
                )
            }
            Storage::Cuda(x) => {
                let gpu = &x.gpu;
                let (g, w) = (dev(dy, gpu), dev(weight, gpu));
                let act_dev = act.map(|(b, op)| (dev(b, gpu), op));
                let act = act_dev.as_ref().map(|(b, op)| (&**b, *op));
                match gpu_ops::batch_norm_train_backward(x, &g, n, c, hw, &w, mean, invstd, act) {
                    Ok((dx, dw, db)) => (Storage::Cuda(dx), Storage::Cuda(dw), Storage::Cuda(db)),
                    Err(e) => {
                        gpu.fail(&e);
                        (
                            Storage::Cuda(CudaBuf::null(gpu, x.len)),
                            Storage::Cuda(CudaBuf::null(gpu, c)),
                            Storage::Cuda(CudaBuf::null(gpu, c)),
                        )
                    }
                }
            }
        }
    }

    pub fn softmax(&self, outer: usize, size: usize, inner: usize, log: bool) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::norm::softmax(x, outer, size, inner, log).into()),
            Storage::Cuda(x) => done(&x.gpu, x.len, gpu_ops::softmax(x, outer, size, inner, log)),
        }
    }

    pub fn softmax_backward(
        &self,
        dy: &Storage,
        outer: usize,
        size: usize,
        inner: usize,
        log: bool,
    ) -> Storage {
        match self {
            Storage::Cpu(y) => Storage::Cpu(
                cpu::norm::softmax_backward(y, &host(dy), outer, size, inner, log).into(),
            ),
            Storage::Cuda(y) => done(
                &y.gpu,
                y.len,
                gpu_ops::softmax_backward(y, &dev(dy, &y.gpu), outer, size, inner, log),
            ),
        }
    }

    pub fn bce_with_logits(&self, target: &Storage, pos_weight: Option<&Storage>) -> Storage {
        match self {
            Storage::Cpu(x) => {
                let pw = pos_weight.map(host);
                Storage::Cpu(cpu::norm::bce_with_logits(x, &host(target), pw.as_deref()).into())
            }
            Storage::Cuda(x) => {
                let pw = pos_weight.map(|p| dev(p, &x.gpu));
                done(
                    &x.gpu,
                    x.len,
                    gpu_ops::bce_with_logits(x, &dev(target, &x.gpu), pw.as_deref()),
                )
            }
        }
    }
}
