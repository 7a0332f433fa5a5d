//! Probe indexing throughput against the plain batched forward, in the same run, and the cost of
//! one map's top-9 pictures cold (one batch: forward + single-unit projections + PNGs) and warm
//! (read from the disk cache).
//!
//! `cargo bench -p zfnet --bench index` (probe images: $ZFVIS_PROBE, else Imagenette val beside
//! the repo, else the demo photos; the first 160 of them)

/// The allocator the zfvis binary uses, so timings match it.
mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use zfnet::arch::Architecture;
use zfnet::manifest::{imagenette_classes, Manifest, Preprocess};
use zfnet::LoadedModel;

fn main() -> anyhow::Result<()> {
    common::keep_freed_memory();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let probe = std::env::var_os("ZFVIS_PROBE")
        .map(PathBuf::from)
        .or_else(|| {
            let p = root.join("../shared/datasets/imagenette/val");
            p.is_dir().then_some(p)
        })
        .unwrap_or_else(|| root.join("web/assets/demo"));
    let mut files = zfnet::probe::list_images(&probe)?;
    // every 24th file: a spread over classes
    files = files.into_iter().step_by(24).take(160).collect();
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 1024, 10, 1)?;
    let model = LoadedModel {
        net: zfnet::ZfNet::from_tensors(arch, tensors, &device)?,
        manifest: Manifest {
            format: 1,
            layers: None,
            channels: None,
            name: "bench".into(),
            architecture: arch,
            fc_width: 1024,
            classes: imagenette_classes(),
            preprocess: Preprocess::imagenet(),
            trained: false,
            provenance: "bench".into(),
            evaluation: None,
            conv1: None,
        },
        weights_sha256: "0".repeat(64),
    };
    let batch = 16;
    println!(
        "{} images from {}, batch {batch}, {} threads, default model shape (fc 1024)",
        files.len(),
        probe.display(),
        rayon::current_num_threads()
    );

    // plain: decode + preprocess + batched forward, nothing kept
    let t = Instant::now();
    for chunk in files.chunks(batch) {
        // decoded in parallel, as the indexer does
        let images: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| {
                let bytes = std::fs::read(p).expect("read");
                zfnet::preprocess::prepare(&bytes, &model.manifest.preprocess)
                    .expect("decode")
                    .data
            })
            .collect();
        let data: Vec<f32> = images.concat();
        let x = Tensor::from_vec(data, (chunk.len(), 3, 224, 224), &device)?;
        model.net.forward(&x)?;
    }
    let plain = files.len() as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (index, _) = zfnet::probe::build_index(&model, &probe, &files, 9, batch, |_, _| {})?;
    let indexed = files.len() as f64 / t.elapsed().as_secs_f64();
    println!("plain batched forward (decode + forward)   {plain:7.2} images/s");
    println!(
        "indexing (same + top-9 of all 1,376 maps)  {indexed:7.2} images/s   {:.2}x plain (goal >= 0.9x)",
        indexed / plain
    );

    let layer = 4;
    let map = 7;
    let hits = &index.layers[layer].hits[map];
    let cache = std::env::temp_dir().join(format!("zfvis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cache)?;
    let t = Instant::now();
    let pictures = zfnet::probe::hit_pictures(&model, &probe, &index, layer, map, hits)?;
    let mut paths = Vec::new();
    for (i, p) in pictures.iter().enumerate() {
        for (kind, img) in [("patch", &p.patch), ("recon", &p.reconstruction)] {
            let path = cache.join(format!("{i}-{kind}.png"));
            std::fs::write(&path, zfnet::render::png(img))?;
            paths.push(path);
        }
    }
    let cold = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bytes: usize = paths
        .iter()
        .map(|p| std::fs::read(p).map(|b| b.len()).unwrap_or(0))
        .sum();
    let warm = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "conv5 map top-9 pictures: cold {cold:7.1} ms (goal < 1500), warm {warm:5.2} ms for {} files, {bytes} bytes (goal < 50)",
        paths.len()
    );
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}
