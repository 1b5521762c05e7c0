//! CUDA through cudarc: the presence check (this file), the device state and caching allocator
//! (`backend`), the kernels (`kernels.cu`, compiled by NVRTC at run time) and the storage ops
//! (`ops`).
//!
//! cudarc loads `libcuda` at run time, so every build compiles this code and a machine without
//! an NVIDIA driver simply reports that it has none. cudarc panics when a library it needs is
//! missing, so the driver library is probed first (`is_culib_present`) and every driver call
//! runs under `catch_unwind`: nothing here panics on a machine without a GPU.
//! The result is probed once per process and cached.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use cudarc::driver::{result, sys};

/// One GPU as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GpuInfo {
    pub name: String,
    pub total_mem: usize,
}

/// What the CUDA driver said when asked once.
#[derive(Clone, Debug)]
pub(crate) enum Probe {
    /// The driver library could not be loaded (no NVIDIA driver).
    NoDriver(String),
    /// The library loaded but the driver failed (cuInit, device count, …).
    DriverError(String),
    /// The driver works; zero or more devices.
    Ready {
        /// `cuDriverGetVersion`: 1000 × major + 10 × minor.
        driver_version: i32,
        gpus: Vec<GpuInfo>,
    },
}

/// The cached probe of this process.
pub(crate) fn probe() -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        catch_unwind(AssertUnwindSafe(probe_now)).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Probe::DriverError(format!("the CUDA driver library misbehaved: {msg}"))
        })
    })
}

fn lib_names() -> String {
    let names = cudarc::get_lib_name_candidates("cuda");
    let mut shown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("libcuda.so") || n.ends_with(".dll"))
        .collect();
    shown.dedup();
    if shown.is_empty() {
        "libcuda".into()
    } else {
        shown.join(", ")
    }
}

fn probe_now() -> Probe {
    if emulated() {
        return Probe::Ready {
            driver_version: 0,
            gpus: vec![GpuInfo {
                name: "yolo-forge CUDA emulator (CUDA kernels compiled for the CPU; YOLO_CUDA_EMULATE=1)"
                    .into(),
                total_mem: 0,
            }],
        };
    }
    // SAFETY: only tries to open the library with libloading; it is dropped right away.
    if !unsafe { sys::is_culib_present() } {
        return Probe::NoDriver(format!(
            "libcuda.so could not be loaded: no NVIDIA driver on this machine (tried {})",
            lib_names()
        ));
    }
    if let Err(e) = result::init() {
        return Probe::DriverError(format!("cuInit failed: {e}"));
    }
    let mut version = 0i32;
    // SAFETY: the driver writes one int through a valid pointer.
    let driver_version = match unsafe { sys::cuDriverGetVersion(&mut version).result() } {
        Ok(()) => version,
        Err(e) => return Probe::DriverError(format!("cuDriverGetVersion failed: {e}")),
    };
    let count = match result::device::get_count() {
        Ok(n) => n.max(0),
        Err(e) => return Probe::DriverError(format!("cuDeviceGetCount failed: {e}")),
    };
    let mut gpus = Vec::new();
    for i in 0..count {
        let dev = match result::device::get(i) {
            Ok(d) => d,
            Err(e) => return Probe::DriverError(format!("cuDeviceGet({i}) failed: {e}")),
        };
        let name = result::device::get_name(dev).unwrap_or_else(|e| format!("<name: {e}>"));
        // SAFETY: `dev` came from cuDeviceGet.
        let total_mem = unsafe { result::device::total_mem(dev) }.unwrap_or(0);
        gpus.push(GpuInfo { name, total_mem });
    }
    Probe::Ready {
        driver_version,
        gpus,
    }
}

/// Why device `ordinal` cannot be used, or `None` when it can.
pub(crate) fn unavailable_reason(ordinal: usize) -> Option<String> {
    match probe() {
        Probe::NoDriver(why) | Probe::DriverError(why) => Some(why.clone()),
        Probe::Ready { gpus, .. } if ordinal >= gpus.len() => Some(format!(
            "device {ordinal} requested but {} GPU{} found{}",
            gpus.len(),
            if gpus.len() == 1 { "" } else { "s" },
            if gpus.is_empty() {
                String::new()
            } else {
                format!(" (valid ordinals: 0..={})", gpus.len() - 1)
            }
        )),
        Probe::Ready { .. } => None,
    }
}

