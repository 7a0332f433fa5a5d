//! Occlusion sweep with the default parameters (48-px square, stride 16: 196 positions) on the
//! default model's shape: naive (one forward per position), batched, incremental, in one run.
//!
//! `cargo bench -p zfnet --bench occlusion`

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
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 1024, 10, 1)?;
    let net = zfnet::ZfNet::from_tensors(arch, tensors, &device)?;
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
        let t = Instant::now();
        sweep(&net, &p, &input, &params, method, &|_, _| true)?;
        let s = t.elapsed().as_secs_f64();
        times.push(s);
        println!("{name:28} {s:7.2} s");
    }
    println!(
        "batched {:.2}x naive; incremental {:.2}x naive, {:.2}x batched (goal >= 5x batched)",
        times[0] / times[1],
        times[0] / times[2],
        times[1] / times[2]
    );
    Ok(())
}
