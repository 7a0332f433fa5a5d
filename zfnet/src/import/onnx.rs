//! ONNX graphs of the AlexNet family: a chain of
//!
//! ```text
//! 5 × ( Conv → Relu → LRN? → MaxPool? )  →  Flatten | Reshape  →
//! 2 × ( Gemm | MatMul + Add → Relu → Dropout? )  →  Gemm | MatMul + Add  →  Softmax?
//! ```
//!
//! (Dropout and Identity anywhere, Constant nodes feeding a Reshape's shape), read into zfvis's
//! tensors and a [`Layout`] taken from the nodes' attributes: each Conv's kernel, stride and
//! padding, each LRN's size, alpha, beta and bias, each MaxPool's size, stride and ceil mode. The
//! ONNX model zoo's `zfnet512` and `bvlcalexnet` are such chains.
//!
//! - **Grouped convolutions** (BVLC AlexNet's conv2, conv4, conv5 use `group = 2`) become dense
//!   ones with zero blocks: a conv with `g` groups is exactly the conv whose weight
//!   `[out, in, k, k]` is zero outside the `g` diagonal blocks `[out/g, in/g]`, so the forward
//!   pass, the deconvnet (its transpose) and occlusion need nothing new. It costs `g`× the
//!   multiply-adds of those layers.
//! - **LRN** is ONNX's, PyTorch's and ours alike (alpha divided by the size) for odd sizes; an even
//!   size centres its window differently in each and is refused.
//! - `Gemm` with `transB = 0` and `MatMul` (weights `[in, out]`) are transposed to PyTorch's
//!   `[out, in]`; `alpha`/`beta` other than 1 are refused.
//! - Anything else is refused with an error naming the node, its op and its position: padding
//!   that is not the same on all sides, padded or dilated pools, dilated convs, a pool before an
//!   LRN, weights stored outside the file.
//!
//! The graph says nothing of how pixels were fed to it: the importer records an input convention
//! (the zoo's models are Caffe's: BGR, 0–255, mean pixel subtracted).

use super::onnx_proto::{AttributeProto, ModelProto, NodeProto, TensorProto};
use super::onnx_tensor::{dense_from_groups, tensor};
use crate::arch::{Architecture, ConvSpec, Layout};
use crate::model::{CONV_NAMES, FC_NAMES};
use crate::ops::lrn::LrnParams;
use crate::ops::maxpool::Pool2d;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// What an ONNX chain gave.
pub struct OnnxNet {
    /// zfvis-named f32 tensors (`conv1.weight` … `fc8.bias`).
    pub tensors: Vec<(String, Tensor)>,
    pub layout: Layout,
    /// Layers whose grouped convolution was made dense: `(conv index, groups)`.
    pub groups: Vec<(usize, usize)>,
    /// Whether the chain ends in a Softmax (zfvis's logits are what enters it).
    pub softmax: bool,
    pub nodes: usize,
}

struct ConvLayer {
    spec: ConvSpec,
    relu: bool,
}

struct FcLayer {
    relu: bool,
    /// A MatMul waiting for its Add.
    needs_bias: bool,
}

/// Decodes an ONNX file's bytes and reads its chain.
pub fn read(bytes: &[u8], what: &str) -> Result<OnnxNet> {
    let model: ModelProto = prost::Message::decode(bytes).map_err(|e| {
        Error::Weights(format!(
            "{what}: not a whole ONNX model ({e}); is the file truncated?"
        ))
    })?;
    let graph = model
        .graph
        .ok_or_else(|| Error::Weights(format!("{what}: the ONNX model has no graph")))?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let input = graph
        .input
        .iter()
        .find(|i| !inits.contains_key(i.name.as_str()))
        .ok_or_else(|| Error::Weights(format!("{what}: the graph has no data input")))?;
    check_input_shape(input, what)?;
    Chain::new(&inits, input.name.clone()).walk(&graph.node, what)
}

