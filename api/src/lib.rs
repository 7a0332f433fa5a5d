//! The wire types of the zfvis REST API.
//!
//! This crate is deliberately tiny and candle-free: the server serialises these types and the
//! wasm UI deserialises the very same ones, so a field renamed here breaks both at compile time.

use serde::{Deserialize, Serialize};

/// `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// `"cpu"` or `"cuda:N"`.
    pub device: String,
}

/// `GET /api/model`: what the loaded network looks like.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    /// `"zfnet"` or `"alexnet"`.
    pub architecture: String,
    pub name: String,
    /// False for the seeded random-init placeholder: its visualisations mean nothing.
    pub trained: bool,
    /// One sentence on where the weights came from.
    pub provenance: String,
    /// Hex SHA-256 of the weights file.
    pub weights_sha256: String,
    pub parameters: u64,
    pub input_size: u32,
    pub layers: Vec<LayerInfo>,
    pub classes: Vec<ClassInfo>,
}

/// One layer of the network as the API names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerInfo {
    /// `conv1`…`conv5`, `fc6`…`fc8`.
    pub name: String,
    pub kind: LayerKind,
    /// Output shape without the batch dimension: `[channels, height, width]` for conv layers
    /// (the rectified conv output, before LRN and pooling), `[features]` for fc layers.
    pub output_shape: Vec<usize>,
    /// Kernel size, stride and padding of conv layers; `None` for fc layers.
    pub kernel: Option<u32>,
    pub stride: Option<u32>,
    pub padding: Option<u32>,
    /// Output shape after the max pool that follows this layer, if one does.
    pub pooled_shape: Option<Vec<usize>>,
    /// Whether local response normalisation follows the ReLU.
    pub lrn: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Conv,
    Fc,
}

/// A class the model predicts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassInfo {
    pub index: usize,
    /// WordNet id, e.g. `n01440764`; folder names of ImageNet-style data sets.
    pub wnid: String,
    pub label: String,
}

/// One entry of a top-k prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    pub index: usize,
    pub wnid: String,
    pub label: String,
    pub probability: f32,
}

/// `POST /api/predict`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PredictResponse {
    pub predictions: Vec<Prediction>,
    /// Whether the model that answered is trained (see [`ModelInfo::trained`]).
    pub trained: bool,
    /// Size of the decoded upload before preprocessing.
    pub width: u32,
    pub height: u32,
}

/// Every error the API returns: a 4xx/5xx status with this JSON body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiError {
    /// Human-readable, names the problem (e.g. "image is 30000×30000 pixels; the limit is …").
    pub error: String,
    /// Stable machine-readable code, e.g. `not_an_image`, `image_too_large`.
    pub code: String,
}
