//! Cross-channel local response normalisation (Krizhevsky et al. 2012, used by ZFNet on layers 1–2).
//!
//! For an activation `a` of shape `[n, c, h, w]`, with window `size`:
//!
//! ```text
//! b[c] = a[c] · D[c]^−beta,   D[c] = k + alpha / size · Σ_{c' = c − ⌊size/2⌋}^{c + ⌊(size−1)/2⌋} a[c']²
//! ```
//!
//! channels outside `0..c` count as zero. This is PyTorch's `nn.LocalResponseNorm` (alpha divided by
//! the window size), which the pytorchcv ZFNet weights were trained with; the paper uses size 5,
//! alpha 1e-4, beta 0.75, k 2.
//!
//! The gradient, with `W(i)` the window of channel `i`:
//!
//! ```text
//! ∂L/∂a[j] = g[j] · D[j]^−beta − 2 · beta · alpha / size · a[j] · Σ_{i : j ∈ W(i)} g[i] · a[i] · D[i]^(−beta−1)
//! ```

use super::host_nchw;
use crate::Result;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Pixels per forward task (4 KB of each plane).
const PIXEL_BLOCK: usize = 1024;

/// LRN hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

    /// The channels in channel `ch`'s window, of `c`.
    #[inline(always)]
    fn window(&self, ch: usize, c: usize) -> std::ops::RangeInclusive<usize> {
        ch.saturating_sub(self.size / 2)..=(ch + (self.size - 1) / 2).min(c - 1)
    }

    /// `d^−beta`, with a fast path for the paper's 0.75 (`powf` dominates the op otherwise).
    #[inline(always)]
    fn pow_neg_beta(&self, d: f32) -> f32 {
        if self.beta == 0.75 {
            let r = d.sqrt();
            1.0 / (r * r.sqrt())
        } else {
            d.powf(-self.beta)
        }
    }
}

/// Applies LRN across channels to an NCHW tensor, differentiably: a candle custom op on the CPU,
/// [`super::portable::lrn`] on other devices.
pub fn lrn(x: &Tensor, p: LrnParams) -> Result<Tensor> {
    if super::use_portable(x) {
        return super::portable::lrn(x, p);
    }
    super::apply_cpu(x, LrnOp(p))
}

/// `Σ a²` over channel `ch`'s window, for the pixels `px` of one image `[c, plane]`, into `sums`.
/// Summed directly (at most `size` planes), in the same order wherever it is used, so the full
/// forward, the occlusion patches and the backward pass agree to the bit.
#[inline(always)]
fn window_sums(
    img: &[f32],
    ch: usize,
    (c, plane): (usize, usize),
    px: Range<usize>,
    p: LrnParams,
    sums: &mut Vec<f32>,
) {
    sums.clear();
    sums.resize(px.len(), 0.0);
    for q in p.window(ch, c) {
        for (s, &a) in sums.iter_mut().zip(&img[q * plane..][px.clone()]) {
            *s += a * a;
        }
    }
}

/// `D` for every element of one image `[c, plane]`.
fn denominators(img: &[f32], c: usize, plane: usize, p: LrnParams) -> Vec<f32> {
    let scale = p.alpha / p.size as f32;
    let mut sums = Vec::with_capacity(plane);
    let mut out = vec![0f32; c * plane];
    for (ch, d) in out.chunks_mut(plane).enumerate() {
        window_sums(img, ch, (c, plane), 0..plane, p, &mut sums);
        for (d, &s) in d.iter_mut().zip(&sums) {
            *d = p.k + scale * s;
        }
    }
    out
}

/// Channel `ch` of one image's LRN output at pixels `px` into `out` (`px.len()` values); `sums`
/// is scratch space.
#[inline(always)]
fn forward_channel(
    img: &[f32],
    ch: usize,
    (c, plane): (usize, usize),
    px: Range<usize>,
    p: LrnParams,
    sums: &mut Vec<f32>,
    out: &mut [f32],
) {
    let scale = p.alpha / p.size as f32;
    window_sums(img, ch, (c, plane), px.clone(), p, sums);
    for ((o, &a), &s) in out.iter_mut().zip(&img[ch * plane..][px]).zip(sums.iter()) {
        *o = a * p.pow_neg_beta(p.k + scale * s);
    }
}

