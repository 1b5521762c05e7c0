//! The CUDA device state: one context, one stream, the NVRTC-compiled kernel module, a cuBLAS
//! handle, cuDNN when it loads, and a caching allocator per GPU; [`CudaBuf`], the device memory
//! behind a tensor.
//!
//! Errors: the tensor API's pointwise and shape ops are infallible, so a failing CUDA call
//! (out of memory, a driver error) is recorded as the device's *sticky error*, the op returns a
//! null buffer and later ops on that device do nothing; the error surfaces, with its text, at
//! the next fallible call (`item`, `backward`, `to_device`, `synchronize`, …), as CUDA's own
//! sticky errors do.
//!
//! The emulator (`YOLO_CUDA_EMULATE=1`, see [`super::emulated`]) is a `Gpu` without driver
//! state: the same kernels compiled as C for the CPU (`build.rs`, one block of one thread),
//! host memory as device memory and a reference column-major GEMM in place of cuBLAS. It runs
//! this backend's own logic — launches, argument packing, GEMM operand mapping, im2col/col2im,
//! allocator — so the op tests can check it against the CPU kernels without a GPU.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaStream, LaunchConfig};

use crate::{Device, Error, Result};

/// The CUDA C source of every kernel.
pub(crate) const KERNELS: &str = include_str!("kernels.cu");

/// Kernel names loaded from the module (each must exist in [`KERNELS`]).
pub(crate) const KERNEL_NAMES: &[&str] = &[
    "unary_fwd",
    "unary_bwd",
    "binary_same",
    "binary_bcast",
    "where_cond",
    "fill",
    "copy_nd",
    "reduce_thread",
    "reduce_block",
    "index_select",
    "index_add",
    "gather",
    "scatter_add",
    "im2col",
    "col2im",
    "add_channel_bias",
    "conv_direct",
    "conv_direct_bwd_input",
    "conv_direct_bwd_weight",
    "channel_sum",
    "bn_stats",
    "bn_apply",
    "bn_bwd_sums",
    "bn_bwd_dx",
    "max_pool_fwd",
    "max_pool_bwd",
    "upsample_fwd",
    "upsample_bwd",
    "softmax_fwd",
    "softmax_bwd",
    "bce_logits",
    "to_bf16",
];

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Compiles [`KERNELS`] to PTX with NVRTC (no GPU needed). `Err` names why: NVRTC library not
/// loadable, or the compiler log.
pub(crate) fn compile_kernels() -> std::result::Result<String, String> {
    catch_unwind(|| {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err("the NVRTC library (libnvrtc.so) could not be loaded".to_string());
        }
        let opts = cudarc::nvrtc::CompileOptions {
            name: Some("yolo_forge_kernels.cu".into()),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts)
            .map(|ptx| ptx.to_src())
            .map_err(|e| format!("NVRTC failed to compile the kernels: {e:?}"))
    })
    .unwrap_or_else(|p| Err(format!("NVRTC misbehaved: {}", panic_text(p))))
}

fn ptx() -> std::result::Result<&'static str, String> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(compile_kernels)
        .as_deref()
        .map_err(|e| e.clone())
}

/// Free lists and counters of one GPU's caching allocator.
#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<sys::CUdeviceptr>>,
    in_use: usize,
    peak: usize,
    cached: usize,
    driver_allocs: usize,
}

/// Bytes the emulator holds from the host allocator.
static EMU_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The emulated device's size: `YOLO_CUDA_EMULATE_MEM_MB`, default unlimited.
fn emu_capacity() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("YOLO_CUDA_EMULATE_MEM_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(usize::MAX / 2, |mb| mb << 20)
    })
}

/// A cuBLAS handle (used under the GPU's mutex only).
struct Blas(blas_sys::cublasHandle_t);
// SAFETY: the handle is only used while holding `Real::blas`'s lock.
unsafe impl Send for Blas {}

/// The driver-side state of a real GPU.
struct Real {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    blas: Mutex<Blas>,
}

