//! HTTP tests against a real `zfvis serve` on 127.0.0.1.

use crate::common;
use crate::common::{demo_image, fixture_weights, Server};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use zfvis_api::{ApiError, Health, ModelInfo, PredictResponse};

fn image_form(bytes: Vec<u8>, name: &str) -> Form {
    Form::new().part("image", Part::bytes(bytes).file_name(name.to_string()))
}

async fn expect_error(resp: reqwest::Response, status: StatusCode, code: &str) -> ApiError {
    assert_eq!(resp.status(), status, "status");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let err: ApiError = resp.json().await.expect("JSON error body");
    assert_eq!(err.code.as_str(), code, "{err:?}");
    assert!(!err.error.is_empty());
    err
}

/// A PNG whose header claims `w`×`h` pixels, with no pixel data: tests the size check happens
/// before any decoding or allocation.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    for (kind, data) in [
        (&b"IDAT"[..], &[0x78u8, 0x9c, 0x03, 0x00][..]),
        (b"IEND", b""),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

#[tokio::test]
async fn health_and_model_describe_the_network() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let health: Health = common::get_json(&client, &format!("{}/api/health", server.url)).await;
    assert_eq!(health.status, "ok");
    assert_eq!(health.device, "cpu");

    let model: ModelInfo = common::get_json(&client, &format!("{}/api/model", server.url)).await;
    assert_eq!(model.architecture, "zfnet");
    assert!(!model.trained);
    assert_eq!(model.classes.len(), 10);
    assert_eq!(model.classes[0].label, "tench");
    let names: Vec<_> = model.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    );
    // the fixture's narrowed widths, the paper's spatial sizes
    assert_eq!(model.layers[0].output_shape, [16, 110, 110]);
    assert_eq!(
        model.layers[0].pooled_shape.as_deref(),
        Some(&[16, 55, 55][..])
    );
    assert_eq!(model.layers[1].output_shape, [32, 26, 26]);
    assert_eq!(
        model.layers[4].pooled_shape.as_deref(),
        Some(&[24, 6, 6][..])
    );
    assert_eq!(model.layers[7].output_shape, [10]);
}

#[tokio::test]
async fn predict_returns_the_models_own_top5() {
    let server = Server::start(&fixture_weights(), &[]);
    let bytes = demo_image("dog.jpg");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/predict", server.url))
        .multipart(image_form(bytes.clone(), "dog.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got: PredictResponse = resp.json().await.unwrap();
    assert_eq!((got.width, got.height), (768, 576));
    assert_eq!(got.predictions.len(), 5);

    // The same image through the library in this process: the server must return exactly it.
    let model = zfnet::LoadedModel::load(&fixture_weights(), &candle_core::Device::Cpu).unwrap();
    let x = zfnet::preprocess::prepare(&bytes, &model.manifest.preprocess)
        .unwrap()
        .to_tensor(&candle_core::Device::Cpu)
        .unwrap();
    let probs = zfnet::model::softmax(&model.net.forward(&x).unwrap())
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    for (p, &want) in got.predictions.iter().zip(&order) {
        assert_eq!(p.index, want);
        assert!((p.probability - probs[want]).abs() < 1e-6);
        assert_eq!(p.label, model.manifest.classes[want].label);
    }
}

#[tokio::test]
async fn bad_uploads_get_json_errors_naming_the_problem() {
    let server = Server::start(&fixture_weights(), &["--max-body-mib", "1"]);
    let client = reqwest::Client::new();
    let url = format!("{}/api/predict", server.url);
    let post = |form: Form| client.post(&url).multipart(form).send();

    let resp = post(image_form(b"this is not an image".to_vec(), "x.jpg"))
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "not_an_image").await;

    let mut jpeg = demo_image("person.jpg");
    jpeg.truncate(jpeg.len() / 3);
    let resp = post(image_form(jpeg, "cut.jpg")).await.unwrap();
    let err = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image").await;
    assert!(
        err.error.contains("truncated") || err.error.contains("damaged"),
        "{}",
        err.error
    );

    let resp = post(image_form(png_claiming(30_000, 30_000), "huge.png"))
        .await
        .unwrap();
    let err = expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "image_too_large").await;
    assert!(err.error.contains("30000×30000"), "{}", err.error);

    let resp = post(image_form(vec![0xff; 2 * 1024 * 1024], "big.jpg"))
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    let resp = post(Form::new().text("other", "x")).await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "missing_image").await;

    let resp = post(image_form(Vec::new(), "empty.jpg")).await.unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "empty_upload").await;

    let resp = client.post(&url).body("plain").send().await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_multipart").await;

    let resp = client
        .get(format!("{}/api/nothing", server.url))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;

    // still serving after all that
    let resp = post(image_form(demo_image("eagle.jpg"), "eagle.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_placeholder_model_serves_and_says_it_is_untrained() {
    let dir = common::scratch_dir("placeholder");
    let weights = dir.join("zfnet.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["init-weights", "--seed", "3", "--out"])
        .arg(&weights)
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start(&weights, &[]);
    let client = reqwest::Client::new();
    let model: ModelInfo = common::get_json(&client, &format!("{}/api/model", server.url)).await;
    assert!(!model.trained);
    assert!(model.provenance.contains("UNTRAINED"));
    assert_eq!(model.layers[0].output_shape, [96, 110, 110]);
    assert_eq!(model.layers[4].output_shape, [256, 13, 13]);
    let resp = client
        .post(format!("{}/api/predict", server.url))
        .multipart(image_form(demo_image("chelsea.png"), "chelsea.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let p: PredictResponse = resp.json().await.unwrap();
    assert!(!p.trained);
    let total: f32 = p.predictions.iter().map(|p| p.probability).sum();
    assert!(total > 0.0 && total <= 1.0 + 1e-5);
    let _ = std::fs::remove_dir_all(dir);
}
