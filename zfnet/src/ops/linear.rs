//! Fully connected layers `y = x·Wᵀ + b`, the same for an image alone and in any batch.
//!
//! At batch 1 a fully connected layer is a matrix–vector product that reads every weight once:
//! fc6 of the default model is 9.4 M weights (38 MB), so it runs at memory speed, and candle's
//! matmul read them on one thread. [`linear`] splits the rows of `W` (one output each, `W` being
//! `[out, in]` row-major) over the threads, four rows at a time against one input, or two at once
//! with AVX2 (eight running sums in flight).
//!
//! Every output is one dot product summed the same way whatever the batch: 8 running sums (lane
//! `l` takes the products `j ≡ l mod 8` in order), added pairwise, then the tail. With candle's
//! matmul for batches the order changed with the batch size, and a model whose logits are in
//! the hundreds (an ONNX import fed 0–255 pixels) moved its probabilities by 1e-4 between an
//! image alone and the same image in a batch of 16. Other devices and tensors that take part in
//! autograd (training) go to candle's matmul.

use crate::Result;
use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

/// Rows of `W` per task (a multiple of [`BLOCK`]).
const ROWS_PER_TASK: usize = 16;
/// Rows of `W` taken together against one input.
const BLOCK: usize = 4;
/// Inputs whose sums are kept at a time.
const INPUTS: usize = 8;
/// Reduction length per pass (2 KB of a row).
const CHUNK: usize = 512;
/// Running sums per dot product.
const LANES: usize = 8;

/// `x·Wᵀ + b` of a `[n, in]` input.
pub fn linear(x: &Tensor, layer: &Linear) -> Result<Tensor> {
    let w = layer.weight();
    let small = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && !x.track_op()
        && !w.track_op()
        && layer
            .bias()
            .is_none_or(|b| !b.track_op() && b.dtype() == DType::F32);
    if !small {
        return Ok(layer.forward(x)?);
    }
    let (n, k) = x.dims2()?;
    let (out, wk) = w.dims2()?;
    if wk != k {
        return Err(crate::Error::Shape(format!(
            "linear: input [{n}, {k}] does not fit weight [{out}, {wk}]"
        )));
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let bias = match layer.bias() {
        Some(b) => b.to_vec1::<f32>()?,
        None => vec![0.0; out],
    };
    let mut y = vec![0f32; out * n]; // [out][n], transposed at the end
    super::with_host_slice(w, |ws| {
        y.par_chunks_mut(ROWS_PER_TASK * n)
            .zip(ws.par_chunks(ROWS_PER_TASK * k))
            .zip(bias.par_chunks(ROWS_PER_TASK))
            .for_each(|((ys, rows), bs)| rows_wide(rows, &xs, bs, (k, n), ys))
    })?;
    let mut t = vec![0f32; n * out];
    for (j, col) in y.chunks(n).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            t[i * out + j] = v;
        }
    }
    Ok(Tensor::from_vec(t, (n, out), x.device())?)
}

/// `ys[r·n + i] = W[r]·x[i] + b[r]` for the rows `rows` (`[r][k]`) and the `n` inputs `xs`.
///
/// Blocked so that both operands stay in cache: [`INPUTS`] inputs at a time, the reduction in
/// chunks of [`CHUNK`] (a chunk of 4 rows and of the inputs fit L1), each (row, input)'s 8
/// running sums kept between chunks. Blocking changes where the sums wait, never the order of
/// their additions, so every output is the same for any batch.
#[inline(always)]
fn rows_into<const AVX: bool>(
    rows: &[f32],
    xs: &[f32],
    bias: &[f32],
    (k, n): (usize, usize),
    ys: &mut [f32],
) {
    let nr = rows.len() / k;
    let whole = k / LANES * LANES;
    let mut acc = vec![[0f32; LANES]; nr * INPUTS];
    for i0 in (0..n).step_by(INPUTS) {
        let ni = INPUTS.min(n - i0);
        acc.fill([0.0; LANES]);
        for k0 in (0..whole).step_by(CHUNK) {
            let k1 = (k0 + CHUNK).min(whole);
            let mut r = 0;
            while r < nr {
                let block = if nr - r >= BLOCK { BLOCK } else { 1 };
                let mut i = 0;
                #[cfg(target_arch = "x86_64")]
                if AVX && block == BLOCK {
                    // two inputs at a time: 8 running sums in flight (4 waited on the adds'
                    // latency); the same additions in the same order as `sums`
                    while i + 1 < ni {
                        let w = std::array::from_fn(|j| &rows[(r + j) * k..][k0..k1]);
                        let x = std::array::from_fn(|q| &xs[(i0 + i + q) * k..][k0..k1]);
                        let at = |j: usize, q: usize| (r + j) * INPUTS + i + q;
                        let mut a: [[[f32; LANES]; BLOCK]; 2] =
                            std::array::from_fn(|q| std::array::from_fn(|j| acc[at(j, q)]));
                        // SAFETY: AVX is only set by `rows_avx`, which runs on AVX2 + FMA
                        unsafe { sums_pair(w, x, &mut a) };
                        for (q, aq) in a.into_iter().enumerate() {
                            for (j, aj) in aq.into_iter().enumerate() {
                                acc[at(j, q)] = aj;
                            }
                        }
                        i += 2;
                    }
                }
                for i in i..ni {
                    let x = &xs[(i0 + i) * k..][k0..k1];
                    let at = |j: usize| (r + j) * INPUTS + i;
                    if block == BLOCK {
                        let w = std::array::from_fn(|j| &rows[(r + j) * k..][k0..k1]);
                        let mut a: [[f32; LANES]; BLOCK] = std::array::from_fn(|j| acc[at(j)]);
                        sums(w, x, &mut a);
                        for (j, aj) in a.into_iter().enumerate() {
                            acc[at(j)] = aj;
                        }
                    } else {
                        let mut a = [acc[at(0)]];
                        sums([&rows[r * k..][k0..k1]], x, &mut a);
                        acc[at(0)] = a[0];
                    }
                }
                r += block;
            }
        }
        for r in 0..nr {
            let row = &rows[r * k..][..k];
            for i in 0..ni {
                let x = &xs[(i0 + i) * k..][..k];
                let a = acc[r * INPUTS + i];
                let mut sum = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
                for (wv, xv) in row[whole..].iter().zip(&x[whole..]) {
                    sum += wv * xv;
                }
                ys[r * n + i0 + i] = sum + bias[r];
            }
        }
    }
}

