//! Typed errors of the activations crate.

/// Everything parsing, building or running an activation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name matches no known activation; `known` lists the names that would.
    #[error("unknown activation `{name}`; known names: {known}")]
    UnknownActivation {
        /// The text that was given.
        name: String,
        /// Every accepted spelling, comma-separated.
        known: String,
    },
    /// The name is known but its arguments are not (bad number, unknown keyword, …).
    #[error("activation `{spec}`: {detail}")]
    InvalidSpec {
        /// The text that was given.
        spec: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A layer was built or called with a shape it cannot take.
    #[error("{activation}: {detail}")]
    InvalidInput {
        /// The activation's upstream spelling.
        activation: String,
        /// What was wrong.
        detail: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] yolo_tensor::Error),
}

/// Result alias of the activations crate.
pub type Result<T> = std::result::Result<T, Error>;
