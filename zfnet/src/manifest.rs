//! The model manifest: a JSON file beside the safetensors weights (`X.safetensors` ↔ `X.json`)
//! saying what the weights are, what the classes are called and how to feed the network.

use crate::arch::{Architecture, ConvSpec, Layout};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Manifest format version, currently 1.
    pub format: u32,
    pub name: String,
    pub architecture: Architecture,
    /// Each conv layer's geometry (kernel, stride, padding, LRN, pool) when it is not the
    /// family's preset: an imported graph's own ([`Manifest::layout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<[ConvSpec; 5]>,
    /// conv1…conv5 widths, checked against the weights when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<[usize; 5]>,
    /// Width of fc6 and fc7 (4096 in the paper).
    pub fc_width: usize,
    /// Output classes in logit order.
    pub classes: Vec<ClassEntry>,
    pub preprocess: Preprocess,
    /// False for a seeded random init: the API and UI say so.
    pub trained: bool,
    /// Where the weights came from, in one or two sentences.
    pub provenance: String,
    /// Top-1 / top-5 accuracy on a named validation set, when measured by `zfvis eval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// How learned conv1 looks (low-frequency share, anisotropy, dead filters), recorded by
    /// `zfvis eval --record` ([`crate::filter_stats`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv1: Option<crate::filter_stats::FilterStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassEntry {
    pub wnid: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub dataset: String,
    pub images: usize,
    pub top1: f32,
    pub top5: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassAccuracy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassAccuracy {
    pub label: String,
    pub images: usize,
    pub top1: f32,
    /// The class its images were most often taken for, and how many.
    pub mistaken_for: Option<(String, usize)>,
}

/// Resize the shorter side, centre-crop, scale each pixel to `[0, pixel_scale]`, subtract mean
/// and divide by std, channels in `channel_order` (mean and std are in that order and scale).
/// PyTorch models: RGB, scale 1, ImageNet statistics; Caffe-born ones (the ONNX zoo's): BGR,
/// scale 255, mean pixel subtracted, std 1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preprocess {
    pub resize: u32,
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    #[serde(default, skip_serializing_if = "ChannelOrder::is_rgb")]
    pub channel_order: ChannelOrder,
    #[serde(default = "unit_scale", skip_serializing_if = "is_unit_scale")]
    pub pixel_scale: f32,
}

/// The order of the colour channels the network reads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

impl ChannelOrder {
    fn is_rgb(&self) -> bool {
        *self == ChannelOrder::Rgb
    }
}

fn unit_scale() -> f32 {
    1.0
}

fn is_unit_scale(s: &f32) -> bool {
    *s == 1.0
}

impl Preprocess {
    /// ImageNet statistics with resize 256 → centre crop 224, as pytorchcv's ZFNet expects.
    pub fn imagenet() -> Self {
        Preprocess {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            pixel_scale: 1.0,
        }
    }

    /// The paper's input (section 3: "the input images are roughly in the [-128,128] range"): RGB
    /// pixels 0–255 with the ImageNet mean pixel subtracted, no division. Conv1's gradient is then
    /// about 55 times larger than with unit-variance input: the regime in which the paper needed
    /// feature-scale clipping.
    pub fn paper_pixels() -> Self {
        Preprocess {
            mean: [123.675, 116.28, 103.53],
            std: [1.0, 1.0, 1.0],
            pixel_scale: 255.0,
            ..Preprocess::imagenet()
        }
    }

    /// Caffe's convention (the ONNX zoo's ZFNet-512 and BVLC AlexNet): BGR, 0–255, the ImageNet
    /// mean pixel subtracted (B 104, G 117, R 123), no division.
    pub fn caffe() -> Self {
        Preprocess {
            resize: 256,
            crop: 224,
            mean: [104.0, 117.0, 123.0],
            std: [1.0, 1.0, 1.0],
            channel_order: ChannelOrder::Bgr,
            pixel_scale: 255.0,
        }
    }

