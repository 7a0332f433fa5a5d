//! Probe images as files: each one itself (`GET /api/probe/images/{index}`), and a photo of
//! every class the model knows (`GET /api/probe/examples`), so a class can try the model on what
//! it was trained to tell apart.

use crate::error::AppError;
use crate::http::extract::P;
use crate::state::AppState;
use crate::store::probes::ProbeSet;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;
use zfvis_api::{paths, ApiError, ClassExample, ClassExamples, ErrorCode};

/// Probe image `index`: its path in the probe folder and its bytes (at most `limit`).
pub async fn probe_file(
    probes: &ProbeSet,
    index: usize,
    limit: usize,
) -> Result<(String, Vec<u8>), AppError> {
    let image = probes.index.images.get(index).ok_or_else(|| {
        AppError::new(
            ErrorCode::ImageNotFound,
            format!(
                "the probe set has {} images; there is no {index}",
                probes.index.images.len()
            ),
        )
    })?;
    let path = probes.root.join(&image.path);
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|e| AppError::internal(format!("reading {}: {e}", path.display())))?
        .len();
    if size > limit as u64 {
        return Err(AppError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "probe image {index} is {size} bytes; files over {limit} are not sent (open it instead)"
            ),
        ));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| AppError::internal(format!("reading {}: {e}", path.display())))?;
    Ok((image.path.clone(), bytes))
}

/// The probe image file itself, as it is in the probe folder.
#[utoipa::path(get, path = "/api/probe/images/{index}", tag = "images",
    params(("index" = usize, Path)),
    responses((status = 200, content_type = "image/*", description = "the file"), (status = 404, body = ApiError)))]
pub async fn probe_image_file(
    State(state): State<Arc<AppState>>,
    P(index): P<usize>,
) -> Result<Response, AppError> {
    let probes = state.probes()?;
    let (path, bytes) = probe_file(&probes, index, state.limits.max_body_bytes).await?;
    let ext = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mime = match ext.as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "image/jpeg",
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            // the index names the image only with this probe set: cached, not immutable
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

/// The first probe image (in path order) of every class of the model whose folder names it.
#[utoipa::path(get, path = "/api/probe/examples", tag = "images",
    responses((status = 200, body = ClassExamples), (status = 404, body = ApiError)))]
pub async fn class_examples(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ClassExamples>, AppError> {
    let probes = state.probes()?;
    let classes = &state.info.classes;
    let examples = classes
        .iter()
        .filter_map(|class| {
            let index = probes
                .labels
                .iter()
                .position(|l| l.as_deref() == Some(class.label.as_str()))?;
            Some(ClassExample {
                class: class.index,
                label: class.label.clone(),
                image: probes.index.images[index].path.clone(),
                image_url: state.url(paths::probe_image(index)),
                open_url: state.url(paths::probe_image(index)),
            })
        })
        .collect();
    Ok(Json(ClassExamples {
        classes: classes.len(),
        examples,
    }))
}