super::simd::dispatch!(fn forward_channel_wide(
    img: &[f32],
    ch: usize,
    shape: (usize, usize),
    px: Range<usize>,
    p: LrnParams,
    sums: &mut Vec<f32>,
    out: &mut [f32],
) = forward_channel);

pub(crate) fn forward_image(img: &[f32], out: &mut [f32], c: usize, plane: usize, p: LrnParams) {
    let mut sums = Vec::with_capacity(plane);
    for (ch, o) in out.chunks_mut(plane).enumerate() {
        forward_channel_wide(img, ch, (c, plane), 0..plane, p, &mut sums, o);
    }
}

fn backward_image(
    img: &[f32],
    grad: &[f32],
    out: &mut [f32],
    c: usize,
    plane: usize,
    p: LrnParams,
) {
    let (before, after) = (p.size / 2, (p.size - 1) / 2);
    let d = denominators(img, c, plane, p);
    // t[i] = g[i]·a[i]·D[i]^(−beta−1)
    let t: Vec<f32> = grad
        .iter()
        .zip(img)
        .zip(&d)
        .map(|((&g, &a), &d)| g * a * p.pow_neg_beta(d) / d)
        .collect();
    // j ∈ W(i) ⇔ i ∈ [j − after, j + before]: a running sum of t over that window.
    let mut window = vec![0f32; plane];
    let add = |window: &mut [f32], ch: usize, sign: f32| {
        for (s, &v) in window.iter_mut().zip(&t[ch * plane..(ch + 1) * plane]) {
            *s += sign * v;
        }
    };
    for ch in 0..before.min(c) {
        add(&mut window, ch, 1.0);
    }
    let factor = 2.0 * p.beta * p.alpha / p.size as f32;
    for ch in 0..c {
        if ch + before < c {
            add(&mut window, ch + before, 1.0);
        }
        let range = ch * plane..(ch + 1) * plane;
        for ((((o, &g), &a), &d), &s) in out[range.clone()]
            .iter_mut()
            .zip(&grad[range.clone()])
            .zip(&img[range.clone()])
            .zip(&d[range])
            .zip(&window)
        {
            *o = g * p.pow_neg_beta(d) - factor * a * s;
        }
        if ch >= after {
            add(&mut window, ch - after, -1.0);
        }
    }
}

/// The gradient of [`lrn`] at input `x` applied to `grad` (both `[n, c, h, w]`): the formula in
/// the module docs; autograd's backward of [`lrn`] and the gradient / guided-backprop views.
pub fn lrn_backward(x: &Tensor, grad: &Tensor, p: LrnParams) -> Result<Tensor> {
    if grad.dims() != x.dims() {
        return Err(crate::Error::Shape(format!(
            "lrn_backward: gradient {:?} vs input {:?}",
            grad.dims(),
            x.dims()
        )));
    }
    let (data, [_, c, h, w], device) = host_nchw(x)?;
    let (g, _, _) = host_nchw(grad)?;
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(c * h * w)
        .zip(data.par_chunks(c * h * w))
        .zip(g.par_chunks(c * h * w))
        .for_each(|((o, img), g)| backward_image(img, g, o, c, h * w, p));
    Ok(Tensor::from_vec(out, x.shape(), &device)?)
}

struct LrnOp(LrnParams);

