//! The router in-process (`tower::ServiceExt::oneshot`, no socket): error answers of every kind
//! are JSON with the documented status, and the OpenAPI document describes exactly the routes
//! and URLs the server builds.

use crate::common::fixture_weights;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use zfvis::state::{AppState, Limits};
use zfvis_api::{paths, ApiError};

fn app() -> axum::Router {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let model = zfnet::LoadedModel::load(&fixture_weights(), &candle_core::Device::Cpu)
            .expect("fixture model");
        Arc::new(AppState::new(model, Limits::default()))
    });
    zfvis::app(state.clone(), None)
}

async fn send(method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let response = app().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.expect("body");
    (parts.status, parts.headers, bytes.to_vec())
}

#[tokio::test]
async fn every_rejection_is_json_with_its_status() {
    let cases = [
        ("GET", "/api/nothing/here", 404, "not_found"),
        ("DELETE", "/api/model", 405, "method_not_allowed"),
        ("GET", "/api/predict", 405, "method_not_allowed"),
        ("GET", "/api/images/abc", 404, "image_not_found"),
        (
            "GET",
            "/api/images/abc/layers/conv9",
            404,
            "image_not_found",
        ),
        ("GET", "/visualize/conv9/0", 404, "unknown_layer"),
        ("GET", "/visualize/conv1/-1", 404, "map_out_of_range"),
        (
            "GET",
            "/visualize/conv1/73786976294838206464",
            404,
            "map_out_of_range",
        ),
        ("GET", "/visualize/conv1/0?x=1&y=oops", 422, "bad_query"),
        ("GET", "/visualize/conv1/0", 404, "no_probe_index"),
        ("POST", "/api/probe/images/-3", 422, "bad_path"),
        (
            "GET",
            "/api/probe/conv1/0/99999999999999999999999/patch.png",
            422,
            "bad_path",
        ),
        ("POST", "/api/predict", 400, "bad_multipart"),
        ("GET", "/api/images/abc/occlusion/k", 404, "sweep_not_found"),
        ("GET", "/api/model?model=nope", 404, "unknown_model"),
        ("GET", "/visualize/conv1/0?model=nope", 404, "unknown_model"),
        ("GET", "/api/model?model=a&model=b", 422, "bad_query"),
    ];
    for (method, uri, status, code) in cases {
        let (got, headers, body) = send(method, uri).await;
        assert_eq!(got.as_u16(), status, "{method} {uri}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
        let err: ApiError = serde_json::from_slice(&body).expect("ApiError body");
        assert_eq!(err.code.as_str(), code, "{method} {uri}: {}", err.error);
        assert_eq!(err.code.status(), status, "{code}'s documented status");
    }
}

#[tokio::test]
async fn a_wrong_method_says_which_are_allowed() {
    let (status, headers, _) = send("PUT", "/api/images").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(allow.contains("POST"), "Allow: {allow:?}");
}

async fn spec() -> serde_json::Value {
    let (status, _, body) = send("GET", paths::templates::OPENAPI).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).expect("OpenAPI JSON")
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_url_builder() {
    let spec = spec().await;
    let documented: Vec<&str> = spec["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    use paths::templates::*;
    let templates = [
        HEALTH,
        MODEL,
        MODELS,
        CONV1_FILTERS,
        PREDICT,
        IMAGES,
        IMAGE,
        INPUT,
        LAYER,
        ACTIVATION,
        PROJECTION,
        PATCH,
        VISUALIZE,
        PROBE_PICTURE,
        PROBE_IMAGE,
        PROBE_EXAMPLES,
        OCCLUSION,
        SWEEP,
        SWEEP_EVENTS,
        SWEEP_PICTURE,
        INVARIANCE,
        CORRESPONDENCE,
        CORRESPONDENCE_PRESET,
        EVOLUTION,
        EVOLUTION_PICTURE,
    ];
    for t in templates {
        assert!(
            documented.contains(&t),
            "{t} is not in the OpenAPI document"
        );
    }
    assert_eq!(documented.len(), templates.len(), "{documented:?}");
    // every URL the server or the UI builds fits a documented route
    let mode = zfvis_api::ProjectionMode::Map;
    for url in [
        paths::layer("ab", "conv1"),
        paths::projection("ab", "conv2", 3, mode, Some((1, 2))),
        paths::patch("ab", "conv2", 3, None),
        paths::visualize("conv5", 1, Some(("ab", mode, None))),
        paths::probe_picture("conv3", 4, 0, "reconstruction.png"),
        paths::sweep_events("ab", "s48-t16-mean-ctop"),
        paths::projection_by("ab", "conv2", 3, mode, None, zfvis_api::Method::Guided),
        paths::invariance("ab", true),
        paths::correspondence(),
        paths::evolution("conv2", 5),
        paths::evolution_picture("conv2", 5, 10, "patch.png"),
        paths::with_model(&paths::probe_picture("conv3", 4, 0, "patch.png"), Some("b")),
    ] {
        assert!(
            documented.iter().any(|t| paths::matches(t, &url)),
            "{url} fits no documented route"
        );
    }
    // query parameters are declared in the query, not the path
    let start = &spec["paths"][OCCLUSION]["post"]["parameters"];
    let wait = start
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "wait"))
        .expect("wait parameter");
    assert_eq!(wait["in"], "query");
    // and every operation takes the model to use
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let takes_model = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == "model" && p["in"] == "query")
            });
            assert!(
                takes_model,
                "{method} {path} has no `model` query parameter"
            );
        }
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let spec = spec().await;
    let dir = crate::common::scratch_dir("openapi");
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named"),
        "openapi-spec-validator is missing: scripts/setup.sh installs it ({text})"
    );
    assert!(out.status.success(), "OpenAPI document invalid:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_readme_route_table_is_the_openapi_document() {
    let spec = spec().await;
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.push(format!("GET {}", paths::templates::OPENAPI));
    documented.sort();
    let readme = std::fs::read_to_string(crate::common::repo_root().join("README.md")).unwrap();
    let mut listed: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(route, _)| route.to_string()))
        .filter(|r| {
            ["GET ", "POST ", "DELETE "]
                .iter()
                .any(|m| r.starts_with(m))
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed, documented,
        "README's API table vs /api/openapi.json"
    );
}

