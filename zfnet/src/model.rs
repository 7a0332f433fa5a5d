//! ZFNet in candle with a forward pass that keeps everything the visualisations need.
//!
//! ```text
//! input 3×224×224
//! conv1 7×7/2 p1 → ReLU → LRN → maxpool 3/2 ceil     96×110×110 → 96×55×55
//! conv2 5×5/2    → ReLU → LRN → maxpool 3/2 ceil    256×26×26  → 256×13×13
//! conv3 3×3 p1   → ReLU                             384×13×13
//! conv4 3×3 p1   → ReLU                             384×13×13
//! conv5 3×3 p1   → ReLU → maxpool 3/2 ceil          256×13×13  → 256×6×6
//! fc6 → ReLU (→ dropout in training), fc7 → ReLU (→ dropout), fc8 → logits
//! ```
//!
//! Weight names: `conv{1..5}.{weight,bias}` (PyTorch `[out, in, kh, kw]`), `fc{6,7,8}.{weight,bias}`
//! (`[out, in]`). Widths are read from the tensors, so narrower test fixtures run the same code.

use crate::arch::{Architecture, ConvSpec, Layout};
use crate::manifest::{manifest_path, Manifest};
use crate::ops::linear::linear;
use crate::ops::lrn::lrn;
use crate::ops::maxpool::{max_pool_with_switches, Pooled};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// Names of the conv layers, index 0 = conv1.
pub const CONV_NAMES: [&str; 5] = ["conv1", "conv2", "conv3", "conv4", "conv5"];
/// Names of the fully connected layers.
pub const FC_NAMES: [&str; 3] = ["fc6", "fc7", "fc8"];

/// One conv layer: weights plus geometry.
#[derive(Debug, Clone)]
pub struct Conv {
    pub weight: Tensor,
    pub bias: Tensor,
    pub spec: ConvSpec,
}

impl Conv {
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `relu(conv(x) + bias)`: the layer's feature maps (one fused, differentiable op).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::conv::conv2d_relu(
            x,
            &self.weight,
            &self.bias,
            self.spec.stride,
            self.spec.padding,
        )
    }
}

/// What one conv layer produced during a traced forward pass.
#[derive(Debug, Clone)]
pub struct ConvTrace {
    /// Rectified conv output `[n, c, h, w]`: the layer's feature maps, what zfvis visualises.
    pub activation: Tensor,
    /// After LRN (layers 1–2), before pooling.
    pub normalized: Option<Tensor>,
    /// Pooled output and switches (layers 1, 2, 5).
    pub pooled: Option<Pooled>,
}

impl ConvTrace {
    /// What the next layer receives.
    pub fn output(&self) -> &Tensor {
        match (&self.pooled, &self.normalized) {
            (Some(p), _) => &p.output,
            (None, Some(n)) => n,
            (None, None) => &self.activation,
        }
    }
}

/// Every intermediate of a forward pass.
#[derive(Debug, Clone)]
pub struct Trace {
    pub input: Tensor,
    pub convs: Vec<ConvTrace>,
    /// Rectified fc6 and fc7 outputs.
    pub fc6: Tensor,
    pub fc7: Tensor,
    /// fc8 output, before softmax.
    pub logits: Tensor,
}

