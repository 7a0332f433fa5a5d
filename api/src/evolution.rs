//! The paper's Fig. 4: how features form during training. A server started with a run's
//! snapshots (`serve --evolution DIR`) answers, for one map, the strongest activation over the
//! probe set at each snapshot's epoch and its deconvnet reconstruction.

use crate::{IndexStatus, TopActivation};
use serde::{Deserialize, Serialize};

/// Which run the snapshots come from and at which epochs (in `ModelInfo::evolution`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvolutionInfo {
    /// Where the snapshots come from, in words (the run's provenance).
    pub run: String,
    pub epochs: Vec<u32>,
}

/// `GET /api/evolution/{layer}/{map}`: one row of Fig. 4.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvolutionRow {
    pub layer: String,
    pub map: usize,
    pub run: String,
    /// One per snapshot, in epoch order.
    pub columns: Vec<EvolutionColumn>,
}

/// One snapshot's strongest activation of the map over the probe set, once its index is ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvolutionColumn {
    pub epoch: u32,
    /// The snapshot's probe index: `ready`, or how far `building` is (or why it `failed`).
    pub index: IndexStatus,
    /// The top-1 entry (its URLs are this route's pictures), when the index is ready.
    #[serde(default)]
    pub top: Option<TopActivation>,
}
