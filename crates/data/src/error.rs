//! Typed errors of the data pipeline. Each variant names the file it concerns.

use std::path::PathBuf;

/// Everything loading a dataset can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML file is not valid YAML (the message carries line and column).
    #[error("{path}: invalid YAML: {source}")]
    Yaml {
        /// The YAML file.
        path: PathBuf,
        /// The parser's error, with its location.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A configuration file parsed but holds something unexpected.
    #[error("{path}: {detail}")]
    Config {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong and what was expected.
        detail: String,
    },
    /// A dataset source (folder, list file or image) does not exist.
    #[error("dataset source {path} does not exist")]
    SourceNotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// No image file was found under the given sources.
    #[error("no images found in {sources:?} (formats: {formats})")]
    NoImages {
        /// The sources searched.
        sources: Vec<PathBuf>,
        /// The accepted file extensions.
        formats: String,
    },
    /// Images were found, but none of them could be used.
    #[error("no usable images in {sources:?}: {summary}")]
    NoUsableImages {
        /// The sources searched.
        sources: Vec<PathBuf>,
        /// The scan summary: counts and the first bad files with reasons.
        summary: String,
    },
    /// Training needs labels, but every image is background.
    #[error("no labels found for {sources:?}: every image is background; cannot train")]
    NoLabels {
        /// The sources searched.
        sources: Vec<PathBuf>,
    },
    /// An image file could not be decoded.
    #[error("{path}: cannot decode image: {detail}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// A label file is malformed (only raised by the strict parsing API).
    #[error("{path}:{line}: {detail}")]
    Label {
        /// The label file.
        path: PathBuf,
        /// 1-based line number (0 when the problem concerns the whole file).
        line: usize,
        /// What was wrong and what was expected.
        detail: String,
    },
    /// A label cache file is unreadable or stale.
    #[error("{path}: label cache unusable: {detail}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why it cannot be used.
        detail: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("{what}: {detail}")]
    InvalidArgument {
        /// The function or option concerned.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Building a tensor failed.
    #[error("tensor: {0}")]
    Tensor(#[from] yolo_tensor::Error),
    /// A loader worker thread died.
    #[error("loader worker failed: {0}")]
    Worker(String),
}

/// Result alias of the data pipeline.
pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
