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
    /// A configuration file (hyp YAML…) could not be read or is not what was expected.
    #[error("{file}: {detail}")]
    Config {
        /// The file.
        file: String,
        /// What was wrong, with line and column when known.
        detail: String,
    },
    /// A file could not be read or written, or a line of it is malformed.
    #[error("{path}: {detail}")]
    File {
        /// The file (and line, when the problem is one line).
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// Building, running or loading a model failed.
    #[error(transparent)]
    Model(#[from] yolo_models::ModelError),
    /// Reading or preparing the dataset failed.
    #[error(transparent)]
    Data(#[from] yolo_data::DataError),
    /// A loss setting was rejected.
    #[error(transparent)]
    Loss(#[from] yolo_losses::LossError),
    /// A data-parallel collective or setting failed.
    #[error(transparent)]
    Dist(#[from] yolo_dist::DistError),
}

/// Result alias of the training tools.
pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn invalid<T>(what: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(TrainError::Invalid {
        what,
        detail: detail.into(),
    })
}
