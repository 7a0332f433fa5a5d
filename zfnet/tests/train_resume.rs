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
