//! Where a tensor's data lives.

use std::fmt;

/// A compute device. Every op dispatches on the device of its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, CPU kernels (rayon-parallel).
    #[default]
    Cpu,
    /// NVIDIA GPU with the given ordinal (CUDA backend).
    Cuda(usize),
}

impl Device {
    /// The CUDA device `ordinal`, if the CUDA driver loads and reports that device.
    ///
    /// Errors with [`crate::Error::DeviceUnavailable`] naming the reason (no driver library,
    /// driver failure, ordinal out of range). The CUDA op backend is not built yet, so ops on
    /// an available CUDA device still error when they run.
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        match crate::cuda::unavailable_reason(ordinal) {
            None => Ok(Device::Cuda(ordinal)),
            Some(reason) => Err(crate::Error::DeviceUnavailable {
                device: Device::Cuda(ordinal),
                reason,
            }),
        }
    }

    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
