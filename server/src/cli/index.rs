//! `zfvis index`: top-9 activations of every map over a probe folder; `zfvis index merge`.

use super::DEFAULT_WEIGHTS;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use zfnet::topk::ProbeIndex;

/// Top-k activations of every conv map over a folder of probe images (or `index merge`).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IndexArgs {
    #[command(subcommand)]
    action: Option<IndexAction>,
    /// Folder of images, searched recursively (JPEG, PNG, WebP).
    #[arg(long)]
    probe: Option<PathBuf>,
    /// Index file to write (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Index only slice i of n (every n-th image from i), e.g. 0/4; combine with `index merge`.
    #[arg(long)]
    shard: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Activations kept per map.
    #[arg(long, default_value_t = 9)]
    top: usize,
}

#[derive(Subcommand)]
enum IndexAction {
    /// Combine partial indexes (from --shard runs) into the index of their union.
    Merge {
        /// Partial index files.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    if let Some(IndexAction::Merge { parts, out }) = args.action {
        return merge(&parts, &out);
    }
    crate::alloc::keep_freed_memory();
    let probe = args
        .probe
        .context("give --probe DIR (the images to index)")?;
    let out = args
        .out
        .context("give --out FILE (where to write the index)")?;
    build(
        &args.weights,
        &args.device,
        &probe,
        &out,
        args.shard.as_deref(),
        args.batch,
        args.top,
    )
}

/// `i/n` with `i < n`.
fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .context("--shard must look like i/n, e.g. 0/4")?;
    let (i, n): (usize, usize) = (
        i.trim().parse().context("shard index")?,
        n.trim().parse().context("shard count")?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 ≤ i < n");
    }
    Ok((i, n))
}

fn build(
    weights: &Path,
    device: &str,
    probe: &Path,
    out: &Path,
    shard: Option<&str>,
    batch: usize,
    k: usize,
) -> anyhow::Result<()> {
    if !(1..=256).contains(&batch) {
        bail!("--batch must be between 1 and 256, not {batch}");
    }
    if !(1..=100).contains(&k) {
        bail!("--top must be between 1 and 100, not {k}");
    }
    // arguments first: a typo should not wait for the model to load
    let shard = shard.map(parse_shard).transpose()?;
    let device = zfnet::device::parse_device(device)?;
    let model = zfnet::LoadedModel::load(weights, &device)
        .with_context(|| format!("loading {}", weights.display()))?;
    let mut files = zfnet::probe::list_images(probe)?;
    if let Some((i, n)) = shard {
        files = zfnet::probe::shard(files, i, n);
        eprintln!("shard {i}/{n}: {} images", files.len());
    }
    if files.is_empty() {
        bail!("no JPEG, PNG or WebP images under {}", probe.display());
    }
    let index = index_with_bar(&model, probe, &files, k, batch)?;
    save(&index, out)?;
    eprintln!("→ {}", out.display());
    Ok(())
}

/// Indexes `files` with a progress bar, reporting skipped files and the rate.
pub fn index_with_bar(
    model: &zfnet::LoadedModel,
    probe: &Path,
    files: &[PathBuf],
    k: usize,
    batch: usize,
) -> anyhow::Result<ProbeIndex> {
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} indexing [{bar:40}] {pos}/{len} images  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let (index, skipped) =
        zfnet::probe::build_index(model, probe, files, k, batch, |done, skipped| {
            // without a terminal the bar is hidden: a line every 10%
            let tenth = (files.len() / 10).max(1);
            if bar.is_hidden() && done / tenth != (bar.position() as usize) / tenth {
                eprintln!("indexed {done}/{} images ({skipped} skipped)", files.len());
            }
            bar.set_position(done as u64);
            if skipped > 0 {
                bar.set_message(format!("{skipped} skipped"));
            }
        })?;
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    for s in &skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    eprintln!(
        "indexed {} images ({} skipped) in {secs:.1}s ({:.1} images/s)",
        index.images.len(),
        skipped.len(),
        index.images.len() as f64 / secs.max(1e-9),
    );
    Ok(index)
}

/// An explicit index file for `probe`: it must match the weights and the images and fit the
/// model, or this fails with the reason.
pub fn load_checked(
    model: &zfnet::LoadedModel,
    probe: &Path,
    path: &Path,
) -> anyhow::Result<ProbeIndex> {
    let loaded = load(path)?;
    zfnet::probe::verify(&loaded, &model.weights_sha256, probe)
        .and_then(|()| zfnet::probe::check_bounds(&loaded, &model.net))
        .with_context(|| format!("index {} does not fit", path.display()))?;
    Ok(loaded)
}

