//! Occlusion sweeps through a real server: the result equals the library's one-forward-per-image
//! sweep, progress arrives as Server-Sent Events, results are cached, bad parameters get 422, and
//! a client that goes away cancels its sweep.

use crate::common;
use crate::common::{demo_image, fixture_weights, upload, Server};
use reqwest::StatusCode;
use serde_json::json;
use zfnet::occlusion::{Method, OcclusionParams};
use zfvis_api::{ApiError, OcclusionResponse, OcclusionStatus, SweepPhase};

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
    let stretched = client
        .get(format!(
            "{}{}",
            server.url,
            r.probability_url
                .replace("probability.png", "probability-stretched.png")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stretched.status(), StatusCode::OK);
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
        assert_eq!(err.code.as_str(), code, "{body}: {}", err.error);
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

/// A sweep's status, polled.
async fn status_of(client: &reqwest::Client, base: &str, s: &OcclusionStatus) -> OcclusionStatus {
    let resp = client
        .get(format!("{base}{}", s.result_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "the sweep must not finish"
    );
    resp.json().await.unwrap()
}

/// Who may stop a sweep. A stride-4 sweep of full-width ZFNet (3,136 positions) runs far longer
/// than these steps on any CPU, and every step waits for a state, not for time to pass (but the
/// grace period itself), so the test does not depend on machine speed.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_cancels_and_an_unwatched_sweep_stops() {
    let dir = common::scratch_dir("occl");
    let weights = dir.join("full.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["init-weights", "--out"])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success());
    // no CPU budget here: the sweep must keep running until someone stops it
    let server = Server::start(
        &weights,
        &["--sweep-grace-secs", "1", "--max-sweep-cpu-secs", "1000000"],
    );
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "kite.jpg").await;
    let url = format!("{}/api/images/{}/occlusion", server.url, image.id);
    let start = |body: serde_json::Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let resp = client.post(&url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            resp.json::<OcclusionStatus>().await.unwrap()
        }
    };
    let mine = start(json!({"size": 16, "stride": 4})).await;
    assert_eq!(mine.total, 56 * 56);
    let token = mine.token.clone().expect("the starter gets the token");
    // someone else asks for the same sweep: same key, no token
    let theirs = start(json!({"size": 16, "stride": 4})).await;
    assert_eq!(theirs.key, mine.key);
    assert!(theirs.token.is_none());
    // they open its event stream and close it while I keep mine open: nothing stops
    let my_stream = client
        .get(format!("{}{}", server.url, mine.events_url))
        .send()
        .await
        .unwrap();
    let their_stream = client
        .get(format!("{}{}", server.url, mine.events_url))
        .send()
        .await
        .unwrap();
    let events = read_events(their_stream, |e, d| {
        e == "progress" && !d.contains("\"done\":0,")
    })
    .await;
    assert_eq!(events.last().unwrap().0, "progress");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await; // > the grace period
    let s = status_of(&client, &server.url, &mine).await;
    assert_eq!(s.state, SweepPhase::Running, "{s:?}");
    // nor can they cancel it without the token
    for query in ["", "?token=", "?token=0123456789abcdef0123456789abcdef"] {
        let resp = client
            .delete(format!("{}{}{query}", server.url, mine.result_url))
            .send()
            .await
            .unwrap();
        let code = if query.is_empty() {
            "bad_query"
        } else {
            "bad_token"
        };
        let expected = if query.is_empty() { 422 } else { 403 };
        assert_eq!(resp.status().as_u16(), expected, "{query}");
        let err: ApiError = resp.json().await.unwrap();
        assert_eq!(err.code.as_str(), code);
    }
    // I can
    let resp = client
        .delete(format!("{}{}?token={token}", server.url, mine.result_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let events = read_events(my_stream, |e, _| e != "progress").await;
    let (event, data) = events.last().unwrap();
    assert_eq!(event, "error");
    assert!(data.contains("cancelled"), "{data}");

    // a sweep nobody watches or polls stops after the grace period
    let orphan = start(json!({"size": 16, "stride": 4, "fill": 0})).await;
    let stream = client
        .get(format!("{}{}", server.url, orphan.events_url))
        .send()
        .await
        .unwrap();
    read_events(stream, |e, d| e == "progress" && !d.contains("\"done\":0,")).await;
    // the stream is dropped here; wait out the grace period without polling
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    let s = status_of(&client, &server.url, &orphan).await;
    assert_eq!(s.state, SweepPhase::Cancelled, "{s:?}");
    // asking again starts it afresh
    let again = start(json!({"size": 16, "stride": 4, "fill": 0})).await;
    assert!(again.token.is_some());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sweep that would cost more CPU-seconds than `--max-sweep-cpu-secs` stops after a few
/// positions with 422 `sweep_over_budget`, naming a stride that fits; a sweep within it finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_over_its_cpu_budget_stops_early_and_says_what_fits() {
    let server = Server::start(&fixture_weights(), &["--max-sweep-cpu-secs", "0.3"]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "dog.jpg").await;
    let url = format!("{}/api/images/{}/occlusion?wait=true", server.url, image.id);
    let started = std::time::Instant::now();
    let resp = client
        .post(&url)
        .json(&json!({"size": 96, "stride": 4}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let err: ApiError = resp.json().await.unwrap();
    assert_eq!(err.code.as_str(), "sweep_over_budget", "{}", err.error);
    assert!(
        err.error.contains("3136 positions") && err.error.contains("use stride"),
        "{}",
        err.error
    );
    assert!(
        took.as_secs_f32() < 10.0,
        "stopped early, not at the end: {took:?}"
    );
    // what it names fits
    let stride: usize = err
        .error
        .rsplit("use stride ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a stride in the message");
    assert!(stride > 4, "{}", err.error);
    let resp = client
        .post(&url)
        .json(&json!({"size": 96, "stride": 112}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "4 positions fit the budget");
}

/// One client cannot fill the sweep queue: past `--max-sweeps-per-client` queued or running,
/// a new sweep gets 429 `too_many_sweeps`; asking for the same sweep again costs no place, and
/// a place comes back when a sweep ends.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_fill_the_sweep_queue() {
    let server = Server::start(&fixture_weights(), &["--max-sweeps-per-client", "1"]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "dog.jpg").await;
    let url = format!("{}/api/images/{}/occlusion", server.url, image.id);
    let start = |body: serde_json::Value| client.post(&url).json(&body).send();
    let resp = start(json!({"size": 32, "stride": 4})).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let first: OcclusionStatus = resp.json().await.unwrap();
    let token = first.token.clone().expect("the starter gets the token");
    // the same sweep again: no new place needed
    let resp = start(json!({"size": 32, "stride": 4})).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // another sweep while the first runs: refused, in JSON
    let resp = start(json!({"size": 48, "stride": 8})).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let err: ApiError = resp.json().await.unwrap();
    assert_eq!(err.code.as_str(), "too_many_sweeps", "{}", err.error);
    // cancelled, its place comes back
    let resp = client
        .delete(format!("{}{}?token={token}", server.url, first.result_url))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = start(json!({"size": 48, "stride": 8})).await.unwrap();
        if resp.status() != StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.status().is_success(), "{}", resp.status());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
