//! The device-portable ops (`zfnet::ops::portable`, what runs on CUDA) equal the CPU kernels, on
//! the CPU: layer by layer, then through the whole network (forward, deconvnet projections,
//! input gradients of a training pass, an occlusion sweep) with `force_portable`.
//!
//! `force_portable` is process-wide, so every test here takes one lock.

use candle_core::{DType, Device, Tensor, Var};
use std::path::PathBuf;
use std::sync::Mutex;
use zfnet::ops::{self, lrn::LrnParams, maxpool::Pool2d, portable};

static LOCK: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn values(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-6 * scale,
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Rectified noise with many exact zeros (ties, as after ReLU) and some equal maxima.
fn relu_noise(shape: (usize, usize, usize, usize), seed: u64) -> anyhow::Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            // a quarter exact zeros, a tenth one shared value, the rest spread
            if u < 0.25 {
                0.0
            } else if u < 0.35 {
                0.5
            } else {
                (u - 0.3) * 3.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

#[test]
fn layers_equal_the_cpu_kernels() -> anyhow::Result<()> {
    let _guard = LOCK.lock();
    ops::force_portable(false);
    let pools = [
        Pool2d::OVERLAPPING_CEIL,
        Pool2d {
            kernel: 3,
            stride: 2,
            ceil_mode: false,
        },
        Pool2d {
            kernel: 2,
            stride: 2,
            ceil_mode: true,
        },
    ];
    for (seed, shape) in [
        (1, (2, 7, 26, 26)),
        (2, (1, 5, 13, 13)),
        (3, (1, 3, 110, 110)),
    ] {
        let x = relu_noise(shape, seed)?;
        for p in [
            LrnParams::ZFNET,
            LrnParams {
                size: 4,
                alpha: 0.5,
                beta: 0.6,
                k: 1.0,
            },
        ] {
            let fast = values(&ops::lrn::lrn(&x, p)?)?;
            let port = values(&portable::lrn(&x, p)?)?;
            assert_close(&fast, &port, 1e-6, &format!("lrn {p:?} on {shape:?}"));
        }
        for pool in pools {
            let fast = ops::maxpool::max_pool_with_switches(&x, pool)?;
            let port = portable::max_pool_with_switches(&x, pool)?;
            let what = format!("pool {pool:?} on {shape:?}");
            assert_eq!(fast.output.dims(), port.output.dims(), "{what}");
            assert_eq!(
                values(&fast.output)?,
                values(&port.output)?,
                "{what}: values"
            );
            assert_eq!(
                fast.switches
                    .to_dtype(DType::U32)?
                    .flatten_all()?
                    .to_vec1::<u32>()?,
                port.switches.flatten_all()?.to_vec1::<u32>()?,
                "{what}: switches (first maximum wins)"
            );
            let signal = relu_noise(fast.output.dims4()?, seed + 10)?;
            let a = ops::maxpool::max_unpool(&signal, &fast.switches, fast.input_hw)?;
            let b = portable::max_unpool(&signal, &port.switches, port.input_hw)?;
            assert_close(
                &values(&a)?,
                &values(&b)?,
                1e-6,
                &format!("unpool after {what}"),
            );
        }
    }
    // the deconvnet's transposed convolutions at ZFNet's geometries
    for (c_in, c_out, k, stride, padding, side) in [
        (3, 4, 7, 2, 1, 224),
        (4, 6, 5, 2, 0, 55),
        (6, 5, 3, 1, 1, 13),
    ] {
        let w = relu_noise((c_out, c_in, k, k), 7)?.affine(1.0, -0.4)?;
        let out = (side + 2 * padding - k) / stride + 1;
        let x = relu_noise((2, c_out, out, out), 8)?;
        let fast = zfnet::deconv::conv_transpose(&x, &w, stride, padding, side)?;
        let port = portable::conv_transpose(&x, &w, stride, padding, side)?;
        assert_eq!(fast.dims(), port.dims());
        assert_close(&values(&fast)?, &values(&port)?, 1e-5, "conv_transpose");
    }
    Ok(())
}

#[test]
fn pooling_gradients_equal_the_cpu_kernels() -> anyhow::Result<()> {
    let _guard = LOCK.lock();
    ops::force_portable(false);
    let x = Var::from_tensor(&relu_noise((2, 6, 27, 27), 5)?)?;
    let probe = relu_noise((2, 6, 13, 13), 6)?;
    let grad = |y: Tensor| -> anyhow::Result<Vec<f32>> {
        let grads = (y * &probe)?.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .ok_or_else(|| anyhow::anyhow!("no gradient"))?;
        values(g)
    };
    let pool = Pool2d::OVERLAPPING_CEIL;
    let fast = grad(ops::maxpool::max_pool(x.as_tensor(), pool)?)?;
    let port = grad(portable::max_pool(x.as_tensor(), pool)?)?;
    assert_close(&fast, &port, 1e-6, "max pool gradient");
    let probe = relu_noise((2, 6, 27, 27), 9)?;
    let lrn_grad = |y: Tensor| -> anyhow::Result<Vec<f32>> {
        let grads = (y * &probe)?.sum_all()?.backward()?;
        values(
            grads
                .get(x.as_tensor())
                .ok_or_else(|| anyhow::anyhow!("no gradient"))?,
        )
    };
    let fast = lrn_grad(ops::lrn::lrn(x.as_tensor(), LrnParams::ZFNET)?)?;
    let port = lrn_grad(portable::lrn(x.as_tensor(), LrnParams::ZFNET)?)?;
    assert_close(&fast, &port, 1e-5, "lrn gradient");
    Ok(())
}

/// Everything the server and trainer compute, once with the CPU kernels and once with the ops a
/// GPU runs, on the narrowed ZFNet and torchvision AlexNet fixtures and a real photo.
#[test]
fn the_network_through_portable_ops_equals_the_cpu_kernels() -> anyhow::Result<()> {
    let _guard = LOCK.lock();
    let device = Device::Cpu;
    let model = zfnet::LoadedModel::load(
        &root().join("tests/fixtures/zfnet-narrow.safetensors"),
        &device,
    )?;
    let tv = zfnet::import::import(
        &root().join("tests/fixtures/import/alexnet-tv-narrow.zip.pth"),
        None,
    )?
    .net;
    let bytes = std::fs::read(root().join("web/assets/demo/dog.jpg"))?;
    let input =
        zfnet::preprocess::prepare(&bytes, &model.manifest.preprocess)?.to_tensor(&device)?;
    let batch = Tensor::cat(&[&input, &input.flip(&[3])?], 0)?;
    for (name, net) in [("zfnet", &model.net), ("alexnet-torchvision", &tv)] {
        let run = |portable: bool| -> anyhow::Result<Vec<Vec<f32>>> {
            ops::force_portable(portable);
            let trace = net.forward_trace(&batch)?;
            let mut out = vec![values(&trace.logits)?];
            for layer in 0..5 {
                out.push(values(&trace.convs[layer].activation)?);
                let map = layer % net.convs[layer].out_channels();
                for sel in [
                    zfnet::deconv::Selection::StrongestUnit,
                    zfnet::deconv::Selection::WholeMap,
                ] {
                    out.push(values(&zfnet::deconv::project(
                        net, &trace, layer, map, &sel,
                    )?)?);
                }
            }
            let x = Var::from_tensor(&batch)?;
            let logits = zfnet::train::forward_train(net, x.as_tensor(), None, 0)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &Tensor::new(&[1u32, 0], &device)?)?;
            let grads = loss.backward()?;
            out.push(values(
                grads
                    .get(x.as_tensor())
                    .ok_or_else(|| anyhow::anyhow!("no grad"))?,
            )?);
            let params = zfnet::occlusion::OcclusionParams {
                size: 64,
                stride: 80,
                fill: zfnet::occlusion::Fill::Mean,
                class: None,
            };
            let method = zfnet::occlusion::Method::Batched;
            let sweep = zfnet::occlusion::sweep(
                net,
                &model.manifest.preprocess,
                &input,
                &params,
                method,
                &|_, _| true,
            )?;
            out.push(sweep.activation);
            out.push(sweep.probability);
            ops::force_portable(false);
            Ok(out)
        };
        let fast = run(false)?;
        let port = run(true);
        let port = port?;
        ops::force_portable(false);
        // Summation order differs (candle's conv2d against ours), and whole-map projections
        // cancel, so differences are measured against each output's largest magnitude: measured
        // at most 1.6e-6 of it.
        for (i, (a, b)) in fast.iter().zip(port.iter()).enumerate() {
            assert_eq!(a.len(), b.len(), "{name}: output {i} lengths");
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{name}: output {i} differs by {worst:e} (largest magnitude {scale:e})"
            );
        }
    }
    Ok(())
}
