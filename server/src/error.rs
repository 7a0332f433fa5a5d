//! API errors: every failure leaves as the status of its [`ErrorCode`] plus
//! `{"error": …, "code": …}`. Internal failures are logged in full and answered with a message
//! that says nothing about the server's insides.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use zfvis_api::{ApiError, ErrorCode};

/// Seconds a client should wait before retrying a `503 overloaded`.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, Clone)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
        }
    }

    /// A failure inside the server: logged with `detail`, answered with a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "something went wrong inside the server (the details are in its log)",
        )
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The body as the wire type (also sent as an SSE `error` event).
    pub fn body(&self) -> ApiError {
        ApiError {
            error: self.message.clone(),
            code: self.code,
        }
    }
}

impl From<zfnet::preprocess::ImageError> for AppError {
    fn from(e: zfnet::preprocess::ImageError) -> Self {
        use zfnet::preprocess::ImageError as E;
        let code = match e {
            E::TooLarge { .. } => ErrorCode::ImageTooLarge,
            E::Empty => ErrorCode::EmptyImage,
            E::Corrupt(_) => ErrorCode::CorruptImage,
            E::NotAnImage(_) => ErrorCode::NotAnImage,
            E::TooElongated { .. } => ErrorCode::ImageTooElongated,
        };
        AppError::new(code, e.to_string())
    }
}

impl From<zfnet::Error> for AppError {
    fn from(e: zfnet::Error) -> Self {
        use zfnet::Error as E;
        match e {
            E::Image(img) => img.into(),
            E::UnknownLayer(_) => AppError::new(ErrorCode::UnknownLayer, e.to_string()),
            E::MapOutOfRange { .. } => AppError::new(ErrorCode::MapOutOfRange, e.to_string()),
            E::PositionOutOfRange { .. } => {
                AppError::new(ErrorCode::PositionOutOfRange, e.to_string())
            }
            E::Cancelled => AppError::new(ErrorCode::Cancelled, "the work was cancelled"),
            E::Config(_) => AppError::new(ErrorCode::BadParameters, e.to_string()),
            other => AppError::internal(other),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for AppError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::BodyTooLarge
        } else {
            ErrorCode::BadMultipart
        };
        AppError::new(
            code,
            format!("could not read the upload: {}", e.body_text()),
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::debug!(code = %self.code, message = %self.message, "request rejected");
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self.code, ErrorCode::Overloaded | ErrorCode::IndexBuilding) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = AppError::internal("reading /secret/path: permission denied");
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("/secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let r = AppError::new(ErrorCode::Overloaded, "busy").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }
}