    /// The RGB channel (0 red, 1 green, 2 blue) that network input channel `c` reads.
    pub fn source_channel(&self, c: usize) -> usize {
        match self.channel_order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => 2 - c,
        }
    }

    /// Puts `[…, 3, plane]` data (projections, conv1 filters) from the network's channel order
    /// into RGB for display.
    pub fn to_rgb_order(&self, data: &mut [f32], plane: usize) {
        if self.channel_order == ChannelOrder::Bgr && plane > 0 {
            for group in data.chunks_exact_mut(3 * plane) {
                let (first, rest) = group.split_at_mut(plane);
                first.swap_with_slice(&mut rest[plane..]);
            }
        }
    }

    /// Network input channel `c` of a pixel whose RGB bytes are `rgb`.
    #[inline]
    pub fn normalize(&self, c: usize, rgb: [u8; 3]) -> f32 {
        let v = rgb[self.source_channel(c)] as f32 / 255.0 * self.pixel_scale;
        (v - self.mean[c]) / self.std[c]
    }

    /// The 0–255 intensity (unclamped) that network input channel `c` value `value` stands for.
    #[inline]
    pub fn denormalize(&self, c: usize, value: f32) -> f32 {
        (value * self.std[c] + self.mean[c]) / self.pixel_scale * 255.0
    }
}

/// The 1000 ImageNet-1k classes in logit order (from timm's data files, Apache-2.0; see
/// `assets/imagenet1k/SOURCE.md`): WordNet id, label, all WordNet lemmas per line.
const IMAGENET1K_TSV: &str = include_str!("../assets/imagenet1k/classes.tsv");

/// The 1000 ImageNet-1k classes, in the logit order of ImageNet models (pytorchcv, torchvision).
pub fn imagenet1k_classes() -> Vec<ClassEntry> {
    IMAGENET1K_TSV
        .lines()
        .filter_map(|line| {
            let mut cols = line.split('\t');
            Some(ClassEntry {
                wnid: cols.next()?.into(),
                label: cols.next()?.into(),
            })
        })
        .collect()
}

/// The ten Imagenette classes, in the order of their WordNet ids (the folder order), labelled
/// as in [`imagenet1k_classes`].
pub fn imagenette_classes() -> Vec<ClassEntry> {
    const WNIDS: [&str; 10] = [
        "n01440764",
        "n02102040",
        "n02979186",
        "n03000684",
        "n03028079",
        "n03394916",
        "n03417042",
        "n03425413",
        "n03445777",
        "n03888257",
    ];
    let all = imagenet1k_classes();
    WNIDS
        .iter()
        .map(|w| {
            all.iter()
                .find(|c| c.wnid == *w)
                .cloned()
                .unwrap_or(ClassEntry {
                    wnid: (*w).into(),
                    label: (*w).into(),
                })
        })
        .collect()
}

/// Classes from a text file, one per line in logit order: `wnid<TAB>label[<TAB>…]`, or just a
/// label (its wnid is then empty). Blank lines and `#` comments are skipped.
pub fn classes_from_file(path: &Path) -> Result<Vec<ClassEntry>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let classes: Vec<ClassEntry> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| match line.split_once('\t') {
            Some((wnid, rest)) => ClassEntry {
                wnid: wnid.trim().into(),
                label: rest.split('\t').next().unwrap_or(rest).trim().into(),
            },
            None => ClassEntry {
                wnid: String::new(),
                label: line.trim().into(),
            },
        })
        .collect();
    if classes.is_empty() {
        return Err(Error::Manifest {
            path: path.display().to_string(),
            message: "no classes in the file (one per line: wnid<TAB>label, or a label)".into(),
        });
    }
    Ok(classes)
}

