//! Occlusion sweeps (Zeiler & Fergus 2013, §4.2 and Fig. 7): slide a grey square over the input
//! and record, per position, (a) the total activation of the conv5 map that is strongest on the
//! unoccluded image, (b) the probability of a chosen class, (c) the most probable class.
//!
//! Three exact implementations of the same sweep:
//! - [`Method::Naive`]: one forward pass per occluded image (the definition; the tests' reference);
//! - [`Method::Batched`]: occluded images in batches through the normal forward pass;
//! - [`Method::Incremental`]: the occluder changes only the activations inside its projective
//!   field, so every layer recomputes just that window from the unoccluded activations (conv on
//!   the window's input, LRN and pooling on the window) and the head runs batched over positions
//!   (the idea of Krypton, Nakandala et al., SIGMOD 2019).
//!
//! Grid: cell `(i, j)` puts the square's centre at pixel `(i·stride + stride/2, j·stride +
//! stride/2)`, so the cells tile the image and a heatmap cell sits over the pixels it stands for;
//! squares are clipped at the border.

mod incremental;
mod pictures;

pub use pictures::{class_color, class_legend, pictures, SweepPictures};

use crate::arch::INPUT_SIZE;
use crate::manifest::Preprocess;
use crate::model::ZfNet;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Most positions one sweep may have (e.g. stride 4 gives 56² = 3,136).
pub const MAX_POSITIONS: usize = 4096;