/// Images per resumable part of a probe index build.
const PART: usize = 256;

/// The index of `probe` for `model`: loaded from `cache` if one there matches the weights and the
/// images, otherwise built and saved there. The build goes in parts of [`PART`] images, each
/// saved as it finishes, so a build that is killed resumes from its last part; the parts are
/// merged into exactly the index a single pass gives. `progress(done, total)` follows it.
pub fn probe_index(
    model: &zfnet::LoadedModel,
    probe: &Path,
    cache: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<ProbeIndex> {
    use sha2::{Digest, Sha256};
    let key = {
        let root = probe.canonicalize().unwrap_or_else(|_| probe.to_path_buf());
        let h = hex::encode(Sha256::digest(root.display().to_string().as_bytes()));
        format!(
            "index-{}-{}-p{}",
            &model.weights_sha256[..16],
            &h[..12],
            zfnet::preprocess::PIPELINE_VERSION
        )
    };
    let path = cache.join(format!("{key}.json"));
    if path.exists() {
        match load(&path).and_then(|i| {
            zfnet::probe::verify(&i, &model.weights_sha256, probe)?;
            zfnet::probe::check_bounds(&i, &model.net)?;
            Ok(i)
        }) {
            Ok(index) => {
                eprintln!(
                    "probe index: {} ({} images, cached)",
                    path.display(),
                    index.images.len()
                );
                progress(index.images.len(), index.images.len());
                return Ok(index);
            }
            Err(e) => eprintln!("cached probe index is stale ({e:#}); rebuilding"),
        }
    }
    let files = zfnet::probe::list_images(probe)?;
    if files.is_empty() {
        bail!("no JPEG, PNG or WebP images under {}", probe.display());
    }
    let total = files.len();
    eprintln!(
        "building the probe index of {} ({total} images) for this model, once; later starts reuse {}",
        probe.display(),
        path.display()
    );
    let parts_dir = cache.join(format!("{key}.parts"));
    let started = std::time::Instant::now();
    let mut parts = Vec::new();
    let mut done = 0;
    for (i, chunk) in files.chunks(PART).enumerate() {
        // a part is named by the files it covers: if the folder changes, it is not reused
        let names: Vec<String> = chunk
            .iter()
            .map(|f| zfnet::probe::relative(probe, f))
            .collect();
        let h = hex::encode(Sha256::digest(names.join("\n").as_bytes()));
        let part_path = parts_dir.join(format!("{i:05}-{}.json", &h[..16]));
        let reused = load(&part_path).ok().filter(|part| {
            zfnet::probe::verify(part, &model.weights_sha256, probe).is_ok()
                && zfnet::probe::check_bounds(part, &model.net).is_ok()
        });
        let part = match reused {
            Some(part) => part,
            None => {
                let before = done;
                let (part, skipped) =
                    zfnet::probe::build_index(model, probe, chunk, 9, 16, |n, _| {
                        progress(before + n, total)
                    })?;
                for s in &skipped {
                    eprintln!("skipped {}: {}", s.path, s.reason);
                }
                save(&part, &part_path)?;
                part
            }
        };
        done += chunk.len();
        progress(done, total);
        if (done * 10 / total) != ((done - chunk.len()) * 10 / total) {
            eprintln!("indexed {done}/{total} images");
        }
        parts.push(part);
    }
    let index = ProbeIndex::merge(&parts).map_err(|e| anyhow::anyhow!("merging the parts: {e}"))?;
    save(&index, &path)?;
    let _ = std::fs::remove_dir_all(&parts_dir);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "indexed {} images in {secs:.1}s ({:.1} images/s)",
        index.images.len(),
        index.images.len() as f64 / secs.max(1e-9)
    );
    Ok(index)
}

fn merge(parts: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    if parts.is_empty() {
        bail!("give the partial indexes to merge");
    }
    let loaded = parts
        .iter()
        .map(|p| load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let merged = ProbeIndex::merge(&loaded).map_err(|e| anyhow::anyhow!("cannot merge: {e}"))?;
    save(&merged, out)?;
    eprintln!(
        "merged {} parts: {} images → {}",
        parts.len(),
        merged.images.len(),
        out.display()
    );
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<ProbeIndex> {
    let bytes = std::fs::read(path).with_context(|| format!("reading index {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a zfvis index", path.display()))
}

/// Writes atomically: a crash leaves the old file or the new one, never half of one.
fn save(index: &ProbeIndex, out: &Path) -> anyhow::Result<()> {
    zfnet::fsutil::write_atomic(out, &serde_json::to_vec(index)?)?;
    Ok(())
}
