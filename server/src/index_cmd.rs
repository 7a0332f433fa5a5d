//! `zfvis index`: top-9 activations of every map over a probe folder; `zfvis index merge`.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use zfnet::topk::ProbeIndex;

/// `i/n` with `i < n`.
pub fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
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

pub fn build(
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

/// The index of `probe` for `model`: loaded from `cache` if one there matches the weights and the
/// images, otherwise built (with a progress bar) and saved there. An explicit `index` file must
/// match, or this fails with the reason.
pub fn probe_index(
    model: &zfnet::LoadedModel,
    probe: &Path,
    index: Option<&Path>,
    cache: &Path,
) -> anyhow::Result<ProbeIndex> {
    if let Some(path) = index {
        let loaded = load(path)?;
        zfnet::probe::verify(&loaded, &model.weights_sha256, probe)
            .with_context(|| format!("index {} does not fit", path.display()))?;
        return Ok(loaded);
    }
    let key = {
        use sha2::{Digest, Sha256};
        let root = probe.canonicalize().unwrap_or_else(|_| probe.to_path_buf());
        let h = hex::encode(Sha256::digest(root.display().to_string().as_bytes()));
        format!("index-{}-{}.json", &model.weights_sha256[..16], &h[..12])
    };
    let path = cache.join(key);
    if path.exists() {
        match load(&path).and_then(|i| {
            zfnet::probe::verify(&i, &model.weights_sha256, probe)?;
            Ok(i)
        }) {
            Ok(index) => {
                eprintln!(
                    "probe index: {} ({} images, cached)",
                    path.display(),
                    index.images.len()
                );
                return Ok(index);
            }
            Err(e) => eprintln!("cached probe index is stale ({e:#}); rebuilding"),
        }
    }
    let files = zfnet::probe::list_images(probe)?;
    if files.is_empty() {
        bail!("no JPEG, PNG or WebP images under {}", probe.display());
    }
    eprintln!(
        "building the probe index of {} ({} images) for this model, once; later starts reuse {}",
        probe.display(),
        files.len(),
        path.display()
    );
    let index = index_with_bar(model, probe, &files, 9, 16)?;
    save(&index, &path)?;
    Ok(index)
}

pub fn merge(parts: &[PathBuf], out: &Path) -> anyhow::Result<()> {
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
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_vec(index)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
