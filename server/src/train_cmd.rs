//! `zfvis train` and `zfvis eval`: progress bars around `zfnet::train`.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zfnet::dataset::FolderDataset;
use zfnet::train::{evaluate, Outcome, Progress, ScheduleChange, TrainConfig, Trainer};

pub struct TrainArgs<'a> {
    pub data: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub resume: Option<&'a Path>,
    pub device: &'a str,
    pub config: TrainConfig,
    /// `--epochs` / `--lr-drops` given with `--resume`.
    pub schedule_change: ScheduleChange,
    pub max_steps: Option<usize>,
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let device = zfnet::device::parse_device(args.device)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut trainer = match (args.resume, args.data, args.out) {
        (Some(run), _, _) => Trainer::resume(run, &args.schedule_change, &device)
            .with_context(|| format!("resuming {}", run.display()))?,
        (None, Some(data), Some(out)) => Trainer::create(data, out, args.config, command, &device)
            .with_context(|| format!("starting a run in {}", out.display()))?,
        _ => bail!("give --data DIR --out RUN_DIR for a new run, or --resume RUN_DIR"),
    };
    eprintln!(
        "training {} classes on {} ({} threads): {}",
        trainer.classes().len(),
        zfnet::device::describe(&device),
        rayon::current_num_threads(),
        serde_json::to_string(&trainer.config)?
    );
    // Ctrl-C: finish the step, write a checkpoint, exit; a second Ctrl-C kills.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (checkpoint follows); Ctrl-C again to abort");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}")?
            .progress_chars("=> "),
    );
    let mut on_progress = |p: &Progress| match p {
        Progress::Started {
            total_steps, state, ..
        } => {
            bar.set_length(*total_steps as u64);
            bar.set_position(state.step as u64);
            bar.reset_eta();
        }
        Progress::Step {
            state,
            loss,
            accuracy,
            images_per_s,
            lr,
        } => {
            bar.set_prefix(format!("epoch {}", state.epoch + 1));
            bar.set_position(state.step as u64);
            let msg = format!(
                "loss {loss:.3}  acc {:.1}%  {images_per_s:.1} img/s  lr {lr:.0e}",
                accuracy * 100.0
            );
            // without a terminal (nohup, a batch job) the bar is hidden: log a line now and then
            if bar.is_hidden() && state.step.is_multiple_of(10) {
                eprintln!("epoch {} step {}: {msg}", state.epoch + 1, state.step);
            }
            bar.set_message(msg);
        }
        Progress::Validating { epoch, images } => {
            bar.set_message(format!(
                "validating epoch {} on {images} images…",
                epoch + 1
            ));
        }
        Progress::EpochDone {
            epoch,
            train_loss,
            train_accuracy,
            val,
        } => {
            let v = val.as_ref().map_or(String::new(), |v| {
                format!(
                    "  val top-1 {:.2}%  top-5 {:.2}%",
                    v.top1 * 100.0,
                    v.top5 * 100.0
                )
            });
            let line = format!(
                "epoch {}: train loss {train_loss:.4}  acc {:.2}%{v}",
                epoch + 1,
                train_accuracy * 100.0
            );
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        Progress::Checkpointed { .. } => {}
    };
    let outcome = trainer.run(args.max_steps, &stop, &mut on_progress)?;
    bar.finish_and_clear();
    match outcome {
        Outcome::Finished(path) => println!("done: {}", path.display()),
        Outcome::Stopped { step } => println!(
            "stopped at step {step}; checkpoint saved. Continue with: zfvis train --resume <RUN_DIR>"
        ),
    }
    Ok(())
}

/// Top-1 / top-5 of a model over a folder-per-class set; `record` writes it into the manifest.
pub fn eval(
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
    if record {
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
