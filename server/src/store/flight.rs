//! Single flight: identical work asked for at the same time is done once.
//!
//! A class opening the same map at the same moment would otherwise render its top-9 pictures
//! (or the same projection) once per student, each in its own model slot (measured before: 4
//! identical top-9 requests × 12 maps took 51.8 s against 0.9 s per map alone). Callers take the
//! key's turn, then look in their cache again: the first caller computes, the others find its
//! result there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct Flights {
    keys: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// The turn of one key; dropping it lets the next waiter in (and forgets idle keys).
pub struct Turn<'a> {
    flights: &'a Flights,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    /// Waits until no one else holds `key`'s turn, then holds it.
    pub async fn turn(&self, key: &str) -> Turn<'_> {
        let lock = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Turn {
            flights: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// Keys someone holds or waits for (for tests).
    pub fn busy(&self) -> usize {
        self.keys.lock().map(|k| k.len()).unwrap_or(0)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut keys = self.flights.keys.lock().unwrap_or_else(|p| p.into_inner());
        // only the map and this turn's lock itself still hold it: nobody waits
        if keys
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Eight identical requests at once compute once; the others find the result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn identical_work_at_once_runs_once() {
        let flights = Arc::new(Flights::default());
        let cache = Arc::new(Mutex::new(None::<u32>));
        let computed = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (flights, cache, computed) = (flights.clone(), cache.clone(), computed.clone());
                tokio::spawn(async move {
                    let _turn = flights.turn("conv5/7").await;
                    if let Some(v) = *cache.lock().unwrap() {
                        return v;
                    }
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    *cache.lock().unwrap() = Some(42);
                    42
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert_eq!(flights.busy(), 0, "idle keys are forgotten");
    }
}
