//! ONNX graphs with the structure of the model zoo's `zfnet512` and `bvlcalexnet`
//! (`tools/make_onnx_fixtures.py`, built with the onnx helper and run by ONNX Runtime): the
//! import reads their geometry from the nodes, every layer matches ONNX Runtime, the gradient
//! rule of the deconvnet equals autograd through the imported geometry, and graphs zfvis cannot
//! run are refused naming the node.

use candle_core::{Device, Tensor, Var};
use prost::Message;
use std::collections::HashMap;
use zfnet::arch::Architecture;
use zfnet::deconv::{backproject, strongest_units, Rule, Selection};
use zfnet::import::onnx_proto::{AttributeProto, ModelProto, NodeProto};
use zfnet::import::{import, Container};
use zfnet::manifest::ChannelOrder;
use zfnet::ops::maxpool::Pool2d;

mod common;
use common::{relative_error, scratch};

fn fixture(name: &str) -> std::path::PathBuf {
    common::fixture(&format!("import/{name}"))
}

#[test]
fn zoo_structured_graphs_import_with_their_geometry_and_match_onnx_runtime() -> anyhow::Result<()> {
    for (name, family, pools) in [
        (
            "zfnet512-narrow",
            Architecture::Zfnet,
            [Some((3, 2)), Some((3, 2)), None, None, Some((2, 2))],
        ),
        (
            "bvlcalexnet-narrow",
            Architecture::Alexnet,
            [Some((3, 2)), Some((3, 2)), None, None, Some((3, 2))],
        ),
    ] {
        let got = import(&fixture(&format!("{name}.onnx")), None)?;
        assert_eq!(got.container, Container::Onnx);
        assert_eq!(got.architecture, family, "{name}");
        assert!(
            !got.layout.is_preset(),
            "{name}: floor pools are not a preset"
        );
        for (i, (spec, want)) in got.layout.convs.iter().zip(pools).enumerate() {
            let pool = spec.pool.map(|p: Pool2d| {
                assert!(
                    !p.ceil_mode,
                    "{name} conv{}: ONNX's default is floor",
                    i + 1
                );
                (p.kernel, p.stride)
            });
            assert_eq!(pool, want, "{name} conv{}", i + 1);
            assert_eq!(spec.lrn.is_some(), i < 2, "{name} conv{}", i + 1);
            if let Some(l) = spec.lrn {
                assert_eq!((l.size, l.alpha, l.beta, l.k), (5, 1e-4, 0.75, 1.0));
            }
        }
        assert_eq!(got.preprocess.channel_order, ChannelOrder::Bgr);
        assert_eq!(got.preprocess.pixel_scale, 255.0);
        if family == Architecture::Alexnet {
            assert_eq!(
                got.notes.len(),
                4,
                "3 grouped convs and the Softmax: {:?}",
                got.notes
            );
        }
        let want: HashMap<String, Tensor> = candle_core::safetensors::load(
            fixture(&format!("{name}.expected.safetensors")),
            &Device::Cpu,
        )?;
        let trace = got.net.forward_trace(&want["input"])?;
        let mut report = Vec::new();
        for (i, layer) in trace.convs.iter().enumerate() {
            let conv = format!("conv{}", i + 1);
            let mut outputs = vec![("activation", Some(&layer.activation))];
            outputs.push(("normalized", layer.normalized.as_ref()));
            outputs.push(("pooled", layer.pooled.as_ref().map(|p| &p.output)));
            for (what, t) in outputs {
                let key = format!("{conv}.{what}");
                match (t, want.get(&key)) {
                    (Some(t), Some(w)) => {
                        let err = relative_error(t, w);
                        report.push(format!("{key} {err:.1e}"));
                        assert!(err <= 1e-4, "{name} {key}: {err:.2e}");
                    }
                    (None, None) => {}
                    (t, w) => panic!("{name} {key}: ours {}, ORT's {}", t.is_some(), w.is_some()),
                }
            }
        }
        let probs = zfnet::model::softmax(&trace.logits)?;
        for (key, t) in [
            ("fc6", &trace.fc6),
            ("fc7", &trace.fc7),
            ("logits", &trace.logits),
            ("softmax", &probs),
        ] {
            let err = relative_error(t, &want[key]);
            report.push(format!("{key} {err:.1e}"));
            assert!(err <= 1e-4, "{name} {key}: {err:.2e}");
        }
        eprintln!("{name} against ONNX Runtime: {}", report.join(", "));
    }
    Ok(())
}

