//! Training is resumable to the bit: k steps, stop, resume, finish == one uninterrupted run.
//! Also: training lowers the loss on a learnable toy problem (the gradients point the right way).

use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use zfnet::train::{Outcome, TrainConfig, Trainer};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zfvis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Two classes of 64×64 images: reddish with noise vs bluish with noise.
fn toy_dataset(root: &Path, per_class: u32) {
    for (class, base) in [("reds", [200u8, 40, 40]), ("blues", [40u8, 40, 200])] {
        let dir = root.join("train").join(class);
        std::fs::create_dir_all(&dir).expect("class dir");
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(64, 48, |x, y| {
                let n = ((x * 31 + y * 17 + i * 101) % 60) as u8;
                image::Rgb([
                    base[0].saturating_add(n),
                    base[1] + n / 2,
                    base[2].saturating_sub(n),
                ])
            });
            img.save(dir.join(format!("{i:02}.png")))
                .expect("write png");
        }
    }
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 4,
        micro_batch: 2,
        lr: 0.01,
        lr_drops: vec![2],
        channels: [4, 8, 8, 8, 8],
        fc_width: 16,
        checkpoint_secs: 3600,
        val_every: 0,
        ..TrainConfig::default()
    }
}

fn params(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    let mut p: Vec<(String, Vec<f32>)> = t
        .parameters()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p
}

