//! Building a [`ProbeIndex`]: walk a folder of images, run batched traced forwards, keep the
//! top-k activations of every map. Unreadable files are reported and skipped, never fatal.

use crate::model::CONV_NAMES;
use crate::topk::{LayerTopK, ProbeImage, ProbeIndex, TopK};
use crate::{Error, LoadedModel, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Image files under `root` (recursively, JPEG/PNG/WebP by extension), sorted by relative path.
pub fn list_images(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(Error::Index(format!(
            "probe folder {} does not exist or is not a folder",
            root.display()
        )));
    }
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort_by_key(|p| relative(root, p));
    Ok(files)
}

/// `path` relative to `root`, `/`-separated.
pub fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The `i`-th of `n` deterministic slices of `files` (every n-th file from i).
pub fn shard(files: Vec<PathBuf>, i: usize, n: usize) -> Vec<PathBuf> {
    files
        .into_iter()
        .enumerate()
        .filter(|(j, _)| j % n == i)
        .map(|(_, p)| p)
        .collect()
}

/// A file that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

struct Loaded {
    image: ProbeImage,
    input: Vec<f32>,
}

fn load(root: &Path, path: &Path, model: &LoadedModel) -> std::result::Result<Loaded, Skipped> {
    let rel = relative(root, path);
    let skip = |reason: String| Skipped {
        path: rel.clone(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| skip(e.to_string()))?;
    let prepared = crate::preprocess::prepare(&bytes, &model.manifest.preprocess)
        .map_err(|e| skip(e.to_string()))?;
    Ok(Loaded {
        image: ProbeImage {
            path: rel.clone(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        },
        input: prepared.data,
    })
}

/// Indexes `files` (under `root`) in batches of `batch`, calling `progress(done, skipped)` after
/// each batch.
pub fn build_index(
    model: &LoadedModel,
    root: &Path,
    files: &[PathBuf],
    k: usize,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(ProbeIndex, Vec<Skipped>)> {
    let net = &model.net;
    let mut tops: Vec<TopK> = net.channels().iter().map(|&c| TopK::new(c, k)).collect();
    let mut images: Vec<ProbeImage> = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    let mut done = 0;
    for chunk in files.chunks(batch.max(1)) {
        let loaded: Vec<_> = chunk.par_iter().map(|p| load(root, p, model)).collect();
        let mut inputs = Vec::new();
        let first = images.len() as u32;
        for item in loaded {
            match item {
                Ok(l) => {
                    inputs.extend_from_slice(&l.input);
                    images.push(l.image);
                }
                Err(s) => {
                    tracing::warn!(path = %s.path, reason = %s.reason, "skipping unreadable probe image");
                    skipped.push(s);
                }
            }
        }
        let n = images.len() - first as usize;
        if n > 0 {
            let side = crate::arch::INPUT_SIZE;
            let x = Tensor::from_vec(inputs, (n, 3, side, side), net.device())?;
            // the conv layers are all the index needs (and all a snapshot may have)
            let trace = net.forward_trace_through(&x, 4)?;
            for (top, layer) in tops.iter_mut().zip(&trace.convs) {
                let dims = layer.activation.dims4()?;
                let data = layer
                    .activation
                    .flatten_all()?
                    .to_device(&Device::Cpu)?
                    .to_vec1::<f32>()?;
                top.offer_batch(&data, [dims.0, dims.1, dims.2, dims.3], first, &images);
            }
        }
        done += chunk.len();
        progress(done, skipped.len());
    }
    // Images are in path order already (files were sorted), so hit indices stay valid.
    let layers = tops
        .into_iter()
        .zip(CONV_NAMES)
        .map(|(t, name)| LayerTopK {
            name: name.into(),
            hits: t.into_hits(),
        })
        .collect();
    Ok((
        ProbeIndex {
            format: 1,
            weights_sha256: model.weights_sha256.clone(),
            k,
            images,
            layers,
        },
        skipped,
    ))
}

/// Checks that every entry of `index` fits `net`: one layer per conv layer, one list per map,
/// image numbers within the image list, units within the map, finite values. A server trusts
/// what passes this, so a damaged or hand-edited index is refused here, not in a handler.
pub fn check_bounds(index: &ProbeIndex, net: &crate::ZfNet) -> Result<()> {
    let bad = |m: String| {
        Err(Error::Index(format!(
            "the index does not fit the model: {m}"
        )))
    };
    if index.layers.len() != net.convs.len() {
        return bad(format!(
            "{} layers, the model has {}",
            index.layers.len(),
            net.convs.len()
        ));
    }
    let sizes = net.layout.spatial_sizes();
    for (l, (layer, conv)) in index.layers.iter().zip(&net.convs).enumerate() {
        let side = sizes[l].0;
        if layer.hits.len() != conv.out_channels() {
            return bad(format!(
                "{} has {} maps, the model's has {}",
                layer.name,
                layer.hits.len(),
                conv.out_channels()
            ));
        }
        for (map, hits) in layer.hits.iter().enumerate() {
            if hits.len() > index.k {
                return bad(format!(
                    "{} map {map} has more than k = {} entries",
                    layer.name, index.k
                ));
            }
            for h in hits {
                if h.image as usize >= index.images.len()
                    || h.x as usize >= side
                    || h.y as usize >= side
                    || !h.value.is_finite()
                {
                    return bad(format!(
                        "{} map {map} has an entry out of range ({h:?})",
                        layer.name
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks that `index` belongs to the weights with hash `weights_sha256` and that every probe
/// image under `root` is still the file that was indexed.
pub fn verify(index: &ProbeIndex, weights_sha256: &str, root: &Path) -> Result<()> {
    if index.weights_sha256 != weights_sha256 {
        return Err(Error::Index(format!(
            "the index was built for other weights (sha256 {}…, the model is {}…): rebuild it with `zfvis index`",
            &index.weights_sha256[..12.min(index.weights_sha256.len())],
            &weights_sha256[..12.min(weights_sha256.len())]
        )));
    }
    let changed: Vec<&str> = index
        .images
        .par_iter()
        .filter(|img| {
            std::fs::read(root.join(&img.path))
                .map(|bytes| hex::encode(Sha256::digest(&bytes)) != img.sha256)
                .unwrap_or(true)
        })
        .map(|img| img.path.as_str())
        .collect();
    if let Some(first) = changed.first() {
        return Err(Error::Index(format!(
            "{} of the {} indexed probe images under {} are missing or changed (first: {first}): rebuild the index",
            changed.len(),
            index.images.len(),
            root.display()
        )));
    }
    Ok(())
}

/// The pictures of one top-k hit: the input patch under the unit's receptive field and the
/// single-unit deconvnet reconstruction of that patch (same rendering as an uploaded image's).
pub struct HitPictures {
    pub patch: image::RgbImage,
    pub reconstruction: image::RgbImage,
}

/// Patches and reconstructions of `hits` (of map `map` of conv layer `layer`), computed in one
/// batch: one traced forward of the hits' images, one projection with one unit per image.
pub fn hit_pictures(
    model: &LoadedModel,
    root: &Path,
    index: &ProbeIndex,
    layer: usize,
    map: usize,
    hits: &[crate::topk::Hit],
) -> Result<Vec<HitPictures>> {
    if hits.is_empty() {
        return Ok(Vec::new());
    }
    let prepared = hits
        .par_iter()
        .map(|hit| {
            let image = index.images.get(hit.image as usize).ok_or_else(|| {
                Error::Index(format!(
                    "hit refers to image {} not in the index",
                    hit.image
                ))
            })?;
            let path = root.join(&image.path);
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            Ok(crate::preprocess::prepare(
                &bytes,
                &model.manifest.preprocess,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let side = crate::arch::INPUT_SIZE;
    let data: Vec<f32> = prepared
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .collect();
    let x = Tensor::from_vec(data, (hits.len(), 3, side, side), model.net.device())?;
    let trace = model.net.forward_trace_through(&x, layer)?;
    let units = hits.iter().map(|h| (h.y as usize, h.x as usize)).collect();
    let projection = crate::deconv::project(
        &model.net,
        &trace,
        layer,
        map,
        &crate::deconv::Selection::Units(units),
    )?;
    let data = crate::views::rgb_host(model, &projection)?;
    let rf = crate::receptive::receptive_field(&model.net.layout, layer);
    let plane = 3 * side * side;
    Ok(hits
        .iter()
        .zip(&prepared)
        .enumerate()
        .map(|(i, (hit, prep))| {
            let region = rf.unit_box(hit.y as usize, hit.x as usize);
            HitPictures {
                patch: crate::render::crop(&prep.crop, region),
                reconstruction: crate::render::projection_image(
                    &data[i * plane..(i + 1) * plane],
                    side,
                    region,
                ),
            }
        })
        .collect())
}
