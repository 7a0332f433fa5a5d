//! Data for training: seeded random streams, the epoch order, batches of cropped and flipped
//! images, dropout masks. Everything random is drawn from a stream keyed by what it is for, so
//! a resumed run draws exactly what an uninterrupted one would.

use crate::dataset::LabelledImage;
use crate::manifest::Preprocess;
use crate::preprocess::{decode, normalise, resize_and_crop, resize_shorter};
use crate::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// A ChaCha8 stream for a tuple of indices: independent, reproducible randomness per use.
pub(crate) fn stream(seed: u64, tag: u64, a: u64, b: u64) -> ChaCha8Rng {
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
pub(crate) fn load_batch(
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

/// Inverted-dropout masks (`0` or `1 / (1 − p)`) for fc6 and fc7.
pub(crate) fn dropout_masks(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
