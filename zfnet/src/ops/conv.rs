//! 2-D convolution for ZFNet's shapes: im2col + GEMM per image, fused with bias and ReLU, with a
//! backward pass for training; and the transposed convolution the deconvnet and the backward
//! pass share.
//!
//! Why not candle's conv2d: its CPU forward is slow on conv1 (a 7×7 stride-2 kernel over 3
//! channels), and its backward computes the input gradient with a direct-loop
//! `conv_transpose2d` (several times slower than GEMM + col2im), even for the first layer whose
//! input needs none. Every node of candle's graph also allocates its gradient plus a zero
//! buffer to add it to: fusing bias and ReLU into the conv removes two of the largest nodes.
//!
//! Work is split per image: each image's columns (`[c_in·k·k, oh·ow]`, a few MB) stay in cache
//! and each rayon task owns its images; a single image gets the GEMM's own threads instead.

use crate::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

mod cache;
mod columns;
mod direct;
mod windows;
mod winograd;
mod winograd_tiles;
use columns::{col2im, col2im_region, im2col, im2col_par};
pub(crate) use windows::{conv_relu_windows, WindowConv};

/// A kernel that can be turned off for the whole process: on unless its environment variable is
/// `0`, or as last set (benches compare both ways in one run).
struct Switch {
    /// 0: not yet decided (read the variable), 1: on, 2: off.
    state: std::sync::atomic::AtomicU8,
    var: &'static str,
}

impl Switch {
    const fn new(var: &'static str) -> Self {
        Switch {
            state: std::sync::atomic::AtomicU8::new(0),
            var,
        }
    }
    fn on(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.state.load(Relaxed) {
            0 => {
                let on = std::env::var(self.var).map_or(true, |v| v != "0");
                self.state.store(if on { 1 } else { 2 }, Relaxed);
                on
            }
            state => state == 1,
        }
    }
    fn set(&self, on: bool) {
        self.state
            .store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Winograd F(2×2, 3×3) for 3×3 stride-1 layers ([`winograd`]); `ZFVIS_WINOGRAD=0` turns it off.
static WINOGRAD: Switch = Switch::new("ZFVIS_WINOGRAD");
/// The direct kernel for the layers Winograd does not take ([`direct`]); `ZFVIS_DIRECT_CONV=0`
/// turns it off.
static DIRECT: Switch = Switch::new("ZFVIS_DIRECT_CONV");

/// Turns Winograd on or off for the whole process.
pub fn set_winograd(on: bool) {
    WINOGRAD.set(on)
}

/// Turns the direct kernel on or off for the whole process.
pub fn set_direct(on: bool) {
    DIRECT.set(on)
}

/// Geometry of one convolution (square kernel, symmetric padding, any input size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub h: usize,
    pub w: usize,
}

impl ConvGeometry {
    pub fn out_hw(&self) -> (usize, usize) {
        let o = |len: usize| (len + 2 * self.padding - self.k) / self.stride + 1;
        (o(self.h), o(self.w))
    }
    fn rows(&self) -> usize {
        self.c_in * self.k * self.k
    }
    fn cols(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }
    fn input_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn output_len(&self) -> usize {
        self.c_out * self.cols()
    }
}

/// A strided read-only matrix for [`sgemm`].
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `c = a·b` (or `c += a·b` when `accumulate`), `a` m×k, `b` k×n, `c` row-major m×n.
fn sgemm(
    (m, n, k): (usize, usize, usize),
    a: Mat,
    b: Mat,
    c: &mut [f32],
    accumulate: bool,
    par: Parallelism,
) {
    sgemm_into((m, n, k), a, b, (c, n), accumulate, par)
}

/// [`sgemm`] into the first `n` columns of a row-major `c` whose rows are `ldc` apart.
fn sgemm_into(
    (m, n, k): (usize, usize, usize),
    a: Mat,
    b: Mat,
    (c, ldc): (&mut [f32], usize),
    accumulate: bool,
    par: Parallelism,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n) && ldc >= n && (m == 0 || c.len() >= (m - 1) * ldc + n),
        "sgemm operand sizes"
    );
    // SAFETY: the asserts above keep every index the kernel touches inside the slices; `c` is
    // exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Images whose weight gradients one task sums before the tasks' sums are added in order.
