//! The paper's analyses over real HTTP: invariance curves (JSON and CSV) equal the library's on
//! the same inputs, correspondence rows carry the paper's figures, bad parameters are 422 JSON
//! naming the value.

use crate::common::{demo_image, fixture_weights, upload, Server};
use reqwest::StatusCode;
use serde_json::json;
use zfvis_api::{ApiError, CorrespondenceResponse, InvarianceResponse, Transform};

async fn post(client: &reqwest::Client, url: String, body: serde_json::Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

async fn expect_error(resp: reqwest::Response, status: u16, code: &str, names: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let err: ApiError = resp.json().await.unwrap();
    assert_eq!(err.code.as_str(), code, "{}", err.error);
    assert!(
        err.error.contains(names),
        "{:?} should name {names}",
        err.error
    );
}

#[tokio::test]
async fn invariance_curves_are_the_librarys_in_json_and_csv() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let a = upload(&client, &server.url, "dog.jpg").await;
    let b = upload(&client, &server.url, "kite.jpg").await;
    let url = format!(
        "{}{}",
        server.url,
        zfvis_api::paths::invariance(&a.id, false)
    );
    let resp = post(&client, url.clone(), json!({"others": [b.id], "steps": 3})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r: InvarianceResponse = resp.json().await.unwrap();
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.images[1].image, b.id);
    let kinds: Vec<Transform> = r.images[0].curves.iter().map(|c| c.transform).collect();
    assert_eq!(
        kinds,
        [Transform::Translate, Transform::Scale, Transform::Rotate]
    );

    // the same computation in this process
    let model = zfnet::LoadedModel::load(&fixture_weights(), &candle_core::Device::Cpu).unwrap();
    let input = |name: &str| {
        zfnet::preprocess::prepare(&demo_image(name), &model.manifest.preprocess)
            .unwrap()
            .to_tensor(&candle_core::Device::Cpu)
            .unwrap()
    };
    let want = zfnet::invariance::invariance(
        &model.net,
        &[input("dog.jpg"), input("kite.jpg")],
        &[None, None],
        3,
        &|_, _| true,
    )
    .unwrap();
    for (got, want) in r.images.iter().zip(&want) {
        assert_eq!(got.class, want.class);
        for (g, w) in got.curves.iter().zip(&want.curves) {
            assert_eq!(g.amounts, w.amounts);
            assert_eq!(g.layer1, w.layer1);
            assert_eq!(g.layer7, w.layer7);
            assert_eq!(g.probability, w.probability);
        }
    }
    // translation by 0 (the middle of 3 steps) leaves the features where they were
    assert_eq!(r.images[0].curves[0].layer1[1], 0.0);

    let csv = post(
        &client,
        format!(
            "{}{}",
            server.url,
            zfvis_api::paths::invariance(&a.id, true)
        ),
        json!({"others": [b.id], "steps": 3}),
    )
    .await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 2 * 3 * 3);
    assert!(lines[0].starts_with("image,class,transform,amount,layer1_distance"));
    assert!(lines[1].starts_with(&format!("{},", a.id)) && lines[1].contains(",translate,-60,"));

    expect_error(
        post(&client, url.clone(), json!({"steps": 1})).await,
        422,
        "bad_parameters",
        "1",
    )
    .await;
    expect_error(
        post(&client, url.clone(), json!({"steps": 99})).await,
        422,
        "bad_parameters",
        "99",
    )
    .await;
    expect_error(
        post(
            &client,
            url.clone(),
            json!({"others": [b.id, b.id, b.id, b.id, b.id]}),
        )
        .await,
        422,
        "bad_parameters",
        "5",
    )
    .await;
    expect_error(
        post(&client, url.clone(), json!({"others": ["00ff"]})).await,
        404,
        "image_not_found",
        "00ff",
    )
    .await;
    expect_error(
        post(&client, url.clone(), json!({"class": 10})).await,
        422,
        "bad_parameters",
        "10",
    )
    .await;
    expect_error(
        post(&client, url.clone(), json!({"stepz": 3})).await,
        422,
        "bad_body",
        "stepz",
    )
    .await;
    expect_error(
        post(&client, format!("{url}?format=xml"), json!({})).await,
        422,
        "bad_query",
        "xml",
    )
    .await;
}

