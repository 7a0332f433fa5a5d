//! Feature invariance (Zeiler & Fergus 2013, §4.3 and Fig. 5): how far the network's
//! representation moves when an image is translated, scaled or rotated.
//!
//! The paper's Fig. 5 transforms five images and plots, against the amount of each transform,
//! (columns 2–3) the Euclidean distance between the feature vectors of the original and the
//! transformed image at layer 1 and at layer 7, and (column 4) the probability of the true class.
//! Its axes give the ranges used here by default: vertical translation −60…+60 pixels, scale
//! 1…1.8, rotation 0…350 degrees. The paper's finding: small transforms move layer 1 a lot and
//! layer 7 much less (quasi-linear for translation and scale at layer 7); the output is stable
//! to translation and scale but not to rotation, except for rotationally symmetric objects.
//!
//! ## What is computed
//!
//! For an input `x` (the normalised 224×224 crop) and a transform `T_v` of amount `v`:
//!
//! ```text
//! d1(v) = ‖ φ1(x) − φ1(T_v x) ‖₂    φ1: layer 1's output (conv1 → ReLU → LRN → pool), 96×55×55
//! d7(v) = ‖ φ7(x) − φ7(T_v x) ‖₂    φ7: fc7 after its ReLU, the penultimate representation
//! p(v)  = softmax(f(T_v x))[class]   class: the given one, else the top class of x
//! ```
//!
//! `T_v` resamples the crop bilinearly about its centre: translation moves the picture down by `v`
//! pixels (up when negative), scale zooms in by `v` (the middle 224/v pixels fill the frame),
//! rotation turns it by `v` degrees anticlockwise. Pixels the transform brings in from outside the
//! crop take the dataset mean (zero after normalisation, the grey the occlusion sweeps use), where
//! the paper had the rest of the photograph; so large translations and rotations here also
//! measure the grey border's effect, which the UI says.
//!
//! All transformed copies of one image and transform go through the network as one batch.

use crate::arch::INPUT_SIZE;
use crate::model::{softmax, ZfNet};
use crate::ops::host_rows;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Most images one analysis takes (the paper plots 5).
pub const MAX_IMAGES: usize = 5;
/// Most steps per transform.
pub const MAX_STEPS: usize = 37;

/// One of the paper's three transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Vertical translation in pixels (positive: down).
    Translate,
    /// Zoom about the centre (1 = unchanged).
    Scale,
    /// Rotation in degrees, anticlockwise.
    Rotate,
}

impl Transform {
    pub const ALL: [Transform; 3] = [Transform::Translate, Transform::Scale, Transform::Rotate];

    /// The paper's range (Fig. 5's axes) and the amount that leaves the image unchanged.
    pub fn paper_range(self) -> (f32, f32) {
        match self {
            Transform::Translate => (-60.0, 60.0),
            Transform::Scale => (1.0, 1.8),
            Transform::Rotate => (0.0, 350.0),
        }
    }

    /// `steps` evenly spaced amounts over the paper's range, ends included.
    pub fn amounts(self, steps: usize) -> Vec<f32> {
        let (lo, hi) = self.paper_range();
        if steps < 2 {
            return vec![lo];
        }
        (0..steps)
            .map(|i| lo + (hi - lo) * i as f32 / (steps - 1) as f32)
            .collect()
    }
}

/// `T_v` applied to a normalised CHW image `[3, side, side]` (see the module docs).
pub fn transform_image(data: &[f32], side: usize, t: Transform, v: f32) -> Vec<f32> {
    let plane = side * side;
    let c = (side as f32 - 1.0) / 2.0;
    // the source point for each output pixel: the inverse transform
    let (cos, sin) = {
        let r = v.to_radians();
        (r.cos(), r.sin())
    };
    let source = |y: f32, x: f32| -> (f32, f32) {
        match t {
            Transform::Translate => (y - v, x),
            Transform::Scale => (c + (y - c) / v, c + (x - c) / v),
            // anticlockwise on screen (y down): the inverse turns clockwise
            Transform::Rotate => {
                let (dy, dx) = (y - c, x - c);
                (c + dy * cos + dx * sin, c - dy * sin + dx * cos)
            }
        }
    };
    let mut out = vec![0f32; data.len()];
    for y in 0..side {
        for x in 0..side {
            let (sy, sx) = source(y as f32, x as f32);
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let at = |ch: usize, yy: f32, xx: f32| -> f32 {
                if yy < 0.0 || xx < 0.0 || yy > (side - 1) as f32 || xx > (side - 1) as f32 {
                    0.0
                } else {
                    data[ch * plane + yy as usize * side + xx as usize]
                }
            };
            for ch in 0..3 {
                out[ch * plane + y * side + x] = (1.0 - fy)
                    * ((1.0 - fx) * at(ch, y0, x0) + fx * at(ch, y0, x0 + 1.0))
                    + fy * ((1.0 - fx) * at(ch, y0 + 1.0, x0) + fx * at(ch, y0 + 1.0, x0 + 1.0));
            }
        }
    }
    out
}

/// One transform's curves for one image, one entry per amount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub transform: Transform,
    /// The transform amounts (pixels, factor or degrees).
    pub amounts: Vec<f32>,
    /// ‖φ1(x) − φ1(T x)‖₂.
    pub layer1: Vec<f32>,
    /// ‖φ7(x) − φ7(T x)‖₂.
    pub layer7: Vec<f32>,
    /// Probability of the image's class.
    pub probability: Vec<f32>,
    /// The most probable class of each transformed image.
    pub top_class: Vec<u32>,
}

