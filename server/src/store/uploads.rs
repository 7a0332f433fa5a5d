//! Every upload, kept on disk by content id: the 224×224 crop the network saw (lossless PNG) and
//! the answer given for it, so an image id stays valid after its forward trace has left the
//! in-memory cache (16 traces, ~14 MB each) and after a restart. A trace that is gone is computed
//! again from the crop: the same bytes in, the same trace out.
//!
//! Layout: `<cache>/uploads/<first 16 hex digits of the weights' SHA-256>-p<pipeline
//! version>/<id[..2]>/<id>.png` and `.json` (another model's answers, or crops made by another
//! preprocessing pipeline, never mix in). Several replicas that share the folder answer
//! for each other's ids. Writes are atomic (unique temporary file, fsync, rename); a file that does
//! not decode, has the wrong size or names another id is removed and treated as missing. When
//! more than `capacity` uploads are kept, the least recently written go first.

use image::RgbImage;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use zfvis_api::ImageResponse;

pub struct UploadStore {
    dir: Option<PathBuf>,
    side: u32,
    capacity: usize,
    /// Uploads on disk (approximate between prunes).
    count: AtomicUsize,
}

impl UploadStore {
    /// No disk store: ids live as long as their trace stays in memory.
    pub fn none() -> Self {
        UploadStore {
            dir: None,
            side: 0,
            capacity: 0,
            count: AtomicUsize::new(0),
        }
    }

    /// The store under `cache` for a model with these weights and input side.
    pub fn open(cache: &Path, weights_sha256: &str, side: u32, capacity: usize) -> Self {
        // per model and per preprocessing pipeline: a crop made another way is not reused
        let model = weights_sha256.get(..16).unwrap_or(weights_sha256);
        let dir = cache
            .join("uploads")
            .join(format!("{model}-p{}", zfnet::preprocess::PIPELINE_VERSION));
        let count = files(&dir).len();
        UploadStore {
            dir: Some(dir),
            side,
            capacity: capacity.max(1),
            count: AtomicUsize::new(count),
        }
    }

    fn paths(&self, id: &str) -> Option<(PathBuf, PathBuf)> {
        // ids are hex SHA-256 (the extractor checks nothing else reaches here; be safe anyway)
        if id.len() < 3 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let dir = self.dir.as_ref()?.join(&id[..2]);
        Some((
            dir.join(format!("{id}.png")),
            dir.join(format!("{id}.json")),
        ))
    }

    /// Keeps an upload (blocking I/O: call off the async threads). The JSON goes last, so a
    /// reader that finds it finds the picture too.
    pub fn save(&self, crop: &RgbImage, response: &ImageResponse) -> zfnet::Result<()> {
        let Some((png, json)) = self.paths(&response.id) else {
            return Ok(());
        };
        if json.exists() {
            return Ok(());
        }
        zfnet::fsutil::write_atomic(&png, &zfnet::render::png(crop))?;
        let text = serde_json::to_vec(response).map_err(|e| zfnet::Error::Config(e.to_string()))?;
        zfnet::fsutil::write_atomic(&json, &text)?;
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > self.capacity {
            self.prune();
        }
        Ok(())
    }

    /// The crop and answer kept for `id`, if whole and valid (blocking I/O).
    pub fn load(&self, id: &str) -> Option<(RgbImage, ImageResponse)> {
        let (png, json) = self.paths(id)?;
        let text = std::fs::read(&json).ok()?;
        let valid = (|| {
            let response: ImageResponse = serde_json::from_slice(&text).ok()?;
            let crop = image::load_from_memory(&std::fs::read(&png).ok()?)
                .ok()?
                .into_rgb8();
            (response.id == id && crop.dimensions() == (self.side, self.side))
                .then_some((crop, response))
        })();
        if valid.is_none() {
            tracing::warn!("upload {id}: kept files are damaged; removed");
            let _ = std::fs::remove_file(&json);
            let _ = std::fs::remove_file(&png);
        }
        valid
    }

    /// Removes the oldest uploads until a tenth of the capacity is free.
    fn prune(&self) {
        let Some(dir) = &self.dir else { return };
        let mut kept = files(dir);
        let keep = self.capacity - self.capacity / 10;
        if kept.len() <= keep {
            self.count.store(kept.len(), Ordering::Relaxed);
            return;
        }
        kept.sort_by_key(|(_, modified)| *modified);
        let drop = kept.len() - keep;
        for (json, _) in kept.iter().take(drop) {
            let _ = std::fs::remove_file(json);
            let _ = std::fs::remove_file(json.with_extension("png"));
        }
        self.count.store(keep, Ordering::Relaxed);
        tracing::info!("uploads: removed the {drop} oldest (keeping {keep})");
    }
}

/// Every kept upload's JSON file with its modification time.
fn files(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let Ok(shards) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    shards
        .flatten()
        .filter_map(|s| std::fs::read_dir(s.path()).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: &str) -> ImageResponse {
        ImageResponse {
            id: id.into(),
            input_url: format!("/api/images/{id}/input"),
            predictions: Vec::new(),
            trained: true,
            width: 10,
            height: 20,
            source: None,
        }
    }

    #[test]
    fn keeps_checks_and_prunes() {
        let tmp = std::env::temp_dir().join(format!("zfvis-uploads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let store = UploadStore::open(&tmp, "ab12", 4, 10);
        let crop = RgbImage::from_fn(4, 4, |x, y| image::Rgb([x as u8 * 60, y as u8 * 60, 7]));
        let ids: Vec<String> = (0..12)
            .map(|i| format!("{i:02x}{}", "c".repeat(62)))
            .collect();
        store.save(&crop, &response(&ids[0])).unwrap();
        let (back, r) = store.load(&ids[0]).expect("kept");
        assert_eq!(back, crop);
        assert_eq!(r, response(&ids[0]));
        assert!(store.load(&ids[1]).is_none(), "never saved");
        assert!(store.load("../../etc/passwd").is_none(), "not an id");
        // a damaged picture is refused and removed
        let (png, json) = store.paths(&ids[0]).unwrap();
        std::fs::write(&png, b"not a png").unwrap();
        assert!(store.load(&ids[0]).is_none());
        assert!(!json.exists(), "damaged upload removed");
        // over capacity, the oldest go
        for id in &ids {
            store.save(&crop, &response(id)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let left = files(store.dir.as_ref().unwrap()).len();
        assert!(left <= 10, "{left} kept, capacity 10");
        assert!(store.load(&ids[11]).is_some(), "the newest stays");
        assert!(store.load(&ids[0]).is_none(), "the oldest went");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
