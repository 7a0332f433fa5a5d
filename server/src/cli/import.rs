//! `zfvis import`: weights from PyTorch (`torch.save`, zip or legacy format, state dict or whole
//! module) or safetensors, in pytorchcv's ZFNet/AlexNet naming, or an ONNX graph of the same
//! family (its geometry from the graph), to a model `zfvis serve` loads.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use zfnet::arch::Architecture;
use zfnet::import::Container;
use zfnet::manifest::{Manifest, Preprocess};

/// How pixels are fed to the network.
#[derive(Clone, Copy, ValueEnum)]
enum InputArg {
    /// The format's own: torch for torch.save files, caffe for ONNX graphs.
    Auto,
    /// RGB scaled to 0–1, ImageNet mean/std (PyTorch, pytorchcv, torchvision).
    Torch,
    /// BGR 0–255 less the mean pixel B 104, G 117, R 123 (Caffe; the ONNX zoo's zfnet512 and
    /// bvlcalexnet).
    Caffe,
}

#[derive(Clone, Copy, ValueEnum)]
enum ArchArg {
    Auto,
    Zfnet,
    Alexnet,
    AlexnetTorchvision,
}

/// Import weights (e.g. pytorchcv's zfnet-1727-d010ddca.pth) as a zfvis model: safetensors plus
/// its manifest, written only once everything checks out.
#[derive(Args)]
pub struct ImportArgs {
    /// A torch.save file (.pth, zip or legacy format; state dict or whole model), safetensors,
    /// or an ONNX model (.onnx: a chain of Conv, Relu, LRN, MaxPool, Flatten, Gemm, …).
    file: PathBuf,
    /// The network: auto (torchvision's names: its AlexNet; else conv1's kernel: 7×7 ZFNet, 11×11
    /// pytorchcv's AlexNet), zfnet, alexnet or alexnet-torchvision.
    #[arg(long, value_enum, default_value = "auto")]
    arch: ArchArg,
    /// Class names in logit order: imagenet1k (the 1000 ImageNet classes, built in) or a text
    /// file with one `wnid<TAB>label` (or a label) per line.
    #[arg(long, default_value = "imagenet1k")]
    classes: String,
    /// Where to write the model (NAME.safetensors; NAME.json beside it).
    #[arg(long)]
    out: PathBuf,
    /// Refuse the file unless its SHA-256 is this (hex).
    #[arg(long)]
    sha256: Option<String>,
    /// Refuse the file unless its SHA-1 is this (hex, or its first 8 digits, as in pytorchcv's
    /// file names).
    #[arg(long)]
    sha1: Option<String>,
    /// The model's name (default: the output file's stem).
    #[arg(long)]
    name: Option<String>,
    /// The input convention: resize 256, centre crop 224, then this.
    #[arg(long, value_enum, default_value = "auto")]
    input: InputArg,
    /// Store the tensors as fp16 (half the size; loading converts back to f32).
    #[arg(long)]
    f16: bool,
}

/// SHA-1 and SHA-256 of a file, with a progress bar for big ones.
fn digests(path: &Path) -> anyhow::Result<(String, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let bar = ProgressBar::new(len).with_style(ProgressStyle::with_template(
        "checksums {bar:30} {bytes}/{total_bytes}",
    )?);
    if len < 16 << 20 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut s1, mut s256) = (sha1::Sha1::new(), Sha256::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok((hex::encode(s1.finalize()), hex::encode(s256.finalize())))
}

