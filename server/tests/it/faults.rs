//! `kill -9` at the worst moments, then a restart on the same cache: during a probe index build
//! (which saves its parts as they finish) and while top-9 pictures are being written. After the
//! restart every answer equals a server that was never interrupted: nothing stale, cut short or
//! mixed up is served. And during an occlusion sweep: nothing half-done is served after it.

use crate::common::{
    fixture_weights, get_json, post_body_json, repo_root, scratch_dir, wait_for_index, Server,
};
use std::path::Path;
use std::time::{Duration, Instant};
use zfvis_api::{Health, IndexPhase, TopActivations};

/// A probe folder of the 12 demo photos, `copies` times over (600 images: more than two parts).
fn big_probe(dir: &Path, copies: usize) -> std::path::PathBuf {
    let probe = dir.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let demo = repo_root().join("web/assets/demo");
    for entry in std::fs::read_dir(&demo).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jpg" || e == "png") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            for k in 0..copies {
                std::fs::copy(&path, probe.join(format!("c{k:02}-{name}"))).unwrap();
            }
        }
    }
    probe
}

async fn health(client: &reqwest::Client, url: &str) -> Health {
    get_json(client, &format!("{url}/api/health")).await
}

async fn top9(client: &reqwest::Client, url: &str, layer: &str, map: usize) -> TopActivations {
    get_json(client, &format!("{url}/visualize/{layer}/{map}")).await
}

async fn pictures(client: &reqwest::Client, url: &str, top: &TopActivations) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in &top.entries {
        for u in [&e.patch_url, &e.reconstruction_url] {
            let r = client.get(format!("{url}{u}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{u}");
            let bytes = r.bytes().await.unwrap().to_vec();
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.ends_with(b"IEND\xaeB`\x82"),
                "{u}: not a whole PNG"
            );
            out.push(bytes);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_index_builds_and_picture_writes_serve_nothing_stale() {
    let dir = scratch_dir("faults");
    let probe = big_probe(&dir, 50);
    let (killed_cache, clean_cache) = (dir.join("killed"), dir.join("clean"));
    let args = |cache: &Path| {
        vec![
            "--probe".to_string(),
            probe.to_string_lossy().to_string(),
            "--cache-dir".to_string(),
            cache.to_string_lossy().to_string(),
        ]
    };
    let client = reqwest::Client::new();
    let weights = fixture_weights();

    // 1. kill -9 during the index build, once at least one part is saved
    let killed_args = args(&killed_cache);
    let killed_refs: Vec<&str> = killed_args.iter().map(String::as_str).collect();
    let server = Server::start_only(&weights, &killed_refs);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut at_kill = None;
    loop {
        if let Some(p) = health(&client, &server.url).await.probe_index {
            if p.state == IndexPhase::Building && p.done >= 256 {
                at_kill = Some((p.done, p.total));
                break;
            }
            if p.state == IndexPhase::Ready {
                break;
            }
        }
        assert!(Instant::now() < deadline, "index build did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();
    eprintln!("index build killed at {at_kill:?}");
    assert!(
        at_kill.is_some(),
        "the build finished before it could be killed"
    );

    // the uninterrupted reference
    let clean_args = args(&clean_cache);
    let clean_refs: Vec<&str> = clean_args.iter().map(String::as_str).collect();
    let clean = Server::start(&weights, &clean_refs);

    // 2. restart on the killed cache: it resumes, and its top-9 equal the clean server's
    let server = Server::start_only(&weights, &killed_refs);
    wait_for_index(&server.url);
    let maps = [("conv5", 3usize), ("conv3", 17), ("conv1", 5)];
    for (layer, map) in maps {
        let (got, want) = (
            top9(&client, &server.url, layer, map).await,
            top9(&client, &clean.url, layer, map).await,
        );
        assert_eq!(
            got.entries, want.entries,
            "{layer}/{map} after a killed index build"
        );
    }

    // 3. kill -9 while many maps' pictures are being rendered and written
    let urls: Vec<String> = (0..24)
        .map(|m| format!("{}/visualize/conv4/{m}", server.url))
        .collect();
    let pending: Vec<_> = urls
        .iter()
        .map(|u| tokio::spawn(client.get(u).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill9();
    for p in pending {
        let _ = p.await; // answered or cut off: either is fine
    }
    let server = Server::start(&weights, &killed_refs);
    for m in 0..24 {
        let (got, want) = (
            top9(&client, &server.url, "conv4", m).await,
            top9(&client, &clean.url, "conv4", m).await,
        );
        assert_eq!(got.entries, want.entries, "conv4/{m}");
        assert_eq!(
            pictures(&client, &server.url, &got).await,
            pictures(&client, &clean.url, &want).await,
            "conv4/{m}: pictures after a killed write"
        );
    }
}

/// `kill -9` in the middle of an occlusion sweep: after the restart (same cache folder) the image
/// is still there (kept upload), the half-done sweep is not served in any form, and the sweep
/// run again equals one that was never interrupted.
#[tokio::test(flavor = "multi_thread")]
async fn killed_sweep_serves_nothing_half_done() {
    use zfvis_api::{ApiError, OcclusionResponse, OcclusionStatus, SweepPhase};
    let cache = scratch_dir("fault-sweep");
    let c = cache.to_str().unwrap();
    let weights = fixture_weights();
    let client = reqwest::Client::new();
    let server = Server::start(
        &weights,
        &["--cache-dir", c, "--max-sweep-cpu-secs", "1000000"],
    );
    let image = crate::common::upload(&client, &server.url, "eagle.jpg").await;
    let url = format!("{}/api/images/{}/occlusion", server.url, image.id);
    let body = serde_json::json!({"size": 24, "stride": 4});
    let started: OcclusionStatus = post_body_json(&client, &url, &body).await;
    // kill it once it is under way
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: OcclusionStatus =
            get_json(&client, &format!("{}{}", server.url, started.result_url)).await;
        if s.state == SweepPhase::Running && s.done > 0 {
            assert!(
                s.done < s.total,
                "the sweep must still be running when killed"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the sweep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill9();

    let server = Server::start(
        &weights,
        &["--cache-dir", c, "--max-sweep-cpu-secs", "1000000"],
    );
    let resp = client
        .get(format!("{}{}", server.url, started.result_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "no half-done sweep after a restart"
    );
    let err: ApiError = resp.json().await.unwrap();
    assert_eq!(err.code.as_str(), "sweep_not_found");
    let url = format!("{}/api/images/{}/occlusion?wait=true", server.url, image.id);
    let after: OcclusionResponse = post_body_json(&client, &url, &body).await;

    let clean = Server::start(
        &weights,
        &[
            "--cache-dir",
            scratch_dir("fault-sweep-clean").to_str().unwrap(),
        ],
    );
    let image2 = crate::common::upload(&client, &clean.url, "eagle.jpg").await;
    let url = format!("{}/api/images/{}/occlusion?wait=true", clean.url, image2.id);
    let uninterrupted: OcclusionResponse = post_body_json(&client, &url, &body).await;
    assert_eq!(after.grid, uninterrupted.grid);
    assert_eq!(after.strongest_map, uninterrupted.strongest_map);
    assert_eq!(after.top_class, uninterrupted.top_class);
    for (name, a, b) in [
        ("activation", &after.activation, &uninterrupted.activation),
        (
            "probability",
            &after.probability,
            &uninterrupted.probability,
        ),
    ] {
        assert_eq!(
            a, b,
            "{name} after the restart equals an uninterrupted sweep"
        );
    }
}
