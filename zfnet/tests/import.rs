//! Importing files that torch itself wrote (`tools/make_import_fixtures.py`): pytorchcv's narrow
//! ZFNet as a legacy-format state dict and whole module, AlexNet as a zip-format state dict and
//! whole module. Each gives exactly the parity fixture's weights (so every layer matches PyTorch,
//! see parity.rs) and its logits match PyTorch's; damaged or foreign files fail naming the
//! problem.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use zfnet::arch::Architecture;
use zfnet::import::{import, Container};

mod common;
use common::{fixture, relative_error, scratch, values};

#[test]
fn torch_files_of_both_formats_import_to_the_parity_weights() -> anyhow::Result<()> {
    for (file, container, arch, reference) in [
        (
            "zfnet-narrow.legacy.pth",
            Container::TorchLegacy,
            Architecture::Zfnet,
            "zfnet",
        ),
        (
            "zfnet-narrow.model.legacy.pth",
            Container::TorchLegacy,
            Architecture::Zfnet,
            "zfnet",
        ),
        (
            "alexnet-narrow.zip.pth",
            Container::TorchZip,
            Architecture::Alexnet,
            "alexnet",
        ),
        (
            "alexnet-narrow.model.zip.pth",
            Container::TorchZip,
            Architecture::Alexnet,
            "alexnet",
        ),
    ] {
        let got = import(&fixture(&format!("import/{file}")), None)?;
        assert_eq!(got.container, container, "{file}");
        assert_eq!(got.architecture, arch, "{file}");
        let want: HashMap<String, Tensor> = candle_core::safetensors::load(
            fixture(&format!("{reference}-narrow.safetensors")),
            &Device::Cpu,
        )?;
        let mut names: Vec<_> = got.tensors.keys().cloned().collect();
        names.sort();
        let mut expected: Vec<_> = want.keys().cloned().collect();
        expected.sort();
        assert_eq!(names, expected, "{file}: tensor names");
        for (name, t) in &want {
            assert_eq!(got.tensors[name].dims(), t.dims(), "{file} {name}");
            assert!(
                values(&got.tensors[name]) == values(t),
                "{file} {name}: values differ"
            );
        }
        // and the network built from them answers as PyTorch did
        let outputs: HashMap<String, Tensor> = candle_core::safetensors::load(
            fixture(&format!("{reference}-narrow.expected.safetensors")),
            &Device::Cpu,
        )?;
        let logits = values(&got.net.forward(&outputs["input"])?);
        let torch = values(&outputs["logits"]);
        let scale = torch.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = logits
            .iter()
            .zip(&torch)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(
            err <= 1e-4,
            "{file}: logits differ by {err:.2e} of their scale"
        );
    }
    Ok(())
}