/// Everything one GPU needs; `real: None` is the emulator.
pub(crate) struct Gpu {
    pub ordinal: usize,
    real: Option<Real>,
    /// cuDNN, or why it is not used (then convolutions run on im2col + cuBLAS).
    pub dnn: std::result::Result<Mutex<super::cudnn::Dnn>, String>,
    pool: Mutex<Pool>,
    sticky: Mutex<Option<String>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu(cuda:{})", self.ordinal)
    }
}

fn cuda_err(ordinal: usize, what: impl std::fmt::Display) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        reason: what.to_string(),
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static R: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The GPU `ordinal`, initialised on first use (context, kernels, cuBLAS, cuDNN).
pub(crate) fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    if let Some(g) = existing(ordinal) {
        return Ok(g);
    }
    if let Some(reason) = super::unavailable_reason(ordinal) {
        return Err(cuda_err(ordinal, reason));
    }
    let g = if super::emulated() {
        Gpu {
            ordinal,
            real: None,
            dnn: Err("the CUDA emulator has no cuDNN".into()),
            pool: Mutex::new(Pool::default()),
            sticky: Mutex::new(None),
        }
    } else {
        catch_unwind(AssertUnwindSafe(|| Gpu::init(ordinal))).unwrap_or_else(|p| {
            Err(cuda_err(
                ordinal,
                format!("CUDA misbehaved: {}", panic_text(p)),
            ))
        })?
    };
    let g = Arc::new(g);
    Ok(registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(ordinal)
        .or_insert(g)
        .clone())
}

/// The GPU if this process already initialised it.
pub(crate) fn existing(ordinal: usize) -> Option<Arc<Gpu>> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&ordinal)
        .cloned()
}

impl Gpu {
    fn init(ordinal: usize) -> Result<Gpu> {
        let e =
            |what: &str, err: &dyn std::fmt::Debug| cuda_err(ordinal, format!("{what}: {err:?}"));
        let ctx = CudaContext::new(ordinal).map_err(|x| e("creating the CUDA context", &x))?;
        // One stream orders every op, so cudarc's per-buffer events are not needed.
        // SAFETY: no CudaSlice of this context exists yet.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let src = ptx().map_err(|m| cuda_err(ordinal, m))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(src))
            .map_err(|x| e("loading the kernel module", &x))?;
        let mut funcs = HashMap::new();
        for &name in KERNEL_NAMES {
            let f = module
                .load_function(name)
                .map_err(|x| e(&format!("loading kernel {name}"), &x))?;
            funcs.insert(name, f);
        }
        let handle = cudarc::cublas::result::create_handle()
            .map_err(|x| e("creating the cuBLAS handle", &x))?;
        // SAFETY: a valid handle and this context's stream.
        unsafe { cudarc::cublas::result::set_stream(handle, stream.cu_stream() as _) }
            .map_err(|x| e("binding cuBLAS to the stream", &x))?;
        let dnn = super::cudnn::open(stream.cu_stream());
        Ok(Gpu {
            ordinal,
            real: Some(Real {
                ctx,
                stream,
                funcs,
                blas: Mutex::new(Blas(handle)),
            }),
            dnn,
            pool: Mutex::new(Pool::default()),
            sticky: Mutex::new(None),
        })
    }

    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// An error of this GPU (`DeviceUnavailable` naming `cuda:N` and `what`).
    pub fn err(&self, what: impl std::fmt::Display) -> Error {
        cuda_err(self.ordinal, what)
    }

