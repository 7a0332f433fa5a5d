//! How much a bank of first-layer filters looks learned rather than random.
//!
//! For a filter `w[c][y][x]` (`C` input channels, `K×K` taps) take the 2-D DFT of each channel,
//!
//! ```text
//! F_c(kx, ky) = Σ_y Σ_x w[c][y][x] · e^{−2πi (kx·x + ky·y) / K},   kx, ky ∈ {−⌊K/2⌋, …, ⌊K/2⌋}
//! ```
//!
//! and its energy summed over channels, `E(k) = Σ_c |F_c(k)|²`. DC (`k = 0`) is left out of every
//! figure: a colour blob's mean says nothing about spatial structure.
//!
//! - **Low-frequency share**: `Σ_{k ∈ L} E(k) / Σ_{k ≠ 0} E(k)` with `L` the 8 bins with
//!   `|kx| ≤ 1, |ky| ≤ 1` other than DC. White noise spreads its energy evenly, so a random filter
//!   scores `8 / (K² − 1)` (0.167 for 7×7); smooth colour blobs, ramps and edges score near 1.
//! - **Orientation anisotropy**: with `θ(k) = atan2(ky, kx)`,
//!   `|Σ_{k ≠ 0} E(k) · e^{2iθ(k)}| / Σ_{k ≠ 0} E(k)`: 1 for a grating or a straight edge (all
//!   energy on one line through the origin; `2θ` makes `k` and `−k` agree), ≈ 0 for an isotropic
//!   blob, ≈ 0.1 for random 7×7×3 filters. An ImageNet-trained conv1 of ZFNet's shape scores ≈ 0.58.
//! - A filter is **dead** when its RMS is below 5% of the bank's median RMS.
//!
//! Each figure is the mean over the filters of the bank.

use crate::{Error, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Anisotropy above which a filter counts as oriented (an edge or a grating rather than a blob).
pub const ORIENTED_ABOVE: f32 = 0.5;
/// RMS, as a fraction of the median filter's, under which a filter counts as dead.
pub const DEAD_BELOW: f32 = 0.05;

/// Summary statistics of a filter bank (see the module docs for the definitions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FilterStats {
    pub filters: usize,
    /// Mean low-frequency share of the non-DC energy.
    pub low_freq_share: f32,
    /// Mean orientation anisotropy.
    pub anisotropy: f32,
    /// Fraction of filters with anisotropy above [`ORIENTED_ABOVE`].
    pub oriented_fraction: f32,
    /// Filters whose RMS is below [`DEAD_BELOW`] of the median filter's.
    pub dead_filters: usize,
}

/// Low-frequency share and anisotropy of one filter, `w` laid out `[channels][k][k]`.
pub fn filter_spectrum_stats(w: &[f32], channels: usize, k: usize) -> (f32, f32) {
    debug_assert_eq!(w.len(), channels * k * k);
    let half = (k / 2) as isize;
    let (mut total, mut low, mut re2, mut im2) = (0f64, 0f64, 0f64, 0f64);
    for ky in -half..=(k as isize - 1 - half) {
        for kx in -half..=(k as isize - 1 - half) {
            if kx == 0 && ky == 0 {
                continue;
            }
            let mut energy = 0f64;
            for c in 0..channels {
                let (mut re, mut im) = (0f64, 0f64);
                for y in 0..k {
                    for x in 0..k {
                        let phase = -std::f64::consts::TAU
                            * (kx as f64 * x as f64 + ky as f64 * y as f64)
                            / k as f64;
                        let v = f64::from(w[(c * k + y) * k + x]);
                        re += v * phase.cos();
                        im += v * phase.sin();
                    }
                }
                energy += re * re + im * im;
            }
            total += energy;
            if kx.abs() <= 1 && ky.abs() <= 1 {
                low += energy;
            }
            let theta2 = 2.0 * (ky as f64).atan2(kx as f64);
            re2 += energy * theta2.cos();
            im2 += energy * theta2.sin();
        }
    }
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    (
        (low / total) as f32,
        ((re2 * re2 + im2 * im2).sqrt() / total) as f32,
    )
}

