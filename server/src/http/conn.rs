//! Accepting connections with bounds a slow or greedy client cannot get past:
//!
//! - at most `max_connections` open at once; one more is answered `503` (JSON, `Retry-After`)
//!   and closed at once, so it costs the server nothing;
//! - a request's headers must arrive within `header_timeout` (also the idle limit between
//!   requests on a kept-alive connection): half-sent headers do not hold a connection for ever;
//! - request bodies must keep arriving: [`body_timeout_layer`] ends an upload that stalls.
//!
//! `axum::serve` offers none of these knobs, so this is its loop with them added (hyper-util's
//! connection builder, as axum uses).

use crate::state::ConnLimits;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use zfvis_api::{ApiError, ErrorCode};

/// Ends a request whose body stalls for longer than the limit (the handler sees a body error and
/// answers `400 incomplete_body`).
pub fn body_timeout_layer(limits: &ConnLimits) -> tower_http::timeout::RequestBodyTimeoutLayer {
    tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout)
}

/// The raw answer for a connection over the cap: written before any request is read.
fn over_capacity_response() -> Vec<u8> {
    let body = serde_json::to_string(&ApiError {
        error: "the server has too many open connections; try again in a moment".into(),
        code: ErrorCode::Overloaded,
    })
    .unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        crate::error::RETRY_AFTER_SECS,
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // e.g. out of file descriptors: wait a little instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream.write_all(&over_capacity_response()).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        // handlers see the client's address as axum's ConnectInfo (per-client limits)
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
