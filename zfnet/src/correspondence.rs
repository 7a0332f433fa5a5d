//! Correspondence analysis (Zeiler & Fergus 2013, §4.2, Fig. 8 and Table 1): does the network
//! implicitly locate the same object part in different images?
//!
//! The paper masks the same part (left eye, right eye, nose) in 5 frontal dog images, and as a
//! control random regions of the object. For each image `i` and layer `l`:
//!
//! ```text
//! ε_i^l = x_i^l − x̃_i^l        features of the original minus those of the masked image
//! Δ_l   = Σ_{i,j=1, i≠j}^{5} H( sign(ε_i^l), sign(ε_j^l) )
//! ```
//!
//! with `H` the Hamming distance. A lower Δ means masking the part changed the representation in
//! a more consistent way across images. Table 1 reports Δ between 0.067 and 0.107, so `H` there is
//! the *fraction* of components whose signs differ and Δ the *mean* over image pairs (a sum of 20
//! raw Hamming distances over 9,216 or 4,096 components would be thousands): this module computes
//! exactly that, so its numbers compare with Table 1. `sign` is −1, 0 or +1; a component both
//! images leave at zero (a unit off before and after masking) agrees.
//!
//! Reported per part, as `mean ± standard deviation` of the pair values: over the `n(n−1)/2`
//! pairs (H is symmetric, so ordered pairs give the same mean), and for the random control
//! over the pairs of every repetition, each repetition drawing a new position per image for a
//! box of that image's first part's size.
//!
//! Layers: l = 5 is conv5's pooled output (256×6×6, what fc6 reads), l = 7 is fc7 after its
//! ReLU. Masks are filled with the dataset mean (zero after normalisation), as in the occlusion
//! sweeps.

use crate::arch::INPUT_SIZE;
use crate::model::ZfNet;
use crate::ops::host_rows;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Most images one analysis takes.
pub const MAX_IMAGES: usize = 10;
/// Most parts (besides the random control).
pub const MAX_PARTS: usize = 6;
/// Most repetitions of the random control.
pub const MAX_REPETITIONS: usize = 50;

/// A mask `[x0, x1) × [y0, y1)` in the 224×224 crop's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl MaskBox {
    pub fn validate(&self) -> Result<()> {
        let side = INPUT_SIZE as u32;
        if self.x0 >= self.x1 || self.y0 >= self.y1 || self.x1 > side || self.y1 > side {
            return Err(Error::Config(format!(
                "box x {}..{}, y {}..{} is empty or leaves the {side}×{side} image",
                self.x0, self.x1, self.y0, self.y1
            )));
        }
        Ok(())
    }

    fn size(&self) -> (u32, u32) {
        (self.x1 - self.x0, self.y1 - self.y0)
    }
}

/// One part: its name and one box per image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub boxes: Vec<MaskBox>,
}

/// Δ at one layer: mean and standard deviation over pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub mean: f32,
    pub std: f32,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub part: String,
    pub layer5: Delta,
    pub layer7: Delta,
}

/// A saved set-up: image files (in `folder` of a dataset) and the parts' boxes on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub about: String,
    /// The class folder (WordNet id) holding the files.
    pub folder: String,
    pub files: Vec<String>,
    pub parts: Vec<Part>,
}

/// The paper's set-up on Imagenette: 5 frontal English springer images of its val set with
/// boxes over the left eye, right eye and nose (`zfnet/assets/springer-preset.json`).
pub fn springer_preset() -> Result<Preset> {
    serde_json::from_str(include_str!("../assets/springer-preset.json"))
        .map_err(|e| Error::Config(format!("the springer preset does not parse: {e}")))
}

/// The fraction of components where `sign(a)` and `sign(b)` differ.
pub fn sign_hamming(a: &[f32], b: &[f32]) -> f32 {
    let differ = a
        .iter()
        .zip(b)
        .filter(|(x, y)| sign(**x) != sign(**y))
        .count();
    differ as f32 / a.len().max(1) as f32
}

fn sign(v: f32) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// H over all unordered pairs of the difference vectors.
pub fn pair_values(eps: &[Vec<f32>]) -> Vec<f32> {
    let mut out = Vec::new();
    for i in 0..eps.len() {
        for j in i + 1..eps.len() {
            out.push(sign_hamming(&eps[i], &eps[j]));
        }
    }
    out
}

fn mean_std(values: &[f32]) -> Delta {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    Delta {
        mean: mean as f32,
        std: var.sqrt() as f32,
    }
}

/// One host row per image.
type Rows = Vec<Vec<f32>>;

/// conv5 pooled and fc7 of a batch.
fn features(net: &ZfNet, batch: &Tensor) -> Result<(Rows, Rows)> {
    let trace = net.forward_trace(batch)?;
    Ok((host_rows(trace.convs[4].output())?, host_rows(&trace.fc7)?))
}

/// `data` (`[3, 224, 224]`, normalised) with `b` set to the mean (zero).
pub fn masked(data: &[f32], b: MaskBox) -> Vec<f32> {
    let side = INPUT_SIZE;
    let mut out = data.to_vec();
    for ch in 0..3 {
        for y in b.y0 as usize..b.y1 as usize {
            let row = ch * side * side + y * side;
            out[row + b.x0 as usize..row + b.x1 as usize].fill(0.0);
        }
    }
    out
}

