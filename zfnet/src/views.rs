//! What the server shows, computed here so that its handlers only parse and answer: predictions,
//! a layer's per-map maxima, the unit a view is about, activation heatmaps, projections, patches
//! and the conv1 filter grid. Layers are 0-based conv indices; units are `(y, x)`.

use crate::deconv::{backproject, strongest_units, Rule, Selection};
use crate::model::{softmax, Trace, CONV_NAMES};
use crate::preprocess::{prepare, Prepared};
use crate::receptive::{receptive_field, PixelBox};
use crate::{Error, LoadedModel, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;

/// `conv1`…`conv5` or `1`…`5` → 0-based index.
pub fn parse_layer(name: &str) -> Result<usize> {
    CONV_NAMES
        .iter()
        .position(|n| *n == name)
        .or_else(|| {
            name.parse::<usize>()
                .ok()
                .filter(|n| (1..=CONV_NAMES.len()).contains(n))
                .map(|n| n - 1)
        })
        .ok_or_else(|| Error::UnknownLayer(name.to_string()))
}

/// An upload made ready for the network, and its tensor on the model's device.
pub fn prepare_input(model: &LoadedModel, bytes: &[u8]) -> Result<(Prepared, Tensor)> {
    let prepared = prepare(bytes, &model.manifest.preprocess)?;
    let tensor = prepared.to_tensor(model.net.device())?;
    Ok((prepared, tensor))
}

/// What one image of a batched forward needs back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Its logits (`[1, classes]`): a prediction.
    Logits,
    /// Its whole trace: an upload whose maps will be explored.
    Trace,
}

/// One image's share of a batched forward.
pub enum Traced {
    Logits(Tensor),
    Trace(crate::Trace),
}

/// One traced forward for several images (`[1, 3, 224, 224]` inputs of one model) instead of one
/// each: what every image wants, in order. A lone input runs as it would alone.
pub fn forward_batch(model: &LoadedModel, inputs: &[(Tensor, Want)]) -> Result<Vec<Traced>> {
    let tensors: Vec<&Tensor> = inputs.iter().map(|(t, _)| t).collect();
    let x = Tensor::cat(&tensors, 0)?;
    let trace = model.net.forward_trace(&x)?;
    if inputs.len() == 1 && inputs[0].1 == Want::Trace {
        return Ok(vec![Traced::Trace(trace)]);
    }
    inputs
        .iter()
        .enumerate()
        .map(|(i, (_, want))| {
            Ok(match want {
                Want::Logits => Traced::Logits(trace.logits.narrow(0, i, 1)?.copy()?),
                Want::Trace => Traced::Trace(trace.image(i)?),
            })
        })
        .collect()
}

/// The network's input for a crop kept from an earlier [`prepare_input`] (the same tensor).
pub fn input_from_crop(model: &LoadedModel, crop: &image::RgbImage) -> Result<Tensor> {
    let data = crate::preprocess::normalise(crop, &model.manifest.preprocess);
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    Ok(Tensor::from_vec(data, (1, 3, h, w), model.net.device())?)
}

/// The `k` most probable classes of the first row of `logits`: `(class, probability)`, most
/// probable first (ties: lower class first).
pub fn top_classes(logits: &Tensor, k: usize) -> Result<Vec<(usize, f32)>> {
    let probs = softmax(logits)?
        .get(0)?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    Ok(order.into_iter().take(k).map(|c| (c, probs[c])).collect())
}

/// Maps and `(height, width)` of conv layer `layer` in `trace`, after checking `map` exists.
pub fn check_map(trace: &Trace, layer: usize, map: usize) -> Result<(usize, usize, usize)> {
    let (_, c, h, w) = trace.convs[layer].activation.dims4()?;
    if map >= c {
        return Err(Error::MapOutOfRange {
            layer: CONV_NAMES[layer],
            maps: c,
            map,
        });
    }
    Ok((c, h, w))
}

/// Every map's strongest activation in a layer, and the maps' `[height, width]`.
pub fn layer_maxima(trace: &Trace, layer: usize) -> Result<(Vec<f32>, [usize; 2])> {
    let act = &trace.convs[layer].activation;
    let (_, _, h, w) = act.dims4()?;
    let max = act
        .max_keepdim(3)?
        .max_keepdim(2)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    Ok((max, [h, w]))
}

/// The unit a view is about: the given `(y, x)` or the map's strongest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitChoice {
    /// The map's strongest activation and its `(y, x)`.
    pub max: f32,
    pub strongest: (usize, usize),
    /// The chosen unit `(y, x)` and its value.
    pub unit: (usize, usize),
    pub value: f32,
}

