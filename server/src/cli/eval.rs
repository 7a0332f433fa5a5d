//! `zfvis eval`: top-1/top-5, per-class accuracy and conv1 statistics of a model.

use super::DEFAULT_WEIGHTS;
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use zfnet::dataset::FolderDataset;
use zfnet::train::evaluate;

/// Top-1 and top-5 accuracy over a folder-per-class set (folders matched by WordNet id or label).
#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Write the result into the model's manifest.
    #[arg(long)]
    record: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    eval(
        &args.weights,
        &args.data,
        &args.device,
        args.batch,
        args.record,
    )
}

/// Top-1 / top-5 of a model over a folder-per-class set; `record` writes it into the manifest.
fn eval(
    weights: &Path,
    data: &Path,
    device: &str,
    batch: usize,
    record: bool,
) -> anyhow::Result<()> {
    if !(1..=256).contains(&batch) {
        bail!("--batch must be between 1 and 256, not {batch}");
    }
    let device = zfnet::device::parse_device(device)?;
    let mut model = zfnet::LoadedModel::load(weights, &device)
        .with_context(|| format!("loading {}", weights.display()))?;
    let set = FolderDataset::with_classes(data, &model.manifest.classes)?;
    if !set.unmatched_folders.is_empty() {
        eprintln!(
            "skipping folders that match none of the model's classes: {}",
            set.unmatched_folders.join(", ")
        );
    }
    let bar = ProgressBar::new(set.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "evaluating [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}",
    )?);
    let result = evaluate(
        &model.net,
        &set,
        &model.manifest.preprocess,
        batch,
        &mut |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "{}: {} images, top-1 {:.2}%, top-5 {:.2}%",
        data.display(),
        result.images,
        result.top1 * 100.0,
        result.top5 * 100.0
    );
    let per_class = result.per_class(&model.manifest.classes);
    let width = per_class
        .iter()
        .map(|c| c.label.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "  {:<width$}  images  top-1   most often taken for",
        "class"
    );
    for class in per_class.iter().filter(|c| c.images > 0) {
        let mistaken = class
            .mistaken_for
            .as_ref()
            .map_or(String::from("-"), |(label, n)| format!("{label} ({n})"));
        println!(
            "  {:<width$}  {:>6}  {:>5.1}%  {mistaken}",
            class.label,
            class.images,
            class.top1 * 100.0
        );
    }
    let conv1 = zfnet::filter_stats::filter_stats(&model.net.convs[0].weight)?;
    println!(
        "conv1: low-frequency share {:.3}, anisotropy {:.3}, {:.0}% oriented (> {}), {} dead of {} filters",
        conv1.low_freq_share,
        conv1.anisotropy,
        conv1.oriented_fraction * 100.0,
        zfnet::filter_stats::ORIENTED_ABOVE,
        conv1.dead_filters,
        conv1.filters
    );
    if record {
        model.manifest.conv1 = Some(conv1);
        model.manifest.evaluation = Some(zfnet::manifest::Evaluation {
            dataset: data.display().to_string(),
            images: result.images,
            top1: result.top1,
            top5: result.top5,
            per_class,
        });
        model
            .manifest
            .save(&zfnet::manifest::manifest_path(weights))?;
        println!(
            "recorded in {}",
            zfnet::manifest::manifest_path(weights).display()
        );
    }
    Ok(())
}
