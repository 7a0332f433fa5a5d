//! The paper's analyses (Fig. 5 invariance, Table 1 correspondence) against direct computations:
//! plain single-image forward passes and the definitions written out.

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use zfnet::correspondence::{correspondence, masked, MaskBox, Part};
use zfnet::invariance::{invariance, transform_image, Transform};
use zfnet::LoadedModel;

fn fixture() -> (LoadedModel, Vec<Tensor>) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let model = LoadedModel::load(&dir.join("zfnet-narrow.safetensors"), &Device::Cpu).unwrap();
    let expected: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("zfnet-narrow.expected.safetensors"), &Device::Cpu)
            .unwrap();
    let x = &expected["input"];
    // the noise image, the pattern, and the pattern upside down
    let a = x.narrow(0, 0, 1).unwrap();
    let b = x.narrow(0, 1, 1).unwrap();
    let c = b.flip(&[2]).unwrap().contiguous().unwrap();
    (model, vec![a, b, c])
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// (layer-1 output, fc7, probabilities) of one image by a plain forward.
fn single(model: &LoadedModel, data: Vec<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = Tensor::from_vec(data, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let t = model.net.forward_trace(&x).unwrap();
    let logits = host(&t.logits);
    let m = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f32> = logits.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    (
        host(t.convs[0].output()),
        host(&t.fc7),
        e.iter().map(|v| v / s).collect(),
    )
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn invariance_curves_equal_two_plain_forwards() {
    let (model, inputs) = fixture();
    let steps = 5;
    let curves = invariance(
        &model.net,
        &inputs[..2],
        &[None, Some(3)],
        steps,
        &|_, _| true,
    )
    .unwrap();
    assert_eq!(curves.len(), 2);
    assert_eq!(curves[1].class, 3);
    for (img, c) in inputs[..2].iter().zip(&curves) {
        let data = host(img);
        let (f1, f7, p) = single(&model, data.clone());
        assert!((c.base_probability - p[c.class]).abs() < 1e-5);
        for curve in &c.curves {
            assert_eq!(curve.amounts, curve.transform.amounts(steps));
            for (k, &v) in curve.amounts.iter().enumerate() {
                let (g1, g7, q) = single(&model, transform_image(&data, 224, curve.transform, v));
                let (d1, d7) = (dist(&f1, &g1), dist(&f7, &g7));
                let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * b.abs().max(1e-2);
                assert!(
                    close(curve.layer1[k], d1),
                    "{:?} {v}: {} vs {d1}",
                    curve.transform,
                    curve.layer1[k]
                );
                assert!(
                    close(curve.layer7[k], d7),
                    "{:?} {v}: {} vs {d7}",
                    curve.transform,
                    curve.layer7[k]
                );
                assert!((curve.probability[k] - q[c.class]).abs() < 1e-5);
            }
            // the identity amount gives distance 0; some other amount moves layer 1
            let identity = match curve.transform {
                Transform::Translate => 2,
                Transform::Scale | Transform::Rotate => 0,
            };
            assert!(curve.layer1[identity] < 1e-3, "{:?}", curve.transform);
            assert!(
                curve.layer1.iter().any(|&d| d > 1.0),
                "{:?}",
                curve.transform
            );
        }
    }
    // bad parameters are refused by name
    let err = invariance(&model.net, &inputs[..1], &[None], 1, &|_, _| true).unwrap_err();
    assert!(err.to_string().contains("steps"), "{err}");
    let err = invariance(&model.net, &inputs[..1], &[Some(10)], 3, &|_, _| true).unwrap_err();
    assert!(err.to_string().contains("class 10"), "{err}");
    assert!(invariance(&model.net, &inputs[..1], &[None], 3, &|_, _| false).is_err());
}

#[test]
fn correspondence_delta_equals_the_definition_for_three_images() {
    let (model, inputs) = fixture();
    let boxes = vec![
        MaskBox {
            x0: 40,
            y0: 60,
            x1: 90,
            y1: 100,
        },
        MaskBox {
            x0: 100,
            y0: 20,
            x1: 150,
            y1: 60,
        },
        MaskBox {
            x0: 10,
            y0: 150,
            x1: 60,
            y1: 190,
        },
    ];
    let parts = [Part {
        name: "eye".into(),
        boxes: boxes.clone(),
    }];
    let rows = correspondence(&model.net, &inputs, &parts, 0, 1, &|_, _| true).unwrap();
    assert_eq!(rows.len(), 1);
    // by hand: ε per image from two plain forwards, then signs compared pair by pair
    let mut eps5 = Vec::new();
    let mut eps7 = Vec::new();
    for (img, b) in inputs.iter().zip(&boxes) {
        let data = host(img);
        let run = |d: Vec<f32>| {
            let x = Tensor::from_vec(d, (1, 3, 224, 224), &Device::Cpu).unwrap();
            let t = model.net.forward_trace(&x).unwrap();
            (host(t.convs[4].output()), host(&t.fc7))
        };
        let (a5, a7) = run(data.clone());
        let (m5, m7) = run(masked(&data, *b));
        eps5.push(a5.iter().zip(&m5).map(|(x, y)| x - y).collect::<Vec<f32>>());
        eps7.push(a7.iter().zip(&m7).map(|(x, y)| x - y).collect::<Vec<f32>>());
    }
    let sgn = |v: f32| (v > 0.0) as i32 - (v < 0.0) as i32;
    let delta = |eps: &[Vec<f32>]| {
        let mut values = Vec::new();
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let differ = (0..eps[i].len())
                        .filter(|&k| sgn(eps[i][k]) != sgn(eps[j][k]))
                        .count();
                    values.push(differ as f64 / eps[i].len() as f64);
                }
            }
        }
        values.iter().sum::<f64>() / values.len() as f64
    };
    let (d5, d7) = (delta(&eps5), delta(&eps7));
    eprintln!(
        "Δ5 {d5:.4} vs {:.4}, Δ7 {d7:.4} vs {:.4}",
        rows[0].layer5.mean, rows[0].layer7.mean
    );
    assert!((rows[0].layer5.mean as f64 - d5).abs() < 1e-5);
    assert!((rows[0].layer7.mean as f64 - d7).abs() < 1e-5);
    assert!(d5 > 0.0 && d7 > 0.0, "masking changed nothing");

    // the random control: reproducible for a seed, and boxes of the first part's size
    let a = correspondence(&model.net, &inputs, &parts, 3, 9, &|_, _| true).unwrap();
    let b = correspondence(&model.net, &inputs, &parts, 3, 9, &|_, _| true).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[1].part, "random");
    assert!(a[1].layer5.mean > 0.0);

    // bad input is refused by name
    let short = [Part {
        name: "nose".into(),
        boxes: boxes[..2].to_vec(),
    }];
    let err = correspondence(&model.net, &inputs, &short, 0, 1, &|_, _| true).unwrap_err();
    assert!(err.to_string().contains("nose"), "{err}");
    let outside = [Part {
        name: "x".into(),
        boxes: vec![
            MaskBox {
                x0: 200,
                y0: 0,
                x1: 230,
                y1: 9
            };
            3
        ],
    }];
    let err = correspondence(&model.net, &inputs, &outside, 0, 1, &|_, _| true).unwrap_err();
    assert!(err.to_string().contains("230"), "{err}");
    assert!(correspondence(&model.net, &inputs[..1], &parts, 0, 1, &|_, _| true).is_err());
}