/// Number of CUDA devices the driver reports (0 without a driver or on any driver error).
pub fn cuda_device_count() -> usize {
    match probe() {
        Probe::Ready { gpus, .. } => gpus.len(),
        _ => 0,
    }
}

/// A human-readable account of CUDA on this machine: driver version and device names, or why
/// there are none.
pub fn cuda_status() -> String {
    match probe() {
        Probe::NoDriver(why) => format!("CUDA: not available: {why}"),
        Probe::DriverError(why) => format!("CUDA: driver present but unusable: {why}"),
        Probe::Ready {
            driver_version,
            gpus,
        } => {
            let v = format!("{}.{}", driver_version / 1000, (driver_version % 1000) / 10);
            if gpus.is_empty() {
                return format!("CUDA: driver for CUDA {v} loaded, but no CUDA devices found");
            }
            let mut s = format!(
                "CUDA: driver for CUDA {v}, {} device{}",
                gpus.len(),
                if gpus.len() == 1 { "" } else { "s" }
            );
            for (i, g) in gpus.iter().enumerate() {
                s.push_str(&format!(
                    "\n  cuda:{i}  {}  {:.1} GiB",
                    g.name,
                    g.total_mem as f64 / (1u64 << 30) as f64
                ));
            }
            s
        }
    }
}

/// Device-memory counters of one GPU's caching allocator, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaMemoryStats {
    /// Bytes held by live tensors now.
    pub in_use: usize,
    /// Highest `in_use` since the process started or [`reset_cuda_peak_memory`].
    pub peak: usize,
    /// Bytes kept in the allocator's free lists for reuse (allocated from the driver, idle).
    pub cached: usize,
    /// Calls to the driver's allocator so far (constant once a training loop is warm).
    pub driver_allocs: usize,
}

/// The caching allocator's counters for `cuda:ordinal`, or `None` when that device was never
/// used by this process (or there is no GPU).
pub fn cuda_memory_stats(ordinal: usize) -> Option<CudaMemoryStats> {
    backend::existing(ordinal).map(|g| g.stats())
}

/// Sets the peak counter of `cuda:ordinal` to its current use.
pub fn reset_cuda_peak_memory(ordinal: usize) {
    if let Some(g) = backend::existing(ordinal) {
        g.reset_peak();
    }
}

static MIXED_PRECISION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches mixed precision for CUDA convolutions and matrix products (upstream's `--amp`):
/// inputs rounded to bf16, products accumulated in f32, outputs stored in f32. CPU kernels
/// always run in f32 and ignore it. Process-wide; off by default.
pub fn set_mixed_precision(on: bool) {
    MIXED_PRECISION.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether mixed precision is on (see [`set_mixed_precision`]).
pub fn mixed_precision() -> bool {
    MIXED_PRECISION.load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until every kernel queued on `device` has finished (no-op on the CPU); for timing.
pub fn synchronize(device: crate::Device) -> crate::Result<()> {
    match device {
        crate::Device::Cpu => Ok(()),
        crate::Device::Cuda(n) => {
            let g = backend::gpu(n)?;
            g.synchronize()?;
            g.take_error()
        }
    }
}

pub(crate) mod backend;
pub(crate) mod cudnn;
pub(crate) mod emu;
pub(crate) mod ops;

/// Whether this process runs the CUDA emulator (`YOLO_CUDA_EMULATE=1`): one device, `cuda:0`,
/// whose kernels are the CUDA sources compiled for the CPU. For testing the backend on
/// machines without a GPU; it is slow and has no cuDNN or NCCL.
pub(crate) fn emulated() -> bool {
    static E: OnceLock<bool> = OnceLock::new();
    *E.get_or_init(|| std::env::var("YOLO_CUDA_EMULATE").is_ok_and(|v| v == "1"))
}

/// How `cuda:ordinal` runs convolutions ("cuDNN" or "im2col + cuBLAS (reason)"), once this
/// process has used that device; `None` before.
pub fn cuda_conv_backend(ordinal: usize) -> Option<String> {
    backend::existing(ordinal).map(|g| match &g.dnn {
        Ok(_) => "cuDNN".to_string(),
        Err(why) => format!("im2col + cuBLAS ({why})"),
    })
}
