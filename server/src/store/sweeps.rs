//! The table of occlusion sweeps, finished or running, keyed by image and parameters. A sweep's
//! state lives in a `watch` channel that the HTTP side follows.
//!
//! Who may stop a sweep: the client that started it (it alone gets the sweep's token), or nobody
//! at all: a sweep that no one has watched (an SSE stream, a `?wait=true` request) or polled for
//! a grace period is abandoned and stops by itself. Opening and closing someone else's event
//! stream cancels nothing.

use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use zfnet::occlusion::{Fill, OcclusionParams};
use zfvis_api::{paths, ApiError, OcclusionResponse, OcclusionStatus, SweepPhase};

/// Sweeps (finished or running) kept per server.
const KEPT_SWEEPS: usize = 32;
/// Sweeps computing at once.
const CONCURRENT_SWEEPS: usize = 1;

#[derive(Clone, Debug)]
pub enum SweepState {
    Queued { total: usize },
    Running { done: usize, total: usize },
    Done(Arc<OcclusionResponse>, Arc<SweepPictures>),
    Failed(ApiError),
    Cancelled,
}

/// The three maps of a finished sweep as PNG.
#[derive(Debug)]
pub struct SweepPictures {
    pub activation: Vec<u8>,
    pub probability: Vec<u8>,
    pub probability_stretched: Vec<u8>,
    pub classes: Vec<u8>,
}

impl SweepPictures {
    /// `activation.png`, `probability.png` (absolute 0–1), `probability-stretched.png` (min → max)
    /// or `classes.png`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            "activation.png" => Some(&self.activation),
            "probability.png" => Some(&self.probability),
            "probability-stretched.png" => Some(&self.probability_stretched),
            "classes.png" => Some(&self.classes),
            _ => None,
        }
    }
}

pub struct SweepJob {
    /// The parameters part of the key, as it appears in URLs.
    pub key: String,
    /// The full id of the image swept.
    pub image: String,
    /// The model that sweeps it (`None`: the server's default), for the URLs it answers with.
    pub model: Option<String>,
    pub params: OcclusionParams,
    pub state: watch::Sender<SweepState>,
    pub cancel: AtomicBool,
    /// The secret that lets the client that started the sweep cancel it.
    pub token: String,
    watchers: AtomicUsize,
    /// When a watcher or a poll last showed interest.
    last_seen: Mutex<Instant>,
}

impl SweepJob {
    pub fn status(&self) -> OcclusionStatus {
        let (state, done, total) = match &*self.state.borrow() {
            SweepState::Queued { total } => (SweepPhase::Queued, 0, *total),
            SweepState::Running { done, total } => (SweepPhase::Running, *done, *total),
            SweepState::Done(r, _) => (SweepPhase::Done, r.grid * r.grid, r.grid * r.grid),
            SweepState::Failed(_) => (SweepPhase::Failed, 0, 0),
            SweepState::Cancelled => (SweepPhase::Cancelled, 0, 0),
        };
        OcclusionStatus {
            key: self.key.clone(),
            state,
            done,
            total,
            events_url: paths::with_model(
                &paths::sweep_events(&self.image, &self.key),
                self.model.as_deref(),
            ),
            result_url: paths::with_model(
                &paths::sweep(&self.image, &self.key),
                self.model.as_deref(),
            ),
            token: None,
        }
    }

    /// Someone showed interest (a poll, a watcher leaving): the grace period starts again.
    pub fn touch(&self) {
        if let Ok(mut t) = self.last_seen.lock() {
            *t = Instant::now();
        }
    }

    /// Nobody watches, and nobody has shown interest for `grace`.
    pub fn abandoned(&self, grace: Duration) -> bool {
        self.watchers.load(Ordering::SeqCst) == 0
            && self.last_seen.lock().map_or(true, |t| t.elapsed() > grace)
    }

    /// Whether the computation should stop: cancelled by its owner, or abandoned.
    pub fn should_stop(&self, grace: Duration) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.abandoned(grace)
    }

    /// Done, failed or cancelled: a request for it again starts a new one or reads the result.
    pub fn ended(&self) -> bool {
        !matches!(
            &*self.state.borrow(),
            SweepState::Queued { .. } | SweepState::Running { .. }
        )
    }

    fn finished(&self) -> bool {
        matches!(
            &*self.state.borrow(),
            SweepState::Done(..) | SweepState::Failed(_)
        )
    }
}

/// Someone waiting for a sweep (an SSE stream, a `?wait=true` request): while one is there the
/// sweep is never abandoned.
pub struct Watcher(Arc<SweepJob>);

impl Watcher {
    pub fn new(job: Arc<SweepJob>) -> Watcher {
        job.watchers.fetch_add(1, Ordering::SeqCst);
        Watcher(job)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.watchers.fetch_sub(1, Ordering::SeqCst) == 1 && !self.0.finished() {
            tracing::debug!(key = %self.0.key, "last watcher left; the sweep is abandoned unless someone returns");
        }
    }
}

pub struct Sweeps {
    /// Keyed by `image id/parameters key`: the full id, so two images never share a sweep.
    jobs: Mutex<LruCache<String, Arc<SweepJob>>>,
    /// Slots for computing sweeps.
    pub slots: Arc<Semaphore>,
    /// Sweeps each client address has queued or running.
    per_client: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    /// The model these sweeps are of (`None`: the server's default), for URLs.
    pub model: Option<String>,
}

