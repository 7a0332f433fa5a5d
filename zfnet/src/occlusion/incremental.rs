//! The incremental occlusion sweep: the occluder changes only the activations inside its
//! projective field, so every layer recomputes just that window ([`Window`]) from the unoccluded
//! activations ([`Base`]): conv on the window's input, LRN and pooling on the window. The head
//! then runs batched over positions (the idea of Krypton, Nakandala et al., SIGMOD 2019).
//!
//! Positions go through the layers together, [`GROUP`] at a time, so that one layer's windows of
//! every position in the group make one batch ([`conv_relu_windows`]): a conv3 window is a
//! dozen Winograd tiles, sixteen of them keep the products' kernel busy.

use super::OcclusionParams;
use crate::arch::INPUT_SIZE;
use crate::model::ZfNet;
use crate::ops::conv::{conv_relu_windows, WindowConv};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// A layer's full unoccluded activation `[c, h, w]`.
struct Base {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

/// The occluded values of a layer inside `[y0, y1) × [x0, x1)` (all channels): the region the
/// occluder reaches at that layer; elsewhere the layer equals its [`Base`].
struct Window {
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
    values: Vec<f32>,
}

impl Window {
    fn get(&self, base: &Base, c: usize, y: usize, x: usize) -> f32 {
        if y >= self.y0 && y < self.y1 && x >= self.x0 && x < self.x1 {
            let (ph, pw) = (self.y1 - self.y0, self.x1 - self.x0);
            self.values[(c * ph + (y - self.y0)) * pw + (x - self.x0)]
        } else {
            base.data[(c * base.h + y) * base.w + x]
        }
    }
}

/// Output indices `[lo, hi)` of a window op (kernel `k`, stride `s`, padding `p`, `out` outputs)
/// whose window overlaps input indices `[a, b)`.
pub(super) fn affected(
    a: usize,
    b: usize,
    k: usize,
    s: usize,
    p: usize,
    out: usize,
) -> (usize, usize) {
    // output o reads inputs [o·s − p, o·s − p + k)
    let lo = (a + p + 1).saturating_sub(k).div_ceil(s);
    let hi = ((b - 1 + p) / s + 1).min(out);
    (lo.min(hi), hi)
}

fn host(t: &Tensor) -> Result<Base> {
    let (_, c, h, w) = t.dims4()?;
    Ok(Base {
        c,
        h,
        w,
        data: t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?,
    })
}

/// One conv layer's unoccluded state and parameters on the host.
struct Stage {
    /// The rectified conv output.
    activation: Base,
    /// After LRN, where the layer has one.
    normalized: Option<Base>,
    /// After max pooling, where the layer has one.
    pooled: Option<Base>,
    weight: Vec<f32>,
    /// The tensor `weight` was read from.
    weight_tensor: Tensor,
    bias: Vec<f32>,
}

/// Positions swept through the layers together.
const GROUP: usize = 16;

/// Per position: the strongest conv5 map's sum and the class probabilities.
pub(super) fn incremental(
    net: &ZfNet,
    base: &crate::Trace,
    input: &[f32],
    params: &OcclusionParams,
    fill: [f32; 3],
    strongest_map: usize,
    progress: &(dyn Fn(usize, usize) -> bool + Sync),
) -> Result<Vec<(f32, Vec<f32>)>> {
    let input_base = Base {
        c: 3,
        h: INPUT_SIZE,
        w: INPUT_SIZE,
        data: input.to_vec(),
    };
    let mut stages = Vec::new();
    for (i, t) in base.convs.iter().enumerate() {
        let conv = &net.convs[i];
        stages.push(Stage {
            activation: host(&t.activation)?,
            normalized: t.normalized.as_ref().map(host).transpose()?,
            pooled: t.pooled.as_ref().map(|p| host(&p.output)).transpose()?,
            weight: conv
                .weight
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1::<f32>()?,
            weight_tensor: conv.weight.clone(),
            bias: conv.bias.to_device(&Device::Cpu)?.to_vec1::<f32>()?,
        });
    }
    let conv5 = &stages[4].activation;
    let (h5, w5) = (conv5.h, conv5.w);
    let pool5 = stages[4]
        .pooled
        .as_ref()
        .ok_or_else(|| Error::Shape("conv5 has no pool".into()))?;
    let grid = params.grid();
    let total = grid * grid;
    let mut positions: Vec<(f32, Vec<f32>)> = Vec::with_capacity(total);
    let all: Vec<usize> = (0..total).collect();
    // the windows' inputs and outputs, kept across layers and groups rather than allocated for
    // each (megabytes at conv2)
    let mut scratch = (Vec::new(), Vec::new());
    for group in all.chunks(GROUP) {
        // the occluder over each position's square of the input
        let mut patches: Vec<Window> = group
            .iter()
            .map(|&p| {
                let (y0, y1, x0, x1) = params.square(p / grid, p % grid);
                let area = (y1 - y0) * (x1 - x0);
                Window {
                    y0,
                    y1,
                    x0,
                    x1,
                    values: fill
                        .iter()
                        .flat_map(|&v| std::iter::repeat_n(v, area))
                        .collect(),
                }
            })
            .collect();
        let mut below = &input_base;
        let mut sums = vec![0f32; group.len()];
        for (i, stage) in stages.iter().enumerate() {
            let spec = net.convs[i].spec;
            let act = &stage.activation;
            patches = conv_patches(
                below,
                &patches,
                act,
                stage,
                (spec.kernel, spec.stride, spec.padding),
                &mut scratch,
            );
            if i == 4 {
                // summed whole rather than as base − outside + inside: when the occluder
                // takes most of a strong map away, that difference loses the digits left
                sums = patches
                    .iter()
                    .map(|patch| {
                        (0..h5)
                            .flat_map(|y| (0..w5).map(move |x| (y, x)))
                            .map(|(y, x)| patch.get(act, strongest_map, y, x))
                            .sum()
                    })
                    .collect();
            }
            let mut level = act;
            if let (Some(norm), Some(params)) = (&stage.normalized, spec.lrn) {
                patches.par_iter_mut().for_each(|patch| {
                    let area = (patch.y1 - patch.y0) * (patch.x1 - patch.x0);
                    let mut out = vec![0f32; patch.values.len()];
                    crate::ops::lrn::forward_image(&patch.values, &mut out, act.c, area, params);
                    patch.values = out;
                });
                level = norm;
            }
            if let (Some(pooled), Some(pool)) = (&stage.pooled, spec.pool) {
                patches = patches
                    .par_iter()
                    .map(|patch| pool_patch(level, patch, pooled, pool))
                    .collect();
                level = pooled;
            }
            below = level;
        }
        // pool5 with each patch applied, flattened for the head
        for (patch, sum) in patches.iter().zip(sums) {
            let mut flat = pool5.data.clone();
            let (ph, pw) = (patch.y1 - patch.y0, patch.x1 - patch.x0);
            for c in 0..pool5.c {
                for y in patch.y0..patch.y1 {
                    let src = &patch.values[(c * ph + (y - patch.y0)) * pw..][..pw];
                    flat[(c * pool5.h + y) * pool5.w + patch.x0..][..pw].copy_from_slice(src);
                }
            }
            positions.push((sum, flat));
        }
        if !progress(positions.len(), total) {
            return Err(Error::Cancelled);
        }
    }
    // the head, batched over positions
    let features = pool5.data.len();
    let mut out = Vec::with_capacity(total);
    for chunk in positions.chunks(256) {
        let data: Vec<f32> = chunk.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let x = Tensor::from_vec(data, (chunk.len(), features), net.device())?;
        let (_, _, logits) = net.head(&x.reshape((chunk.len(), pool5.c, pool5.h, pool5.w))?)?;
        let probs = crate::model::softmax(&logits)?.to_vec2::<f32>()?;
        out.extend(chunk.iter().map(|(s, _)| *s).zip(probs));
    }
    Ok(out)
}

/// Where a conv layer's occluded outputs lie and the input window they read.
struct Region {
    /// Output rows `[oy0, oy1)` and columns `[ox0, ox1)`.
    oy0: usize,
    oy1: usize,
    ox0: usize,
    ox1: usize,
    /// The input window's first row and column (negative in the zero padding) and its size.
    iy0: isize,
    ix0: isize,
    wh: usize,
    ww: usize,
}

impl Region {
    fn of(patch: &Window, output: &Base, k: usize, s: usize, p: usize) -> Region {
        let (oy0, oy1) = affected(patch.y0, patch.y1, k, s, p, output.h);
        let (ox0, ox1) = affected(patch.x0, patch.x1, k, s, p, output.w);
        // input window rows [oy0·s − p, (oy1 − 1)·s − p + k)
        Region {
            oy0,
            oy1,
            ox0,
            ox1,
            iy0: (oy0 * s) as isize - p as isize,
            ix0: (ox0 * s) as isize - p as isize,
            wh: (oy1 - oy0 - 1) * s + k,
            ww: (ox1 - ox0 - 1) * s + k,
        }
    }
}

/// Each patch's conv layer output inside the region its occluded input reaches: conv + bias +
/// ReLU on just that window of the input (zero padding where the window leaves the image), the
/// windows of all the patches in one call; `x` and `y` are scratch for its inputs and outputs.
fn conv_patches(
    input: &Base,
    patches: &[Window],
    output: &Base,
    stage: &Stage,
    (k, s, p): (usize, usize, usize),
    (x, y): &mut (Vec<f32>, Vec<f32>),
) -> Vec<Window> {
    let regions: Vec<Region> = patches
        .iter()
        .map(|patch| Region::of(patch, output, k, s, p))
        .collect();
    x.resize(regions.iter().map(|r| input.c * r.wh * r.ww).sum(), 0.0);
    let windows = crate::ops::split_lengths_mut(x, regions.iter().map(|r| input.c * r.wh * r.ww));
    windows
        .into_par_iter()
        .zip(patches.par_iter().zip(&regions))
        .for_each(|(window, (patch, r))| fill_window(input, patch, r, window));
    let out_len = |r: &Region| output.c * (r.oy1 - r.oy0) * (r.ox1 - r.ox0);
    y.resize(regions.iter().map(out_len).sum(), 0.0); // every value is written
    let conv = WindowConv {
        c_in: input.c,
        c_out: output.c,
        k,
        stride: s,
    };
    let sizes: Vec<(usize, usize)> = regions.iter().map(|r| (r.wh, r.ww)).collect();
    conv_relu_windows(
        x,
        &sizes,
        (&stage.weight_tensor, &stage.weight),
        &stage.bias,
        conv,
        y,
    );
    let mut at = 0;
    regions
        .iter()
        .map(|r| {
            let len = out_len(r);
            at += len;
            Window {
                y0: r.oy0,
                y1: r.oy1,
                x0: r.ox0,
                x1: r.ox1,
                values: y[at - len..at].to_vec(),
            }
        })
        .collect()
}

/// The input window `r` reads, `[c, wh, ww]`, into `window` (every value written): the base's
/// values where it lies on the image, zero where it leaves it, then the patch's over them where
/// the patch reaches (what `Window::get` gives, by runs).
fn fill_window(input: &Base, patch: &Window, r: &Region, window: &mut [f32]) {
    let (wh, ww, iy0, ix0) = (r.wh, r.ww, r.iy0, r.ix0);
    let xa = ix0.max(0) as usize;
    let xb = (ix0 + ww as isize).clamp(0, input.w as isize) as usize;
    let (pa, pb) = (patch.x0.max(xa), patch.x1.min(xb));
    let pw = patch.x1 - patch.x0;
    let at = |x: usize| (x as isize - ix0) as usize;
    for c in 0..input.c {
        for dy in 0..wh {
            let row = &mut window[(c * wh + dy) * ww..][..ww];
            let y = iy0 + dy as isize;
            if y < 0 || y >= input.h as isize || xa >= xb {
                row.fill(0.0); // in the padding
                continue;
            }
            let y = y as usize;
            // zero where the row leaves the image, the base's values, the patch's over them
            row[..at(xa)].fill(0.0);
            row[at(xb)..].fill(0.0);
            row[at(xa)..at(xb)].copy_from_slice(&input.data[(c * input.h + y) * input.w..][xa..xb]);
            if (patch.y0..patch.y1).contains(&y) && pa < pb {
                let src = &patch.values[(c * (patch.y1 - patch.y0) + y - patch.y0) * pw..][..pw];
                row[at(pa)..at(pb)].copy_from_slice(&src[pa - patch.x0..pb - patch.x0]);
            }
        }
    }
}

/// The pooled outputs whose windows overlap the patch, from the patched input: the input
/// rows and columns they read copied out whole (by runs, as for a conv window), then pooled as
/// the full map is ([`crate::ops::maxpool::pool_values`]; through [`Window::get`] one value at
/// a time, pooling had cost conv1 as much as its convolution).
fn pool_patch(
    input: &Base,
    patch: &Window,
    output: &Base,
    pool: crate::ops::maxpool::Pool2d,
) -> Window {
    let (k, s) = (pool.kernel, pool.stride);
    let (oy0, oy1) = affected(patch.y0, patch.y1, k, s, 0, output.h);
    let (ox0, ox1) = affected(patch.x0, patch.x1, k, s, 0, output.w);
    // input rows [oy0·s, (oy1 − 1)·s + k) and columns likewise, cut at the map's edge (ceil
    // mode: the last windows may run past it, as they do on the full map)
    let (iy0, ix0) = (oy0 * s, ox0 * s);
    let r = Region {
        oy0,
        oy1,
        ox0,
        ox1,
        iy0: iy0 as isize,
        ix0: ix0 as isize,
        wh: ((oy1 - 1) * s + k).min(input.h) - iy0,
        ww: ((ox1 - 1) * s + k).min(input.w) - ix0,
    };
    let mut region = vec![0f32; input.c * r.wh * r.ww];
    fill_window(input, patch, &r, &mut region);
    // the region pools to exactly the outputs [oy0, oy1) × [ox0, ox1): its windows start where
    // theirs do, and where the last one is cut at the map's edge the region is cut the same way
    let values = crate::ops::maxpool::pool_values(&region, (r.wh, r.ww), pool);
    debug_assert_eq!(values.len(), input.c * (oy1 - oy0) * (ox1 - ox0));
    Window {
        y0: oy0,
        y1: oy1,
        x0: ox0,
        x1: ox1,
        values,
    }
}