/// Statistics of a conv weight `[out, in, k, k]` (square kernels).
pub fn filter_stats(weight: &Tensor) -> Result<FilterStats> {
    let (out, channels, kh, kw) = weight.dims4()?;
    if kh != kw || out == 0 {
        return Err(Error::Shape(format!(
            "filter statistics need square kernels and at least one filter, got {:?}",
            weight.dims()
        )));
    }
    let rows = weight
        .to_dtype(DType::F32)?
        .reshape((out, channels * kh * kw))?
        .to_vec2::<f32>()?;
    let per: Vec<(f32, f32)> = rows
        .iter()
        .map(|w| filter_spectrum_stats(w, channels, kh))
        .collect();
    let mut rms: Vec<f32> = rows
        .iter()
        .map(|w| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt())
        .collect();
    let dead_floor = {
        let mut sorted = rms.clone();
        sorted.sort_by(f32::total_cmp);
        sorted[sorted.len() / 2] * DEAD_BELOW
    };
    rms.retain(|&r| r < dead_floor);
    let n = out as f32;
    Ok(FilterStats {
        filters: out,
        low_freq_share: per.iter().map(|p| p.0).sum::<f32>() / n,
        anisotropy: per.iter().map(|p| p.1).sum::<f32>() / n,
        oriented_fraction: per.iter().filter(|p| p.1 > ORIENTED_ABOVE).count() as f32 / n,
        dead_filters: rms.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    const K: usize = 7;

    fn grey(f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        (0..3)
            .flat_map(|_| (0..K).flat_map(move |y| (0..K).map(move |x| (y, x))))
            .map(|(y, x)| f(y, x))
            .collect()
    }

    #[test]
    fn a_grating_along_x_is_all_low_frequency_and_fully_oriented() {
        let w = grey(|_, x| (std::f32::consts::TAU * x as f32 / K as f32).cos());
        let (share, aniso) = filter_spectrum_stats(&w, 3, K);
        assert!((share - 1.0).abs() < 1e-5, "{share}");
        assert!((aniso - 1.0).abs() < 1e-5, "{aniso}");
        // the same grating along y, and diagonally, are just as oriented
        let w = grey(|y, _| (std::f32::consts::TAU * y as f32 / K as f32).cos());
        assert!((filter_spectrum_stats(&w, 3, K).1 - 1.0).abs() < 1e-5);
        let w = grey(|y, x| (std::f32::consts::TAU * (x + y) as f32 / K as f32).cos());
        assert!((filter_spectrum_stats(&w, 3, K).1 - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_checkerboard_is_high_frequency() {
        let w = grey(|y, x| if (x + y) % 2 == 0 { 1.0 } else { -1.0 });
        let (share, _) = filter_spectrum_stats(&w, 3, K);
        assert!((share - 0.005).abs() < 0.002, "{share}");
    }

    #[test]
    fn an_isotropic_blob_has_no_orientation() {
        let w = grey(|y, x| {
            let (dy, dx) = (y as f32 - 3.0, x as f32 - 3.0);
            (-(dx * dx + dy * dy) / 4.0).exp()
        });
        let (share, aniso) = filter_spectrum_stats(&w, 3, K);
        assert!(aniso < 0.01, "{aniso}");
        assert!(share > 0.5, "{share}");
    }

    #[test]
    fn random_filters_score_as_the_issue_measured() -> anyhow::Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 960;
        let w: Vec<f32> = (0..n * 3 * K * K)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let s = filter_stats(&Tensor::from_vec(w, (n, 3, K, K), &Device::Cpu)?)?;
        assert!((s.low_freq_share - 8.0 / 48.0).abs() < 0.01, "{s:?}");
        assert!((s.anisotropy - 0.105).abs() < 0.02, "{s:?}");
        assert_eq!(s.dead_filters, 0);
        assert!(s.oriented_fraction < 0.02, "{s:?}");
        Ok(())
    }

    #[test]
    fn near_zero_filters_are_dead() -> anyhow::Result<()> {
        let mut w = Vec::new();
        for i in 0..10 {
            let scale = if i < 2 { 1e-4 } else { 1.0 };
            w.extend(grey(|y, x| scale * ((x * 3 + y * 5) % 7) as f32));
        }
        let s = filter_stats(&Tensor::from_vec(w, (10, 3, K, K), &Device::Cpu)?)?;
        assert_eq!(s.dead_filters, 2);
        assert_eq!(s.filters, 10);
        Ok(())
    }

    #[test]
    fn refuses_non_square_kernels() -> anyhow::Result<()> {
        let w = Tensor::zeros((2, 3, 7, 5), DType::F32, &Device::Cpu)?;
        assert!(filter_stats(&w).is_err());
        Ok(())
    }
}
