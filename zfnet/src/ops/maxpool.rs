//! Max pooling in ceil mode that records its switches, and the matching unpooling.
//!
//! Output size (PyTorch's rule, no padding): `out = ⌊(in − kernel + stride − 1) / stride⌋ + 1` in ceil
//! mode (`⌊(in − kernel) / stride⌋ + 1` in floor mode), less one if the last window would start
//! past the input. Windows that run over the border are clipped. ZFNet's 3×3/2 pools map
//! 110→55, 26→13 and 13→6.
//!
//! The *switch* of an output cell is the flat index `y · in_w + x` of the maximum inside its input
//! plane; on ties the first maximum in row-major order wins, as in PyTorch.

use super::host_nchw;
use crate::Result;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Pooling geometry: a square window of `kernel` moved by `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool2d {
    pub kernel: usize,
    pub stride: usize,
    pub ceil_mode: bool,
}

impl Pool2d {
    /// ZFNet's (and AlexNet's) overlapping 3×3 pool with stride 2, in ceil mode.
    pub const OVERLAPPING_CEIL: Pool2d = Pool2d {
        kernel: 3,
        stride: 2,
        ceil_mode: true,
    };

    /// Output length along one axis for an input of length `len`.
    pub fn output_len(&self, len: usize) -> usize {
        if len < self.kernel {
            return if self.ceil_mode && len > 0 { 1 } else { 0 };
        }
        let round_up = if self.ceil_mode { self.stride - 1 } else { 0 };
        let mut out = (len - self.kernel + round_up) / self.stride + 1;
        if self.ceil_mode && (out - 1) * self.stride >= len {
            out -= 1;
        }
        out
    }
}

/// The result of a pooling pass: pooled values and, for each, where it came from.
#[derive(Debug, Clone)]
pub struct Pooled {
    /// `[n, c, out_h, out_w]`.
    pub output: Tensor,
    /// `[n, c, out_h, out_w]`, `u32` flat indices into the input plane.
    pub switches: Tensor,
    /// Input plane size `(h, w)`, needed to unpool.
    pub input_hw: (usize, usize),
}

/// Max-pools one `h×w` plane into `vals` / `switches` (`oh×ow` each).
fn pool_plane(
    plane: &[f32],
    (h, w): (usize, usize),
    pool: Pool2d,
    vals: &mut [f32],
    sw: &mut [u32],
) {
    let (oh, ow) = (pool.output_len(h), pool.output_len(w));
    for oy in 0..oh {
        let y0 = oy * pool.stride;
        let y1 = (y0 + pool.kernel).min(h);
        for ox in 0..ow {
            let x0 = ox * pool.stride;
            let x1 = (x0 + pool.kernel).min(w);
            let mut best = y0 * w + x0;
            let mut best_v = plane[best];
            for y in y0..y1 {
                for (dx, &v) in plane[y * w + x0..y * w + x1].iter().enumerate() {
                    // `!(v <= best)` also lets a NaN win, as PyTorch does
                    if v > best_v || (v.is_nan() && !best_v.is_nan()) {
                        best_v = v;
                        best = y * w + x0 + dx;
                    }
                }
            }
            vals[oy * ow + ox] = best_v;
            sw[oy * ow + ox] = best as u32;
        }
    }
}

/// Scratch space of [`pool_plane_3x3s2`], reused across the planes of one task.
#[derive(Default)]
struct Scratch {
    even: Vec<f32>,
    odd: Vec<f32>,
    /// Row maxima `[h, owp]` and their columns.
    row_max: Vec<f32>,
    row_arg: Vec<u32>,
    /// One padded output row and its switches.
    out_max: Vec<f32>,
    out_arg: Vec<u32>,
}

/// [`pool_plane`] for ZFNet's and AlexNet's 3×3 stride-2 windows, in a form that vectorises; `false`
/// (and nothing written) when the plane holds a NaN, which the scan handles.
///
/// The window's maximum is taken in two passes: along each input row over the three columns
/// `2·ox … 2·ox + 2`, then down the three rows `2·oy … 2·oy + 2` of those row maxima. Both passes
/// replace the best only when strictly larger, so each keeps the first maximum: the row pass the
/// leftmost column of its row's maximum, the column pass the topmost row holding the window's
/// maximum. That is the first maximum in row-major order, as in the scan. Rows are split into
/// their even and odd columns (−∞ past the edge, which never wins) and padded to a multiple of 8
/// outputs, so every loop runs whole vectors.
#[inline(always)]
fn pool_plane_3x3s2(
    plane: &[f32],
    (h, w): (usize, usize),
    pool: Pool2d,
    (vals, sw): (&mut [f32], &mut [u32]),
    s: &mut Scratch,
) -> bool {
    if plane.iter().fold(false, |nan, v| nan | v.is_nan()) {
        return false;
    }
    let (oh, ow) = (pool.output_len(h), pool.output_len(w));
    let owp = ow.next_multiple_of(8);
    // up to owp + 1 columns of each parity are read or written (floor mode, even widths)
    s.even.resize(owp + 2, f32::NEG_INFINITY);
    s.odd.resize(owp + 2, f32::NEG_INFINITY);
    s.row_max.resize(h * owp, 0.0);
    s.row_arg.resize(h * owp, 0);
    s.out_max.resize(owp, 0.0);
    s.out_arg.resize(owp, 0);
    for (y, (rm, ra)) in s
        .row_max
        .chunks_exact_mut(owp)
        .zip(s.row_arg.chunks_exact_mut(owp))
        .enumerate()
    {
        let row = &plane[y * w..][..w];
        let pairs = row.chunks_exact(2);
        let last = pairs.remainder().first().copied();
        for ((e, o), p) in s.even.iter_mut().zip(s.odd.iter_mut()).zip(pairs) {
            *e = p[0];
            *o = p[1];
        }
        let half = w / 2;
        s.even[half..].fill(f32::NEG_INFINITY);
        s.odd[half..].fill(f32::NEG_INFINITY);
        if let Some(v) = last {
            s.even[half] = v;
        }
        let (a, b, c) = (&s.even[..owp], &s.odd[..owp], &s.even[1..][..owp]);
        for (j, ((((m, x), &a), &b), &c)) in rm
            .iter_mut()
            .zip(ra.iter_mut())
            .zip(a)
            .zip(b)
            .zip(c)
            .enumerate()
        {
            let x0 = 2 * j as u32;
            let (mut best, mut at) = (a, x0);
            if b > best {
                (best, at) = (b, x0 + 1);
            }
            if c > best {
                (best, at) = (c, x0 + 2);
            }
            *m = best;
            *x = at;
        }
    }
    for oy in 0..oh {
        let y0 = 2 * oy;
        let (om, oa) = (&mut s.out_max[..], &mut s.out_arg[..]);
        om.copy_from_slice(&s.row_max[y0 * owp..][..owp]);
        let base = (y0 * w) as u32;
        for (a, &x) in oa.iter_mut().zip(&s.row_arg[y0 * owp..][..owp]) {
            *a = base + x;
        }
        for y in y0 + 1..(y0 + 3).min(h) {
            let base = (y * w) as u32;
            let (rm, ra) = (&s.row_max[y * owp..][..owp], &s.row_arg[y * owp..][..owp]);
            for (((m, a), &v), &x) in om.iter_mut().zip(oa.iter_mut()).zip(rm).zip(ra) {
                let take = v > *m;
                *m = if take { v } else { *m };
                *a = if take { base + x } else { *a };
            }
        }
        vals[oy * ow..][..ow].copy_from_slice(&om[..ow]);
        sw[oy * ow..][..ow].copy_from_slice(&oa[..ow]);
    }
    true
}

super::simd::dispatch!(fn pool_plane_3x3s2_wide(
    plane: &[f32],
    hw: (usize, usize),
    pool: Pool2d,
    out: (&mut [f32], &mut [u32]),
    scratch: &mut Scratch,
) -> bool = pool_plane_3x3s2);

/// Max-pools each `h×w` plane of `data` on this thread, values only (the occlusion sweep's
/// windows, which run in parallel by position): `[planes, oh, ow]`.
pub(crate) fn pool_values(data: &[f32], (h, w): (usize, usize), pool: Pool2d) -> Vec<f32> {
    let (oh, ow) = (pool.output_len(h), pool.output_len(w));
    let mut values = vec![0f32; data.len() / (h * w).max(1) * oh * ow];
    let mut sw = vec![0u32; oh * ow];
    let mut scratch = Scratch::default();
    for (plane, vals) in data
        .chunks_exact(h * w)
        .zip(values.chunks_exact_mut(oh * ow))
    {
        let fast = pool.kernel == 3
            && pool.stride == 2
            && pool_plane_3x3s2_wide(plane, (h, w), pool, (&mut *vals, &mut sw), &mut scratch);
        if !fast {
            pool_plane(plane, (h, w), pool, vals, &mut sw)
        }
    }
    values
}

/// Pools every plane of contiguous NCHW data: `(values, switches, oh, ow)`.
fn pool_all(
    data: &[f32],
    [n, c, h, w]: [usize; 4],
    pool: Pool2d,
) -> (Vec<f32>, Vec<u32>, usize, usize) {
    let (oh, ow) = (pool.output_len(h), pool.output_len(w));
    let mut values = vec![0f32; n * c * oh * ow];
    let mut switches = vec![0u32; n * c * oh * ow];
    values
        .par_chunks_mut(oh * ow)
        .zip(switches.par_chunks_mut(oh * ow))
        .zip(data.par_chunks(h * w))
        .for_each_init(Scratch::default, |scratch, ((vals, sw), plane)| {
            let fast = pool.kernel == 3
                && pool.stride == 2
                && pool_plane_3x3s2_wide(plane, (h, w), pool, (&mut *vals, &mut *sw), scratch);
            if !fast {
                pool_plane(plane, (h, w), pool, vals, sw)
            }
        });
    (values, switches, oh, ow)
}

/// Max-pools an NCHW tensor and records the argmax of each window.
pub fn max_pool_with_switches(x: &Tensor, pool: Pool2d) -> Result<Pooled> {
    if super::use_portable(x) {
        return super::portable::max_pool_with_switches(x, pool);
    }
    let device = x.device().clone();
    let ((values, switches, oh, ow), [n, c, h, w]) =
        super::with_host_nchw(x, |data, dims| (pool_all(data, dims, pool), dims))?;
    Ok(Pooled {
        output: Tensor::from_vec(values, (n, c, oh, ow), &device)?,
        switches: Tensor::from_vec(switches, (n, c, oh, ow), &device)?,
        input_hw: (h, w),
    })
}

/// Max-pools an NCHW tensor, differentiably (a candle custom op whose backward routes each
/// output's gradient to its window's maximum, summing where windows share one: the same rule as
/// [`max_unpool`]). For training; other devices take [`super::portable::max_pool`].
pub fn max_pool(x: &Tensor, pool: Pool2d) -> Result<Tensor> {
    if super::use_portable(x) {
        return super::portable::max_pool(x, pool);
    }
    super::apply_cpu(
        x,
        MaxPoolOp {
            pool,
            switches: std::sync::Mutex::new(None),
        },
    )
}

/// The op keeps the switches of its forward pass for its backward (candle calls both on the same
/// instance), so the backward does not pool again.
struct MaxPoolOp {
    pool: Pool2d,
    switches: std::sync::Mutex<Option<Vec<u32>>>,
}

impl candle_core::CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "zfnet-max-pool"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let data = match (s, l.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("max_pool: contiguous f32 input expected"),
        };
        let (n, c, h, w) = l.shape().dims4()?;
        let (values, switches, oh, ow) = pool_all(data, [n, c, h, w], self.pool);
        if let Ok(mut kept) = self.switches.lock() {
            *kept = Some(switches);
        }
        Ok((candle_core::CpuStorage::F32(values), (n, c, oh, ow).into()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let msg = |e: crate::Error| candle_core::Error::Msg(e.to_string());
        let (n, c, h, w) = arg.dims4()?;
        let (oh, ow) = (self.pool.output_len(h), self.pool.output_len(w));
        let kept = self.switches.lock().ok().and_then(|mut k| k.take());
        let switches = match kept {
            Some(s) if s.len() == n * c * oh * ow => s,
            _ => {
                let (data, _, _) = host_nchw(arg).map_err(msg)?;
                pool_all(&data, [n, c, h, w], self.pool).1
            }
        };
        let switches = Tensor::from_vec(switches, (n, c, oh, ow), arg.device())?;
        Ok(Some(max_unpool(grad, &switches, (h, w)).map_err(msg)?))
    }
}

/// Places each pooled value back at its switch, zero elsewhere.
///
/// With overlapping windows (3×3, stride 2) two outputs can share one switch. Their values are
/// **summed**: this makes unpooling the exact adjoint (the gradient) of max pooling, so the
/// deconvnet equals backpropagation with a rectified backward signal and can be checked against
/// it. `torch.nn.functional.max_unpool2d` instead *sets* (the last write wins), which silently
/// drops signal wherever windows overlap.
pub fn max_unpool(signal: &Tensor, switches: &Tensor, input_hw: (usize, usize)) -> Result<Tensor> {
    if super::use_portable(signal) {
        return super::portable::max_unpool(signal, switches, input_hw);
    }
    let (values, [n, c, oh, ow], device) = host_nchw(signal)?;
    let sw_shape = switches.dims4()?;
    if sw_shape != (n, c, oh, ow) {
        return Err(crate::Error::Shape(format!(
            "unpool signal {:?} does not match switches {:?}",
            (n, c, oh, ow),
            sw_shape
        )));
    }
    let sw = switches
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<u32>()?;
    let (h, w) = input_hw;
    let mut out = vec![0f32; n * c * h * w];
    out.par_chunks_mut(h * w)
        .zip(values.par_chunks(oh * ow))
        .zip(sw.par_chunks(oh * ow))
        .for_each(|((plane, vals), sws)| {
            for (&v, &s) in vals.iter().zip(sws) {
                if v != 0.0 {
                    plane[s as usize] += v;
                }
            }
        });
    Ok(Tensor::from_vec(out, (n, c, h, w), &device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{assert_gradients_match, numeric_gradient};

    #[test]
    fn zfnet_pool_sizes() {
        let p = Pool2d::OVERLAPPING_CEIL;
        assert_eq!(p.output_len(110), 55);
        assert_eq!(p.output_len(26), 13);
        assert_eq!(p.output_len(13), 6);
        // AlexNet: 54 → 27, 27 → 13
        assert_eq!(p.output_len(54), 27);
        assert_eq!(p.output_len(27), 13);
        let floor = Pool2d {
            ceil_mode: false,
            ..p
        };
        assert_eq!(floor.output_len(110), 54);
        assert_eq!(floor.output_len(13), 6);
        assert_eq!(floor.output_len(26), 12);
    }

    #[test]
    fn ceil_mode_clips_the_last_window_and_records_first_max() -> anyhow::Result<()> {
        // 1×1×4×4 plane 0..16; 3×3/2 ceil → 2×2 windows starting at 0 and 2 (the second clipped).
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let p = max_pool_with_switches(&x, Pool2d::OVERLAPPING_CEIL)?;
        assert_eq!(p.output.dims4()?, (1, 1, 2, 2));
        assert_eq!(
            p.output.flatten_all()?.to_vec1::<f32>()?,
            [10., 11., 14., 15.]
        );
        assert_eq!(
            p.switches.flatten_all()?.to_vec1::<u32>()?,
            [10, 11, 14, 15]
        );
        // ties: all equal → the first element of each window
        let flat = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu)?;
        let p = max_pool_with_switches(&flat, Pool2d::OVERLAPPING_CEIL)?;
        assert_eq!(p.switches.flatten_all()?.to_vec1::<u32>()?, [0, 2, 8, 10]);
        Ok(())
    }

    /// The 3×3/2 kernel picks the same maxima and switches as the window scan, on planes full of
    /// ties (ReLU zeros and repeated values) and with −∞, for ceil-clipped and exact sizes.
    #[test]
    fn vectorised_pooling_equals_the_window_scan() {
        let floor = Pool2d {
            ceil_mode: false,
            ..Pool2d::OVERLAPPING_CEIL
        };
        // (18, 18) in floor mode: 8 outputs, a whole vector, and 9 even columns
        for (h, w) in [
            (110, 110),
            (13, 13),
            (8, 9),
            (9, 8),
            (3, 3),
            (1, 4),
            (27, 26),
            (18, 18),
            (17, 33),
        ] {
            for (pool, seed) in [(Pool2d::OVERLAPPING_CEIL, 7919), (floor, 104_729)] {
                if pool.output_len(h) == 0 || pool.output_len(w) == 0 {
                    continue;
                }
                let mut plane: Vec<f32> = (0..h * w)
                    .map(|i| ((i * seed % 13) as f32 - 6.0).max(0.0) * 0.5)
                    .collect();
                plane[h * w / 2] = f32::NEG_INFINITY;
                let (oh, ow) = (pool.output_len(h), pool.output_len(w));
                let (mut v1, mut s1) = (vec![0f32; oh * ow], vec![0u32; oh * ow]);
                pool_plane(&plane, (h, w), pool, &mut v1, &mut s1);
                let (mut v2, mut s2) = (vec![0f32; oh * ow], vec![0u32; oh * ow]);
                let mut scratch = Scratch::default();
                // twice through one scratch, as a task's planes are
                for _ in 0..2 {
                    let fast =
                        pool_plane_3x3s2(&plane, (h, w), pool, (&mut v2, &mut s2), &mut scratch);
                    assert!(fast && v1 == v2 && s1 == s2, "{h}×{w} {pool:?}");
                }
            }
        }
        // a NaN sends the plane to the scan
        let plane = [1.0, f32::NAN, 0.0, 2.0];
        let pool = Pool2d::OVERLAPPING_CEIL;
        let fast = pool_plane_3x3s2(
            &plane,
            (2, 2),
            pool,
            (&mut [0.0], &mut [0]),
            &mut Scratch::default(),
        );
        assert!(!fast);
    }

    #[test]
    fn unpool_sums_where_windows_share_a_switch() -> anyhow::Result<()> {
        // The maximum sits in the shared middle row/column: all four windows pick index 2·5+2.
        let mut plane = vec![0f32; 25];
        plane[12] = 9.0;
        let x = Tensor::from_vec(plane, (1, 1, 5, 5), &Device::Cpu)?;
        let p = max_pool_with_switches(&x, Pool2d::OVERLAPPING_CEIL)?;
        assert_eq!(
            p.switches.flatten_all()?.to_vec1::<u32>()?,
            [12, 12, 12, 12]
        );
        let back = max_unpool(&p.output, &p.switches, p.input_hw)?;
        let back = back.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(back[12], 36.0);
        assert_eq!(back.iter().sum::<f32>(), 36.0);
        Ok(())
    }

    /// The pool's gradient against central finite differences, on distinct values (so no window's
    /// maximum changes under the perturbation) with overlapping and clipped windows.
    #[test]
    fn gradient_matches_finite_differences() -> anyhow::Result<()> {
        let (n, c, h, w) = (2, 2, 7, 6);
        let len = n * c * h * w;
        // a permutation of 0..len scaled: distinct, at least 0.1 apart
        let data: Vec<f32> = (0..len).map(|i| ((i * 53) % len) as f32 * 0.1).collect();
        let x = candle_core::Var::from_vec(data.clone(), (n, c, h, w), &Device::Cpu)?;
        let y = max_pool(&x, Pool2d::OVERLAPPING_CEIL)?;
        let probe: Vec<f32> = (0..y.elem_count()).map(|i| (i % 5) as f32 - 1.5).collect();
        let probe_t = Tensor::from_vec(probe.clone(), y.shape(), &Device::Cpu)?;
        let grads = (&y * &probe_t)?.sum_all()?.backward()?;
        let analytic = grads
            .get(&x)
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        let numeric = numeric_gradient(&data, 0.01, |v| {
            let t = Tensor::from_vec(v.to_vec(), (n, c, h, w), &Device::Cpu)?;
            let pooled = max_pool_with_switches(&t, Pool2d::OVERLAPPING_CEIL)?.output;
            Ok(f64::from(
                (pooled * &probe_t)?.sum_all()?.to_scalar::<f32>()?,
            ))
        })?;
        assert_gradients_match(&analytic, &numeric, |_| 1e-2, "max pool");
        assert!(
            analytic.iter().any(|&g| g.abs() > 1.0),
            "some windows share a switch"
        );
        Ok(())
    }
}
