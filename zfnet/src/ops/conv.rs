//! 2-D convolution as im2col + GEMM, with a backward pass, for training.
//!
//! candle's own conv2d backward computes the input gradient with its direct-loop
//! `conv_transpose2d` (several times slower than a GEMM + col2im) and does so even for the first
//! layer, whose input needs no gradient. This op keeps candle's layout and semantics
//! (`[n, c_in, h, w]` ⊛ `[c_out, c_in, k, k]`, square kernel, symmetric padding) and
//! - forward: im2col (`[n, c_in·k·k, oh·ow]`, one rayon task per image) then a batched GEMM;
//! - backward: `∂W = Σₙ ∂Yₙ · colsₙᵀ`, and `∂X = col2im(Wᵀ · ∂Y)` only when the input tracks a
//!   gradient (see [`crate::deconv::conv_transpose`], the same transposed convolution).

use crate::Result;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `conv2d(x, weight)` (no bias) that candle can differentiate. CPU only; other devices fall back
/// to candle's conv2d.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(x.conv2d(weight, padding, stride, 1, 1)?);
    }
    let op = Conv2dOp { stride, padding };
    Ok(x.contiguous()?.apply_op2(&weight.contiguous()?, op)?)
}

#[derive(Debug, Clone, Copy)]
struct Conv2dOp {
    stride: usize,
    padding: usize,
}

/// Output side of a convolution along one axis.
fn out_len(len: usize, k: usize, stride: usize, padding: usize) -> usize {
    (len + 2 * padding - k) / stride + 1
}

/// Unfolds `x` (`n` images of `[c, h, w]`) into `[n, c·k·k, oh·ow]` columns.
#[allow(clippy::too_many_arguments)]
fn im2col(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
) -> (Vec<f32>, usize, usize) {
    let (oh, ow) = (
        out_len(h, k, stride, padding),
        out_len(w, k, stride, padding),
    );
    let l = oh * ow;
    let mut cols = vec![0f32; n * c * k * k * l];
    cols.par_chunks_mut(l)
        .enumerate()
        .for_each(|(row_index, row)| {
            let img = row_index / (c * k * k);
            let r = row_index % (c * k * k);
            let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
            let plane = &x[(img * c + ci) * h * w..][..h * w];
            for oy in 0..oh {
                let iy = (oy * stride + ky) as isize - padding as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let src = &plane[iy as usize * w..][..w];
                let dst = &mut row[oy * ow..][..ow];
                for (ox, d) in dst.iter_mut().enumerate() {
                    let ix = (ox * stride + kx) as isize - padding as isize;
                    if ix >= 0 && (ix as usize) < w {
                        *d = src[ix as usize];
                    }
                }
            }
        });
    (cols, oh, ow)
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("conv2d: only f32 is supported"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("conv2d: input must be contiguous"),
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "zfnet-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1)?;
        let w = contiguous_f32(s2, l2)?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (c_out, wc, k, k2) = l2.shape().dims4()?;
        if wc != c || k != k2 {
            candle_core::bail!("conv2d: input {:?} vs weight {:?}", l1.dims(), l2.dims());
        }
        let (cols, oh, ow) = im2col(x, (n, c, h, wd), k, self.stride, self.padding);
        let dev = candle_core::Device::Cpu;
        let cols = Tensor::from_vec(cols, (n, c * k * k, oh * ow), &dev)?;
        let w = Tensor::from_slice(w, (c_out, c * k * k), &dev)?;
        let y = w.broadcast_left(n)?.matmul(&cols)?; // [n, c_out, oh·ow]
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(y), Shape::from((n, c_out, oh, ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let (c_out, _, k, _) = weight.dims4()?;
        let (_, _, oh, ow) = grad.dims4()?;
        let grad = grad.contiguous()?;
        let x_host = x.flatten_all()?.to_vec1::<f32>()?;
        let (cols, _, _) = im2col(&x_host, (n, c, h, w), k, self.stride, self.padding);
        let cols = Tensor::from_vec(cols, (n, c * k * k, oh * ow), x.device())?;
        let g = grad.reshape((n, c_out, oh * ow))?;
        let grad_w = g
            .matmul(&cols.transpose(1, 2)?)?
            .sum(0)?
            .reshape((c_out, c, k, k))?;
        // The first layer's input is data: no gradient wanted, and it is the costliest one.
        let grad_x = if x.track_op() {
            if w != h {
                candle_core::bail!("conv2d backward: square inputs only, got {h}×{w}");
            }
            let gx = crate::deconv::conv_transpose(&grad, weight, self.stride, self.padding, h)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            Some(gx)
        } else {
            None
        };
        Ok((grad_x, Some(grad_w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn seeded(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let v = (i.wrapping_mul(2654435761).wrapping_add(seed)) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_and_gradients_match_candle() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for (stride, padding, k, side) in [(2, 1, 7, 23), (2, 0, 5, 13), (1, 1, 3, 9)] {
            let x = Var::from_vec(seeded(2 * 3 * side * side, 1), (2, 3, side, side), &dev)?;
            let w = Var::from_vec(seeded(4 * 3 * k * k, 7), (4, 3, k, k), &dev)?;
            let ours = conv2d(&x, &w, stride, padding)?;
            let theirs = x.conv2d(&w, padding, stride, 1, 1)?;
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "forward differs by {diff}");
            let probe = Tensor::from_vec(seeded(ours.elem_count(), 3), ours.shape(), &dev)?;
            let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
            for v in [&x, &w] {
                let a = g_ours.get(v).expect("gradient");
                let b = g_theirs.get(v).expect("gradient");
                let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-3, "gradient differs by {diff}");
            }
        }
        Ok(())
    }
}
