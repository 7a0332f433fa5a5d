//! Training ZFNet in candle: the paper's recipe, resumable to the step.
//!
//! - SGD with momentum (PyTorch convention `v ← μv + g + λw`, `w ← w − ηv`; no weight decay on
//!   biases), the learning rate divided by 10 at the epochs in `lr_drops`.
//! - Batches of `batch` images made of `micro_batch`-sized passes whose gradients are summed, so
//!   memory stays bounded whatever the batch.
//! - Random `crop`² crops of the image resized to `resize` on the shorter side, horizontal flips;
//!   dropout on fc6 and fc7.
//! - The paper's feature-scale clipping: after each update every conv filter whose RMS exceeds
//!   `clip_rms` is rescaled to it.
//!
//! **Determinism.** The data order of an epoch, each image's crop and flip and each step's dropout
//! masks come from ChaCha8 streams seeded by `(seed, epoch)`, `(seed, epoch, image)` and
//! `(seed, step, micro-batch)`. A checkpoint therefore needs only the weights, the momentum
//! buffers and the position `(epoch, batch, step)`: resuming replays exactly what an uninterrupted
//! run does (`tests/train_resume.rs`).
//!
//! Files in a run directory: `config.json`, `checkpoint/` (`state.safetensors` + `state.json`,
//! replaced atomically), `log.csv` (one row per step), `epochs.csv` (one row per epoch with
//! validation accuracy; `curves.png` plots it), `snapshots/epoch-NNN.safetensors` (+ manifest) at epochs 1, 2, 5, 10, 20,
//! 30, 40, 64, and `model.safetensors` (+ `model.json`) when the run completes.

use crate::arch::Architecture;
use crate::dataset::{FolderDataset, LabelledImage};
use crate::init::FcInit;
use crate::manifest::{manifest_path, ClassAccuracy, ClassEntry, Evaluation, Manifest, Preprocess};
use crate::model::ZfNet;
use crate::ops::lrn::lrn;
use crate::ops::maxpool::max_pool;
use crate::preprocess::{decode, normalise, resize_and_crop, resize_shorter};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Epochs whose weights are kept as snapshots (paper Fig. 4 shows features at these stages).
pub const SNAPSHOT_EPOCHS: [usize; 8] = [1, 2, 5, 10, 20, 30, 40, 64];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub micro_batch: usize,
    pub lr: f64,
    /// Epochs (1-based, at their start) at which the learning rate is divided by 10.
    pub lr_drops: Vec<usize>,
    pub momentum: f64,
    pub weight_decay: f64,
    pub dropout: f32,
    /// Feature-scale clipping radius for conv filters (the paper's 0.1); `None` disables it.
    pub clip_rms: Option<f32>,
    pub seed: u64,
    pub channels: [usize; 5],
    pub fc_width: usize,
    /// He by default: see [`FcInit`] for why not the paper's N(0, 0.01).
    #[serde(default)]
    pub fc_init: FcInit,
    pub preprocess: Preprocess,
    /// Random crops and flips (off: centre crops, for tests).
    pub augment: bool,
    /// Seconds between checkpoints (one is also written at every epoch's end).
    pub checkpoint_secs: u64,
    /// Validate every this many epochs (0: never).
    pub val_every: usize,
}

