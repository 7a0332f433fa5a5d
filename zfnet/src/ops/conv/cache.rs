//! Weights rearranged for a kernel (Winograd's transform, the direct kernel's packing), kept so
//! that a served model's layers are rearranged once (conv4's 2.4 M values took longer to
//! transform than its batch-1 GEMMs).
//!
//! A tensor that is not a variable never changes, so its entry is found by its [`TensorId`] at no
//! cost. A variable (training) changes in place at every step, so it is found by a fingerprint of
//! its contents, which reads every weight: at batch 1 that read had cost as much as the
//! convolution's own pass over the weights.

use candle_core::TensorId;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Which rearrangement an entry holds (one weight tensor may be cached by both kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Winograd,
    Direct,
}

/// How an entry is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A tensor that never changes (not a variable): its identity.
    Tensor(TensorId),
    /// Weights that may change in place: a fingerprint of their contents, taken at each call.
    Contents,
}

impl Key {
    /// How `weight`'s rearranged forms are found: by id for a contiguous tensor that is not a
    /// variable (it never changes; a non-contiguous one is copied, under a new id, at every
    /// call), by contents otherwise.
    pub(crate) fn of(weight: &candle_core::Tensor) -> Key {
        if weight.is_variable() || !weight.is_contiguous() {
            Key::Contents
        } else {
            Key::Tensor(weight.id())
        }
    }
}

/// What an entry is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Tensor(TensorId),
    Fingerprint(u64),
}

/// (kind, key, length, rearranged weights) of the last few weight tensors seen.
type Entry = (Kind, Found, usize, Arc<Vec<f32>>);
static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Two kinds for each of a few models' five conv layers.
const ENTRIES: usize = 16;

/// A 64-bit fingerprint of the weights' bits: 8 independent multiply-xor lanes per chunk (a
/// single chain would cost conv4 1.7 ms of multiply latency), chunks in parallel, combined in
/// order.
fn fingerprint(weight: &[f32]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let parts: Vec<u64> = weight
        .par_chunks(1 << 14)
        .map(|chunk| {
            let mut lanes = [0u64; 8];
            for group in chunk.chunks(8) {
                for (l, v) in lanes.iter_mut().zip(group) {
                    *l = (l.rotate_left(5) ^ v.to_bits() as u64).wrapping_mul(K);
                }
            }
            lanes
                .iter()
                .fold(0u64, |h, l| (h.rotate_left(7) ^ l).wrapping_mul(K))
        })
        .collect();
    parts.iter().fold(weight.len() as u64, |h, p| {
        (h.rotate_left(11) ^ p).wrapping_mul(K)
    })
}

/// `make(weight)`, from the cache when these weights were rearranged this way before.
pub(super) fn rearranged(
    kind: Kind,
    key: Key,
    weight: &[f32],
    make: impl FnOnce(&[f32]) -> Vec<f32>,
) -> Arc<Vec<f32>> {
    let key = match key {
        Key::Tensor(id) => Found::Tensor(id),
        Key::Contents => Found::Fingerprint(fingerprint(weight)),
    };
    let hit = CACHE.lock().ok().and_then(|c| {
        c.iter()
            .find(|(k, f, len, _)| *k == kind && *f == key && *len == weight.len())
            .map(|(_, _, _, u)| u.clone())
    });
    if let Some(u) = hit {
        return u;
    }
    let u = Arc::new(make(weight));
    if let Ok(mut c) = CACHE.lock() {
        if c.len() == ENTRIES {
            c.remove(0);
        }
        c.push((kind, key, weight.len(), u.clone()));
    }
    u
}
