//! The three sweep implementations agree with the definition (one plain forward per occluded
//! image) on small grids, including squares clipped at the borders and a grey fill.

use std::path::PathBuf;
use zfnet::occlusion::{sweep, Fill, Method, OcclusionParams, OcclusionResult};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * x.abs().max(y.abs()).max(1e-3),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// The methods sum in different orders (Winograd or the direct kernel on whole maps, im2col +
/// GEMM on the windows), so they agree to float rounding. A probability moves relatively by its
/// logit's change, and a logit of magnitude L carries rounding of about 1e-6·L: for a model whose
/// logits are in the hundreds (an ONNX import fed 0–255 pixels) that is above 1e-4.
fn same(a: &OcclusionResult, b: &OcclusionResult, max_logit: f32) {
    assert_eq!(a.grid, b.grid);
    assert_eq!(a.strongest_map, b.strongest_map);
    assert_eq!(a.class, b.class);
    close(&a.activation, &b.activation, 1e-4, "activation");
    let rel = 1e-4 + 2e-6 * max_logit;
    close(&a.probability, &b.probability, rel, "probability");
    close(
        &a.top_probability,
        &b.top_probability,
        rel,
        "top probability",
    );
    assert_eq!(a.top_class, b.top_class);
}

#[test]
fn batched_and_incremental_sweeps_equal_one_forward_per_image() -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let model = zfnet::LoadedModel::load(
        &root().join("tests/fixtures/zfnet-narrow.safetensors"),
        &device,
    )?;
    // and torchvision's AlexNet layout (no LRN, floor pools), as imported
    let tv = zfnet::import::import(
        &root().join("tests/fixtures/import/alexnet-tv-narrow.zip.pth"),
        None,
    )?
    .net;
    for net in [&model.net, &tv] {
        check_sweeps(net, &model.manifest.preprocess)?;
    }
    // and ONNX graphs' own geometry (floor pools, a 2×2 pool5, dense-made groups), fed BGR 0–255
    for name in ["zfnet512-narrow.onnx", "bvlcalexnet-narrow.onnx"] {
        let got = zfnet::import::import(&root().join("tests/fixtures/import").join(name), None)?;
        check_sweeps(&got.net, &got.preprocess)?;
    }
    Ok(())
}

fn check_sweeps(
    net: &zfnet::ZfNet,
    preprocess: &zfnet::manifest::Preprocess,
) -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let bytes = std::fs::read(root().join("web/assets/demo/dog.jpg"))?;
    let prepared = zfnet::preprocess::prepare(&bytes, preprocess)?;
    let input = prepared.to_tensor(&device)?;
    let logits = net
        .forward_trace(&input)?
        .logits
        .flatten_all()?
        .to_vec1::<f32>()?;
    let max_logit = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let cases = [
        OcclusionParams {
            size: 64,
            stride: 56,
            fill: Fill::Mean,
            class: None,
        },
        OcclusionParams {
            size: 20,
            stride: 75,
            fill: Fill::Grey(200),
            class: Some(3),
        },
        OcclusionParams {
            size: 224,
            stride: 224,
            fill: Fill::Mean,
            class: None,
        },
    ];
    for params in cases {
        let run = |m| sweep(net, preprocess, &input, &params, m, &|_, _| true);
        let naive = run(Method::Naive)?;
        assert_eq!(naive.activation.len(), params.grid() * params.grid());
        same(&naive, &run(Method::Batched)?, max_logit);
        same(&naive, &run(Method::Incremental)?, max_logit);
        // occluding changes something, and the unoccluded values are the base
        assert!(naive
            .activation
            .iter()
            .any(|&a| (a - naive.base_activation).abs() > 1e-6));
    }
    Ok(())
}

#[test]
fn a_cancelled_sweep_stops() -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let model = zfnet::LoadedModel::load(
        &root().join("tests/fixtures/zfnet-narrow.safetensors"),
        &device,
    )?;
    let input = candle_core::Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &device)?;
    let params = OcclusionParams {
        size: 32,
        stride: 32,
        ..Default::default()
    };
    for method in [Method::Batched, Method::Incremental] {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let r = sweep(
            &model.net,
            &model.manifest.preprocess,
            &input,
            &params,
            method,
            &|_, _| calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 1,
        );
        assert!(
            matches!(r, Err(zfnet::Error::Cancelled)),
            "{method:?} should stop when progress says so"
        );
    }
    Ok(())
}