#[test]
fn resumed_run_equals_uninterrupted_run() -> anyhow::Result<()> {
    let root = scratch("resume");
    toy_dataset(&root, 4); // 8 images, batch 4: 2 steps per epoch, 3 epochs = 6 steps
    let never = AtomicBool::new(false);
    let dev = Device::Cpu;

    let mut whole = Trainer::create(&root, &root.join("whole"), config(3), "test".into(), &dev)?;
    let outcome = whole.run(None, &never, &mut |_| {})?;
    assert!(matches!(outcome, Outcome::Finished(_)));
    assert_eq!(whole.state.step, 6);

    let run = root.join("split");
    let mut first = Trainer::create(&root, &run, config(3), "test".into(), &dev)?;
    // stop in the middle of the second epoch, after the lr drop boundary is set up
    assert_eq!(
        first.run(Some(3), &never, &mut |_| {})?,
        Outcome::Stopped { step: 3 }
    );
    let stopped = params(&first);
    drop(first);
    let mut second = Trainer::resume(&run, &Default::default(), &dev)?;
    assert_eq!(second.state.step, 3);
    assert_eq!(
        params(&second),
        stopped,
        "the checkpoint restores the weights"
    );
    assert!(matches!(
        second.run(None, &never, &mut |_| {})?,
        Outcome::Finished(_)
    ));

    let (a, b) = (params(&whole), params(&second));
    assert_ne!(a, stopped, "training went on after the stop");
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(
            x, y,
            "{name} differs between the resumed and the uninterrupted run"
        );
    }
    // the step log of the resumed run has each step once
    let log = std::fs::read_to_string(run.join("log.csv"))?;
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6"]);
    // the final model loads as a normal model with its manifest
    let model = zfnet::LoadedModel::load(&run.join("model.safetensors"), &dev)?;
    assert!(model.manifest.trained);
    assert_eq!(model.manifest.classes.len(), 2);
    assert!(run.join("snapshots/epoch-001.safetensors").exists());
    assert!(run.join("snapshots/epoch-002.safetensors").exists());
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn training_fits_a_separable_toy_problem() -> anyhow::Result<()> {
    let root = scratch("fit");
    toy_dataset(&root, 4);
    let never = AtomicBool::new(false);
    let dev = Device::Cpu;
    let cfg = TrainConfig {
        lr: 0.1,
        lr_drops: vec![],
        dropout: 0.0,
        augment: false,
        ..config(20)
    };
    let mut t = Trainer::create(&root, &root.join("run"), cfg, "test".into(), &dev)?;
    let mut losses = Vec::new();
    t.run(None, &never, &mut |p| {
        if let zfnet::train::Progress::EpochDone { train_loss, .. } = p {
            losses.push(*train_loss);
        }
    })?;
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(
        last < 0.5 * first,
        "loss should fall on a separable problem: {losses:?}"
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn a_run_can_start_from_a_file_with_its_convs_frozen_at_first() -> anyhow::Result<()> {
    let root = scratch("init-from");
    toy_dataset(&root, 4); // 2 steps per epoch
    let never = AtomicBool::new(false);
    let dev = Device::Cpu;
    // a conv stack unlike the seeded start: the seeded one halved
    let seeded = Trainer::create(&root, &root.join("seeded"), config(2), "test".into(), &dev)?;
    let start = params(&seeded);
    let convs: std::collections::HashMap<String, candle_core::Tensor> = seeded
        .parameters()
        .into_iter()
        .filter(|(k, _)| k.starts_with("conv"))
        .map(|(k, v)| Ok((k, (v * 0.5)?)))
        .collect::<candle_core::Result<_>>()?;
    let file = root.join("convs.safetensors");
    candle_core::safetensors::save(&convs, &file)?;

    let cfg = TrainConfig {
        init_from: Some(file.clone()),
        frozen_conv_epochs: 1,
        ..config(2)
    };
    let mut t = Trainer::create(&root, &root.join("run"), cfg.clone(), "test".into(), &dev)?;
    let taken = |t: &Trainer| -> Vec<(String, Vec<f32>)> {
        params(t)
            .into_iter()
            .filter(|(k, _)| k.starts_with("conv"))
            .collect()
    };
    let file_convs: Vec<(String, Vec<f32>)> = {
        let mut v: Vec<_> = convs
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(taken(&t), file_convs, "the conv stack comes from the file");
    let fc_start: Vec<_> = start.iter().filter(|(k, _)| k.starts_with("fc")).collect();
    let fc_now: Vec<_> = params(&t)
        .into_iter()
        .filter(|(k, _)| k.starts_with("fc"))
        .collect();
    assert_eq!(
        fc_now.iter().collect::<Vec<_>>(),
        fc_start,
        "fc keeps the seeded start"
    );

    // the frozen epoch moves the classifier only
    assert_eq!(
        t.run(Some(2), &never, &mut |_| {})?,
        Outcome::Stopped { step: 2 }
    );
    assert_eq!(taken(&t), file_convs, "frozen during epoch 1");
    let fc_after: Vec<_> = params(&t)
        .into_iter()
        .filter(|(k, _)| k.starts_with("fc"))
        .collect();
    assert_ne!(fc_after, fc_now, "the classifier learned");
    // then everything learns (resumed: the start file is read only for a run without checkpoint)
    drop(t);
    let mut t = Trainer::resume(&root.join("run"), &Default::default(), &dev)?;
    t.run(None, &never, &mut |_| {})?;
    assert_ne!(taken(&t), file_convs, "the convs learn in epoch 2");
    let model = zfnet::LoadedModel::load(&root.join("run/model.safetensors"), &dev)?;
    assert!(
        model.manifest.provenance.contains("--init-from"),
        "{}",
        model.manifest.provenance
    );

    // a file that does not fit the network is refused, naming the tensor
    for (name, tensor) in [
        (
            "fc9.weight",
            candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?,
        ),
        (
            "conv1.weight",
            candle_core::Tensor::zeros((3, 3), candle_core::DType::F32, &dev)?,
        ),
    ] {
        let wrong = root.join(format!("wrong-{name}.safetensors"));
        candle_core::safetensors::save(&[(name, tensor)].into_iter().collect(), &wrong)?;
        let cfg = TrainConfig {
            init_from: Some(wrong),
            ..config(1)
        };
        let err = Trainer::create(
            &root,
            &root.join(format!("bad-{name}")),
            cfg,
            "test".into(),
            &dev,
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains(name), "{err}");
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn one_layer_can_start_from_another_file_and_stay_frozen() -> anyhow::Result<()> {
    let root = scratch("layer-start");
    toy_dataset(&root, 4);
    let never = AtomicBool::new(false);
    let dev = Device::Cpu;
    let seeded = Trainer::create(&root, &root.join("seeded"), config(1), "test".into(), &dev)?;
    let start = params(&seeded);
    // a whole-network file whose every tensor differs from the seeded start
    let doubled: std::collections::HashMap<String, candle_core::Tensor> = seeded
        .parameters()
        .into_iter()
        .map(|(k, v)| Ok((k, ((v * 2.0)? + 0.01)?)))
        .collect::<candle_core::Result<_>>()?;
    let file = root.join("other.safetensors");
    candle_core::safetensors::save(&doubled, &file)?;
    let of = |p: &[(String, Vec<f32>)], name: &str| -> Vec<f32> {
        p.iter().find(|(k, _)| k == name).expect(name).1.clone()
    };
    let from_file = |name: &str| -> Vec<f32> {
        doubled[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };

    let cfg = TrainConfig {
        layer_starts: vec![zfnet::train::LayerStart {
            layer: "conv1".into(),
            from: file.clone(),
        }],
        frozen_conv_layers: 1,
        ..config(1)
    };
    let mut t = Trainer::create(&root, &root.join("run"), cfg, "test".into(), &dev)?;
    let begun = params(&t);
    assert_eq!(of(&begun, "conv1.weight"), from_file("conv1.weight"));
    assert_eq!(of(&begun, "conv1.bias"), from_file("conv1.bias"));
    assert_eq!(
        of(&begun, "conv2.weight"),
        of(&start, "conv2.weight"),
        "only conv1 is taken from the file"
    );
    t.run(None, &never, &mut |_| {})?;
    let done = params(&t);
    assert_eq!(
        of(&done, "conv1.weight"),
        from_file("conv1.weight"),
        "conv1 frozen for the whole run"
    );
    assert_ne!(
        of(&done, "conv2.weight"),
        of(&begun, "conv2.weight"),
        "conv2 learns"
    );
    let model = zfnet::LoadedModel::load(&root.join("run/model.safetensors"), &dev)?;
    let prov = &model.manifest.provenance;
    assert!(
        prov.contains("conv1 started from") && prov.contains("frozen"),
        "{prov}"
    );

    // a layer the network lacks, and a file without the layer, are refused by name
    let convs_only = root.join("fc-only.safetensors");
    candle_core::safetensors::save(
        &[("fc8.bias", doubled["fc8.bias"].clone())]
            .into_iter()
            .collect(),
        &convs_only,
    )?;
    for (layer, from, says) in [
        ("conv9", file.clone(), "no layer conv9"),
        ("conv1", convs_only, "none of the tensors"),
    ] {
        let cfg = TrainConfig {
            layer_starts: vec![zfnet::train::LayerStart {
                layer: layer.into(),
                from,
            }],
            ..config(1)
        };
        let out = root.join(format!("bad-{layer}"));
        let err = Trainer::create(&root, &out, cfg, "test".into(), &dev)
            .err()
            .expect("refused");
        assert!(err.to_string().contains(says), "{err}");
        assert!(!out.exists(), "nothing written for a refused start");
    }
    let err = TrainConfig {
        frozen_conv_layers: 6,
        ..config(1)
    }
    .validate()
    .expect_err("refused");
    assert!(err.to_string().contains("frozen conv layers (6)"), "{err}");
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn alexnet_trains_and_its_model_says_alexnet() -> anyhow::Result<()> {
    let root = scratch("alexnet");
    toy_dataset(&root, 4);
    let cfg = TrainConfig {
        architecture: zfnet::arch::Architecture::Alexnet,
        ..config(1)
    };
    let mut t = Trainer::create(&root, &root.join("run"), cfg, "test".into(), &Device::Cpu)?;
    let conv1 = t.parameters()["conv1.weight"].dims().to_vec();
    assert_eq!(conv1, [4, 3, 11, 11], "AlexNet's conv1");
    t.run(None, &AtomicBool::new(false), &mut |_| {})?;
    let model = zfnet::LoadedModel::load(&root.join("run/model.safetensors"), &Device::Cpu)?;
    assert_eq!(
        model.manifest.architecture,
        zfnet::arch::Architecture::Alexnet
    );
    assert!(
        model.manifest.name.starts_with("alexnet-"),
        "{}",
        model.manifest.name
    );
    // a run written before the field existed reads as ZFNet
    let old: TrainConfig = serde_json::from_str(
        &serde_json::to_string(&config(1))?.replace("\"architecture\":\"zfnet\",", ""),
    )?;
    assert_eq!(old.architecture, zfnet::arch::Architecture::Zfnet);
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

#[test]
fn the_papers_start_and_input_are_what_the_run_uses_and_records() -> anyhow::Result<()> {
    let root = scratch("paper-start");
    toy_dataset(&root, 4);
    let cfg = TrainConfig {
        conv_std: Some(0.01),
        conv1_std: Some(0.001),
        fc_init: zfnet::init::FcInit::Paper,
        preprocess: zfnet::manifest::Preprocess::paper_pixels(),
        clip_rms: None,
        ..config(1)
    };
    let mut t = Trainer::create(&root, &root.join("run"), cfg, "test".into(), &Device::Cpu)?;
    let rms = |name: &str| -> anyhow::Result<f32> {
        let v = t.parameters()[name].flatten_all()?.to_vec1::<f32>()?;
        Ok((v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt())
    };
    let conv1 = rms("conv1.weight")?;
    assert!((conv1 / 0.001 - 1.0).abs() < 0.15, "conv1 RMS {conv1}");
    for layer in ["conv2", "conv3", "conv4", "conv5", "fc6"] {
        let r = rms(&format!("{layer}.weight"))?;
        assert!((r / 0.01 - 1.0).abs() < 0.15, "{layer} RMS {r}");
    }
    t.run(None, &AtomicBool::new(false), &mut |_| {})?;
    // the model is served with the input it was trained on
    let model = zfnet::LoadedModel::load(&root.join("run/model.safetensors"), &Device::Cpu)?;
    assert_eq!(model.manifest.preprocess.pixel_scale, 255.0);
    assert_eq!(model.manifest.preprocess.std, [1.0; 3]);
    // a He-start run's config.json has no `conv_std` (as those written before it existed) and
    // reads back as the He start
    let he = serde_json::to_string(&config(1))?;
    assert!(!he.contains("conv_std"), "{he}");
    assert_eq!(serde_json::from_str::<TrainConfig>(&he)?.conv_std, None);
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
