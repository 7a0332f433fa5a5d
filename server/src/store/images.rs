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
    pngs: BytesCache,
}

/// PNGs kept (projections cost a few hundred ms; activation maps and patches are cheap).
const CACHED_PNGS: usize = 512;

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

/// A bounded LRU of encoded results (PNG pictures, JSON analyses) by key.
pub struct BytesCache(Mutex<LruCache<String, Arc<Vec<u8>>>>);

impl BytesCache {
    pub fn new(capacity: usize) -> Self {
        BytesCache(Mutex::new(LruCache::new(cap(capacity))))
    }

    pub fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: String, bytes: Arc<Vec<u8>>) {
        if let Ok(mut cache) = self.0.lock() {
            cache.put(key, bytes);
        }
    }
}

impl ImageStore {
    pub fn new(capacity: usize) -> Self {
        ImageStore {
            images: Mutex::new(LruCache::new(cap(capacity))),
            pngs: BytesCache::new(CACHED_PNGS),
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
        self.pngs.get(key)
    }

    pub fn put_png(&self, key: String, png: Arc<Vec<u8>>) {
        self.pngs.put(key, png)
    }
}

/// The id of an upload: its full SHA-256, in hex. Every cache keyed by it (traces, pictures,
/// sweeps) uses all of it, so two different uploads never share an entry.
pub fn content_id(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}
