//! Typed errors of the tensor core.

use crate::Device;

/// Everything a tensor operation can fail with. Each variant names the op.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two or more operands have shapes the op cannot combine.
    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch {
        /// The operation that failed.
        op: &'static str,
        /// Which shapes were given and what was expected.
        detail: String,
    },
    /// An argument (axis, stride, index, size…) is out of range or inconsistent.
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The operands live on different devices.
    #[error("{op}: operands on different devices ({lhs} and {rhs})")]
    DeviceMismatch {
        /// The operation that failed.
        op: &'static str,
        /// Device of the first operand.
        lhs: Device,
        /// Device of the offending operand.
        rhs: Device,
    },
    /// The requested device cannot be used on this machine.
    #[error("device {device} is unavailable: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: Device,
        /// Why it cannot be used.
        reason: String,
    },
    /// Autograd was asked for something it cannot do.
    #[error("backward: {0}")]
    Backward(String),
}

/// Result alias of the tensor core.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::ShapeMismatch {
        op,
        detail: detail.into(),
    })
}

pub(crate) fn arg_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(Error::InvalidArgument {
        op,
        detail: detail.into(),
    })
}
