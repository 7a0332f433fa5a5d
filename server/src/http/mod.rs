//! The HTTP side: one router per feature, each registering its routes together with their
//! OpenAPI paths (utoipa-axum), merged by [`app`] with the UI and the JSON fallbacks.
//!
//! Handlers parse (the extractors in [`extract`]), hand the work to `zfnet` on the blocking pool
//! and shape the answer; they do no tensor maths.

pub mod analyses;
pub mod conn;
pub mod evolution;
pub mod examples;
pub mod extract;
pub mod guard;
pub mod images;
pub mod model;
pub mod models;
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
        .merge(models::router())
        .merge(evolution::router())
        .split_for_parts()
}

/// [`api`]'s document with the optional `model` query parameter on every operation (the
/// dispatcher in [`models`] reads it before any route does).
pub fn api_spec() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    let (_, mut spec) = api();
    let model = ParameterBuilder::new()
        .name(zfvis_api::paths::MODEL_PARAM)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "the model to use (an id from GET /api/models); the server's default without it",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    for item in spec.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ];
        for op in operations.into_iter().flatten() {
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(model.clone());
        }
    }
    spec
}

/// The whole server for one model: see [`app_models`].
pub fn app(state: Arc<AppState>, ui_dir: Option<&Path>) -> Router {
    app_models(state, Vec::new(), ui_dir)
}

/// The API of one model, `/api/openapi.json` and JSON answers for unknown API routes and
/// methods.
fn model_api(state: Arc<AppState>, spec: Arc<utoipa::openapi::OpenApi>) -> Router {
    let (api, _) = api();
    api.route(
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
    .with_state(state)
}

/// The whole server: the API of `default` and of each of `others` (picked by `?model=ID`,
/// [`models::dispatch`]), and the UI from `ui_dir` (a placeholder page without one). `others`
/// must have been made with `AppState::beside(…, &default)`, with ids of their own.
pub fn app_models(
    default: Arc<AppState>,
    others: Vec<Arc<AppState>>,
    ui_dir: Option<&Path>,
) -> Router {
    let body_timeout = conn::body_timeout_layer(&default.conn);
    let spec = Arc::new(api_spec());
    let all: Vec<Arc<AppState>> = std::iter::once(default.clone()).chain(others).collect();
    let routers = all
        .iter()
        .map(|m| {
            m.group.admit(m);
            (m.info.id.clone(), model_api(m.clone(), spec.clone()))
        })
        .collect();
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
    // a fallback, not a route: a route's path parameters would stay in the request and
    // confuse the model router's own
    Router::new()
        .fallback(models::dispatch)
        .with_state(models::Routers::new(routers, ui))
        .layer(axum::middleware::from_fn_with_state(default, guard::check))
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
