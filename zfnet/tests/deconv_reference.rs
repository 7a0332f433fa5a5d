//! The deconvnet against an independent reference computed differently: backpropagation written
//! as plain loops (the gradient of conv2d with respect to its input, the gradient of max pooling
//! routed by a fresh argmax search), with a ReLU applied to the backward signal at each layer.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use zfnet::deconv::{project, strongest_units, Selection};
use zfnet::LoadedModel;

fn fixture() -> (LoadedModel, Tensor) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let model = LoadedModel::load(&dir.join("zfnet-narrow.safetensors"), &Device::Cpu).unwrap();
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("zfnet-narrow.expected.safetensors"), &Device::Cpu)
            .unwrap();
    let input = expected["input"].narrow(0, 1, 1).unwrap(); // the smooth pattern image
    (model, input)
}

struct Plane {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

fn to_plane(t: &Tensor) -> Plane {
    let (_, c, h, w) = t.dims4().unwrap();
    Plane {
        c,
        h,
        w,
        data: t.flatten_all().unwrap().to_vec1().unwrap(),
    }
}

/// d(conv2d(x, W))/dx applied to `g`: for every output cell and tap, push g·W back to the input.
fn conv_input_grad(g: &Plane, weight: &Tensor, stride: usize, pad: usize, in_side: usize) -> Plane {
    let (co, ci, k, _) = weight.dims4().unwrap();
    let wv: Vec<f32> = weight.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(co, g.c);
    let mut out = vec![0f32; ci * in_side * in_side];
    for o in 0..co {
        for oy in 0..g.h {
            for ox in 0..g.w {
                let gv = g.data[(o * g.h + oy) * g.w + ox];
                if gv == 0.0 {
                    continue;
                }
                for i in 0..ci {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0
                                && ix >= 0
                                && (iy as usize) < in_side
                                && (ix as usize) < in_side
                            {
                                out[(i * in_side + iy as usize) * in_side + ix as usize] +=
                                    gv * wv[((o * ci + i) * k + ky) * k + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    Plane {
        c: ci,
        h: in_side,
        w: in_side,
        data: out,
    }
}

/// d(maxpool 3/2 ceil (x))/dx applied to `g`, finding each window's argmax in `x` afresh.
fn pool_input_grad(g: &Plane, x: &Plane) -> Plane {
    let mut out = vec![0f32; x.data.len()];
    for c in 0..x.c {
        for oy in 0..g.h {
            for ox in 0..g.w {
                let mut best = (oy * 2, ox * 2);
                for y in oy * 2..(oy * 2 + 3).min(x.h) {
                    for xx in ox * 2..(ox * 2 + 3).min(x.w) {
                        if x.data[(c * x.h + y) * x.w + xx]
                            > x.data[(c * x.h + best.0) * x.w + best.1]
                        {
                            best = (y, xx);
                        }
                    }
                }
                out[(c * x.h + best.0) * x.w + best.1] += g.data[(c * g.h + oy) * g.w + ox];
            }
        }
    }
    Plane {
        c: x.c,
        h: x.h,
        w: x.w,
        data: out,
    }
}

fn relu(mut p: Plane) -> Plane {
    p.data.iter_mut().for_each(|v| *v = v.max(0.0));
    p
}

fn reference(
    model: &LoadedModel,
    input: &Tensor,
    layer: usize,
    map: usize,
    whole_map: bool,
) -> Vec<f32> {
    let trace = model.net.forward_trace(input).unwrap();
    let act = to_plane(&trace.convs[layer].activation);
    let mut g = Plane {
        c: act.c,
        h: act.h,
        w: act.w,
        data: vec![0.0; act.data.len()],
    };
    let plane = act.h * act.w;
    let range = map * plane..(map + 1) * plane;
    if whole_map {
        g.data[range.clone()].copy_from_slice(&act.data[range]);
    } else {
        let (i, _) = act.data[range.clone()].iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        );
        g.data[range.start + i] = act.data[range.start + i];
    }
    for l in (0..=layer).rev() {
        let conv = &model.net.convs[l];
        let in_side = if l == 0 {
            224
        } else {
            trace.convs[l - 1].output().dim(3).unwrap()
        };
        g = conv_input_grad(
            &relu(g),
            &conv.weight,
            conv.spec.stride,
            conv.spec.padding,
            in_side,
        );
        if l > 0 {
            let below = &trace.convs[l - 1];
            if below.pooled.is_some() {
                // the pool's input: LRN output (layers 1–2); LRN itself is skipped (identity)
                let pre = below.normalized.as_ref().unwrap_or(&below.activation);
                g = pool_input_grad(&g, &to_plane(pre));
            }
        }
    }
    g.data
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "reference projection is all zero");
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn projections_match_rectified_backprop_for_every_layer_and_mode() {
    let (model, input) = fixture();
    let trace = model.net.forward_trace(&input).unwrap();
    for layer in 0..5 {
        let map = strongest_map(&trace, layer);
        for whole_map in [false, true] {
            let selection = if whole_map {
                Selection::WholeMap
            } else {
                Selection::StrongestUnit
            };
            let got = project(&model.net, &trace, layer, map, &selection).unwrap();
            assert_eq!(got.dims(), [1, 3, 224, 224]);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let want = reference(&model, &input, layer, map, whole_map);
            let err = rel_err(&got, &want);
            eprintln!(
                "conv{} map {map} whole_map={whole_map}: rel err {err:.2e}",
                layer + 1
            );
            assert!(
                err <= 1e-4,
                "conv{} map {map} whole_map={whole_map}: {err:.3e}",
                layer + 1
            );
        }
    }
}

fn strongest_map(trace: &zfnet::Trace, layer: usize) -> usize {
    let c = trace.convs[layer].activation.dim(1).unwrap();
    (0..c)
        .max_by(|&a, &b| {
            let va = strongest_units(&trace.convs[layer].activation, a).unwrap()[0].2;
            let vb = strongest_units(&trace.convs[layer].activation, b).unwrap()[0].2;
            va.total_cmp(&vb)
        })
        .unwrap()
}

#[test]
fn explicit_unit_and_bad_selections() {
    let (model, input) = fixture();
    let trace = model.net.forward_trace(&input).unwrap();
    let (y, x, _) = strongest_units(&trace.convs[2].activation, 3).unwrap()[0];
    let a = project(&model.net, &trace, 2, 3, &Selection::StrongestUnit).unwrap();
    let b = project(&model.net, &trace, 2, 3, &Selection::Units(vec![(y, x)])).unwrap();
    let diff = max_abs_diff(&a, &b);
    assert_eq!(diff, 0.0);
    assert!(project(&model.net, &trace, 2, 999, &Selection::WholeMap).is_err());
    assert!(project(&model.net, &trace, 5, 0, &Selection::WholeMap).is_err());
    assert!(project(&model.net, &trace, 2, 0, &Selection::Units(vec![(13, 0)])).is_err());
}

#[test]
fn gemm_conv_transpose_equals_candles() {
    let w = Tensor::randn(0f32, 1.0, (8, 5, 5, 5), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 8, 26, 26), &Device::Cpu).unwrap();
    let ours = zfnet::deconv::conv_transpose(&x, &w, 2, 0, 55).unwrap();
    let theirs = x.conv_transpose2d(&w, 0, 0, 2, 1).unwrap();
    let err = max_abs_diff(&ours, &theirs);
    assert!(err < 1e-4, "{err}");
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
