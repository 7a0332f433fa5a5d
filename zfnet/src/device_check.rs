//! Does a device compute what the CPU computes, and how fast? The library side of
//! `zfvis check-device` (what `scripts/cuda-check.sh` runs on a GPU machine).
//!
//! **Parity**: the same model is loaded on the CPU (hand-written kernels) and on the device
//! (candle's kernels and [`crate::ops::portable`]); the forward pass (logits and every conv layer's
//! activations), deconvnet projections of every layer, and an occlusion sweep are computed on
//! both and compared. The measure is the largest absolute difference divided by the output's
//! largest magnitude (summation orders differ, and whole-map projections cancel); the bar is
//! `1e-4`. On the CPU, `force_portable` makes the "device" side run the portable ops, so the
//! check itself is tested without a GPU.
//!
//! **Throughput**: forward at batch 1 and a larger batch, one projection, a 196-position sweep,
//! timed on the device after a warm-up, each the median of a few runs.

use crate::deconv::{project, Selection};
use crate::occlusion::{sweep, Fill, Method, OcclusionParams};
use crate::{LoadedModel, Result};
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// The bar every parity row must pass.
pub const PARITY_BAR: f32 = 1e-4;

/// One compared output.
#[derive(Debug, Clone)]
pub struct ParityRow {
    pub what: String,
    /// Largest |cpu − device| over the output.
    pub max_abs: f32,
    /// Largest |cpu| over the output.
    pub scale: f32,
}

impl ParityRow {
    pub fn relative(&self) -> f32 {
        self.max_abs / self.scale.max(1e-12)
    }
    pub fn passes(&self) -> bool {
        self.relative() <= PARITY_BAR && self.max_abs.is_finite()
    }
}

/// One timed operation.
#[derive(Debug, Clone)]
pub struct Timing {
    pub what: String,
    /// Median seconds per run.
    pub seconds: f64,
    /// Images (or positions) per run, for a rate.
    pub items: usize,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?)
}

fn row(what: String, cpu: &[f32], dev: &[f32]) -> ParityRow {
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs = if cpu.len() == dev.len() {
        cpu.iter()
            .zip(dev)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    } else {
        f32::INFINITY
    };
    ParityRow {
        what,
        max_abs,
        scale,
    }
}

/// The 196-position sweep of the figures (48 px squares, stride 16).
pub fn sweep_params() -> OcclusionParams {
    OcclusionParams {
        size: 48,
        stride: 16,
        fill: Fill::Mean,
        class: None,
    }
}

/// The [`sweep_params`] sweep of one image `[1, 3, 224, 224]`, run to the end.
fn sweep_once(
    model: &LoadedModel,
    one: &Tensor,
    method: Method,
) -> Result<crate::occlusion::OcclusionResult> {
    sweep(
        &model.net,
        &model.manifest.preprocess,
        one,
        &sweep_params(),
        method,
        &|_, _| true,
    )
}

/// Everything compared, in order: logits, conv1–5 activations, a strongest-unit and a whole-map
/// projection of one map per layer, and the sweep's activation and probability maps.
fn outputs(model: &LoadedModel, batch: &Tensor, method: Method) -> Result<Vec<(String, Vec<f32>)>> {
    let net = &model.net;
    let trace = net.forward_trace(batch)?;
    let mut out = vec![("logits".to_string(), host(&trace.logits)?)];
    for layer in 0..net.convs.len() {
        out.push((
            format!("conv{} activation", layer + 1),
            host(&trace.convs[layer].activation)?,
        ));
    }
    for layer in 0..net.convs.len() {
        let map = (7 * layer + 3) % net.convs[layer].out_channels();
        for (name, sel) in [
            ("strongest unit", Selection::StrongestUnit),
            ("whole map", Selection::WholeMap),
        ] {
            out.push((
                format!("conv{} map {map} projection, {name}", layer + 1),
                host(&project(net, &trace, layer, map, &sel)?)?,
            ));
        }
    }
    let s = sweep_once(model, &batch.narrow(0, 0, 1)?, method)?;
    out.push(("occlusion: strongest conv5 activation".into(), s.activation));
    out.push(("occlusion: probability of the class".into(), s.probability));
    Ok(out)
}

/// Compares the CPU (`cpu`, hand-written kernels, incremental sweep) with `device` (batched
/// sweep) on `inputs` (`[n, 3, 224, 224]`, normalised, on the CPU). With `device` the CPU, the
/// device side runs the portable ops (the GPU's code path).
pub fn parity(cpu: &LoadedModel, device: &LoadedModel, inputs: &Tensor) -> Result<Vec<ParityRow>> {
    crate::ops::force_portable(false);
    let reference = outputs(cpu, inputs, Method::Incremental)?;
    let on_cpu = device.net.device().is_cpu();
    crate::ops::force_portable(on_cpu);
    let measured = outputs(
        device,
        &inputs.to_device(device.net.device())?,
        Method::Batched,
    );
    crate::ops::force_portable(false);
    Ok(reference
        .into_iter()
        .zip(measured?)
        .map(|((what, a), (_, b))| row(what, &a, &b))
        .collect())
}

/// Median seconds of `runs` calls of `f` after one warm-up call; `sync` waits for the device.
fn median_secs(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Waits for queued device work (a host read of a scalar).
fn sync(t: &Tensor) -> Result<()> {
    t.flatten_all()?.narrow(0, 0, 1)?.to_device(&Device::Cpu)?;
    Ok(())
}

/// Times forward passes at batch 1 and `batch`, one whole-map conv5 projection and the
/// 196-position sweep on `model`'s device; `input` is one image `[1, 3, 224, 224]`.
pub fn throughput(
    model: &LoadedModel,
    input: &Tensor,
    batch: usize,
    runs: usize,
) -> Result<Vec<Timing>> {
    let net = &model.net;
    let dev = net.device();
    let one = input.to_device(dev)?;
    let many = one.repeat((batch, 1, 1, 1))?;
    let mut out = Vec::new();
    for (what, x, items) in [
        ("forward, batch 1", &one, 1),
        ("forward, batch N", &many, batch),
    ] {
        let seconds = median_secs(runs, || sync(&net.forward(x)?))?;
        out.push(Timing {
            what: what.replace('N', &batch.to_string()),
            seconds,
            items,
        });
    }
    let trace = net.forward_trace(&one)?;
    let seconds = median_secs(runs, || {
        sync(&project(net, &trace, 4, 0, &Selection::WholeMap)?)
    })?;
    out.push(Timing {
        what: "projection conv5 → pixels".into(),
        seconds,
        items: 1,
    });
    let params = sweep_params();
    let method = Method::for_device(dev);
    let seconds = median_secs(runs.min(3), || sweep_once(model, &one, method).map(|_| ()))?;
    out.push(Timing {
        what: format!(
            "occlusion sweep, {} positions",
            params.grid() * params.grid()
        ),
        seconds,
        items: params.grid() * params.grid(),
    });
    Ok(out)
}
