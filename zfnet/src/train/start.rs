//! A run's starting weights: the seeded start (He, or the small normal starts the paper uses),
//! then the tensors that `--init-from` and `--init-layer-from` take from files.

use super::{LayerStart, TrainConfig};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The run's starting weights: seeded He conv (every conv layer from N(0, `conv_std`²) when set,
/// conv1 from N(0, `conv1_std`²) when that is), fc as `fc_init` says, zero biases.
pub(super) fn initial_tensors(
    config: &TrainConfig,
    classes: usize,
) -> Result<HashMap<String, Tensor>> {
    let mut tensors = crate::init::random_tensors_with(
        config.architecture,
        config.channels,
        config.fc_width,
        classes,
        config.seed,
        config.fc_init,
    )?;
    let convs = config.channels.len();
    for i in 0..convs {
        let std = match (i, config.conv1_std, config.conv_std) {
            (0, Some(std), _) | (_, _, Some(std)) => std,
            _ => continue,
        };
        let name = format!("conv{}.weight", i + 1);
        let he = tensors
            .get(&name)
            .ok_or_else(|| Error::Run(format!("no {name}")))?;
        // the same seeded draw, rescaled: N(0, 1) · std
        let he_std = (2.0 / (he.dim(1)? * he.dim(2)? * he.dim(3)?) as f64).sqrt();
        let small = he.affine(f64::from(std) / he_std, 0.0)?;
        tensors.insert(name, small);
    }
    if let Some(path) = &config.init_from {
        take_start_from(&mut tensors, path)?;
    }
    for start in &config.layer_starts {
        take_layer_from(&mut tensors, start)?;
    }
    Ok(tensors)
}

/// Replaces the tensors of `tensors` that `path` holds (any dtype, stored as f32); every tensor
/// of the file must name a parameter of the same shape, and at least one must.
fn take_start_from(tensors: &mut HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let flag = format!("--init-from {}", path.display());
    take_tensors(tensors, path, &flag, |_| true)
}

/// Replaces the tensors of `start.layer` (`<layer>.weight`, `<layer>.bias`) with those of
/// `start.from`; the file's other tensors are left out. The layer must exist and the file must
/// hold at least one of its tensors, of the network's shape.
fn take_layer_from(tensors: &mut HashMap<String, Tensor>, start: &LayerStart) -> Result<()> {
    let flag = format!("--init-layer-from {}={}", start.layer, start.from.display());
    let prefix = format!("{}.", start.layer);
    if !tensors.keys().any(|k| k.starts_with(&prefix)) {
        let mut layers: Vec<&str> = tensors.keys().filter_map(|k| k.split('.').next()).collect();
        layers.sort();
        layers.dedup();
        return Err(Error::Config(format!(
            "{flag}: this network has no layer {} (it has {})",
            start.layer,
            layers.join(", ")
        )));
    }
    take_tensors(tensors, &start.from, &flag, |name| {
        name.starts_with(&prefix)
    })
}

/// Loads `path` and moves the tensors that `wanted` selects into `tensors`, checking names and
/// shapes; errors name the flag that asked for it.
fn take_tensors(
    tensors: &mut HashMap<String, Tensor>,
    path: &Path,
    flag: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    let bad = |m: String| Error::Config(format!("{flag}: {m}"));
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let loaded = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut taken = 0;
    for (name, t) in loaded {
        if !wanted(&name) {
            continue;
        }
        let Some(start) = tensors.get(&name) else {
            return Err(bad(format!("{name} is not a parameter of this network")));
        };
        if start.dims() != t.dims() {
            return Err(bad(format!(
                "{name} is {:?}, the network's is {:?}",
                t.dims(),
                start.dims()
            )));
        }
        tensors.insert(name, t.to_dtype(DType::F32)?);
        taken += 1;
    }
    if taken == 0 {
        return Err(bad("holds none of the tensors asked for".into()));
    }
    Ok(())
}
