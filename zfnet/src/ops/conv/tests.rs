//! conv2d + bias + ReLU and its gradients against candle's own ops.

use super::*;
use candle_core::{Device, Var};

/// Deterministic values in [-1, 1] for the conv tests (a multiplicative hash of the index).
pub(super) fn seeded(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let v = (i.wrapping_mul(2654435761).wrapping_add(seed)) >> 8;
            (v % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Forward and all three gradients against candle's conv2d + bias + ReLU, for ZFNet's and
/// AlexNet's kernel geometries, a batch of several images and a lone image.
#[test]
fn forward_and_gradients_match_candle() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for (n, stride, padding, k, side) in [
        (3, 2, 1, 7, 23),
        (1, 2, 0, 5, 13),
        (2, 1, 1, 3, 9),
        (2, 4, 0, 11, 27),
    ] {
        let x = Var::from_vec(seeded(n * 3 * side * side, 1), (n, 3, side, side), &dev)?;
        let w = Var::from_vec(seeded(4 * 3 * k * k, 7), (4, 3, k, k), &dev)?;
        let b = Var::from_vec(seeded(4, 5), 4, &dev)?;
        let ours = conv2d_relu(&x, &w, &b, stride, padding)?;
        let theirs = x
            .conv2d(&w, padding, stride, 1, 1)?
            .broadcast_add(&b.reshape((1, 4, 1, 1))?)?
            .relu()?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "forward differs by {diff}");
        let probe = Tensor::from_vec(seeded(ours.elem_count(), 3), ours.shape(), &dev)?;
        let g_ours = (&ours * &probe)?.sum_all()?.backward()?;
        let g_theirs = (&theirs * &probe)?.sum_all()?.backward()?;
        for v in [&x, &w, &b] {
            let a = g_ours.get(v).expect("gradient");
            let e = g_theirs.get(v).expect("gradient");
            let diff = (a - e)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-3, "gradient differs by {diff} (n {n}, k {k})");
        }
    }
    Ok(())
}

/// Gradients are bit-identical whatever the thread count, so a resumed run repeats exactly.
#[test]
fn gradients_do_not_depend_on_the_thread_count() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let n = 13;
    let x = Var::from_vec(seeded(n * 3 * 15 * 15, 1), (n, 3, 15, 15), &dev)?;
    let w = Var::from_vec(seeded(8 * 3 * 25, 2), (8, 3, 5, 5), &dev)?;
    let b = Var::from_vec(seeded(8, 3), 8, &dev)?;
    let gradients = |threads: usize| -> anyhow::Result<Vec<Vec<f32>>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        pool.install(|| {
            let y = conv2d_relu(&x, &w, &b, 2, 1)?;
            let probe = Tensor::from_vec(seeded(y.elem_count(), 4), y.shape(), &dev)?;
            let grads = (&y * &probe)?.sum_all()?.backward()?;
            [&x, &w, &b]
                .iter()
                .map(|v| Ok(grads.get(v).expect("gradient").flatten_all()?.to_vec1()?))
                .collect()
        })
    };
    let one = gradients(1)?;
    for threads in [2, 3, 8] {
        assert!(gradients(threads)? == one, "{threads} threads");
    }
    Ok(())
}

#[test]
fn data_input_gets_no_gradient() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(seeded(2 * 3 * 9 * 9, 1), (2, 3, 9, 9), &dev)?;
    let w = Var::from_vec(seeded(4 * 27, 2), (4, 3, 3, 3), &dev)?;
    let b = Var::from_vec(vec![0.1f32; 4], 4, &dev)?;
    let grads = conv2d_relu(&x, &w, &b, 1, 1)?.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&w).is_some() && grads.get(&b).is_some());
    Ok(())
}
