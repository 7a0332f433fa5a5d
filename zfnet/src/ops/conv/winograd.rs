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
//! Summed over input channels, the element-wise products become 16 independent matrix
//! products, one per tile position ξ: `M[ξ] = U[ξ] · V[ξ]` with `U[ξ]` the transformed weights
//! `[c_out, c_in]` and `V[ξ]` the transformed input tiles `[c_in, tiles]`, the tiles of every
//! image of the batch side by side. They are computed by [`super::winograd_tiles`], fused with the
//! output transform, which adds the bias and applies the ReLU. On 13×13 maps the 7×7 tiles cover
//! 14×14: 1.94× fewer multiply-adds than the direct convolution. The transforms only add and
//! halve, so results agree with the direct convolution to float rounding (tested against it
//! here and in `ops::conv`'s tests).

use super::winograd_tiles::{Operands, TileOut, MAPS, TILES};
use super::ConvGeometry;
use rayon::prelude::*;

thread_local! {
    /// The transformed input `V` of this thread's last call, kept for its memory.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Bytes of V taken block by block (about half of a 32 MB last-level cache).
const V_IN_CACHE: usize = 16 << 20;
/// Input channels per task of the input transform.
const CHANNELS: usize = 8;
/// Tiles per task at most (a band's products, staged, are 48 KB).
const BAND: usize = 8 * TILES;

/// Whether [`conv_relu`] applies: 3×3, stride 1, padding 1, on a CPU with AVX2 and FMA.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.k == 3 && g.stride == 1 && g.padding == 1 && g.h >= 2 && g.w >= 2 && super::direct::avx2_fma()
}

/// `U[ξ][block][c][16]` = (G g Gᵀ)[ξ] of weight `[c_out, c_in, 3, 3]`, maps past `c_out` zero.
fn transform_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let blocks = c_out.div_ceil(MAPS);
    // computed as [o][ξ][c] (one task per output map), then laid out [ξ][block][c][16]
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
    let mut u = vec![0f32; 16 * blocks * c_in * MAPS];
    u.par_chunks_mut(c_in * MAPS)
        .enumerate()
        .for_each(|(xb, ub)| {
            let (xi, b) = (xb / blocks, xb % blocks);
            for m in 0..MAPS.min(c_out - b * MAPS) {
                let src = &by_map[((b * MAPS + m) * 16 + xi) * c_in..][..c_in];
                for (c, &v) in src.iter().enumerate() {
                    ub[c * MAPS + m] = v;
                }
            }
        });
    u
}

/// One image of a batch: its `h × w` input planes, read with `pad` zeros around them; its output
/// planes are `(h + 2·pad − 2) × (w + 2·pad − 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plane {
    pub h: usize,
    pub w: usize,
    pub pad: usize,
}

impl Plane {
    /// Output rows and columns.
    pub(crate) fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad).saturating_sub(2),
            (self.w + 2 * self.pad).saturating_sub(2),
        )
    }

    /// 2×2 output tiles down and across.
    fn tiles(&self) -> (usize, usize) {
        let (oh, ow) = self.out();
        (oh.div_ceil(2), ow.div_ceil(2))
    }
}

/// `relu(conv(x) + bias)` of `n` images by F(2×2, 3×3); `y` is `[n, c_out, h, w]`.
pub(super) fn conv_relu(
    x: &[f32],
    n: usize,
    weight: (&[f32], super::cache::Key),
    bias: &[f32],
    g: &ConvGeometry,
    y: &mut [f32],
) {
    let planes = vec![
        Plane {
            h: g.h,
            w: g.w,
            pad: 1
        };
        n
    ];
    conv_relu_planes(x, &planes, weight, bias, (g.c_in, g.c_out), y);
}

