//! What a run is: its configuration, the schedule a resume may still move, and where it stands.

use crate::arch::Architecture;
use crate::init::FcInit;
use crate::manifest::Preprocess;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

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
    /// ZFNet (the default) or AlexNet in pytorchcv's layout (the paper's Fig. 6 comparison).
    #[serde(default = "zfnet_architecture")]
    pub architecture: Architecture,
    pub channels: [usize; 5],
    pub fc_width: usize,
    /// He by default: see [`FcInit`] for why not the paper's N(0, 0.01).
    #[serde(default)]
    pub fc_init: FcInit,
    /// Standard deviation of conv1's normal start (`None`: He, `√(2/147)` ≈ 0.117). A He start sits
    /// above the clipping radius, is clipped at once and barely moves; a small start (1e-3) lets
    /// the learned part of conv1 outgrow its random start, as in the paper.
    #[serde(default)]
    pub conv1_std: Option<f32>,
    /// Standard deviation of every conv layer's normal start (`None`: He); `conv1_std`, when set,
    /// overrides it for conv1. The paper's start is 0.01, meant for its [-128, 128] input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_std: Option<f32>,
    /// A safetensors file whose tensors replace the seeded start where their names match (shapes
    /// must agree): e.g. a conv-only snapshot, the fc layers then starting fresh.
    #[serde(default)]
    pub init_from: Option<std::path::PathBuf>,
    /// The first this many epochs train only the fc layers: the conv stack is frozen, so that a
    /// fresh classifier's first, large gradients do not disturb features taken by `init_from`.
    #[serde(default)]
    pub frozen_conv_epochs: usize,
    /// Layers whose start is taken from another file, after `init_from` (e.g. conv1 from an
    /// earlier snapshot of the same run): each takes that file's tensors named `<layer>.*`.
    #[serde(default)]
    pub layer_starts: Vec<LayerStart>,
    /// The first this many conv layers stay frozen for the whole run (their output is detached:
    /// no gradient, no weight decay, no clipping), e.g. 1 keeps a learned conv1 as it is.
    #[serde(default)]
    pub frozen_conv_layers: usize,
    pub preprocess: Preprocess,
    /// Random crops and flips (off: centre crops, for tests).
    pub augment: bool,
    /// Seconds between checkpoints (one is also written at every epoch's end).
    pub checkpoint_secs: u64,
    /// Validate every this many epochs (0: never).
    pub val_every: usize,
}

/// One layer's start taken from a file (`--init-layer-from LAYER=FILE`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerStart {
    /// A layer name of the network (`conv1` … `fc8`).
    pub layer: String,
    pub from: std::path::PathBuf,
}

/// Runs written before the architecture was recorded are ZFNet runs.
fn zfnet_architecture() -> Architecture {
    Architecture::Zfnet
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
            architecture: Architecture::Zfnet,
            channels: Architecture::Zfnet.paper_channels(),
            fc_width: crate::init::DEFAULT_FC_WIDTH,
            fc_init: FcInit::He,
            conv1_std: None,
            conv_std: None,
            init_from: None,
            frozen_conv_epochs: 0,
            layer_starts: Vec::new(),
            frozen_conv_layers: 0,
            preprocess: Preprocess::imagenet(),
            augment: true,
            checkpoint_secs: 120,
            val_every: 1,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
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
        if self.architecture == Architecture::AlexnetTorchvision {
            return bad("training supports zfnet and alexnet (pytorchcv's layout)".into());
        }
        if self.fc_width == 0 || self.fc_width > 16_384 {
            return bad(format!("fc width must be 1–16384, got {}", self.fc_width));
        }
        if !(self.lr > 0.0 && self.lr < 10.0) {
            return bad(format!("learning rate must be in (0, 10), got {}", self.lr));
        }
        for (flag, std) in [("conv1", self.conv1_std), ("conv", self.conv_std)] {
            if let Some(std) = std {
                if !(std > 0.0 && std <= 1.0) {
                    return bad(format!("{flag} std must be in (0, 1], got {std}"));
                }
            }
        }
        if self.frozen_conv_epochs > self.epochs {
            return bad(format!(
                "frozen conv epochs ({}) exceed the run's {} epochs",
                self.frozen_conv_epochs, self.epochs
            ));
        }
        let convs = self.channels.len();
        if self.frozen_conv_layers > convs {
            return bad(format!(
                "frozen conv layers ({}) exceed the network's {convs}",
                self.frozen_conv_layers
            ));
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
            return Err(Error::Config(format!(
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

    pub(crate) fn describe(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
