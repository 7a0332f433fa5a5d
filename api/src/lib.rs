//! The wire types of the zfvis REST API.
//!
//! This crate is deliberately tiny and candle-free: the server serialises these types and the
//! wasm UI deserialises the very same ones, so a field renamed here breaks both at compile time.

use serde::{Deserialize, Serialize};

mod analyses;
mod error;
mod evolution;
mod examples;
pub mod paths;

pub use analyses::{
    paper_delta, CorrespondencePart, CorrespondencePreset, CorrespondenceRequest,
    CorrespondenceResponse, CorrespondenceRow, DeltaStat, InvarianceCurve, InvarianceImage,
    InvarianceRequest, InvarianceResponse, Transform, PAPER_TABLE_1,
};
pub use error::{ApiError, ErrorCode};
pub use evolution::{EvolutionColumn, EvolutionInfo, EvolutionRow};
pub use examples::{ClassExample, ClassExamples};

/// `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
    /// `"cpu"` or `"cuda:N"`.
    pub device: String,
    /// The probe index behind top-9 views, when the server has a probe set.
    #[serde(default)]
    pub probe_index: Option<IndexStatus>,
    /// Top-9 pictures rendered ahead of time (`serve --warm-top9`): maps done of all maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top9_warm: Option<IndexStatus>,
    /// This model's forwards batched across requests, once it has run one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchStats>,
}

/// Where the probe index stands: built in the background after the server starts listening.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IndexStatus {
    pub state: IndexPhase,
    /// Images indexed so far, of `total` (both equal once ready).
    pub done: usize,
    pub total: usize,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum IndexPhase {
    Building,
    Ready,
    Failed,
}

/// `GET /api/model`: what the loaded network looks like.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    /// The id that picks this model (`?model=ID`) on a server that serves several.
    #[serde(default)]
    pub id: String,
    /// Whether this is the server's default model (the one used without `?model=`).
    #[serde(default)]
    pub default: bool,
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
    /// The input convention (from the model's manifest).
    #[serde(default)]
    pub input: Option<InputInfo>,
    pub layers: Vec<LayerInfo>,
    pub classes: Vec<ClassInfo>,
    /// The accuracy recorded in the manifest by `zfvis eval --record`, if any.
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
    /// How learned the conv1 filters look (computed from the weights at start-up).
    #[serde(default)]
    pub conv1: Option<FilterStats>,
    /// Training snapshots this server shows features forming in (Fig. 4), if started with some.
    #[serde(default)]
    pub evolution: Option<EvolutionInfo>,
}

/// Forward passes of predictions and uploads batched across requests (`/api/health`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchStats {
    /// Batched forwards run.
    pub forwards: usize,
    /// Images in them (more than `forwards` once batches formed).
    pub images: usize,
    /// The largest batch.
    pub largest: usize,
}

/// One model of `GET /api/models`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelSummary {
    /// Picks the model: `?model=ID` on any route.
    pub id: String,
    pub name: String,
    pub architecture: String,
    pub default: bool,
    pub trained: bool,
    pub provenance: String,
    pub parameters: u64,
    /// How many classes it tells apart.
    pub classes: usize,
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
    #[serde(default)]
    pub conv1: Option<FilterStats>,
}

/// `GET /api/models`: every model this server serves, the default first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelList {
    pub models: Vec<ModelSummary>,
}

impl ModelInfo {
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            architecture: self.architecture.clone(),
            default: self.default,
            trained: self.trained,
            provenance: self.provenance.clone(),
            parameters: self.parameters,
            classes: self.classes.len(),
            accuracy: self.accuracy.clone(),
            conv1: self.conv1,
        }
    }
}

/// Statistics of a conv filter bank that tell learned filters from random ones (definitions in
/// `zfnet::filter_stats`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilterStats {
    pub filters: usize,
    /// Share of the non-DC spectral energy in the 8 lowest-frequency bins: random 7×7 filters
    /// 0.167, smooth blobs and edges near 1.
    pub low_freq_share: f32,
    /// Mean orientation anisotropy: random ≈ 0.1, straight edges and gratings 1.
    pub anisotropy: f32,
    /// Fraction of filters with anisotropy above 0.5.
    pub oriented_fraction: f32,
    /// Filters whose RMS is below 5% of the median filter's.
    pub dead_filters: usize,
}

/// Top-1 / top-5 over a labelled set, as measured by `zfvis eval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accuracy {
    /// Where it was measured, e.g. the Imagenette val folder.
    pub dataset: String,
    pub images: usize,
    pub top1: f32,
    pub top5: f32,
}

