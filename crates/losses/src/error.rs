//! Typed errors of the loss crate.

/// Everything a loss computation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor op failed (shape, device…); the inner error names the op.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
    /// An input tensor or configuration value is not what the loss expects.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which input (tensor name or setting).
        what: &'static str,
        /// What was wrong, with the shapes or values seen.
        detail: String,
    },
}

/// Result alias of the loss crate.
pub type Result<T> = std::result::Result<T, LossError>;

pub(crate) fn invalid<T>(what: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(LossError::Invalid {
        what,
        detail: detail.into(),
    })
}
