//! Several models in one server (`serve --weights A --weights B`): `GET /api/models`, `?model=ID`
//! on every kind of route, answers that equal a server of that model alone, URLs that keep their
//! model, an upload opened under another model, top-9 per model, and 4xx JSON for bad ids.

use super::common::{self, demo_image, fixture_weights, get_json, scratch_dir, upload, Server};
use reqwest::StatusCode;
use std::path::PathBuf;
use zfvis_api::{ApiError, ErrorCode, ImageResponse, ModelInfo, ModelList, PredictResponse};
use zfvis_api::{TopActivations, VisualizeResponse};

const ALEX: &str = "alexnet-narrow";

fn alexnet_weights() -> PathBuf {
    common::repo_root().join("tests/fixtures/alexnet-narrow.safetensors")
}

fn demo() -> PathBuf {
    common::repo_root().join("web/assets/demo")
}

async fn predict(client: &reqwest::Client, url: &str, bytes: Vec<u8>) -> PredictResponse {
    common::post_image(client, url, bytes, "dog.jpg").await
}

async fn png_ok(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert!(bytes.starts_with(b"\x89PNG"), "{url} is not a PNG");
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn two_models_answer_as_each_would_alone() {
    let cache = scratch_dir("models");
    let c = cache.to_str().unwrap();
    let probe = demo();
    let alex = alexnet_weights();
    let args = [
        "--weights",
        alex.to_str().unwrap(),
        "--probe",
        probe.to_str().unwrap(),
        "--cache-dir",
        c,
    ];
    let both = Server::start_only(&fixture_weights(), &args);
    let alone = Server::start(&alex, &["--cache-dir", c]);
    let client = reqwest::Client::new();

    // the list: the default first, ids from the file names, each with its own statistics
    let list: ModelList = get_json(&client, &format!("{}/api/models", both.url)).await;
    let ids: Vec<&str> = list.models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["zfnet-narrow", ALEX]);
    assert!(list.models[0].default && !list.models[1].default);
    assert_eq!(list.models[1].architecture, "alexnet");
    assert_ne!(list.models[0].conv1, list.models[1].conv1);

    // /api/model with and without ?model
    let zf: ModelInfo = get_json(&client, &format!("{}/api/model", both.url)).await;
    let ax: ModelInfo = get_json(&client, &format!("{}/api/model?model={ALEX}", both.url)).await;
    let ax_alone: ModelInfo = get_json(&client, &format!("{}/api/model", alone.url)).await;
    assert_eq!((zf.id.as_str(), zf.default), ("zfnet-narrow", true));
    assert_eq!(
        (ax.id.as_str(), ax.architecture.as_str()),
        (ALEX, "alexnet")
    );
    assert_eq!(ax.weights_sha256, ax_alone.weights_sha256);
    assert_eq!(ax.layers, ax_alone.layers);

    // predictions through ?model equal the model served alone, and differ from the default's
    let dog = demo_image("dog.jpg");
    let p_both = predict(
        &client,
        &format!("{}/api/predict?model={ALEX}", both.url),
        dog.clone(),
    )
    .await;
    let p_alone = predict(&client, &format!("{}/api/predict", alone.url), dog.clone()).await;
    let p_zf = predict(&client, &format!("{}/api/predict", both.url), dog.clone()).await;
    assert_eq!(p_both.predictions, p_alone.predictions);
    assert_ne!(p_both.predictions, p_zf.predictions);

    // an image uploaded under the default opens under the other model, with that model's answer
    let img = upload(&client, &both.url, "dog.jpg").await;
    let other: ImageResponse = get_json(
        &client,
        &format!("{}/api/images/{}?model={ALEX}", both.url, img.id),
    )
    .await;
    assert_eq!(other.id, img.id);
    assert_eq!(other.predictions, p_alone.predictions);
    assert_eq!(
        other.input_url,
        format!("/api/images/{}/input?model={ALEX}", img.id)
    );

    // a map view: URLs name the model, and its pictures equal the model alone's
    let v: VisualizeResponse = get_json(
        &client,
        &format!(
            "{}/visualize/conv2/1?image={}&model={ALEX}",
            both.url, img.id
        ),
    )
    .await;
    let v_alone: VisualizeResponse = get_json(
        &client,
        &format!("{}/visualize/conv2/1?image={}", alone.url, img.id),
    )
    .await;
    assert!(v.projection_url.ends_with(&format!("&model={ALEX}")));
    assert_eq!(v.max, v_alone.max);
    let mine = png_ok(&client, &format!("{}{}", both.url, v.projection_url)).await;
    let theirs = png_ok(&client, &format!("{}{}", alone.url, v_alone.projection_url)).await;
    assert_eq!(mine, theirs, "the same projection");
    let default_view = png_ok(
        &client,
        &format!(
            "{}/api/images/{}/projection/conv2/1?mode=unit",
            both.url, img.id
        ),
    )
    .await;
    assert_ne!(mine, default_view, "the default model projects otherwise");

    // a unit that exists in one model only: conv1 is 110×110 in ZFNet, 55×55 in AlexNet
    let zf_side = zf.layers[0].output_shape[2];
    let ax_side = ax.layers[0].output_shape[2];
    assert!(ax_side < zf_side, "{ax_side} {zf_side}");
    let x = zf_side - 1;
    for (q, want) in [("", 200), ("&model=alexnet-narrow", 422)] {
        let resp = client
            .get(format!(
                "{}/visualize/conv1/0?image={}&mode=unit&x={x}&y=0{q}",
                both.url, img.id
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "x={x} {q}");
        if want == 422 {
            let e: ApiError = resp.json().await.unwrap();
            assert_eq!(e.code, ErrorCode::PositionOutOfRange);
        }
    }

    // top-9 per model: each has its own index over the same probe images
    common::wait_for_index(&both.url);
    wait_for_index_of(&client, &both.url, ALEX).await;
    let top: TopActivations = get_json(
        &client,
        &format!("{}/visualize/conv3/2?model={ALEX}", both.url),
    )
    .await;
    let top_zf: TopActivations =
        get_json(&client, &format!("{}/visualize/conv3/2", both.url)).await;
    assert_eq!(top.entries.len(), 9);
    assert_ne!(
        top.entries.iter().map(|e| e.value).collect::<Vec<_>>(),
        top_zf.entries.iter().map(|e| e.value).collect::<Vec<_>>()
    );
    for e in &top.entries[..2] {
        assert!(e.reconstruction_url.ends_with(&format!("?model={ALEX}")));
        png_ok(&client, &format!("{}{}", both.url, e.reconstruction_url)).await;
    }
    // every conv1 filter grid is the model's own
    let g1 = png_ok(
        &client,
        &format!("{}/api/model/filters/conv1.png", both.url),
    )
    .await;
    let g2 = png_ok(
        &client,
        &format!("{}/api/model/filters/conv1.png?model={ALEX}", both.url),
    )
    .await;
    assert_ne!(g1, g2);

    // bad ids: 404 unknown_model naming the id and the models there are; twice: 422
    for path in [
        "/api/model?model=vgg16".to_string(),
        "/visualize/conv1/0?model=vgg16".to_string(),
        format!("/api/images/{}?model=vgg16", img.id),
        "/api/models?model=vgg16".to_string(),
    ] {
        let resp = client
            .get(format!("{}{path}", both.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let e: ApiError = resp.json().await.unwrap();
        assert_eq!(e.code, ErrorCode::UnknownModel);
        assert!(
            e.error.contains("'vgg16'") && e.error.contains(ALEX),
            "{}",
            e.error
        );
    }
    let resp = client
        .get(format!(
            "{}/api/model?model={ALEX}&model=zfnet-narrow",
            both.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(dog).file_name("dog.jpg"),
    );
    let resp = client
        .post(format!("{}/api/images?model=../../etc", both.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

async fn wait_for_index_of(client: &reqwest::Client, url: &str, model: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let h: zfvis_api::Health =
            get_json(client, &format!("{url}/api/health?model={model}")).await;
        match h.probe_index.map(|s| s.state) {
            Some(zfvis_api::IndexPhase::Ready) => return,
            Some(zfvis_api::IndexPhase::Failed) => panic!("index of {model} failed"),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "index of {model}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn two_files_of_one_name_are_refused_before_serving() {
    let tmp = scratch_dir("models-clash");
    let dir = tmp.join("b");
    std::fs::create_dir_all(&dir).unwrap();
    for ext in ["safetensors", "json"] {
        std::fs::copy(
            common::repo_root().join(format!("tests/fixtures/alexnet-narrow.{ext}")),
            dir.join(format!("zfnet-narrow.{ext}")),
        )
        .unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["serve", "--addr", "127.0.0.1:0", "--weights"])
        .arg(fixture_weights())
        .arg("--models")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'zfnet-narrow'") && err.contains("rename one file"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["serve", "--addr", "127.0.0.1:0", "--models"])
        .arg(tmp.join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models folder"), "{err}");
}