fn check_digest(kind: &str, want: &str, got: &str, file: &Path) -> anyhow::Result<()> {
    let want = want.trim().to_ascii_lowercase();
    if want.len() < 8 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("--{kind} {want:?} is not a hex digest (at least 8 hex digits)");
    }
    if !got.starts_with(&want) {
        bail!(
            "{} has {kind} {got}, not {want}: a different or damaged file",
            file.display()
        );
    }
    Ok(())
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let file = &args.file;
    let (sha1, sha256) = digests(file)?;
    if let Some(want) = &args.sha256 {
        check_digest("sha256", want, &sha256, file)?;
    }
    if let Some(want) = &args.sha1 {
        check_digest("sha1", want, &sha1, file)?;
    }
    let classes = match args.classes.as_str() {
        "imagenet1k" => zfnet::manifest::imagenet1k_classes(),
        path => zfnet::manifest::classes_from_file(Path::new(path))?,
    };
    let arch = match args.arch {
        ArchArg::Auto => None,
        ArchArg::Zfnet => Some(Architecture::Zfnet),
        ArchArg::Alexnet => Some(Architecture::Alexnet),
        ArchArg::AlexnetTorchvision => Some(Architecture::AlexnetTorchvision),
    };
    let spinner = ProgressBar::new_spinner().with_message(format!("reading {}", file.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let imported = zfnet::import::import(file, arch);
    spinner.finish_and_clear();
    let imported = imported?;
    let net = &imported.net;
    if net.num_classes() != classes.len() {
        bail!(
            "fc8 has {} outputs but --classes {} lists {} classes",
            net.num_classes(),
            args.classes,
            classes.len()
        );
    }
    let format = match imported.container {
        Container::TorchZip => "torch.save zip format",
        Container::TorchLegacy => "torch.save legacy format",
        Container::Safetensors => "safetensors",
        Container::Onnx => "ONNX",
    };
    let preprocess = match args.input {
        InputArg::Auto => imported.preprocess.clone(),
        InputArg::Torch => Preprocess::imagenet(),
        InputArg::Caffe => Preprocess::caffe(),
    };
    let notes = if imported.notes.is_empty() {
        String::new()
    } else {
        format!(" {}.", imported.notes.join("; "))
    };
    let source = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let out = &args.out;
    let manifest = Manifest {
        format: 1,
        name: args.name.clone().unwrap_or_else(|| {
            out.file_stem()
                .map_or("imported".into(), |s| s.to_string_lossy().into())
        }),
        architecture: imported.architecture,
        layers: (!imported.layout.is_preset()).then_some(imported.layout.convs),
        channels: Some(net.channels()),
        fc_width: net.fc_width(),
        classes,
        preprocess,
        trained: true,
        provenance: format!(
            "Imported by `zfvis import` from {source} ({format}, sha256 {sha256}, sha1 {sha1}).{notes}"
        ),
        evaluation: None,
        conv1: Some(zfnet::filter_stats::filter_stats(&net.convs[0].weight)?),
    };
    let dtype = if args.f16 {
        candle_core::DType::F16
    } else {
        candle_core::DType::F32
    };
    zfnet::manifest::save_model(out, &imported.tensors, dtype, &manifest)
        .with_context(|| format!("writing {}", out.display()))?;
    let manifest_path = zfnet::manifest::manifest_path(out);
    println!(
        "imported {} ({:?}, {} classes, channels {:?}, fc {}) from {source}: {} and {}",
        manifest.name,
        manifest.architecture,
        manifest.classes.len(),
        net.channels(),
        net.fc_width(),
        out.display(),
        manifest_path.display()
    );
    // what was understood, layer by layer, so a wrong guess shows before serving
    let p = &manifest.preprocess;
    println!(
        "  input: resize {}, crop {}, {:?} × {} − mean {:?}, / std {:?}",
        p.resize, p.crop, p.channel_order, p.pixel_scale, p.mean, p.std
    );
    let sizes = imported.layout.spatial_sizes();
    for (i, (spec, (side, pooled))) in imported.layout.convs.iter().zip(sizes).enumerate() {
        let mut line = format!(
            "  conv{}: {k}×{k}/{} pad {} → {}×{side}×{side}",
            i + 1,
            spec.stride,
            spec.padding,
            net.channels()[i],
            k = spec.kernel
        );
        if let Some(l) = spec.lrn {
            line += &format!(" → LRN {} α {} β {} k {}", l.size, l.alpha, l.beta, l.k);
        }
        if let (Some(pool), Some(out)) = (spec.pool, pooled) {
            let mode = if pool.ceil_mode { "ceil" } else { "floor" };
            line += &format!(
                " → max pool {0}×{0}/{1} {mode} → {out}×{out}",
                pool.kernel, pool.stride
            );
        }
        println!("{line}");
    }
    for note in &imported.notes {
        println!("  note: {note}");
    }
    Ok(())
}