/// `(event, data)` of each Server-Sent Event in a whole stream body.
fn sse_events(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
            };
            Some((field("event:")?, field("data:")?))
        })
        .collect()
}

#[tokio::test]
async fn invariance_streams_progress_then_the_same_curves() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let a = upload(&client, &server.url, "eagle.jpg").await;
    let b = upload(&client, &server.url, "horses.jpg").await;
    let url = format!(
        "{}{}",
        server.url,
        zfvis_api::paths::invariance(&a.id, false)
    );
    let body = json!({"others": [b.id], "steps": 4});
    let streamed = |body: serde_json::Value| {
        client
            .post(url.clone())
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
    };
    let resp = streamed(body.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&resp.text().await.unwrap());
    let (last, progress) = events.split_last().expect("events");
    assert_eq!(last.0, "done", "{events:?}");
    // progress counts transformed images, one transform at a time, up to 2 × 3 × 4
    let counts: Vec<(usize, usize)> = progress
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "progress");
            let p: zfvis_api::SweepProgress = serde_json::from_str(data).unwrap();
            (p.done, p.total)
        })
        .collect();
    assert!(counts.iter().all(|&(_, total)| total == 24), "{counts:?}");
    assert!(counts.windows(2).all(|w| w[0].0 < w[1].0), "{counts:?}");
    assert!(
        counts.len() >= 2 && counts.last().unwrap().0 > 0,
        "{counts:?}"
    );
    let streamed_result: InvarianceResponse = serde_json::from_str(&last.1).unwrap();

    // the plain answer (now from the cache) has the same curves
    let plain: InvarianceResponse = post(&client, url.clone(), body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain, streamed_result);
    // a cached result streams as one `done` event
    let again = sse_events(&streamed(body).await.unwrap().text().await.unwrap());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, "done");

    // bad parameters are still a plain 422 before any stream starts
    let bad = streamed(json!({"steps": 40})).await.unwrap();
    expect_error(bad, 422, "bad_parameters", "40").await;
}

#[tokio::test]
async fn correspondence_gives_table_1_with_the_papers_rows() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for name in ["dog.jpg", "chelsea.png", "horses.jpg"] {
        ids.push(upload(&client, &server.url, name).await.id);
    }
    let b = |x0: u32, y0: u32| json!({"x0": x0, "y0": y0, "x1": x0 + 40, "y1": y0 + 30});
    let url = format!("{}{}", server.url, zfvis_api::paths::correspondence());
    let body = json!({
        "images": ids,
        "parts": [
            {"name": "Nose", "boxes": [b(90, 120), b(95, 110), b(100, 100)]},
            {"name": "left ear", "boxes": [b(20, 20), b(30, 30), b(40, 40)]},
        ],
        "repetitions": 2,
    });
    let resp = post(&client, url.clone(), body.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r: CorrespondenceResponse = resp.json().await.unwrap();
    let parts: Vec<&str> = r.rows.iter().map(|r| r.part.as_str()).collect();
    assert_eq!(parts, ["Nose", "left ear", "random"]);
    assert_eq!(r.rows[0].paper.map(|p| p[0].mean), Some(0.079));
    assert_eq!(r.rows[1].paper, None);
    assert_eq!(r.rows[2].paper.map(|p| p[0].mean), Some(0.107));
    for row in &r.rows {
        for d in [row.layer5, row.layer7] {
            assert!((0.0..=1.0).contains(&d.mean) && d.std >= 0.0, "{row:?}");
        }
    }
    // the same seed gives the same random row
    let again: CorrespondenceResponse =
        post(&client, url.clone(), body).await.json().await.unwrap();
    assert_eq!(again.rows, r.rows);

    let one_box = json!({"images": ids, "parts": [{"name": "eye", "boxes": [b(0, 0)]}]});
    expect_error(
        post(&client, url.clone(), one_box).await,
        422,
        "bad_parameters",
        "eye",
    )
    .await;
    let outside = json!({"images": ids, "parts": [{"name": "eye",
        "boxes": [b(0, 0), b(0, 0), {"x0": 200, "y0": 0, "x1": 260, "y1": 9}]}]});
    expect_error(
        post(&client, url.clone(), outside).await,
        422,
        "bad_parameters",
        "260",
    )
    .await;
    let lonely = json!({"images": [ids[0]], "parts": [{"name": "eye", "boxes": [b(0, 0)]}]});
    expect_error(
        post(&client, url.clone(), lonely).await,
        422,
        "bad_parameters",
        "got 1",
    )
    .await;
    let empty = json!({"images": ids, "parts": []});
    expect_error(
        post(&client, url.clone(), empty).await,
        422,
        "bad_parameters",
        "got 0",
    )
    .await;
    let too_many = json!({"images": ids, "parts": [{"name": "eye", "boxes": [b(0, 0), b(0, 0), b(0, 0)]}],
        "repetitions": 51});
    expect_error(
        post(&client, url, too_many).await,
        422,
        "bad_parameters",
        "51",
    )
    .await;
}

