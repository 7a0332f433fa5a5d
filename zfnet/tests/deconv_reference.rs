//! The deconvnet against an independent reference computed differently: backpropagation written
//! as plain loops (the gradient of conv2d with respect to its input, the gradient of max pooling
//! routed by a fresh argmax search), with a ReLU applied to the backward signal at each layer.
//! The gradient and guided-backprop rules against the same loops (with LRN's gradient written
//! straight from its formula), and the gradient also against candle's autograd.

use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use zfnet::deconv::{backproject, project, strongest_units, Rule, Selection};
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

/// The backward rule at a ReLU whose forward output was `a`.
fn through_relu(g: Plane, a: &Plane, rule: Rule) -> Plane {
    let mut g = match rule {
        Rule::Deconvnet | Rule::Guided => relu(g),
        Rule::Gradient => g,
    };
    if rule != Rule::Deconvnet {
        for (v, &on) in g.data.iter_mut().zip(&a.data) {
            if on <= 0.0 {
                *v = 0.0;
            }
        }
    }
    g
}

/// The gradient of LRN (size 5, alpha 1e-4, beta 0.75, k 2, PyTorch's window) at `a`, applied to
/// `g`, differentiating `b[i] = a[i]·D[i]^−β` term by term with a fresh window sum per element.
fn lrn_input_grad(g: &Plane, a: &Plane) -> Plane {
    let (size, alpha, beta, k) = (5usize, 1e-4f64, 0.75f64, 2f64);
    let plane = a.h * a.w;
    let at = |c: usize, i: usize| a.data[c * plane + i] as f64;
    let window = |c: usize| c.saturating_sub(size / 2)..=(c + (size - 1) / 2).min(a.c - 1);
    let d = |c: usize, i: usize| {
        k + alpha / size as f64 * window(c).map(|q| at(q, i).powi(2)).sum::<f64>()
    };
    let mut out = vec![0f32; a.data.len()];
    for j in 0..a.c {
        for i in 0..plane {
            let mut v = 0f64;
            // every output channel c whose window holds j
            for c in 0..a.c {
                if !window(c).contains(&j) {
                    continue;
                }
                let gc = g.data[c * plane + i] as f64;
                let dc = d(c, i);
                if c == j {
                    v += gc * dc.powf(-beta);
                }
                v -= gc * at(c, i) * beta * dc.powf(-beta - 1.0) * alpha / size as f64
                    * 2.0
                    * at(j, i);
            }
            out[j * plane + i] = v as f32;
        }
    }
    Plane {
        c: a.c,
        h: a.h,
        w: a.w,
        data: out,
    }
}

fn reference(
    model: &LoadedModel,
    input: &Tensor,
    layer: usize,
    map: usize,
    whole_map: bool,
) -> Vec<f32> {
    reference_by(model, input, layer, map, whole_map, Rule::Deconvnet)
}

