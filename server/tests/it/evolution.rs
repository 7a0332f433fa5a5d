//! Fig. 4 through a real server: `serve --evolution DIR` with three snapshots (a conv-only
//! export of the default fixture, the narrow AlexNet, the default fixture itself), one row per
//! map, its pictures, the cold and warm times, and 4xx JSON for what does not exist.

use super::common::{self, fixture_weights, get_json, scratch_dir, Server};
use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zfvis_api::{ApiError, ErrorCode, EvolutionRow, IndexPhase, ModelInfo, TopActivations};

fn zfvis(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(args)
        .output()
        .expect("run zfvis")
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::copy(from.with_extension("json"), to.with_extension("json")).unwrap();
}

/// epoch 1: the fixture's conv layers only; 2: the AlexNet fixture; 3: the whole fixture.
fn snapshots(tmp: &Path) -> PathBuf {
    let dir = tmp.join("run").join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let out = zfvis(&[
        "export",
        "--conv-only",
        "--weights",
        fixture_weights().to_str().unwrap(),
        "--out",
        dir.join("epoch-001.safetensors").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alex = common::repo_root().join("tests/fixtures/alexnet-narrow.safetensors");
    copy_model(&alex, &dir.join("epoch-002.safetensors"));
    copy_model(&fixture_weights(), &dir.join("epoch-003.safetensors"));
    dir
}

async fn row(client: &reqwest::Client, url: &str, layer: &str, map: usize) -> EvolutionRow {
    get_json(client, &format!("{url}/api/evolution/{layer}/{map}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_shows_each_snapshots_strongest_activation() {
    let tmp = scratch_dir("evolution");
    let dir = snapshots(&tmp);
    let conv_only = std::fs::metadata(dir.join("epoch-001.safetensors"))
        .unwrap()
        .len();
    let whole = std::fs::metadata(fixture_weights()).unwrap().len();
    assert!(conv_only < whole, "{conv_only} vs {whole} bytes");
    let demo = common::repo_root().join("web/assets/demo");
    let cache = tmp.join("cache");
    let server = Server::start(
        &fixture_weights(),
        &[
            "--probe",
            demo.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--evolution",
            tmp.join("run").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let info: ModelInfo = get_json(&client, &format!("{}/api/model", server.url)).await;
    let evolution = info.evolution.expect("the model lists its snapshots");
    assert_eq!(evolution.epochs, [1, 2, 3]);
    assert!(evolution.run.starts_with("run: "), "{}", evolution.run);

    // the snapshots' indexes build after the model's: the row says how far, then is complete
    let deadline = Instant::now() + Duration::from_secs(120);
    let cold_started = loop {
        let started = Instant::now();
        let r = row(&client, &server.url, "conv2", 3).await;
        if r.columns.iter().all(|c| c.index.state == IndexPhase::Ready) {
            break started;
        }
        for c in r
            .columns
            .iter()
            .filter(|c| c.index.state != IndexPhase::Ready)
        {
            assert_eq!(c.index.state, IndexPhase::Building, "{:?}", c.index);
            assert!(c.top.is_none());
        }
        assert!(Instant::now() < deadline, "snapshot indexes not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cold = cold_started.elapsed();
    let started = Instant::now();
    let r = row(&client, &server.url, "conv2", 3).await;
    let warm = started.elapsed();
    println!("evolution row conv2/3: cold {cold:?} (with rendering), warm {warm:?}");
    assert_eq!((r.layer.as_str(), r.map), ("conv2", 3));
    let epochs: Vec<u32> = r.columns.iter().map(|c| c.epoch).collect();
    assert_eq!(epochs, [1, 2, 3]);
    let tops: Vec<_> = r
        .columns
        .iter()
        .map(|c| c.top.clone().expect("top"))
        .collect();

    // the conv-only export and the whole model give the top-1 of the default model's own top-9
    let default: TopActivations =
        get_json(&client, &format!("{}/visualize/conv2/3", server.url)).await;
    for t in [&tops[0], &tops[2]] {
        assert_eq!(t.value, default.entries[0].value);
        assert_eq!(t.image, default.entries[0].image);
    }
    assert_ne!(
        tops[1].value, tops[0].value,
        "another network, another top-1"
    );
    let get_png = |url: String| {
        let client = client.clone();
        async move {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            resp.bytes().await.unwrap().to_vec()
        }
    };
    let recon = get_png(format!("{}{}", server.url, tops[0].reconstruction_url)).await;
    let same = get_png(format!(
        "{}{}",
        server.url, default.entries[0].reconstruction_url
    ))
    .await;
    assert_eq!(recon, same, "the same reconstruction, bit for bit");
    assert!(tops[1].patch_url.ends_with("/conv2/3/2/patch.png"));
    get_png(format!("{}{}", server.url, tops[1].patch_url)).await;
    for t in &tops {
        // the probe image opens under the default model: no snapshot id in the URL
        assert!(
            t.open_url.starts_with("/api/probe/images/"),
            "{}",
            t.open_url
        );
        assert!(!t.open_url.contains('?'), "{}", t.open_url);
    }

    // what does not exist: 404 JSON naming it
    let cases = [
        (
            "/api/evolution/conv2/3/9/patch.png",
            404,
            ErrorCode::NoEvolution,
            "epoch 9",
        ),
        (
            "/api/evolution/conv2/999",
            404,
            ErrorCode::MapOutOfRange,
            "999",
        ),
        (
            "/api/evolution/conv7/1",
            404,
            ErrorCode::UnknownLayer,
            "conv7",
        ),
        (
            "/api/evolution/conv2/3/1/other.png",
            404,
            ErrorCode::UnknownPicture,
            "other.png",
        ),
    ];
    for (path, status, code, named) in cases {
        let resp = client
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let e: ApiError = resp.json().await.unwrap();
        assert_eq!(e.code, code, "{path}");
        assert!(e.error.contains(named), "{path}: {}", e.error);
    }
    drop(server);

    // without --evolution: 404 no_evolution saying how to get one
    let plain = Server::start(
        &fixture_weights(),
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let resp = client
        .get(format!("{}/api/evolution/conv1/0", plain.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let e: ApiError = resp.json().await.unwrap();
    assert_eq!(e.code, ErrorCode::NoEvolution);
    assert!(e.error.contains("--evolution"), "{}", e.error);
}

#[test]
fn a_conv_only_snapshot_is_refused_as_a_model_and_an_empty_folder_as_a_run() {
    let tmp = scratch_dir("evolution-refuse");
    let dir = snapshots(&tmp);
    let out = zfvis(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--weights",
        dir.join("epoch-001.safetensors").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conv layers only") && err.contains("--evolution"),
        "{err}"
    );
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = zfvis(&[
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--weights",
        fixture_weights().to_str().unwrap(),
        "--probe",
        empty.to_str().unwrap(),
        "--evolution",
        empty.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no training snapshot"), "{err}");
}
