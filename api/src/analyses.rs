//! Wire types of the paper's analyses: invariance curves (Fig. 5) and correspondence (Table 1).

use crate::PixelBox;
use serde::{Deserialize, Serialize};

/// `POST /api/images/{id}/invariance`: the Fig. 5 curves of the image and up to 4 others.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InvarianceRequest {
    /// Ids (from `POST /api/images`) of up to 4 more images to plot beside this one.
    #[serde(default)]
    pub others: Vec<String>,
    /// Amounts per transform, 2–37 (default 15: every 25° of rotation).
    pub steps: Option<usize>,
    /// Class whose probability is plotted for every image (default: each image's top class).
    pub class: Option<usize>,
}

/// One of the paper's transforms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Vertical translation, pixels (positive: down), −60…60.
    Translate,
    /// Zoom about the centre, 1…1.8.
    Scale,
    /// Rotation anticlockwise, degrees, 0…350.
    Rotate,
}

impl Transform {
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::Translate => "translate",
            Transform::Scale => "scale",
            Transform::Rotate => "rotate",
        }
    }

    /// The axis label of the paper's plots.
    pub fn axis(self) -> &'static str {
        match self {
            Transform::Translate => "vertical translation (pixels)",
            Transform::Scale => "scale (ratio)",
            Transform::Rotate => "rotation (degrees)",
        }
    }
}

/// One transform's curves for one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvarianceCurve {
    pub transform: Transform,
    /// The amounts (pixels, ratio or degrees).
    pub amounts: Vec<f32>,
    /// Euclidean distance of layer 1's output (conv1 → ReLU → LRN → pool) from the original's.
    pub layer1: Vec<f32>,
    /// Euclidean distance of fc7 (after ReLU) from the original's.
    pub layer7: Vec<f32>,
    /// Probability of the image's class.
    pub probability: Vec<f32>,
    /// The most probable class of each transformed image.
    pub top_class: Vec<u32>,
}

/// One image's curves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvarianceImage {
    pub image: String,
    pub class: usize,
    pub class_label: String,
    /// The class's probability on the untransformed image.
    pub base_probability: f32,
    /// Translate, scale, rotate: the paper's rows a–c.
    pub curves: Vec<InvarianceCurve>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvarianceResponse {
    pub steps: usize,
    pub images: Vec<InvarianceImage>,
    pub elapsed_ms: u64,
}

impl InvarianceResponse {
    /// One row per image, transform and amount (what `?format=csv` answers and the UI's CSV
    /// link holds).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "image,class,transform,amount,layer1_distance,layer7_distance,probability,top_class\n",
        );
        for img in &self.images {
            for c in &img.curves {
                for k in 0..c.amounts.len() {
                    out.push_str(&format!(
                        "{},{},{},{},{},{},{},{}\n",
                        img.image,
                        img.class,
                        c.transform.as_str(),
                        c.amounts[k],
                        c.layer1[k],
                        c.layer7[k],
                        c.probability[k],
                        c.top_class[k]
                    ));
                }
            }
        }
        out
    }
}

/// One part to mask: a box per image, in the order of the request's images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CorrespondencePart {
    pub name: String,
    pub boxes: Vec<PixelBox>,
}

/// `POST /api/correspondence`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CorrespondenceRequest {
    /// 2–10 image ids from `POST /api/images` (the paper used 5 dogs).
    pub images: Vec<String>,
    /// 1–6 parts (e.g. left eye, right eye, nose).
    pub parts: Vec<CorrespondencePart>,
    /// Random-position masks of the first part's size, drawn this many times (default 10, 0–50).
    pub repetitions: Option<usize>,
    /// Seed of the random positions (default 1).
    pub seed: Option<u64>,
}

/// Δ at one layer: mean and standard deviation of the pairwise sign disagreement.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeltaStat {
    pub mean: f32,
    pub std: f32,
}

/// A row of Table 1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CorrespondenceRow {
    pub part: String,
    pub layer5: DeltaStat,
    pub layer7: DeltaStat,
    /// The paper's row of the same name (right eye, left eye, nose, random), if any.
    pub paper: Option<[DeltaStat; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CorrespondenceResponse {
    pub images: usize,
    pub repetitions: usize,
    pub rows: Vec<CorrespondenceRow>,
    pub elapsed_ms: u64,
}

/// `GET /api/correspondence/preset`: the paper's set-up on Imagenette (5 frontal English springer
/// images of its val set, eye and nose boxes), and where those images are in this server's probe
/// set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CorrespondencePreset {
    pub about: String,
    /// The images' files, in the class folder `folder`.
    pub folder: String,
    pub files: Vec<String>,
    pub parts: Vec<CorrespondencePart>,
    /// Per file, its index in the probe set (`POST /api/probe/images/{index}` opens it), or
    /// `null` when the probe set does not hold it (serve with `--probe` Imagenette val).
    pub probe_images: Vec<Option<usize>>,
}

/// The paper's Table 1: `(part, Δ5 mean, Δ5 std, Δ7 mean, Δ7 std)`, shown beside measured rows
/// (server) and in the tour when nothing can be measured (UI).
pub const PAPER_TABLE_1: [(&str, f32, f32, f32, f32); 4] = [
    ("right eye", 0.067, 0.007, 0.069, 0.015),
    ("left eye", 0.069, 0.007, 0.068, 0.013),
    ("nose", 0.079, 0.017, 0.069, 0.011),
    ("random", 0.107, 0.017, 0.073, 0.014),
];

/// The paper's `[Δ layer 5, Δ layer 7]` for a part named as in Table 1 (any case), if it has one.
pub fn paper_delta(part: &str) -> Option<[DeltaStat; 2]> {
    PAPER_TABLE_1
        .iter()
        .find(|p| p.0.eq_ignore_ascii_case(part.trim()))
        .map(|p| {
            [
                DeltaStat {
                    mean: p.1,
                    std: p.2,
                },
                DeltaStat {
                    mean: p.3,
                    std: p.4,
                },
            ]
        })
}
