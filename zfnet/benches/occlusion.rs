//! Occlusion sweep with the default parameters (48-px square, stride 16: 196 positions) on the
//! default model's shape: naive (one forward per position), batched, incremental, in one run.
//!
//! `cargo bench -p zfnet --bench occlusion` (`ZFVIS_BENCH_WEIGHTS=model.safetensors` for a real
//! model; `ZFVIS_BENCH_ONLY=incremental` times that method alone, and `ZFVIS_BENCH_KEEP=1` keeps
//! freed pages as the server does, both as `tools/bench_ort.py` runs it)

/// The allocator the zfvis binary uses, so timings match it.
mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use std::time::Instant;
use zfnet::arch::Architecture;
use zfnet::manifest::Preprocess;
use zfnet::occlusion::{sweep, Method, OcclusionParams};

fn main() -> anyhow::Result<()> {
    if std::env::var_os("ZFVIS_BENCH_KEEP").is_some() {
        common::keep_freed_memory(); // as `zfvis serve` does
    }
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    let net = match std::env::var_os("ZFVIS_BENCH_WEIGHTS") {
        Some(path) => zfnet::LoadedModel::load(std::path::Path::new(&path), &device)?.net,
        None => {
            let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 1024, 10, 1)?;
            zfnet::ZfNet::from_tensors(arch, tensors, &device)?
        }
    };
    let only = std::env::var("ZFVIS_BENCH_ONLY").ok();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("web/assets/demo/dog.jpg"))?;
    let p = Preprocess::imagenet();
    let input: Tensor = zfnet::preprocess::prepare(&bytes, &p)?.to_tensor(&device)?;
    let params = OcclusionParams::default();
    println!(
        "occlusion sweep, size {} stride {}: {} positions, {} threads, ZFNet fc 1024",
        params.size,
        params.stride,
        params.grid() * params.grid(),
        rayon::current_num_threads()
    );
    let mut times = Vec::new();
    for (name, method) in [
        ("naive (one forward each)", Method::Naive),
        ("batched (16 per forward)", Method::Batched),
        ("incremental", Method::Incremental),
    ] {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let t = Instant::now();
        sweep(&net, &p, &input, &params, method, &|_, _| true)?;
        let s = t.elapsed().as_secs_f64();
        times.push(s);
        println!("{name:28} {s:7.2} s");
    }
    if let [naive, batched, incremental] = times[..] {
        println!(
            "batched {:.2}x naive; incremental {:.2}x naive, {:.2}x batched",
            naive / batched,
            naive / incremental,
            batched / incremental
        );
    }
    Ok(())
}
