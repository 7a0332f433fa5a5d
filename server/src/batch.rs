//! Dynamic batching of forward passes. Predictions and uploads of one model go through one
//! queue; a worker takes every request waiting in it (up to [`MAX_BATCH`]) and runs them as one
//! batched forward in one model job. Nobody waits for a batch to fill: a lone request runs at
//! once, alone, and batches form only while a forward is already running, from the requests that
//! arrived meanwhile (`serve --batch-window-ms` makes the worker wait that long for more after
//! the first, trading a lone request's latency for fuller batches). Under many clients that turns many batch-1 forwards (each paying for its
//! own weight passes, with two jobs competing for 2 cores) into a few larger ones.
//!
//! Measured on 2 CPU cores (50 clients predicting new photos, 40 s): 19.1 requests/s with every
//! forward its own model job (two at a time), 17.2 batched; so `serve` batches by default only on
//! a GPU (`--max-batch`), and `--max-batch 1` skips the queue altogether.
//!
//! Sits beside `state` (it runs model jobs through `AppState::run_blocking`); decoding stays in
//! each request's own job, so a slow decode never holds a batch back.

use crate::error::AppError;
use crate::state::AppState;
use candle_core::Tensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zfnet::views::{Traced, Want};

/// Most images in one batched forward by default (`serve --max-batch`; a batch of 8 holds
/// ~110 MB of traces while it runs).
pub const MAX_BATCH: usize = 8;
/// Requests that may wait for the worker; more wait for room (their model job queue bounds them).
const QUEUE: usize = 256;

struct Job {
    input: Tensor,
    want: Want,
    reply: oneshot::Sender<Result<Traced, AppError>>,
}

/// A model's batching queue (started on first use, inside the runtime); none with
/// `--max-batch 1`, where every forward is its own model job, as without batching.
pub struct Batcher {
    tx: Option<mpsc::Sender<Job>>,
    stats: Arc<Stats>,
}

/// What the worker has done: forwards run, images in them, the largest batch.
#[derive(Default)]
pub struct Stats {
    forwards: AtomicUsize,
    images: AtomicUsize,
    largest: AtomicUsize,
}

impl Stats {
    fn add(&self, size: usize) {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        self.images.fetch_add(size, Ordering::Relaxed);
        self.largest.fetch_max(size, Ordering::Relaxed);
    }
}

impl Batcher {
    fn start(state: Weak<AppState>, limits: &crate::state::Limits) -> Batcher {
        let stats = Arc::new(Stats::default());
        let (window, max) = (limits.batch_window, limits.max_batch.max(1));
        if max == 1 {
            return Batcher { tx: None, stats };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker(state, rx, window, max, stats.clone()));
        Batcher {
            tx: Some(tx),
            stats,
        }
    }
}

/// `state`'s batching so far (`None` before its first forward).
pub fn stats(state: &AppState) -> Option<zfvis_api::BatchStats> {
    let s = &state.batcher.get()?.stats;
    Some(zfvis_api::BatchStats {
        forwards: s.forwards.load(Ordering::Relaxed),
        images: s.images.load(Ordering::Relaxed),
        largest: s.largest.load(Ordering::Relaxed),
    })
}

/// The forward of `input` (`[1, 3, 224, 224]`) on `state`'s model, batched with whatever else is
/// waiting: its logits or its whole trace, as `want` says.
pub async fn forward(state: &Arc<AppState>, input: Tensor, want: Want) -> Result<Traced, AppError> {
    let batcher = state
        .batcher
        .get_or_init(|| Batcher::start(Arc::downgrade(state), &state.limits));
    let Some(tx) = &batcher.tx else {
        // no batching: this request's own model job
        let out = state
            .run_blocking(move |model| Ok(zfnet::views::forward_batch(model, &[(input, want)])?))
            .await?;
        batcher.stats.add(1);
        return out
            .into_iter()
            .next()
            .ok_or_else(|| AppError::internal("a forward answered nothing"));
    };
    let (reply, answer) = oneshot::channel();
    tx.send(Job { input, want, reply })
        .await
        .map_err(|_| AppError::internal("the batching worker stopped"))?;
    answer
        .await
        .map_err(|_| AppError::internal("the batching worker dropped a request"))?
}

async fn worker(
    state: Weak<AppState>,
    mut rx: mpsc::Receiver<Job>,
    window: Duration,
    max: usize,
    stats: Arc<Stats>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let until = tokio::time::Instant::now() + window;
        while jobs.len() < max {
            let next = if window.is_zero() {
                rx.try_recv().ok()
            } else {
                tokio::time::timeout_at(until, rx.recv())
                    .await
                    .ok()
                    .flatten()
            };
            match next {
                Some(job) => jobs.push(job),
                None => break,
            }
        }
        // requests whose client has gone need no forward
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let inputs: Vec<(Tensor, Want)> = jobs.iter().map(|j| (j.input.clone(), j.want)).collect();
        let size = inputs.len();
        let result = state
            .run_blocking(move |model| Ok(zfnet::views::forward_batch(model, &inputs)?))
            .await;
        drop(state);
        stats.add(size);
        if size > 1 {
            tracing::debug!(size, "batched forward");
        }
        match result {
            Ok(outputs) => {
                for (job, out) in jobs.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
