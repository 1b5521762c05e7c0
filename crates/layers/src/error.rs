//! Errors of building or running a layer.

/// What can go wrong in a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
    /// An activation could not be built.
    #[error(transparent)]
    Activation(#[from] yolo_activations::Error),
    /// Bad constructor arguments or inputs.
    #[error("{0}")]
    Invalid(String),
    /// Building the ONNX graph failed (shapes that do not fit, a name used twice).
    #[error(transparent)]
    Onnx(#[from] yolo_onnx::OnnxError),
    /// A block or activation (named here) that has no ONNX export yet.
    #[error("{0}: ONNX export does not support it yet")]
    Unsupported(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, LayerError>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(LayerError::Invalid(msg.into()))
}
