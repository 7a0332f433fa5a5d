//! Many small unpadded convolutions at once: the occlusion sweep's windows, where each occluder
//! position recomputes a layer only on the window its occluded input reaches.
//!
//! A 3×3 stride-1 layer's windows (conv3–5) go through Winograd together, their tiles side by
//! side in the same products ([`winograd::conv_relu_planes`]): one window of a 13×13 map is a
//! dozen tiles, too few to keep the threads busy, while sixteen positions' windows make a batch.
//! The other layers' windows (conv1, conv2) run the direct kernel one window per task.

use super::winograd::{conv_relu_planes, Plane};
use super::{cache, conv_relu_image, direct, ConvGeometry, DIRECT, WINOGRAD};
use candle_core::Tensor;
use rayon::prelude::*;

/// A layer's shape for [`conv_relu_windows`]: channels in and out, kernel size and stride.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowConv {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
}

impl WindowConv {
    fn geometry(&self, (h, w): (usize, usize)) -> ConvGeometry {
        ConvGeometry {
            c_in: self.c_in,
            c_out: self.c_out,
            k: self.k,
            stride: self.stride,
            padding: 0,
            h,
            w,
        }
    }
}

/// `relu(conv(x) + bias)` without padding of windows laid end to end: window `i` is
/// `[c_in, h, w]` of `sizes[i]` (at least `k × k`) in `x` and `[c_out, oh, ow]` in `y`, end to end
/// too. `weight` is the tensor `w` was read from (its rearranged forms are found by its id).
pub(crate) fn conv_relu_windows(
    x: &[f32],
    sizes: &[(usize, usize)],
    (weight, w): (&Tensor, &[f32]),
    bias: &[f32],
    conv: WindowConv,
    y: &mut [f32],
) {
    let key = cache::Key::of(weight);
    if conv.k == 3 && conv.stride == 1 && WINOGRAD.on() {
        let planes: Vec<Plane> = sizes.iter().map(|&(h, w)| Plane { h, w, pad: 0 }).collect();
        conv_relu_planes(x, &planes, (w, key), bias, (conv.c_in, conv.c_out), y);
        return;
    }
    let geometries: Vec<ConvGeometry> = sizes.iter().map(|&s| conv.geometry(s)).collect();
    let inputs = geometries.iter().scan(0, |at, g| {
        let len = g.input_len();
        *at += len;
        Some(&x[*at - len..*at])
    });
    let outputs = super::super::split_lengths_mut(y, geometries.iter().map(|g| g.output_len()));
    let work: Vec<_> = geometries.iter().zip(inputs).zip(outputs).collect();
    work.into_par_iter()
        .for_each_init(Vec::new, |cols, ((g, x), y)| {
            if direct::applies(g) && DIRECT.on() {
                direct::conv_relu(x, 1, (w, key), bias, g, y);
            } else {
                conv_relu_image(x, w, bias, g, cols, y, false);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every window equals its own convolution by im2col + GEMM, for the Winograd layers (3×3/1)
    /// and the direct kernel's (7×7/2), with windows of odd and even sizes side by side.
    #[test]
    fn windows_equal_their_own_convolutions() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (k, stride, sizes) in [
            (3, 1, vec![(3, 3), (7, 9), (8, 4), (15, 15), (4, 13)]),
            (7, 2, vec![(7, 7), (13, 20), (30, 11)]),
        ] {
            let conv = WindowConv {
                c_in: 9,
                c_out: 17,
                k,
                stride,
            };
            let mut rand = |len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let geometries: Vec<ConvGeometry> = sizes.iter().map(|&s| conv.geometry(s)).collect();
            let x = rand(geometries.iter().map(|g| g.input_len()).sum());
            let wt = rand(conv.c_out * conv.c_in * k * k);
            let b = rand(conv.c_out);
            let weight = Tensor::from_slice(&wt, wt.len(), &candle_core::Device::Cpu).unwrap();
            let mut want = Vec::new();
            let (mut at, mut cols) = (0, Vec::new());
            for g in &geometries {
                let mut y = vec![0f32; g.output_len()];
                conv_relu_image(
                    &x[at..][..g.input_len()],
                    &wt,
                    &b,
                    g,
                    &mut cols,
                    &mut y,
                    false,
                );
                want.extend(y);
                at += g.input_len();
            }
            let mut got = vec![f32::NAN; want.len()];
            conv_relu_windows(&x, &sizes, (&weight, &wt), &b, conv, &mut got);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 2e-5, "{k}×{k}/{stride} windows {sizes:?}: {err}");
            // no windows: nothing to do, nothing to fail
            conv_relu_windows(&[], &[], (&weight, &wt), &b, conv, &mut []);
        }
    }
}