fn import_error(path: &Path, arch: Option<Architecture>) -> String {
    match import(path, arch) {
        Ok(_) => panic!("{} imported", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cut_short_files_fail_saying_so() {
    for file in ["zfnet-narrow.legacy.pth", "alexnet-narrow.zip.pth"] {
        let bytes = std::fs::read(fixture(&format!("import/{file}"))).unwrap();
        // every ~1/50th of the file, and inside the header pickles
        let cuts = (1..50)
            .map(|k| bytes.len() * k / 50)
            .chain([200, 140, 20, 9]);
        for keep in cuts {
            let cut = scratch(&format!("cut-{keep}-{file}"));
            std::fs::write(&cut, &bytes[..keep]).unwrap();
            let err = import_error(&cut, None);
            assert!(
                ["cut short", "ends", "pickle", "zip", "neither", "magic"]
                    .iter()
                    .any(|w| err.contains(w)),
                "{file} cut to {keep} bytes: {err}"
            );
        }
    }
}

/// Damaged bytes (one flipped in each part of the file) give an error or, where they hit weight
/// values only, other weights: never a panic or a hang.
#[test]
fn damaged_files_never_panic() {
    for file in [
        "zfnet-narrow.model.legacy.pth",
        "alexnet-narrow.model.zip.pth",
    ] {
        let bytes = std::fs::read(fixture(&format!("import/{file}"))).unwrap();
        for k in 0..120 {
            let mut damaged = bytes.clone();
            let at = (k * 7919 + 13) % 3000 + if k % 2 == 0 { 0 } else { bytes.len() - 3000 };
            damaged[at] ^= 0x5a;
            let path = scratch(&format!("flip-{k}-{file}"));
            std::fs::write(&path, &damaged).unwrap();
            let outcome = std::panic::catch_unwind(|| import(&path, None).map(|_| ()));
            assert!(outcome.is_ok(), "{file}: byte {at} flipped: panic");
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[test]
fn foreign_and_inconsistent_weights_fail_naming_the_layer() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let base: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("zfnet-narrow.safetensors"), &dev)?;
    let write = |name: &str, tensors: &HashMap<String, Tensor>| {
        let path = scratch(name);
        candle_core::safetensors::save(tensors, &path).unwrap();
        path
    };

    // NaN in one layer
    let mut nan = base.clone();
    let w = values(&nan["conv3.weight"]);
    let mut w2 = w.clone();
    w2[5] = f32::NAN;
    w2[9] = f32::INFINITY;
    nan.insert(
        "conv3.weight".into(),
        Tensor::from_vec(w2, nan["conv3.weight"].dims(), &dev)?,
    );
    let err = import_error(&write("nan.safetensors", &nan), None);
    assert!(
        err.contains("conv3.weight") && err.contains("2 NaN"),
        "{err}"
    );

    // a layer pytorchcv's ZFNet does not have
    let mut extra = base.clone();
    extra.insert(
        "features.stage4.unit1.conv.weight".into(),
        base["conv5.weight"].clone(),
    );
    let err = import_error(&write("extra.safetensors", &extra), None);
    assert!(err.contains("features.stage4.unit1.conv.weight"), "{err}");

    // fc6 of the wrong width for the conv stack
    let mut narrow = base.clone();
    narrow.insert(
        "fc6.weight".into(),
        Tensor::zeros((64, 100), DType::F32, &dev)?,
    );
    let err = import_error(&write("shape.safetensors", &narrow), None);
    assert!(err.contains("fc6"), "{err}");

    // told it is AlexNet, but conv1 has ZFNet's 7×7 kernels
    let err = import_error(
        &fixture("import/zfnet-narrow.legacy.pth"),
        Some(Architecture::Alexnet),
    );
    assert!(err.contains("Alexnet") && err.contains("Zfnet"), "{err}");

    // not a weights file at all
    let junk = scratch("junk.pth");
    std::fs::write(&junk, b"GIF89a not weights")?;
    let err = import_error(&junk, None);
    assert!(err.contains("neither a torch.save file"), "{err}");
    Ok(())
}

#[test]
fn imagenet_classes_are_the_thousand_in_logit_order() {
    let classes = zfnet::manifest::imagenet1k_classes();
    assert_eq!(classes.len(), 1000);
    let wnids: std::collections::HashSet<_> = classes.iter().map(|c| &c.wnid).collect();
    let labels: std::collections::HashSet<_> = classes.iter().map(|c| &c.label).collect();
    assert_eq!(
        (wnids.len(), labels.len()),
        (1000, 1000),
        "ids and labels unique"
    );
    assert_eq!(
        (classes[0].wnid.as_str(), classes[0].label.as_str()),
        ("n01440764", "tench")
    );
    assert_eq!(classes[999].wnid, "n15075141");
    // WordNet ids are sorted: the logit order of every ImageNet-1k model
    assert!(classes.windows(2).all(|w| w[0].wnid < w[1].wnid));
    let imagenette: Vec<_> = zfnet::manifest::imagenette_classes()
        .into_iter()
        .map(|c| c.label)
        .collect();
    assert_eq!(
        imagenette,
        [
            "tench",
            "English springer",
            "cassette player",
            "chain saw",
            "church",
            "French horn",
            "garbage truck",
            "gas pump",
            "golf ball",
            "parachute"
        ]
    );
}

/// torchvision's AlexNet (no LRN, floor pools, conv1 padding 2), named as torchvision names it:
/// recognised from its names, and every layer, switch and logit as PyTorch computed them.
#[test]
fn torchvision_alexnet_imports_and_matches_pytorch_at_every_layer() -> anyhow::Result<()> {
    let got = import(&fixture("import/alexnet-tv-narrow.zip.pth"), None)?;
    assert_eq!(got.architecture, Architecture::AlexnetTorchvision);
    let want: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixture("import/alexnet-tv-narrow.expected.safetensors"),
        &Device::Cpu,
    )?;
    let trace = got.net.forward_trace(&want["input"])?;
    let mut report = Vec::new();
    for (i, layer) in trace.convs.iter().enumerate() {
        let name = format!("conv{}", i + 1);
        assert!(
            layer.normalized.is_none(),
            "{name}: torchvision's AlexNet has no LRN"
        );
        let err = relative_error(&layer.activation, &want[&format!("{name}.activation")]);
        report.push(format!("{name} {err:.1e}"));
        assert!(err <= 1e-4, "{name}.activation: {err:.2e}");
        if let Some(p) = &layer.pooled {
            let err = relative_error(&p.output, &want[&format!("{name}.pooled")]);
            assert!(err <= 1e-4, "{name}.pooled: {err:.2e}");
            let sw: Vec<i64> = p.switches.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
            let want_sw: Vec<i64> = want[&format!("{name}.switches")].flatten_all()?.to_vec1()?;
            assert!(sw == want_sw, "{name}: switches differ");
        }
    }
    for (name, t) in [
        ("fc6", &trace.fc6),
        ("fc7", &trace.fc7),
        ("logits", &trace.logits),
    ] {
        let err = relative_error(t, &want[name]);
        report.push(format!("{name} {err:.1e}"));
        assert!(err <= 1e-4, "{name}: {err:.2e}");
    }
    eprintln!("torchvision AlexNet: {}", report.join(", "));
    // the receptive field follows its conv1 padding of 2
    let rf = zfnet::receptive::receptive_field(&Architecture::AlexnetTorchvision.into(), 0);
    assert_eq!(rf.unit_box(0, 0).x0, 0);
    assert_eq!(rf.unit_box(1, 1).x0, 2, "unit 1 starts at 4 − 2");
    Ok(())
}