impl Default for TrainConfig {
    /// The paper's recipe, with the reduced fc width of the default model.
    fn default() -> Self {
        TrainConfig {
            epochs: 30,
            batch: 128,
            micro_batch: 32,
            lr: 0.01,
            lr_drops: vec![20, 27],
            momentum: 0.9,
            weight_decay: 5e-4,
            dropout: 0.5,
            clip_rms: Some(0.1),
            seed: 1,
            channels: Architecture::Zfnet.paper_channels(),
            fc_width: crate::init::DEFAULT_FC_WIDTH,
            fc_init: FcInit::He,
            preprocess: Preprocess::imagenet(),
            augment: true,
            checkpoint_secs: 120,
            val_every: 1,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.epochs == 0 || self.epochs > 10_000 {
            return bad(format!("epochs must be 1–10000, got {}", self.epochs));
        }
        if self.batch == 0 || self.micro_batch == 0 || self.micro_batch > self.batch {
            return bad(format!(
                "need 1 ≤ micro-batch ({}) ≤ batch ({})",
                self.micro_batch, self.batch
            ));
        }
        if self.batch > 65_536 || self.micro_batch > 512 {
            return bad(format!(
                "batch ({}) must be at most 65536 and micro-batch ({}) at most 512 (memory grows with it)",
                self.batch, self.micro_batch
            ));
        }
        if self.fc_width == 0 || self.fc_width > 16_384 {
            return bad(format!("fc width must be 1–16384, got {}", self.fc_width));
        }
        if !(self.lr > 0.0 && self.lr < 10.0) {
            return bad(format!("learning rate must be in (0, 10), got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) || !(0.0..1.0).contains(&self.dropout) {
            return bad("momentum and dropout must be in [0, 1)".into());
        }
        Ok(())
    }

    /// Learning rate during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let drops = self.lr_drops.iter().filter(|&&e| epoch + 1 >= e).count();
        // dividing by a power of ten keeps 1e-2 → 1e-3 → 1e-4 exact in the logs (× 0.1ⁿ does not)
        self.lr / 10f64.powi(drops as i32)
    }
}

/// Where a run stands: everything besides weights and momentum that a resume needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// 0-based epoch in progress.
    pub epoch: usize,
    /// Batches of this epoch already done.
    pub batch_in_epoch: usize,
    /// Optimizer steps done in the whole run.
    pub step: usize,
    pub images_seen: u64,
    /// Training seconds so far (excluding time stopped).
    pub elapsed_s: f64,
}

/// What the trainer reports while it runs.
#[derive(Debug, Clone)]
pub enum Progress {
    Started {
        total_steps: usize,
        steps_per_epoch: usize,
        state: RunState,
    },
    Step {
        state: RunState,
        loss: f32,
        accuracy: f32,
        images_per_s: f64,
        lr: f64,
    },
    Validating {
        epoch: usize,
        images: usize,
    },
    EpochDone {
        epoch: usize,
        train_loss: f32,
        train_accuracy: f32,
        val: Option<EvalResult>,
    },
    Checkpointed {
        step: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub images: usize,
    pub top1: f32,
    pub top5: f32,
    /// `confusion[true class][predicted class]` image counts (empty when not measured).
    #[serde(default)]
    pub confusion: Vec<Vec<u32>>,
}

impl EvalResult {
    /// Each class's images and top-1, and the class it was most often mistaken for.
    pub fn per_class(&self, classes: &[ClassEntry]) -> Vec<ClassAccuracy> {
        self.confusion
            .iter()
            .zip(classes)
            .enumerate()
            .map(|(i, (row, class))| {
                let images: u32 = row.iter().sum();
                let mistaken = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, &n)| j != i && n > 0)
                    .max_by_key(|&(j, &n)| (n, std::cmp::Reverse(j)))
                    .and_then(|(j, &n)| Some((classes.get(j)?.label.clone(), n as usize)));
                ClassAccuracy {
                    label: class.label.clone(),
                    images: images as usize,
                    top1: row.get(i).map_or(0.0, |&c| c as f32 / images.max(1) as f32),
                    mistaken_for: mistaken,
                }
            })
            .collect()
    }
}

/// Why [`Trainer::run`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All epochs done; the final model is at this path.
    Finished(PathBuf),
    /// Stopped on request or at `max_steps`; resumable from the checkpoint.
    Stopped { step: usize },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A ChaCha8 stream for a tuple of indices: independent, reproducible randomness per use.
fn stream(seed: u64, tag: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(a.wrapping_mul(1 << 32) ^ b);
    rng
}

/// The order of the training set in `epoch`.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = stream(seed, 1, epoch as u64, 0);
    for i in (1..len).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Loads, crops (randomly or centred), flips and normalises images; a file that cannot be read
/// is left out with a warning (the same files every time, so determinism holds).
fn load_batch(
    samples: &[(usize, &LabelledImage)],
    p: &Preprocess,
    augment: Option<(u64, usize)>,
    device: &Device,
) -> Result<Option<(Tensor, Tensor)>> {
    let loaded: Vec<Option<(Vec<f32>, u32)>> = samples
        .par_iter()
        .map(|&(index, sample)| {
            let image = std::fs::read(&sample.path)
                .map_err(|e| e.to_string())
                .and_then(|b| decode(&b).map_err(|e| e.to_string()));
            let image = match image {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", sample.path.display());
                    return None;
                }
            };
            let crop = match augment {
                None => resize_and_crop(&image, p),
                Some((seed, epoch)) => {
                    let mut rng = stream(seed, 2, epoch as u64, index as u64);
                    let resized = resize_shorter(&image, p.resize, p.crop);
                    let (w, h) = resized.dimensions();
                    let x = rng.random_range(0..=w - p.crop);
                    let y = rng.random_range(0..=h - p.crop);
                    let mut crop =
                        image::imageops::crop_imm(&resized, x, y, p.crop, p.crop).to_image();
                    if rng.random_bool(0.5) {
                        image::imageops::flip_horizontal_in_place(&mut crop);
                    }
                    crop
                }
            };
            Some((normalise(&crop, p), sample.label as u32))
        })
        .collect();
    let loaded: Vec<(Vec<f32>, u32)> = loaded.into_iter().flatten().collect();
    if loaded.is_empty() {
        return Ok(None);
    }
    let n = loaded.len();
    let side = p.crop as usize;
    let labels: Vec<u32> = loaded.iter().map(|(_, l)| *l).collect();
    let data: Vec<f32> = loaded.into_iter().flat_map(|(d, _)| d).collect();
    Ok(Some((
        Tensor::from_vec(data, (n, 3, side, side), device)?,
        Tensor::from_vec(labels, n, device)?,
    )))
}

