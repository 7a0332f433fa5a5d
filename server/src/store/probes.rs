//! The probe set behind top-9 views: its index, its folder, and a disk cache of the hits' patches
//! and reconstructions keyed by (weights hash, image hash, layer, map).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
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
            picture_dir: cache_dir.join("pictures").join(format!(
                "{}-p{}",
                model.weights_sha256,
                zfnet::preprocess::PIPELINE_VERSION
            )),
            index,
            root,
            labels,
            name,
        }
    }

    pub fn hits(&self, layer: usize, map: usize) -> zfnet::Result<&[Hit]> {
        let maps = &self.index.layers[layer].hits;
        maps.get(map)
            .map(|h| h.as_slice())
            .ok_or(zfnet::Error::MapOutOfRange {
                layer: CONV_NAMES[layer],
                maps: maps.len(),
                map,
            })
    }

    /// The picture at `path` if it is on disk and whole (a file cut short by a crash is not).
    pub fn read_picture(path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path)
            .ok()
            .filter(|b| zfnet::render::is_whole_png(b))
    }

    /// Whether the file at `path` is a whole PNG, from its first 8 and last 12 bytes only (the
    /// top-9 answer checks 18 files on every request; the bytes are read when a picture is served).
    fn is_whole_on_disk(path: &Path) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let ends = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(path)?;
            let mut bytes = vec![0u8; 8];
            f.read_exact(&mut bytes)?;
            let mut tail = [0u8; 12];
            f.seek(SeekFrom::End(-12))?;
            f.read_exact(&mut tail)?;
            if f.metadata()?.len() <= 20 {
                return Ok(Vec::new());
            }
            // a stand-in with the file's real ends, for the one definition of "whole"
            bytes.extend_from_slice(&[0; 1]);
            bytes.extend_from_slice(&tail);
            Ok(bytes)
        };
        ends().is_ok_and(|b| zfnet::render::is_whole_png(&b))
    }

    /// The hits among the `first` of (layer, map) whose patch or reconstruction is not on disk
    /// yet (or not whole).
    pub fn missing_pictures(
        &self,
        layer: usize,
        map: usize,
        first: usize,
    ) -> zfnet::Result<Vec<Hit>> {
        Ok(self
            .hits(layer, map)?
            .iter()
            .take(first)
            .filter(|h| {
                [Picture::Patch, Picture::Reconstruction]
                    .iter()
                    .any(|&kind| !Self::is_whole_on_disk(&self.picture_path(h, layer, map, kind)))
            })
            .copied()
            .collect())
    }

    /// Computes the pictures of `hits` of (layer, map) in one batch and writes them to disk.
    pub fn render_pictures(
        &self,
        model: &zfnet::LoadedModel,
        layer: usize,
        map: usize,
        hits: &[Hit],
    ) -> zfnet::Result<()> {
        let pictures =
            zfnet::probe::hit_pictures(model, &self.root, &self.index, layer, map, hits)?;
        for (hit, pics) in hits.iter().zip(pictures) {
            for (kind, img) in [
                (Picture::Patch, &pics.patch),
                (Picture::Reconstruction, &pics.reconstruction),
            ] {
                let path = self.picture_path(hit, layer, map, kind);
                zfnet::fsutil::write_atomic(&path, &zfnet::render::png(img))?;
            }
        }
        Ok(())
    }

    pub fn picture_path(&self, hit: &Hit, layer: usize, map: usize, picture: Picture) -> PathBuf {
        let image = &self.index.images[hit.image as usize].sha256;
        let kind = match picture {
            Picture::Patch => "patch",
            Picture::Reconstruction => "reconstruction",
        };
        self.picture_dir.join(format!(
            "{}-{}-{map}-{}x{}-{kind}.png",
            image, CONV_NAMES[layer], hit.x, hit.y
        ))
    }
}

/// Where the probe set stands: the server binds first and builds (or loads) the index in the
/// background, so clients can connect, and see the progress, at once.
#[derive(Clone)]
pub enum ProbeState {
    Building { done: usize, total: usize },
    Ready(Arc<ProbeSet>),
    Failed(String),
}

/// The probe set of a server started with `--probe` (`None` inside: started without).
#[derive(Default)]
pub struct ProbeSlot(RwLock<Option<ProbeState>>);

impl ProbeSlot {
    pub fn set(&self, state: ProbeState) {
        if let Ok(mut s) = self.0.write() {
            *s = Some(state);
        }
    }

    pub fn get(&self) -> Option<ProbeState> {
        self.0.read().ok()?.clone()
    }
}
