//! The run directory: `config.json` (the [`RunFile`]), the atomic `checkpoint/`, the CSV logs and
//! their plot, snapshots and the final model with its manifest.

use super::{io_err, EvalResult, Trainer};
use crate::manifest::{ClassEntry, Evaluation, Manifest};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
pub(crate) struct RunFile {
    pub(crate) config: super::TrainConfig,
    pub(crate) classes: Vec<ClassEntry>,
    pub(crate) data: PathBuf,
    pub(crate) command: String,
}

impl Trainer {
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let dir = self.run_dir.join("checkpoint");
        let tmp = self.run_dir.join("checkpoint.partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let mut all = HashMap::new();
        for p in &self.params {
            all.insert(format!("param.{}", p.name), p.var.as_tensor().clone());
            all.insert(format!("momentum.{}", p.name), p.momentum.clone());
        }
        candle_core::safetensors::save(&all, tmp.join("state.safetensors"))?;
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| Error::Run(e.to_string()))?;
        std::fs::write(tmp.join("state.json"), json).map_err(io_err(&tmp))?;
        for file in ["state.safetensors", "state.json"] {
            crate::fsutil::sync_file(&tmp.join(file))?;
        }
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

    /// Where the start of a run begun with `init_from` (or `layer_starts`) came from: each file's
    /// own manifest's provenance (beside it, same stem, `.json`), so a fine-tuned model keeps its
    /// whole history; and what stayed frozen.
    fn start_provenance(&self) -> String {
        let earlier = |file: &Path| {
            Manifest::load(&file.with_extension("json"))
                .map(|m| format!(" Its own provenance: {}", m.provenance))
                .unwrap_or_default()
        };
        let c = &self.config;
        let mut out = String::new();
        if let Some(init) = &c.init_from {
            let frozen = match c.frozen_conv_epochs {
                0 => String::new(),
                n => format!(", the conv stack frozen for the first {n} epoch(s)"),
            };
            out.push_str(&format!(
                " Started from the tensors of {} (--init-from; all others from the seeded start){frozen}.{}",
                init.display(),
                earlier(init)
            ));
        }
        for s in &c.layer_starts {
            out.push_str(&format!(
                " {} started from {} (--init-layer-from).{}",
                s.layer,
                s.from.display(),
                earlier(&s.from)
            ));
        }
        if c.frozen_conv_layers > 0 {
            out.push_str(&format!(
                " The first {} conv layer(s) stayed frozen for the whole run.",
                c.frozen_conv_layers
            ));
        }
        out
    }

    /// Writes the current weights and a manifest to `path`.
    pub fn export(&self, path: &Path, val: Option<EvalResult>, what: &str) -> Result<()> {
        let tensors = self.parameters();
        let manifest = Manifest {
            format: 1,
            layers: None,
            channels: None,
            name: format!("{}-{}", self.config.architecture.name(), self.train.root.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "custom".into())),
            architecture: self.config.architecture,
            fc_width: self.config.fc_width,
            classes: self.train.classes.clone(),
            preprocess: self.config.preprocess.clone(),
            trained: true,
            provenance: format!(
                "{} by zfvis (candle), {what}: epoch {} of {}, {} steps, {} images seen. Command: {}{}",
                if self.config.init_from.is_some() || !self.config.layer_starts.is_empty() { "Trained" } else { "Trained from scratch" },
                self.state.epoch + usize::from(what != "final model"),
                self.config.epochs,
                self.state.step,
                self.state.images_seen,
                self.command,
                self.start_provenance(),
            ),
            evaluation: val.map(|v| Evaluation {
                per_class: v.per_class(&self.train.classes),
                dataset: self.train.root.parent().unwrap_or(&self.train.root).join("val").display().to_string(),
                images: v.images,
                top1: v.top1,
                top5: v.top5,
            }),
            conv1: match tensors.get("conv1.weight") {
                Some(w) => Some(crate::filter_stats::filter_stats(w)?),
                None => None,
            },
        };
        crate::manifest::save_model(path, &tensors, candle_core::DType::F32, &manifest)
    }

    pub(crate) fn log_step(
        &self,
        lr: f64,
        loss: f32,
        accuracy: f32,
        images_per_s: f64,
    ) -> Result<()> {
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

    pub(crate) fn log_epoch(
        &self,
        epoch: usize,
        loss: f32,
        acc: f32,
        val: Option<&EvalResult>,
    ) -> Result<()> {
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
    pub(crate) fn plot_curves(&self) -> Result<()> {
        let csv = self.run_dir.join("epochs.csv");
        let text = std::fs::read_to_string(&csv).map_err(io_err(&csv))?;
        let img = crate::plot::training_curves(&crate::plot::parse_epochs_csv(&text));
        crate::fsutil::write_atomic(&self.run_dir.join("curves.png"), &crate::render::png(&img))
    }

    pub(crate) fn last_validation(&self) -> Result<Option<EvalResult>> {
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
    pub(crate) fn truncate_logs(&self) -> Result<()> {
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
            crate::fsutil::write_atomic(&path, kept.as_bytes())?;
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