/// Logits of a training pass: the differentiable ops (no switches recorded), dropout masks on
/// fc6 and fc7 when given.
pub fn forward_train(net: &ZfNet, input: &Tensor, masks: Option<&[Tensor; 2]>) -> Result<Tensor> {
    let mut x = input.clone();
    for conv in &net.convs {
        x = conv.forward(&x)?;
        if conv.spec.lrn {
            x = lrn(&x, net.lrn)?;
        }
        if conv.spec.pool {
            x = max_pool(&x, net.pool)?;
        }
    }
    let mut h = x.flatten_from(1)?;
    for (i, fc) in net.fcs.iter().enumerate() {
        h = candle_core::Module::forward(fc, &h)?;
        if i < 2 {
            h = h.relu()?;
            if let Some(m) = masks {
                h = h.broadcast_mul(&m[i])?;
            }
        }
    }
    Ok(h)
}

/// Inverted-dropout masks (`0` or `1 / (1 − p)`) for fc6 and fc7.
fn dropout_masks(
    rng: &mut ChaCha8Rng,
    n: usize,
    width: usize,
    p: f32,
    device: &Device,
) -> Result<[Tensor; 2]> {
    let keep = 1.0 / (1.0 - p);
    let mut mask = || -> Result<Tensor> {
        let v: Vec<f32> = (0..n * width)
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect();
        Ok(Tensor::from_vec(v, (n, width), device)?)
    };
    Ok([mask()?, mask()?])
}

/// A batch of logits `[n, classes]` as host rows.
fn logit_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Top-1 and top-5 counts of logit `rows` against `labels`.
fn top_counts(rows: &[Vec<f32>], labels: &[u32]) -> (usize, usize) {
    let mut top1 = 0;
    let mut top5 = 0;
    for (row, &label) in rows.iter().zip(labels) {
        let target = row[label as usize];
        let better = row.iter().filter(|&&v| v > target).count();
        top1 += usize::from(better == 0);
        top5 += usize::from(better < 5);
    }
    (top1, top5)
}