fn check_input_shape(input: &super::onnx_proto::ValueInfoProto, what: &str) -> Result<()> {
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
        .unwrap_or_default();
    let side = crate::arch::INPUT_SIZE as i64;
    let fits = |d: &Option<i64>, want: i64| d.is_none_or(|v| v == want);
    match dims.as_slice() {
        [] => Ok(()),
        [_, c, h, w] if fits(c, 3) && fits(h, side) && fits(w, side) => Ok(()),
        _ => Err(bad_input(what, &input.name, &dims)),
    }
}

fn bad_input(what: &str, name: &str, dims: &[Option<i64>]) -> Error {
    Error::Weights(format!(
        "{what}: input {name:?} has shape {dims:?}; zfvis runs [N, 3, 224, 224] images"
    ))
}

struct Chain<'a> {
    inits: &'a HashMap<&'a str, &'a TensorProto>,
    /// The tensor the next layer must read.
    current: String,
    convs: Vec<ConvLayer>,
    fcs: Vec<FcLayer>,
    flattened: bool,
    softmax: bool,
    tensors: Vec<(String, Tensor)>,
    groups: Vec<(usize, usize)>,
}

impl<'a> Chain<'a> {
    fn new(inits: &'a HashMap<&'a str, &'a TensorProto>, input: String) -> Self {
        Chain {
            inits,
            current: input,
            convs: Vec::new(),
            fcs: Vec::new(),
            flattened: false,
            softmax: false,
            tensors: Vec::new(),
            groups: Vec::new(),
        }
    }

