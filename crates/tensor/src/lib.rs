//! `yolo-tensor`: the numeric core of yolo-forge.
//!
//! Runtime-shaped, contiguous f32 [`Tensor`]s on a [`Device`], reverse-mode autograd over a
//! dynamic graph, and CPU kernels (rayon-parallel; thread count from `YOLO_THREADS` or
//! [`set_num_threads`]). Every op goes through one backend seam (`storage::Storage`), so a
//! CUDA backend is one more variant there and nothing above this crate branches on the device.
//!
//! CPU GEMM comes from the `gemm` crate, chosen over `matrixmultiply` by measurement on the
//! products convolution runs (`benches/gemm_choice.rs`; numbers in `docs/benchmarks.md`).
//! Convolutions with a 1×1 kernel and stride 1 are GEMMs straight on the input; the others run
//! as tiled im2col + GEMM, one cache-sized band of output rows per task.
//!
//! ```
//! use yolo_tensor::{Conv2dParams, Device, Tensor};
//! let x = Tensor::ones(&[1, 3, 8, 8], Device::Cpu)?;
//! let w = Tensor::full(0.1, &[4, 3, 3, 3], Device::Cpu)?.with_grad();
//! let y = x.conv2d(&w, None, Conv2dParams::new(1, 1))?.silu();
//! y.sum_all()?.backward()?;
//! assert_eq!(w.grad().unwrap().shape(), &[4, 3, 3, 3]);
//! # Ok::<(), yolo_tensor::Error>(())
//! ```

mod alloc;
mod autograd;
mod cpu;
mod cuda;
mod device;
mod error;
pub mod math;
pub mod op;
mod ops;
pub mod shape;
mod storage;
mod tensor;
mod threads;

pub use alloc::AlignedAlloc;
pub use autograd::{
    is_grad_enabled, no_grad, set_backward_profiling, set_grad_enabled, take_backward_profile,
    GradModeGuard,
};
#[doc(hidden)]
pub use cpu::convgemm::set_pointwise_gemm;
#[doc(hidden)]
pub use cpu::direct::{set_direct_conv, set_direct_wgrad};
pub use cpu::simd::{cpu_has_avx512, set_avx512};
#[doc(hidden)]
pub use cpu::winograd::set_winograd;
pub use cuda::{
    cuda_conv_backend, cuda_device_count, cuda_memory_stats, cuda_status, mixed_precision,
    reset_cuda_peak_memory, set_mixed_precision, synchronize, CudaMemoryStats,
};
pub use device::Device;
pub use error::{Error, Result};
pub use op::{BinaryOp, Conv2dParams, ConvGeom, Pool2dParams, ReduceOp, UnaryOp};
pub use ops::AllReduceSum;
pub use tensor::Tensor;
pub use threads::{in_pool, num_threads, set_num_threads, use_private_pool};

/// A buffer of `n` floats for [`Tensor::from_vec`], from the CPU buffer pool when one of that
/// size was freed (contents unspecified: write every element), else freshly zeroed. Reusing
/// freed tensor memory avoids the page faults of a new large allocation (e.g. a data-loader
/// batch every step).
pub fn pooled_buffer(n: usize) -> Vec<f32> {
    cpu::buffer::alloc(n)
}