/// [`rows_into`] compiled for the CPU: with two inputs at a time by AVX2 where it has AVX2 and
/// FMA, one at a time otherwise (the same sums either way).
fn rows_wide(rows: &[f32], xs: &[f32], bias: &[f32], kn: (usize, usize), ys: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `rows_avx` is compiled for (checked above)
        return unsafe { rows_avx(rows, xs, bias, kn, ys) };
    }
    rows_into::<false>(rows, xs, bias, kn, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx(rows: &[f32], xs: &[f32], bias: &[f32], kn: (usize, usize), ys: &mut [f32]) {
    rows_into::<true>(rows, xs, bias, kn, ys)
}

/// [`sums`] of [`BLOCK`] rows against two inputs at once, in AVX registers: lane `l` of each
/// (row, input) adds `w·x` products `t ≡ l mod 8` in order, multiplied then added as `sums`
/// does (no fused multiply-add), so the results are the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sums_pair(w: [&[f32]; BLOCK], x: [&[f32]; 2], acc: &mut [[[f32; LANES]; BLOCK]; 2]) {
    use std::arch::x86_64::*;
    let len = x[0].len();
    assert!(x[1].len() == len && w.iter().all(|r| r.len() == len) && len.is_multiple_of(LANES));
    // SAFETY: every load reads LANES values at t < len from slices of length len (asserted)
    unsafe {
        let mut a: [[__m256; BLOCK]; 2] =
            std::array::from_fn(|q| std::array::from_fn(|j| _mm256_loadu_ps(acc[q][j].as_ptr())));
        let (x0, x1) = (x[0].as_ptr(), x[1].as_ptr());
        let wp: [*const f32; BLOCK] = std::array::from_fn(|j| w[j].as_ptr());
        let mut t = 0;
        while t < len {
            let (v0, v1) = (_mm256_loadu_ps(x0.add(t)), _mm256_loadu_ps(x1.add(t)));
            for j in 0..BLOCK {
                let wv = _mm256_loadu_ps(wp[j].add(t));
                a[0][j] = _mm256_add_ps(a[0][j], _mm256_mul_ps(wv, v0));
                a[1][j] = _mm256_add_ps(a[1][j], _mm256_mul_ps(wv, v1));
            }
            t += LANES;
        }
        for (aq, vq) in acc.iter_mut().zip(a) {
            for (aj, v) in aq.iter_mut().zip(vq) {
                _mm256_storeu_ps(aj.as_mut_ptr(), v);
            }
        }
    }
}

/// Adds `w[j][t]·x[t]` to running sum `t mod 8` of row `j`, `t` in order (lengths a multiple
/// of 8).
#[inline(always)]
fn sums<const R: usize>(w: [&[f32]; R], x: &[f32], acc: &mut [[f32; LANES]; R]) {
    for (t, xv) in x.chunks_exact(LANES).enumerate() {
        for (a, row) in acc.iter_mut().zip(&w) {
            let wv = &row[t * LANES..][..LANES];
            for l in 0..LANES {
                a[l] += wv[l] * xv[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Equal to candle's matmul (to float rounding) for batches 1–33 (over several blocks of
    /// inputs), widths that are and are not multiples of 8, of the rows per task and of the
    /// reduction chunk, with and without a bias; each image's outputs
    /// equal its own alone, bit for bit; a tracked input takes candle's path.
    #[test]
    fn equals_candles_matmul() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for (n, k, out, with_bias) in [
            (1, 9216, 40, true),
            (3, 70, 17, true),
            (2, 32, 16, false),
            (33, 301, 23, true),
            (10, 1100, 9, false),
        ] {
            let w = Tensor::randn(0f32, 1.0, (out, k), &dev)?;
            let b = Tensor::randn(0f32, 1.0, out, &dev)?;
            let layer = Linear::new(w.clone(), with_bias.then_some(b));
            let x = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let want = layer.forward(&x)?.to_vec2::<f32>()?;
            let got = linear(&x, &layer)?.to_vec2::<f32>()?;
            let scale = (k as f32).sqrt();
            for (g, e) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - e).abs() <= 1e-5 * scale, "{n}×{k}→{out}: {g} vs {e}");
            }
            for (i, row) in got.iter().enumerate() {
                let alone = linear(&x.narrow(0, i, 1)?, &layer)?.to_vec2::<f32>()?;
                assert!(alone[0] == *row, "{n}×{k}→{out}: image {i} alone");
            }
        }
        let w = candle_core::Var::randn(0f32, 1.0, (4, 8), &dev)?;
        let layer = Linear::new(w.as_tensor().clone(), None);
        let x = Tensor::randn(0f32, 1.0, (1, 8), &dev)?;
        let y = linear(&x, &layer)?;
        assert!(y.track_op(), "a variable's product stays in autograd");
        Ok(())
    }
}
