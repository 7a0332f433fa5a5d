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
    /// A setting out of its range (training, occlusion, device).
    #[error("{0}")]
    Config(String),
    /// A data set folder that cannot be used.
    #[error("{0}")]
    Dataset(String),
    /// A probe index that does not fit the weights, the images or the model.
    #[error("{0}")]
    Index(String),
    /// A training run directory that cannot be created or resumed.
    #[error("{0}")]
    Run(String),
    /// Anything else invalid, said in words.
    #[error("{0}")]
    Invalid(String),
    #[error("unknown layer '{0}': use conv1…conv5 (or 1…5)")]
    UnknownLayer(String),
    #[error("{layer} has {maps} feature maps (0…{}); there is no map {map}", maps.saturating_sub(1))]
    MapOutOfRange {
        layer: &'static str,
        maps: usize,
        map: usize,
    },
    #[error("x and y must be below {width} and {height} for {layer}")]
    PositionOutOfRange {
        layer: &'static str,
        height: usize,
        width: usize,
    },
    /// Long work stopped because its caller asked it to.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
