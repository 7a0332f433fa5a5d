//! The probe set behind top-9 views: its index, its folder, and a disk cache of the hits' patches
//! and reconstructions keyed by (weights hash, image hash, layer, map).

use crate::error::AppError;
use crate::state::AppState;
use axum::http::StatusCode;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zfnet::model::CONV_NAMES;
use zfnet::topk::{Hit, ProbeIndex};

pub struct ProbeSet {
    pub index: ProbeIndex,
    pub root: PathBuf,
    /// `<cache>/pictures/<weights hash prefix>/`.
    pub picture_dir: PathBuf,
    /// Per probe image: the class label of its folder, if it names one of the model's classes.
    pub labels: Vec<Option<String>>,
    pub name: String,
}

/// Which picture of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    Patch,
    Reconstruction,
}

impl Picture {
    pub fn parse(s: &str) -> Option<Picture> {
        match s {
            "patch.png" => Some(Picture::Patch),
            "reconstruction.png" => Some(Picture::Reconstruction),
            _ => None,
        }
    }
}

impl ProbeSet {
    pub fn new(
        index: ProbeIndex,
        root: PathBuf,
        cache_dir: &Path,
        model: &zfnet::LoadedModel,
    ) -> ProbeSet {
        let classes = &model.manifest.classes;
        let labels = index
            .images
            .iter()
            .map(|img| {
                let folder = img.path.rsplit_once('/').map(|(dir, _)| dir)?;
                let folder = folder.rsplit('/').next()?;
                classes
                    .iter()
                    .find(|c| c.wnid == folder || c.label == folder)
                    .map(|c| c.label.clone())
            })
            .collect();
        let name = root
            .canonicalize()
            .unwrap_or_else(|_| root.clone())
            .components()
            .rev()
            .take(2)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("/");
        ProbeSet {
            picture_dir: cache_dir
                .join("pictures")
                .join(&model.weights_sha256[..16.min(model.weights_sha256.len())]),
            index,
            root,
            labels,
            name,
        }
    }

    pub fn hits(&self, layer: usize, map: usize) -> Result<&[Hit], AppError> {
        let maps = &self.index.layers[layer].hits;
        maps.get(map).map(|h| h.as_slice()).ok_or_else(|| {
            AppError::new(
                StatusCode::NOT_FOUND,
                "map_out_of_range",
                format!(
                    "{} has {} feature maps (0…{}); there is no map {map}",
                    CONV_NAMES[layer],
                    maps.len(),
                    maps.len().saturating_sub(1)
                ),
            )
        })
    }

    pub fn picture_path(&self, hit: &Hit, layer: usize, map: usize, picture: Picture) -> PathBuf {
        let image = &self.index.images[hit.image as usize].sha256;
        let kind = match picture {
            Picture::Patch => "patch",
            Picture::Reconstruction => "reconstruction",
        };
        self.picture_dir.join(format!(
            "{}-{}-{map}-{}x{}-{kind}.png",
            &image[..16.min(image.len())],
            CONV_NAMES[layer],
            hit.x,
            hit.y
        ))
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Makes sure every hit of (layer, map) has its patch and reconstruction on disk, computing the
/// missing ones in one batch.
pub async fn ensure_pictures(
    state: &Arc<AppState>,
    layer: usize,
    map: usize,
) -> Result<(), AppError> {
    let probes = state.probes()?;
    let hits = probes.hits(layer, map)?;
    let missing: Vec<Hit> = hits
        .iter()
        .filter(|h| {
            !probes.picture_path(h, layer, map, Picture::Patch).exists()
                || !probes
                    .picture_path(h, layer, map, Picture::Reconstruction)
                    .exists()
        })
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let state2 = state.clone();
    state
        .run_blocking(move |model| {
            let probes = state2.probes()?;
            let pictures = zfnet::probe::hit_pictures(
                model,
                &probes.root,
                &probes.index,
                layer,
                map,
                &missing,
            )?;
            for (hit, pics) in missing.iter().zip(pictures) {
                for (kind, img) in [
                    (Picture::Patch, &pics.patch),
                    (Picture::Reconstruction, &pics.reconstruction),
                ] {
                    let path = probes.picture_path(hit, layer, map, kind);
                    write_atomic(&path, &zfnet::render::png(img)).map_err(|e| {
                        AppError::internal(format!("writing {}: {e}", path.display()))
                    })?;
                }
            }
            Ok(())
        })
        .await
}
