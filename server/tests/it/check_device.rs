//! `zfvis check-device` as `scripts/cuda-check.sh` runs it, on the CPU: the portable ops (what a
//! GPU runs) against the CPU kernels, every output within the bar, and clear messages for a
//! device this build cannot use.

use super::common::{fixture_weights, repo_root};
use std::process::Command;

fn check_device(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zfvis"))
        .current_dir(repo_root())
        .arg("check-device")
        .args(args)
        .output()
        .expect("run zfvis check-device");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn portable_ops_pass_the_device_check_on_the_cpu() {
    let weights = fixture_weights();
    let w = weights.to_str().expect("utf-8 path");
    let (ok, text) = check_device(&[
        "--device",
        "cpu",
        "--weights",
        w,
        "--batch",
        "2",
        "--runs",
        "1",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("parity: 18 of 18 outputs within the bar"),
        "{text}"
    );
    for what in [
        "logits",
        "conv5 activation",
        "conv1 map 3 projection, whole map",
        "occlusion",
    ] {
        assert!(text.contains(what), "no row for {what}: {text}");
    }
    for timed in [
        "forward, batch 1",
        "forward, batch 2",
        "projection",
        "196 positions",
    ] {
        assert!(text.contains(timed), "no timing for {timed}: {text}");
    }
}

#[test]
fn mistakes_get_messages() {
    let weights = fixture_weights();
    let w = weights.to_str().expect("utf-8 path");
    #[cfg(not(feature = "cuda"))]
    {
        let (ok, text) = check_device(&["--device", "cuda", "--weights", w]);
        assert!(!ok);
        assert!(text.contains("no CUDA support"), "{text}");
    }
    let (ok, text) = check_device(&["--device", "tpu", "--weights", w]);
    assert!(!ok && text.contains("unknown device 'tpu'"), "{text}");
    let (ok, text) = check_device(&["--device", "cpu", "--weights", w, "--images", "nope.jpg"]);
    assert!(!ok && text.contains("nope.jpg"), "{text}");
    let (ok, text) = check_device(&["--device", "cpu", "--weights", w, "--batch", "0"]);
    assert!(!ok && text.contains("--batch"), "{text}");
}