/// Top-1 / top-5 accuracy over a dataset with centre crops; `progress` gets images done.
pub fn evaluate(
    net: &ZfNet,
    set: &FolderDataset,
    p: &Preprocess,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalResult> {
    let (mut images, mut top1, mut top5) = (0, 0, 0);
    let classes = set.classes.len();
    let mut confusion = vec![vec![0u32; classes]; classes];
    let indexed: Vec<(usize, &LabelledImage)> = set.samples.iter().enumerate().collect();
    for chunk in indexed.chunks(batch.max(1)) {
        if let Some((x, labels)) = load_batch(chunk, p, None, net.device())? {
            let logits = net.forward(&x)?;
            let labels = labels.to_vec1::<u32>()?;
            let rows = logit_rows(&logits)?;
            let (a, b) = top_counts(&rows, &labels);
            for (row, &label) in rows.iter().zip(&labels) {
                let predicted = crate::ops::argmax(row).0;
                if let Some(cell) = confusion
                    .get_mut(label as usize)
                    .and_then(|r| r.get_mut(predicted))
                {
                    *cell += 1;
                }
            }
            images += labels.len();
            top1 += a;
            top5 += b;
        }
        progress(chunk.len());
    }
    if images == 0 {
        return Err(Error::Invalid(format!(
            "{}: none of the images could be read",
            set.root.display()
        )));
    }
    Ok(EvalResult {
        images,
        top1: top1 as f32 / images as f32,
        top5: top5 as f32 / images as f32,
        confusion,
    })
}

/// A training run in a directory.
pub struct Trainer {
    pub config: TrainConfig,
    pub state: RunState,
    run_dir: PathBuf,
    train: FolderDataset,
    val: Option<FolderDataset>,
    /// Parameters and momentum buffers, sorted by name.
    params: Vec<(String, Var, Tensor)>,
    net: ZfNet,
    /// The command line that started the run, for the final manifest.
    command: String,
}

/// What a resumed run may change: only the schedule still ahead of it, so that the run stays
/// equal to one started with the changed flags.
#[derive(Debug, Clone, Default)]
pub struct ScheduleChange {
    pub epochs: Option<usize>,
    pub lr_drops: Option<Vec<usize>>,
}

impl ScheduleChange {
    pub fn is_empty(&self) -> bool {
        self.epochs.is_none() && self.lr_drops.is_none()
    }

    /// `config` with the change, refused if it would alter the learning rate of any of the first
    /// `epochs_begun` epochs, which have already (at least partly) run.
    pub fn apply(&self, config: &TrainConfig, epochs_begun: usize) -> Result<TrainConfig> {
        let mut changed = config.clone();
        if let Some(epochs) = self.epochs {
            changed.epochs = epochs;
        }
        if let Some(drops) = &self.lr_drops {
            changed.lr_drops = drops.clone();
        }
        changed.validate()?;
        if let Some(epoch) = (0..epochs_begun).find(|&e| changed.lr_at(e) != config.lr_at(e)) {
            return Err(Error::Invalid(format!(
                "--lr-drops {:?} would change the learning rate of epoch {} ({} → {}), which has \
                 already run; only drops after epoch {epochs_begun} can move",
                changed.lr_drops,
                epoch + 1,
                config.lr_at(epoch),
                changed.lr_at(epoch),
            )));
        }
        Ok(changed)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = self.epochs {
            parts.push(format!("--epochs {e}"));
        }
        if let Some(d) = &self.lr_drops {
            let list: Vec<String> = d.iter().map(usize::to_string).collect();
            parts.push(format!("--lr-drops {}", list.join(",")));
        }
        parts.join(" ")
    }
}

#[derive(Serialize, Deserialize)]
struct RunFile {
    config: TrainConfig,
    classes: Vec<ClassEntry>,
    data: PathBuf,
    command: String,
}

impl Trainer {
    /// Starts a new run on `data` (with `train/` and optionally `val/`) in `run_dir`.
    pub fn create(
        data: &Path,
        run_dir: &Path,
        config: TrainConfig,
        command: String,
        device: &Device,
    ) -> Result<Trainer> {
        config.validate()?;
        if run_dir.join("config.json").exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a run: resume it (--resume) or choose another --out",
                run_dir.display()
            )));
        }
        let train = FolderDataset::discover(&data.join("train"))?;
        std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
        let run = RunFile {
            config: config.clone(),
            classes: train.classes.clone(),
            data: data.to_path_buf(),
            command: command.clone(),
        };
        let json = serde_json::to_vec_pretty(&run).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&run_dir.join("config.json"), &json)?;
        let tensors = crate::init::random_tensors_with(
            Architecture::Zfnet,
            config.channels,
            config.fc_width,
            train.classes.len(),
            config.seed,
            config.fc_init,
        )?;
        Self::assemble(
            run_dir,
            run,
            train,
            tensors,
            None,
            RunState::default(),
            device,
        )
    }

    /// Continues the run in `run_dir` from its last checkpoint (or from the start if it has none).
    /// `change` may move the end of the run and the learning-rate drops still ahead of it.
    pub fn resume(run_dir: &Path, change: &ScheduleChange, device: &Device) -> Result<Trainer> {
        let path = run_dir.join("config.json");
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Invalid(format!(
                "{} is not a training run ({}: {e})",
                run_dir.display(),
                path.display()
            ))
        })?;
        let mut run: RunFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let train = FolderDataset::with_classes(&run.data.join("train"), &run.classes)?;
        let ckpt = run_dir.join("checkpoint");
        let (tensors, momentum, state) = if ckpt.join("state.json").exists() {
            let state: RunState = serde_json::from_slice(
                &std::fs::read(ckpt.join("state.json")).map_err(io_err(&ckpt))?,
            )
            .map_err(|e| Error::Invalid(format!("{}: {e}", ckpt.display())))?;
            let all = candle_core::safetensors::load(ckpt.join("state.safetensors"), device)?;
            let (mut params, mut moments) = (HashMap::new(), HashMap::new());
            for (k, v) in all {
                if let Some(name) = k.strip_prefix("param.") {
                    params.insert(name.to_string(), v);
                } else if let Some(name) = k.strip_prefix("momentum.") {
                    moments.insert(name.to_string(), v);
                }
            }
            (params, Some(moments), state)
        } else {
            let t = crate::init::random_tensors_with(
                Architecture::Zfnet,
                run.config.channels,
                run.config.fc_width,
                run.classes.len(),
                run.config.seed,
                run.config.fc_init,
            )?;
            (t, None, RunState::default())
        };
        if !change.is_empty() {
            let begun = state.epoch + usize::from(state.batch_in_epoch > 0);
            run.config = change.apply(&run.config, begun)?;
            run.command.push_str(&format!(
                "  # then resumed at step {} with {}",
                state.step,
                change.describe()
            ));
            let json =
                serde_json::to_vec_pretty(&run).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&path, &json)?;
        }
        Self::assemble(run_dir, run, train, tensors, momentum, state, device)
    }

    fn assemble(
        run_dir: &Path,
        run: RunFile,
        train: FolderDataset,
        tensors: HashMap<String, Tensor>,
        momentum: Option<HashMap<String, Tensor>>,
        state: RunState,
        device: &Device,
    ) -> Result<Trainer> {
        let val_dir = run.data.join("val");
        let val = if run.config.val_every > 0 && val_dir.is_dir() {
            Some(FolderDataset::with_classes(&val_dir, &run.classes)?)
        } else {
            None
        };
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut params = Vec::new();
        for name in names {
            let var = Var::from_tensor(&tensors[name].to_dtype(DType::F32)?.to_device(device)?)?;
            let m = match momentum.as_ref().and_then(|m| m.get(name)) {
                Some(m) => m.to_device(device)?,
                None => var.zeros_like()?,
            };
            params.push((name.clone(), var, m));
        }
        let named: HashMap<String, Tensor> = params
            .iter()
            .map(|(n, v, _)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let net = ZfNet::from_tensors(Architecture::Zfnet, named, device)?;
        Ok(Trainer {
            config: run.config,
            state,
            run_dir: run_dir.to_path_buf(),
            train,
            val,
            params,
            net,
            command: run.command,
        })
    }

    pub fn net(&self) -> &ZfNet {
        &self.net
    }

    pub fn classes(&self) -> &[ClassEntry] {
        &self.train.classes
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.config.batch)
    }

    /// The parameters by name (for tests and export).
    pub fn parameters(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v, _)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Trains until every epoch is done, `stop` is set, or `max_steps` optimizer steps have been
    /// taken in total; writes a checkpoint before returning either way.
    pub fn run(
        &mut self,
        max_steps: Option<usize>,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Outcome> {
        let steps_per_epoch = self.steps_per_epoch();
        progress(&Progress::Started {
            total_steps: steps_per_epoch * self.config.epochs,
            steps_per_epoch,
            state: self.state.clone(),
        });
        self.truncate_logs()?;
        let mut last_checkpoint = Instant::now();
        while self.state.epoch < self.config.epochs {
            let epoch = self.state.epoch;
            let order = epoch_order(self.config.seed, epoch, self.train.len());
            let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
            while self.state.batch_in_epoch < steps_per_epoch {
                if stop.load(Ordering::Relaxed) || max_steps.is_some_and(|m| self.state.step >= m) {
                    self.checkpoint()?;
                    progress(&Progress::Checkpointed {
                        step: self.state.step,
                    });
                    return Ok(Outcome::Stopped {
                        step: self.state.step,
                    });
                }
                let start = Instant::now();
                let b = self.state.batch_in_epoch * self.config.batch;
                let batch: Vec<(usize, LabelledImage)> = order
                    [b..(b + self.config.batch).min(order.len())]
                    .iter()
                    .map(|&i| (i, self.train.samples[i].clone()))
                    .collect();
                let (loss, ok, n) = self.step(&batch, epoch)?;
                let secs = start.elapsed().as_secs_f64();
                self.state.step += 1;
                self.state.batch_in_epoch += 1;
                self.state.images_seen += n as u64;
                self.state.elapsed_s += secs;
                loss_sum += loss as f64 * n as f64;
                correct += ok;
                seen += n;
                let lr = self.config.lr_at(epoch);
                let accuracy = ok as f32 / n.max(1) as f32;
                let images_per_s = n as f64 / secs.max(1e-9);
                self.log_step(lr, loss, accuracy, images_per_s)?;
                progress(&Progress::Step {
                    state: self.state.clone(),
                    loss,
                    accuracy,
                    images_per_s,
                    lr,
                });
                if last_checkpoint.elapsed().as_secs() >= self.config.checkpoint_secs {
                    self.checkpoint()?;
                    progress(&Progress::Checkpointed {
                        step: self.state.step,
                    });
                    last_checkpoint = Instant::now();
                }
            }
            let val = match &self.val {
                Some(set) if (epoch + 1).is_multiple_of(self.config.val_every) => {
                    progress(&Progress::Validating {
                        epoch,
                        images: set.len(),
                    });
                    Some(evaluate(
                        &self.net,
                        set,
                        &self.config.preprocess,
                        self.config.micro_batch,
                        &mut |_| {},
                    )?)
                }
                _ => None,
            };
            let train_loss = (loss_sum / seen.max(1) as f64) as f32;
            let train_accuracy = correct as f32 / seen.max(1) as f32;
            self.log_epoch(epoch, train_loss, train_accuracy, val.as_ref())?;
            self.plot_curves()?;
            progress(&Progress::EpochDone {
                epoch,
                train_loss,
                train_accuracy,
                val: val.clone(),
            });
            if SNAPSHOT_EPOCHS.contains(&(epoch + 1)) {
                let path = self
                    .run_dir
                    .join("snapshots")
                    .join(format!("epoch-{:03}.safetensors", epoch + 1));
                self.export(&path, val, &format!("snapshot after epoch {}", epoch + 1))?;
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.checkpoint()?;
            last_checkpoint = Instant::now();
        }
        let path = self.run_dir.join("model.safetensors");
        let val = self.last_validation()?;
        self.export(&path, val, "final model")?;
        Ok(Outcome::Finished(path))
    }

    /// One optimizer step on `batch`: `(mean loss, correct, images)`.
    fn step(
        &mut self,
        batch: &[(usize, LabelledImage)],
        epoch: usize,
    ) -> Result<(f32, usize, usize)> {
        let batch: Vec<(usize, &LabelledImage)> = batch.iter().map(|(i, s)| (*i, s)).collect();
        let cfg = &self.config;
        let device = self.net.device().clone();
        let augment = cfg.augment.then_some((cfg.seed, epoch));
        let mut grads: Vec<Option<Tensor>> = vec![None; self.params.len()];
        let (mut loss_sum, mut correct, mut total) = (0f32, 0usize, 0usize);
        let mut micro_batches = Vec::new();
        for chunk in batch.chunks(cfg.micro_batch) {
            if let Some(b) = load_batch(chunk, &cfg.preprocess, augment, &device)? {
                micro_batches.push(b);
            }
        }
        let images: usize = micro_batches
            .iter()
            .map(|(_, y)| y.dims1().unwrap_or(0))
            .sum();
        for (m, (x, y)) in micro_batches.iter().enumerate() {
            let n = y.dims1()?;
            let mut rng = stream(cfg.seed, 3, self.state.step as u64, m as u64);
            let masks = if cfg.dropout > 0.0 {
                Some(dropout_masks(
                    &mut rng,
                    n,
                    cfg.fc_width,
                    cfg.dropout,
                    &device,
                )?)
            } else {
                None
            };
            let logits = forward_train(&self.net, x, masks.as_ref())?;
            let loss = candle_nn::loss::cross_entropy(&logits, y)?;
            // Each micro-batch's mean loss weighted by its share: the sum is the batch mean.
            let weighted = (&loss * (n as f64 / images as f64))?;
            let g = weighted.backward()?;
            for ((_, var, _), acc) in self.params.iter().zip(grads.iter_mut()) {
                if let Some(gv) = g.get(var.as_tensor()) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + gv)?,
                        None => gv.clone(),
                    });
                }
            }
            loss_sum += loss.to_scalar::<f32>()? * n as f32;
            correct += top_counts(&logit_rows(&logits)?, &y.to_vec1::<u32>()?).0;
            total += n;
        }
        if total == 0 {
            return Ok((0.0, 0, 0));
        }
        let lr = cfg.lr_at(epoch);
        for ((name, var, momentum), grad) in self.params.iter_mut().zip(grads) {
            let Some(mut g) = grad else { continue };
            // Arithmetic on a Var records a graph: without the detach, each step's momentum would
            // hold the previous step's whole update graph alive (a leak of ~1 GB a minute).
            let current = var.as_tensor().detach();
            if name.ends_with(".weight") && cfg.weight_decay > 0.0 {
                g = (g.detach() + (&current * cfg.weight_decay)?)?;
            }
            *momentum = ((&*momentum * cfg.momentum)? + g.detach())?.detach();
            let mut w = (&current - (&*momentum * lr)?)?;
            if let (Some(radius), true) = (
                cfg.clip_rms,
                name.starts_with("conv") && name.ends_with(".weight"),
            ) {
                w = clip_filters(&w, radius)?;
            }
            var.set(&w)?;
        }
        Ok((loss_sum / total as f32, correct, total))
    }

    fn checkpoint(&self) -> Result<()> {
        let dir = self.run_dir.join("checkpoint");
        let tmp = self.run_dir.join("checkpoint.partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let mut all = HashMap::new();
        for (name, var, m) in &self.params {
            all.insert(format!("param.{name}"), var.as_tensor().clone());
            all.insert(format!("momentum.{name}"), m.clone());
        }
        candle_core::safetensors::save(&all, tmp.join("state.safetensors"))?;
        let json =
            serde_json::to_vec_pretty(&self.state).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(tmp.join("state.json"), json).map_err(io_err(&tmp))?;
        // Swap directories so a crash leaves either the old or the new checkpoint whole.
        let old = self.run_dir.join("checkpoint.old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        if dir.exists() {
            std::fs::rename(&dir, &old).map_err(io_err(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        Ok(())
    }

    /// Writes the current weights and a manifest to `path`.
    pub fn export(&self, path: &Path, val: Option<EvalResult>, what: &str) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tensors = self.parameters();
        let tmp = path.with_extension("safetensors.partial");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        let manifest = Manifest {
            format: 1,
            name: format!("zfnet-{}", self.train.root.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "custom".into())),
            architecture: Architecture::Zfnet,
            fc_width: self.config.fc_width,
            classes: self.train.classes.clone(),
            preprocess: self.config.preprocess.clone(),
            trained: true,
            provenance: format!(
                "Trained from scratch by zfvis (candle), {what}: epoch {} of {}, {} steps, {} images seen. Command: {}",
                self.state.epoch + usize::from(what != "final model"),
                self.config.epochs,
                self.state.step,
                self.state.images_seen,
                self.command
            ),
            evaluation: val.map(|v| Evaluation {
                per_class: v.per_class(&self.train.classes),
                dataset: self.train.root.parent().unwrap_or(&self.train.root).join("val").display().to_string(),
                images: v.images,
                top1: v.top1,
                top5: v.top5,
            }),
        };
        manifest.save(&manifest_path(path))
    }

    fn log_step(&self, lr: f64, loss: f32, accuracy: f32, images_per_s: f64) -> Result<()> {
        let s = &self.state;
        append_csv(
            &self.run_dir.join("log.csv"),
            "step,epoch,lr,loss,accuracy,images_per_s,elapsed_s",
            &format!(
                "{},{},{lr},{loss:.5},{accuracy:.4},{images_per_s:.2},{:.1}",
                s.step,
                s.epoch + 1,
                s.elapsed_s
            ),
        )
    }

    fn log_epoch(&self, epoch: usize, loss: f32, acc: f32, val: Option<&EvalResult>) -> Result<()> {
        let (v1, v5) = val.map_or((String::new(), String::new()), |v| {
            (format!("{:.4}", v.top1), format!("{:.4}", v.top5))
        });
        append_csv(
            &self.run_dir.join("epochs.csv"),
            "epoch,step,train_loss,train_accuracy,val_top1,val_top5,elapsed_s",
            &format!(
                "{},{},{loss:.5},{acc:.4},{v1},{v5},{:.1}",
                epoch + 1,
                self.state.step,
                self.state.elapsed_s
            ),
        )
    }

    /// Redraws `curves.png` from `epochs.csv`.
    fn plot_curves(&self) -> Result<()> {
        let csv = self.run_dir.join("epochs.csv");
        let text = std::fs::read_to_string(&csv).map_err(io_err(&csv))?;
        let img = crate::plot::training_curves(&crate::plot::parse_epochs_csv(&text));
        write_atomic(&self.run_dir.join("curves.png"), &crate::render::png(&img))
    }

    fn last_validation(&self) -> Result<Option<EvalResult>> {
        let path = self.run_dir.join("epochs.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let images = self.val.as_ref().map_or(0, |v| v.len());
        Ok(text.lines().skip(1).last().and_then(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Some(EvalResult {
                images,
                top1: f.get(4)?.parse().ok()?,
                top5: f.get(5)?.parse().ok()?,
                confusion: Vec::new(),
            })
        }))
    }

    /// Drops log rows written after the checkpoint being resumed (they will be redone).
    fn truncate_logs(&self) -> Result<()> {
        for (file, key_col, limit) in [
            ("log.csv", 0, self.state.step),
            ("epochs.csv", 0, self.state.epoch),
        ] {
            let path = self.run_dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut kept = String::new();
            for (i, line) in text.lines().enumerate() {
                let keep = i == 0
                    || line
                        .split(',')
                        .nth(key_col)
                        .and_then(|v| v.parse::<usize>().ok())
                        .is_some_and(|v| v <= limit);
                if keep {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            write_atomic(&path, kept.as_bytes())?;
        }
        Ok(())
    }
}

fn append_csv(path: &Path, header: &str, row: &str) -> Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    if new {
        writeln!(f, "{header}").map_err(io_err(path))?;
    }
    writeln!(f, "{row}").map_err(io_err(path))
}

/// The paper's feature-scale clipping: rescales each filter (`[out, …]` row) whose RMS exceeds
/// `radius` down to it.
pub fn clip_filters(weight: &Tensor, radius: f32) -> Result<Tensor> {
    let out = weight.dim(0)?;
    let flat = weight.reshape((out, ()))?;
    let rms = flat.sqr()?.mean_keepdim(1)?.sqrt()?;
    let scale = (rms.recip()? * radius as f64)?.clamp(0f32, 1f32)?;
    Ok(flat.broadcast_mul(&scale)?.reshape(weight.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The optimizer state must not keep computation graphs alive from step to step: that leaked
    /// about 1 GB a minute in a real run until it was OOM-killed.
    #[test]
    fn optimizer_state_holds_no_graph_after_a_step() -> anyhow::Result<()> {
        let root = std::env::temp_dir().join(format!("zfvis-unit-graph-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for class in ["a", "b"] {
            let dir = root.join("train").join(class);
            std::fs::create_dir_all(&dir)?;
            for i in 0..2u8 {
                image::RgbImage::from_pixel(40, 40, image::Rgb([i * 90, 60, 200]))
                    .save(dir.join(format!("{i}.png")))?;
            }
        }
        let cfg = TrainConfig {
            epochs: 1,
            batch: 4,
            micro_batch: 2,
            channels: [2, 4, 4, 4, 4],
            fc_width: 8,
            val_every: 0,
            ..TrainConfig::default()
        };
        let mut t = Trainer::create(&root, &root.join("run"), cfg, "test".into(), &Device::Cpu)?;
        t.run(None, &AtomicBool::new(false), &mut |_| {})?;
        for (name, var, momentum) in &t.params {
            assert!(!momentum.track_op(), "{name}: momentum tracks a graph");
            assert!(var.as_tensor().is_variable());
        }
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }

    #[test]
    fn lr_schedule_divides_by_ten_at_each_drop() {
        let c = TrainConfig {
            lr: 0.01,
            lr_drops: vec![3, 5],
            ..TrainConfig::default()
        };
        let lrs: Vec<f64> = (0..6).map(|e| c.lr_at(e)).collect();
        // exactly the decimal values, as the logs print them
        assert_eq!(lrs, [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]);
    }

    #[test]
    fn a_resumed_schedule_may_only_move_what_lies_ahead() {
        let config = TrainConfig {
            epochs: 16,
            lr_drops: vec![11, 14],
            ..TrainConfig::default()
        };
        let shorter = ScheduleChange {
            epochs: Some(14),
            lr_drops: Some(vec![10, 13]),
        };
        let moved = shorter.apply(&config, 5).expect("epochs 1–5 keep lr 0.01");
        assert_eq!((moved.epochs, moved.lr_drops.clone()), (14, vec![10, 13]));
        assert_eq!(moved.lr_at(9), 1e-3);
        let err = shorter
            .apply(&config, 10)
            .expect_err("epoch 10 ran at 0.01");
        assert!(err.to_string().contains("epoch 10"), "{err}");
        let no_epochs = ScheduleChange {
            epochs: Some(0),
            lr_drops: None,
        };
        assert!(no_epochs.apply(&config, 0).is_err(), "validated");
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(7, 0, 100);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(7, 0, 100));
        assert_ne!(a, epoch_order(7, 1, 100));
        assert_ne!(a, epoch_order(8, 0, 100));
    }

    #[test]
    fn clipping_rescales_only_filters_above_the_radius() -> anyhow::Result<()> {
        let w = Tensor::from_vec(
            vec![0.3f32, -0.3, 0.3, 0.3, 0.01, 0.02, -0.01, 0.0],
            (2, 1, 2, 2),
            &Device::Cpu,
        )?;
        let c = clip_filters(&w, 0.1)?.reshape((2, 4))?.to_vec2::<f32>()?;
        let rms0 = (c[0].iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms0 - 0.1).abs() < 1e-6);
        assert_eq!(c[1], vec![0.01, 0.02, -0.01, 0.0]);
        Ok(())
    }
}
