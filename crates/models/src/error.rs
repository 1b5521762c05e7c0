//! Errors of model building and weight loading.

use std::path::Path;

/// What can go wrong building a model or reading its files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax error.
    #[error("{}YAML syntax error{}: {message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default(), match (line, column) { (Some(l), Some(c)) => format!(" at line {l}, column {c}"), _ => String::new() })]
    Yaml {
        /// The file, when known.
        file: Option<String>,
        /// 1-based line.
        line: Option<usize>,
        /// 1-based column.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// Valid YAML that does not fit the model schema.
    #[error("{}{message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Schema {
        /// The file, when known.
        file: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A row of backbone/head could not be built.
    #[error("{}layer {index} ({module}): {message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Row {
        /// Row index (backbone rows first, then head rows).
        index: usize,
        /// Module name of the row.
        module: String,
        /// What is wrong.
        message: String,
        #[doc(hidden)]
        file: Option<String>,
    },
    /// A tensor op failed while building or running the model.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
    /// A layer failed.
    #[error(transparent)]
    Layer(#[from] yolo_layers::LayerError),
    /// Weights that do not fit the model.
    #[error("{0}")]
    Weights(String),
    /// The model cannot be exported as asked (ONNX input size, graph building).
    #[error("ONNX export: {0}")]
    Export(String),
}

impl From<yolo_onnx::OnnxError> for ModelError {
    fn from(e: yolo_onnx::OnnxError) -> ModelError {
        ModelError::Export(e.to_string())
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn schema(message: impl Into<String>) -> ModelError {
        ModelError::Schema {
            file: None,
            message: message.into(),
        }
    }

    pub(crate) fn in_file(self, path: &Path) -> ModelError {
        let p = Some(path.display().to_string());
        match self {
            ModelError::Yaml {
                line,
                column,
                message,
                ..
            } => ModelError::Yaml {
                file: p,
                line,
                column,
                message,
            },
            ModelError::Schema { message, .. } => ModelError::Schema { file: p, message },
            ModelError::Row {
                index,
                module,
                message,
                ..
            } => ModelError::Row {
                index,
                module,
                message,
                file: p,
            },
            other => other,
        }
    }
}
