//! Cross-channel local response normalisation (Krizhevsky et al. 2012, used by ZFNet on layers 1–2).
//!
//! For an activation `a` of shape `[n, c, h, w]`, with window `size`:
//!
//! ```text
//! b[c] = a[c] / (k + alpha / size · Σ_{c' = c − ⌊size/2⌋}^{c + ⌊(size−1)/2⌋} a[c']²)^beta
//! ```
//!
//! channels outside `0..c` count as zero. This is PyTorch's `nn.LocalResponseNorm` (alpha divided by
//! the window size), which the pytorchcv ZFNet weights were trained with; the paper uses size 5,
//! alpha 1e-4, beta 0.75, k 2.

use super::host_nchw;
use crate::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// LRN hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrnParams {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl LrnParams {
    /// The paper's values: size 5, alpha 1e-4, beta 0.75, k 2.
    pub const ZFNET: LrnParams = LrnParams {
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 2.0,
    };
}

/// Applies LRN across channels to an NCHW tensor.
pub fn lrn(x: &Tensor, p: LrnParams) -> Result<Tensor> {
    let (data, [n, c, h, w], device) = host_nchw(x)?;
    let plane = h * w;
    let mut out = vec![0f32; data.len()];
    let before = p.size / 2;
    let after = (p.size - 1) / 2;
    let scale = p.alpha / p.size as f32;
    // One task per image; within it, a running sum of squares over the channel window per pixel,
    // so the cost is O(c·h·w) whatever the window size.
    out.par_chunks_mut(c * plane)
        .zip(data.par_chunks(c * plane))
        .for_each(|(out_img, img)| {
            let mut window = vec![0f32; plane];
            // window holds Σ a² over channels [ch − before, ch + after] ∩ [0, c)
            for ch in 0..after.min(c) {
                add_squares(&mut window, &img[ch * plane..(ch + 1) * plane], 1.0);
            }
            for ch in 0..c {
                let entering = ch + after;
                if entering < c {
                    add_squares(
                        &mut window,
                        &img[entering * plane..(entering + 1) * plane],
                        1.0,
                    );
                }
                let src = &img[ch * plane..(ch + 1) * plane];
                let dst = &mut out_img[ch * plane..(ch + 1) * plane];
                for ((d, &a), &s) in dst.iter_mut().zip(src).zip(&window) {
                    *d = a * (p.k + scale * s).powf(-p.beta);
                }
                if ch >= before {
                    let leaving = ch - before;
                    add_squares(
                        &mut window,
                        &img[leaving * plane..(leaving + 1) * plane],
                        -1.0,
                    );
                }
            }
        });
    let _ = n;
    Ok(Tensor::from_vec(out, (n, c, h, w), &device)?)
}

fn add_squares(window: &mut [f32], channel: &[f32], sign: f32) {
    for (s, &a) in window.iter_mut().zip(channel) {
        *s += sign * a * a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Straight from the formula, no running sums.
    fn lrn_naive(a: &[f32], c: usize, plane: usize, p: LrnParams) -> Vec<f32> {
        let mut out = vec![0f32; a.len()];
        for ch in 0..c {
            let lo = ch.saturating_sub(p.size / 2);
            let hi = (ch + (p.size - 1) / 2).min(c - 1);
            for i in 0..plane {
                let s: f32 = (lo..=hi).map(|q| a[q * plane + i].powi(2)).sum();
                out[ch * plane + i] =
                    a[ch * plane + i] / (p.k + p.alpha / p.size as f32 * s).powf(p.beta);
            }
        }
        out
    }

    #[test]
    fn matches_the_formula_for_every_window_size() -> anyhow::Result<()> {
        let (c, h, w) = (7, 3, 4);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 3.0)
            .collect();
        let x = Tensor::from_vec(data.clone(), (1, c, h, w), &Device::Cpu)?;
        for size in 1..=6 {
            let p = LrnParams {
                size,
                alpha: 0.1,
                ..LrnParams::ZFNET
            };
            let got = lrn(&x, p)?.flatten_all()?.to_vec1::<f32>()?;
            let want = lrn_naive(&data, c, h * w, p);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "size {size}: {g} vs {e}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn with_paper_constants_small_inputs_are_scaled_by_k_to_the_minus_beta() -> anyhow::Result<()> {
        let x = Tensor::from_vec(vec![1e-3f32; 5], (1, 5, 1, 1), &Device::Cpu)?;
        let y = lrn(&x, LrnParams::ZFNET)?.flatten_all()?.to_vec1::<f32>()?;
        let expected = 1e-3 * 2f32.powf(-0.75);
        assert!(y.iter().all(|v| (v - expected).abs() < 1e-9));
        Ok(())
    }
}