const IMAGES_PER_GRADIENT_GROUP: usize = 4;

/// Threads for the GEMM inside a per-image task: all of them for a lone image, else one each.
fn inner_parallelism(images: usize) -> Parallelism {
    if images == 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// Bytes of im2col columns that one GEMM takes at a time: output positions are done in blocks
/// whose columns stay in L2 (conv1's whole columns are 7 MB; written and read back from memory
/// they cost as much as its GEMM).
const COLUMN_BLOCK_BYTES: usize = 1 << 20;

/// `relu(conv(x, weight) + bias)` of one image into `y` (`[c_out, oh·ow]`), using `cols` as the
/// im2col buffer (at most `[c_in·k·k, oh·ow]`), in blocks of output positions.
pub(crate) fn conv_relu_image(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &ConvGeometry,
    cols: &mut Vec<f32>,
    y: &mut [f32],
    threaded: bool,
) {
    let (rows, total) = (g.rows(), g.cols());
    let block = (COLUMN_BLOCK_BYTES / (4 * rows))
        .max(1024)
        .min(total.max(1));
    // a lone image: each thread takes a band of output maps (multiples of gemm's 16-row
    // micro-tile) against the shared columns; gemm's own threading splits conv1's small K badly
    let band = if threaded {
        g.c_out
            .div_ceil(rayon::current_num_threads().max(1))
            .div_ceil(16)
            .max(1)
            * 16
    } else {
        g.c_out
    };
    for start in (0..total).step_by(block) {
        let positions = start..(start + block).min(total);
        let len = positions.len();
        cols.resize(rows * len, 0.0);
        im2col_par(x, g, positions, &mut cols[..rows * len], threaded);
        let cols = &cols[..rows * len];
        let gemm_band = |(i, ys): (usize, &mut [f32])| {
            sgemm_into(
                (ys.len() / total, len, rows),
                Mat::rows(&weight[i * band * rows..], rows),
                Mat::rows(cols, len),
                (&mut ys[start..], total),
                false,
                Parallelism::None,
            )
        };
        if threaded {
            y.par_chunks_mut(band * total)
                .enumerate()
                .for_each(gemm_band);
        } else {
            y.chunks_mut(band * total).enumerate().for_each(gemm_band);
        }
    }
    let relu_band = |(ys, b): (&mut [f32], &[f32])| bias_relu_wide(ys, b, total);
    if threaded {
        y.par_chunks_mut(band * total)
            .zip(bias.par_chunks(band))
            .for_each(relu_band);
    } else {
        relu_band((y, bias));
    }
}

/// `y[c] = max(y[c] + bias[c], 0)` over rows of `len` values.
#[inline(always)]
fn bias_relu(y: &mut [f32], bias: &[f32], len: usize) {
    for (row, &b) in y.chunks_mut(len).zip(bias) {
        for v in row {
            *v = (*v + b).max(0.0);
        }
    }
}

super::simd::dispatch!(fn bias_relu_wide(y: &mut [f32], bias: &[f32], len: usize) = bias_relu);

/// `relu(conv(x, weight) + bias)` for `n` images of contiguous NCHW data; `key` finds the
/// weights' rearranged forms ([`cache`]).
fn conv_relu_host(
    x: &[f32],
    n: usize,
    (weight, key): (&[f32], cache::Key),
    bias: &[f32],
    g: &ConvGeometry,
) -> Vec<f32> {
    let mut out = vec![0f32; n * g.output_len()];
    if winograd::applies(g) && WINOGRAD.on() {
        winograd::conv_relu(x, n, (weight, key), bias, g, &mut out);
        return out;
    }
    if direct::applies(g) && DIRECT.on() {
        direct::conv_relu(x, n, (weight, key), bias, g, &mut out);
        return out;
    }
    out.par_chunks_mut(g.output_len())
        .zip(x.par_chunks(g.input_len()))
        .for_each_init(Vec::new, |cols, (y, img)| {
            conv_relu_image(img, weight, bias, g, cols, y, n == 1)
        });
    out
}

/// The transposed convolution of `n` images `[c_out, oh, ow]` with conv weights
/// `[c_out, c_in, k, k]`: the adjoint of the convolution with geometry `g`, `[n, c_in, h, w]`.
///
/// Only the output positions inside the box of an image's nonzero values are multiplied and
/// scattered back: a single unit's projection (the deconvnet's usual signal) is a 3×3 box at
/// conv4 and about a third of conv1's and conv2's maps.
pub fn conv_transpose_host(x: &[f32], n: usize, weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let mut out = vec![0f32; n * g.input_len()];
    let par = inner_parallelism(n);
    let (oh, ow) = g.out_hw();
    out.par_chunks_mut(g.input_len())
        .zip(x.par_chunks(g.output_len()))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(cols, boxed), (dst, img)| {
                let Some((ys, xs)) = nonzero_box(img, (oh, ow)) else {
                    return; // all zero: so is the result
                };
                let len = ys.len() * xs.len();
                let img = if len == oh * ow {
                    img
                } else {
                    boxed.clear();
                    for plane in img.chunks_exact(oh * ow) {
                        for y in ys.clone() {
                            boxed.extend_from_slice(&plane[y * ow..][xs.clone()]);
                        }
                    }
                    &boxed[..]
                };
                cols.resize(g.rows() * len, 0.0);
                // Wᵀ [rows, c_out] · x [c_out, box]
                sgemm(
                    (g.rows(), len, g.c_out),
                    Mat::transposed(weight, g.rows()),
                    Mat::rows(img, len),
                    cols,
                    false,
                    par,
                );
                col2im_region(cols, g, (ys, xs), dst);
            },
        );
    out
}