/// Ceil-mode pools as converters write them (floor mode, padded at the end so the last partial
/// window stays): imported as ceil-mode pools, pool5 and the logits as ONNX Runtime computes them.
/// Padding that is not ceil mode's stays refused.
#[test]
fn end_padded_pools_import_as_ceil_mode() -> anyhow::Result<()> {
    let got = import(&fixture("zfnet512-ceil-narrow.onnx"), None)?;
    let pools: Vec<_> = got.layout.convs.iter().filter_map(|c| c.pool).collect();
    assert_eq!(pools.len(), 3);
    assert!(pools.iter().all(|p| p.ceil_mode), "{pools:?}");
    let sides: Vec<_> = got.layout.spatial_sizes().iter().map(|s| s.1).collect();
    assert_eq!(sides, [Some(55), Some(13), None, None, Some(7)]);
    let input = candle_core::safetensors::load(
        fixture("zfnet512-narrow.expected.safetensors"),
        &Device::Cpu,
    )?["input"]
        .clone();
    let want: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixture("zfnet512-ceil-narrow.expected.safetensors"),
        &Device::Cpu,
    )?;
    let trace = got.net.forward_trace(&input)?;
    let pool5 = &trace.convs[4].pooled.as_ref().expect("pool5").output;
    for (key, t) in [("conv5.pooled", pool5), ("logits", &trace.logits)] {
        let err = relative_error(t, &want[key]);
        eprintln!("ceil-padded zfnet512 {key}: {err:.1e}");
        assert!(err <= 1e-4, "{key}: {err:.2e}");
    }
    // an end padding of 3 on pool5 (13 → 8 outputs) is not what ceil mode gives (7)
    let mut m = ModelProto::decode(&std::fs::read(fixture("zfnet512-ceil-narrow.onnx"))?[..])?;
    let pool5 = nodes(&mut m)
        .iter_mut()
        .rfind(|n| n.op_type == "MaxPool")
        .unwrap();
    set_ints(pool5, "pads", vec![0, 0, 3, 3]);
    assert_names(
        &error_of(&m, "pool5-pad3.onnx"),
        &[
            "MaxPool",
            "end padding 3 on a 13-wide input",
            "7 outputs, not 8",
        ],
    );
    Ok(())
}

/// The deconvnet walks the imported geometry backwards (floor pools, a 2×2 pool5, LRN with
/// bias 1, grouped convs made dense): its gradient rule equals candle's autograd through the
/// differentiable forward.
#[test]
fn the_gradient_rule_follows_the_imported_geometry() -> anyhow::Result<()> {
    for name in ["zfnet512-narrow", "bvlcalexnet-narrow"] {
        let net = import(&fixture(&format!("{name}.onnx")), None)?.net;
        let want: HashMap<String, Tensor> = candle_core::safetensors::load(
            fixture(&format!("{name}.expected.safetensors")),
            &Device::Cpu,
        )?;
        let input = &want["input"];
        let trace = net.forward_trace(input)?;
        for layer in [1, 4] {
            let map = 0;
            let x = Var::from_tensor(input)?;
            let mut h = x.as_tensor().clone();
            for (i, conv) in net.convs.iter().enumerate().take(layer + 1) {
                h = conv.forward(&h)?;
                if i < layer {
                    if let Some(params) = conv.spec.lrn {
                        h = zfnet::ops::lrn::lrn(&h, params)?;
                    }
                    if let Some(pool) = conv.spec.pool {
                        h = zfnet::ops::maxpool::max_pool(&h, pool)?;
                    }
                }
            }
            let (_, c, hh, ww) = h.dims4()?;
            let (y, xx, value) = strongest_units(&h, map)?[0];
            let mut seed = vec![0f32; c * hh * ww];
            seed[(map * hh + y) * ww + xx] = value;
            let seed = Tensor::from_vec(seed, (1, c, hh, ww), &Device::Cpu)?;
            let grads = (h * seed)?.sum_all()?.backward()?;
            let autograd = grads.get(&x).expect("a gradient for the input");
            let got = backproject(
                &net,
                &trace,
                layer,
                map,
                &Selection::StrongestUnit,
                Rule::Gradient,
            )?;
            let err = relative_error(&got, autograd);
            eprintln!(
                "{name} conv{} map {map}: gradient rule vs autograd {err:.1e}",
                layer + 1
            );
            assert!(err <= 1e-4, "{name} conv{}: {err:.2e}", layer + 1);
        }
    }
    Ok(())
}

fn model() -> ModelProto {
    ModelProto::decode(&std::fs::read(fixture("zfnet512-narrow.onnx")).unwrap()[..]).unwrap()
}