impl Trace {
    /// Image `i` of a batch's trace, in storage of its own (keeping it keeps only its own
    /// memory). A batched forward gives each image what its own forward gives, up to the order of
    /// additions in the fc layers' matrix products.
    pub fn image(&self, i: usize) -> Result<Trace> {
        let row = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(0, i, 1)?.copy()?) };
        let convs = self
            .convs
            .iter()
            .map(|c| {
                let pooled = match &c.pooled {
                    Some(p) => Some(Pooled {
                        output: row(&p.output)?,
                        switches: row(&p.switches)?,
                        input_hw: p.input_hw,
                    }),
                    None => None,
                };
                Ok(ConvTrace {
                    activation: row(&c.activation)?,
                    normalized: c.normalized.as_ref().map(row).transpose()?,
                    pooled,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Trace {
            input: row(&self.input)?,
            convs,
            fc6: row(&self.fc6)?,
            fc7: row(&self.fc7)?,
            logits: row(&self.logits)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ZfNet {
    /// The family (for names); `layout` has the exact geometry.
    pub arch: Architecture,
    pub layout: Layout,
    pub convs: Vec<Conv>,
    pub fcs: Vec<Linear>,
    device: Device,
}

/// A model with its manifest and the hash of its weights.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub net: ZfNet,
    pub manifest: Manifest,
    pub weights_sha256: String,
}

impl LoadedModel {
    /// Loads `path` (safetensors) and its manifest `path.json` onto `device`, as `f32`.
    pub fn load(path: &Path, device: &Device) -> Result<LoadedModel> {
        let manifest = Manifest::load(&manifest_path(path))?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let weights_sha256 = hex::encode(Sha256::digest(&bytes));
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?;
        let net = ZfNet::from_tensors(manifest.layout(), tensors, device)?;
        manifest.check_channels(&net.channels(), path)?;
        if !net.has_head() {
            // a conv-stack-only snapshot (Fig. 4): features, no classifier to check
            return Ok(LoadedModel {
                net,
                manifest,
                weights_sha256,
            });
        }
        if net.num_classes() != manifest.classes.len() {
            return Err(Error::Weights(format!(
                "{}: fc8 has {} outputs but the manifest lists {} classes",
                path.display(),
                net.num_classes(),
                manifest.classes.len()
            )));
        }
        if net.fc_width() != manifest.fc_width {
            return Err(Error::Weights(format!(
                "{}: fc6 has width {} but the manifest says {}",
                path.display(),
                net.fc_width(),
                manifest.fc_width
            )));
        }
        Ok(LoadedModel {
            net,
            manifest,
            weights_sha256,
        })
    }
}

impl ZfNet {
    /// Builds the network from named tensors, checking every shape against the architecture.
    /// Without any fc tensor it is a conv stack only (a training snapshot kept for its features,
    /// the paper's Fig. 4): projections and top-k work, the classifier head does not.
    pub fn from_tensors(
        layout: impl Into<Layout>,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<ZfNet> {
        let layout = layout.into();
        let arch = layout.family;
        let conv_only = FC_NAMES
            .iter()
            .all(|n| !tensors.contains_key(&format!("{n}.weight")));
        let mut take = |name: &str| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| Error::Weights(format!("missing tensor {name}")))?;
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let mut convs = Vec::with_capacity(5);
        let mut in_ch = 3;
        for (name, spec) in CONV_NAMES.iter().zip(layout.convs) {
            let weight = take(&format!("{name}.weight"))?;
            let bias = take(&format!("{name}.bias"))?;
            let (out_ch, w_in, kh, kw) = weight.dims4()?;
            if w_in != in_ch || kh != spec.kernel || kw != spec.kernel {
                return Err(Error::Weights(format!(
                    "{name}.weight is {:?}; {} expects [*, {in_ch}, {k}, {k}]",
                    weight.dims(),
                    arch.name(),
                    k = spec.kernel
                )));
            }
            if bias.dims() != [out_ch] {
                return Err(Error::Weights(format!(
                    "{name}.bias is {:?}, expected [{out_ch}]",
                    bias.dims()
                )));
            }
            convs.push(Conv { weight, bias, spec });
            in_ch = out_ch;
        }
        let side = layout.last_side();
        let mut in_features = in_ch * side * side;
        let mut fcs = Vec::with_capacity(3);
        for name in FC_NAMES.iter().filter(|_| !conv_only) {
            let weight = take(&format!("{name}.weight"))?;
            let bias = take(&format!("{name}.bias"))?;
            let (out_f, w_in) = weight.dims2()?;
            if w_in != in_features || bias.dims() != [out_f] {
                return Err(Error::Weights(format!(
                    "{name} is {:?} + {:?}; expected [*, {in_features}] + [*]",
                    weight.dims(),
                    bias.dims()
                )));
            }
            fcs.push(Linear::new(weight, Some(bias)));
            in_features = out_f;
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Weights(format!("unexpected tensor {extra}")));
        }
        Ok(ZfNet {
            arch,
            layout,
            convs,
            fcs,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the classifier (fc6–fc8) is there: not in a conv-stack-only snapshot.
    pub fn has_head(&self) -> bool {
        self.fcs.len() == 3
    }

    /// Outputs of fc8 (0 without a head).
    pub fn num_classes(&self) -> usize {
        self.fcs.get(2).map_or(0, |f| f.weight().dims()[0])
    }

    /// Outputs of fc6 (0 without a head).
    pub fn fc_width(&self) -> usize {
        self.fcs.first().map_or(0, |f| f.weight().dims()[0])
    }

    pub fn channels(&self) -> [usize; 5] {
        std::array::from_fn(|i| self.convs[i].out_channels())
    }

    pub fn parameter_count(&self) -> u64 {
        crate::arch::parameter_count(
            &self.layout,
            self.channels(),
            self.fc_width(),
            self.num_classes(),
        )
    }

    /// Floating-point operations of conv layer `index` on one 224×224 image: 2 per
    /// multiply-add of the convolution (bias, ReLU, LRN and pooling are not counted).
    pub fn conv_flops(&self, index: usize) -> u64 {
        let spec = self.convs[index].spec;
        let c_in = if index == 0 {
            3
        } else {
            self.convs[index - 1].out_channels()
        };
        let side = self.layout.spatial_sizes()[index].0;
        let macs =
            self.convs[index].out_channels() * c_in * spec.kernel * spec.kernel * side * side;
        2 * macs as u64
    }

    /// Floating-point operations of fc6–fc8 on one image (2 per multiply-add).
    pub fn head_flops(&self) -> u64 {
        self.fcs
            .iter()
            .map(|f| {
                let d = f.weight().dims();
                2 * (d[0] * d[1]) as u64
            })
            .sum()
    }

    /// Runs conv layer `index` (0-based) on its input: conv → ReLU → LRN? → pool?.
    pub fn conv_layer(&self, index: usize, x: &Tensor) -> Result<ConvTrace> {
        let conv = &self.convs[index];
        let activation = conv.forward(x)?;
        let normalized = match conv.spec.lrn {
            Some(params) => Some(lrn(&activation, params)?),
            None => None,
        };
        let pooled = match conv.spec.pool {
            Some(pool) => Some(max_pool_with_switches(
                normalized.as_ref().unwrap_or(&activation),
                pool,
            )?),
            None => None,
        };
        Ok(ConvTrace {
            activation,
            normalized,
            pooled,
        })
    }

    /// The classifier head on a pooled conv5 output: `(fc6, fc7, logits)`.
    pub fn head(&self, pool5: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        if !self.has_head() {
            return Err(Error::Weights(
                "this is a conv-stack-only snapshot: it has no classifier (fc6–fc8)".into(),
            ));
        }
        let flat = pool5.flatten_from(1)?;
        let fc6 = linear(&flat, &self.fcs[0])?.relu()?;
        let fc7 = linear(&fc6, &self.fcs[1])?.relu()?;
        let logits = linear(&fc7, &self.fcs[2])?;
        Ok((fc6, fc7, logits))
    }

    /// A forward pass on `[n, 3, 224, 224]` normalised input that keeps every intermediate.
    pub fn forward_trace(&self, input: &Tensor) -> Result<Trace> {
        let mut convs: Vec<ConvTrace> = Vec::with_capacity(5);
        for i in 0..5 {
            let x = if i == 0 { input } else { convs[i - 1].output() };
            let t = self.conv_layer(i, x)?;
            convs.push(t);
        }
        let (fc6, fc7, logits) = self.head(convs[4].output())?;
        Ok(Trace {
            input: input.clone(),
            convs,
            fc6,
            fc7,
            logits,
        })
    }

    /// The conv layers up to and including `last_conv` (0-based) only, for a deconvnet
    /// projection from that layer: `convs` holds `last_conv + 1` layers, and the head is not run
    /// (`fc6`, `fc7` and `logits` are empty, `[n, 0]`). A top-9 render of a conv1 map costs a
    /// sixth of a full forward this way.
    pub fn forward_trace_through(&self, input: &Tensor, last_conv: usize) -> Result<Trace> {
        let mut convs: Vec<ConvTrace> = Vec::with_capacity(last_conv + 1);
        for i in 0..=last_conv.min(self.convs.len() - 1) {
            let x = if i == 0 { input } else { convs[i - 1].output() };
            let t = self.conv_layer(i, x)?;
            convs.push(t);
        }
        let n = input.dim(0)?;
        let empty = Tensor::zeros((n, 0), input.dtype(), input.device())?;
        Ok(Trace {
            input: input.clone(),
            convs,
            fc6: empty.clone(),
            fc7: empty.clone(),
            logits: empty,
        })
    }

    /// Logits only.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(self.forward_trace(input)?.logits)
    }
}

/// Softmax over the last dimension.
pub fn softmax(logits: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(logits)?)
}
