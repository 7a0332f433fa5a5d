//! Winograd's 16 products summed over the input channels, fused with the output transform:
//! one task computes a block of 16 output maps for a band of tiles, all 16 tile positions ξ,
//! then turns them into 2×2 outputs at once, so the products `M` never leave the task (a batch's
//! `M` was megabytes written by 16 GEMMs and read back by the transform).
//!
//! The sum is the direct kernel's register tile ([`super::direct`]): 16 maps × 6 tiles in 12 AVX
//! registers, per input channel two vectors of packed weights `U[ξ][block][c][16]` and six
//! broadcast values of `V[c][ξ][tile]`, 12 FMAs. A band's products are staged tile-major
//! (`[tile][ξ][16 maps]`), so the output transform reads each tile's 16 values for 8 maps as 16
//! vectors and writes 2×2 outputs for 8 maps at a time.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output maps per block (two AVX registers).
pub(super) const MAPS: usize = 16;
/// Tiles per register tile.
pub(super) const TILES: usize = 6;

/// Where one tile's 2×2 outputs go in `y`: map 0's top-left output at `at`, each map
/// `plane` further, rows `w` apart; `rows × cols` of the 2×2 lie inside the image.
#[derive(Debug, Clone, Copy)]
pub(super) struct TileOut {
    pub at: usize,
    pub plane: usize,
    pub w: usize,
    pub rows: usize,
    pub cols: usize,
}

/// What every task reads.
pub(super) struct Operands<'a> {
    /// `U[ξ][block][c][16]`, maps past `c_out` zero.
    pub u: &'a [f32],
    /// `V[ξ][group][c][6]`, tile `6·group + i` at `i`, tiles past `tiles` zero.
    pub v: &'a [f32],
    pub c_in: usize,
    pub c_out: usize,
    pub tiles: usize,
    pub outs: &'a [TileOut],
    pub bias: &'a [f32],
}

/// Maps `16·b …` of the tiles `band` into `y`, using `stage` as scratch.
///
/// # Safety
/// The CPU has AVX2 and FMA; `y` holds every output the band's [`TileOut`]s name, and nothing
/// else touches the outputs of these maps and tiles meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn band(
    ops: &Operands,
    b: usize,
    band: std::ops::Range<usize>,
    stage: &mut Vec<f32>,
    y: *mut f32,
) {
    let (c_in, tiles) = (ops.c_in, ops.tiles);
    let blocks = ops.c_out.div_ceil(MAPS);
    let groups = tiles.div_ceil(TILES);
    assert!(
        ops.u.len() == 16 * blocks * c_in * MAPS
            && ops.v.len() == 16 * groups * c_in * TILES
            && band.start.is_multiple_of(TILES)
            && band.end <= tiles
            && ops.outs.len() == tiles
            && !band.is_empty()
    );
    let n = band.len();
    stage.resize(n * 16 * MAPS, 0.0);
    let zero = _mm256_setzero_ps();
    for xi in 0..16 {
        let u = ops.u.as_ptr().add((xi * blocks + b) * c_in * MAPS);
        let mut t = 0;
        while t < n {
            // group (band.start + t) / 6 of ξ: c_in runs of 6 (a band starts on a group)
            let g = (band.start + t) / TILES;
            let v = ops.v.as_ptr().add((xi * groups + g) * c_in * TILES);
            let mut acc = [zero; 2 * TILES];
            let (mut w, mut v) = (u, v);
            for _ in 0..c_in {
                // (reads inside the group's c_in·6 values of V, asserted above)
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                w = w.add(MAPS);
                for p in 0..TILES {
                    let s = _mm256_broadcast_ss(&*v.add(p));
                    acc[2 * p] = _mm256_fmadd_ps(w0, s, acc[2 * p]);
                    acc[2 * p + 1] = _mm256_fmadd_ps(w1, s, acc[2 * p + 1]);
                }
                v = v.add(TILES);
            }
            for p in 0..TILES.min(n - t) {
                let dst = stage.as_mut_ptr().add(((t + p) * 16 + xi) * MAPS);
                _mm256_storeu_ps(dst, acc[2 * p]);
                _mm256_storeu_ps(dst.add(8), acc[2 * p + 1]);
            }
            t += TILES;
        }
    }
    // Y = Aᵀ M A + bias, ReLU, 8 maps at a time
    let maps = MAPS.min(ops.c_out - b * MAPS);
    for half in 0..maps.div_ceil(8) {
        let m0 = b * MAPS + half * 8;
        let count = 8.min(ops.c_out - m0);
        let mut bias = [0f32; 8];
        bias[..count].copy_from_slice(&ops.bias[m0..][..count]);
        let bias = _mm256_loadu_ps(bias.as_ptr());
        for j in 0..n {
            let s = stage.as_ptr().add(j * 16 * MAPS + half * 8);
            let e = |xi: usize| _mm256_loadu_ps(s.add(xi * MAPS));
            let add3 = |a, b, c| _mm256_add_ps(_mm256_add_ps(a, b), c);
            let sub3 = |a, b, c| _mm256_sub_ps(_mm256_sub_ps(a, b), c);
            // Aᵀ M: 2×4
            let r0: [__m256; 4] = std::array::from_fn(|s| add3(e(s), e(4 + s), e(8 + s)));
            let r1: [__m256; 4] = std::array::from_fn(|s| sub3(e(4 + s), e(8 + s), e(12 + s)));
            let relu = |v| _mm256_max_ps(_mm256_add_ps(v, bias), zero);
            let vals = [
                [
                    relu(add3(r0[0], r0[1], r0[2])),
                    relu(sub3(r0[1], r0[2], r0[3])),
                ],
                [
                    relu(add3(r1[0], r1[1], r1[2])),
                    relu(sub3(r1[1], r1[2], r1[3])),
                ],
            ];
            let out = ops.outs[band.start + j];
            let mut lanes = [0f32; 8];
            for (r, row) in vals.iter().enumerate().take(out.rows) {
                for (c, &val) in row.iter().enumerate().take(out.cols) {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), val);
                    let dst = y.add(out.at + m0 * out.plane + r * out.w + c);
                    for (m, &l) in lanes.iter().enumerate().take(count) {
                        *dst.add(m * out.plane) = l;
                    }
                }
            }
        }
    }
}