impl CustomOp1 for LrnOp {
    fn name(&self) -> &'static str {
        "zfnet-lrn"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("lrn: contiguous f32 input expected"),
        };
        let (_, c, h, w) = l.shape().dims4()?;
        let (plane, p) = (h * w, self.0);
        let mut out = vec![0f32; data.len()];
        // one task per block of pixels of an image, through every channel: a channel's window
        // is read from L1 where a task per channel plane read each plane from L3 `size` times;
        // and a lone image still uses every thread
        let blocks = plane.div_ceil(PIXEL_BLOCK);
        let dst = super::SharedMut(out.as_mut_ptr());
        (0..data.len() / (c * plane) * blocks)
            .into_par_iter()
            .for_each_init(Vec::new, |sums, t| {
                let (i, b) = (t / blocks, t % blocks);
                let px = b * PIXEL_BLOCK..((b + 1) * PIXEL_BLOCK).min(plane);
                let img = &data[i * c * plane..][..c * plane];
                for ch in 0..c {
                    // SAFETY: task (i, b) writes the pixels `px` of image i's planes only:
                    // disjoint across tasks and inside `out` (i < n, ch < c, px ⊂ 0..plane).
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.ptr().add((i * c + ch) * plane + px.start),
                            px.len(),
                        )
                    };
                    forward_channel_wide(img, ch, (c, plane), px.clone(), p, sums, o)
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g =
            lrn_backward(arg, grad, self.0).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(Some(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{assert_gradients_match, numeric_gradient};
    use candle_core::{Device, Var};

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

    fn sample(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3)
            .collect()
    }

    #[test]
    fn matches_the_formula_for_every_window_size() -> anyhow::Result<()> {
        let (c, h, w) = (7, 3, 4);
        let data: Vec<f32> = sample(c * h * w).iter().map(|v| v * 10.0).collect();
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

    /// Planes larger than a task's pixel block, two images: the op (tasks by pixel block) equals
    /// the formula and, bit for bit, `forward_image` (one image, whole planes; the occlusion
    /// patches' path).
    #[test]
    fn pixel_blocks_equal_whole_planes() -> anyhow::Result<()> {
        let (n, c, h, w) = (2, 6, 37, 41);
        let plane = h * w;
        assert!(plane > PIXEL_BLOCK && plane % PIXEL_BLOCK != 0);
        let data = sample(n * c * plane);
        let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu)?;
        let p = LrnParams::ZFNET;
        let got = lrn(&x, p)?.flatten_all()?.to_vec1::<f32>()?;
        for (i, img) in data.chunks(c * plane).enumerate() {
            let mut whole = vec![0f32; c * plane];
            forward_image(img, &mut whole, c, plane, p);
            assert!(whole == got[i * c * plane..][..c * plane], "image {i}");
            for (g, e) in whole.iter().zip(lrn_naive(img, c, plane, p)) {
                assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0), "{g} vs {e}");
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

    /// The analytic gradient against central finite differences of the naive formula in f64-free
    /// f32 arithmetic, for odd and even windows and a strong alpha so the cross terms matter.
    #[test]
    fn gradient_matches_finite_differences() -> anyhow::Result<()> {
        let (n, c, h, w) = (2, 6, 2, 3);
        let data = sample(n * c * h * w);
        let probe: Vec<f32> = (0..data.len())
            .map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.25)
            .collect();
        for (size, beta) in [(5, 0.75), (4, 0.6), (1, 0.75)] {
            let p = LrnParams {
                size,
                alpha: 0.5,
                beta,
                k: 1.0,
            };
            let x = Var::from_vec(data.clone(), (n, c, h, w), &Device::Cpu)?;
            let probe_t = Tensor::from_vec(probe.clone(), (n, c, h, w), &Device::Cpu)?;
            let grads = (lrn(&x, p)? * &probe_t)?.sum_all()?.backward()?;
            let analytic = grads
                .get(&x)
                .expect("gradient")
                .flatten_all()?
                .to_vec1::<f32>()?;
            let numeric = numeric_gradient(&data, 1e-2, |v| {
                Ok((0..n)
                    .flat_map(|i| lrn_naive(&v[i * c * h * w..(i + 1) * c * h * w], c, h * w, p))
                    .zip(&probe)
                    .map(|(a, &b)| a as f64 * b as f64)
                    .sum())
            })?;
            assert_gradients_match(
                &analytic,
                &numeric,
                |n| 2e-3 * n.abs().max(1.0),
                &format!("size {size} beta {beta}"),
            );
        }
        Ok(())
    }
}