fn reference_by(
    model: &LoadedModel,
    input: &Tensor,
    layer: usize,
    map: usize,
    whole_map: bool,
    rule: Rule,
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
        let act_l = to_plane(&trace.convs[l].activation);
        g = conv_input_grad(
            &through_relu(g, &act_l, rule),
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
            if below.normalized.is_some() && rule != Rule::Deconvnet {
                g = lrn_input_grad(&g, &to_plane(&below.activation));
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

#[test]
fn gradient_and_guided_backprop_match_the_loop_reference_for_every_layer() {
    let (model, input) = fixture();
    let trace = model.net.forward_trace(&input).unwrap();
    for rule in [Rule::Gradient, Rule::Guided] {
        for layer in 0..5 {
            let map = strongest_map(&trace, layer);
            let got = backproject(
                &model.net,
                &trace,
                layer,
                map,
                &Selection::StrongestUnit,
                rule,
            )
            .unwrap();
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let want = reference_by(&model, &input, layer, map, false, rule);
            let err = rel_err(&got, &want);
            eprintln!("{rule:?} conv{} map {map}: rel err {err:.2e}", layer + 1);
            assert!(
                err <= 1e-4,
                "{rule:?} conv{} map {map}: {err:.3e}",
                layer + 1
            );
        }
    }
}

/// The gradient rule is the true gradient: candle's autograd through the differentiable forward
/// (the ops training uses), from `value · unit` at the strongest unit, gives the same pixels.
#[test]
fn the_gradient_rule_equals_autograd() {
    let (model, input) = fixture();
    let trace = model.net.forward_trace(&input).unwrap();
    let net = &model.net;
    let mut differs = 0f32;
    for layer in 0..5 {
        let map = strongest_map(&trace, layer);
        let x = Var::from_tensor(&input).unwrap();
        let mut h = x.as_tensor().clone();
        for (i, conv) in net.convs.iter().enumerate().take(layer + 1) {
            h = conv.forward(&h).unwrap();
            if i < layer {
                if let Some(params) = conv.spec.lrn {
                    h = zfnet::ops::lrn::lrn(&h, params).unwrap();
                }
                if let Some(pool) = conv.spec.pool {
                    h = zfnet::ops::maxpool::max_pool(&h, pool).unwrap();
                }
            }
        }
        let (_, c, hh, ww) = h.dims4().unwrap();
        let (y, xx, value) = strongest_units(&h, map).unwrap()[0];
        let mut seed = vec![0f32; c * hh * ww];
        seed[(map * hh + y) * ww + xx] = value;
        let seed = Tensor::from_vec(seed, (1, c, hh, ww), &Device::Cpu).unwrap();
        let grads = (h * seed).unwrap().sum_all().unwrap().backward().unwrap();
        let want: Vec<f32> = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = backproject(
            net,
            &trace,
            layer,
            map,
            &Selection::StrongestUnit,
            Rule::Gradient,
        )
        .unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let err = rel_err(&got, &want);
        eprintln!("autograd conv{} map {map}: rel err {err:.2e}", layer + 1);
        assert!(err <= 1e-4, "conv{} map {map}: {err:.3e}", layer + 1);
        let deconv: Vec<f32> = project(net, &trace, layer, map, &Selection::StrongestUnit)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        differs = differs.max(rel_err(&deconv, &want));
    }
    // the rules are not the same computation: somewhere the deconvnet departs from the gradient
    assert!(
        differs > 1e-2,
        "deconvnet equals the gradient everywhere ({differs})"
    );
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

/// Our transposed convolution (GEMM + col2im over the box of the nonzero values) against
/// candle's direct loop: dense signals, a single unit, a box at a corner (the padding's edge) and
/// an image of zeros beside a nonzero one, at conv1's and conv2's geometries narrowed.
#[test]
fn gemm_conv_transpose_equals_candles() {
    for (c_out, c_in, k, stride, padding, side) in [(8, 5, 5, 2, 0, 55), (6, 3, 7, 2, 1, 45)] {
        let w = Tensor::randn(0f32, 1.0, (c_out, c_in, k, k), &Device::Cpu).unwrap();
        let out = (side + 2 * padding - k) / stride + 1;
        let dense = Tensor::randn(0f32, 1.0, (2, c_out, out, out), &Device::Cpu).unwrap();
        let mut masks = vec![vec![1f32; 2 * c_out * out * out]];
        let at = |i: usize, c: usize, y: usize, x: usize| ((i * c_out + c) * out + y) * out + x;
        let mut unit = vec![0f32; 2 * c_out * out * out];
        unit[at(0, 1, out / 2, out / 3)] = 1.0;
        unit[at(1, 0, 0, out - 1)] = 1.0;
        masks.push(unit);
        let mut corner = vec![0f32; 2 * c_out * out * out];
        for c in 0..c_out {
            for y in 0..3 {
                for x in out - 4..out {
                    corner[at(1, c, y, x)] = 1.0; // image 0 stays all zero
                }
            }
        }
        masks.push(corner);
        for mask in masks {
            let mask = Tensor::from_vec(mask, (2, c_out, out, out), &Device::Cpu).unwrap();
            let x = (&dense * &mask).unwrap();
            let ours = zfnet::deconv::conv_transpose(&x, &w, stride, padding, side).unwrap();
            let theirs = x.conv_transpose2d(&w, padding, 0, stride, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let err = max_abs_diff(&ours, &theirs);
            assert!(err < 1e-4, "k{k}/{stride} p{padding}: {err}");
        }
    }
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
