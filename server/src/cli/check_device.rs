//! `zfvis check-device`: the same model on the CPU and on a device (CUDA), compared output by
//! output, then timed on the device. `scripts/cuda-check.sh` runs it on a GPU machine; with
//! `--device cpu` it checks the ops a GPU runs (candle's and `ops::portable`) on the CPU.

use super::DEFAULT_WEIGHTS;
use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use clap::Args;
use std::path::PathBuf;
use zfnet::device_check::{parity, throughput, PARITY_BAR};

/// Parity (device against CPU, within 1e-4 of each output's scale) and throughput of a device.
#[derive(Args)]
pub struct CheckDeviceArgs {
    /// `cuda`, `cuda:N`, or `cpu` (the portable ops against the CPU kernels).
    #[arg(long, default_value = "cuda")]
    device: String,
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: PathBuf,
    /// Images compared (the committed demo photos by default).
    #[arg(long, num_args = 1.., default_values = ["web/assets/demo/dog.jpg", "web/assets/demo/eagle.jpg"])]
    images: Vec<PathBuf>,
    /// The larger batch timed.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed runs per operation (the median is printed).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the parity part.
    #[arg(long)]
    no_bench: bool,
}

pub fn run(args: CheckDeviceArgs) -> anyhow::Result<()> {
    if !(1..=512).contains(&args.batch) {
        bail!("--batch must be between 1 and 512, not {}", args.batch);
    }
    if args.images.is_empty() {
        bail!("--images needs at least one image");
    }
    let device = zfnet::device::parse_device(&args.device)?;
    let load = |d: &Device| {
        zfnet::LoadedModel::load(&args.weights, d)
            .with_context(|| format!("loading {}", args.weights.display()))
    };
    let cpu = load(&Device::Cpu)?;
    let on_device = load(&device)?;
    let mut inputs = Vec::new();
    for path in &args.images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let prepared = zfnet::preprocess::prepare(&bytes, &cpu.manifest.preprocess)
            .with_context(|| format!("decoding {}", path.display()))?;
        inputs.push(prepared.to_tensor(&Device::Cpu)?);
    }
    let batch = Tensor::cat(&inputs, 0)?;
    let side = if device.is_cpu() {
        "CPU, portable ops (the GPU's code path)".to_string()
    } else {
        zfnet::device::describe(&device)
    };
    println!(
        "parity: {} on the CPU kernels vs {side}, {} images; bar {PARITY_BAR:e} of each output's largest magnitude",
        args.weights.display(),
        inputs.len()
    );
    let started = std::time::Instant::now();
    let rows = parity(&cpu, &on_device, &batch)?;
    let mut failed = 0;
    for r in &rows {
        let verdict = if r.passes() { "ok" } else { "FAIL" };
        failed += usize::from(!r.passes());
        println!(
            "  {verdict:<4} {:<52} max |Δ| {:>10.3e}  of {:>10.3e}  ({:.1e})",
            r.what,
            r.max_abs,
            r.scale,
            r.relative()
        );
    }
    println!(
        "parity: {} of {} outputs within the bar ({:.1} s)",
        rows.len() - failed,
        rows.len(),
        started.elapsed().as_secs_f32()
    );
    if !args.no_bench {
        let timed = zfnet::device::describe(&device);
        println!("throughput on {timed} (median of {} runs):", args.runs);
        for t in throughput(&on_device, &inputs[0], args.batch, args.runs)? {
            println!(
                "  {:<36} {:>10.2} ms  {:>10.1} /s",
                t.what,
                t.seconds * 1e3,
                t.items as f64 / t.seconds
            );
        }
    }
    if failed > 0 {
        bail!("{failed} outputs differ from the CPU by more than {PARITY_BAR:e}");
    }
    Ok(())
}