/// Without the springer images in the probe set the preset still describes itself, with no
/// probe indices.
#[tokio::test]
async fn the_preset_says_when_the_probe_set_lacks_its_images() {
    let server = Server::start(&fixture_weights(), &[]);
    let p: zfvis_api::CorrespondencePreset = crate::common::get_json(
        &reqwest::Client::new(),
        &format!(
            "{}{}",
            server.url,
            zfvis_api::paths::templates::CORRESPONDENCE_PRESET
        ),
    )
    .await;
    assert_eq!(p.files.len(), 5);
    assert_eq!(p.parts.len(), 3);
    assert!(p.parts.iter().all(|part| part.boxes.len() == 5));
    assert_eq!(p.probe_images, vec![None; 5]);
}

/// With a probe set holding them (a folder of links to Imagenette val's files), the preset finds
/// each image, opens it, and its boxes run through `/api/correspondence`.
#[tokio::test]
#[ignore = "needs Imagenette val (../shared/datasets/imagenette or ZFVIS_IMAGENETTE); scripts/test.sh runs it when present"]
async fn the_preset_runs_on_imagenette_springers() {
    let root = std::env::var_os("ZFVIS_IMAGENETTE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::common::repo_root().join("../shared/datasets/imagenette"));
    let preset = zfnet::correspondence::springer_preset().unwrap();
    let probe = crate::common::scratch_dir("springer-probe");
    let cache = crate::common::scratch_dir("springer-cache");
    let folder = probe.join(&preset.folder);
    std::fs::create_dir_all(&folder).unwrap();
    for f in &preset.files {
        let src = root.join("val").join(&preset.folder).join(f);
        assert!(src.is_file(), "{} missing", src.display());
        std::os::unix::fs::symlink(&src, folder.join(f)).unwrap();
    }
    let (p, c) = (probe.display().to_string(), cache.display().to_string());
    let server = Server::start(&fixture_weights(), &["--probe", &p, "--cache-dir", &c]);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    let got: zfvis_api::CorrespondencePreset = crate::common::get_json(
        &client,
        &url(zfvis_api::paths::templates::CORRESPONDENCE_PRESET),
    )
    .await;
    let mut ids = Vec::new();
    for index in &got.probe_images {
        let index = index.expect("every preset image is in the probe set");
        let r: zfvis_api::ImageResponse =
            crate::common::post_json(&client, &url(&zfvis_api::paths::probe_image(index))).await;
        ids.push(r.id);
    }
    let body = json!({"images": ids, "parts": got.parts, "repetitions": 2});
    let r: CorrespondenceResponse = post(&client, url(&zfvis_api::paths::correspondence()), body)
        .await
        .json()
        .await
        .unwrap();
    let parts: Vec<&str> = r.rows.iter().map(|r| r.part.as_str()).collect();
    assert_eq!(parts, ["left eye", "right eye", "nose", "random"]);
    assert!(r.rows.iter().all(|row| row.paper.is_some()));
    let _ = std::fs::remove_dir_all(&probe);
    let _ = std::fs::remove_dir_all(&cache);
}
