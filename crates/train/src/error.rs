//! Typed errors of the training tools.

/// Everything post-processing and metrics can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor op failed; the inner error names the op.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
    /// An input or setting is not what the function expects.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which input (tensor name or setting).
        what: &'static str,
        /// What was wrong, with the shapes or values seen.
        detail: String,
    },
}

/// Result alias of the training tools.
pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn invalid<T>(what: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(TrainError::Invalid {
        what,
        detail: detail.into(),
    })
}
