//! The layers candle lacks, written as plain kernels over contiguous `f32` NCHW data.
//!
//! candle 0.11 has no local response normalisation, no ceil-mode pooling and no max-pool indices,
//! and its conv2d backward is slow on the CPU. LRN, pooling and conv are candle custom ops with
//! backward passes, so training differentiates through them.
//! Each op here works on contiguous CPU data, one image plane per rayon task. Tensors on another
//! device (CUDA) take [`portable`]: the same layers from candle's tensor operations, which run on
//! that device without a host round trip.

pub mod conv;
pub mod linear;
pub mod lrn;
pub mod maxpool;
pub mod portable;
mod simd;

use crate::Result;
use candle_core::{DType, Device, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Makes every op take [`portable`] on the CPU too (process-wide): lets tests and benches run the
/// GPU's code path where no GPU is.
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::Relaxed);
}

/// Whether ops on `x` take [`portable`]: any tensor off the CPU, or all when forced.
pub(crate) fn use_portable(x: &Tensor) -> bool {
    !x.device().is_cpu() || FORCE_PORTABLE.load(Ordering::Relaxed)
}

/// An output buffer shared by tasks that write disjoint elements of it (each use says why they
/// are disjoint).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: the writers never touch the same element, and the buffer outlives them (argued at
// each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// (A method, so closures capture the `Sync` wrapper rather than its raw pointer field.)
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `buf` cut into consecutive slices of the given lengths, which must add up to its length.
pub(crate) fn split_lengths_mut(
    mut buf: &mut [f32],
    lens: impl IntoIterator<Item = usize>,
) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for len in lens {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(head);
        buf = rest;
    }
    assert!(buf.is_empty(), "the lengths cover the buffer");
    out
}

/// Applies a CPU custom op to `x` (the callers send other devices to [`portable`]).
pub(crate) fn apply_cpu(
    x: &Tensor,
    op: impl candle_core::CustomOp1 + Send + Sync + 'static,
) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// `(data, [n, c, h, w], device)` of a rank-4 tensor, as a contiguous host `f32` vector.
pub(crate) fn host_nchw(x: &Tensor) -> Result<(Vec<f32>, [usize; 4], Device)> {
    let (n, c, h, w) = x.dims4()?;
    let data = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok((data, [n, c, h, w], x.device().clone()))
}

/// Runs `f` on a rank-4 tensor's `f32` data and `[n, c, h, w]`: borrowed in place for a
/// contiguous CPU tensor (first-touch copies of activations cost as much as pooling them),
/// through a host copy otherwise.
pub(crate) fn with_host_nchw<R>(x: &Tensor, f: impl FnOnce(&[f32], [usize; 4]) -> R) -> Result<R> {
    let (n, c, h, w) = x.dims4()?;
    with_host_slice(x, |data| f(data, [n, c, h, w]))
}

/// Runs `f` on a tensor's `f32` values in row-major order: borrowed in place for a contiguous
/// CPU `f32` tensor, through a host copy otherwise.
pub(crate) fn with_host_slice<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = x.storage_and_layout();
        if let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&v[a..b]));
        }
    }
    let data = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok(f(&data))
}

/// A batch tensor `[n, …]` as one host row per item (everything after the first axis flattened).
pub(crate) fn host_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.flatten_from(1)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?)
}

/// Index and value of the largest element; the first one wins ties. `(0, -inf)` for an empty slice.
pub fn argmax(values: &[f32]) -> (usize, f32) {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
}

/// Finite-difference checks shared by the custom ops' gradient tests.
#[cfg(test)]
pub(crate) mod gradcheck {
    /// Central differences of `loss` at `point`, one element at a time.
    pub fn numeric_gradient(
        point: &[f32],
        eps: f32,
        mut loss: impl FnMut(&[f32]) -> anyhow::Result<f64>,
    ) -> anyhow::Result<Vec<f64>> {
        let mut moved = point.to_vec();
        (0..point.len())
            .map(|i| {
                moved[i] = point[i] + eps;
                let plus = loss(&moved)?;
                moved[i] = point[i] - eps;
                let minus = loss(&moved)?;
                moved[i] = point[i];
                Ok((plus - minus) / (2.0 * f64::from(eps)))
            })
            .collect()
    }

    /// Every analytic element within `allowed(numeric)` of the numeric one.
    pub fn assert_gradients_match(
        analytic: &[f32],
        numeric: &[f64],
        allowed: impl Fn(f64) -> f64,
        what: &str,
    ) {
        assert_eq!(analytic.len(), numeric.len(), "{what}: gradient lengths");
        for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
            assert!(
                (f64::from(a) - n).abs() < allowed(n),
                "{what} element {i}: analytic {a} vs numeric {n}"
            );
        }
    }
}
