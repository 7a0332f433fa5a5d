//! Uploaded images: upload (the traced forward is kept), read back, the network's input crop and
//! a layer's per-map maxima (the map grid).

use super::model::predictions;
use super::{png_response, ApiRouter};
use crate::error::AppError;
use crate::http::extract::{ImageUpload, StoredParam, P};
use crate::state::AppState;
use crate::store::images::{content_id, StoredImage};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use std::sync::Arc;
use utoipa_axum::routes;
use zfvis_api::{paths, ApiError, ErrorCode, ImageResponse, LayerActivations};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(upload_image))
        .routes(routes!(get_image))
        .routes(routes!(input_png))
        .routes(routes!(layer_activations))
}

/// Uploads an image, runs the traced forward pass and keeps the trace.
#[utoipa::path(post, path = "/api/images", tag = "images",
    request_body(content_type = "multipart/form-data", description = "file field `image` (JPEG, PNG, WebP)"),
    responses((status = 200, body = ImageResponse), (status = 413, body = ApiError), (status = 422, body = ApiError)))]
async fn upload_image(
    State(state): State<Arc<AppState>>,
    ImageUpload(bytes): ImageUpload,
) -> Result<Json<ImageResponse>, AppError> {
    Ok(Json(store_image(&state, bytes, None).await?))
}

/// Runs the traced forward pass on image bytes and keeps the trace under the content id (and
/// the upload on disk). The same bytes sent at once are computed once.
pub async fn store_image(
    state: &Arc<AppState>,
    bytes: Vec<u8>,
    source: Option<String>,
) -> Result<ImageResponse, AppError> {
    let id = content_id(&bytes);
    let _turn = state.flights.turn(&format!("upload/{id}")).await;
    let known = match state.images.get(&id) {
        Some(image) => Some(image),
        None => restore(state, &id).await?,
    };
    if let Some(image) = known {
        if source.is_none() || image.response.source == source {
            return Ok(image.response.clone());
        }
        // known already, now with its origin: keep that for later visits (permalinks)
        let mut known = StoredImage::clone(&image);
        known.response.source = source;
        let response = known.response.clone();
        state.images.insert(id, Arc::new(known));
        return Ok(response);
    }
    let trained = state.info.trained;
    let input_url = state.url(paths::input(&id));
    let (input, tensor) = state
        .run_blocking(move |model| Ok(zfnet::views::prepare_input(model, &bytes)?))
        .await?;
    let trace = traced(state, tensor).await?;
    let response = ImageResponse {
        input_url,
        predictions: predictions(&state.model, &trace.logits)?,
        id,
        trained,
        width: input.original.0,
        height: input.original.1,
        source,
    };
    let image = Arc::new(StoredImage {
        trace,
        crop: input.crop,
        response,
    });
    let response = image.response.clone();
    state.images.insert(response.id.clone(), image.clone());
    keep(state, image).await;
    Ok(response)
}

/// Keeps an upload on disk (off the async threads). A failure is logged: the image still works
/// while its trace is in memory.
async fn keep(state: &Arc<AppState>, image: Arc<StoredImage>) {
    let keeper = state.clone();
    let id = image.response.id.clone();
    let kept =
        tokio::task::spawn_blocking(move || keeper.uploads.save(&image.crop, &image.response))
            .await;
    if let Ok(Err(e)) | Err(e) = kept.map_err(|e| zfnet::Error::Config(e.to_string())) {
        tracing::warn!("keeping upload {id}: {e}");
    }
}

/// The whole trace of `input`, batched with other uploads and predictions waiting.
async fn traced(
    state: &Arc<AppState>,
    input: candle_core::Tensor,
) -> Result<zfnet::Trace, AppError> {
    match crate::batch::forward(state, input, zfnet::views::Want::Trace).await? {
        zfnet::views::Traced::Trace(t) => Ok(t),
        zfnet::views::Traced::Logits(_) => {
            Err(AppError::internal("a batch answered logits for a trace"))
        }
    }
}