    fn walk(mut self, nodes: &[NodeProto], what: &str) -> Result<OnnxNet> {
        for (position, node) in nodes.iter().enumerate() {
            let at = || {
                let name = if node.name.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", node.name)
                };
                format!("{what}: node {position} ({}{name})", node.op_type)
            };
            if node.op_type == "Constant" {
                // a Reshape's target shape: the chain's shapes are checked by the network
                continue;
            }
            if node.input.first() != Some(&self.current) {
                return Err(Error::Weights(format!(
                    "{}: reads {:?}, not {:?}: zfvis imports chains of layers only",
                    at(),
                    node.input.first().map_or("nothing", |s| s.as_str()),
                    self.current
                )));
            }
            self.node(node)
                .map_err(|e| Error::Weights(format!("{}: {e}", at())))?;
            self.current = node
                .output
                .first()
                .cloned()
                .ok_or_else(|| Error::Weights(format!("{}: no output", at())))?;
        }
        self.finish(nodes.len(), what)
    }

    fn node(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return Err(format!(
                "operator domain {:?} is not supported",
                node.domain
            ));
        }
        match node.op_type.as_str() {
            "Dropout" | "Identity" => Ok(()),
            "Conv" => self.conv(node),
            "Relu" => self.relu(),
            "LRN" => self.lrn(node),
            "MaxPool" => self.max_pool(node),
            "Flatten" | "Reshape" => self.flatten(node),
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Add" => self.add(node),
            "Softmax" if self.fcs.len() == 3 && !self.fcs[2].needs_bias => {
                self.softmax = true;
                Ok(())
            }
            "Softmax" => Err("a Softmax before the last fully connected layer".into()),
            op => Err(format!(
                "unsupported operator {op}: zfvis imports chains of Conv, Relu, LRN, MaxPool, \
                 Flatten/Reshape, Gemm or MatMul+Add, Dropout and Softmax"
            )),
        }
    }

    fn conv(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        if self.convs.len() == 5 || self.flattened {
            return Err("a sixth conv layer (zfvis runs five)".into());
        }
        let index = self.convs.len();
        let w = self.weight(node, 1)?;
        let (out, _, kh, kw) = w.dims4().map_err(|e| e.to_string())?;
        let kernel = square(
            ints(node, "kernel_shape").unwrap_or(vec![kh as i64, kw as i64]),
            "kernel_shape",
        )?;
        if kh != kw || kernel != kh {
            return Err(format!(
                "kernel {kh}×{kw} is not square or not its kernel_shape"
            ));
        }
        let stride = square(ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        let padding = conv_pads(node, kernel, stride)?;
        if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err("dilated convolutions are not supported".into());
        }
        let groups = attr(node, "group").map_or(1, |a| a.i).max(1) as usize;
        let w = if groups > 1 {
            self.groups.push((index, groups));
            dense_from_groups(&w, groups).map_err(|e| e.to_string())?
        } else {
            w
        };
        let b = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self.weight(node, 2)?,
            None => Tensor::zeros(out, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?,
        };
        let name = CONV_NAMES[index];
        self.tensors.push((format!("{name}.weight"), w));
        self.tensors.push((
            format!("{name}.bias"),
            b.flatten_all().map_err(|e| e.to_string())?,
        ));
        self.convs.push(ConvLayer {
            spec: ConvSpec {
                kernel,
                stride,
                padding,
                lrn: None,
                pool: None,
            },
            relu: false,
        });
        Ok(())
    }

    fn relu(&mut self) -> std::result::Result<(), String> {
        if self.flattened {
            let n = self.fcs.len();
            match self.fcs.last_mut() {
                Some(fc) if !fc.relu && !fc.needs_bias && n < 3 => fc.relu = true,
                _ => return Err("a Relu that does not follow fc6 or fc7".into()),
            }
        } else {
            match self.convs.last_mut() {
                Some(c) if !c.relu => c.relu = true,
                _ => return Err("a Relu that does not follow a Conv".into()),
            }
        }
        Ok(())
    }

    fn lrn(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        let conv = self.last_rectified("LRN")?;
        if conv.spec.pool.is_some() {
            return Err("an LRN after the pool: zfvis normalises before pooling".into());
        }
        if conv.spec.lrn.is_some() {
            return Err("a second LRN on one layer".into());
        }
        let size = attr(node, "size").map(|a| a.i).unwrap_or(0);
        if size <= 0 || size % 2 == 0 {
            return Err(format!("LRN size {size}: zfvis needs an odd window"));
        }
        let f = |name: &str, default: f32| attr(node, name).map_or(default, |a| a.f);
        conv.spec.lrn = Some(LrnParams {
            size: size as usize,
            alpha: f("alpha", 1e-4),
            beta: f("beta", 0.75),
            k: f("bias", 1.0),
        });
        Ok(())
    }

    /// The side length of the last conv layer's output (what a pool after it reads).
    fn side(&self) -> usize {
        self.convs.iter().fold(crate::arch::INPUT_SIZE, |side, c| {
            let out = c.spec.output_len(side);
            c.spec.pool.map_or(out, |p| p.output_len(out))
        })
    }

    fn max_pool(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        let side = self.side();
        let conv = self.last_rectified("MaxPool")?;
        if conv.spec.pool.is_some() {
            return Err("a second MaxPool on one layer".into());
        }
        let kernel = square(
            ints(node, "kernel_shape").unwrap_or_default(),
            "kernel_shape",
        )?;
        let stride = square(ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        let ceil_attr = attr(node, "ceil_mode").is_some_and(|a| a.i != 0);
        // Caffe's ceil-mode pools often reach ONNX as floor-mode pools padded at the end: the
        // same windows (padding never wins a max) when the sizes agree
        let ceil_mode = match end_pads(node)? {
            0 => ceil_attr,
            end => {
                let padded = (side + end)
                    .checked_sub(kernel)
                    .map_or(0, |n| n / stride + 1);
                let ceil = Pool2d {
                    kernel,
                    stride,
                    ceil_mode: true,
                }
                .output_len(side);
                if ceil_attr || padded != ceil {
                    return Err(format!(
                        "end padding {end} on a {side}-wide input: zfvis pools unpadded, or \
                         padded only as ceil mode would ({ceil} outputs, not {padded})"
                    ));
                }
                true
            }
        };
        if ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
            return Err("dilated pooling is not supported".into());
        }
        if node.output.len() > 1 && !node.output[1].is_empty() {
            return Err("MaxPool's Indices output is not supported".into());
        }
        conv.spec.pool = Some(Pool2d {
            kernel,
            stride,
            ceil_mode,
        });
        Ok(())
    }

    fn flatten(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        if self.convs.len() != 5 || self.flattened {
            return Err(format!(
                "{} after {} conv layers: zfvis flattens once, after conv5",
                node.op_type,
                self.convs.len()
            ));
        }
        if node.op_type == "Flatten" && attr(node, "axis").is_some_and(|a| a.i != 1) {
            return Err("Flatten with an axis other than 1".into());
        }
        self.flattened = true;
        Ok(())
    }

    fn gemm(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        self.check_fc_position()?;
        for (name, want) in [("alpha", 1.0), ("beta", 1.0)] {
            if attr(node, name).is_some_and(|a| a.f != want) {
                return Err(format!("Gemm with {name} ≠ 1 is not supported"));
            }
        }
        if attr(node, "transA").is_some_and(|a| a.i != 0) {
            return Err("Gemm with transA is not supported".into());
        }
        let w = self.weight(node, 1)?;
        let w = if attr(node, "transB").is_some_and(|a| a.i != 0) {
            w
        } else {
            w.t()
                .and_then(|t| t.contiguous())
                .map_err(|e| e.to_string())?
        };
        let out = w.dim(0).map_err(|e| e.to_string())?;
        let b = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self
                .weight(node, 2)?
                .flatten_all()
                .map_err(|e| e.to_string())?,
            None => Tensor::zeros(out, DType::F32, &Device::Cpu).map_err(|e| e.to_string())?,
        };
        self.push_fc(w, Some(b));
        Ok(())
    }

    fn matmul(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        self.check_fc_position()?;
        let w = self.weight(node, 1)?;
        let w = w
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| e.to_string())?;
        self.push_fc(w, None);
        Ok(())
    }

    fn add(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        match self.fcs.last() {
            Some(fc) if fc.needs_bias => {}
            _ => return Err("an Add that does not follow a MatMul".into()),
        }
        let b = self
            .weight(node, 1)?
            .flatten_all()
            .map_err(|e| e.to_string())?;
        let name = format!("{}.bias", FC_NAMES[self.fcs.len() - 1]);
        self.tensors.push((name, b));
        if let Some(fc) = self.fcs.last_mut() {
            fc.needs_bias = false;
        }
        Ok(())
    }

    fn check_fc_position(&self) -> std::result::Result<(), String> {
        if !self.flattened {
            return Err("a fully connected layer before the Flatten/Reshape after conv5".into());
        }
        if self.fcs.len() == 3 {
            return Err("a fourth fully connected layer (zfvis runs three)".into());
        }
        match self.fcs.last() {
            Some(fc) if fc.needs_bias => Err("a MatMul without its Add".into()),
            Some(fc) if !fc.relu => Err("fc layers without a Relu between them".into()),
            _ => Ok(()),
        }
    }

    fn push_fc(&mut self, w: Tensor, b: Option<Tensor>) {
        let name = FC_NAMES[self.fcs.len()];
        self.tensors.push((format!("{name}.weight"), w));
        let needs_bias = b.is_none();
        if let Some(b) = b {
            self.tensors.push((format!("{name}.bias"), b));
        }
        self.fcs.push(FcLayer {
            relu: false,
            needs_bias,
        });
    }

    fn last_rectified(&mut self, op: &str) -> std::result::Result<&mut ConvLayer, String> {
        match (self.flattened, self.convs.last_mut()) {
            (false, Some(c)) if c.relu => Ok(c),
            _ => Err(format!("a {op} that does not follow a Conv and its Relu")),
        }
    }

    /// Input `i` of `node` as an f32 tensor: an initializer (a Constant cannot hold weights here).
    fn weight(&self, node: &NodeProto, i: usize) -> std::result::Result<Tensor, String> {
        let name = node.input.get(i).ok_or_else(|| format!("no input {i}"))?;
        let t = self
            .inits
            .get(name.as_str())
            .ok_or_else(|| format!("input {name:?} is not an initializer (weights must be)"))?;
        tensor(t).map_err(|e| format!("{name:?}: {e}"))
    }

    fn finish(self, nodes: usize, what: &str) -> Result<OnnxNet> {
        let problem = if self.convs.len() != 5 {
            Some(format!("{} conv layers, not 5", self.convs.len()))
        } else if let Some(i) = self.convs.iter().position(|c| !c.relu) {
            Some(format!("conv{} has no Relu", i + 1))
        } else if self.fcs.len() != 3 {
            Some(format!("{} fully connected layers, not 3", self.fcs.len()))
        } else if self.fcs.iter().any(|f| f.needs_bias) {
            Some("a MatMul without its Add".into())
        } else if self.fcs[2].relu {
            Some("a Relu after fc8 (zfvis's logits are fc8's output)".into())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(Error::Weights(format!("{what}: the chain has {p}")));
        }
        let convs = std::array::from_fn(|i| self.convs[i].spec);
        let family = match convs[0].kernel {
            7 => Architecture::Zfnet,
            _ => Architecture::Alexnet,
        };
        Ok(OnnxNet {
            tensors: self.tensors,
            layout: Layout { family, convs },
            groups: self.groups,
            softmax: self.softmax,
            nodes,
        })
    }
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn square(v: Vec<i64>, name: &str) -> std::result::Result<usize, String> {
    match v.as_slice() {
        [a, b] if a == b && *a > 0 => Ok(*a as usize),
        _ => Err(format!(
            "{name} {v:?}: zfvis needs two equal positive values"
        )),
    }
}

