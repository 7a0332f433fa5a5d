//! Who may talk to the server: state-changing requests from another web origin are refused
//! (a page on any site could otherwise POST to a zfvis on localhost), and so is a `Host` the
//! server does not answer to (DNS rebinding: a hostile name resolving to 127.0.0.1). Overlong
//! request targets are refused here too, as JSON.

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use zfvis_api::ErrorCode;

/// The host name of a `Host` header value, without the port (`[::1]` keeps its brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Longest request target (path and query) answered; longer ones get `414 uri_too_long`.
pub const MAX_URI: usize = 8 * 1024;

pub async fn check(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if length > MAX_URI {
        return Err(AppError::new(
            ErrorCode::UriTooLong,
            format!("the request target is {length} bytes; the limit is {MAX_URI}"),
        ));
    }
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if let Some(allowed) = &state.access.allowed_hosts {
        let name = host_name(host).to_ascii_lowercase();
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&name)) {
            return Err(AppError::new(
                ErrorCode::UnknownHost,
                format!("this server does not answer to the host '{host}' (see --allowed-host)"),
            ));
        }
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let same = ["http://", "https://"]
                .iter()
                .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
            let listed = state
                .access
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin));
            if !same && !listed {
                return Err(AppError::new(
                    ErrorCode::ForbiddenOrigin,
                    format!(
                        "requests from the web page at {origin} may not change anything here (see --allowed-origin)"
                    ),
                ));
            }
        }
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }
}
