//! Direct convolution for the layers Winograd does not take (ZFNet's conv1 7×7/2 and conv2 5×5/2,
//! AlexNet's conv1 11×11/4 and conv2 5×5/1, the occlusion sweep's unpadded 3×3 windows): no
//! im2col. On a copy of the image with a zero border of `padding`, channels
//! innermost (`[hp, wp, c_in]`), output position `q = oy·ow + ox` and reduction index
//! `k = (ky·K + kx)·c_in + ci` read one input value at a sum of two offsets:
//!
//! ```text
//! y[o][q] = relu(b[o] + Σ_k W[o][k] · xp[base(q) + off(k)])
//! base(q) = (s·oy·wp + s·ox)·c_in    off(k) = (ky·wp + kx)·c_in + ci
//! ```
//!
//! so a window is read as `K` runs of `K·c_in` consecutive values, which the prefetchers follow
//! (with planes innermost, conv2's window was 480 short runs a plane apart).
//!
//! A tile is 16 output maps × 6 positions held in 12 AVX registers of 8 maps. Each step of the
//! sum loads two vectors of packed weights (`[block][k][16]`, cached by content like Winograd's),
//! broadcasts the 6 positions' input values and does 12 FMAs: bound by the FMA units, not by
//! loads, and the im2col matrix (7 MB for conv1) is never written, read back and packed again.
//! Maps are vectorised rather than positions, so no tile is wasted on a row's end (conv2's rows are
//! 26 wide). The sum runs in `k` order from zero, then the bias is added and the ReLU applied, as
//! in the GEMM path.

use super::ConvGeometry;
use rayon::prelude::*;

/// Output maps per tile (two AVX registers).
const MAPS: usize = 16;
/// Output positions per tile.
const POSITIONS: usize = 6;

/// Whether [`conv_relu`] applies: any convolution on a CPU with AVX2 and FMA (the forward gives the
/// 3×3 stride-1 padded layers to Winograd first).
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.stride >= 1 && g.cols() > 0 && avx2_fma()
}

pub(super) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `W [c_out][c_in][K][K]` → `[block][(ky·K + kx)·c_in + ci][16]`, maps past `c_out` zero.
fn pack(weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (rows, k, c_in) = (g.rows(), g.k, g.c_in);
    let mut packed = vec![0f32; g.c_out.div_ceil(MAPS) * rows * MAPS];
    packed
        .par_chunks_mut(rows * MAPS)
        .enumerate()
        .for_each(|(b, block)| {
            for m in 0..MAPS.min(g.c_out - b * MAPS) {
                let src = &weight[(b * MAPS + m) * rows..][..rows];
                for (r, &v) in src.iter().enumerate() {
                    let (ci, kk) = (r / (k * k), r % (k * k));
                    block[(kk * c_in + ci) * MAPS + m] = v;
                }
            }
        });
    packed
}

/// Padded plane sizes `(hp, wp)`.
fn padded(g: &ConvGeometry) -> (usize, usize) {
    (g.h + 2 * g.padding, g.w + 2 * g.padding)
}

/// One image `[c_in, h, w]` with a zero border, channels innermost: `[hp, wp, c_in]` into `xp`.
fn pad_image(x: &[f32], g: &ConvGeometry, xp: &mut Vec<f32>) {
    let ((hp, wp), p, c_in) = (padded(g), g.padding, g.c_in);
    xp.clear();
    xp.resize(hp * wp * c_in, 0.0);
    for y in 0..g.h {
        let dst = &mut xp[((y + p) * wp + p) * c_in..][..g.w * c_in];
        for (ci, plane) in x.chunks_exact(g.h * g.w).enumerate() {
            let row = &plane[y * g.w..][..g.w];
            for (d, &v) in dst[ci..].iter_mut().step_by(c_in).zip(row) {
                *d = v;
            }
        }
    }
}

/// `off(k)` for every reduction index.
fn offsets(g: &ConvGeometry) -> Vec<u32> {
    let wp = padded(g).1;
    let mut off = Vec::with_capacity(g.rows());
    for ky in 0..g.k {
        for kx in 0..g.k {
            for ci in 0..g.c_in {
                off.push(((ky * wp + kx) * g.c_in + ci) as u32);
            }
        }
    }
    off
}

/// `base(q)` for every output position.
fn bases(g: &ConvGeometry) -> Vec<u32> {
    let ((oh, ow), wp, s) = (g.out_hw(), padded(g).1, g.stride);
    (0..oh)
        .flat_map(|oy| (0..ow).map(move |ox| ((s * oy * wp + s * ox) * g.c_in) as u32))
        .collect()
}

/// What one image's tiles read.
struct Operands<'a> {
    xp: &'a [f32],
    off: &'a [u32],
    base: &'a [u32],
    packed: &'a [f32],
    bias: &'a [f32],
    g: &'a ConvGeometry,
}

