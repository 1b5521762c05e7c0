//! The backend seam: a tensor's data is a [`Storage`], and every kernel is a method here that
//! dispatches on the variant. The CPU is the one backend today; the CUDA backend adds a variant
//! and one arm per method, and nothing above this module branches on the device.

use crate::cpu;
use crate::cpu::buffer::CpuBuf;
use crate::error::Result;
use crate::op::{BinaryOp, ConvGeom, Pool2dParams, ReduceOp, UnaryOp};
use crate::Device;

/// Device memory of one tensor (contiguous, row-major, f32).
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// Host memory.
    Cpu(CpuBuf),
}

fn no_backend<T>(device: Device) -> Result<T> {
    Err(crate::Error::DeviceUnavailable {
        device,
        reason: "the CUDA backend is not implemented in this build (CPU only)".into(),
    })
}

/// Output of the training-mode batch-norm kernel.
pub(crate) struct BnTrain {
    pub y: Storage,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// Copies the data to host memory.
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Storage::Cpu(v) => v.to_vec(),
        }
    }

    /// Builds storage on `device` from host data.
    pub fn from_vec(data: Vec<f32>, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(data.into())),
            Device::Cuda(_) => no_backend(device),
        }
    }

    /// A buffer of `len` copies of `value` on `device`.
    pub fn full(value: f32, len: usize, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(cpu::buffer::filled(len, value).into())),
            Device::Cuda(_) => no_backend(device),
        }
    }

    pub fn unary(&self, op: UnaryOp) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::unary(op, x).into()),
        }
    }

    pub fn unary_backward(&self, op: UnaryOp, dy: &Storage) -> Storage {
        match (self, dy) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                Storage::Cpu(cpu::unary_backward(op, x, g).into())
            }
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
        match (self, rhs) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(cpu::binary(op, a, shape, b, rhs_shape, out).into())
            }
        }
    }

    pub fn where_cond(&self, a: &Storage, b: &Storage) -> Storage {
        match (self, a, b) {
            (Storage::Cpu(c), Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(cpu::where_cond(c, a, b).into())
            }
        }
    }

    pub fn broadcast_to(&self, shape: &[usize], target: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::broadcast_to(x, shape, target).into()),
        }
    }

    pub fn reduce(&self, op: ReduceOp, shape: &[usize], axes: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::reduce(op, x, shape, axes).into()),
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
        match (self, rhs) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(cpu::gemm::batched(a, b, batch, m, k, n, ta, tb).into())
            }
        }
    }

    pub fn permute(&self, shape: &[usize], perm: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::permute(x, shape, perm).into()),
        }
    }

    /// A new buffer of `dst_shape` filled with `fill`, with each `(part, part_shape, start)`
    /// copied in at `start`; covers concat, pad and the backward of narrow. `fill: None` is for
    /// parts that cover every element.
    pub fn assemble(
        parts: &[(&Storage, &[usize], Vec<usize>)],
        dst_shape: &[usize],
        fill: Option<f32>,
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
                    let Storage::Cpu(src) = p;
                    let zeros = vec![0; shape.len()];
                    cpu::copy_region(src, shape, &zeros, &mut out, dst_shape, start, shape);
                }
                Ok(Storage::Cpu(out.into()))
            }
            Device::Cuda(_) => no_backend(device),
        }
    }

    /// The box of `region` starting at `start` (narrow / crop).
    pub fn crop(&self, shape: &[usize], start: &[usize], region: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => {
                let mut out = cpu::buffer::alloc(crate::shape::numel(region));
                let zeros = vec![0; region.len()];
                cpu::copy_region(x, shape, start, &mut out, region, &zeros, region);
                Storage::Cpu(out.into())
            }
        }
    }

    pub fn index_select(&self, outer: usize, size: usize, inner: usize, idx: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::index_select(x, outer, size, inner, idx).into()),
        }
    }

    pub fn index_add(&self, outer: usize, size: usize, inner: usize, idx: &[usize]) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::index_add(x, outer, size, inner, idx).into()),
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
        match (self, src) {
            (Storage::Cpu(b), Storage::Cpu(s)) => {
                Storage::Cpu(cpu::scatter_add(b, shape, axis, index, index_shape, s).into())
            }
        }
    }

    pub fn conv2d(&self, w: &Storage, bias: Option<&Storage>, g: &ConvGeom) -> Storage {
        match (self, w) {
            (Storage::Cpu(x), Storage::Cpu(w)) => {
                let b = bias.map(|b| match b {
                    Storage::Cpu(b) => &b[..],
                });
                Storage::Cpu(cpu::conv::forward(x, w, b, g).into())
            }
        }
    }

    pub fn conv2d_backward_input(&self, w: &Storage, g: &ConvGeom) -> Storage {
        match (self, w) {
            (Storage::Cpu(dy), Storage::Cpu(w)) => {
                Storage::Cpu(cpu::conv::backward_input(dy, w, g).into())
            }
        }
    }

    pub fn conv2d_backward_weight(&self, dy: &Storage, g: &ConvGeom) -> Storage {
        match (self, dy) {
            (Storage::Cpu(x), Storage::Cpu(dy)) => {
                Storage::Cpu(cpu::conv::backward_weight(x, dy, g).into())
            }
        }
    }

    pub fn max_pool2d(&self, planes: usize, h: usize, w: usize, p: &Pool2dParams) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::pool::max_pool2d(x, planes, h, w, p).into()),
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
        match (self, dy) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                Storage::Cpu(cpu::pool::max_pool2d_backward(x, g, planes, h, w, p).into())
            }
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
        match (self, weight, bias) {
            (Storage::Cpu(x), Storage::Cpu(w), Storage::Cpu(b)) => {
                let r = cpu::norm::batch_norm_train(x, n, c, hw, w, b, eps, act.map(|o| o.code()));
                BnTrain {
                    y: Storage::Cpu(r.y.into()),
                    mean: r.mean,
                    var: r.var,
                    invstd: r.invstd,
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
        match (self, dy, weight) {
            (Storage::Cpu(x), Storage::Cpu(g), Storage::Cpu(w)) => {
                let act = act.map(|(b, op)| match b {
                    Storage::Cpu(b) => (&b[..], op.code()),
                });
                let (dx, dw, db) =
                    cpu::norm::batch_norm_train_backward(x, g, n, c, hw, w, mean, invstd, act);
                (
                    Storage::Cpu(dx.into()),
                    Storage::Cpu(dw.into()),
                    Storage::Cpu(db.into()),
                )
            }
        }
    }

    pub fn softmax(&self, outer: usize, size: usize, inner: usize, log: bool) -> Storage {
        match self {
            Storage::Cpu(x) => Storage::Cpu(cpu::norm::softmax(x, outer, size, inner, log).into()),
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
        match (self, dy) {
            (Storage::Cpu(y), Storage::Cpu(g)) => {
                Storage::Cpu(cpu::norm::softmax_backward(y, g, outer, size, inner, log).into())
            }
        }
    }

    pub fn bce_with_logits(&self, target: &Storage, pos_weight: Option<&Storage>) -> Storage {
        match (self, target) {
            (Storage::Cpu(x), Storage::Cpu(t)) => {
                let pw = pos_weight.map(|p| match p {
                    Storage::Cpu(p) => &p[..],
                });
                Storage::Cpu(cpu::norm::bce_with_logits(x, t, pw).into())
            }
        }
    }
}
