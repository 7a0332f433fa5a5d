//! Occlusion sweeps through a real server: the result equals the library's one-forward-per-image
//! sweep, progress arrives as Server-Sent Events, results are cached, bad parameters get 422, and
//! a client that goes away cancels its sweep.

mod common;

use common::{demo_image, fixture_weights, upload, Server};
use reqwest::StatusCode;
use serde_json::json;
use zfnet::occlusion::{Method, OcclusionParams};
use zfvis_api::{ApiError, OcclusionResponse, OcclusionStatus};

/// Reads an SSE response until `until` returns true for an (event, data) pair; returns all pairs.
async fn read_events(
    mut resp: reqwest::Response,
    until: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if event.is_empty() {
                continue; // keep-alive comment
            }
            let stop = until(&event, &data);
            events.push((event, data));
            if stop {
                return events;
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_results_progress_and_errors() {
    let weights = fixture_weights();
    let server = Server::start(&weights, &[]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "dog.jpg").await;
    let url = format!("{}/api/images/{}/occlusion", server.url, image.id);

    // ?wait=true: the finished result, equal to the library's naive sweep
    let resp = client
        .post(format!("{url}?wait=true"))
        .json(&json!({"size": 64, "stride": 56}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r: OcclusionResponse = resp.json().await.unwrap();
    assert_eq!(r.grid, 4);
    let model = zfnet::LoadedModel::load(&weights, &candle_core::Device::Cpu).unwrap();
    let input = zfnet::preprocess::prepare(&demo_image("dog.jpg"), &model.manifest.preprocess)
        .unwrap()
        .to_tensor(&candle_core::Device::Cpu)
        .unwrap();
    let params = OcclusionParams {
        size: 64,
        stride: 56,
        ..Default::default()
    };
    let want = zfnet::occlusion::sweep(
        &model.net,
        &model.manifest.preprocess,
        &input,
        &params,
        Method::Naive,
        &|_, _| true,
    )
    .unwrap();
    assert_eq!(r.strongest_map, want.strongest_map);
    assert_eq!(r.top_class, want.top_class);
    for (a, b) in r
        .activation
        .iter()
        .zip(&want.activation)
        .chain(r.probability.iter().zip(&want.probability))
    {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1e-3),
            "{a} vs {b}"
        );
    }
    assert_eq!(r.legend.iter().map(|l| l.cells).sum::<usize>(), 16);
    assert_eq!(
        r.class, image.predictions[0].index,
        "default class: the top prediction"
    );
    for png in [
        &r.activation_url,
        &r.probability_url,
        &r.classes_url,
        &r.projection_url,
    ] {
        let resp = client
            .get(format!("{}{png}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{png}");
        let img = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
        if !png.contains("projection") {
            assert_eq!((img.width(), img.height()), (4, 4), "{png}");
        }
    }
    // the same parameters again: cached, answered at once
    let resp = client
        .post(&url)
        .json(&json!({"size": 64, "stride": 56}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let again: OcclusionResponse = resp.json().await.unwrap();
    assert_eq!(again.key, r.key);

    // without wait: 202, then progress events and the result on events_url
    let resp = client
        .post(&url)
        .json(&json!({"size": 32, "stride": 16, "fill": 128, "class": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let status: OcclusionStatus = resp.json().await.unwrap();
    assert_eq!(status.total, 196);
    let resp = client
        .get(format!("{}{}", server.url, status.events_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_events(resp, |e, _| e != "progress").await;
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let done: OcclusionResponse = serde_json::from_str(data).unwrap();
    assert_eq!((done.grid, done.class), (14, 2));
    for (e, d) in &events[..events.len() - 1] {
        assert_eq!(e, "progress");
        let p: serde_json::Value = serde_json::from_str(d).unwrap();
        assert!(p["done"].as_u64().unwrap() <= 196 && p["total"] == 196);
    }
    let resp = client
        .get(format!("{}{}", server.url, status.result_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // bad parameters
    for (body, code) in [
        (json!({"size": 0}), "bad_parameters"),
        (json!({"size": 225}), "bad_parameters"),
        (json!({"stride": 2}), "bad_parameters"),
        (json!({"fill": "red"}), "bad_parameters"),
        (json!({"class": 99}), "bad_parameters"),
        (json!({"sise": 3}), "bad_body"),
    ] {
        let resp = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let err: ApiError = resp.json().await.unwrap();
        assert_eq!(err.code, code, "{body}: {}", err.error);
    }
    let resp = client
        .post(format!(
            "{}/api/images/{}/occlusion",
            server.url,
            "0".repeat(32)
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_cancels_its_sweep() {
    // full-size random weights: a stride-4 sweep takes long enough to leave in the middle
    let dir = common::scratch_dir("occl");
    let weights = dir.join("full.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["init-weights", "--out"])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success());
    let server = Server::start(&weights, &[]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "kite.jpg").await;
    let url = format!("{}/api/images/{}/occlusion", server.url, image.id);
    let status: OcclusionStatus = client
        .post(&url)
        .json(&json!({"size": 16, "stride": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.total, 56 * 56);
    let resp = client
        .get(format!("{}{}", server.url, status.events_url))
        .send()
        .await
        .unwrap();
    let events = read_events(resp, |e, d| e == "progress" && !d.contains("\"done\":0,")).await;
    assert_eq!(events.last().unwrap().0, "progress");
    // the stream is dropped here: nobody watches any more
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = client
            .get(format!("{}{}", server.url, status.result_url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "the sweep must not finish"
        );
        let s: OcclusionStatus = resp.json().await.unwrap();
        if s.state == "cancelled" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not cancelled: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // a new request for the same sweep starts it afresh
    let resp = client
        .post(&url)
        .json(&json!({"size": 16, "stride": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
