//! Photos of the classes a model knows, from the probe set (`GET /api/probe/examples`): a model
//! trained on 10 classes can only answer with those, so the UI offers a photo of each.

use serde::{Deserialize, Serialize};

/// One probe image for a class of the model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassExample {
    /// The class's index in the model's output.
    pub class: usize,
    pub label: String,
    /// Probe image path relative to the probe folder.
    pub image: String,
    /// `GET`: the image file itself (a thumbnail for the UI).
    pub image_url: String,
    /// `POST`: opens it as an uploaded image (returns `ImageResponse`).
    pub open_url: String,
}

/// `GET /api/probe/examples`: the first probe image (in path order) of every class of the model
/// that has one, in class order; empty when the probe folders name none of its classes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClassExamples {
    /// How many classes the model knows (examples may cover fewer).
    pub classes: usize,
    pub examples: Vec<ClassExample>,
}