/// One of a client's sweeps, queued or running; dropping it gives the place back.
pub struct ClientPlace {
    table: Arc<Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    client: std::net::IpAddr,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.client);
            }
        }
    }
}

impl Default for Sweeps {
    fn default() -> Self {
        Sweeps {
            jobs: Mutex::new(LruCache::new(
                NonZeroUsize::new(KEPT_SWEEPS).unwrap_or(NonZeroUsize::MIN),
            )),
            slots: Arc::new(Semaphore::new(CONCURRENT_SWEEPS)),
            per_client: Default::default(),
            model: None,
        }
    }
}

/// The parameters part of a sweep's key, e.g. `s48-t16-mean-ctop`.
pub fn params_key(p: &OcclusionParams) -> String {
    let fill = match p.fill {
        Fill::Mean => "mean".to_string(),
        Fill::Grey(g) => format!("g{g}"),
    };
    let class = p.class.map_or("top".to_string(), |c| c.to_string());
    format!("s{}-t{}-{fill}-c{class}", p.size, p.stride)
}

/// 128 random bits in hex.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Sweeps {
    /// A table of its own (another model's sweeps) sharing the computing slots and the
    /// per-client places with this one: a client's limit and "one sweep at a time" hold across
    /// the server's models.
    pub fn sharing_places(&self) -> Sweeps {
        Sweeps {
            jobs: Mutex::new(LruCache::new(
                NonZeroUsize::new(KEPT_SWEEPS).unwrap_or(NonZeroUsize::MIN),
            )),
            slots: self.slots.clone(),
            per_client: self.per_client.clone(),
            model: None,
        }
    }

    /// A place for one more sweep of `client`, unless it has `max` queued or running already
    /// (then how many it has): one client cannot fill the sweep queue ahead of everyone else.
    pub fn client_place(&self, client: std::net::IpAddr, max: usize) -> Result<ClientPlace, usize> {
        let mut t = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(client).or_insert(0);
        if *n >= max {
            return Err(*n);
        }
        *n += 1;
        Ok(ClientPlace {
            table: self.per_client.clone(),
            client,
        })
    }

    pub fn get(&self, image: &str, key: &str) -> Option<Arc<SweepJob>> {
        self.jobs
            .lock()
            .ok()?
            .get(&format!("{image}/{key}"))
            .cloned()
    }

    /// The sweep of `image` with `params` that is running or done, or a new queued one (second
    /// value `true`: the caller must start it).
    pub fn find_or_queue(&self, image: &str, params: OcclusionParams) -> (Arc<SweepJob>, bool) {
        let key = params_key(&params);
        let table_key = format!("{image}/{key}");
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let reusable = jobs.get(&table_key).filter(|j| {
            !matches!(
                &*j.state.borrow(),
                SweepState::Failed(_) | SweepState::Cancelled
            )
        });
        if let Some(job) = reusable {
            return (job.clone(), false);
        }
        let total = params.grid() * params.grid();
        let (tx, _) = watch::channel(SweepState::Queued { total });
        let job = Arc::new(SweepJob {
            key,
            image: image.to_string(),
            model: self.model.clone(),
            params,
            state: tx,
            cancel: AtomicBool::new(false),
            token: new_token(),
            watchers: AtomicUsize::new(0),
            last_seen: Mutex::new(Instant::now()),
        });
        jobs.put(table_key, job.clone());
        (job, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_sharing_an_id_prefix_get_their_own_sweeps() {
        let sweeps = Sweeps::default();
        let a = "0123456789abcdef0000000000000000";
        let b = "0123456789abcdef1111111111111111";
        let (ja, new_a) = sweeps.find_or_queue(a, OcclusionParams::default());
        let (jb, new_b) = sweeps.find_or_queue(b, OcclusionParams::default());
        assert!(new_a && new_b);
        assert!(!Arc::ptr_eq(&ja, &jb));
        let (again, new) = sweeps.find_or_queue(a, OcclusionParams::default());
        assert!(!new && Arc::ptr_eq(&again, &ja));
        assert!(sweeps.get(b, &ja.key).is_some_and(|j| Arc::ptr_eq(&j, &jb)));
    }

    #[test]
    fn a_sweep_is_abandoned_only_when_unwatched_for_the_grace_period() {
        let sweeps = Sweeps::default();
        let (job, _) = sweeps.find_or_queue("ab", OcclusionParams::default());
        let grace = Duration::from_millis(50);
        let w1 = Watcher::new(job.clone());
        let w2 = Watcher::new(job.clone());
        drop(w1);
        std::thread::sleep(grace * 2);
        assert!(!job.should_stop(grace), "one watcher is still there");
        drop(w2);
        assert!(
            !job.should_stop(grace),
            "the grace period starts when the last one leaves"
        );
        std::thread::sleep(grace * 2);
        assert!(job.should_stop(grace));
        job.touch();
        assert!(!job.should_stop(grace), "a poll shows interest again");
    }

    #[test]
    fn every_sweep_has_its_own_token() {
        let sweeps = Sweeps::default();
        let (a, _) = sweeps.find_or_queue("ab", OcclusionParams::default());
        let (b, _) = sweeps.find_or_queue("cd", OcclusionParams::default());
        assert_eq!(a.token.len(), 32);
        assert_ne!(a.token, b.token);
    }
}
