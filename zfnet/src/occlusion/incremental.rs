//! The incremental occlusion sweep: the occluder changes only the activations inside its
//! projective field, so every layer recomputes just that window ([`Window`]) from the unoccluded
//! activations ([`Base`]): conv on the window's input, LRN and pooling on the window. The head
//! then runs batched over positions (the idea of Krypton, Nakandala et al., SIGMOD 2019).

use super::OcclusionParams;
use crate::arch::INPUT_SIZE;
use crate::model::ZfNet;
use crate::ops::conv::{conv_relu_window, ConvGeometry};
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
    let done = std::sync::atomic::AtomicUsize::new(0);
    let cancelled = std::sync::atomic::AtomicBool::new(false);
    let positions: Vec<(f32, Vec<f32>)> = (0..total)
        .into_par_iter()
        .map_init(Vec::new, |cols, p| {
            if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                return (0.0, Vec::new());
            }
            let (y0, y1, x0, x1) = params.square(p / grid, p % grid);
            let mut values = vec![0f32; 3 * (y1 - y0) * (x1 - x0)];
            for (c, &v) in fill.iter().enumerate() {
                values[c * (y1 - y0) * (x1 - x0)..(c + 1) * (y1 - y0) * (x1 - x0)].fill(v);
            }
            let mut patch = Window {
                y0,
                y1,
                x0,
                x1,
                values,
            };
            let mut below = &input_base;
            let mut map_sum = 0.0;
            for (i, stage) in stages.iter().enumerate() {
                let spec = net.convs[i].spec;
                let act = &stage.activation;
                patch = conv_patch(
                    below,
                    &patch,
                    act,
                    (&stage.weight_tensor, &stage.weight),
                    &stage.bias,
                    spec.kernel,
                    spec.stride,
                    spec.padding,
                    cols,
                );
                if i == 4 {
                    // summed whole rather than as base − outside + inside: when the occluder
                    // takes most of a strong map away, that difference loses the digits left
                    map_sum = (0..h5)
                        .flat_map(|y| (0..w5).map(move |x| (y, x)))
                        .map(|(y, x)| patch.get(act, strongest_map, y, x))
                        .sum();
                }
                let mut level = act;
                if let (Some(norm), Some(params)) = (&stage.normalized, spec.lrn) {
                    let area = (patch.y1 - patch.y0) * (patch.x1 - patch.x0);
                    let mut out = vec![0f32; patch.values.len()];
                    crate::ops::lrn::forward_image(&patch.values, &mut out, act.c, area, params);
                    patch.values = out;
                    level = norm;
                }
                if let (Some(pooled), Some(pool)) = (&stage.pooled, spec.pool) {
                    patch = pool_patch(level, &patch, pooled, pool);
                    level = pooled;
                }
                below = level;
            }
            // pool5 with the patch applied, flattened for the head
            let mut flat = pool5.data.clone();
            let (ph, pw) = (patch.y1 - patch.y0, patch.x1 - patch.x0);
            for c in 0..pool5.c {
                for y in patch.y0..patch.y1 {
                    for x in patch.x0..patch.x1 {
                        flat[(c * pool5.h + y) * pool5.w + x] =
                            patch.values[(c * ph + (y - patch.y0)) * pw + (x - patch.x0)];
                    }
                }
            }
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if !progress(n, total) {
                cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            (map_sum, flat)
        })
        .collect();
    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Cancelled);
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

/// The conv layer's output inside the region its occluded input window reaches: conv + bias +
/// ReLU on just that window of the input (zero padding where the window leaves the image).
#[allow(clippy::too_many_arguments)]
fn conv_patch(
    input: &Base,
    patch: &Window,
    output: &Base,
    weight: (&Tensor, &[f32]),
    bias: &[f32],
    k: usize,
    s: usize,
    p: usize,
    cols: &mut Vec<f32>,
) -> Window {
    let (oy0, oy1) = affected(patch.y0, patch.y1, k, s, p, output.h);
    let (ox0, ox1) = affected(patch.x0, patch.x1, k, s, p, output.w);
    let (oh, ow) = (oy1 - oy0, ox1 - ox0);
    // input window rows [oy0·s − p, (oy1 − 1)·s − p + k)
    let wh = (oh - 1) * s + k;
    let ww = (ow - 1) * s + k;
    let iy0 = (oy0 * s) as isize - p as isize;
    let ix0 = (ox0 * s) as isize - p as isize;
    let mut window = vec![0f32; input.c * wh * ww];
    // each row of the window: the base's values where it lies on the image (zero elsewhere),
    // then the patch's over them where the patch reaches (what `Window::get` gives, by runs)
    let xa = ix0.max(0) as usize;
    let xb = (ix0 + ww as isize).clamp(0, input.w as isize) as usize;
    let (pa, pb) = (patch.x0.max(xa), patch.x1.min(xb));
    let pw = patch.x1 - patch.x0;
    for c in 0..input.c {
        for dy in 0..wh {
            let y = iy0 + dy as isize;
            if y < 0 || y >= input.h as isize || xa >= xb {
                continue;
            }
            let y = y as usize;
            let row = &mut window[(c * wh + dy) * ww..][..ww];
            let at = |x: usize| (x as isize - ix0) as usize;
            row[at(xa)..at(xb)].copy_from_slice(&input.data[(c * input.h + y) * input.w..][xa..xb]);
            if (patch.y0..patch.y1).contains(&y) && pa < pb {
                let src = &patch.values[(c * (patch.y1 - patch.y0) + y - patch.y0) * pw..][..pw];
                row[at(pa)..at(pb)].copy_from_slice(&src[pa - patch.x0..pb - patch.x0]);
            }
        }
    }
    let g = ConvGeometry {
        c_in: input.c,
        c_out: output.c,
        k,
        stride: s,
        padding: 0,
        h: wh,
        w: ww,
    };
    let mut values = vec![0f32; output.c * oh * ow];
    conv_relu_window(&window, weight, bias, &g, cols, &mut values);
    Window {
        y0: oy0,
        y1: oy1,
        x0: ox0,
        x1: ox1,
        values,
    }
}

/// The pooled outputs whose windows overlap the patch, from the patched input.
fn pool_patch(
    input: &Base,
    patch: &Window,
    output: &Base,
    pool: crate::ops::maxpool::Pool2d,
) -> Window {
    let (oy0, oy1) = affected(patch.y0, patch.y1, pool.kernel, pool.stride, 0, output.h);
    let (ox0, ox1) = affected(patch.x0, patch.x1, pool.kernel, pool.stride, 0, output.w);
    let (oh, ow) = (oy1 - oy0, ox1 - ox0);
    let mut values = vec![0f32; input.c * oh * ow];
    for c in 0..input.c {
        for oy in oy0..oy1 {
            let (y0, y1) = (
                oy * pool.stride,
                (oy * pool.stride + pool.kernel).min(input.h),
            );
            for ox in ox0..ox1 {
                let (x0, x1) = (
                    ox * pool.stride,
                    (ox * pool.stride + pool.kernel).min(input.w),
                );
                let mut best = f32::NEG_INFINITY;
                for y in y0..y1 {
                    for x in x0..x1 {
                        best = best.max(patch.get(input, c, y, x));
                    }
                }
                values[(c * oh + (oy - oy0)) * ow + (ox - ox0)] = best;
            }
        }
    }
    Window {
        y0: oy0,
        y1: oy1,
        x0: ox0,
        x1: ox1,
        values,
    }
}
