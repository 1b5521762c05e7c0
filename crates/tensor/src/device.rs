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
    /// The CUDA device `ordinal`, if this build and machine can use it.
    ///
    /// The CUDA backend is not part of this build yet, so this always returns
    /// [`crate::Error::DeviceUnavailable`] with the reason.
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        Err(crate::Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            reason: "the CUDA backend is not implemented in this build (CPU only)".into(),
        })
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
