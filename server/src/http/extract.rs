//! Extractors that turn a request into typed values or a JSON error: the uploaded image
//! ([`ImageUpload`]), query strings, JSON bodies and path segments ([`Q`], [`JsonBody`], [`P`]),
//! the stored image named in the path ([`StoredParam`]) and a layer/map pair checked against the
//! model ([`MapParam`]).
//!
//! Upload bodies over the limit get a 413 JSON answer. The rest of such a body is read and discarded (up
//! to [`DRAIN_CAP`]) before answering: closing a socket with unread data makes the kernel send a
//! reset, and the client would see "connection reset" instead of the message.

use crate::error::AppError;
use crate::state::AppState;
use crate::store::images::StoredImage;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Multipart, RawPathParams, Request};
use axum::http::header;
use axum::http::request::Parts;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use zfvis_api::ErrorCode;

/// Most bytes of an oversized body read (and dropped) to deliver the 413 cleanly.
pub const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// The bytes of the multipart field `image`.
pub struct ImageUpload(pub Vec<u8>);

impl FromRequest<Arc<AppState>> for ImageUpload {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, AppError> {
        let limit = state.limits.max_body_bytes;
        let is_multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !is_multipart {
            return Err(AppError::new(
                ErrorCode::BadMultipart,
                "expected a multipart/form-data body with a file field named 'image'",
            ));
        }
        let (parts, body) = req.into_parts();
        let bytes = read_bounded(body, limit).await?;
        let req = Request::from_parts(parts, Body::from(bytes));
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| AppError::new(ErrorCode::BadMultipart, e.body_text()))?;
        while let Some(field) = multipart.next_field().await? {
            if field.name() == Some("image") {
                let bytes = field.bytes().await?;
                if bytes.is_empty() {
                    return Err(AppError::new(
                        ErrorCode::EmptyUpload,
                        "the field 'image' is empty",
                    ));
                }
                return Ok(ImageUpload(bytes.to_vec()));
            }
        }
        Err(AppError::new(
            ErrorCode::MissingImage,
            "expected a multipart/form-data body with a file field named 'image'",
        ))
    }
}

async fn read_bounded(body: Body, limit: usize) -> Result<Vec<u8>, AppError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::new(
                ErrorCode::IncompleteBody,
                format!("could not read the request body: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(AppError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the upload is {} (or more); the limit is {} MiB",
                human_bytes(seen),
                limit / (1024 * 1024)
            ),
        ));
    }
    Ok(buf)
}

fn human_bytes(n: usize) -> String {
    if n >= 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} KiB", n.div_ceil(1024))
    }
}

/// A query string as `T`; a malformed one is `422 bad_query`.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| AppError::new(ErrorCode::BadQuery, e.body_text()))
    }
}

/// A JSON body as `T`; a malformed one is `422 bad_body`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|j| JsonBody(j.0))
            .map_err(|e| AppError::new(ErrorCode::BadBody, e.body_text()))
    }
}

/// Path segments as `T`; a segment of the wrong type is `422 bad_path`.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| P(p.0))
            .map_err(|e| AppError::new(ErrorCode::BadPath, e.body_text()))
    }
}

/// The value of path segment `name`.
async fn raw_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, AppError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|e| AppError::new(ErrorCode::BadPath, e.body_text()))?;
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| AppError::internal(format!("route has no {{{name}}} segment")))
}

/// The stored image whose id is the path's `{id}`.
pub struct StoredParam {
    pub id: String,
    pub image: Arc<StoredImage>,
}

impl FromRequestParts<Arc<AppState>> for StoredParam {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let id = raw_param(parts, state, "id").await?;
        let image = crate::http::images::stored(state, &id).await?;
        Ok(StoredParam { id, image })
    }
}

/// The path's `{layer}` (0-based conv index) and `{map}`, checked against the model.
#[derive(Debug, Clone, Copy)]
pub struct MapParam {
    pub layer: usize,
    pub map: usize,
}

impl MapParam {
    pub fn layer_name(&self) -> &'static str {
        zfnet::model::CONV_NAMES[self.layer]
    }
}

impl FromRequestParts<Arc<AppState>> for MapParam {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let layer = zfnet::views::parse_layer(&raw_param(parts, state, "layer").await?)?;
        let maps = state.model.net.convs[layer].out_channels();
        let map_text = raw_param(parts, state, "map").await?;
        let map = map_text
            .parse::<usize>()
            .ok()
            .filter(|&m| m < maps)
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::MapOutOfRange,
                    format!(
                        "{} has {maps} feature maps (0…{}); there is no map {map_text}",
                        zfnet::model::CONV_NAMES[layer],
                        maps.saturating_sub(1)
                    ),
                )
            })?;
        Ok(MapParam { layer, map })
    }
}

/// The client's IP address, when the connection carries one (`None` in `oneshot` tests).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}
