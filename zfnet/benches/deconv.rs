//! One single-unit deconvnet projection from conv5 against one forward pass, in the same run,
//! on the full-width ZFNet (seeded random weights; speed does not depend on training).
//! Also our GEMM + col2im transposed convolution against candle's conv_transpose2d.
//!
//! `cargo bench -p zfnet --bench deconv`

/// The allocator the zfvis binary uses, so timings match it.
mod common;
use common::median_ms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use zfnet::arch::Architecture;
use zfnet::deconv::{conv_transpose, project, Selection};

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 4096, 1000, 1)?;
    let net = zfnet::ZfNet::from_tensors(arch, tensors, &device)?;
    let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &device)?;
    let trace = net.forward_trace(&x)?;
    let map = 7;

    let forward = median_ms(15, || {
        net.forward_trace(&x).expect("forward");
    });
    let unit5 = median_ms(15, || {
        project(&net, &trace, 4, map, &Selection::StrongestUnit).expect("projection");
    });
    let whole5 = median_ms(15, || {
        project(&net, &trace, 4, map, &Selection::WholeMap).expect("projection");
    });
    println!(
        "ZFNet (paper widths, fc 4096, 1000 classes), batch 1, {} threads",
        rayon::current_num_threads()
    );
    println!("forward (traced)                 {forward:8.2} ms");
    println!(
        "conv5 single-unit projection     {unit5:8.2} ms   ratio {:.2}x forward (goal <= 0.5x)",
        unit5 / forward
    );
    println!(
        "conv5 whole-map projection       {whole5:8.2} ms   ratio {:.2}x forward",
        whole5 / forward
    );

    // conv1's transposed convolution: [1, 96, 110, 110] → [1, 3, 224, 224], 7×7 stride 2
    let w1 = &net.convs[0].weight;
    let g = Tensor::randn(0f32, 1.0, (1, 96, 110, 110), &device)?;
    let ours = median_ms(9, || {
        conv_transpose(&g, w1, 2, 1, 224).expect("ours");
    });
    let candle = median_ms(5, || {
        g.conv_transpose2d(w1, 1, 1, 2, 1).expect("candle");
    });
    println!("conv1 transposed conv: ours {ours:.2} ms, candle conv_transpose2d {candle:.2} ms: {:.1}x faster", candle / ours);
    Ok(())
}
