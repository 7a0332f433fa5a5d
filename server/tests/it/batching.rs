//! Forwards batched across requests: concurrent predictions and uploads give what each gives
//! alone (the same classes, probabilities within 1e-5, the same projections bit for bit), and
//! the batches did form (`/api/health`'s `batching`).

use super::common::{
    demo_image, fixture_weights, get_json, post_image, scratch_dir, upload_bytes, Server,
};
use zfvis_api::{Health, ImageResponse, PredictResponse};

const PHOTOS: [&str; 8] = [
    "dog.jpg",
    "chelsea.png",
    "coffee.png",
    "eagle.jpg",
    "flower.jpg",
    "giraffe.jpg",
    "horses.jpg",
    "china.jpg",
];

async fn predict(client: &reqwest::Client, url: &str, bytes: Vec<u8>) -> PredictResponse {
    post_image(client, &format!("{url}/api/predict"), bytes, "x").await
}

/// The same bytes with a tail a decoder ignores: the same picture under another content id.
fn again(bytes: &[u8], tag: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b.extend_from_slice(&[tag; 4]);
    b
}

fn same_answer(a: &[zfvis_api::Prediction], b: &[zfvis_api::Prediction], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.index, y.index, "{what}");
        assert!(
            (x.probability - y.probability).abs() < 1e-5,
            "{what}: {x:?} vs {y:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_forwards_batch_and_answer_as_alone() {
    let cache = scratch_dir("batching");
    let c = cache.to_str().unwrap();
    let server = Server::start(
        &fixture_weights(),
        &[
            "--cache-dir",
            c,
            "--batch-window-ms",
            "400",
            "--max-batch",
            "8",
        ],
    );
    let alone = Server::start(&fixture_weights(), &["--cache-dir", c, "--max-batch", "1"]);
    let client = reqwest::Client::new();
    let photos: Vec<Vec<u8>> = PHOTOS.iter().map(|p| demo_image(p)).collect();

    // one at a time on a server that never batches
    let mut solo = Vec::new();
    for bytes in &photos {
        solo.push(predict(&client, &alone.url, bytes.clone()).await);
    }
    // all at once on the batching server
    let batched = futures_util::future::join_all(
        photos
            .iter()
            .map(|b| predict(&client, &server.url, again(b, 1))),
    )
    .await;
    for ((s, b), name) in solo.iter().zip(&batched).zip(PHOTOS) {
        same_answer(&s.predictions, &b.predictions, name);
        assert_eq!((s.width, s.height), (b.width, b.height));
    }

    // uploads too: their traces come out of the batch, projections bit for bit as alone
    let uploads: Vec<ImageResponse> = futures_util::future::join_all(
        photos[..4]
            .iter()
            .map(|b| upload_bytes(&client, &server.url, again(b, 2), "x")),
    )
    .await;
    for (u, name) in uploads.iter().zip(PHOTOS) {
        let solo_upload = upload_bytes(&client, &alone.url, again(&demo_image(name), 2), "x").await;
        assert_eq!(u.id, solo_upload.id);
        same_answer(&u.predictions, &solo_upload.predictions, name);
        for path in [
            format!("/api/images/{}/projection/conv5/3?mode=map", u.id),
            format!("/api/images/{}/activation/conv2/7", u.id),
        ] {
            let a = client
                .get(format!("{}{path}", server.url))
                .send()
                .await
                .unwrap();
            let b = client
                .get(format!("{}{path}", alone.url))
                .send()
                .await
                .unwrap();
            assert_eq!(a.status(), reqwest::StatusCode::OK);
            assert_eq!(
                a.bytes().await.unwrap(),
                b.bytes().await.unwrap(),
                "{name} {path}"
            );
        }
    }

    let health: Health = get_json(&client, &format!("{}/api/health", server.url)).await;
    let stats = health.batching.expect("batching stats");
    println!("batching: {stats:?}");
    assert_eq!(stats.images, 12);
    assert!(
        stats.largest > 1 && stats.forwards < stats.images,
        "{stats:?}"
    );
    let solo_stats: Health = get_json(&client, &format!("{}/api/health", alone.url)).await;
    let s = solo_stats.batching.expect("stats");
    assert_eq!(
        (s.largest, s.forwards, s.images),
        (1, 12, 12),
        "one at a time: no batches"
    );
}