/// All curves of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageCurves {
    /// The class whose probability is plotted.
    pub class: usize,
    /// Its probability on the untransformed image.
    pub base_probability: f32,
    pub curves: Vec<Curve>,
}

/// Layer-1 output, fc7 and class probabilities of a batch, on the host: `(φ1, φ7, p)` with one
/// row per image.
type Features = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn features(net: &ZfNet, batch: &Tensor) -> Result<Features> {
    let trace = net.forward_trace(batch)?;
    Ok((
        host_rows(trace.convs[0].output())?,
        host_rows(&trace.fc7)?,
        host_rows(&softmax(&trace.logits)?)?,
    ))
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt() as f32
}

/// Checks one request's sizes before any work: 1–[`MAX_IMAGES`] images, 2–[`MAX_STEPS`] steps,
/// a class the model has (`n_classes`). [`invariance`] checks the same.
pub fn check(images: usize, steps: usize, class: Option<usize>, n_classes: usize) -> Result<()> {
    if images == 0 || images > MAX_IMAGES {
        return Err(Error::Config(format!(
            "at most {MAX_IMAGES} images (this one and {} others), got {images}",
            MAX_IMAGES - 1
        )));
    }
    if !(2..=MAX_STEPS).contains(&steps) {
        return Err(Error::Config(format!(
            "steps must be 2–{MAX_STEPS}, got {steps}"
        )));
    }
    match class {
        Some(c) if c >= n_classes => Err(Error::Config(format!(
            "class {c} out of range: the model has {n_classes} classes"
        ))),
        _ => Ok(()),
    }
}

/// The Fig. 5 curves of each input (`[1, 3, 224, 224]`, normalised) with `steps` amounts per
/// transform; `classes[i]` is image `i`'s class (`None`: its top class). `progress(done, total)`
/// counts transformed images; returning `false` cancels ([`Error::Cancelled`]).
pub fn invariance(
    net: &ZfNet,
    inputs: &[Tensor],
    classes: &[Option<usize>],
    steps: usize,
    progress: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<Vec<ImageCurves>> {
    check(inputs.len(), steps, None, net.num_classes())?;
    for class in classes {
        check(inputs.len(), steps, *class, net.num_classes())?;
    }
    let total = inputs.len() * Transform::ALL.len() * steps;
    let mut done = 0;
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let dims = input.dims();
        if dims != [1, 3, INPUT_SIZE, INPUT_SIZE] {
            return Err(Error::Shape(format!("invariance input {dims:?}")));
        }
        let data = input
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        let (f1, f7, p) = features(net, input)?;
        let class = match classes.get(i).copied().flatten() {
            Some(c) => c,
            None => crate::ops::argmax(&p[0]).0,
        };
        let mut curves = Vec::with_capacity(3);
        for t in Transform::ALL {
            let amounts = t.amounts(steps);
            let batch: Vec<f32> = amounts
                .par_iter()
                .flat_map_iter(|&v| transform_image(&data, INPUT_SIZE, t, v))
                .collect();
            let batch = Tensor::from_vec(
                batch,
                (amounts.len(), 3, INPUT_SIZE, INPUT_SIZE),
                input.device(),
            )?;
            let (g1, g7, q) = features(net, &batch)?;
            curves.push(Curve {
                transform: t,
                layer1: g1.iter().map(|g| distance(&f1[0], g)).collect(),
                layer7: g7.iter().map(|g| distance(&f7[0], g)).collect(),
                probability: q.iter().map(|q| q[class]).collect(),
                top_class: q.iter().map(|q| crate::ops::argmax(q).0 as u32).collect(),
                amounts,
            });
            done += steps;
            if !progress(done, total) {
                return Err(Error::Cancelled);
            }
        }
        out.push(ImageCurves {
            class,
            base_probability: p[0][class],
            curves,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(side: usize) -> Vec<f32> {
        (0..3 * side * side)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn identity_amounts_leave_the_image_alone() {
        let side = 9;
        let img = ramp(side);
        for (t, v) in [
            (Transform::Translate, 0.0),
            (Transform::Scale, 1.0),
            (Transform::Rotate, 0.0),
        ] {
            let out = transform_image(&img, side, t, v);
            assert!(
                out.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-6),
                "{t:?}"
            );
        }
    }

    #[test]
    fn whole_pixel_moves_are_exact() {
        let side = 8;
        let img = ramp(side);
        let plane = side * side;
        let down = transform_image(&img, side, Transform::Translate, 3.0);
        let turned = transform_image(&img, side, Transform::Rotate, 90.0);
        for ch in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    let want = if y >= 3 {
                        img[ch * plane + (y - 3) * side + x]
                    } else {
                        0.0
                    };
                    assert_eq!(down[ch * plane + y * side + x], want);
                    // anticlockwise by 90°: the right column becomes the top row
                    let src = img[ch * plane + x * side + (side - 1 - y)];
                    assert!((turned[ch * plane + y * side + x] - src).abs() < 1e-4);
                }
            }
        }
        // zoom ×2 about the centre of a 9×9 image: the centre stays, pixel (0, 0) samples (2, 2)
        let (side, img) = (9, ramp(9));
        let zoom = transform_image(&img, side, Transform::Scale, 2.0);
        assert_eq!(zoom[4 * side + 4], img[4 * side + 4]);
        assert_eq!(zoom[0], img[2 * side + 2]);
    }

    #[test]
    fn the_paper_ranges_are_sampled_end_to_end() {
        assert_eq!(Transform::Rotate.amounts(15)[1], 25.0);
        assert_eq!(Transform::Translate.amounts(3), vec![-60.0, 0.0, 60.0]);
        assert_eq!(*Transform::Scale.amounts(5).last().unwrap_or(&0.0), 1.8);
    }
}
