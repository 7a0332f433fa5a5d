//! Deconvnet projections (Zeiler & Fergus 2013, §2.1 and Fig. 1): map chosen activations of a
//! conv layer back to pixel space.
//!
//! Starting from layer `l`'s rectified feature maps with everything zeroed except the chosen
//! activations, each layer from `l` down to 1:
//!
//! 1. **filter**: convolve with the transposed (flipped) filters of that layer, i.e. a transposed
//!    convolution with the same weights, stride and padding (no bias), output cropped or padded to
//!    exactly the layer's input size;
//! 2. **unpool**: if the layer below ends in a max pool, put each value back at the pool's recorded
//!    switch ([`max_unpool`](crate::ops::maxpool::max_unpool): values *summed* where overlapping
//!    windows share a switch, making this step the exact adjoint of pooling);
//! 3. **rectify**: ReLU.
//!
//! LRN is skipped on the way down: the paper does not invert it, and it is nearly the identity
//! for the small activations it sees after training (`k = 2` dominates the denominator).
//!
//! Equivalently: the deconvnet is backpropagation from the selected activations with a ReLU applied
//! to the backward signal instead of the forward mask; the tests check that formulation.
//!
//! ## Three backward rules ([`Rule`])
//!
//! The same walk down the network gives the two later attribution methods; they differ only in
//! what happens at each ReLU (with `s` the signal coming down and `a` the layer's forward output):
//!
//! | rule | at a ReLU | LRN | what it shows |
//! |---|---|---|---|
//! | [`Rule::Deconvnet`] (Zeiler & Fergus 2013) | `max(s, 0)` | skipped | the pattern that excites the unit, independent of where this image was negative |
//! | [`Rule::Gradient`] (Simonyan et al. 2013, saliency) | `s · [a > 0]` | its gradient | the exact ∂unit/∂pixel: how a tiny change of each pixel moves the unit |
//! | [`Rule::Guided`] (Springenberg et al. 2014) | `max(s, 0) · [a > 0]` | its gradient | only positive influence through units that were on: sharper than either |
//!
//! Pooling is routed by the recorded switches under every rule (the exact gradient of max
//! pooling), and every rule starts from the chosen activations' values, so the three pictures
//! of a unit are scaled alike (each picture is contrast-normalised when rendered anyway).

use crate::model::{Trace, ZfNet};
use crate::ops::lrn::lrn_backward;
use crate::ops::maxpool::max_unpool;
use crate::{Error, Result};
use candle_core::{Device, Tensor};

/// Which activations of the chosen feature map start the projection.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Only the strongest activation of the map in each image (the paper's figures).
    StrongestUnit,
    /// One given unit `(y, x)` in each image of the batch (one entry per image).
    Units(Vec<(usize, usize)>),
    /// The whole feature map.
    WholeMap,
}

/// Position and value of the strongest activation of map `map` in each image of `activation`
/// (`[n, c, h, w]`): `(y, x, value)`; the first maximum in row-major order wins.
pub fn strongest_units(activation: &Tensor, map: usize) -> Result<Vec<(usize, usize, f32)>> {
    let (n, c, h, w) = activation.dims4()?;
    if map >= c {
        return Err(Error::Shape(format!(
            "feature map {map} out of range (layer has {c})"
        )));
    }
    let maps = activation
        .narrow(1, map, 1)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok((0..n)
        .map(|i| {
            let plane = &maps[i * h * w..(i + 1) * h * w];
            let (best, v) = crate::ops::argmax(plane);
            (best / w, best % w, v)
        })
        .collect())
}

/// How the backward walk treats each ReLU (and LRN); see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// The paper's deconvnet: rectify the signal, skip LRN.
    #[default]
    Deconvnet,
    /// Plain gradient (saliency): mask by the forward ReLU, through LRN's gradient.
    Gradient,
    /// Guided backpropagation: both the forward mask and the rectification.
    Guided,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Deconvnet, Rule::Gradient, Rule::Guided];

    /// The signal below the ReLU whose forward output was `activation`.
    fn through_relu(self, signal: &Tensor, activation: &Tensor) -> Result<Tensor> {
        let on = || -> Result<Tensor> { Ok(activation.gt(0f32)?.to_dtype(signal.dtype())?) };
        Ok(match self {
            Rule::Deconvnet => signal.relu()?,
            Rule::Gradient => (signal * on()?)?,
            Rule::Guided => (signal.relu()? * on()?)?,
        })
    }
}

/// Projects map `map` of conv layer `layer` (0-based) of every image in `trace` to pixel space:
/// `[n, 3, 224, 224]`, by the deconvnet.
pub fn project(
    net: &ZfNet,
    trace: &Trace,
    layer: usize,
    map: usize,
    selection: &Selection,
) -> Result<Tensor> {
    backproject(net, trace, layer, map, selection, Rule::Deconvnet)
}

