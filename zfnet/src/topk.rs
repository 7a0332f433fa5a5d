//! Running top-k activations per feature map over a probe set (the paper's Fig. 2).
//!
//! For every map of conv1–conv5 the index keeps the `k` strongest activations seen so far, at most
//! one per image (each image offers only its map's maximum, as DeepVis does). Memory is
//! O(maps × k) whatever the number of images. Order is total and deterministic (value descending,
//! then image path ascending), so merging shard results gives exactly the single-run index.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One strong activation: its value, the probe image (index into [`ProbeIndex::images`]) and the
/// unit's position in the map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub value: f32,
    pub image: u32,
    pub y: u16,
    pub x: u16,
}

/// A probe image as the index records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeImage {
    /// Path relative to the probe root, `/`-separated.
    pub path: String,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// The top-k hits of every map of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTopK {
    pub name: String,
    /// `hits[map]`, strongest first, at most `k`.
    pub hits: Vec<Vec<Hit>>,
}

/// Running top-k of a fixed number of maps. Keep one per layer.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    maps: Vec<Vec<Hit>>,
}

impl TopK {
    pub fn new(maps: usize, k: usize) -> TopK {
        TopK {
            k,
            maps: vec![Vec::with_capacity(k + 1); maps],
        }
    }

    /// Offers `hit` to `map`; `paths` orders ties.
    pub fn offer(&mut self, map: usize, hit: Hit, paths: &[ProbeImage]) {
        let list = &mut self.maps[map];
        if list.len() == self.k {
            if let Some(last) = list.last() {
                if order(&hit, last, paths) != Ordering::Less {
                    return;
                }
            }
        }
        let at = list.partition_point(|h| order(h, &hit, paths) == Ordering::Less);
        list.insert(at, hit);
        list.truncate(self.k);
    }

    /// Offers each image's maximum of every map of one layer's activations, `[n, c, h, w]` as a
    /// flat slice, for the images `first_image..first_image + n`.
    pub fn offer_batch(
        &mut self,
        data: &[f32],
        dims: [usize; 4],
        first_image: u32,
        paths: &[ProbeImage],
    ) {
        let [n, c, h, w] = dims;
        debug_assert_eq!(c, self.maps.len());
        for i in 0..n {
            for m in 0..c {
                let plane = &data[(i * c + m) * h * w..][..h * w];
                let (best, value) = crate::ops::argmax(plane);
                let hit = Hit {
                    value,
                    image: first_image + i as u32,
                    y: (best / w) as u16,
                    x: (best % w) as u16,
                };
                self.offer(m, hit, paths);
            }
        }
    }

    pub fn into_hits(self) -> Vec<Vec<Hit>> {
        self.maps
    }
}

/// Strongest first; equal values ordered by image path, then position.
fn order(a: &Hit, b: &Hit, paths: &[ProbeImage]) -> Ordering {
    b.value
        .total_cmp(&a.value)
        .then_with(|| {
            paths[a.image as usize]
                .path
                .cmp(&paths[b.image as usize].path)
        })
        .then_with(|| (a.y, a.x).cmp(&(b.y, b.x)))
}

/// A finished index: what was indexed, with which weights, and the hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeIndex {
    pub format: u32,
    /// Hex SHA-256 of the weights file the index was built with.
    pub weights_sha256: String,
    pub k: usize,
    /// Sorted by path.
    pub images: Vec<ProbeImage>,
    pub layers: Vec<LayerTopK>,
}

