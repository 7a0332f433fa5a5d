//! `zfvis import` on files torch wrote (pytorchcv's narrow ZFNet, legacy format; AlexNet, zip
//! format; each as a state dict and as a whole module; torchvision's AlexNet layout): the
//! imported model serves, predicts exactly as the parity fixture's weights do, projects and
//! sweeps; a checksum that does not
//! match and a class list of the wrong length are refused with nothing written.

use crate::common::{repo_root, scratch_dir, upload, Server};
use reqwest::StatusCode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use zfvis_api::{ImageResponse, OcclusionResponse};

fn import(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .arg("import")
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/import").join(name)
}

fn checksum(file: &str, kind: &str) -> String {
    let sums: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("checksums.json")).unwrap()).unwrap();
    sums[file][kind].as_str().unwrap().to_string()
}

/// The fixture model's ten classes as a `wnid<TAB>label` file.
fn classes_file(dir: &Path) -> PathBuf {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/fixtures/zfnet-narrow.json")).unwrap(),
    )
    .unwrap();
    let lines: Vec<String> = manifest["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}\t{}",
                c["wnid"].as_str().unwrap(),
                c["label"].as_str().unwrap()
            )
        })
        .collect();
    let path = dir.join("classes.tsv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

async fn predictions(server: &Server, client: &reqwest::Client) -> ImageResponse {
    upload(client, &server.url, "dog.jpg").await
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_torch_files_serve_predict_project_and_sweep() {
    let dir = scratch_dir("import");
    let classes = classes_file(&dir);
    let client = reqwest::Client::new();
    for (file, reference) in [
        ("zfnet-narrow.legacy.pth", Some("zfnet-narrow.safetensors")),
        (
            "zfnet-narrow.model.legacy.pth",
            Some("zfnet-narrow.safetensors"),
        ),
        ("alexnet-narrow.zip.pth", Some("alexnet-narrow.safetensors")),
        (
            "alexnet-narrow.model.zip.pth",
            Some("alexnet-narrow.safetensors"),
        ),
        // torchvision's AlexNet: its layers are checked against PyTorch in zfnet/tests/import.rs
        ("alexnet-tv-narrow.zip.pth", None),
        // ONNX graphs shaped like the zoo's zfnet512 and bvlcalexnet: checked against ONNX
        // Runtime in zfnet/tests/onnx.rs
        ("zfnet512-narrow.onnx", None),
        ("bvlcalexnet-narrow.onnx", None),
    ] {
        let out = dir.join(format!("{file}.safetensors"));
        let sha = checksum(file, "sha256");
        let sha1 = checksum(file, "sha1");
        let done = import(&[
            fixture(file).to_str().unwrap(),
            "--classes",
            classes.to_str().unwrap(),
            "--sha256",
            &sha,
            "--sha1",
            &sha1[..8],
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            done.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
        assert!(
            manifest["provenance"].as_str().unwrap().contains(&sha),
            "{manifest}"
        );
        assert_eq!(manifest["trained"], true);
        if file.ends_with(".onnx") {
            // the CLI says what it understood, layer by layer
            let said = String::from_utf8_lossy(&done.stdout);
            assert!(
                said.contains("input: resize 256, crop 224, Bgr × 255"),
                "{said}"
            );
            let pool5 = if file.starts_with("zfnet512") {
                "max pool 2×2/2 floor → 6×6"
            } else {
                "note: conv5's 2 groups made one dense conv"
            };
            assert!(said.contains(pool5), "{said}");
            // the geometry and the input convention come with the model
            assert_eq!(manifest["preprocess"]["channel_order"], "bgr", "{manifest}");
            assert_eq!(manifest["preprocess"]["pixel_scale"], 255.0, "{manifest}");
            assert_eq!(
                manifest["layers"][0]["pool"]["ceil_mode"], false,
                "{manifest}"
            );
            assert!(manifest["channels"].is_array(), "{manifest}");
        }

        let server = Server::start(&out, &[]);
        let got = predictions(&server, &client).await;
        if let Some(reference) = reference {
            let want_server =
                Server::start(&repo_root().join("tests/fixtures").join(reference), &[]);
            let want = predictions(&want_server, &client).await;
            assert_eq!(got.predictions, want.predictions, "{file}: predictions");
        }
        assert_eq!(got.predictions.len(), 5, "{file}: top-5");
        let model: zfvis_api::ModelInfo =
            crate::common::get_json(&client, &format!("{}/api/model", server.url)).await;
        assert_eq!(model.classes.len(), 10);
        if file.starts_with("zfnet512") {
            // floor pools and a 2×2 pool5: 110 → 54, 25 → 12, 12 → 6
            let pooled: Vec<_> = model
                .layers
                .iter()
                .map(|l| l.pooled_shape.clone())
                .collect();
            assert_eq!(pooled[0], Some(vec![16, 54, 54]), "{pooled:?}");
            assert_eq!(pooled[4], Some(vec![32, 6, 6]), "{pooled:?}");
        }

        // a projection and an occlusion sweep on the imported model
        let png = client
            .get(format!(
                "{}{}",
                server.url,
                zfvis_api::paths::projection(
                    &got.id,
                    "conv5",
                    3,
                    zfvis_api::ProjectionMode::Unit,
                    None
                )
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(png.status(), StatusCode::OK, "{file}: projection");
        assert!(png.bytes().await.unwrap().starts_with(b"\x89PNG"));
        let sweep = client
            .post(format!(
                "{}{}",
                server.url,
                zfvis_api::paths::occlusion(&got.id, true)
            ))
            .json(&json!({"size": 64, "stride": 56}))
            .send()
            .await
            .unwrap();
        assert_eq!(sweep.status(), StatusCode::OK, "{file}: sweep");
        let sweep: OcclusionResponse = sweep.json().await.unwrap();
        assert_eq!(sweep.grid, 4);
    }
}

#[test]
fn a_wrong_checksum_or_class_count_writes_nothing() {
    let dir = scratch_dir("import-refused");
    let file = fixture("zfnet-narrow.legacy.pth");
    let out = dir.join("refused.safetensors");
    let bad_sum = import(&[
        file.to_str().unwrap(),
        "--sha256",
        "0123456789abcdef",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!bad_sum.status.success());
    let err = String::from_utf8_lossy(&bad_sum.stderr);
    assert!(
        err.contains("sha256") && err.contains("0123456789abcdef"),
        "{err}"
    );
    // the built-in 1000 ImageNet classes against fc8's 10 outputs
    let bad_classes = import(&[file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!bad_classes.status.success());
    let err = String::from_utf8_lossy(&bad_classes.stderr);
    assert!(
        err.contains("10 outputs") && err.contains("1000 classes"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?} left behind");
}
