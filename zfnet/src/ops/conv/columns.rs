//! im2col and its adjoint col2im: one image's convolution as a matrix of input columns.

use super::ConvGeometry;
use rayon::prelude::*;

/// The output columns `ox` whose input column `ox·s + kx − p` lies inside `0..w`.
fn valid_cols(g: &ConvGeometry, kx: usize, ow: usize) -> std::ops::Range<usize> {
    let (s, p) = (g.stride, g.padding);
    // first ox with ox·s + kx ≥ p, and one past the last with ox·s + kx − p < w
    let lo = p.saturating_sub(kx).div_ceil(s).min(ow);
    let hi = if g.w + p > kx {
        ((g.w + p - kx - 1) / s + 1).min(ow)
    } else {
        0
    };
    lo..hi.max(lo)
}

/// Row `r` (`(ci, ky, kx)`) of one image's columns, for the output positions `positions`
/// (row-major `oy·ow + ox`): zero where the kernel hangs over the padding.
#[inline(always)]
fn im2col_row(
    x: &[f32],
    g: &ConvGeometry,
    r: usize,
    positions: std::ops::Range<usize>,
    row: &mut [f32],
) {
    let (_, ow) = g.out_hw();
    let (k, s, p) = (g.k, g.stride, g.padding);
    let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
    let plane = &x[ci * g.h * g.w..][..g.h * g.w];
    let valid = valid_cols(g, kx, ow);
    let mut pos = positions.start;
    while pos < positions.end {
        let (oy, ox0) = (pos / ow, pos % ow);
        let ox1 = ow.min(ox0 + positions.end - pos);
        let dst = &mut row[pos - positions.start..][..ox1 - ox0];
        pos += ox1 - ox0;
        let iy = (oy * s + ky) as isize - p as isize;
        let (a, b) = (valid.start.clamp(ox0, ox1), valid.end.clamp(ox0, ox1));
        if iy < 0 || iy >= g.h as isize || a >= b {
            dst.fill(0.0);
            continue;
        }
        dst[..a - ox0].fill(0.0);
        dst[b - ox0..].fill(0.0);
        let src = &plane[iy as usize * g.w..][..g.w];
        let inner = &mut dst[a - ox0..b - ox0];
        let first = a * s + kx - p;
        if s == 1 {
            inner.copy_from_slice(&src[first..][..inner.len()]);
        } else {
            for (d, &v) in inner.iter_mut().zip(src[first..].iter().step_by(s)) {
                *d = v;
            }
        }
    }
}

super::super::simd::dispatch!(fn im2col_row_wide(
    x: &[f32],
    g: &ConvGeometry,
    r: usize,
    positions: std::ops::Range<usize>,
    row: &mut [f32],
) = im2col_row);

/// One image `[c_in, h, w]` → the columns of output positions `positions`
/// (`[c_in·k·k, positions.len()]`, zero where the kernel hangs over the padding); `threaded`
/// splits the rows over rayon's threads.
pub(super) fn im2col_par(
    x: &[f32],
    g: &ConvGeometry,
    positions: std::ops::Range<usize>,
    cols: &mut [f32],
    threaded: bool,
) {
    let len = positions.len();
    if threaded {
        cols.par_chunks_mut(len)
            .enumerate()
            .for_each(|(r, row)| im2col_row_wide(x, g, r, positions.clone(), row));
    } else {
        for (r, row) in cols.chunks_mut(len).enumerate() {
            im2col_row_wide(x, g, r, positions.clone(), row);
        }
    }
}

pub(super) fn im2col(x: &[f32], g: &ConvGeometry, cols: &mut [f32]) {
    im2col_par(x, g, 0..g.cols(), cols, false)
}

/// The adjoint of [`im2col`]: adds each column entry back onto its input pixel (`out` must be
/// zeroed by the caller or hold what to add to).
pub(super) fn col2im(cols: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let (oh, ow) = g.out_hw();
    col2im_region(cols, g, (0..oh, 0..ow), out)
}

/// [`col2im`] for the columns of the output positions `ys × xs` only (`cols` is
/// `[c_in·k·k, ys.len()·xs.len()]`).
pub(super) fn col2im_region(
    cols: &[f32],
    g: &ConvGeometry,
    (ys, xs): (std::ops::Range<usize>, std::ops::Range<usize>),
    out: &mut [f32],
) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let (bh, bw) = (ys.len(), xs.len());
    for (r, row) in cols.chunks(bh * bw).enumerate() {
        let (ci, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let plane = &mut out[ci * g.h * g.w..][..g.h * g.w];
        for (dy, oy) in ys.clone().enumerate() {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let dst = &mut plane[iy as usize * g.w..][..g.w];
            for (dx, &v) in row[dy * bw..][..bw].iter().enumerate() {
                let ix = ((xs.start + dx) * s + kx) as isize - p;
                if ix >= 0 && (ix as usize) < g.w {
                    dst[ix as usize] += v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::tests::seeded;

    /// Every column entry read straight from its definition.
    fn im2col_reference(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let (oh, ow) = g.out_hw();
        let mut out = Vec::with_capacity(g.rows() * oh * ow);
        for r in 0..g.rows() {
            let (ci, ky, kx) = (r / (g.k * g.k), (r / g.k) % g.k, r % g.k);
            for oy in 0..oh {
                for ox in 0..ow {
                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                    let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                    let inside = (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                    out.push(if inside {
                        x[ci * g.h * g.w + iy as usize * g.w + ix as usize]
                    } else {
                        0.0
                    });
                }
            }
        }
        out
    }

    /// The branch-free copy equals the definition for paddings wider than the kernel offset,
    /// strides 1–4, inputs narrower than the padding, and with and without threads.
    #[test]
    fn im2col_equals_its_definition() {
        for (k, stride, padding, h, w) in [
            (7, 2, 1, 23, 17),
            (3, 1, 1, 5, 5),
            (5, 2, 0, 13, 12),
            (11, 4, 2, 27, 30),
            (3, 3, 2, 4, 1),
            (5, 1, 4, 3, 2),
            (1, 1, 0, 2, 3),
        ] {
            let g = ConvGeometry {
                c_in: 2,
                c_out: 1,
                k,
                stride,
                padding,
                h,
                w,
            };
            let x = seeded(g.input_len(), 9);
            let want = im2col_reference(&x, &g);
            for threaded in [false, true] {
                let mut got = vec![f32::NAN; g.rows() * g.cols()];
                im2col_par(&x, &g, 0..g.cols(), &mut got, threaded);
                assert!(
                    got == want,
                    "k {k} stride {stride} padding {padding} {h}×{w}"
                );
                // any block of positions is the same columns' slice
                let cols = g.cols();
                for block in [(0, cols.min(3)), (cols / 3, cols), (cols / 2, cols / 2 + 1)] {
                    let len = block.1 - block.0;
                    let mut part = vec![f32::NAN; g.rows() * len];
                    im2col_par(&x, &g, block.0..block.1, &mut part, threaded);
                    for (r, row) in part.chunks(len.max(1)).enumerate().take(if len == 0 {
                        0
                    } else {
                        g.rows()
                    }) {
                        assert!(
                            row == &want[r * cols + block.0..][..len],
                            "block {block:?} row {r}"
                        );
                    }
                }
            }
        }
    }
}
