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

mod config;
mod data;
mod eval;
mod optim;
mod run_dir;
mod start;

pub use config::{LayerStart, RunState, ScheduleChange, TrainConfig, SNAPSHOT_EPOCHS};
pub use data::epoch_order;
pub use eval::{evaluate, EvalResult};
pub use optim::{clip_filters, Param, Sgd};

use crate::dataset::{FolderDataset, LabelledImage};
use crate::manifest::ClassEntry;
use crate::model::ZfNet;
use crate::ops::lrn::lrn;
use crate::ops::maxpool::max_pool;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use data::{dropout_masks, load_batch, stream};
use eval::{logit_rows, top_counts};
use run_dir::RunFile;
use start::initial_tensors;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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

/// Why [`Trainer::run`] returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All epochs done; the final model is at this path.
    Finished(PathBuf),
    /// Stopped on request or at `max_steps`; resumable from the checkpoint.
    Stopped { step: usize },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Logits of a training pass: the differentiable ops (no switches recorded), dropout masks on
/// fc6 and fc7 when given. The output of the first `frozen_convs` conv layers is detached, so the
/// backward pass stops above them and they get no gradient (all of them: only fc learns).
pub fn forward_train(
    net: &ZfNet,
    input: &Tensor,
    masks: Option<&[Tensor; 2]>,
    frozen_convs: usize,
) -> Result<Tensor> {
    let mut x = input.clone();
    for (i, conv) in net.convs.iter().enumerate() {
        x = conv.forward(&x)?;
        if let Some(params) = conv.spec.lrn {
            x = lrn(&x, params)?;
        }
        if let Some(pool) = conv.spec.pool {
            x = max_pool(&x, pool)?;
        }
        if i + 1 == frozen_convs {
            x = x.detach();
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

/// A training run in a directory.
pub struct Trainer {
    pub config: TrainConfig,
    pub state: RunState,
    pub(crate) run_dir: PathBuf,
    pub(crate) train: FolderDataset,
    pub(crate) val: Option<FolderDataset>,
    /// Parameters and momentum buffers, sorted by name.
    pub(crate) params: Vec<Param>,
    net: ZfNet,
    /// The command line that started the run, for the final manifest.
    pub(crate) command: String,
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
            return Err(Error::Run(format!(
                "{} already holds a run: resume it (--resume) or choose another --out",
                run_dir.display()
            )));
        }
        let train = FolderDataset::discover(&data.join("train"))?;
        // before anything is written: a start file that does not fit leaves no half-made run
        let tensors = initial_tensors(&config, train.classes.len())?;
        std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
        let run = RunFile {
            config: config.clone(),
            classes: train.classes.clone(),
            data: data.to_path_buf(),
            command: command.clone(),
        };
        let json = serde_json::to_vec_pretty(&run).map_err(|e| Error::Run(e.to_string()))?;
        crate::fsutil::write_atomic(&run_dir.join("config.json"), &json)?;
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
            Error::Run(format!(
                "{} is not a training run ({}: {e})",
                run_dir.display(),
                path.display()
            ))
        })?;
        let mut run: RunFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Run(format!("{}: {e}", path.display())))?;
        let train = FolderDataset::with_classes(&run.data.join("train"), &run.classes)?;
        let ckpt = run_dir.join("checkpoint");
        let (tensors, momentum, state) = if ckpt.join("state.json").exists() {
            let state: RunState = serde_json::from_slice(
                &std::fs::read(ckpt.join("state.json")).map_err(io_err(&ckpt))?,
            )
            .map_err(|e| Error::Run(format!("{}: {e}", ckpt.display())))?;
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
            let t = initial_tensors(&run.config, run.classes.len())?;
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
            let json = serde_json::to_vec_pretty(&run).map_err(|e| Error::Run(e.to_string()))?;
            crate::fsutil::write_atomic(&path, &json)?;
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
            params.push(Param {
                name: name.clone(),
                var,
                momentum: m,
            });
        }
        let named: HashMap<String, Tensor> = params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect();
        let net = ZfNet::from_tensors(run.config.architecture, named, device)?;
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
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
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
            let frozen = if epoch < cfg.frozen_conv_epochs {
                self.net.convs.len()
            } else {
                cfg.frozen_conv_layers
            };
            let logits = forward_train(&self.net, x, masks.as_ref(), frozen)?;
            let loss = candle_nn::loss::cross_entropy(&logits, y)?;
            // Each micro-batch's mean loss weighted by its share: the sum is the batch mean.
            let weighted = (&loss * (n as f64 / images as f64))?;
            let g = weighted.backward()?;
            for (param, acc) in self.params.iter().zip(grads.iter_mut()) {
                if let Some(gv) = g.get(param.var.as_tensor()) {
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
        let sgd = Sgd {
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            clip_rms: cfg.clip_rms,
        };
        sgd.step(&mut self.params, grads, cfg.lr_at(epoch))?;
        Ok((loss_sum / total as f32, correct, total))
    }
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
        for p in &t.params {
            assert!(
                !p.momentum.track_op(),
                "{}: momentum tracks a graph",
                p.name
            );
            assert!(p.var.as_tensor().is_variable());
        }
        // the net evaluated between steps holds the variables themselves: the conv kernels then
        // find their rearranged weights by content, never a stale copy by tensor id
        assert!(t.net().convs.iter().all(|c| c.weight.is_variable()));
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