/// One layer of the network as the API names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The max pool that follows, if one does.
    #[serde(default)]
    pub pool: Option<PoolInfo>,
}

/// A max pool's window: `kernel`×`kernel` moved by `stride`, the last partial window kept
/// (`ceil`, pytorchcv's) or dropped (floor, torchvision's and Caffe's).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolInfo {
    pub kernel: u32,
    pub stride: u32,
    pub ceil: bool,
}

/// How an image is fed to the model: resize the shorter side to `resize`, centre-crop `crop`,
/// channels in `channel_order` (`"rgb"` or `"bgr"`) scaled to `0…pixel_scale`, less `mean`,
/// over `std` (both in that order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InputInfo {
    pub resize: u32,
    pub crop: u32,
    pub channel_order: String,
    pub pixel_scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Conv,
    Fc,
}

/// A class the model predicts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassInfo {
    pub index: usize,
    /// WordNet id, e.g. `n01440764`; folder names of ImageNet-style data sets.
    pub wnid: String,
    pub label: String,
}

/// One entry of a top-k prediction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prediction {
    pub index: usize,
    pub wnid: String,
    pub label: String,
    pub probability: f32,
}

/// `POST /api/predict`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PredictResponse {
    pub predictions: Vec<Prediction>,
    /// Whether the model that answered is trained (see [`ModelInfo::trained`]).
    pub trained: bool,
    /// Size of the decoded upload before preprocessing.
    pub width: u32,
    pub height: u32,
}

/// `POST /api/images` and `GET /api/images/{id}`: an uploaded image kept for visualisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageResponse {
    /// Content hash of the upload; refer to the image by it.
    pub id: String,
    pub predictions: Vec<Prediction>,
    pub trained: bool,
    pub width: u32,
    pub height: u32,
    /// URL of the 224×224 network input (resized, centre-cropped).
    pub input_url: String,
    /// Where the image came from, when the server knows: a probe image's file and class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A box in input pixels (224×224 crop), half-open: `x0 ≤ x < x1`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

/// A unit's position in its feature map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitPosition {
    pub x: u32,
    pub y: u32,
}

/// Projection mode: only the chosen unit, or the whole feature map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProjectionMode {
    #[default]
    Unit,
    Map,
}

impl ProjectionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionMode::Unit => "unit",
            ProjectionMode::Map => "map",
        }
    }
}

/// How a unit is taken back to pixels: the paper's deconvnet, or one of the two attribution methods
/// that followed it. They differ only in how the backward pass treats each ReLU.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Zeiler & Fergus 2013: the signal is rectified at each ReLU, LRN skipped.
    #[default]
    Deconvnet,
    /// Simonyan et al. 2013: the exact gradient (each ReLU passes what was on going forward).
    Gradient,
    /// Springenberg et al. 2014: guided backpropagation (both rules at once).
    Guided,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Deconvnet, Method::Gradient, Method::Guided];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Deconvnet => "deconvnet",
            Method::Gradient => "gradient",
            Method::Guided => "guided",
        }
    }

    /// A title for a picture.
    pub fn title(self) -> &'static str {
        match self {
            Method::Deconvnet => "Deconvnet (Zeiler & Fergus 2013)",
            Method::Gradient => "Gradient saliency (Simonyan et al. 2013)",
            Method::Guided => "Guided backprop (Springenberg et al. 2014)",
        }
    }

    /// One sentence on how it differs from the other two.
    pub fn about(self) -> &'static str {
        match self {
            Method::Deconvnet => {
                "At each ReLU it keeps only the positive part of the signal coming down, whatever \
                 the image did going up: it shows the pattern the unit responds to."
            }
            Method::Gradient => {
                "At each ReLU it lets the signal through only where the unit was on going up: the \
                 exact derivative of the unit by each pixel, noisy and of both signs."
            }
            Method::Guided => {
                "At each ReLU it applies both rules, positive signal and only through units that \
                 were on: the sharpest of the three, but it says less about the unit itself."
            }
        }
    }
}

/// One backward method's picture of the chosen unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MethodPicture {
    pub method: Method,
    pub title: String,
    /// One sentence on how this method differs from the others.
    pub about: String,
    pub url: String,
}