fn error_of(model: &ModelProto, name: &str) -> String {
    let path = scratch(name);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    match import(&path, None) {
        Ok(_) => panic!("{name} imported"),
        Err(e) => e.to_string(),
    }
}

fn nodes(m: &mut ModelProto) -> &mut Vec<NodeProto> {
    &mut m.graph.as_mut().unwrap().node
}

fn set_ints(node: &mut NodeProto, name: &str, ints: Vec<i64>) {
    node.attribute.retain(|a| a.name != name);
    node.attribute.push(AttributeProto {
        name: name.into(),
        ints,
        r#type: 7,
        ..Default::default()
    });
}

fn assert_names(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "{err:?} does not say {p:?}");
    }
}

#[test]
fn graphs_zfvis_cannot_run_are_refused_naming_the_node() {
    // an operator outside the chain's vocabulary, at position 3
    let mut m = model();
    let relu = nodes(&mut m)[1].clone();
    let mut bn = relu.clone();
    bn.op_type = "BatchNormalization".into();
    bn.name = "bn1".into();
    bn.input = vec![relu.output[0].clone()];
    bn.output = vec!["bn1_out".into()];
    let next = &mut nodes(&mut m)[2];
    next.input[0] = "bn1_out".into();
    nodes(&mut m).insert(2, bn);
    let err = error_of(&m, "bn.onnx");
    assert_names(
        &err,
        &[
            "node 2",
            "BatchNormalization",
            "bn1",
            "unsupported operator",
        ],
    );

    // padding that differs between sides
    let mut m = model();
    set_ints(&mut nodes(&mut m)[0], "pads", vec![1, 1, 0, 0]);
    assert_names(
        &error_of(&m, "pads.onnx"),
        &["node 0", "Conv", "pads [1, 1, 0, 0]"],
    );

    // an even LRN window
    let mut m = model();
    let lrn = nodes(&mut m)
        .iter_mut()
        .find(|n| n.op_type == "LRN")
        .unwrap();
    lrn.attribute
        .iter_mut()
        .find(|a| a.name == "size")
        .unwrap()
        .i = 4;
    assert_names(&error_of(&m, "lrn.onnx"), &["node 2", "LRN", "size 4"]);

    // a padded pool
    let mut m = model();
    let pool = nodes(&mut m)
        .iter_mut()
        .find(|n| n.op_type == "MaxPool")
        .unwrap();
    set_ints(pool, "pads", vec![1, 1, 1, 1]);
    assert_names(
        &error_of(&m, "pool.onnx"),
        &["node 3", "MaxPool", "padded pooling"],
    );

    // a branch: conv2 reads the input instead of pool1
    let mut m = model();
    let input = nodes(&mut m)[0].input[0].clone();
    nodes(&mut m)[4].input[0] = input;
    assert_names(
        &error_of(&m, "branch.onnx"),
        &["node 4", "reads", "chains of layers"],
    );

    // a weight with NaN in it
    let mut m = model();
    let init = &mut m.graph.as_mut().unwrap().initializer[0];
    let name = init.name.clone();
    init.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_names(&error_of(&m, "nan.onnx"), &["conv1.weight", "NaN"]);
    assert!(name.contains("conv1_w"), "{name}");

    // a missing layer: conv5 and its Relu taken out
    let mut m = model();
    let at = nodes(&mut m)
        .iter()
        .position(|n| n.name.ends_with("conv5_1"))
        .unwrap();
    let prev = nodes(&mut m)[at - 1].output[0].clone();
    nodes(&mut m).drain(at..at + 2);
    nodes(&mut m)[at].input[0] = prev;
    assert_names(
        &error_of(&m, "four.onnx"),
        &["Reshape", "after 4 conv layers"],
    );
}

#[test]
fn truncated_and_damaged_onnx_files_fail_saying_so() {
    let bytes = std::fs::read(fixture("zfnet512-narrow.onnx")).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 7, 40] {
        let path = scratch(&format!("cut-{cut}.onnx"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = match import(&path, None) {
            Ok(_) => panic!("a file cut at {cut} imported"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("truncated") || err.contains("no graph") || err.contains("data"),
            "cut at {cut}: {err}"
        );
    }
    // flipped bytes never panic
    for i in (0..bytes.len()).step_by(bytes.len() / 64) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5a;
        let path = scratch(&format!("flip-{i}.onnx"));
        std::fs::write(&path, &bad).unwrap();
        let outcome = std::panic::catch_unwind(|| import(&path, None).map(|_| ()));
        assert!(outcome.is_ok(), "a flipped byte at {i} panicked");
    }
}
