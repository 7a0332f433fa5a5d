//! Bringing weights from elsewhere: files written by `torch.save` (zip or legacy format, state
//! dict or whole module) or safetensors, in pytorchcv's ZFNet/AlexNet naming or zfvis's own,
//! checked and renamed into a [`ZfNet`]'s tensors; and ONNX graphs of the same family, whose
//! geometry comes from the graph ([`onnx`]).
//!
//! pytorchcv's `AlexNet` class (which its `zfnet` is, with other kernels) names its layers:
//!
//! | pytorchcv | zfvis |
//! |---|---|
//! | `features.stage1.unit1.conv.{weight,bias}` | `conv1.*` |
//! | `features.stage2.unit1.conv.*` | `conv2.*` |
//! | `features.stage3.unit{1,2,3}.conv.*` | `conv3.*`, `conv4.*`, `conv5.*` |
//! | `output.fc1.fc.*`, `output.fc2.fc.*`, `output.fc3.*` | `fc6.*`, `fc7.*`, `fc8.*` |
//!
//! torchvision's `alexnet` names them `features.{0,3,6,8,10}.*` and `classifier.{1,4,6}.*` (a
//! `module.` prefix, as `nn.DataParallel` saves, is dropped). The architecture follows from the
//! names and conv1's kernel: torchvision's names are torchvision's AlexNet; otherwise 7×7 is
//! ZFNet, 11×11 pytorchcv's AlexNet. Every width (channels, fc, classes) comes from the tensors'
//! shapes.

pub mod onnx;
pub mod onnx_proto;
mod onnx_tensor;
pub mod torch;

use crate::arch::{Architecture, Layout};
use crate::manifest::Preprocess;
use crate::model::ZfNet;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
pub use torch::Container;

/// What kind of file `path` is, from its first bytes.
fn sniff(path: &Path) -> Result<Container> {
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
    Container::sniff(&head[..n]).ok_or_else(|| {
        Error::Weights(format!(
            "{}: neither a torch.save file (zip or legacy), safetensors nor ONNX",
            path.display()
        ))
    })
}

/// Tensors read from a file, f32 on the CPU, in the file's own names and order.
pub fn read_tensors(path: &Path) -> Result<(Container, Vec<(String, Tensor)>)> {
    let container = sniff(path)?;
    Ok((container, read_named(path, container)?))
}

/// The tensors of a file whose container is known.
fn read_named(path: &Path, container: Container) -> Result<Vec<(String, Tensor)>> {
    let tensors = match container {
        Container::TorchZip => torch::read_zip(path)?,
        Container::TorchLegacy => torch::read_legacy(path)?,
        Container::Onnx => onnx::read(&read_all(path)?, &path.display().to_string())?
            .tensors
            .into_iter()
            .collect(),
        Container::Safetensors => {
            let mut t: Vec<_> = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| Error::Weights(format!("{}: {e}", path.display())))?
                .into_iter()
                .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
                .collect::<Result<_>>()?;
            t.sort_by(|a, b| a.0.cmp(&b.0));
            t
        }
    };
    if tensors.is_empty() {
        return Err(Error::Weights(format!(
            "{}: no tensors found (is it a model or state dict?)",
            path.display()
        )));
    }
    Ok(tensors)
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The zfvis name of a pytorchcv or zfvis tensor name, `None` when it is neither.
pub fn zfvis_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("module.").unwrap_or(name);
    let (layer, param) = name.rsplit_once('.')?;
    if !matches!(param, "weight" | "bias") {
        return None;
    }
    let ours = match layer {
        "features.stage1.unit1.conv" | "conv1" => "conv1",
        "features.stage2.unit1.conv" | "conv2" => "conv2",
        "features.stage3.unit1.conv" | "conv3" => "conv3",
        "features.stage3.unit2.conv" | "conv4" => "conv4",
        "features.stage3.unit3.conv" | "conv5" => "conv5",
        "output.fc1.fc" | "fc6" => "fc6",
        "output.fc2.fc" | "fc7" => "fc7",
        "output.fc3" | "fc8" => "fc8",
        // torchvision's AlexNet
        "features.0" => "conv1",
        "features.3" => "conv2",
        "features.6" => "conv3",
        "features.8" => "conv4",
        "features.10" => "conv5",
        "classifier.1" => "fc6",
        "classifier.4" => "fc7",
        "classifier.6" => "fc8",
        _ => return None,
    };
    Some(format!("{ours}.{param}"))
}

/// Whether the names are torchvision's AlexNet's.
pub fn torchvision_names(names: &[&str]) -> bool {
    names.iter().any(|n| {
        let n = n.strip_prefix("module.").unwrap_or(n);
        n.starts_with("features.0.") || n.starts_with("classifier.")
    })
}

/// Renames every tensor to zfvis's names; a name that is neither pytorchcv's, torchvision's nor
/// ours, or two tensors for one layer, is an error naming it.
pub fn rename(tensors: Vec<(String, Tensor)>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let ours = zfvis_name(&name).ok_or_else(|| {
            Error::Weights(format!(
                "unknown layer {name:?}: expected pytorchcv ZFNet/AlexNet names \
                 (features.stage1.unit1.conv.weight … output.fc3.bias), torchvision AlexNet names \
                 (features.0.weight … classifier.6.bias) or zfvis names (conv1.weight … fc8.bias)"
            ))
        })?;
        if out.insert(ours.clone(), t).is_some() {
            return Err(Error::Weights(format!(
                "two tensors for {ours} (the second is {name:?})"
            )));
        }
    }
    Ok(out)
}

