//! Two `zfvis serve` replicas on one shared cache folder, as behind a round-robin load balancer:
//! whichever replica a request reaches answers it. An image uploaded to one is known to the other,
//! the top-9 pictures one rendered are served by the other without rendering again, and their
//! answers are equal.

use super::common::{
    count_pngs, fixture_weights, get_json, repo_root, scratch_dir, upload, Server,
};
use zfvis_api::{ImageResponse, TopActivations};

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_cache_answer_for_each_other() {
    let cache = scratch_dir("replicas");
    let probe = repo_root().join("web/assets/demo");
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "--probe",
        probe.to_str().unwrap(),
    ];
    let a = Server::start(&fixture_weights(), &args);
    let b = Server::start(&fixture_weights(), &args);
    let client = reqwest::Client::new();
    // round robin: upload through A, then every other request alternates
    let image = upload(&client, &a.url, "giraffe.jpg").await;
    for (i, path) in [
        format!("/api/images/{}", image.id),
        format!("/api/images/{}/layers/conv2", image.id),
        format!("/visualize/conv4/7?image={}&mode=unit", image.id),
        format!("/api/images/{}/projection/conv4/7", image.id),
    ]
    .iter()
    .enumerate()
    {
        let (first, second) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        let x = client
            .get(format!("{}{path}", first.url))
            .send()
            .await
            .unwrap();
        let y = client
            .get(format!("{}{path}", second.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            x.status(),
            200,
            "{path} on the replica that did not get the upload"
        );
        assert_eq!(y.status(), 200, "{path}");
        assert_eq!(
            x.bytes().await.unwrap(),
            y.bytes().await.unwrap(),
            "{path}: same answer"
        );
    }
    let seen: ImageResponse =
        get_json(&client, &format!("{}/api/images/{}", b.url, image.id)).await;
    assert_eq!(seen, image);
    // top-9 rendered by A is read by B from the shared folder
    let top_a: TopActivations = get_json(&client, &format!("{}/visualize/conv3/5", a.url)).await;
    let rendered = count_pngs(&cache.join("pictures"));
    assert!(rendered >= 18, "{rendered} pictures after one top-9");
    let top_b: TopActivations = get_json(&client, &format!("{}/visualize/conv3/5", b.url)).await;
    assert_eq!(top_a, top_b);
    for e in &top_b.entries {
        let x = client
            .get(format!("{}{}", b.url, e.reconstruction_url))
            .send()
            .await
            .unwrap();
        assert_eq!(x.status(), 200);
    }
    assert_eq!(
        count_pngs(&cache.join("pictures")),
        rendered,
        "B rendered nothing: it read A's pictures"
    );
}
