//! Thin handlers over [`AppState`]: parse, hand the work to the model, shape the response.

use crate::error::AppError;
use crate::occlusion;
use crate::state::{prepare_input, AppState};
use crate::upload::ImageUpload;
use crate::visualize;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use zfvis_api::{Health, ModelInfo, PredictResponse, Prediction};

/// The routes under `/api`, with a JSON 404 for anything else there.
pub fn api_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/model", get(model_info))
        .route("/model/filters/conv1.png", get(conv1_filters))
        .route("/predict", post(predict))
        .route("/images", post(visualize::upload_image))
        .route("/images/{id}", get(visualize::get_image))
        .route("/images/{id}/input", get(visualize::input_png))
        .route(
            "/images/{id}/layers/{layer}",
            get(visualize::layer_activations),
        )
        .route(
            "/images/{id}/activation/{layer}/{map}",
            get(visualize::activation_png),
        )
        .route(
            "/images/{id}/projection/{layer}/{map}",
            get(visualize::projection_png),
        )
        .route(
            "/images/{id}/patch/{layer}/{map}",
            get(visualize::patch_png),
        )
        .route(
            "/probe/{layer}/{map}/{rank}/{picture}",
            get(visualize::probe_picture),
        )
        .route("/probe/images/{index}", post(visualize::open_probe_image))
        .route("/images/{id}/occlusion", post(occlusion::start))
        .route("/images/{id}/occlusion/{key}", get(occlusion::result))
        .route(
            "/images/{id}/occlusion/{key}/events",
            get(occlusion::events),
        )
        .route(
            "/images/{id}/occlusion/{key}/{picture}",
            get(occlusion::picture),
        )
        .route("/openapi.json", get(openapi))
        .fallback(api_not_found)
        // uploads enforce their own bound (crate::upload); everything else reads no body
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn api_not_found(uri: axum::http::Uri) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no API route /api{uri}"),
    )
}

/// The conv1 filters as an RGB grid (12 per row, each 7×7 filter drawn 8× and contrast-stretched
/// on its own, mid grey = 0): the paper's Fig. 6(c).
#[utoipa::path(get, path = "/api/model/filters/conv1.png", tag = "model",
    responses((status = 200, content_type = "image/png", description = "PNG")))]
pub(crate) async fn conv1_filters(
    State(state): State<Arc<AppState>>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let w = &state.model.net.convs[0].weight;
    let (n, c, k, _) = w.dims4().map_err(|e| AppError::internal(e.to_string()))?;
    if c != 3 {
        return Err(AppError::internal("conv1 does not take RGB input"));
    }
    let data = w
        .flatten_all()
        .and_then(|t| t.to_device(&candle_core::Device::Cpu))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| AppError::internal(e.to_string()))?;
    let png = zfnet::render::png(&zfnet::render::filter_grid(&data, n, k, 12, 8));
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::spec())
}

#[utoipa::path(get, path = "/api/health", tag = "model", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        device: zfnet::device::describe(state.model.net.device()),
    })
}

#[utoipa::path(get, path = "/api/model", tag = "model", responses((status = 200, body = ModelInfo)))]
pub(crate) async fn model_info(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    Json(state.info.clone())
}

/// Top-5 predictions for an upload, without keeping it.
#[utoipa::path(post, path = "/api/predict", tag = "model",
    request_body(content_type = "multipart/form-data", description = "file field `image` (JPEG, PNG, WebP)"),
    responses((status = 200, body = PredictResponse), (status = 413, body = zfvis_api::ApiError), (status = 422, body = zfvis_api::ApiError)))]
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    ImageUpload(bytes): ImageUpload,
) -> Result<Json<PredictResponse>, AppError> {
    let trained = state.info.trained;
    let response = state
        .run_blocking(move |model| {
            let (input, tensor) = prepare_input(model, &bytes)?;
            let (width, height) = input.original;
            let logits = model.net.forward(&tensor)?;
            let predictions = top_k(model, &logits, 5)?;
            Ok(PredictResponse {
                predictions,
                trained,
                width,
                height,
            })
        })
        .await?;
    Ok(Json(response))
}

/// The `k` most probable classes of the first row of `logits`.
pub fn top_k(
    model: &zfnet::LoadedModel,
    logits: &candle_core::Tensor,
    k: usize,
) -> Result<Vec<Prediction>, AppError> {
    let probs = zfnet::model::softmax(logits)?
        .get(0)
        .and_then(|row| row.to_vec1::<f32>())
        .map_err(|e| AppError::internal(e.to_string()))?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    Ok(order
        .into_iter()
        .take(k)
        .map(|index| {
            let class = &model.manifest.classes[index];
            Prediction {
                index,
                wnid: class.wnid.clone(),
                label: class.label.clone(),
                probability: probs[index],
            }
        })
        .collect())
}