/// A bounded mutation fuzzer for the upload path (multipart parsing, then decode): damaged
/// multipart bodies around a valid PNG each get `200` or a 4xx JSON error naming a code, never a
/// 5xx or a panic. Seeded; `ZFVIS_FUZZ_CASES` raises the count.
#[tokio::test]
async fn damaged_uploads_get_json_errors_never_a_5xx() {
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        let img =
            image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]));
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(img.as_raw(), 40, 30, image::ExtendedColorType::Rgb8)
            .unwrap();
    }
    let boundary = "zfvisFuzzBoundary";
    let mut valid = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    valid.extend_from_slice(&png);
    valid.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let cases: usize = std::env::var("ZFVIS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut seen = std::collections::BTreeMap::new();
    for case in 0..cases {
        let mut body = valid.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % body.len() as u64) as usize;
            match next() % 4 {
                0 => body[at] ^= 1 << (next() % 8),
                1 => body.truncate(at.max(1)),
                2 => body[at] = b"\r\n-\"; "[(next() % 6) as usize],
                _ => {
                    let chunk = body[at..(at + 16).min(body.len())].to_vec();
                    body.splice(at..at, chunk);
                }
            }
        }
        let request = Request::builder()
            .method("POST")
            .uri(paths::templates::IMAGES)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .expect("request");
        let response = app().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("body");
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "case {case}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            let err: ApiError = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("case {case}: {status} not JSON"));
            *seen.entry(err.code.as_str().to_string()).or_insert(0) += 1;
        } else {
            *seen.entry("ok".to_string()).or_insert(0) += 1;
        }
    }
    eprintln!("upload fuzz outcomes: {seen:?}");
    assert!(
        seen.len() >= 2,
        "the mutations exercise more than one outcome: {seen:?}"
    );
}