/// `relu(conv(x) + bias)` of `n` images; `y` is `[n, c_out, oh, ow]`. One image is split over
/// the threads by (map block, band of positions); a batch by image.
pub(super) fn conv_relu(
    x: &[f32],
    n: usize,
    (weight, key): (&[f32], super::cache::Key),
    bias: &[f32],
    g: &ConvGeometry,
    y: &mut [f32],
) {
    let packed = super::cache::rearranged(super::cache::Kind::Direct, key, weight, |w| pack(w, g));
    let (off, base) = (offsets(g), bases(g));
    let (npos, blocks) = (g.cols(), g.c_out.div_ceil(MAPS));
    assert!(x.len() == n * g.input_len() && y.len() == n * g.output_len() && bias.len() == g.c_out);
    if n == 1 {
        let mut xp = Vec::new();
        pad_image(x, g, &mut xp);
        let ops = Operands {
            xp: &xp,
            off: &off,
            base: &base,
            packed: &packed,
            bias,
            g,
        };
        // enough tasks for every thread to stay busy to the end
        let bands = (4 * rayon::current_num_threads())
            .div_ceil(blocks)
            .clamp(1, npos.div_ceil(POSITIONS));
        let band = npos.div_ceil(bands).next_multiple_of(POSITIONS);
        let out = super::super::SharedMut(y.as_mut_ptr());
        (0..blocks * bands).into_par_iter().for_each(|t| {
            let (b, start) = (t / bands, (t % bands) * band);
            // SAFETY: task (b, band) writes maps b·16 … b·16+15 (< c_out) at positions of its
            // band (< npos) only: disjoint across tasks, inside `y` (asserted above).
            unsafe { block(&ops, b, start..(start + band).min(npos), out.ptr()) }
        });
    } else {
        y.par_chunks_mut(g.output_len())
            .zip(x.par_chunks(g.input_len()))
            .for_each_init(Vec::new, |xp, (yi, xi)| {
                pad_image(xi, g, xp);
                let ops = Operands {
                    xp,
                    off: &off,
                    base: &base,
                    packed: &packed,
                    bias,
                    g,
                };
                for b in 0..blocks {
                    // SAFETY: writes maps of block b at positions < npos of this image's `yi`.
                    unsafe { block(&ops, b, 0..npos, yi.as_mut_ptr()) }
                }
            });
    }
}

