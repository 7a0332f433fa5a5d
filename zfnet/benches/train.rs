//! Training throughput against forward-only throughput, in the same run, on the default model's
//! shape (paper conv stack, fc 1024, 10 classes), one micro-batch of 32 random images.
//! Also our im2col + GEMM conv (forward and backward) against candle's conv2d per layer.
//!
//! `cargo bench -p zfnet --bench train`

/// The allocator the zfvis binary uses, so timings match it.
mod common;
use common::median_ms;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor, Var};
use zfnet::arch::Architecture;
use zfnet::ops::conv::conv2d_relu;
use zfnet::train::forward_train;

fn main() -> anyhow::Result<()> {
    common::keep_freed_memory();
    let device = Device::Cpu;
    let arch = Architecture::Zfnet;
    let batch = 32;
    let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 1024, 10, 1)?;
    let vars: Vec<(String, Var)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), Var::from_tensor(t)?)))
        .collect::<candle_core::Result<_>>()?;
    let named = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let net = zfnet::ZfNet::from_tensors(arch, named, &device)?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device)?;
    let labels = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect(), batch, &device)?;
    println!(
        "ZFNet (paper conv stack, fc 1024, 10 classes), batch {batch}, {} threads",
        rayon::current_num_threads()
    );
    let forward = median_ms(3, || {
        net.forward(&x).expect("forward");
    });
    let train = median_ms(3, || {
        let logits = forward_train(&net, &x, None, 0).expect("forward");
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).expect("loss");
        loss.backward().expect("backward");
    });
    let fwd_rate = batch as f64 / forward * 1e3;
    let train_rate = batch as f64 / train * 1e3;
    println!("forward only          {forward:9.1} ms  {fwd_rate:6.1} img/s");
    println!(
        "forward + backward    {train:9.1} ms  {train_rate:6.1} img/s   {:.2}x forward throughput (3.0x work)",
        train_rate / fwd_rate
    );

    println!("\nper conv layer, batch {batch}: ours (fused conv + bias + ReLU) vs candle conv2d + bias + ReLU");
    let mut input = x.clone();
    for (i, conv) in net.convs.iter().enumerate() {
        let xin = Var::from_tensor(&input)?;
        let w = Var::from_tensor(&conv.weight)?;
        let b = Var::from_tensor(&conv.bias)?;
        let c = conv.out_channels();
        let (s, p) = (conv.spec.stride, conv.spec.padding);
        let theirs = || -> candle_core::Result<Tensor> {
            xin.conv2d(&w, p, s, 1, 1)?
                .broadcast_add(&b.reshape((1, c, 1, 1))?)?
                .relu()
        };
        let ours_f = median_ms(3, || {
            conv2d_relu(&xin, &w, &b, s, p).expect("conv");
        });
        let theirs_f = median_ms(3, || {
            theirs().expect("conv");
        });
        let ours_b = median_ms(3, || {
            conv2d_relu(&xin, &w, &b, s, p)
                .and_then(|y| Ok(y.sum_all()?.backward()?))
                .expect("backward");
        });
        let theirs_b = median_ms(3, || {
            theirs()
                .and_then(|y| y.sum_all()?.backward())
                .expect("backward");
        });
        println!(
            "conv{}  forward {ours_f:8.1} vs {theirs_f:8.1} ms ({:.2}x)   fwd+bwd {ours_b:8.1} vs {theirs_b:8.1} ms ({:.2}x)",
            i + 1,
            theirs_f / ours_f,
            theirs_b / ours_b
        );
        input = net.conv_layer(i, &input)?.output().clone();
    }
    Ok(())
}