/// Checks a request's sizes before any work: 2–[`MAX_IMAGES`] images, 1–[`MAX_PARTS`] parts with
/// one valid box per image each, at most [`MAX_REPETITIONS`] random draws. [`correspondence`]
/// checks the same.
pub fn check(images: usize, parts: &[Part], repetitions: usize) -> Result<()> {
    let n = images;
    if !(2..=MAX_IMAGES).contains(&n) {
        return Err(Error::Config(format!(
            "give 2–{MAX_IMAGES} images, got {n}"
        )));
    }
    if parts.is_empty() || parts.len() > MAX_PARTS {
        return Err(Error::Config(format!(
            "give 1–{MAX_PARTS} parts, got {}",
            parts.len()
        )));
    }
    if repetitions > MAX_REPETITIONS {
        return Err(Error::Config(format!(
            "repetitions must be 0–{MAX_REPETITIONS}, got {repetitions}"
        )));
    }
    for p in parts {
        if p.boxes.len() != n {
            return Err(Error::Config(format!(
                "part \"{}\" has {} boxes for {n} images",
                p.name,
                p.boxes.len()
            )));
        }
        for b in &p.boxes {
            b.validate()
                .map_err(|e| Error::Config(format!("part \"{}\": {e}", p.name)))?;
        }
    }
    Ok(())
}

/// Table 1 for `inputs` (each `[1, 3, 224, 224]`, normalised) and `parts`, plus a `random` row
/// from `repetitions` draws (none when 0) seeded by `seed`. `progress(done, total)` counts masked
/// images; returning `false` cancels.
pub fn correspondence(
    net: &ZfNet,
    inputs: &[Tensor],
    parts: &[Part],
    repetitions: usize,
    seed: u64,
    progress: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<Vec<Row>> {
    let n = inputs.len();
    check(n, parts, repetitions)?;
    let data: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| Ok(t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?))
        .collect::<Result<_>>()?;
    let side = INPUT_SIZE;
    let stack = |images: Vec<Vec<f32>>| -> Result<Tensor> {
        let k = images.len();
        Ok(Tensor::from_vec(
            images.concat(),
            (k, 3, side, side),
            inputs[0].device(),
        )?)
    };
    let (base5, base7) = features(net, &stack(data.clone())?)?;
    let total = n * (parts.len() + repetitions);
    let mut done = 0;
    // the Δ pair values of one set of boxes, one per image
    let mut run = |boxes: &[MaskBox]| -> Result<(Vec<f32>, Vec<f32>)> {
        let batch = data.iter().zip(boxes).map(|(d, &b)| masked(d, b)).collect();
        let (m5, m7) = features(net, &stack(batch)?)?;
        let eps = |base: &[Vec<f32>], m: &[Vec<f32>]| -> Vec<Vec<f32>> {
            base.iter()
                .zip(m)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
                .collect()
        };
        done += n;
        if !progress(done, total) {
            return Err(Error::Cancelled);
        }
        Ok((
            pair_values(&eps(&base5, &m5)),
            pair_values(&eps(&base7, &m7)),
        ))
    };
    let mut rows = Vec::with_capacity(parts.len() + 1);
    for p in parts {
        let (v5, v7) = run(&p.boxes)?;
        rows.push(Row {
            part: p.name.clone(),
            layer5: mean_std(&v5),
            layer7: mean_std(&v7),
        });
    }
    if repetitions > 0 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut all5, mut all7) = (Vec::new(), Vec::new());
        for _ in 0..repetitions {
            let boxes: Vec<MaskBox> = parts[0]
                .boxes
                .iter()
                .map(|b| {
                    let (w, h) = b.size();
                    let x0 = rng.random_range(0..=side as u32 - w);
                    let y0 = rng.random_range(0..=side as u32 - h);
                    MaskBox {
                        x0,
                        y0,
                        x1: x0 + w,
                        y1: y0 + h,
                    }
                })
                .collect();
            let (v5, v7) = run(&boxes)?;
            all5.extend(v5);
            all7.extend(v7);
        }
        rows.push(Row {
            part: "random".into(),
            layer5: mean_std(&all5),
            layer7: mean_std(&all7),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hamming_counts_sign_disagreements_with_zero_as_its_own_sign() {
        let a = [1.0, -2.0, 0.0, 0.5];
        let b = [3.0, 2.0, 0.0, 0.0];
        assert_eq!(sign_hamming(&a, &b), 0.5);
        assert_eq!(sign_hamming(&a, &a), 0.0);
    }

    #[test]
    fn pairs_and_their_statistics() {
        let eps = vec![vec![1.0, 1.0], vec![1.0, -1.0], vec![-1.0, -1.0]];
        assert_eq!(pair_values(&eps), vec![0.5, 1.0, 0.5]);
        let d = mean_std(&pair_values(&eps));
        assert!((d.mean - 2.0 / 3.0).abs() < 1e-6);
        assert!((d.std - (1f32 / 18.0).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn the_springer_preset_has_a_box_per_image_for_each_part() {
        let p = springer_preset().unwrap();
        assert_eq!(p.files.len(), 5);
        let names: Vec<&str> = p.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["left eye", "right eye", "nose"]);
        for part in &p.parts {
            assert_eq!(part.boxes.len(), 5);
            assert!(part.boxes.iter().all(|b| b.validate().is_ok()));
        }
    }

    #[test]
    fn boxes_must_lie_inside_the_image() {
        let ok = MaskBox {
            x0: 0,
            y0: 10,
            x1: 224,
            y1: 20,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            MaskBox {
                x0: 5,
                y0: 0,
                x1: 5,
                y1: 10,
            },
            MaskBox {
                x0: 0,
                y0: 0,
                x1: 225,
                y1: 10,
            },
            MaskBox {
                x0: 30,
                y0: 0,
                x1: 20,
                y1: 10,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
