//! The seeded random-init placeholder: what zfvis runs before a trained model exists.
//!
//! Conv weights are He-normal (`std = √(2 / fan_in)`), fc weights normal with std 0.01 (the paper's
//! init), biases zero. The same seed gives the same bytes on every machine (ChaCha8).

use crate::arch::Architecture;
use crate::manifest::{imagenette_classes, manifest_path, Manifest, Preprocess};
use crate::model::{CONV_NAMES, FC_NAMES};
use crate::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// Shape of the placeholder and of the default trained model: the paper's conv stack, reduced fc
/// width (the paper's Table 3 ablates it), the ten Imagenette classes.
pub const DEFAULT_FC_WIDTH: usize = 1024;

fn normal(rng: &mut ChaCha8Rng, std: f32, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            // Box–Muller, using one of the two outputs
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// How fully connected layers are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FcInit {
    /// N(0, 0.01), the paper's. Logits start near 1e-2 of the features' scale, so learning starts
    /// slowly, and narrow networks barely learn at all.
    #[default]
    Paper,
    /// He-normal, `std = √(2 / fan_in)` (`√(1 / fan_in)` for fc8, which has no ReLU after it):
    /// keeps the signal's scale through the head, so training starts at once.
    He,
}

/// Seeded random tensors for a network of the given widths, with the paper's fc init.
pub fn random_tensors(
    arch: Architecture,
    channels: [usize; 5],
    fc_width: usize,
    classes: usize,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    random_tensors_with(arch, channels, fc_width, classes, seed, FcInit::Paper)
}

/// Seeded random tensors for a network of the given widths.
pub fn random_tensors_with(
    arch: Architecture,
    channels: [usize; 5],
    fc_width: usize,
    classes: usize,
    seed: u64,
    fc_init: FcInit,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    let mut in_ch = 3;
    for ((name, spec), &out_ch) in CONV_NAMES.iter().zip(arch.conv_specs()).zip(&channels) {
        let fan_in = in_ch * spec.kernel * spec.kernel;
        let w = normal(&mut rng, (2.0 / fan_in as f32).sqrt(), out_ch * fan_in);
        out.insert(
            format!("{name}.weight"),
            Tensor::from_vec(w, (out_ch, in_ch, spec.kernel, spec.kernel), &Device::Cpu)?,
        );
        out.insert(
            format!("{name}.bias"),
            Tensor::zeros(out_ch, candle_core::DType::F32, &Device::Cpu)?,
        );
        in_ch = out_ch;
    }
    let side = crate::arch::Layout::from(arch).last_side();
    let dims = [in_ch * side * side, fc_width, fc_width, classes];
    for (i, name) in FC_NAMES.iter().enumerate() {
        let (fan_in, fan_out) = (dims[i], dims[i + 1]);
        let std = match (fc_init, i) {
            (FcInit::Paper, _) => 0.01,
            (FcInit::He, 2) => (1.0 / fan_in as f32).sqrt(),
            (FcInit::He, _) => (2.0 / fan_in as f32).sqrt(),
        };
        let w = normal(&mut rng, std, fan_in * fan_out);
        out.insert(
            format!("{name}.weight"),
            Tensor::from_vec(w, (fan_out, fan_in), &Device::Cpu)?,
        );
        out.insert(
            format!("{name}.bias"),
            Tensor::zeros(fan_out, candle_core::DType::F32, &Device::Cpu)?,
        );
    }
    Ok(out)
}

/// Writes the untrained placeholder (`path` + its manifest) unless both already exist.
pub fn write_placeholder(path: &Path, seed: u64) -> Result<bool> {
    if path.exists() && manifest_path(path).exists() {
        return Ok(false);
    }
    let arch = Architecture::Zfnet;
    let classes = imagenette_classes();
    let tensors = random_tensors(
        arch,
        arch.paper_channels(),
        DEFAULT_FC_WIDTH,
        classes.len(),
        seed,
    )?;
    let manifest = Manifest {
        format: 1,
        layers: None,
        channels: None,
        name: "zfnet-imagenette-untrained".into(),
        architecture: arch,
        fc_width: DEFAULT_FC_WIDTH,
        classes,
        preprocess: Preprocess::imagenet(),
        trained: false,
        provenance: format!(
            "UNTRAINED placeholder: seeded random initialisation (seed {seed}, He-normal conv, N(0, 0.01) fc). \
             Its predictions and visualisations are meaningless until a trained model replaces it."
        ),
        evaluation: None,
        conv1: None,
    };
    crate::manifest::save_model(path, &tensors, candle_core::DType::F32, &manifest)?;
    Ok(true)
}