/// The manifest path that belongs to a weights file.
pub fn manifest_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Writes a model: `tensors` as `dtype` to `path` (safetensors) and `manifest` beside it. The
/// weights go to a temporary name, the manifest into place, then the weights: an interrupted or
/// failed write leaves no weights file that a server would load.
pub fn save_model(
    path: &Path,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    dtype: candle_core::DType,
    manifest: &Manifest,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let tensors = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let tmp = crate::fsutil::temp_path(path);
    candle_core::safetensors::save(&tensors, &tmp)?;
    if let Err(e) = manifest.save(&manifest_path(path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::fsutil::commit(&tmp, path)
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Manifest {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        manifest.validate().map_err(|message| Error::Manifest {
            path: path.display().to_string(),
            message,
        })?;
        Ok(manifest)
    }

    /// Writes the manifest (atomically: a temporary file, synced, then renamed).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(path, (text + "\n").as_bytes())
    }

    /// The network's geometry: the recorded layers, else the family's preset.
    pub fn layout(&self) -> Layout {
        Layout {
            family: self.architecture,
            convs: self.layers.unwrap_or(self.architecture.conv_specs()),
        }
    }

    /// Fails when recorded conv widths differ from the weights'.
    pub fn check_channels(&self, weights: &[usize; 5], path: &Path) -> Result<()> {
        match self.channels {
            Some(want) if want != *weights => Err(Error::Weights(format!(
                "{}: the conv layers are {weights:?} wide but the manifest says {want:?}",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.format != 1 {
            return Err(format!("unsupported manifest format {}", self.format));
        }
        if self.classes.is_empty() {
            return Err("no classes".into());
        }
        if self.fc_width == 0 {
            return Err("fc_width must be positive".into());
        }
        if self.preprocess.crop as usize != crate::arch::INPUT_SIZE {
            return Err(format!(
                "crop must be {} (the network's input size), not {}",
                crate::arch::INPUT_SIZE,
                self.preprocess.crop
            ));
        }
        if self.preprocess.resize < self.preprocess.crop {
            return Err("resize must be at least crop".into());
        }
        if self.preprocess.std.iter().any(|s| *s <= 0.0) {
            return Err("std must be positive".into());
        }
        if !(self.preprocess.pixel_scale > 0.0 && self.preprocess.pixel_scale.is_finite()) {
            return Err("pixel_scale must be positive".into());
        }
        let layout = self.layout();
        for (i, spec) in layout.convs.iter().enumerate() {
            if spec.kernel == 0 || spec.stride == 0 {
                return Err(format!("conv{}: kernel and stride must be positive", i + 1));
            }
            if spec.pool.is_some_and(|p| p.kernel == 0 || p.stride == 0) {
                return Err(format!(
                    "conv{}: pool size and stride must be positive",
                    i + 1
                ));
            }
            if spec.lrn.is_some_and(|l| l.size == 0) {
                return Err(format!("conv{}: LRN size must be positive", i + 1));
            }
        }
        if layout
            .spatial_sizes()
            .iter()
            .any(|(o, p)| *o == 0 || *p == Some(0))
        {
            return Err(format!(
                "the layers leave nothing of a {}×{} input: {:?}",
                crate::arch::INPUT_SIZE,
                crate::arch::INPUT_SIZE,
                layout.spatial_sizes()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_input_spans_about_minus_128_to_128() {
        let p = Preprocess::paper_pixels();
        for c in 0..3 {
            let (black, white) = (p.normalize(c, [0; 3]), p.normalize(c, [255; 3]));
            assert!((-124.0..=-103.0).contains(&black), "{c}: {black}");
            assert!((131.0..=152.0).contains(&white), "{c}: {white}");
            assert!((p.denormalize(c, white) - 255.0).abs() < 1e-3);
        }
        // unit-variance input, for contrast, spans about ±2.5: some 55 times less
        let q = Preprocess::imagenet();
        assert!(q.normalize(0, [255; 3]) - q.normalize(0, [0; 3]) < 4.5);
    }
}