/// Like [`project`] with the backward `rule` of choice: the deconvnet, the gradient or guided
/// backpropagation of the selected activations with respect to the input pixels.
pub fn backproject(
    net: &ZfNet,
    trace: &Trace,
    layer: usize,
    map: usize,
    selection: &Selection,
    rule: Rule,
) -> Result<Tensor> {
    if layer >= net.convs.len() {
        return Err(Error::Shape(format!(
            "conv layer {} out of range 1..=5",
            layer + 1
        )));
    }
    let activation = &trace.convs[layer].activation;
    let (n, c, h, w) = activation.dims4()?;
    if map >= c {
        return Err(Error::Shape(format!(
            "feature map {map} out of range (conv{} has {c})",
            layer + 1
        )));
    }
    let values = activation
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let plane = h * w;
    let mut start = vec![0f32; n * c * plane];
    let units: Option<Vec<(usize, usize)>> = match selection {
        Selection::WholeMap => None,
        Selection::StrongestUnit => Some(
            strongest_units(activation, map)?
                .into_iter()
                .map(|(y, x, _)| (y, x))
                .collect(),
        ),
        Selection::Units(u) => {
            if u.len() != n || u.iter().any(|&(y, x)| y >= h || x >= w) {
                return Err(Error::Shape(format!(
                    "units {u:?} do not fit {n} images of {h}×{w}"
                )));
            }
            Some(u.clone())
        }
    };
    for i in 0..n {
        let offset = (i * c + map) * plane;
        match &units {
            None => start[offset..offset + plane].copy_from_slice(&values[offset..offset + plane]),
            Some(u) => {
                let (y, x) = u[i];
                start[offset + y * w + x] = values[offset + y * w + x];
            }
        }
    }
    let mut signal = Tensor::from_vec(start, (n, c, h, w), net.device())?;
    for i in (0..=layer).rev() {
        let conv = &net.convs[i];
        let input_side = if i == 0 {
            trace.input.dim(3)?
        } else {
            trace.convs[i - 1].output().dim(3)?
        };
        signal = conv_transpose(
            &rule.through_relu(&signal, &trace.convs[i].activation)?,
            &conv.weight,
            conv.spec.stride,
            conv.spec.padding,
            input_side,
        )?;
        if i > 0 {
            let below = &trace.convs[i - 1];
            if let Some(pooled) = &below.pooled {
                signal = max_unpool(&signal, &pooled.switches, pooled.input_hw)?;
            }
            if let (Some(_), Some(params), Rule::Gradient | Rule::Guided) =
                (&below.normalized, net.convs[i - 1].spec.lrn, rule)
            {
                signal = lrn_backward(&below.activation, &signal, params)?;
            }
        }
    }
    Ok(signal)
}

/// The transposed convolution of `x` (`[n, c_out, h, w]`) with conv weights `weight`
/// (`[c_out, c_in, k, k]`), the adjoint of `conv2d(·, weight, stride, padding)`, for an input side
/// of `out_side`: `[n, c_in, out_side, out_side]`.
///
/// Per image a GEMM (`Wᵀ · x` gives every kernel tap's contribution, `[c_in·k·k, h·w]`) and a
/// col2im scatter-add over the box of the nonzero values ([`crate::ops::conv::conv_transpose_host`]),
/// several times faster than candle's direct-loop conv_transpose2d on the CPU; other devices use
/// candle's ([`crate::ops::portable::conv_transpose`]).
pub fn conv_transpose(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
    out_side: usize,
) -> Result<Tensor> {
    let (n, c_out, h, w) = x.dims4()?;
    let (wc_out, c_in, k, k2) = weight.dims4()?;
    let g = crate::ops::conv::ConvGeometry {
        c_in,
        c_out,
        k,
        stride,
        padding,
        h: out_side,
        w: out_side,
    };
    if wc_out != c_out || k != k2 || out_side + 2 * padding < k || g.out_hw() != (h, w) {
        return Err(Error::Shape(format!(
            "conv_transpose: x {:?} vs weight {:?} for a {out_side}² input",
            x.dims(),
            weight.dims()
        )));
    }
    if crate::ops::use_portable(x) {
        return crate::ops::portable::conv_transpose(x, weight, stride, padding, out_side);
    }
    // both read in place where they are contiguous CPU tensors (copying conv1–5's 15 MB of
    // weights cost a projection several ms)
    let out = crate::ops::with_host_slice(x, |signal| {
        crate::ops::with_host_slice(weight, |w| {
            crate::ops::conv::conv_transpose_host(signal, n, w, &g)
        })
    })??;
    Ok(Tensor::from_vec(
        out,
        (n, c_in, out_side, out_side),
        x.device(),
    )?)
}