/// Maps `16·b …` at positions `q` of one image into `y` (`[c_out, npos]`).
///
/// # Safety
/// `y` must hold `c_out · npos` values, and nothing else may touch the elements written.
unsafe fn block(ops: &Operands, b: usize, q: std::ops::Range<usize>, y: *mut f32) {
    let g = ops.g;
    let rows = g.rows();
    let maps = MAPS.min(g.c_out - b * MAPS);
    let (oh, ow) = g.out_hw();
    let (hp, wp) = padded(g);
    // every read lies inside xp: the last position's window ends on the padded plane's last row
    assert!(
        ops.xp.len() == hp * wp * g.c_in
            && g.stride * (oh - 1) + g.k <= hp
            && g.stride * (ow - 1) + g.k <= wp
            && ops.off.len() == rows
            && ops.base.len() == oh * ow
            && q.end <= oh * ow
    );
    let weights = &ops.packed[b * rows * MAPS..][..rows * MAPS];
    let mut bias = [0f32; MAPS];
    bias[..maps].copy_from_slice(&ops.bias[b * MAPS..][..maps]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` checked AVX2 and FMA; reads are inside xp (asserted above) and the
    // packed block; the caller vouches for the writes.
    unsafe {
        tiles(ops, weights, &bias, maps, q, y.add(b * MAPS * oh * ow))
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution without AVX2: `applies` is false")
}

/// Positions whose results are staged position-major (`[position][16 maps]`, 6 KB) before
/// [`unstage`] turns them map-major into the output by 8×8 transposes: stored one value at a
/// time, the 16 maps of each position had cost conv1 a quarter of its time.
const CHUNK: usize = 16 * POSITIONS;

/// The tiles of positions `q` for one block of maps; `y` points at the block's first map.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiles(
    ops: &Operands,
    weights: &[f32],
    bias: &[f32; MAPS],
    maps: usize,
    q: std::ops::Range<usize>,
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let (xp, off) = (ops.xp.as_ptr(), ops.off);
    let npos = ops.base.len();
    let (b0, b1) = (
        _mm256_loadu_ps(bias.as_ptr()),
        _mm256_loadu_ps(bias.as_ptr().add(8)),
    );
    let zero = _mm256_setzero_ps();
    let mut stage = [0f32; CHUNK * MAPS];
    let mut c0 = q.start;
    while c0 < q.end {
        let len = CHUNK.min(q.end - c0);
        for t in (0..len).step_by(POSITIONS) {
            // the last tile repeats its last position where it runs past the band
            let base = |p: usize| xp.add(ops.base[(c0 + t + p).min(q.end - 1)] as usize);
            let x = [base(0), base(1), base(2), base(3), base(4), base(5)];
            let mut acc = [zero; 2 * POSITIONS];
            let mut w = weights.as_ptr();
            for &o in off {
                let o = o as usize;
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                w = w.add(MAPS);
                for p in 0..POSITIONS {
                    let v = _mm256_broadcast_ss(&*x[p].add(o));
                    acc[2 * p] = _mm256_fmadd_ps(w0, v, acc[2 * p]);
                    acc[2 * p + 1] = _mm256_fmadd_ps(w1, v, acc[2 * p + 1]);
                }
            }
            for p in 0..POSITIONS.min(len - t) {
                let dst = stage.as_mut_ptr().add((t + p) * MAPS);
                _mm256_storeu_ps(dst, _mm256_max_ps(_mm256_add_ps(acc[2 * p], b0), zero));
                _mm256_storeu_ps(
                    dst.add(8),
                    _mm256_max_ps(_mm256_add_ps(acc[2 * p + 1], b1), zero),
                );
            }
        }
        unstage(&stage, len, maps, y.add(c0), npos);
        c0 += len;
    }
}

/// `y[m·npos + p] = stage[p·16 + m]` for `p < len`, `m < maps`: by 8×8 transposes where a whole
/// 8 × 8 block is valid, one value at a time at the edges.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unstage(stage: &[f32; CHUNK * MAPS], len: usize, maps: usize, y: *mut f32, npos: usize) {
    use std::arch::x86_64::*;
    let whole = len / 8 * 8;
    for m0 in (0..maps / 8 * 8).step_by(8) {
        for p0 in (0..whole).step_by(8) {
            let r: [__m256; 8] =
                std::array::from_fn(|j| _mm256_loadu_ps(stage.as_ptr().add((p0 + j) * MAPS + m0)));
            for (i, col) in transpose8(r).into_iter().enumerate() {
                _mm256_storeu_ps(y.add((m0 + i) * npos + p0), col);
            }
        }
    }
    for m in 0..maps {
        let from = if m < maps / 8 * 8 { whole } else { 0 };
        for p in from..len {
            *y.add(m * npos + p) = stage[p * MAPS + m];
        }
    }
}

/// Rows of an 8×8 block → its columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::conv_relu_image;
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `relu(b + Σ w·x)` from the definition, in f64.
    fn reference(x: &[f64], w: &[f64], b: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let (oh, ow) = g.out_hw();
        let mut y = vec![0f64; g.output_len()];
        for o in 0..g.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = b[o];
                    for ci in 0..g.c_in {
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                if (0..g.h as isize).contains(&iy)
                                    && (0..g.w as isize).contains(&ix)
                                {
                                    sum += w[((o * g.c_in + ci) * g.k + ky) * g.k + kx]
                                        * x[(ci * g.h + iy as usize) * g.w + ix as usize];
                                }
                            }
                        }
                    }
                    y[(o * oh + oy) * ow + ox] = sum.max(0.0);
                }
            }
        }
        y
    }

    /// Equal to the definition (computed in f64) and to im2col + GEMM, to float rounding, for
    /// conv1's and conv2's geometry narrowed, maps not a multiple of 16, positions not a
    /// multiple of 6, strides 2–4, one image and a batch.
    #[test]
    #[cfg_attr(
        not(target_arch = "x86_64"),
        ignore = "the direct kernel is written for x86-64 (AVX2 + FMA)"
    )]
    fn equals_the_definition() {
        if !avx2_fma() {
            eprintln!("skipped: this CPU has no AVX2 + FMA, so the direct kernel never runs");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (n, c_in, c_out, k, stride, padding, h, w) in [
            (1, 3, 96, 7, 2, 1, 37, 41),
            (2, 3, 20, 7, 2, 1, 23, 23),
            (1, 24, 37, 5, 2, 0, 17, 19),
            (3, 5, 16, 11, 4, 2, 30, 27),
            (1, 2, 3, 3, 3, 0, 3, 3),
        ] {
            let g = ConvGeometry {
                c_in,
                c_out,
                k,
                stride,
                padding,
                h,
                w,
            };
            assert!(applies(&g));
            let mut rand = |len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let (x, wt, b) = (rand(n * g.input_len()), rand(c_out * g.rows()), rand(c_out));
            let wide = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
            let (wt64, b64) = (wide(&wt), wide(&b));
            let mut want = Vec::new();
            let mut gemm = vec![0f32; n * g.output_len()];
            let mut cols = Vec::new();
            for (img, out) in x.chunks(g.input_len()).zip(gemm.chunks_mut(g.output_len())) {
                want.extend(reference(&wide(img), &wt64, &b64, &g));
                conv_relu_image(img, &wt, &b, &g, &mut cols, out, false);
            }
            let mut got = vec![f32::NAN; n * g.output_len()];
            conv_relu(
                &x,
                n,
                (&wt, super::super::cache::Key::Contents),
                &b,
                &g,
                &mut got,
            );
            let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (name, ys) in [("direct", &got), ("im2col + GEMM", &gemm)] {
                // (a NaN would slip through the fold's max)
                assert!(
                    ys.iter().all(|v| v.is_finite()),
                    "{name}: every output written"
                );
                let err = ys
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (&a, b)| m.max((f64::from(a) - b).abs()));
                assert!(
                    err <= 1e-6 * scale * (g.rows() as f64).sqrt(),
                    "{name} {n}×{c_in}→{c_out} k{k}/{stride} p{padding} {h}×{w}: {err} of {scale}"
                );
            }
        }
    }
}
