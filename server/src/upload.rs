//! The `image` field of a multipart upload, read with a hard size bound.
//!
//! Bodies over the limit get a 413 JSON answer. The rest of such a body is read and discarded (up
//! to [`DRAIN_CAP`]) before answering: closing a socket with unread data makes the kernel send a
//! reset, and the client would see "connection reset" instead of the message.

use crate::error::AppError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use std::sync::Arc;

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
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        if !is_multipart {
            return Err(AppError::bad_request(
                "bad_multipart",
                "expected a multipart/form-data body with a file field named 'image'",
            ));
        }
        let (parts, body) = req.into_parts();
        let bytes = read_bounded(body, limit).await?;
        let req = Request::from_parts(parts, Body::from(bytes));
        let mut multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| AppError::bad_request("bad_multipart", e.body_text()))?;
        while let Some(field) = multipart.next_field().await? {
            if field.name() == Some("image") {
                let bytes = field.bytes().await?;
                if bytes.is_empty() {
                    return Err(AppError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "empty_upload",
                        "the field 'image' is empty",
                    ));
                }
                return Ok(ImageUpload(bytes.to_vec()));
            }
        }
        Err(AppError::bad_request(
            "missing_image",
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
            AppError::bad_request("bad_body", format!("could not read the request body: {e}"))
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
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
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
