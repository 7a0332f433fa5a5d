//! Photos of the model's classes from the probe set (`GET /api/probe/examples`) and probe image
//! files (`GET /api/probe/images/{index}`), through a real server.

use super::common::{fixture_weights, get_json, repo_root, scratch_dir, Server};
use reqwest::StatusCode;
use zfvis_api::{ApiError, ClassExamples, ErrorCode, ImageResponse, ModelInfo};

#[tokio::test(flavor = "multi_thread")]
async fn every_class_with_a_folder_gets_its_first_photo() {
    let tmp = scratch_dir("examples");
    let probe = tmp.join("probe");
    let demo = repo_root().join("web/assets/demo");
    // folders by WordNet id (English springer, church) and one that names no class
    for (dir, name) in [
        ("n02102040", "dog.jpg"),
        ("n03028079", "horses.jpg"),
        ("n03028079", "china.jpg"),
        ("other", "eagle.jpg"),
    ] {
        std::fs::create_dir_all(probe.join(dir)).unwrap();
        std::fs::copy(demo.join(name), probe.join(dir).join(name)).unwrap();
    }
    let server = Server::start(
        &fixture_weights(),
        &[
            "--probe",
            probe.to_str().unwrap(),
            "--cache-dir",
            tmp.join("cache").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let info: ModelInfo = get_json(&client, &format!("{}/api/model", server.url)).await;
    let ex: ClassExamples = get_json(&client, &format!("{}/api/probe/examples", server.url)).await;
    assert_eq!(ex.classes, info.classes.len());
    let got: Vec<(&str, &str)> = ex
        .examples
        .iter()
        .map(|e| (e.label.as_str(), e.image.as_str()))
        .collect();
    // class order; the first file in path order of each class
    assert_eq!(
        got,
        [
            ("English springer", "n02102040/dog.jpg"),
            ("church", "n03028079/china.jpg")
        ]
    );
    for e in &ex.examples {
        assert_eq!(info.classes[e.class].label, e.label);
        // the file as it is on disk
        let resp = client
            .get(format!("{}{}", server.url, e.image_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "image/jpeg");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), std::fs::read(probe.join(&e.image)).unwrap());
        // and opened as an upload, saying where it came from
        let opened: ImageResponse = client
            .post(format!("{}{}", server.url, e.open_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let source = opened.source.unwrap_or_default();
        assert!(source.contains(&format!("class: {}", e.label)), "{source}");
    }
    let resp = client
        .get(format!("{}/api/probe/images/99", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let e: ApiError = resp.json().await.unwrap();
    assert_eq!(e.code, ErrorCode::ImageNotFound);
    assert!(e.error.contains("99"), "{}", e.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_probe_set_there_are_no_examples() {
    let tmp = scratch_dir("examples-none");
    let server = Server::start(&fixture_weights(), &["--cache-dir", tmp.to_str().unwrap()]);
    let resp = reqwest::get(format!("{}/api/probe/examples", server.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let e: ApiError = resp.json().await.unwrap();
    assert_eq!(e.code, ErrorCode::NoProbeIndex);
}
