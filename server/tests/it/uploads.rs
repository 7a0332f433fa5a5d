//! Image ids outlive their traces: an upload is kept on disk, so its id still answers after its
//! trace has left the 16-trace memory cache, after a `kill -9` and restart, and on a second
//! server sharing the cache folder. A damaged kept upload is a 404, never a 500.

use super::common::{files_under, fixture_weights, scratch_dir, upload_bytes, Server};
use reqwest::StatusCode;
use zfvis_api::{ApiError, ImageResponse};

async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, Vec<u8>) {
    let resp = client.get(url).send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_survive_eviction_restarts_and_other_replicas() {
    let cache = scratch_dir("uploads");
    let c = cache.to_str().unwrap();
    let client = reqwest::Client::new();
    let dog = super::common::demo_image("dog.jpg");
    let server = Server::start(&fixture_weights(), &["--cache-dir", c]);
    let first = upload_bytes(&client, &server.url, dog.clone(), "x.jpg").await;
    let projection = format!("/api/images/{}/projection/conv3/5?mode=map", first.id);
    let (status, before) = get(&client, &format!("{}{projection}", server.url)).await;
    assert_eq!(status, StatusCode::OK);

    // 17 more uploads push the first trace out of the 16-trace memory cache
    for i in 0..17u8 {
        let mut other = dog.clone();
        other.extend_from_slice(&[i; 8]); // trailing bytes: same picture, another id
        upload_bytes(&client, &server.url, other, "x.jpg").await;
    }
    let (status, again) = get(&client, &format!("{}{projection}", server.url)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "evicted id answers from the kept upload"
    );
    assert_eq!(
        again, before,
        "the trace computed again from the crop is the same"
    );

    // a second server on the same folder answers for the id it never received
    let replica = Server::start(&fixture_weights(), &["--cache-dir", c]);
    let (status, body) = get(&client, &format!("{}/api/images/{}", replica.url, first.id)).await;
    assert_eq!(status, StatusCode::OK);
    let seen: ImageResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen, first);
    drop(replica);

    // kill -9, restart: the id, its predictions and its projection are back
    server.kill9();
    let server = Server::start(&fixture_weights(), &["--cache-dir", c]);
    let (status, body) = get(&client, &format!("{}/api/images/{}", server.url, first.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<ImageResponse>(&body).unwrap(),
        first
    );
    let (status, after) = get(&client, &format!("{}{projection}", server.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before);

    // a damaged kept upload: 404 image_not_found after a restart, and the files are gone
    server.kill9();
    let kept: Vec<_> = files_under(&cache.join("uploads"))
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains(&first.id) && p.extension().is_some_and(|e| e == "png")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    std::fs::write(&kept[0], b"\x89PNG truncated").unwrap();
    let server = Server::start(&fixture_weights(), &["--cache-dir", c]);
    let resp = client
        .get(format!("{}/api/images/{}", server.url, first.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let err: ApiError = resp.json().await.unwrap();
    assert_eq!(err.code.as_str(), "image_not_found");
    assert!(!kept[0].exists(), "damaged upload removed");
    // uploading it again repairs it
    let again = upload_bytes(&client, &server.url, dog, "x.jpg").await;
    assert_eq!(again.id, first.id);
    assert!(kept[0].exists());
}
