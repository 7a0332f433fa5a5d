//! The forward pass layer by layer, against this machine's measured FMA peak.
//!
//! Prints, for batch 1 and batch 32, each layer's median time, its GFLOP/s (2 flops per
//! multiply-add of the convolution; ReLU, LRN and pooling count as none) and that rate as a share
//! of the peak measured in the same run by an AVX2 FMA loop on every rayon thread. The side-by-side
//! with ONNX Runtime is `tools/bench_ort.py`, which runs this binary's numbers against ORT's.
//!
//! `cargo bench -p zfnet --bench forward [-- BATCH...]` (the default model's fc 1024 and 10
//! classes; `ZFVIS_BENCH_FC=4096 ZFVIS_BENCH_CLASSES=1000` for the paper's head;
//! `ZFVIS_BENCH_STDIN=1` answers each batch size read from stdin with the milliseconds of one
//! whole forward, so that `tools/bench_ort.py` can alternate it with ONNX Runtime run by run)

mod common;
use common::median_ms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use zfnet::arch::Architecture;

/// GFLOP/s of a dependency-free FMA loop on every rayon thread (AVX2 + FMA; 0 where absent).
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            const ITERS: usize = 20_000_000;
            let threads = rayon::current_num_threads();
            let run = || {
                let t = std::time::Instant::now();
                let sink: f32 = (0..threads)
                    .into_par_iter()
                    // SAFETY: AVX2 and FMA were detected above.
                    .map(|i| unsafe { fma_loop(ITERS, i as f32) })
                    .sum();
                std::hint::black_box(sink);
                t.elapsed().as_secs_f64()
            };
            run();
            let secs = (0..3).map(|_| run()).fold(f64::INFINITY, f64::min);
            // 12 accumulators × 8 lanes × 2 flops per iteration
            return (threads * ITERS * 12 * 8 * 2) as f64 / secs / 1e9;
        }
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

