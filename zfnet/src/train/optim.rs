//! The optimiser: SGD with momentum (PyTorch convention `v ← μv + g + λw`, `w ← w − ηv`; no
//! weight decay on biases), then the paper's feature-scale clipping of conv filters.

use crate::Result;
use candle_core::{Tensor, Var};

/// A trained tensor with its momentum buffer.
pub struct Param {
    pub name: String,
    pub var: Var,
    pub momentum: Tensor,
}

/// SGD with momentum and weight decay; conv filters whose RMS exceeds `clip_rms` are rescaled
/// to it after each update.
#[derive(Debug, Clone, Copy)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub clip_rms: Option<f32>,
}

impl Sgd {
    /// Updates `params` with `grads` (one per parameter, in order; `None` leaves it alone) at
    /// learning rate `lr`.
    pub fn step(&self, params: &mut [Param], grads: Vec<Option<Tensor>>, lr: f64) -> Result<()> {
        for (p, grad) in params.iter_mut().zip(grads) {
            let Some(mut g) = grad else { continue };
            // Arithmetic on a Var records a graph: without the detach, each step's momentum would
            // hold the previous step's whole update graph alive (a leak of ~1 GB a minute).
            let current = p.var.as_tensor().detach();
            if p.name.ends_with(".weight") && self.weight_decay > 0.0 {
                g = (g.detach() + (&current * self.weight_decay)?)?;
            }
            p.momentum = ((&p.momentum * self.momentum)? + g.detach())?.detach();
            let mut w = (&current - (&p.momentum * lr)?)?;
            if let (Some(radius), true) = (
                self.clip_rms,
                p.name.starts_with("conv") && p.name.ends_with(".weight"),
            ) {
                w = clip_filters(&w, radius)?;
            }
            p.var.set(&w)?;
        }
        Ok(())
    }
}

/// The paper's feature-scale clipping: rescales each filter (`[out, …]` row) whose RMS exceeds
/// `radius` down to it.
pub fn clip_filters(weight: &Tensor, radius: f32) -> Result<Tensor> {
    let out = weight.dim(0)?;
    let flat = weight.reshape((out, ()))?;
    let rms = flat.sqr()?.mean_keepdim(1)?.sqrt()?;
    let scale = (rms.recip()? * radius as f64)?.clamp(0f32, 1f32)?;
    Ok(flat.broadcast_mul(&scale)?.reshape(weight.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipping_rescales_only_filters_above_the_radius() -> anyhow::Result<()> {
        let w = Tensor::from_vec(
            vec![0.3f32, -0.3, 0.3, 0.3, 0.01, 0.02, -0.01, 0.0],
            (2, 1, 2, 2),
            &Device::Cpu,
        )?;
        let c = clip_filters(&w, 0.1)?.reshape((2, 4))?.to_vec2::<f32>()?;
        let rms0 = (c[0].iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms0 - 0.1).abs() < 1e-6);
        assert_eq!(c[1], vec![0.01, 0.02, -0.01, 0.0]);
        Ok(())
    }
}