/// The image named `id`: its trace from memory, else computed again from the upload kept on
/// disk (once, however many ask at the same time), else `404 image_not_found`.
pub async fn stored(state: &Arc<AppState>, id: &str) -> Result<Arc<StoredImage>, AppError> {
    if let Some(image) = state.images.get(id) {
        return Ok(image);
    }
    let _turn = state.flights.turn(&format!("upload/{id}")).await;
    if let Some(image) = state.images.get(id) {
        return Ok(image);
    }
    restore(state, id).await?.ok_or_else(|| {
        AppError::new(
            ErrorCode::ImageNotFound,
            format!("no image with id '{id}' on this server: upload it first (POST /api/images)"),
        )
    })
}

/// Recomputes the trace of a kept upload; `None` when none is kept. An upload made under
/// another model of this server with the same preprocessing opens too (its crop is the same
/// pixels), with this model's answer. The caller holds the id's flight turn.
async fn restore(state: &Arc<AppState>, id: &str) -> Result<Option<Arc<StoredImage>>, AppError> {
    let reader = state.clone();
    let key = id.to_string();
    let kept = tokio::task::spawn_blocking(move || {
        if let Some(own) = reader.uploads.load(&key) {
            return Some((own, true));
        }
        // the crop's pixels depend on the resize and crop only (normalising comes after)
        let mine = &reader.model.manifest.preprocess;
        let same_input = |p: &Arc<AppState>| {
            let theirs = &p.model.manifest.preprocess;
            !Arc::ptr_eq(p, &reader) && theirs.resize == mine.resize && theirs.crop == mine.crop
        };
        let peers = reader.group.members();
        peers
            .iter()
            .filter(|p| same_input(p))
            .find_map(|p| p.uploads.load(&key))
            .map(|other| (other, false))
    })
    .await
    .map_err(|e| AppError::internal(format!("reading a kept upload: {e}")))?;
    let Some(((crop, mut response), own)) = kept else {
        return Ok(None);
    };
    let trained = state.info.trained;
    let input_url = state.url(paths::input(id));
    let tensor = zfnet::views::input_from_crop(&state.model, &crop)?;
    let trace = traced(state, tensor).await?;
    if !own {
        response.predictions = predictions(&state.model, &trace.logits)?;
        response.trained = trained;
        response.input_url = input_url;
    }
    let image = Arc::new(StoredImage {
        trace,
        crop,
        response,
    });
    state.images.insert(id.to_string(), image.clone());
    if !own {
        keep(state, image.clone()).await;
    }
    Ok(Some(image))
}

#[utoipa::path(get, path = "/api/images/{id}", tag = "images",
    params(("id" = String, Path, description = "image id from POST /api/images")),
    responses((status = 200, body = ImageResponse), (status = 404, body = ApiError)))]
async fn get_image(stored: StoredParam) -> Json<ImageResponse> {
    Json(stored.image.response.clone())
}

/// The 224×224 crop the network sees.
#[utoipa::path(get, path = "/api/images/{id}/input", tag = "images",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError)))]
async fn input_png(stored: StoredParam) -> Response {
    png_response(zfnet::render::png(&stored.image.crop))
}

/// Every map's strongest activation in one layer.
#[utoipa::path(get, path = "/api/images/{id}/layers/{layer}", tag = "images",
    params(("id" = String, Path), ("layer" = String, Path, description = "conv1…conv5 or 1…5")),
    responses((status = 200, body = LayerActivations), (status = 404, body = ApiError)))]
async fn layer_activations(
    segments: P<(String, String)>,
    stored: StoredParam,
) -> Result<Json<LayerActivations>, AppError> {
    let layer = zfnet::views::parse_layer(&segments.0 .1)?;
    let (max, map_shape) = zfnet::views::layer_maxima(&stored.image.trace, layer)?;
    Ok(Json(LayerActivations {
        layer: zfnet::model::CONV_NAMES[layer].into(),
        image: stored.id,
        max,
        map_shape,
    }))
}