/// A kernel's name, the conv layers it runs and its on/off switch.
type Kernel = (&'static str, std::ops::Range<usize>, fn(bool));

/// One whole forward per batch size read from stdin (a line each), its milliseconds printed.
fn answer_stdin(net: &zfnet::ZfNet) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut inputs = std::collections::HashMap::new();
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let n: usize = line?.trim().parse()?;
        let x = match inputs.entry(n) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let x = Tensor::randn(0f32, 1.0, (n, 3, 224, 224), &Device::Cpu)?;
                net.forward_trace(&x)?; // warm-up: caches, rearranged weights
                e.insert(x)
            }
        };
        let t = std::time::Instant::now();
        net.forward_trace(x)?;
        writeln!(out, "{}", t.elapsed().as_secs_f64() * 1e3)?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("ZFVIS_BENCH_KEEP").is_some() {
        common::keep_freed_memory();
    }
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    // the default model's shape (fc 1024, 10 classes) unless ZFVIS_BENCH_FC / _CLASSES say
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (fc, classes) = (var("ZFVIS_BENCH_FC", 1024), var("ZFVIS_BENCH_CLASSES", 10));
    // ZFVIS_BENCH_WEIGHTS: a real model (tools/bench_ort.py times ORT on the same one)
    let net = match std::env::var_os("ZFVIS_BENCH_WEIGHTS") {
        Some(path) => zfnet::LoadedModel::load(std::path::Path::new(&path), &device)?.net,
        None => {
            let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), fc, classes, 1)?;
            zfnet::ZfNet::from_tensors(arch, tensors, &device)?
        }
    };
    if std::env::var_os("ZFVIS_BENCH_STDIN").is_some() {
        return answer_stdin(&net);
    }
    let (fc, classes) = (net.fc_width(), net.num_classes());
    let peak = fma_peak();
    let batches: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batches = if batches.is_empty() {
        vec![1, 32]
    } else {
        batches
    };
    println!(
        "ZFNet (paper conv widths, fc {fc}, {classes} classes), {} threads, FMA peak {peak:.1} GFLOP/s",
        rayon::current_num_threads()
    );
    for n in batches {
        let x = Tensor::randn(0f32, 1.0, (n, 3, 224, 224), &device)?;
        let runs = if n == 1 { 21 } else { 5 };
        let trace = net.forward_trace(&x)?;
        println!("\nbatch {n}");
        println!("layer   ms/image   GFLOP/image   GFLOP/s   share of peak");
        let mut total_ms = 0.0;
        let mut total_flop = 0.0;
        for i in 0..5 {
            let input = if i == 0 {
                &x
            } else {
                trace.convs[i - 1].output()
            };
            let ms = median_ms(runs, || {
                net.conv_layer(i, input).expect("conv layer");
            }) / n as f64;
            let conv_ms = median_ms(runs, || {
                net.convs[i].forward(input).expect("conv");
            }) / n as f64;
            let act = net.convs[i].forward(input)?;
            let lrn_ms = if let Some(params) = net.convs[i].spec.lrn {
                median_ms(runs, || {
                    zfnet::ops::lrn::lrn(&act, params).expect("lrn");
                }) / n as f64
            } else {
                0.0
            };
            let pool_ms = if let Some(pool) = net.convs[i].spec.pool {
                median_ms(runs, || {
                    zfnet::ops::maxpool::max_pool_with_switches(&act, pool).expect("pool");
                }) / n as f64
            } else {
                0.0
            };
            let flop = net.conv_flops(i) as f64 / 1e9;
            total_ms += ms;
            total_flop += flop;
            let rate = flop / ms * 1e3;
            println!(
                "conv{}  {ms:9.2}   {flop:11.3}   {rate:7.1}   {:5.1}%   (conv {conv_ms:.2} ms = {:.1}% of peak, LRN {lrn_ms:.2}, pool {pool_ms:.2})",
                i + 1,
                100.0 * rate / peak,
                100.0 * flop / conv_ms * 1e3 / peak
            );
        }
        let pool5 = trace.convs[4].output();
        let ms = median_ms(runs, || {
            net.head(pool5).expect("head");
        }) / n as f64;
        let flop = net.head_flops() as f64 / 1e9;
        total_ms += ms;
        total_flop += flop;
        println!("fc6-8  {ms:9.2}   {flop:11.3}   {:7.1}", flop / ms * 1e3);
        let whole = median_ms(runs, || {
            net.forward_trace(&x).expect("forward");
        }) / n as f64;
        println!(
            "sum    {total_ms:9.2}   {total_flop:11.3}   {:7.1}   {:5.1}%",
            total_flop / total_ms * 1e3,
            100.0 * total_flop / total_ms * 1e3 / peak
        );
        println!(
            "forward_trace {whole:.2} ms/image = {:.1} img/s, {:.1}% of peak",
            1e3 / whole,
            100.0 * total_flop / whole * 1e3 / peak
        );
        // each kernel against im2col + GEMM on its layers, interleaved run by run so both see
        // the same machine
        let kernels: [Kernel; 2] = [
            ("conv1-2: direct kernel", 0..2, zfnet::ops::conv::set_direct),
            ("conv3-5: Winograd", 2..5, zfnet::ops::conv::set_winograd),
        ];
        for (name, layers, set) in kernels {
            let mut times = [Vec::new(), Vec::new()];
            for _ in 0..runs.max(9) {
                for (k, on) in [(0, true), (1, false)] {
                    set(on);
                    let t = std::time::Instant::now();
                    for i in layers.clone() {
                        let input = if i == 0 {
                            &x
                        } else {
                            trace.convs[i - 1].output()
                        };
                        net.convs[i].forward(input).expect("conv");
                    }
                    times[k].push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
                }
            }
            set(true);
            let [fast, gemm] = times.map(|mut t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            });
            println!(
                "{name} {fast:.2} ms/image, im2col + GEMM {gemm:.2} ms/image ({:.2}× faster)",
                gemm / fast
            );
        }
    }
    Ok(())
}