    /// Records the first failure; later ops on this GPU do nothing until it is taken.
    pub fn fail(&self, e: &Error) {
        let mut s = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(e.to_string());
        }
    }

    /// `Err` when an earlier op failed (the error stays until [`Gpu::take_error`]).
    pub fn check(&self) -> Result<()> {
        match &*self.sticky.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(m) => Err(self.err(format!("an earlier CUDA operation failed: {m}"))),
        }
    }

    /// Returns and clears the sticky error.
    pub fn take_error(&self) -> Result<()> {
        match self.sticky.lock().unwrap_or_else(|e| e.into_inner()).take() {
            None => Ok(()),
            Some(m) => Err(self.err(format!("a CUDA operation failed: {m}"))),
        }
    }

    /// Makes this GPU's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        match &self.real {
            None => Ok(()),
            Some(r) => r
                .ctx
                .bind_to_thread()
                .map_err(|e| self.err(format!("binding the context: {e:?}"))),
        }
    }

    /// Waits for every queued kernel and copy.
    pub fn synchronize(&self) -> Result<()> {
        let Some(r) = &self.real else { return Ok(()) };
        self.bind()?;
        r.stream
            .synchronize()
            .map_err(|e| self.err(format!("synchronize: {e:?}")))
    }

    /// `n` floats of device memory (contents unspecified).
    pub fn alloc(self: &Arc<Self>, n: usize) -> Result<CudaBuf> {
        self.check()?;
        self.alloc_bytes(n * 4).map(|(ptr, bytes)| CudaBuf {
            gpu: self.clone(),
            ptr,
            len: n,
            bytes,
        })
    }

    /// Raw device bytes from the free lists or the driver (rounded up to 512 bytes).
    pub fn alloc_bytes(&self, want: usize) -> Result<(sys::CUdeviceptr, usize)> {
        if want == 0 {
            return Ok((0, 0));
        }
        let bytes = want.div_ceil(512) * 512;
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let reused = p.free.get_mut(&bytes).and_then(|v| v.pop());
        let ptr = match reused {
            Some(ptr) => {
                p.cached -= bytes;
                ptr
            }
            None => {
                self.bind()?;
                let ptr = match self.raw_alloc(bytes) {
                    Ok(ptr) => ptr,
                    Err(_) => {
                        // Out of memory: give the cached blocks back and try once more.
                        self.release_cached(&mut p);
                        self.raw_alloc(bytes).map_err(|e| {
                            self.err(format!(
                                "out of device memory allocating {:.1} MiB ({e}); {:.1} MiB in use",
                                bytes as f64 / 1048576.0,
                                p.in_use as f64 / 1048576.0
                            ))
                        })?
                    }
                };
                p.driver_allocs += 1;
                ptr
            }
        };
        p.in_use += bytes;
        p.peak = p.peak.max(p.in_use);
        Ok((ptr, bytes))
    }

    /// A fresh block from the driver (emulator: from the host allocator, 256-byte aligned).
    fn raw_alloc(&self, bytes: usize) -> std::result::Result<sys::CUdeviceptr, String> {
        match &self.real {
            // SAFETY: plain allocation in the bound context.
            Some(_) => unsafe { result::malloc_sync(bytes) }.map_err(|e| format!("{e:?}")),
            None => {
                // The emulator's "device" can be given a size (YOLO_CUDA_EMULATE_MEM_MB) so
                // that out-of-memory handling can be tested.
                let held = EMU_BYTES.load(Ordering::Relaxed);
                if held + bytes > emu_capacity() {
                    return Err(format!(
                        "CUDA_ERROR_OUT_OF_MEMORY (emulated device of {} MiB)",
                        emu_capacity() >> 20
                    ));
                }
                let layout =
                    std::alloc::Layout::from_size_align(bytes, 256).map_err(|e| e.to_string())?;
                // SAFETY: non-zero size (callers skip empty buffers).
                let p = unsafe { std::alloc::alloc(layout) };
                if p.is_null() {
                    Err("host allocation failed".into())
                } else {
                    EMU_BYTES.fetch_add(bytes, Ordering::Relaxed);
                    Ok(p as u64)
                }
            }
        }
    }

    fn release_cached(&self, p: &mut Pool) {
        let _ = self.synchronize();
        for (bytes, ptrs) in p.free.drain() {
            for ptr in ptrs {
                // SAFETY: cached blocks belong to no buffer and the stream is idle; emulated
                // blocks were allocated with exactly this size and alignment.
                unsafe {
                    match &self.real {
                        Some(_) => {
                            let _ = result::free_sync(ptr);
                        }
                        None => {
                            std::alloc::dealloc(
                                ptr as *mut u8,
                                std::alloc::Layout::from_size_align_unchecked(bytes, 256),
                            );
                            EMU_BYTES.fetch_sub(bytes, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        p.cached = 0;
    }

    /// Returns a block to the free lists (the stream orders its reuse after earlier kernels).
    pub fn release(&self, ptr: sys::CUdeviceptr, bytes: usize) {
        if ptr == 0 {
            return;
        }
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        p.in_use = p.in_use.saturating_sub(bytes);
        p.cached += bytes;
        p.free.entry(bytes).or_default().push(ptr);
    }

    pub fn stats(&self) -> super::CudaMemoryStats {
        let p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        super::CudaMemoryStats {
            in_use: p.in_use,
            peak: p.peak,
            cached: p.cached,
            driver_allocs: p.driver_allocs,
        }
    }

    pub fn reset_peak(&self) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        p.peak = p.in_use;
    }

    /// Launches kernel `name` with CUDA's kernel-parameter array (pointers to each value).
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in number and type, and every device pointer
    /// among them must cover what the kernel reads and writes.
    pub unsafe fn launch_raw(
        &self,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [*mut std::ffi::c_void],
    ) -> Result<()> {
        let Some(r) = &self.real else {
            let cname = std::ffi::CString::new(name).map_err(|e| self.err(e))?;
            return match super::emu::yf_emu_launch(cname.as_ptr(), args.as_mut_ptr()) {
                0 => Ok(()),
                _ => Err(self.err(format!("the emulator has no kernel {name}"))),
            };
        };
        let f = r
            .funcs
            .get(name)
            .ok_or_else(|| self.err(format!("kernel {name} is not loaded")))?;
        self.bind()?;
        result::launch_kernel(
            f.cu_function(),
            cfg.grid_dim,
            cfg.block_dim,
            cfg.shared_mem_bytes,
            r.stream.cu_stream(),
            args,
        )
        .map_err(|e| self.err(format!("launching {name}: {e:?}")))
    }

    /// Host → device copy into a new buffer.
    pub fn upload(self: &Arc<Self>, data: &[f32]) -> Result<CudaBuf> {
        let buf = self.alloc(data.len())?;
        // SAFETY: `buf` holds `data.len()` floats; the copy completes before return.
        unsafe { self.htod(buf.ptr, data.as_ptr() as *const u8, data.len() * 4)? };
        Ok(buf)
    }

    /// Host → device copy of 64-bit indices (kernels read `long long`).
    pub fn upload_index(self: &Arc<Self>, idx: &[usize]) -> Result<IndexBuf> {
        let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let (ptr, bytes) = self.alloc_bytes(v.len() * 8)?;
        let out = IndexBuf {
            gpu: self.clone(),
            ptr,
            bytes,
        };
        // SAFETY: `ptr` holds `v.len()` i64s; the copy completes before return.
        unsafe { self.htod(ptr, v.as_ptr() as *const u8, v.len() * 8)? };
        Ok(out)
    }

    /// Device → host copy.
    pub fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        self.check()?;
        let mut v = vec![0.0f32; buf.len];
        // SAFETY: `v` has room for the buffer; the copy completes before return.
        unsafe { self.dtoh(v.as_mut_ptr() as *mut u8, buf.ptr, buf.len * 4)? };
        Ok(v)
    }

    /// Device → device copy of `n` floats.
    pub fn copy(&self, dst: u64, src: u64, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: callers pass buffers of at least `n` floats.
        unsafe {
            match &self.real {
                None => {
                    std::ptr::copy(src as *const u8, dst as *mut u8, n * 4);
                    Ok(())
                }
                Some(r) => {
                    self.bind()?;
                    result::memcpy_dtod_async(dst, src, n * 4, r.stream.cu_stream())
                        .map_err(|e| self.err(format!("device→device copy: {e:?}")))
                }
            }
        }
    }

    /// Blocking host → device copy of `bytes` bytes.
    ///
    /// # Safety
    /// `dst` must hold `bytes` bytes of this GPU; `src` must be readable for `bytes`.
    unsafe fn htod(&self, dst: u64, src: *const u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match &self.real {
            None => {
                std::ptr::copy_nonoverlapping(src, dst as *mut u8, bytes);
                Ok(())
            }
            Some(r) => {
                self.bind()?;
                let host = std::slice::from_raw_parts(src, bytes);
                result::memcpy_htod_async(dst, host, r.stream.cu_stream())
                    .map_err(|e| self.err(format!("host→device copy: {e:?}")))?;
                self.synchronize()
            }
        }
    }

    /// Blocking device → host copy of `bytes` bytes.
    ///
    /// # Safety
    /// `src` must hold `bytes` bytes of this GPU; `dst` must be writable for `bytes`.
    unsafe fn dtoh(&self, dst: *mut u8, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match &self.real {
            None => {
                std::ptr::copy_nonoverlapping(src as *const u8, dst, bytes);
                Ok(())
            }
            Some(r) => {
                self.bind()?;
                let host = std::slice::from_raw_parts_mut(dst, bytes);
                result::memcpy_dtoh_async(host, src, r.stream.cu_stream())
                    .map_err(|e| self.err(format!("device→host copy: {e:?}")))?;
                self.synchronize()
            }
        }
    }

    /// Runs `f` with the cuBLAS handle (`None` on the emulator).
    pub fn with_blas<R>(&self, f: impl FnOnce(Option<blas_sys::cublasHandle_t>) -> R) -> Result<R> {
        let Some(r) = &self.real else {
            return Ok(f(None));
        };
        self.bind()?;
        let h = r.blas.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(Some(h.0)))
    }
}

/// A 1-D launch over `n` items: 256 threads per block, grid-stride beyond 2^20 blocks.
pub(crate) fn cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One 256-thread block per item (block reductions), at most 65 535 blocks.
pub(crate) fn cfg_blocks(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches a kernel: `launch!(gpu, "name", cfg, arg, arg, …)`. Each argument is bound to a
/// local that lives through the launch and passed by pointer (CUDA's kernelParams).
macro_rules! launch {
    (@go $gpu:expr, $name:expr, $cfg:expr; [$($bound:ident)*];) => {{
        let gpu: &crate::cuda::backend::Gpu = &$gpu;
        let mut args: Vec<*mut std::ffi::c_void> =
            vec![$( &$bound as *const _ as *mut std::ffi::c_void ),*];
        // SAFETY: argument types match the kernel's signature in kernels.cu (counts checked by
        // a unit test, values by the emulated and the GPU op tests); pointers are live device
        // buffers of the sizes the kernel reads.
        unsafe { gpu.launch_raw($name, $cfg, &mut args) }?;
    }};
    (@go $gpu:expr, $name:expr, $cfg:expr; [$($bound:ident)*]; $head:expr $(, $tail:expr)*) => {{
        let arg = $head;
        crate::cuda::backend::launch!(@go $gpu, $name, $cfg; [$($bound)* arg]; $($tail),*)
    }};
    ($gpu:expr, $name:expr, $cfg:expr $(, $arg:expr)* $(,)?) => {
        crate::cuda::backend::launch!(@go $gpu, $name, $cfg; []; $($arg),*)
    };
}
pub(crate) use launch;

/// Device memory of one tensor: `len` floats at `ptr` (0 when `len` is 0 or after a failure).
pub(crate) struct CudaBuf {
    pub gpu: Arc<Gpu>,
    pub ptr: sys::CUdeviceptr,
    pub len: usize,
    bytes: usize,
}

impl CudaBuf {
    /// A placeholder after a failed op: no memory, the GPU's sticky error explains why.
    pub fn null(gpu: &Arc<Gpu>, len: usize) -> CudaBuf {
        CudaBuf {
            gpu: gpu.clone(),
            ptr: 0,
            len,
            bytes: 0,
        }
    }
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        self.gpu.release(self.ptr, self.bytes);
    }
}

impl std::fmt::Debug for CudaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuf(cuda:{}, {} floats)", self.gpu.ordinal, self.len)
    }
}

