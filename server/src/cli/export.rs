//! `zfvis export`: copy a model (weights + manifest), optionally as fp16.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Copy a model (weights + manifest) to another place, optionally as fp16 (half the size).
#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Store the tensors as fp16; loading converts back to f32.
    #[arg(long)]
    f16: bool,
    /// Keep the conv layers only (a quarter of ZFNet's size with fc width 1024): enough for
    /// top-9 and projections, as the training snapshots of the evolution view (Fig. 4) need.
    #[arg(long)]
    conv_only: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let (weights, out) = (&args.weights, &args.out);
    let model = zfnet::LoadedModel::load(weights, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", weights.display()))?;
    let dtype = if args.f16 {
        candle_core::DType::F16
    } else {
        candle_core::DType::F32
    };
    let mut tensors = candle_core::safetensors::load(weights, &candle_core::Device::Cpu)?;
    let mut manifest = model.manifest;
    if args.conv_only {
        tensors.retain(|name, _| name.starts_with("conv"));
        manifest
            .provenance
            .push_str(" Conv layers only (`zfvis export --conv-only`): no classifier.");
    }
    if args.f16 {
        manifest
            .provenance
            .push_str(" Stored as fp16 by `zfvis export --f16`.");
        // accuracy must be measured again on the fp16 weights
        manifest.evaluation = None;
    }
    zfnet::manifest::save_model(out, &tensors, dtype, &manifest)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} ({:?})", out.display(), dtype);
    Ok(())
}