fn auto_pad(node: &NodeProto) -> String {
    attr(node, "auto_pad").map_or(String::new(), |a| {
        String::from_utf8_lossy(&a.s).into_owned()
    })
}

/// A conv's padding: the one all four sides share (`auto_pad` SAME with stride 1 and an odd
/// kernel is that too); anything else is refused.
fn conv_pads(node: &NodeProto, kernel: usize, stride: usize) -> std::result::Result<usize, String> {
    match auto_pad(node).as_str() {
        "" | "NOTSET" => {}
        "VALID" => return Ok(0),
        "SAME_UPPER" | "SAME_LOWER" if stride == 1 && kernel % 2 == 1 => return Ok(kernel / 2),
        other => {
            return Err(format!(
                "auto_pad {other} with stride {stride} is not supported"
            ))
        }
    }
    let pads = ints(node, "pads").unwrap_or(vec![0; 4]);
    match pads.as_slice() {
        [a, b, c, d] if a == b && b == c && c == d && *a >= 0 => Ok(*a as usize),
        _ => Err(format!(
            "pads {pads:?}: zfvis needs the same padding on every side"
        )),
    }
}

/// A pool's padding at the end of both axes (`pads` = [0, 0, e, e]); padding at the start or
/// different per axis is refused.
fn end_pads(node: &NodeProto) -> std::result::Result<usize, String> {
    match auto_pad(node).as_str() {
        "" | "NOTSET" | "VALID" => {}
        other => return Err(format!("auto_pad {other} on a pool is not supported")),
    }
    let pads = ints(node, "pads").unwrap_or(vec![0; 4]);
    match pads.as_slice() {
        [0, 0, c, d] if c == d && *c >= 0 => Ok(*c as usize),
        _ => Err(format!(
            "padded pooling (pads {pads:?}) is not supported, except end padding as ceil mode"
        )),
    }
}
