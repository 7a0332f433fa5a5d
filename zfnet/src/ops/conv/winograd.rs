//! Winograd's minimal filtering F(2×2, 3×3) for the 3×3, stride-1, padding-1 layers (conv3–5):
//! each 2×2 block of outputs from a 4×4 input tile with 16 multiplies per input channel instead
//! of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//!
//!      ⎡1  0  −1  0⎤        ⎡1    0    0 ⎤        ⎡1  1   1   0⎤
//! Bᵀ = ⎢0  1   1  0⎥    G = ⎢½    ½    ½ ⎥   Aᵀ = ⎣0  1  −1  −1⎦
//!      ⎢0 −1   1  0⎥        ⎢½   −½    ½ ⎥
//!      ⎣0  1   0 −1⎦        ⎣0    0    1 ⎦
//! ```
//!
//! Summed over input channels, the element-wise products become 16 independent GEMMs, one per
//! tile position ξ: `M[ξ] = U[ξ] · V[ξ]` with `U[ξ]` the transformed weights `[c_out, c_in]` and
//! `V[ξ]` the transformed input tiles `[c_in, tiles]`, the tiles of every image of the batch side by
//! side (so a batch makes wide, efficient GEMMs). The output transform adds the bias and applies
//! the ReLU. On 13×13 maps the 7×7 tiles cover 14×14: 1.94× fewer multiply-adds than the direct
//! convolution. The transforms only add and halve, so results agree with the direct convolution
//! to float rounding (tested against it in `ops::conv`'s tests).

use super::ConvGeometry;
use gemm::Parallelism;
use rayon::prelude::*;

/// Whether [`conv_relu`] applies: 3×3, stride 1, padding 1.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.k == 3 && g.stride == 1 && g.padding == 1 && g.h >= 2 && g.w >= 2
}

/// `U[ξ][o][c]` = (G g Gᵀ)[ξ] of weight `[c_out, c_in, 3, 3]`.
fn transform_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    // computed as [o][ξ][c] (one task per output map), then laid out [ξ][o][c]
    let mut by_map = vec![0f32; 16 * c_out * c_in];
    by_map
        .par_chunks_mut(16 * c_in)
        .enumerate()
        .for_each(|(o, uo)| {
            for c in 0..c_in {
                let g = &weight[(o * c_in + c) * 9..][..9];
                // t = G g: 4×3
                let mut t = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    t[0][j] = g0;
                    t[1][j] = 0.5 * (g0 + g1 + g2);
                    t[2][j] = 0.5 * (g0 - g1 + g2);
                    t[3][j] = g2;
                }
                // (G g) Gᵀ: 4×4
                for (i, row) in t.iter().enumerate() {
                    let v = [
                        row[0],
                        0.5 * (row[0] + row[1] + row[2]),
                        0.5 * (row[0] - row[1] + row[2]),
                        row[2],
                    ];
                    for (j, &x) in v.iter().enumerate() {
                        uo[(i * 4 + j) * c_in + c] = x;
                    }
                }
            }
        });
    let mut u = vec![0f32; 16 * c_out * c_in];
    u.par_chunks_mut(c_out * c_in)
        .enumerate()
        .for_each(|(xi, ux)| {
            for (o, row) in ux.chunks_mut(c_in).enumerate() {
                row.copy_from_slice(&by_map[(o * 16 + xi) * c_in..][..c_in]);
            }
        });
    u
}

