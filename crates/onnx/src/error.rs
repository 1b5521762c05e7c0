//! Errors of building, encoding and decoding ONNX models.

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// An op's inputs do not fit its rules (shapes, counts, attributes).
    #[error("ONNX {op}: {detail}")]
    Shape {
        /// The op type (`Conv`, `Concat`, …).
        op: String,
        /// What does not fit.
        detail: String,
    },
    /// A value name used twice, or one that the graph does not hold.
    #[error("ONNX graph: {0}")]
    Graph(String),
    /// Bytes that are not a well-formed protobuf message of the expected type.
    #[error("ONNX decode error at byte {offset}: {detail}")]
    Decode {
        /// Offset into the message being read.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, OnnxError>;

pub(crate) fn shape_err<T>(op: &str, detail: impl Into<String>) -> Result<T> {
    Err(OnnxError::Shape {
        op: op.to_string(),
        detail: detail.into(),
    })
}
