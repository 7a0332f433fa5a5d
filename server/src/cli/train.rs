//! `zfvis train`: a progress bar around `zfnet::train`.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use zfnet::train::{LayerStart, Outcome, Progress, ScheduleChange, TrainConfig, Trainer};

/// The networks `zfvis train` builds.
#[derive(Clone, Copy, ValueEnum)]
enum TrainArch {
    Zfnet,
    /// pytorchcv's AlexNet (11×11/4 conv1, LRN, ceil-mode pools): the paper's Fig. 6 comparison.
    Alexnet,
}

/// Train ZFNet (or AlexNet) on a folder-per-class set (DATA/train/<class>/…, optional DATA/val/<class>/…).
#[derive(Args)]
pub struct TrainArgs {
    /// Dataset root holding train/ (and val/ for per-epoch validation).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory: checkpoints, logs, snapshots, the final model.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["data", "out", "init_from", "init_layer_from", "freeze_conv_epochs", "freeze_convs", "arch"])]
    resume: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The network to train (the paper's conv widths 96/256/384/384/256 either way).
    #[arg(long, value_enum, default_value = "zfnet")]
    arch: TrainArch,
    /// Epochs in all (with --resume: moves the end of the run).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Images per forward/backward pass; gradients of a batch's passes are summed.
    #[arg(long, default_value_t = 32)]
    micro_batch: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Epochs at whose start the learning rate is divided by 10, e.g. 20,27 (with --resume:
    /// only drops still ahead of the run may move).
    #[arg(long, value_delimiter = ',')]
    lr_drops: Option<Vec<usize>>,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// fc6/fc7 width (4096 in the paper).
    #[arg(long, default_value_t = zfnet::init::DEFAULT_FC_WIDTH)]
    fc_width: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Standard deviation of conv1's normal start (default: He, ≈ 0.117, which the clipping
    /// radius freezes; 0.001 lets conv1 learn edges and colour blobs).
    #[arg(long)]
    conv1_std: Option<f32>,
    /// Standard deviation of every conv layer's normal start (default: He); --conv1-std overrides
    /// it for conv1. The paper's is 0.01, for its [-128, 128] input (--paper-input).
    #[arg(long)]
    conv_std: Option<f32>,
    /// fc6–fc8's start: he (default; trains at once) or paper (N(0, 0.01), for --paper-input).
    #[arg(long, value_enum, default_value_t = FcStart::He)]
    fc_init: FcStart,
    /// Start from the tensors of this safetensors file where their names match (e.g. a conv-only
    /// snapshot: the conv stack is taken, the classifier starts fresh).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Start one layer from another file, after --init-from (repeatable), e.g.
    /// conv1=snapshots/epoch-005.safetensors: only that file's conv1.* tensors are taken.
    #[arg(long, value_name = "LAYER=FILE", value_parser = parse_layer_start)]
    init_layer_from: Vec<LayerStart>,
    /// Train only the fc layers for the first N epochs (the conv stack frozen).
    #[arg(long, default_value_t = 0)]
    freeze_conv_epochs: usize,
    /// Keep the first N conv layers frozen for the whole run (1: conv1 stays as it started).
    #[arg(long, default_value_t = 0)]
    freeze_convs: usize,
    /// Turn off feature-scale clipping (the paper's Fig. 6a). With the default unit-variance input
    /// no filter reaches the radius, so this changes nothing there; see --paper-input.
    #[arg(long)]
    no_clip: bool,
    /// Feed mean-subtracted pixels in about [-128, 128], as the paper does, instead of
    /// unit-variance ones: conv1's gradient is some 55 times larger, the regime in which the paper
    /// needed clipping. Recorded in the model's manifest, so serving it preprocesses the same way.
    #[arg(long)]
    paper_input: bool,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 120)]
    checkpoint_secs: u64,
    /// Stop (with a checkpoint) after this many optimizer steps in total.
    #[arg(long)]
    max_steps: Option<usize>,
}

/// fc6–fc8's start.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FcStart {
    /// He-normal: keeps the signal's scale through the head.
    He,
    /// N(0, 0.01), the paper's.
    Paper,
}

/// A start file's absolute path, so that a resume from another folder finds it (as given when
/// it cannot be resolved: the trainer then names it as missing).
fn absolute(p: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `LAYER=FILE` of `--init-layer-from`.
fn parse_layer_start(s: &str) -> Result<LayerStart, String> {
    match s.split_once('=') {
        Some((layer, file)) if !layer.is_empty() && !file.is_empty() => Ok(LayerStart {
            layer: layer.to_string(),
            from: PathBuf::from(file),
        }),
        _ => Err(format!(
            "expected LAYER=FILE (e.g. conv1=epoch-005.safetensors), got {s:?}"
        )),
    }
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        let defaults = TrainConfig::default();
        let architecture = match self.arch {
            TrainArch::Zfnet => zfnet::arch::Architecture::Zfnet,
            TrainArch::Alexnet => zfnet::arch::Architecture::Alexnet,
        };
        TrainConfig {
            architecture,
            channels: architecture.paper_channels(),
            epochs: self.epochs.unwrap_or(defaults.epochs),
            batch: self.batch,
            micro_batch: self.micro_batch,
            lr: self.lr,
            lr_drops: self.lr_drops.clone().unwrap_or(defaults.lr_drops.clone()),
            weight_decay: self.weight_decay,
            fc_width: self.fc_width,
            seed: self.seed,
            conv1_std: self.conv1_std,
            conv_std: self.conv_std,
            fc_init: match self.fc_init {
                FcStart::He => zfnet::init::FcInit::He,
                FcStart::Paper => zfnet::init::FcInit::Paper,
            },
            init_from: self.init_from.as_deref().map(absolute),
            frozen_conv_epochs: self.freeze_conv_epochs,
            layer_starts: self
                .init_layer_from
                .iter()
                .map(|s| LayerStart {
                    layer: s.layer.clone(),
                    from: absolute(&s.from),
                })
                .collect(),
            frozen_conv_layers: self.freeze_convs,
            clip_rms: if self.no_clip {
                None
            } else {
                defaults.clip_rms
            },
            checkpoint_secs: self.checkpoint_secs,
            preprocess: if self.paper_input {
                zfnet::manifest::Preprocess::paper_pixels()
            } else {
                defaults.preprocess.clone()
            },
            ..defaults
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    crate::alloc::keep_freed_memory();
    let device = zfnet::device::parse_device(&args.device)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let change = ScheduleChange {
        epochs: args.epochs,
        lr_drops: args.lr_drops.clone(),
    };
    let resume = args.resume.as_deref();
    let (data, out) = (args.data.as_deref(), args.out.as_deref());
    let mut trainer = match (resume, data, out) {
        (Some(run), _, _) => Trainer::resume(run, &change, &device)
            .with_context(|| format!("resuming {}", run.display()))?,
        (None, Some(data), Some(out)) => {
            Trainer::create(data, out, args.config(), command, &device)
                .with_context(|| format!("starting a run in {}", out.display()))?
        }
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
