//! The candle forward against PyTorch running pytorchcv's ZFNet / AlexNet code
//! (`tools/make_fixture.py` wrote the fixtures): every layer within 1e-4 relative error.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use zfnet::LoadedModel;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// max |a − b| / max(|b|∞, tiny): error relative to the reference tensor's scale.
fn relative_error(got: &Tensor, want: &Tensor) -> anyhow::Result<f32> {
    assert_eq!(got.dims(), want.dims(), "shape");
    let got = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let want = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    Ok(diff / scale)
}

fn check(arch: &str) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let model = LoadedModel::load(&fixture(&format!("{arch}-narrow.safetensors")), &device)?;
    let expected: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixture(&format!("{arch}-narrow.expected.safetensors")),
        &device,
    )?;
    let trace = model.net.forward_trace(&expected["input"])?;

    let mut compared = 0;
    let mut report = Vec::new();
    for (i, layer) in trace.convs.iter().enumerate() {
        let name = format!("conv{}", i + 1);
        let mut pairs = vec![("activation", Some(layer.activation.clone()))];
        pairs.push(("normalized", layer.normalized.clone()));
        pairs.push(("pooled", layer.pooled.as_ref().map(|p| p.output.clone())));
        for (what, got) in pairs {
            let key = format!("{name}.{what}");
            match (got, expected.get(&key)) {
                (Some(got), Some(want)) => {
                    let err = relative_error(&got, want)?;
                    report.push(format!("{key}: {err:.2e}"));
                    assert!(err <= 1e-4, "{arch} {key}: relative error {err:.3e}");
                    compared += 1;
                }
                (None, None) => {}
                (got, want) => panic!(
                    "{arch} {key}: present here {} vs reference {}",
                    got.is_some(),
                    want.is_some()
                ),
            }
        }
        if let Some(p) = &layer.pooled {
            let got = p
                .switches
                .to_dtype(DType::I64)?
                .flatten_all()?
                .to_vec1::<i64>()?;
            let want = expected[&format!("{name}.switches")]
                .flatten_all()?
                .to_vec1::<i64>()?;
            // Ties can legitimately differ; with continuous random data there are none except
            // where ReLU made whole windows zero, and there PyTorch and we both take the first.
            let same = got.iter().zip(&want).filter(|(a, b)| a == b).count();
            assert_eq!(
                same,
                want.len(),
                "{arch} {name} switches: {same}/{} agree",
                want.len()
            );
            compared += 1;
        }
    }
    for (name, got) in [
        ("fc6", &trace.fc6),
        ("fc7", &trace.fc7),
        ("logits", &trace.logits),
    ] {
        let err = relative_error(got, &expected[name])?;
        report.push(format!("{name}: {err:.2e}"));
        assert!(err <= 1e-4, "{arch} {name}: relative error {err:.3e}");
        compared += 1;
    }
    eprintln!("{arch}: {}", report.join(", "));
    assert!(compared >= 15, "only {compared} tensors compared");
    Ok(())
}

#[test]
fn zfnet_forward_matches_pytorchcv_at_every_layer() -> anyhow::Result<()> {
    check("zfnet")
}

#[test]
fn alexnet_forward_matches_pytorchcv_at_every_layer() -> anyhow::Result<()> {
    check("alexnet")
}

#[test]
fn loading_rejects_weights_that_do_not_fit_the_architecture() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(fixture("alexnet-narrow.safetensors"), &device)?;
    let err =
        zfnet::ZfNet::from_tensors(zfnet::arch::Architecture::Zfnet, tensors, &device).unwrap_err();
    assert!(err.to_string().contains("conv1.weight"), "{err}");
    Ok(())
}

/// A conv-stack-only network (a training snapshot without fc6–fc8) gives every conv layer of
/// the PyTorch reference exactly as the whole network does, and refuses to classify.
#[test]
fn a_conv_only_network_has_the_whole_networks_features() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let path = fixture("zfnet-narrow.safetensors");
    let whole = LoadedModel::load(&path, &device)?;
    let mut tensors = candle_core::safetensors::load(&path, &device)?;
    tensors.retain(|name, _| name.starts_with("conv"));
    let convs = zfnet::ZfNet::from_tensors(whole.net.arch, tensors, &device)?;
    assert!(whole.net.has_head() && !convs.has_head());
    assert_eq!((convs.num_classes(), convs.fc_width()), (0, 0));
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("zfnet-narrow.expected.safetensors"), &device)?;
    let input = &expected["input"];
    let a = whole.net.forward_trace_through(input, 4)?;
    let b = convs.forward_trace_through(input, 4)?;
    for (i, (x, y)) in a.convs.iter().zip(&b.convs).enumerate() {
        assert_eq!(
            relative_error(y.output(), x.output())?,
            0.0,
            "conv{}",
            i + 1
        );
        let key = format!("conv{}.activation", i + 1);
        let want = expected
            .get(&key)
            .expect("the reference has every activation");
        assert!(relative_error(&y.activation, want)? <= 1e-4, "{key}");
    }
    let err = convs.forward_trace(input).unwrap_err().to_string();
    assert!(err.contains("no classifier"), "{err}");
    // some fc tensors but not all: a damaged file, not a snapshot
    let mut partial = candle_core::safetensors::load(&path, &device)?;
    partial.remove("fc8.weight");
    let err = zfnet::ZfNet::from_tensors(whole.net.arch, partial, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fc8.weight"), "{err}");
    Ok(())
}