/// Chooses `unit` (`(y, x)`, checked against the map's size) or the strongest unit of the map.
pub fn choose_unit(
    trace: &Trace,
    layer: usize,
    map: usize,
    unit: Option<(usize, usize)>,
) -> Result<UnitChoice> {
    let (_, h, w) = check_map(trace, layer, map)?;
    let act = &trace.convs[layer].activation;
    let (sy, sx, max) = strongest_units(act, map)?[0];
    let unit = match unit {
        None => (sy, sx),
        Some((y, x)) if y < h && x < w => (y, x),
        Some(_) => {
            return Err(Error::PositionOutOfRange {
                layer: CONV_NAMES[layer],
                height: h,
                width: w,
            })
        }
    };
    let value = act
        .get(0)?
        .get(map)?
        .get(unit.0)?
        .get(unit.1)?
        .to_device(&Device::Cpu)?
        .to_scalar::<f32>()?;
    Ok(UnitChoice {
        max,
        strongest: (sy, sx),
        unit,
        value,
    })
}

/// Input pixels under a unit's receptive field.
pub fn unit_box(model: &LoadedModel, layer: usize, unit: (usize, usize)) -> PixelBox {
    receptive_field(&model.net.layout, layer).unit_box(unit.0, unit.1)
}

/// The activation map as a viridis heatmap, one pixel per unit: 0 → the map's own maximum, or with
/// `shared` the layer's strongest activation (so maps compare by brightness).
pub fn activation_image(trace: &Trace, layer: usize, map: usize, shared: bool) -> Result<RgbImage> {
    let (_, h, w) = check_map(trace, layer, map)?;
    let plane = trace.convs[layer]
        .activation
        .get(0)?
        .get(map)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    // the layer's strongest activation: one reduction, no copy of the layer to the host
    let top = if shared {
        let act = &trace.convs[layer].activation;
        Some(
            act.max_all()?
                .to_device(&Device::Cpu)?
                .to_scalar::<f32>()?
                .max(0.0),
        )
    } else {
        None
    };
    Ok(crate::render::heatmap_image(&plane, h, w, top))
}

/// One unit (`Some`) or the whole map (`None`) taken back to pixels by `rule` (the deconvnet, the
/// gradient or guided backprop), cropped to the unit's receptive field when `crop` is set. A whole
/// map's picture is stretched so its strongest 0.5% saturate
/// ([`crate::render::projection_image_clipped`]).
pub fn projection_image(
    model: &LoadedModel,
    trace: &Trace,
    layer: usize,
    map: usize,
    unit: Option<(usize, usize)>,
    crop: Option<(usize, usize)>,
    rule: Rule,
) -> Result<RgbImage> {
    let selection = match unit {
        Some(u) => Selection::Units(vec![u]),
        None => Selection::WholeMap,
    };
    let projection = backproject(&model.net, trace, layer, map, &selection, rule)?;
    let side = projection.dim(3)?;
    let data = rgb_host(model, &projection)?;
    let region = match crop {
        Some(u) => unit_box(model, layer, u),
        None => crate::render::whole(side),
    };
    Ok(match unit {
        Some(_) => crate::render::projection_image(&data, side, region),
        // a whole map spreads thin: stretch so its strongest 0.5% saturate
        None => crate::render::projection_image_clipped(
            &data,
            side,
            region,
            crate::render::MAP_PROJECTION_QUANTILE,
        ),
    })
}

/// `[…, 3, h, w]` values in the model's input channel order (projections, conv1 filters) on the
/// host, in RGB order for display.
pub(crate) fn rgb_host(model: &LoadedModel, t: &Tensor) -> Result<Vec<f32>> {
    let (h, w) = (t.dim(t.rank() - 2)?, t.dim(t.rank() - 1)?);
    let mut data = t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    model.manifest.preprocess.to_rgb_order(&mut data, h * w);
    Ok(data)
}

/// The conv1 filters as an RGB grid (12 per row, each 7×7 filter drawn 8× and contrast-stretched
/// on its own, mid grey = 0): the paper's Fig. 6(c).
pub fn conv1_filter_grid(model: &LoadedModel) -> Result<RgbImage> {
    let w = &model.net.convs[0].weight;
    let (n, c, k, _) = w.dims4()?;
    if c != 3 {
        return Err(Error::Shape(format!(
            "conv1 takes {c} input channels, not RGB"
        )));
    }
    let data = rgb_host(model, w)?;
    Ok(crate::render::filter_grid(&data, n, k, 12, 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_by_name_or_number() {
        assert_eq!(parse_layer("conv1").ok(), Some(0));
        assert_eq!(parse_layer("5").ok(), Some(4));
        for bad in ["0", "6", "conv6", "fc6", "", "-1"] {
            assert!(
                matches!(parse_layer(bad), Err(Error::UnknownLayer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn top_classes_sort_by_probability() -> anyhow::Result<()> {
        let logits = Tensor::new(&[[0.0f32, 2.0, 1.0, 2.0]], &Device::Cpu)?;
        let top = top_classes(&logits, 3)?;
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let sum: f32 = top_classes(&logits, 4)?.iter().map(|t| t.1).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        Ok(())
    }
}
