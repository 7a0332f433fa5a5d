//! `zfvis index`: sharded runs merged equal a single run, byte for byte; bad files are skipped
//! and reported; bad arguments fail with a message naming the problem.

use crate::common;
use crate::common::{fixture_weights, repo_root};
use std::path::Path;
use std::process::Command;
use zfnet::topk::ProbeIndex;

fn zfvis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(args)
        .output()
        .expect("run zfvis")
}

fn probe_folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let demo = repo_root().join("web/assets/demo");
    for (i, entry) in std::fs::read_dir(&demo).unwrap().enumerate() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let target = if i % 2 == 0 {
            dir.join("nested")
        } else {
            dir.to_path_buf()
        };
        std::fs::copy(&path, target.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join("nested/broken.jpg"), b"not a jpeg at all").unwrap();
}

#[test]
fn merged_shards_equal_a_single_run() {
    let tmp = common::scratch_dir("index");
    let probe = tmp.join("probe");
    probe_folder(&probe);
    let weights = fixture_weights();
    let w = weights.to_str().unwrap();
    let p = probe.to_str().unwrap();
    let out = |name: &str| tmp.join(name).to_str().unwrap().to_string();

    let single = zfvis(&[
        "index",
        "--probe",
        p,
        "--out",
        &out("single.json"),
        "--weights",
        w,
        "--batch",
        "5",
    ]);
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    let stderr = String::from_utf8_lossy(&single.stderr);
    assert!(stderr.contains("skipped nested/broken.jpg"), "{stderr}");

    let mut parts = Vec::new();
    for i in 0..3 {
        let part = out(&format!("part{i}.json"));
        let shard = format!("{i}/3");
        let r = zfvis(&[
            "index",
            "--probe",
            p,
            "--out",
            &part,
            "--weights",
            w,
            "--shard",
            &shard,
            "--batch",
            "2",
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        parts.push(part);
    }
    let mut args = vec!["index", "merge"];
    args.extend(parts.iter().map(String::as_str));
    let merged_path = out("merged.json");
    args.extend(["--out", &merged_path]);
    let r = zfvis(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    let single_bytes = std::fs::read(out("single.json")).unwrap();
    assert_eq!(
        single_bytes,
        std::fs::read(&merged_path).unwrap(),
        "merge(shards) != single run"
    );

    let index: ProbeIndex = serde_json::from_slice(&single_bytes).unwrap();
    assert_eq!(index.images.len(), 12);
    assert_eq!(index.layers.len(), 5);
    assert_eq!(index.layers[0].hits.len(), 16);
    for layer in &index.layers {
        for hits in &layer.hits {
            assert_eq!(hits.len(), 9);
            assert!(
                hits.windows(2).all(|w| w[0].value >= w[1].value),
                "strongest first"
            );
            let mut images: Vec<u32> = hits.iter().map(|h| h.image).collect();
            images.sort();
            images.dedup();
            assert_eq!(images.len(), 9, "at most one hit per image per map");
        }
    }
    let _ = std::fs::remove_dir_all(tmp);
}

#[test]
fn bad_arguments_are_named() {
    let r = zfvis(&[
        "index",
        "--probe",
        "/nonexistent/probe",
        "--out",
        "/tmp/x.json",
        "--weights",
        fixture_weights().to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let e = String::from_utf8_lossy(&r.stderr);
    assert!(
        e.contains("/nonexistent/probe") && e.contains("does not exist"),
        "{e}"
    );
    assert!(!e.contains("stack backtrace"), "{e}");

    let r = zfvis(&[
        "index",
        "--probe",
        "/tmp",
        "--out",
        "/tmp/x.json",
        "--shard",
        "3/3",
    ]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("--shard 3/3"));

    let r = zfvis(&[
        "index",
        "merge",
        "--out",
        "/tmp/x.json",
        fixture_weights().to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("is not a zfvis index"));
}