/// `GET /visualize/{layer}/{map}?image=ID`: one feature map of one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VisualizeResponse {
    /// `conv1`…`conv5`.
    pub layer: String,
    pub map: usize,
    /// Number of maps in this layer.
    pub maps: usize,
    pub image: String,
    pub mode: ProjectionMode,
    /// The strongest activation of the map, and where it is.
    pub max: f32,
    pub position: UnitPosition,
    /// The unit the projection starts from (`position` unless x/y were given).
    pub unit: UnitPosition,
    /// The unit's value.
    pub value: f32,
    /// Feature-map size `[height, width]`.
    pub map_shape: [usize; 2],
    /// Input pixels under the unit's receptive field.
    pub receptive_field: PixelBox,
    pub activation_url: String,
    pub projection_url: String,
    pub patch_url: String,
    /// The unit taken back to pixels by each method (deconvnet, gradient, guided), cropped to its
    /// receptive field, for a side-by-side comparison.
    pub methods: Vec<MethodPicture>,
}

/// `GET /api/images/{id}/layers/{layer}`: every map's strongest activation, for the map grid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LayerActivations {
    pub layer: String,
    pub image: String,
    /// `max[m]` = strongest activation of map `m`.
    pub max: Vec<f32>,
    pub map_shape: [usize; 2],
}

/// `GET /visualize/{layer}/{map}` without `image`: the map's strongest activations over the probe
/// set (the paper's Fig. 2), strongest first, at most one per probe image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopActivations {
    pub layer: String,
    pub map: usize,
    pub maps: usize,
    /// Images in the probe set.
    pub probe_images: usize,
    /// Where the probe images came from (a folder name, for the caption).
    pub probe_name: String,
    pub entries: Vec<TopActivation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopActivation {
    /// 0 = strongest.
    pub rank: usize,
    pub value: f32,
    /// Probe image path relative to the probe folder.
    pub image: String,
    /// The image's class label when its folder names one of the model's classes.
    pub label: Option<String>,
    pub unit: UnitPosition,
    pub receptive_field: PixelBox,
    /// The input patch under the receptive field.
    pub patch_url: String,
    /// The single-unit deconvnet reconstruction of that patch.
    pub reconstruction_url: String,
    /// `POST` here to open the probe image as an uploaded image (returns `ImageResponse`).
    pub open_url: String,
}

/// What fills the occluder: `"mean"` (the dataset mean, zero after normalisation) or a grey
/// level 0–255.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum OcclusionFill {
    Grey(u8),
    Named(String),
}

/// `POST /api/images/{id}/occlusion` body; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OcclusionRequest {
    /// Square side in input pixels, 1–224 (default 48).
    pub size: Option<usize>,
    /// Grid step in input pixels, 1–224 (default 16); at most 4,096 positions.
    pub stride: Option<usize>,
    pub fill: Option<OcclusionFill>,
    /// Class index whose probability is mapped (default: the image's top prediction).
    pub class: Option<usize>,
}

/// A sweep that is still running (`202`), or how to follow one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OcclusionStatus {
    pub key: String,
    pub state: SweepPhase,
    pub done: usize,
    pub total: usize,
    /// Server-Sent Events: `progress` `{done, total}`, then `done` (an `OcclusionResponse`) or
    /// `error` (an `ApiError`).
    pub events_url: String,
    /// `GET`: the result once done (`200`), this status while running (`202`). `DELETE` with
    /// `?token=`: cancel the sweep.
    pub result_url: String,
    /// Only in the answer to the request that started the sweep: the secret that cancels it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where a sweep stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SweepPhase {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// The `progress` event of a sweep's event stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SweepProgress {
    pub done: usize,
    pub total: usize,
}

/// One class present in the most-probable-class map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegendEntry {
    pub class: usize,
    pub label: String,
    /// `#rrggbb`, as drawn in the class map.
    pub color: String,
    /// Grid cells where it is the most probable class.
    pub cells: usize,
}

/// A finished occlusion sweep: grids are row-major `grid × grid`; cell `(i, j)` centres the
/// square at pixel `(i·stride + stride/2, j·stride + stride/2)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OcclusionResponse {
    pub key: String,
    pub image: String,
    pub size: usize,
    pub stride: usize,
    pub grid: usize,
    /// (a) Σ activation of the conv5 map strongest on the unoccluded image, per position.
    pub strongest_map: usize,
    pub activation: Vec<f32>,
    pub base_activation: f32,
    /// (b) probability of `class` per position.
    pub class: usize,
    pub class_label: String,
    pub probability: Vec<f32>,
    pub base_probability: f32,
    /// (c) most probable class per position, and its probability.
    pub top_class: Vec<u32>,
    pub top_probability: Vec<f32>,
    pub legend: Vec<LegendEntry>,
    pub activation_url: String,
    pub probability_url: String,
    pub classes_url: String,
    /// (d) deconvnet projection of the strongest conv5 map's strongest unit (unoccluded image).
    pub projection_url: String,
    pub elapsed_ms: u64,
}
