#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn t<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let s = Instant::now();
    let r = f();
    println!("{name:30} {:8.1} ms", s.elapsed().as_secs_f64() * 1e3);
    r
}
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let arch = zfnet::arch::Architecture::Zfnet;
    let tensors = zfnet::init::random_tensors(arch, arch.paper_channels(), 1024, 10, 1)?;
    let vars: Vec<(String, Var)> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), Var::from_tensor(v).unwrap()))
        .collect();
    let named = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let net = zfnet::ZfNet::from_tensors(arch, named, &dev)?;
    let x = Tensor::randn(0f32, 1.0, (32, 3, 224, 224), &dev)?;
    for _ in 0..2 {
        let mut h = x.clone();
        for (i, conv) in net.convs.iter().enumerate() {
            h = t(&format!("conv{}", i + 1), || conv.forward(&h))?;
            if conv.spec.lrn {
                h = t("  lrn", || zfnet::ops::lrn::lrn(&h, net.lrn))?;
            }
            if conv.spec.pool {
                h = t("  pool", || zfnet::ops::maxpool::max_pool(&h, net.pool))?;
            }
        }
        let logits = t("head", || -> anyhow::Result<Tensor> {
            let mut h = h.flatten_from(1)?;
            for (i, fc) in net.fcs.iter().enumerate() {
                h = candle_core::Module::forward(fc, &h)?;
                if i < 2 {
                    h = h.relu()?;
                }
            }
            Ok(h)
        })?;
        let y = Tensor::from_vec((0..32u32).map(|i| i % 10).collect(), 32, &dev)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        t("backward total", || loss.backward())?;
        println!("---");
    }
    Ok(())
}