/// The architecture conv1's kernel says: 7×7 ZFNet, 11×11 AlexNet (pytorchcv's: torchvision's
/// has the same kernels, and only its names tell it apart).
pub fn detect(tensors: &HashMap<String, Tensor>) -> Result<Architecture> {
    let w = tensors
        .get("conv1.weight")
        .ok_or_else(|| Error::Weights("no conv1.weight: not a ZFNet or AlexNet".into()))?;
    match w.dims() {
        [_, 3, 7, 7] => Ok(Architecture::Zfnet),
        [_, 3, 11, 11] => Ok(Architecture::Alexnet),
        d => Err(Error::Weights(format!(
            "conv1.weight is {d:?}: neither ZFNet's 7×7 nor AlexNet's 11×11 kernels over 3 colours"
        ))),
    }
}

/// Fails on the first tensor holding NaN or ±∞, naming it and how many such values it has.
pub fn check_finite(tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let values = tensors[name].flatten_all()?.to_vec1::<f32>()?;
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::Weights(format!(
                "{name} has {bad} NaN or infinite values of {}",
                values.len()
            )));
        }
    }
    Ok(())
}

/// What [`import`] found.
pub struct Imported {
    pub container: Container,
    pub architecture: Architecture,
    /// The exact geometry (the family's preset, or an ONNX graph's own).
    pub layout: Layout,
    /// How its input is to be fed, as far as the format says: PyTorch's ImageNet convention for
    /// torch files, Caffe's for ONNX graphs (the model zoo's are Caffe-born).
    pub preprocess: Preprocess,
    /// What the import changed or dropped, for the provenance (e.g. grouped convs made dense).
    pub notes: Vec<String>,
    /// zfvis-named f32 tensors that make a [`ZfNet`] of `architecture`.
    pub tensors: HashMap<String, Tensor>,
    pub net: ZfNet,
}

/// Reads `path`, renames, checks every value is finite and builds the network (which checks
/// every shape against the architecture, naming the layer that does not fit). `arch`: what the
/// user says it is; `None` detects it.
pub fn import(path: &Path, arch: Option<Architecture>) -> Result<Imported> {
    let (container, tensors) = read_tensors_or_onnx(path)?;
    let tensors = match tensors {
        Tensors::Onnx(net) => return import_onnx(*net, arch),
        Tensors::Named(t) => t,
    };
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let torchvision = torchvision_names(&names);
    let tensors = rename(tensors)?;
    let detected = match (detect(&tensors)?, torchvision, arch) {
        (Architecture::Alexnet, true, _) => Architecture::AlexnetTorchvision,
        // zfvis names carry no padding or LRN: the user may say which AlexNet
        (Architecture::Alexnet, false, Some(Architecture::AlexnetTorchvision)) => {
            Architecture::AlexnetTorchvision
        }
        (a, _, _) => a,
    };
    if let Some(a) = arch.filter(|&a| a != detected) {
        return Err(Error::Weights(format!(
            "--arch says {a:?}, but conv1.weight is {:?}, which is {detected:?}",
            tensors["conv1.weight"].dims()
        )));
    }
    check_finite(&tensors)?;
    let net = ZfNet::from_tensors(detected, tensors.clone(), &Device::Cpu)?;
    Ok(Imported {
        container,
        architecture: detected,
        layout: detected.into(),
        preprocess: Preprocess::imagenet(),
        notes: Vec::new(),
        tensors,
        net,
    })
}

enum Tensors {
    Named(Vec<(String, Tensor)>),
    Onnx(Box<onnx::OnnxNet>),
}

fn read_tensors_or_onnx(path: &Path) -> Result<(Container, Tensors)> {
    let container = sniff(path)?;
    if container == Container::Onnx {
        let net = onnx::read(&read_all(path)?, &path.display().to_string())?;
        return Ok((container, Tensors::Onnx(Box::new(net))));
    }
    Ok((container, Tensors::Named(read_named(path, container)?)))
}

fn import_onnx(net: onnx::OnnxNet, arch: Option<Architecture>) -> Result<Imported> {
    let layout = net.layout;
    if let Some(a) = arch.filter(|&a| a != layout.family) {
        return Err(Error::Weights(format!(
            "--arch says {a:?}, but the graph's conv1 has a {k}×{k} kernel: {:?}",
            layout.family,
            k = layout.convs[0].kernel
        )));
    }
    let tensors: HashMap<String, Tensor> = net.tensors.into_iter().collect();
    check_finite(&tensors)?;
    let built = ZfNet::from_tensors(layout, tensors.clone(), &Device::Cpu)?;
    let mut notes = Vec::new();
    for (i, g) in &net.groups {
        notes.push(format!("conv{}'s {g} groups made one dense conv", i + 1));
    }
    if net.softmax {
        notes.push("the final Softmax dropped (zfvis's logits enter it)".into());
    }
    Ok(Imported {
        container: Container::Onnx,
        architecture: layout.family,
        layout,
        preprocess: Preprocess::caffe(),
        notes,
        tensors,
        net: built,
    })
}