impl Clone for CudaBuf {
    fn clone(&self) -> CudaBuf {
        let r = (|| {
            let out = self.gpu.alloc(self.len)?;
            self.gpu.copy(out.ptr, self.ptr, self.len)?;
            Ok(out)
        })();
        r.unwrap_or_else(|e: Error| {
            self.gpu.fail(&e);
            CudaBuf::null(&self.gpu, self.len)
        })
    }
}

/// Device copy of an index list (back to the pool on drop).
pub(crate) struct IndexBuf {
    gpu: Arc<Gpu>,
    pub ptr: sys::CUdeviceptr,
    bytes: usize,
}

impl Drop for IndexBuf {
    fn drop(&mut self) {
        self.gpu.release(self.ptr, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels compile with NVRTC and export every kernel the backend loads. Needs only
    /// the NVRTC library (no GPU): CI installs it from PyPI (`nvidia-cuda-nvrtc`); elsewhere
    /// the test says why it is skipped, and fails instead with `YOLO_REQUIRE_NVRTC=1`.
    #[test]
    fn kernels_compile_with_nvrtc() {
        match compile_kernels() {
            Ok(ptx) => {
                for name in KERNEL_NAMES {
                    assert!(
                        ptx.contains(&format!(".entry {name}(")),
                        "kernel {name} missing from the PTX"
                    );
                }
                let entries = ptx.matches(".entry ").count();
                assert_eq!(
                    entries,
                    KERNEL_NAMES.len(),
                    "PTX has kernels the backend does not load"
                );
                println!(
                    "NVRTC compiled {entries} kernels ({} bytes of PTX)",
                    ptx.len()
                );
            }
            Err(why)
                if why.contains("could not be loaded")
                    && std::env::var("YOLO_REQUIRE_NVRTC").is_err() =>
            {
                println!("skipped: {why} (set LD_LIBRARY_PATH to a CUDA 13 lib folder to run it)");
            }
            Err(why) => panic!("{why}"),
        }
    }

    /// Splits `s` at top-level commas (outside brackets).
    fn split_top(s: &str) -> Vec<String> {
        let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
        for ch in s.chars() {
            match ch {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
            if ch == ',' && depth == 0 {
                out.push(cur.trim().to_string());
                cur.clear();
            } else {
                cur.push(ch);
            }
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
        out
    }

    /// Every `launch!` in `ops.rs` passes as many arguments as its kernel declares, and every
    /// kernel the backend loads is declared: a mismatch would corrupt the launch on a GPU, which
    /// no CPU test could otherwise see.
    #[test]
    fn launches_match_kernel_signatures() {
        let mut params: HashMap<String, usize> = HashMap::new();
        for part in KERNELS.split("extern \"C\" __global__ void ").skip(1) {
            let name = part[..part.find('(').unwrap()].trim().to_string();
            let body = &part[part.find('(').unwrap() + 1..part.find(')').unwrap()];
            params.insert(name, split_top(body).len());
        }
        for name in KERNEL_NAMES {
            assert!(
                params.contains_key(*name),
                "kernel {name} not declared in kernels.cu"
            );
        }
        let ops = include_str!("ops.rs");
        let mut checked = 0;
        let mut rest = ops;
        while let Some(at) = rest.find("launch!(") {
            let open = at + "launch!(".len();
            let mut depth = 1;
            let mut end = open;
            for (i, ch) in rest[open..].char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            let args = split_top(&rest[open..end]);
            let name = args[1].trim_matches('"');
            let want = params
                .get(name)
                .unwrap_or_else(|| panic!("launch of unknown kernel {name}"));
            assert_eq!(args.len() - 3, *want, "launch of {name}: argument count");
            checked += 1;
            rest = &rest[end..];
        }
        assert!(checked >= 30, "only {checked} launches found");
    }
}