/// The rows and columns of the smallest box holding every nonzero value of `[c, h, w]` planes.
fn nonzero_box(
    img: &[f32],
    (h, w): (usize, usize),
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let (mut y0, mut y1, mut x0, mut x1) = (h, 0, w, 0);
    for plane in img.chunks_exact(h * w) {
        for (y, row) in plane.chunks_exact(w).enumerate() {
            if let Some(first) = row.iter().position(|&v| v != 0.0) {
                let last = row.iter().rposition(|&v| v != 0.0).unwrap_or(first);
                (y0, y1) = (y0.min(y), y1.max(y + 1));
                (x0, x1) = (x0.min(first), x1.max(last + 1));
            }
        }
    }
    (y0 < y1).then_some((y0..y1, x0..x1))
}

/// Fused `relu(conv2d(x, weight) + bias)` that candle can differentiate (CPU; other devices use
/// candle's ops).
pub fn conv2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if super::use_portable(x) {
        let y = x.conv2d(weight, padding, stride, 1, 1)?;
        let c = bias.dim(0)?;
        return Ok(y.broadcast_add(&bias.reshape((1, c, 1, 1))?)?.relu()?);
    }
    let op = ConvReluOp {
        stride,
        padding,
        key: cache::Key::of(weight),
    };
    Ok(x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?)
}

#[derive(Debug, Clone, Copy)]
struct ConvReluOp {
    stride: usize,
    padding: usize,
    key: cache::Key,
}

impl ConvReluOp {
    fn geometry(&self, x: &[usize], w: &[usize]) -> candle_core::Result<(usize, ConvGeometry)> {
        let (&[n, c, h, wd], &[c_out, wc, k, k2]) = (
            <&[usize; 4]>::try_from(x)
                .map_err(|_| candle_core::Error::Msg("conv: x must be NCHW".into()))?,
            <&[usize; 4]>::try_from(w)
                .map_err(|_| candle_core::Error::Msg("conv: weight must be 4-D".into()))?,
        );
        if wc != c || k != k2 || h + 2 * self.padding < k || wd + 2 * self.padding < k {
            candle_core::bail!("conv: input {x:?} does not fit weight {w:?}");
        }
        Ok((
            n,
            ConvGeometry {
                c_in: c,
                c_out,
                k,
                stride: self.stride,
                padding: self.padding,
                h,
                w: wd,
            },
        ))
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("conv: contiguous f32 operands expected"),
    }
}

fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp3 for ConvReluOp {
    fn name(&self) -> &'static str {
        "zfnet-conv-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, g) = self.geometry(l1.dims(), l2.dims())?;
        let bias = slice(s3, l3)?;
        if bias.len() != g.c_out {
            candle_core::bail!("conv: bias has {} entries for {} maps", bias.len(), g.c_out);
        }
        let y = conv_relu_host(slice(s1, l1)?, n, (slice(s2, l2)?, self.key), bias, &g);
        let (oh, ow) = g.out_hw();
        Ok((CpuStorage::F32(y), Shape::from((n, g.c_out, oh, ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, g) = self.geometry(x.dims(), weight.dims())?;
        let (xs, ws, ys) = (host(x)?, host(weight)?, host(res)?);
        let mut gs = host(&grad.contiguous()?)?;
        // through the ReLU: no gradient where the output was clipped to zero
        gs.par_iter_mut().zip(ys.par_iter()).for_each(|(g, &y)| {
            if y <= 0.0 {
                *g = 0.0;
            }
        });
        let want_x = x.track_op();
        let mut gx = vec![0f32; if want_x { n * g.input_len() } else { 0 }];
        let par = inner_parallelism(n);
        let (rows, cols) = (g.rows(), g.cols());
        let per_image =
            |(gw, gb, buf): (Vec<f32>, Vec<f32>, Vec<f32>), i: usize, dst: Option<&mut [f32]>| {
                let (mut gw, mut gb, mut buf) = (gw, gb, buf);
                let gy = &gs[i * g.output_len()..][..g.output_len()];
                for (b, row) in gb.iter_mut().zip(gy.chunks(cols)) {
                    *b += row.iter().sum::<f32>();
                }
                im2col(&xs[i * g.input_len()..][..g.input_len()], &g, &mut buf);
                // ∂W += ∂Y [c_out, cols] · colsᵀ [cols, rows]
                sgemm(
                    (g.c_out, rows, cols),
                    Mat::rows(gy, cols),
                    Mat::transposed(&buf, cols),
                    &mut gw,
                    true,
                    par,
                );
                if let Some(dst) = dst {
                    sgemm(
                        (rows, cols, g.c_out),
                        Mat::transposed(&ws, rows),
                        Mat::rows(gy, cols),
                        &mut buf,
                        false,
                        par,
                    );
                    col2im(&buf, &g, dst);
                }
                (gw, gb, buf)
            };
        let init = || {
            (
                vec![0f32; g.c_out * rows],
                vec![0f32; g.c_out],
                vec![0f32; rows * cols],
            )
        };
        let merge = |(mut a, mut b, buf): (Vec<f32>, Vec<f32>, Vec<f32>),
                     (c, d, _): (Vec<f32>, Vec<f32>, Vec<f32>)| {
            a.iter_mut().zip(&c).for_each(|(x, y)| *x += y);
            b.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
            (a, b, buf)
        };
        // Fixed groups of images, summed in order: rayon's adaptive fold would group them by
        // scheduling, so float sums (and a resumed training run) would differ from run to run.
        let partials: Vec<_> = if want_x {
            gx.par_chunks_mut(g.input_len() * IMAGES_PER_GRADIENT_GROUP)
                .enumerate()
                .map(|(k, dsts)| {
                    dsts.chunks_mut(g.input_len())
                        .enumerate()
                        .fold(init(), |acc, (j, dst)| {
                            per_image(acc, k * IMAGES_PER_GRADIENT_GROUP + j, Some(dst))
                        })
                })
                .collect()
        } else {
            (0..n.div_ceil(IMAGES_PER_GRADIENT_GROUP))
                .into_par_iter()
                .map(|k| {
                    let images =
                        k * IMAGES_PER_GRADIENT_GROUP..n.min((k + 1) * IMAGES_PER_GRADIENT_GROUP);
                    images.fold(init(), |acc, i| per_image(acc, i, None))
                })
                .collect()
        };
        let (gw, gb, _) = partials.into_iter().reduce(merge).unwrap_or_else(init);
        let dev = x.device();
        let grad_x = if want_x {
            Some(Tensor::from_vec(gx, x.shape(), dev)?)
        } else {
            None
        };
        Ok((
            grad_x,
            Some(Tensor::from_vec(gw, weight.shape(), dev)?),
            Some(Tensor::from_vec(gb, g.c_out, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests;