/// What the occluder is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    /// The dataset mean: zero after normalisation (the paper's grey square).
    #[default]
    Mean,
    /// A grey level 0–255 (all three channels).
    Grey(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OcclusionParams {
    /// Side of the square in input pixels, 1–224.
    pub size: usize,
    /// Grid step in input pixels, 1–224.
    pub stride: usize,
    pub fill: Fill,
    /// Class whose probability is mapped; `None`: the top class of the unoccluded image.
    pub class: Option<usize>,
}

impl Default for OcclusionParams {
    /// 48-px squares every 16 px: a 14×14 grid, a few seconds on two cores.
    fn default() -> Self {
        OcclusionParams {
            size: 48,
            stride: 16,
            fill: Fill::Mean,
            class: None,
        }
    }
}

impl OcclusionParams {
    /// Cells per side.
    pub fn grid(&self) -> usize {
        INPUT_SIZE.div_ceil(self.stride.max(1))
    }

    pub fn validate(&self, classes: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(1..=INPUT_SIZE).contains(&self.size) {
            return bad(format!("size must be 1–{INPUT_SIZE}, got {}", self.size));
        }
        if !(1..=INPUT_SIZE).contains(&self.stride) {
            return bad(format!(
                "stride must be 1–{INPUT_SIZE}, got {}",
                self.stride
            ));
        }
        let positions = self.grid() * self.grid();
        if positions > MAX_POSITIONS {
            return bad(format!(
                "stride {} gives {positions} positions; at most {MAX_POSITIONS} (stride ≥ 4)",
                self.stride
            ));
        }
        if let Some(c) = self.class.filter(|&c| c >= classes) {
            return bad(format!(
                "class {c} out of range: the model has {classes} classes"
            ));
        }
        Ok(())
    }

    /// The clipped square `[y0, y1) × [x0, x1)` of cell `(i, j)`.
    pub fn square(&self, i: usize, j: usize) -> (usize, usize, usize, usize) {
        let span = |k: usize| {
            let centre = (k * self.stride + self.stride / 2) as isize;
            let lo = centre - (self.size / 2) as isize;
            let lo = lo.max(0) as usize;
            let hi =
                ((centre - (self.size / 2) as isize) + self.size as isize).min(INPUT_SIZE as isize);
            (lo, hi.max(0) as usize)
        };
        let (y0, y1) = span(i);
        let (x0, x1) = span(j);
        (y0, y1, x0, x1)
    }

    /// The occluder's value in normalised units, per channel.
    fn fill_values(&self, p: &Preprocess) -> [f32; 3] {
        match self.fill {
            Fill::Mean => [0.0; 3],
            Fill::Grey(g) => std::array::from_fn(|c| p.normalize(c, [g; 3])),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Naive,
    Batched,
    Incremental,
}

impl Method {
    /// The fastest method on `device`: incremental on the CPU (it recomputes only what the
    /// occluder changes, on host memory), batched on a GPU (whole forwards in parallel).
    pub fn for_device(device: &candle_core::Device) -> Method {
        if device.is_cpu() {
            Method::Incremental
        } else {
            Method::Batched
        }
    }
}

/// A finished sweep. Grids are row-major, `grid × grid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcclusionResult {
    pub params: OcclusionParams,
    pub grid: usize,
    /// The conv5 map strongest (largest maximum) on the unoccluded image.
    pub strongest_map: usize,
    /// (a) Σ of that map's activations per position, and on the unoccluded image.
    pub activation: Vec<f32>,
    pub base_activation: f32,
    /// (b) probability of `class` per position, and on the unoccluded image.
    pub class: usize,
    pub probability: Vec<f32>,
    pub base_probability: f32,
    /// (c) most probable class per position and its probability.
    pub top_class: Vec<u32>,
    pub top_probability: Vec<f32>,
}

/// Runs a sweep over `input` (`[1, 3, 224, 224]`, normalised). `progress(done, total)` is called
/// as positions finish; returning `false` cancels the sweep ([`Error::Cancelled`]).
pub fn sweep(
    net: &ZfNet,
    preprocess: &Preprocess,
    input: &Tensor,
    params: &OcclusionParams,
    method: Method,
    progress: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<OcclusionResult> {
    params.validate(net.num_classes())?;
    let base = net.forward_trace(input)?;
    let conv5 = &base.convs[4].activation;
    let (_, maps, h5, w5) = conv5.dims4()?;
    let conv5_host = conv5
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let plane = h5 * w5;
    let strongest_map = (0..maps)
        .map(|m| crate::ops::argmax(&conv5_host[m * plane..(m + 1) * plane]).1)
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bm, bv), (m, v)| {
            if v > bv {
                (m, v)
            } else {
                (bm, bv)
            }
        })
        .0;
    let base_activation: f32 = conv5_host[strongest_map * plane..(strongest_map + 1) * plane]
        .iter()
        .sum();
    let base_probs = crate::model::softmax(&base.logits)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let class = params
        .class
        .unwrap_or_else(|| crate::ops::argmax(&base_probs).0);
    let grid = params.grid();
    let total = grid * grid;
    let fill = params.fill_values(preprocess);
    let input_host = input
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;

    // per position: (map sum, probabilities)
    let per_position: Vec<(f32, Vec<f32>)> = match method {
        Method::Naive | Method::Batched => {
            let batch = if method == Method::Naive { 1 } else { 16 };
            let mut out = Vec::with_capacity(total);
            let positions: Vec<usize> = (0..total).collect();
            for chunk in positions.chunks(batch) {
                let mut data = Vec::with_capacity(chunk.len() * input_host.len());
                for &p in chunk {
                    let mut img = input_host.clone();
                    occlude(&mut img, params.square(p / grid, p % grid), fill);
                    data.extend_from_slice(&img);
                }
                let x =
                    Tensor::from_vec(data, (chunk.len(), 3, INPUT_SIZE, INPUT_SIZE), net.device())?;
                let trace = net.forward_trace(&x)?;
                let sums = trace.convs[4]
                    .activation
                    .narrow(1, strongest_map, 1)?
                    .flatten_from(1)?
                    .sum(1)?
                    .to_vec1::<f32>()?;
                let probs = crate::model::softmax(&trace.logits)?.to_vec2::<f32>()?;
                out.extend(sums.into_iter().zip(probs));
                if !progress(out.len(), total) {
                    return Err(Error::Cancelled);
                }
            }
            out
        }
        Method::Incremental => incremental::incremental(
            net,
            &base,
            &input_host,
            params,
            fill,
            strongest_map,
            progress,
        )?,
    };
    let mut result = OcclusionResult {
        params: *params,
        grid,
        strongest_map,
        activation: Vec::with_capacity(total),
        base_activation,
        class,
        probability: Vec::with_capacity(total),
        base_probability: base_probs[class],
        top_class: Vec::with_capacity(total),
        top_probability: Vec::with_capacity(total),
    };
    for (sum, probs) in per_position {
        let (top, p) = crate::ops::argmax(&probs);
        result.activation.push(sum);
        result.probability.push(probs[class]);
        result.top_class.push(top as u32);
        result.top_probability.push(p);
    }
    Ok(result)
}

fn occlude(img: &mut [f32], (y0, y1, x0, x1): (usize, usize, usize, usize), fill: [f32; 3]) {
    let side = INPUT_SIZE;
    for (c, &v) in fill.iter().enumerate() {
        for y in y0..y1 {
            img[c * side * side + y * side + x0..c * side * side + y * side + x1].fill(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::incremental::affected;
    use super::*;

    #[test]
    fn affected_outputs_cover_every_window_touching_the_range() {
        // brute force against the definition for the layer geometries in use
        for (k, s, p, n_in) in [
            (7, 2, 1, 224),
            (3, 2, 0, 110),
            (5, 2, 0, 55),
            (3, 1, 1, 13),
            (3, 2, 0, 13),
        ] {
            let out = (n_in + 2 * p - k) / s + 1 + usize::from(k == 3 && s == 2 && p == 0);
            for a in 0..n_in {
                for b in a + 1..=(a + 9).min(n_in) {
                    let (lo, hi) = affected(a, b, k, s, p, out);
                    for o in 0..out {
                        let start = (o * s) as isize - p as isize;
                        let touches = start < b as isize && start + k as isize > a as isize;
                        assert_eq!(
                            touches,
                            (lo..hi).contains(&o),
                            "k{k} s{s} p{p} [{a},{b}) o{o}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn squares_tile_and_clip() {
        let p = OcclusionParams {
            size: 48,
            stride: 16,
            ..Default::default()
        };
        assert_eq!(p.grid(), 14);
        assert_eq!(p.square(0, 0), (0, 32, 0, 32));
        assert_eq!(p.square(13, 13), (192, 224, 192, 224));
        assert_eq!(p.square(5, 2), (64, 112, 16, 64));
        let bad = OcclusionParams { stride: 3, ..p };
        assert!(bad.validate(10).is_err(), "75² positions is too many");
        assert!(OcclusionParams { size: 0, ..p }.validate(10).is_err());
        assert!(OcclusionParams {
            class: Some(10),
            ..p
        }
        .validate(10)
        .is_err());
    }
}
