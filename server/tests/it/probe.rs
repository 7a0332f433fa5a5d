//! Top-9 over a probe set through a real server: `/visualize/{layer}/{map}` without an image,
//! its pictures, opening a probe image, and refusing an index that does not fit.

use crate::common;
use crate::common::{count_pngs, fixture_weights, get_json, repo_root, scratch_dir, Server};
use std::path::PathBuf;
use std::process::Command;
use zfvis_api::{ImageResponse, TopActivations, VisualizeResponse};

fn demo() -> PathBuf {
    repo_root().join("web/assets/demo")
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).expect("PNG").to_rgb8()
}

#[tokio::test(flavor = "multi_thread")]
async fn top9_entries_match_the_single_image_views() {
    let cache = scratch_dir("probe-serve");
    let weights = fixture_weights();
    let server = Server::start(
        &weights,
        &[
            "--probe",
            demo().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    for (layer, map) in [("conv5", 3usize), ("conv1", 0), ("conv3", 11)] {
        let top: TopActivations =
            get_json(&client, &format!("{}/visualize/{layer}/{map}", server.url)).await;
        assert_eq!(top.probe_images, 12, "the 12 demo photos");
        assert_eq!(top.entries.len(), 9);
        let mut images: Vec<&str> = top.entries.iter().map(|e| e.image.as_str()).collect();
        images.sort();
        images.dedup();
        assert_eq!(images.len(), 9, "one entry per image");
        assert!(top.entries.windows(2).all(|w| w[0].value >= w[1].value));
        for entry in [&top.entries[0], &top.entries[8]] {
            // open the probe image as an uploaded one: its own view agrees with the index
            let opened: ImageResponse =
                common::post_json(&client, &format!("{}{}", server.url, entry.open_url)).await;
            let view: VisualizeResponse = get_json(
                &client,
                &format!("{}/visualize/{layer}/{map}?image={}", server.url, opened.id),
            )
            .await;
            assert!(
                (view.max - entry.value).abs() <= 1e-4 * view.max.abs().max(1.0),
                "{layer}/{map}: index says {}, the image's own trace {}",
                entry.value,
                view.max
            );
            assert_eq!(view.position, entry.unit);
            assert_eq!(view.receptive_field, entry.receptive_field);
            let get = |url: String| {
                let client = client.clone();
                async move { client.get(url).send().await.unwrap().bytes().await.unwrap() }
            };
            let patch = get(format!("{}{}", server.url, entry.patch_url)).await;
            let own_patch = get(format!("{}{}", server.url, view.patch_url)).await;
            assert_eq!(patch, own_patch, "the same patch as the image's own view");
            let recon = rgb(&get(format!("{}{}", server.url, entry.reconstruction_url)).await);
            let own = rgb(&get(format!("{}{}", server.url, view.projection_url)).await);
            assert_eq!(recon.dimensions(), own.dimensions());
            let worst = recon
                .as_raw()
                .iter()
                .zip(own.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(
                worst <= 2,
                "batched reconstruction differs by {worst} levels"
            );
        }
    }
    // the pictures are cached on disk
    let cached = count_pngs(&cache.join("pictures"));
    assert_eq!(cached, 3 * 9 * 2);
    // every map of every layer answers with a full top-9
    let model: zfvis_api::ModelInfo = get_json(&client, &format!("{}/api/model", server.url)).await;
    let mut maps = 0;
    for layer in &model.layers[..5] {
        for map in 0..layer.output_shape[0] {
            let top: TopActivations = get_json(
                &client,
                &format!("{}/visualize/{}/{map}", server.url, layer.name),
            )
            .await;
            assert_eq!(top.entries.len(), 9, "{} map {map}", layer.name);
            maps += 1;
        }
    }
    assert_eq!(
        maps,
        model.layers[..5]
            .iter()
            .map(|l| l.output_shape[0])
            .sum::<usize>()
    );
    let errors = [
        ("/visualize/conv5/256".to_string(), 404, "map_out_of_range"),
        (
            "/api/probe/conv5/3/9/patch.png".to_string(),
            404,
            "rank_out_of_range",
        ),
        (
            "/api/probe/conv5/3/0/other.png".to_string(),
            404,
            "unknown_picture",
        ),
    ];
    common::expect_get_errors(&client, &server.url, &errors).await;
    let resp = client
        .post(format!("{}/api/probe/images/99", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // an opened probe image says where it came from, and a later visit (a permalink) still does
    let opened: ImageResponse = common::post_json(
        &client,
        &format!("{}{}", server.url, zfvis_api::paths::probe_image(0)),
    )
    .await;
    let source = opened.source.clone().expect("a source");
    assert!(source.starts_with("probe image "), "{source}");
    let again: zfvis_api::ImageResponse = common::get_json(
        &client,
        &format!("{}{}", server.url, zfvis_api::paths::image(&opened.id)),
    )
    .await;
    assert_eq!(again.source, Some(source));
    drop(server);
    std::fs::remove_dir_all(&cache).unwrap();
}

/// A probe folder of three demo photos under `tmp`.
fn three_photo_probe(tmp: &std::path::Path) -> PathBuf {
    let probe = tmp.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    for name in ["dog.jpg", "kite.jpg", "coffee.png"] {
        std::fs::copy(demo().join(name), probe.join(name)).unwrap();
    }
    probe
}

fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["serve", "--addr", "127.0.0.1:0", "--ui-dir", "/nonexistent"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should refuse {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_index_for_other_weights_or_changed_images_is_refused() {
    let tmp = scratch_dir("probe-refuse");
    let probe = three_photo_probe(&tmp);
    let index = tmp.join("index.json");
    let weights = fixture_weights();
    let status = Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(["index", "--probe", probe.to_str().unwrap(), "--out"])
        .arg(&index)
        .arg("--weights")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(status.status.success());
    let other = repo_root().join("tests/fixtures/alexnet-narrow.safetensors");
    let err = serve_fails(&[
        "--weights",
        other.to_str().unwrap(),
        "--probe",
        probe.to_str().unwrap(),
        "--index",
        index.to_str().unwrap(),
    ]);
    assert!(err.contains("other weights"), "{err}");
    let serve_own = || {
        serve_fails(&[
            "--weights",
            weights.to_str().unwrap(),
            "--probe",
            probe.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ])
    };
    std::fs::copy(demo().join("eagle.jpg"), probe.join("kite.jpg")).unwrap();
    let err = serve_own();
    assert!(
        err.contains("missing or changed") && err.contains("kite.jpg"),
        "{err}"
    );
    // an index whose entry points past its image list is refused at start, not in a handler
    std::fs::copy(demo().join("kite.jpg"), probe.join("kite.jpg")).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    json["layers"][2]["hits"][5][0]["image"] = serde_json::json!(9999);
    std::fs::write(&index, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = serve_own();
    assert!(
        err.contains("does not fit the model") && err.contains("out of range"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A cached picture cut short (a crash, a full disk) is noticed and computed again, never served.
#[tokio::test]
async fn a_truncated_cached_picture_is_rebuilt() {
    let tmp = scratch_dir("probe-truncated");
    let probe = three_photo_probe(&tmp);
    let cache = tmp.join("cache");
    let server = Server::start(
        &fixture_weights(),
        &[
            "--probe",
            probe.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let top: TopActivations = get_json(&client, &format!("{}/visualize/conv2/3", server.url)).await;
    let url = format!("{}{}", server.url, top.entries[0].reconstruction_url);
    let whole = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    // cut every cached PNG in half
    let mut cut = 0;
    let mut dirs = vec![cache.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "png") {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
                cut += 1;
            }
        }
    }
    assert!(cut >= 2, "pictures were cached ({cut})");
    let again = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again, whole, "the truncated file was served");
    let top2: TopActivations =
        get_json(&client, &format!("{}/visualize/conv2/3", server.url)).await;
    let patch = client
        .get(format!("{}{}", server.url, top2.entries[1].patch_url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(image::load_from_memory(&patch).is_ok());
    drop(server);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A class opening one map at the same moment: with room for a single queued model job, eight
/// identical top-9 requests (and eight identical projections) all succeed, because identical
/// work waits for the first request's result instead of queueing its own; without single flight
/// seven of them would be `503 overloaded`.
#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_at_once_are_computed_once() {
    let cache = scratch_dir("probe-flight");
    let server = Server::start(
        &fixture_weights(),
        &[
            "--probe",
            demo().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--max-queued-jobs",
            "1",
        ],
    );
    let client = reqwest::Client::new();
    // wait for the background index
    for _ in 0..600 {
        let h: serde_json::Value = get_json(&client, &format!("{}/api/health", server.url)).await;
        if h["probe_index"]["state"] == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let url = format!("{}/visualize/conv4/5", server.url);
    let answers = futures_util::future::join_all((0..8).map(|_| client.get(&url).send())).await;
    let statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses, [200; 8], "top-9");

    let image = crate::common::upload(&client, &server.url, "kite.jpg").await;
    let png = format!(
        "{}{}",
        server.url,
        zfvis_api::paths::projection(&image.id, "conv5", 9, zfvis_api::ProjectionMode::Map, None)
    );
    let answers = futures_util::future::join_all((0..8).map(|_| client.get(&png).send())).await;
    let mut bodies = Vec::new();
    for r in answers {
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 200, "projection");
        bodies.push(r.bytes().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "one picture for all"
    );
}

/// `--warm-top9` renders every map's pictures in the background, shows its progress in
/// `/api/health`, and afterwards a top-9 view renders nothing new.
#[tokio::test(flavor = "multi_thread")]
async fn warm_up_renders_every_map_ahead_of_time() {
    let cache = scratch_dir("probe-warm");
    let server = Server::start(
        &fixture_weights(),
        &[
            "--probe",
            demo().to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--warm-top9",
        ],
    );
    let client = reqwest::Client::new();
    let model: zfvis_api::ModelInfo = get_json(&client, &format!("{}/api/model", server.url)).await;
    let maps: usize = model
        .layers
        .iter()
        .filter(|l| l.kind == zfvis_api::LayerKind::Conv)
        .map(|l| l.output_shape[0])
        .sum();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut seen_progress = false;
    loop {
        let health: zfvis_api::Health =
            get_json(&client, &format!("{}/api/health", server.url)).await;
        if let Some(w) = health.top9_warm {
            assert_eq!(w.total, maps, "every conv map of the model");
            seen_progress |= w.done < w.total;
            if w.state == zfvis_api::IndexPhase::Ready {
                assert_eq!(w.done, maps);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "warm-up not done in 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(seen_progress, "progress was visible while warming");
    let before = count_pngs(&cache.join("pictures"));
    assert!(before >= maps, "{before} pictures for {maps} maps");
    for (layer, map) in [("conv1", 0usize), ("conv4", 9), ("conv5", 2)] {
        let top: TopActivations =
            get_json(&client, &format!("{}/visualize/{layer}/{map}", server.url)).await;
        assert_eq!(top.entries.len(), 9);
    }
    assert_eq!(
        count_pngs(&cache.join("pictures")),
        before,
        "nothing rendered on request"
    );
}
