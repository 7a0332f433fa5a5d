//! The model itself: health, what the model is, its conv1 filters, and plain predictions.

use super::ApiRouter;
use crate::error::AppError;
use crate::http::extract::ImageUpload;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use utoipa_axum::routes;
use zfnet::views::{Traced, Want};
use zfvis_api::{ApiError, Health, ModelInfo, PredictResponse, Prediction};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(model_info))
        .routes(routes!(conv1_filters))
        .routes(routes!(predict))
}

/// The conv1 filters as an RGB grid (12 per row, each 7×7 filter drawn 8× and contrast-stretched
/// on its own, mid grey = 0): the paper's Fig. 6(c).
#[utoipa::path(get, path = "/api/model/filters/conv1.png", tag = "model",
    responses((status = 200, content_type = "image/png", description = "PNG")))]
async fn conv1_filters(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    let grid = zfnet::views::conv1_filter_grid(&state.model)?;
    // not immutable: the URL names no weights, and a restart may load others
    Ok((
        [(axum::http::header::CONTENT_TYPE, "image/png")],
        zfnet::render::png(&grid),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/health", tag = "model", responses((status = 200, body = Health)))]
async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    use zfvis_api::{IndexPhase, IndexStatus};
    let probe_index = state.probes.get().map(index_status);
    Json(Health {
        batching: crate::batch::stats(&state),
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        device: zfnet::device::describe(state.model.net.device()),
        probe_index,
        top9_warm: state
            .warm
            .lock()
            .ok()
            .and_then(|w| *w)
            .map(|(done, total)| IndexStatus {
                state: if done < total {
                    IndexPhase::Building
                } else {
                    IndexPhase::Ready
                },
                done,
                total,
                message: None,
            }),
    })
}

#[utoipa::path(get, path = "/api/model", tag = "model", responses((status = 200, body = ModelInfo)))]
async fn model_info(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    Json(state.info.clone())
}

/// Top-5 predictions for an upload, without keeping it.
#[utoipa::path(post, path = "/api/predict", tag = "model",
    request_body(content_type = "multipart/form-data", description = "file field `image` (JPEG, PNG, WebP)"),
    responses((status = 200, body = PredictResponse), (status = 413, body = ApiError), (status = 422, body = ApiError)))]
async fn predict(
    State(state): State<Arc<AppState>>,
    ImageUpload(bytes): ImageUpload,
) -> Result<Json<PredictResponse>, AppError> {
    // the same photo again (a class shares a few): the answer kept for its content id
    let id = crate::store::images::content_id(&bytes);
    let known = |state: &AppState| -> Option<PredictResponse> {
        if let Some(image) = state.images.get(&id) {
            let r = &image.response;
            return Some(PredictResponse {
                predictions: r.predictions.clone(),
                trained: r.trained,
                width: r.width,
                height: r.height,
            });
        }
        serde_json::from_slice(&state.predictions.get(&id)?).ok()
    };
    if let Some(answer) = known(&state) {
        return Ok(Json(answer));
    }
    let _turn = state.flights.turn(&format!("predict/{id}")).await;
    if let Some(answer) = known(&state) {
        return Ok(Json(answer));
    }
    let trained = state.info.trained;
    let (tensor, (width, height)) = state
        .run_blocking(move |model| {
            let (input, tensor) = zfnet::views::prepare_input(model, &bytes)?;
            Ok((tensor, input.original))
        })
        .await?;
    let logits = match crate::batch::forward(&state, tensor, Want::Logits).await? {
        Traced::Logits(l) => l,
        Traced::Trace(t) => t.logits,
    };
    let response = PredictResponse {
        predictions: predictions(&state.model, &logits)?,
        trained,
        width,
        height,
    };
    if let Ok(json) = serde_json::to_vec(&response) {
        state.predictions.put(id, Arc::new(json));
    }
    Ok(Json(response))
}

/// A probe index's state on the wire.
pub fn index_status(p: crate::store::probes::ProbeState) -> zfvis_api::IndexStatus {
    use crate::store::probes::ProbeState;
    use zfvis_api::{IndexPhase, IndexStatus};
    match p {
        ProbeState::Building { done, total } => IndexStatus {
            state: IndexPhase::Building,
            done,
            total,
            message: None,
        },
        ProbeState::Ready(p) => IndexStatus {
            state: IndexPhase::Ready,
            done: p.index.images.len(),
            total: p.index.images.len(),
            message: None,
        },
        ProbeState::Failed(why) => IndexStatus {
            state: IndexPhase::Failed,
            done: 0,
            total: 0,
            message: Some(why),
        },
    }
}

/// The top-5 of the first row of `logits`, with class names.
pub fn predictions(
    model: &zfnet::LoadedModel,
    logits: &candle_core::Tensor,
) -> Result<Vec<Prediction>, AppError> {
    let classes = &model.manifest.classes;
    Ok(zfnet::views::top_classes(logits, 5)?
        .into_iter()
        .filter_map(|(index, probability)| {
            let class = classes.get(index)?;
            Some(Prediction {
                index,
                wnid: class.wnid.clone(),
                label: class.label.clone(),
                probability,
            })
        })
        .collect())
}
