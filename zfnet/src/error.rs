use thiserror::Error;

/// Everything the model crate can fail with. Messages name the file, tensor or size at fault.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path}: {message}")]
    Manifest { path: String, message: String },
    #[error("weights: {0}")]
    Weights(String),
    #[error("shape: {0}")]
    Shape(String),
    #[error("image: {0}")]
    Image(#[from] crate::preprocess::ImageError),
    #[error("{0}")]
    Invalid(String),
    /// Long work stopped because its caller asked it to.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