/// `relu(conv(x) + bias)` by F(2×2, 3×3) of images of any sizes laid end to end: image `i` is
/// `[c_in, h, w]` of `planes[i]` in `x` and `[c_out, oh, ow]` of [`Plane::out`] in `y`. Their
/// tiles lie side by side in the same products, so many small images (the occlusion sweep's
/// windows, unpadded) keep the kernel as busy as a batch does.
pub(crate) fn conv_relu_planes(
    x: &[f32],
    planes: &[Plane],
    (weight, key): (&[f32], super::cache::Key),
    bias: &[f32],
    (c_in, c_out): (usize, usize),
    y: &mut [f32],
) {
    // where each image's input, tiles and output start
    let mut starts = Vec::with_capacity(planes.len());
    let (mut at_x, mut tiles) = (0, 0);
    for p in planes {
        let (th, tw) = p.tiles();
        starts.push((at_x, tiles));
        at_x += c_in * p.h * p.w;
        tiles += th * tw;
    }
    assert!(
        x.len() == at_x && bias.len() == c_out,
        "inputs of the planes"
    );
    if tiles == 0 {
        return; // no outputs
    }
    let u = super::cache::rearranged(super::cache::Kind::Winograd, key, weight, |w| {
        transform_weights(w, c_out, c_in)
    });
    // V[ξ][group][c][6] for tile 6·group + i: the input transform. A register tile of the
    // products then reads one contiguous run per ξ (laid out [c][ξ][tile] or [ξ][c][tile], each
    // channel's step jumped to a new page, past the prefetchers, and the products waited on
    // memory)
    let groups = tiles.div_ceil(TILES);
    // every element is written below (the last group's places past the tiles zeroed here), so
    // the buffer of this thread's last call serves, unzeroed, instead of a fresh one each call
    let mut v = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    v.resize(16 * groups * c_in * TILES, 0.0);
    let tail = tiles - (groups - 1) * TILES;
    for xi in 0..16 {
        let last = &mut v[(xi * groups + groups - 1) * c_in * TILES..][..c_in * TILES];
        for run in last.chunks_exact_mut(TILES) {
            run[tail..].fill(0.0);
        }
    }
    let vs = super::super::SharedMut(v.as_mut_ptr());
    // by blocks of 8 channels, so that each task fills whole cache lines of V (one channel's
    // runs of 6 were partial lines, shared with the next channel's task)
    (0..c_in.div_ceil(CHANNELS))
        .into_par_iter()
        .for_each_init(Vec::new, |pad, cb| {
            let channels = cb * CHANNELS..(c_in.min((cb + 1) * CHANNELS));
            for (p, &(at_x, first)) in planes.iter().zip(&starts) {
                // SAFETY: writes V[ξ][g][c][i] of this block's channels only (disjoint across
                // tasks), at ξ < 16, g < groups, i < 6: inside V
                unsafe {
                    input_transform(
                        &x[at_x..],
                        p,
                        channels.clone(),
                        first,
                        pad,
                        (vs, groups, c_in),
                    )
                };
            }
        });
    // where each tile's outputs go
    let mut outs = Vec::with_capacity(tiles);
    let mut at_y = 0;
    for p in planes {
        let ((oh, ow), (th, tw)) = (p.out(), p.tiles());
        for ty in 0..th {
            for tx in 0..tw {
                outs.push(TileOut {
                    at: at_y + 2 * ty * ow + 2 * tx,
                    plane: oh * ow,
                    w: ow,
                    rows: (oh - 2 * ty).min(2),
                    cols: (ow - 2 * tx).min(2),
                });
            }
        }
        at_y += c_out * oh * ow;
    }
    assert!(y.len() == at_y, "outputs of the planes");
    let ops = Operands {
        u: &u,
        v: &v,
        c_in,
        c_out,
        tiles,
        outs: &outs,
        bias,
    };
    // tasks by (block of maps, band of tiles), bands of equal length
    let blocks = c_out.div_ceil(MAPS);
    let bands = tiles.div_ceil(BAND);
    let band = tiles.div_ceil(bands).next_multiple_of(TILES);
    // a V larger than the last-level cache is taken band by band, so that neighbouring tasks
    // read the same band (a batch of 32's V is 38 MB: block by block, every block streamed all
    // of it from memory, conv3–5 20% slower); a smaller one block by block, so that a thread
    // keeps one block's weights (the sweep's windows, 10 MB: 6% faster so)
    let band_major = 4 * v.len() > V_IN_CACHE;
    let out = super::super::SharedMut(y.as_mut_ptr());
    (0..blocks * bands)
        .into_par_iter()
        .for_each_init(Vec::new, |stage, task| {
            let (b, start) = if band_major {
                (task % blocks, (task / blocks) * band)
            } else {
                (task / bands, (task % bands) * band)
            };
            let end = (start + band).min(tiles);
            if start >= end {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX2 and FMA; task (b, band) writes maps b·16 … b·16+15
            // (< c_out) of the band's tiles only, disjoint across tasks, inside `y` (its length
            // is the planes' outputs, asserted above).
            unsafe {
                super::winograd_tiles::band(&ops, b, start..end, stage, out.ptr())
            }
        });
    SCRATCH.with(|s| *s.borrow_mut() = v);
}

/// One plane's tiles (`x` from its first channel on), transformed for the `channels`: `Bᵀ d B`
/// of each 4×4 input tile `d` into `V[ξ][g][c][i]` (`vs`, with `groups` and `c_in`) for tile
/// `first + t = 6·g + i`, using `pad` as scratch.
///
/// # Safety
/// `V` holds `16·groups·c_in·6` values, and no one else writes these channels' values.
unsafe fn input_transform(
    x: &[f32],
    p: &Plane,
    channels: std::ops::Range<usize>,
    first: usize,
    pad: &mut Vec<f32>,
    (vs, groups, c_in): (super::super::SharedMut, usize, usize),
) {
    let (h, w) = (p.h, p.w);
    let (th, tw) = p.tiles();
    // each channel's plane inside a zero border: tile (ty, tx) reads rows 2ty…2ty+3, columns
    // 2tx…2tx+3 of it, no bounds to check (ph ≥ h + 2·pad, pw ≥ w + 2·pad)
    let (ph, pw) = (2 * th + 2, 2 * tw + 2);
    let nc = channels.len();
    pad.clear();
    pad.resize(nc * ph * pw + 4 * pw, 0f32);
    let (planes, rows) = pad.split_at_mut(nc * ph * pw);
    for (ci, c) in channels.clone().enumerate() {
        let plane = &x[c * h * w..][..h * w];
        for (yy, src) in plane.chunks(w).enumerate() {
            planes[(ci * ph + yy + p.pad) * pw + p.pad..][..w].copy_from_slice(src);
        }
    }
    for ty in 0..th {
        for (ci, c) in channels.clone().enumerate() {
            // Bᵀ d for the whole band of four rows at once (vectorises along x)
            let band = &planes[(ci * ph + 2 * ty) * pw..][..4 * pw];
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
                let tile = first + ty * tw + tx;
                let (g, i) = (tile / TILES, tile % TILES);
                for r in 0..4 {
                    let row = &rows[r * pw + 2 * tx..][..4];
                    let b = [
                        row[0] - row[2],
                        row[1] + row[2],
                        row[2] - row[1],
                        row[1] - row[3],
                    ];
                    for (s, &val) in b.iter().enumerate() {
                        let at = (((r * 4 + s) * groups + g) * c_in + c) * TILES + i;
                        *vs.ptr().add(at) = val;
                    }
                }
            }
        }
    }
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