impl ProbeIndex {
    /// Combines indexes of disjoint (or overlapping) image sets built with the same weights into the
    /// index a single run over their union would give.
    pub fn merge(parts: &[ProbeIndex]) -> crate::Result<ProbeIndex> {
        let bad = |m: String| crate::Error::Index(m);
        let first = parts
            .first()
            .ok_or_else(|| bad("nothing to merge".into()))?;
        for p in parts {
            if p.weights_sha256 != first.weights_sha256 {
                return Err(bad(format!(
                    "indexes built with different weights ({} vs {})",
                    &p.weights_sha256[..12.min(p.weights_sha256.len())],
                    &first.weights_sha256[..12.min(first.weights_sha256.len())]
                )));
            }
            if p.k != first.k || p.layers.len() != first.layers.len() {
                return Err(bad("indexes differ in k or layers".into()));
            }
        }
        let mut images: Vec<ProbeImage> = parts
            .iter()
            .flat_map(|p| p.images.iter().cloned())
            .collect();
        images.sort_by(|a, b| a.path.cmp(&b.path));
        images.dedup_by(|a, b| a.path == b.path);
        let position = |path: &str| images.binary_search_by(|i| i.path.as_str().cmp(path)).ok();
        let mut layers = Vec::new();
        for (l, layer) in first.layers.iter().enumerate() {
            let maps = layer.hits.len();
            let mut top = TopK::new(maps, first.k);
            for p in parts {
                let other = &p.layers[l];
                if other.hits.len() != maps || other.name != layer.name {
                    return Err(bad(format!("layer {} differs between indexes", layer.name)));
                }
                for (m, hits) in other.hits.iter().enumerate() {
                    for h in hits {
                        let unknown = || bad("hit refers to an unknown image".into());
                        let path = &p.images.get(h.image as usize).ok_or_else(unknown)?.path;
                        let image = position(path).ok_or_else(unknown)? as u32;
                        let hit = Hit { image, ..*h };
                        if !top.maps[m].contains(&hit) {
                            top.offer(m, hit, &images);
                        }
                    }
                }
            }
            layers.push(LayerTopK {
                name: layer.name.clone(),
                hits: top.into_hits(),
            });
        }
        Ok(ProbeIndex {
            format: 1,
            weights_sha256: first.weights_sha256.clone(),
            k: first.k,
            images,
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Vec<ProbeImage> {
        (0..n)
            .map(|i| ProbeImage {
                path: format!("img{i:03}.jpg"),
                sha256: String::new(),
            })
            .collect()
    }

    #[test]
    fn keeps_the_k_strongest_in_order() {
        let paths = images(20);
        let mut top = TopK::new(1, 3);
        for (i, v) in [0.5f32, 2.0, 1.0, 3.0, 2.0, 0.1].iter().enumerate() {
            top.offer(
                0,
                Hit {
                    value: *v,
                    image: i as u32,
                    y: 0,
                    x: 0,
                },
                &paths,
            );
        }
        let hits = top.into_hits().remove(0);
        let got: Vec<(f32, u32)> = hits.iter().map(|h| (h.value, h.image)).collect();
        // the tie at 2.0 is ordered by path: img001 before img004
        assert_eq!(got, [(3.0, 3), (2.0, 1), (2.0, 4)]);
    }

    #[test]
    fn offer_batch_takes_each_images_maximum_and_position() {
        let paths = images(2);
        let mut top = TopK::new(2, 9);
        // 2 images, 2 maps, 2×2
        let data = [
            0., 1., 5., 2., /* */ 7., 0., 0., 0., /* img 1 */ 3., 0., 0., 0.,
            /* */ 0., 0., 0., 9.,
        ];
        top.offer_batch(&data, [2, 2, 2, 2], 0, &paths);
        let hits = top.into_hits();
        assert_eq!(
            hits[0][0],
            Hit {
                value: 5.0,
                image: 0,
                y: 1,
                x: 0
            }
        );
        assert_eq!(
            hits[0][1],
            Hit {
                value: 3.0,
                image: 1,
                y: 0,
                x: 0
            }
        );
        assert_eq!(
            hits[1][0],
            Hit {
                value: 9.0,
                image: 1,
                y: 1,
                x: 1
            }
        );
        assert_eq!(hits[1].len(), 2, "one hit per image per map");
    }
}
