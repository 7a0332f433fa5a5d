//! The HTTP side: one router per feature, each registering its routes together with their
//! OpenAPI paths (utoipa-axum), merged by [`app`] with the UI and the JSON fallbacks.
//!
//! Handlers parse (the extractors in [`extract`]), hand the work to `zfnet` on the blocking pool
//! and shape the answer; they do no tensor maths.

pub mod analyses;
pub mod conn;
pub mod extract;
pub mod guard;
pub mod images;
pub mod model;
pub mod occlusion;
pub mod probe;
pub mod visualize;

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::path::Path;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use zfvis_api::ErrorCode;

/// A feature's routes with their OpenAPI paths.
pub type ApiRouter = OpenApiRouter<Arc<AppState>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zfvis",
        description = "See inside ZFNet: predictions, feature maps, deconvnet projections, top-9 \
                       activations over a probe set, occlusion sweeps, the paper's invariance and \
                       correspondence analyses."
    ),
    components(schemas(zfvis_api::ApiError, zfvis_api::ErrorCode, zfvis_api::TopActivations))
)]
struct ApiDoc;

/// Every API route and the OpenAPI document describing exactly those routes.
pub fn api() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(model::router())
        .merge(images::router())
        .merge(visualize::router())
        .merge(probe::router())
        .merge(occlusion::router())
        .merge(analyses::router())
        .split_for_parts()
}

/// The whole server: the API, `/api/openapi.json`, JSON answers for unknown API routes and
/// methods, and the UI from `ui_dir` (a placeholder page without one).
pub fn app(state: Arc<AppState>, ui_dir: Option<&Path>) -> Router {
    let body_timeout = conn::body_timeout_layer(&state.conn);
    let (api, spec) = api();
    let spec = Arc::new(spec);
    let api = api
        .route(
            zfvis_api::paths::templates::OPENAPI,
            get(move || {
                let spec = spec.clone();
                async move { Json(spec.as_ref().clone()) }
            }),
        )
        .route("/api", get(api_not_found).post(api_not_found))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .method_not_allowed_fallback(method_not_allowed)
        // uploads enforce their own bound (extract::ImageUpload); everything else reads no body
        .layer(DefaultBodyLimit::disable())
        .with_state(state.clone());
    let ui = match ui_dir.map(|d| (d, d.join("index.html"))) {
        Some((dir, index)) if index.exists() => {
            Router::new().fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
        }
        _ => {
            tracing::warn!("no UI (build it with scripts/build-web.sh); serving the API only");
            Router::new().fallback(|| async {
                axum::response::Html(
                    "<h1>zfvis</h1><p>The UI is not built. Run <code>scripts/run.sh</code>, or use the API at /api/model.</p>",
                )
            })
        }
    };
    api.merge(ui)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .layer(body_timeout)
        .layer(TraceLayer::new_for_http())
}

async fn api_not_found(uri: Uri) -> AppError {
    AppError::new(ErrorCode::NotFound, format!("no API route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    )
}

/// A PNG whose URL names its content (an image id, a probe image's hash): cached for a day.
pub fn png_response(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        bytes,
    )
        .into_response()
}

/// [`png_response`] for a PNG shared with a cache.
pub fn png_response_shared(bytes: Arc<Vec<u8>>) -> Response {
    png_response(bytes.as_ref().clone())
}
