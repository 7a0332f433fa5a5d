//! The paper's Fig. 4: features forming during training. Each training snapshot (`serve
//! --evolution DIR`) is a conv stack with its own probe index and picture cache
//! (`AppState::evolution`); a row is one map's strongest activation over the probe set at
//! every snapshot's epoch, with its deconvnet reconstruction. Map `j` is the same unit at every
//! epoch (one run, one initialisation), so a row shows that unit learning.

use super::extract::{MapParam, P};
use super::model::index_status;
use super::probe::{entry_picture, top_activations_rendered};
use super::ApiRouter;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::probes::ProbeState;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use std::sync::Arc;
use utoipa_axum::routes;
use zfvis_api::{paths, ApiError, ErrorCode, EvolutionColumn, EvolutionRow, IndexStatus};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(evolution_row))
        .routes(routes!(evolution_picture))
}

fn no_evolution() -> AppError {
    AppError::new(
        ErrorCode::NoEvolution,
        "this server shows no training snapshots: start it with --evolution DIR (a training \
         run's folder, or a folder of epoch-NNN.safetensors)",
    )
}

/// The snapshot of `epoch`, checked to have map `at`.
fn snapshot(state: &AppState, epoch: u32, at: MapParam) -> Result<&Arc<AppState>, AppError> {
    if state.evolution.is_empty() {
        return Err(no_evolution());
    }
    let (_, snap) = state
        .evolution
        .iter()
        .find(|(e, _)| *e == epoch)
        .ok_or_else(|| {
            let epochs: Vec<String> = state.evolution.iter().map(|(e, _)| e.to_string()).collect();
            AppError::new(
                ErrorCode::NoEvolution,
                format!(
                    "no snapshot of epoch {epoch}; there are epochs {}",
                    epochs.join(", ")
                ),
            )
        })?;
    let maps = snap.model.net.convs[at.layer].out_channels();
    if at.map >= maps {
        return Err(AppError::new(
            ErrorCode::MapOutOfRange,
            format!(
                "{} of the epoch-{epoch} snapshot has {maps} maps; there is no map {}",
                at.layer_name(),
                at.map
            ),
        ));
    }
    Ok(snap)
}

/// The map's strongest activation at every snapshot's epoch (pictures rendered on first ask,
/// then read from the disk cache). Snapshots whose index is still building say how far it is.
#[utoipa::path(get, path = "/api/evolution/{layer}/{map}", tag = "visualize",
    params(("layer" = String, Path, description = "conv1…conv5 or 1…5"), ("map" = usize, Path)),
    responses((status = 200, body = EvolutionRow), (status = 404, body = ApiError)))]
async fn evolution_row(
    State(state): State<Arc<AppState>>,
    at: MapParam,
) -> Result<Json<EvolutionRow>, AppError> {
    let columns = state.evolution.iter().map(|(epoch, _)| {
        let state = state.clone();
        let epoch = *epoch;
        async move { column(&state, epoch, at).await }
    });
    let columns = futures_util::future::join_all(columns)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    if columns.is_empty() {
        return Err(no_evolution());
    }
    Ok(Json(EvolutionRow {
        layer: at.layer_name().into(),
        map: at.map,
        run: state
            .info
            .evolution
            .as_ref()
            .map(|e| e.run.clone())
            .unwrap_or_default(),
        columns,
    }))
}

async fn column(state: &AppState, epoch: u32, at: MapParam) -> Result<EvolutionColumn, AppError> {
    let snap = snapshot(state, epoch, at)?;
    let probe = snap.probes.get();
    let index = probe.clone().map_or_else(
        || IndexStatus {
            state: zfvis_api::IndexPhase::Failed,
            done: 0,
            total: 0,
            message: Some("no probe set (--probe)".into()),
        },
        index_status,
    );
    if !matches!(probe, Some(ProbeState::Ready(_))) {
        return Ok(EvolutionColumn {
            epoch,
            index,
            top: None,
        });
    }
    // only the top-1 is shown: its pictures alone are rendered (a ninth of the work)
    let top = top_activations_rendered(snap, at, 1).await?;
    let name = at.layer_name();
    let top = top.entries.into_iter().next().map(|mut e| {
        e.patch_url = paths::evolution_picture(name, at.map, epoch, "patch.png");
        e.reconstruction_url = paths::evolution_picture(name, at.map, epoch, "reconstruction.png");
        // the probe image itself opens under the default model (same probe set, same numbering)
        e.open_url = e.open_url.split('?').next().unwrap_or_default().to_string();
        e
    });
    Ok(EvolutionColumn { epoch, index, top })
}

/// The top-1 entry's `patch.png` or `reconstruction.png` of a map at one snapshot's epoch.
#[utoipa::path(get, path = "/api/evolution/{layer}/{map}/{epoch}/{picture}", tag = "visualize",
    params(("layer" = String, Path), ("map" = usize, Path), ("epoch" = u32, Path),
        ("picture" = String, Path, description = "patch.png or reconstruction.png")),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError)))]
async fn evolution_picture(
    State(state): State<Arc<AppState>>,
    at: MapParam,
    segments: P<(String, String, u32, String)>,
) -> Result<Response, AppError> {
    let P((_, _, epoch, picture)) = segments;
    let snap = snapshot(&state, epoch, at)?;
    entry_picture(snap, at, 0, &picture).await
}
