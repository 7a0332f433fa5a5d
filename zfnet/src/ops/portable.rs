//! The same layers as [`lrn`](super::lrn), [`maxpool`](super::maxpool) and the transposed
//! convolution, written only with candle's tensor operations, so that they run wherever candle
//! has kernels (CUDA) without a round trip through host memory, and candle differentiates them.
//!
//! The CPU keeps the hand-written kernels (several times faster there); these are chosen for
//! tensors on any other device. Both forms are tested equal on the CPU (`tests/portable.rs`),
//! which is what lets the GPU path be trusted before a GPU is at hand.
//!
//! - **LRN**: the channel window sum is `size` shifted views of `a²` padded with zero channels
//!   (`⌊size/2⌋` in front, `⌊(size−1)/2⌋` behind), then `b = a · (k + alpha/size · Σ)^−beta`.
//! - **Max pool with switches**: the input is padded with −∞ to `(out − 1) · stride + kernel` on
//!   each axis (ceil mode's clipped windows; −∞ never wins), and the `kernel²` window candidates
//!   are strided views picked with `index_select`. They are visited in row-major order and a
//!   later candidate replaces the best only when strictly larger, so the first maximum wins, as
//!   in the CPU kernel and PyTorch; the switch is the candidate's flat index `y · w + x`.
//! - **Unpool**: `scatter_add` of the signal at its switches into a zero plane: overlapping
//!   windows that share a switch are summed (the adjoint of pooling), as on the CPU.

use super::lrn::LrnParams;
use super::maxpool::{Pool2d, Pooled};
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};

/// Cross-channel LRN of an NCHW tensor from tensor operations.
pub fn lrn(x: &Tensor, p: LrnParams) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (front, back) = (p.size / 2, (p.size - 1) / 2);
    let sq = x.sqr()?;
    let zeros = |k: usize| Tensor::zeros((n, k, h, w), x.dtype(), x.device());
    let padded = Tensor::cat(&[zeros(front)?, sq, zeros(back)?], 1)?;
    let mut sum = padded.narrow(1, 0, c)?;
    for q in 1..p.size {
        sum = (sum + padded.narrow(1, q, c)?)?;
    }
    let d = sum.affine(f64::from(p.alpha) / p.size as f64, f64::from(p.k))?;
    Ok((x * d.powf(-f64::from(p.beta))?)?)
}

/// Pooled values `[n, c, oh, ow]` (differentiable) and their switches (`u32`).
fn pool_values_and_switches(x: &Tensor, pool: Pool2d) -> Result<(Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (pool.output_len(h), pool.output_len(w));
    if oh == 0 || ow == 0 {
        return Err(Error::Shape(format!(
            "max pool {}x{}/{} of a {h}x{w} plane has no output",
            pool.kernel, pool.kernel, pool.stride
        )));
    }
    let (s, k) = (pool.stride, pool.kernel);
    let (ph, pw) = ((oh - 1) * s + k, (ow - 1) * s + k);
    let pad = |t: Tensor, dim: usize, len: usize, extra: usize| -> Result<Tensor> {
        if extra == 0 {
            return Ok(t);
        }
        let mut shape = t.dims().to_vec();
        shape[dim] = extra;
        let fill = Tensor::full(f32::NEG_INFINITY, shape, t.device())?.to_dtype(t.dtype())?;
        debug_assert_eq!(t.dim(dim).ok(), Some(len));
        Ok(Tensor::cat(&[t, fill], dim)?)
    };
    let padded = pad(x.clone(), 2, h, ph.saturating_sub(h))?;
    let padded = pad(padded, 3, w, pw.saturating_sub(w))?;
    let device = x.device();
    let positions = |offset: usize, count: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..count).map(|i| (offset + i * s) as u32).collect();
        Ok(Tensor::from_vec(idx, count, device)?)
    };
    let mut best: Option<(Tensor, Tensor)> = None;
    for dy in 0..k {
        let rows = padded.index_select(&positions(dy, oh)?, 2)?;
        let ys: Vec<u32> = (0..oh).map(|i| (dy + i * s) as u32).collect();
        for dx in 0..k {
            let cand = rows.index_select(&positions(dx, ow)?, 3)?;
            let flat: Vec<u32> = ys
                .iter()
                .flat_map(|&y| (0..ow).map(move |j| y * w as u32 + (dx + j * s) as u32))
                .collect();
            let at =
                Tensor::from_vec(flat, (1, 1, oh, ow), device)?.broadcast_as((n, c, oh, ow))?;
            best = Some(match best {
                None => (cand, at.contiguous()?),
                Some((bv, bi)) => {
                    let take = cand.gt(&bv)?;
                    (take.where_cond(&cand, &bv)?, take.where_cond(&at, &bi)?)
                }
            });
        }
    }
    best.ok_or_else(|| Error::Shape("max pool with an empty window".into()))
}

/// Max pooling with switches, as [`super::maxpool::max_pool_with_switches`].
pub fn max_pool_with_switches(x: &Tensor, pool: Pool2d) -> Result<Pooled> {
    let (_, _, h, w) = x.dims4()?;
    let (output, switches) = pool_values_and_switches(&x.detach(), pool)?;
    Ok(Pooled {
        output,
        switches,
        input_hw: (h, w),
    })
}

/// Differentiable max pooling, as [`super::maxpool::max_pool`] (the gradient reaches each
/// window's first maximum, summed where windows share it).
pub fn max_pool(x: &Tensor, pool: Pool2d) -> Result<Tensor> {
    Ok(pool_values_and_switches(x, pool)?.0)
}

/// Unpooling, as [`super::maxpool::max_unpool`]: values summed where switches coincide.
pub fn max_unpool(signal: &Tensor, switches: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (n, c, oh, ow) = signal.dims4()?;
    let sw_shape = switches.dims4()?;
    if sw_shape != (n, c, oh, ow) {
        return Err(Error::Shape(format!(
            "unpool signal {:?} does not match switches {sw_shape:?}",
            (n, c, oh, ow)
        )));
    }
    let index = switches.to_dtype(DType::U32)?.reshape((n * c, oh * ow))?;
    let source = signal.reshape((n * c, oh * ow))?.contiguous()?;
    let zeros = Tensor::zeros((n * c, h * w), signal.dtype(), signal.device())?;
    Ok(zeros
        .scatter_add(&index.contiguous()?, &source, D::Minus1)?
        .reshape((n, c, h, w))?)
}

/// The transposed convolution of the deconvnet (`weight` `[c_out, c_in, k, k]`), back to an
/// `out_side²` plane: candle's `conv_transpose2d` with the output padding that reaches it.
pub fn conv_transpose(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
    out_side: usize,
) -> Result<Tensor> {
    let (_, _, h, _) = x.dims4()?;
    let k = weight.dim(3)?;
    let reached = (h - 1) * stride + k;
    let natural = reached.checked_sub(2 * padding).ok_or_else(|| {
        Error::Shape(format!(
            "conv_transpose: padding {padding} too large for kernel {k}"
        ))
    })?;
    let output_padding = out_side.checked_sub(natural).ok_or_else(|| {
        Error::Shape(format!(
            "conv_transpose: a {h}² input reaches {natural}², past {out_side}²"
        ))
    })?;
    Ok(x.conv_transpose2d(weight, padding, output_padding, stride, 1)?)
}
