//! `zfvis train` and `zfvis eval` as a user runs them: a tiny folder-per-class set, one epoch
//! of the real (full-width) conv stack, evaluation, resuming a finished run, and the messages for
//! mistakes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn zfvis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .args(args)
        .output()
        .expect("run zfvis")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn toy(root: &Path) {
    for split in ["train", "val"] {
        for (class, rgb) in [
            ("n01440764", [200u8, 60, 40]),
            ("parachute", [40u8, 80, 220]),
        ] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..3u32 {
                let img = image::RgbImage::from_fn(80, 60, |x, y| {
                    let n = ((x * 7 + y * 13 + i * 31) % 50) as u8;
                    image::Rgb([rgb[0].saturating_add(n), rgb[1], rgb[2].saturating_sub(n)])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn train_eval_resume_and_mistakes() {
    let tmp: PathBuf = std::env::temp_dir().join(format!("zfvis-train-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let data = tmp.join("data");
    toy(&data);
    let run = tmp.join("run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let small = [
        "--epochs",
        "1",
        "--batch",
        "4",
        "--micro-batch",
        "2",
        "--fc-width",
        "32",
    ];
    let out = zfvis(&[&["train", "--data", d, "--out", r], &small[..]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("epoch 1:"), "{}", text(&out));
    let weights = run.join("model.safetensors");
    let manifest: zfnet::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert!(manifest.trained);
    assert_eq!(
        manifest.classes[0].label, "tench",
        "Imagenette ids get their labels"
    );
    assert_eq!(manifest.classes[1].label, "parachute");
    let recorded = manifest.evaluation.expect("validation recorded");
    assert_eq!(recorded.images, 6);
    for file in [
        "log.csv",
        "epochs.csv",
        "config.json",
        "snapshots/epoch-001.safetensors",
    ] {
        assert!(run.join(file).exists(), "{file}");
    }

    // eval prints what the per-epoch validation measured, and can record it
    let val = data.join("val");
    let out = zfvis(&[
        "eval",
        "--data",
        val.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--batch",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = format!(
        "6 images, top-1 {:.2}%, top-5 {:.2}%",
        recorded.top1 * 100.0,
        recorded.top5 * 100.0
    );
    assert!(
        text(&out).contains(&expected),
        "{} vs {expected}",
        text(&out)
    );
    // and agrees with one plain forward per image
    let model = zfnet::LoadedModel::load(&weights, &candle_core::Device::Cpu).unwrap();
    let mut correct = 0;
    let mut class_correct = [0usize; 2];
    for (label, class) in ["n01440764", "parachute"].iter().enumerate() {
        for i in 0..3 {
            let bytes = std::fs::read(val.join(class).join(format!("{i}.png"))).unwrap();
            let x = zfnet::preprocess::prepare(&bytes, &model.manifest.preprocess)
                .unwrap()
                .to_tensor(&candle_core::Device::Cpu)
                .unwrap();
            let logits = model
                .net
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let hit = usize::from(zfnet::ops::argmax(&logits).0 == label);
            correct += hit;
            class_correct[label] += hit;
        }
    }
    assert!((correct as f32 / 6.0 - recorded.top1).abs() < 1e-6);
    // its per-class table too: label, images, top-1
    for (label, hits) in ["tench", "parachute"].iter().zip(class_correct) {
        let want = [
            label.to_string(),
            "3".into(),
            format!("{:.1}%", hits as f32 / 3.0 * 100.0),
        ];
        assert!(
            text(&out).lines().any(|l| l
                .split_whitespace()
                .take(3)
                .eq(want.iter().map(String::as_str))),
            "{want:?} in {}",
            text(&out)
        );
    }

    // fp16 export: half the size, same predictions on this set
    let half = tmp.join("half.safetensors");
    let out = zfvis(&[
        "export",
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        half.to_str().unwrap(),
        "--f16",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let full_len = std::fs::metadata(&weights).unwrap().len();
    let half_len = std::fs::metadata(&half).unwrap().len();
    assert!(half_len * 2 < full_len + 4096, "{half_len} vs {full_len}");
    let out = zfvis(&[
        "eval",
        "--data",
        val.to_str().unwrap(),
        "--weights",
        half.to_str().unwrap(),
        "--record",
    ]);
    assert!(text(&out).contains(&expected), "{}", text(&out));
    let half_manifest: zfnet::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(half.with_extension("json")).unwrap()).unwrap();
    let evaluation = half_manifest
        .evaluation
        .expect("--record writes the evaluation");
    assert_eq!(evaluation.images, 6);
    let per_class: Vec<(String, usize, f32)> = evaluation
        .per_class
        .iter()
        .map(|c| (c.label.clone(), c.images, c.top1))
        .collect();
    assert_eq!(
        per_class,
        vec![
            ("tench".into(), 3, class_correct[0] as f32 / 3.0),
            ("parachute".into(), 3, class_correct[1] as f32 / 3.0)
        ]
    );

    // resuming a finished run finishes at once
    let out = zfvis(&["train", "--resume", r]);
    assert!(
        out.status.success() && text(&out).contains("done:"),
        "{}",
        text(&out)
    );

    // the schedule ahead of a run may move, and the run's config keeps the change
    let out = zfvis(&["train", "--resume", r, "--epochs", "2", "--lr-drops", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["epochs"], 2);
    assert_eq!(config["config"]["lr_drops"], serde_json::json!([2]));
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    let second_epoch_lrs: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.split(',')
                .collect::<Vec<_>>()
                .get(1..3)
                .map(|f| (f[0], f[1]))
        })
        .filter(|(epoch, _)| *epoch == "2")
        .map(|(_, lr)| lr)
        .collect();
    assert!(!second_epoch_lrs.is_empty(), "{log}");
    assert!(
        second_epoch_lrs
            .iter()
            .all(|lr| (lr.parse::<f64>().unwrap() - 1e-3).abs() < 1e-12),
        "{log}"
    );

    // mistakes get messages naming the problem
    let nothing = data.join("nothing");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["train", "--data", d, "--out", r],
            "already holds a run",
        ),
        (
            vec![
                "train",
                "--data",
                "/nonexistent/set",
                "--out",
                "/tmp/zfvis-never",
            ],
            "/nonexistent/set/train",
        ),
        (vec!["train", "--data", d], "give --data DIR --out RUN_DIR"),
        (
            vec![
                "train",
                "--data",
                d,
                "--out",
                "/tmp/zfvis-never2",
                "--micro-batch",
                "300",
            ],
            "micro-batch",
        ),
        (
            vec![
                "eval",
                "--data",
                nothing.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
            ],
            "nothing",
        ),
        (
            vec!["train", "--resume", "/nonexistent/run"],
            "not a training run",
        ),
        (
            vec!["train", "--resume", r, "--lr-drops", "1"],
            "already run",
        ),
    ];
    for (args, needle) in cases {
        let out = zfvis(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("panicked"), "{args:?}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