/// `M[o][ξ][t] = Σ_c U[ξ][o][c] · V[c][ξ][t]`: 16 GEMMs, one thread each, writing interleaved
/// rows of one buffer so that each output map's 16 products lie together for the output
/// transform (laid out `[ξ][o][t]` they were 16 streams megabytes apart: a third of the time).
fn products(u: &[f32], v: &[f32], c_out: usize, c_in: usize, tiles: usize) -> Vec<f32> {
    let mut m = vec![0f32; 16 * c_out * tiles];
    assert!(u.len() == 16 * c_out * c_in && v.len() == 16 * c_in * tiles);
    let dst = super::super::SharedMut(m.as_mut_ptr());
    (0..16).into_par_iter().for_each(|xi| {
        // SAFETY: GEMM ξ reads u[ξ·c_out·c_in ..][.. c_out·c_in] and v[c·16·tiles + ξ·tiles + t]
        // (c < c_in, t < tiles), and writes only m[o·16·tiles + ξ·tiles + t] (o < c_out, t <
        // tiles): all inside the buffers (asserted above), the writes of different ξ disjoint.
        unsafe {
            gemm::gemm(
                c_out,
                tiles,
                c_in,
                dst.ptr().add(xi * tiles),
                1,
                (16 * tiles) as isize,
                false,
                u.as_ptr().add(xi * c_out * c_in),
                1,
                c_in as isize,
                v.as_ptr().add(xi * tiles),
                1,
                (16 * tiles) as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    });
    m
}

/// `relu(conv(x) + bias)` of `n` images by F(2×2, 3×3); `y` is `[n, c_out, h, w]`.
pub(super) fn conv_relu(
    x: &[f32],
    n: usize,
    (weight, key): (&[f32], super::cache::Key),
    bias: &[f32],
    g: &ConvGeometry,
    y: &mut [f32],
) {
    let (h, w, c_in, c_out) = (g.h, g.w, g.c_in, g.c_out);
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let per_image = th * tw;
    let tiles = n * per_image;
    let u = super::cache::rearranged(super::cache::Kind::Winograd, key, weight, |w| {
        transform_weights(w, c_out, c_in)
    });
    // V[c][ξ][tile]: the input transform, one task per input channel
    let mut v = vec![0f32; 16 * c_in * tiles];
    v.par_chunks_mut(16 * tiles)
        .enumerate()
        .for_each(|(c, vc)| {
            // the plane with a zero border: tile (ty, tx) reads rows 2ty…2ty+3, columns
            // 2tx…2tx+3 of it, no bounds to check
            let (ph, pw) = (2 * th + 2, 2 * tw + 2);
            let mut pad = vec![0f32; ph * pw];
            let mut rows = vec![0f32; 4 * pw];
            for i in 0..n {
                let plane = &x[(i * c_in + c) * h * w..][..h * w];
                for (yy, src) in plane.chunks(w).enumerate() {
                    pad[(yy + 1) * pw + 1..][..w].copy_from_slice(src);
                }
                for ty in 0..th {
                    // Bᵀ d for the whole band of four rows at once (vectorises along x)
                    let band = &pad[2 * ty * pw..][..4 * pw];
                    let (r0, r1, r2, r3) = (
                        &band[..pw],
                        &band[pw..2 * pw],
                        &band[2 * pw..3 * pw],
                        &band[3 * pw..],
                    );
                    let (t0, rest) = rows.split_at_mut(pw);
                    let (t1, rest) = rest.split_at_mut(pw);
                    let (t2, t3) = rest.split_at_mut(pw);
                    for x in 0..pw {
                        t0[x] = r0[x] - r2[x];
                        t1[x] = r1[x] + r2[x];
                        t2[x] = r2[x] - r1[x];
                        t3[x] = r1[x] - r3[x];
                    }
                    for tx in 0..tw {
                        let tile = i * per_image + ty * tw + tx;
                        for r in 0..4 {
                            let row = &rows[r * pw + 2 * tx..][..4];
                            let b = [
                                row[0] - row[2],
                                row[1] + row[2],
                                row[2] - row[1],
                                row[1] - row[3],
                            ];
                            for (s, &val) in b.iter().enumerate() {
                                vc[(r * 4 + s) * tiles + tile] = val;
                            }
                        }
                    }
                }
            }
        });
    let m = products(&u, &v, c_out, c_in, tiles);
    // Y = Aᵀ M A + bias, ReLU: one task per (image, output map)
    y.par_chunks_mut(h * w).enumerate().for_each(|(io, out)| {
        let (i, o) = (io / c_out, io % c_out);
        let b = bias[o];
        let mo = &m[o * 16 * tiles..][..16 * tiles];
        for ty in 0..th {
            for tx in 0..tw {
                let tile = i * per_image + ty * tw + tx;
                let e = |xi: usize| mo[xi * tiles + tile];
                // Aᵀ M: 2×4
                let t: [[f32; 4]; 2] = [
                    std::array::from_fn(|s| e(s) + e(4 + s) + e(8 + s)),
                    std::array::from_fn(|s| e(4 + s) - e(8 + s) - e(12 + s)),
                ];
                for (r, row) in t.iter().enumerate() {
                    let yy = 2 * ty + r;
                    if yy >= h {
                        continue;
                    }
                    let vals = [row[0] + row[1] + row[2], row[1] - row[2] - row[3]];
                    for (s, &val) in vals.iter().enumerate() {
                        let xx = 2 * tx + s;
                        if xx < w {
                            out[yy * w + xx] = (val + b).max(0.0);
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::conv_relu_image;
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn equals_the_direct_convolution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (n, c_in, c_out, h, w) in [(1, 5, 7, 13, 13), (3, 16, 9, 6, 9), (2, 3, 4, 2, 5)] {
            let g = ConvGeometry {
                c_in,
                c_out,
                k: 3,
                stride: 1,
                padding: 1,
                h,
                w,
            };
            assert!(applies(&g));
            let mut rand = |len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let (x, wt, b) = (rand(n * c_in * h * w), rand(c_out * c_in * 9), rand(c_out));
            let mut want = vec![0f32; n * c_out * h * w];
            let mut cols = Vec::new();
            for (img, out) in x.chunks(c_in * h * w).zip(want.chunks_mut(c_out * h * w)) {
                conv_relu_image(img, &wt, &b, &g, &mut cols, out, false);
            }
            let mut got = vec![f32::NAN; n * c_out * h * w];
            conv_relu(
                &x,
                n,
                (&wt, super::super::cache::Key::Contents),
                &b,
                &g,
                &mut got,
            );
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-6 * scale.max(1.0),
                "{n}×{c_in}→{c_out} {h}×{w}: {err}"
            );
        }
    }
}
