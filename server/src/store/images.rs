//! Uploaded images and their forward traces, kept in a bounded LRU cache and referred to by a
//! content hash; plus a small cache of rendered PNGs.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use zfnet::Trace;
use zfvis_api::ImageResponse;

#[derive(Clone)]
pub struct StoredImage {
    pub trace: Trace,
    pub crop: image::RgbImage,
    pub response: ImageResponse,
}

pub struct ImageStore {
    images: Mutex<LruCache<String, Arc<StoredImage>>>,
    pngs: Mutex<LruCache<String, Arc<Vec<u8>>>>,
}

/// PNGs kept (projections cost a few hundred ms; activation maps and patches are cheap).
const CACHED_PNGS: usize = 512;

impl ImageStore {
    pub fn new(capacity: usize) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        ImageStore {
            images: Mutex::new(LruCache::new(cap(capacity))),
            pngs: Mutex::new(LruCache::new(cap(CACHED_PNGS))),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<StoredImage>> {
        self.images.lock().ok()?.get(id).cloned()
    }

    pub fn insert(&self, id: String, image: Arc<StoredImage>) {
        if let Ok(mut images) = self.images.lock() {
            images.put(id, image);
        }
    }

    pub fn png(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.pngs.lock().ok()?.get(key).cloned()
    }

    pub fn put_png(&self, key: String, png: Arc<Vec<u8>>) {
        if let Ok(mut pngs) = self.pngs.lock() {
            pngs.put(key, png);
        }
    }
}

/// The id of an upload: its full SHA-256, in hex. Every cache keyed by it (traces, pictures,
/// sweeps) uses all of it, so two different uploads never share an entry.
pub fn content_id(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
