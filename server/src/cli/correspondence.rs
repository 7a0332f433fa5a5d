//! `zfvis correspondence`: the paper's Table 1 on a saved set-up (the 5 English springer images of
//! Imagenette val with their eye and nose boxes), printed beside the paper's figures.

use super::DEFAULT_WEIGHTS;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use zfnet::correspondence::{correspondence, springer_preset};

/// Δ at layers 5 and 7 for masked eyes, nose and random regions (the paper's Table 1).
#[derive(Args)]
pub struct CorrespondenceArgs {
    /// The val folder holding `n02102040/` (e.g. ../shared/datasets/imagenette/val).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: PathBuf,
    /// Draws of the random-position control.
    #[arg(long, default_value_t = 10)]
    repetitions: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: CorrespondenceArgs) -> anyhow::Result<()> {
    let preset = springer_preset()?;
    let model = zfnet::LoadedModel::load(&args.weights, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    let folder = args.data.join(&preset.folder);
    let mut inputs = Vec::new();
    for file in &preset.files {
        let path = folder.join(file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (--data must be the Imagenette val folder)",
                path.display()
            )
        })?;
        let prepared = zfnet::preprocess::prepare(&bytes, &model.manifest.preprocess)
            .with_context(|| format!("decoding {}", path.display()))?;
        inputs.push(prepared.to_tensor(&candle_core::Device::Cpu)?);
    }
    let total = inputs.len() * (preset.parts.len() + args.repetitions);
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template(
        "masking [{bar:30}] {pos}/{len} images  ETA {eta}",
    )?);
    let started = std::time::Instant::now();
    let rows = correspondence(
        &model.net,
        &inputs,
        &preset.parts,
        args.repetitions,
        args.seed,
        &|done, _| {
            bar.set_position(done as u64);
            true
        },
    )?;
    bar.finish_and_clear();
    println!(
        "{} images of {}, {} random draws, {:.1} s ({} masked forwards)",
        inputs.len(),
        preset.folder,
        args.repetitions,
        started.elapsed().as_secs_f32(),
        total
    );
    println!(
        "{:<10} {:>16} {:>16}   {:>16} {:>16}",
        "part", "Δ5 (zfvis)", "Δ7 (zfvis)", "Δ5 (paper)", "Δ7 (paper)"
    );
    for r in rows {
        let paper = zfvis_api::paper_delta(&r.part);
        let cell = |m: f32, s: f32| format!("{m:.3} ± {s:.3}");
        println!(
            "{:<10} {:>16} {:>16}   {:>16} {:>16}",
            r.part,
            cell(r.layer5.mean, r.layer5.std),
            cell(r.layer7.mean, r.layer7.std),
            paper.map_or("-".into(), |p| cell(p[0].mean, p[0].std)),
            paper.map_or("-".into(), |p| cell(p[1].mean, p[1].std)),
        );
    }
    Ok(())
}
