//! Occlusion sweeps over uploaded images: `POST /api/images/{id}/occlusion` starts one (or finds
//! it, keyed by image and parameters), progress streams as Server-Sent Events, `?wait=true`
//! answers with the result. Sweeps run one at a time (each uses every core); a sweep whose
//! watchers have all gone away is cancelled.

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lru::LruCache;
use serde::Deserialize;
use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Semaphore};
use zfnet::occlusion::{Fill, Method, OcclusionParams, OcclusionResult};
use zfvis_api::{LegendEntry, OcclusionFill, OcclusionRequest, OcclusionResponse, OcclusionStatus};

/// Sweeps (finished or running) kept per server.
const KEPT_SWEEPS: usize = 32;
/// Sweeps computing at once.
const CONCURRENT_SWEEPS: usize = 1;

#[derive(Clone, Debug)]
enum SweepState {
    Queued {
        total: usize,
    },
    Running {
        done: usize,
        total: usize,
    },
    Done(Arc<OcclusionResponse>, Arc<Pictures>),
    Failed {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Cancelled,
}

#[derive(Debug)]
pub struct Pictures {
    activation: Vec<u8>,
    probability: Vec<u8>,
    classes: Vec<u8>,
}

pub struct SweepJob {
    key: String,
    image: String,
    state: watch::Sender<SweepState>,
    cancel: AtomicBool,
    watchers: AtomicUsize,
}

impl SweepJob {
    fn status(&self) -> OcclusionStatus {
        let (state, done, total) = match &*self.state.borrow() {
            SweepState::Queued { total } => ("queued", 0, *total),
            SweepState::Running { done, total } => ("running", *done, *total),
            SweepState::Done(r, _) => ("done", r.grid * r.grid, r.grid * r.grid),
            SweepState::Failed { .. } => ("failed", 0, 0),
            SweepState::Cancelled => ("cancelled", 0, 0),
        };
        let base = format!("/api/images/{}/occlusion/{}", self.image, self.key);
        OcclusionStatus {
            key: self.key.clone(),
            state: state.into(),
            done,
            total,
            events_url: format!("{base}/events"),
            result_url: base,
        }
    }
}

/// Someone waiting for a sweep; when the last one goes (a closed SSE stream, a dropped
/// `?wait=true` request) before it finishes, the sweep is cancelled.
struct Watcher(Arc<SweepJob>);

impl Watcher {
    fn new(job: Arc<SweepJob>) -> Watcher {
        job.watchers.fetch_add(1, Ordering::SeqCst);
        Watcher(job)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.0.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            let finished = matches!(
                &*self.0.state.borrow(),
                SweepState::Done(..) | SweepState::Failed { .. }
            );
            if !finished {
                tracing::info!(key = %self.0.key, "last watcher left: cancelling the sweep");
                self.0.cancel.store(true, Ordering::SeqCst);
            }
        }
    }
}

pub struct Sweeps {
    jobs: Mutex<LruCache<String, Arc<SweepJob>>>,
    slots: Arc<Semaphore>,
}

impl Default for Sweeps {
    fn default() -> Self {
        Sweeps {
            jobs: Mutex::new(LruCache::new(
                NonZeroUsize::new(KEPT_SWEEPS).unwrap_or(NonZeroUsize::MIN),
            )),
            slots: Arc::new(Semaphore::new(CONCURRENT_SWEEPS)),
        }
    }
}

impl Sweeps {
    fn get(&self, key: &str) -> Option<Arc<SweepJob>> {
        self.jobs.lock().ok()?.get(key).cloned()
    }
}

fn unprocessable(message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_parameters", message)
}

fn params(req: &OcclusionRequest, classes: usize) -> Result<OcclusionParams, AppError> {
    let defaults = OcclusionParams::default();
    let fill = match &req.fill {
        None => Fill::Mean,
        Some(OcclusionFill::Grey(g)) => Fill::Grey(*g),
        Some(OcclusionFill::Named(n)) if n == "mean" => Fill::Mean,
        Some(OcclusionFill::Named(n)) => {
            return Err(unprocessable(format!(
                "fill must be \"mean\" or a grey level 0–255, not \"{n}\""
            )))
        }
    };
    let p = OcclusionParams {
        size: req.size.unwrap_or(defaults.size),
        stride: req.stride.unwrap_or(defaults.stride),
        fill,
        class: req.class,
    };
    p.validate(classes)
        .map_err(|e| unprocessable(e.to_string()))?;
    Ok(p)
}

fn key(image: &str, p: &OcclusionParams) -> String {
    let fill = match p.fill {
        Fill::Mean => "mean".to_string(),
        Fill::Grey(g) => format!("g{g}"),
    };
    let class = p.class.map_or("top".to_string(), |c| c.to_string());
    format!("s{}-t{}-{fill}-c{class}", p.size, p.stride)
        + &format!("-{}", &image[..8.min(image.len())])
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StartQuery {
    /// Answer with the finished result instead of `202` and a status.
    wait: Option<bool>,
}

/// Starts an occlusion sweep (or finds the one with the same parameters).
#[utoipa::path(post, path = "/api/images/{id}/occlusion", tag = "occlusion",
    params(("id" = String, Path), StartQuery), request_body = OcclusionRequest,
    responses((status = 200, body = OcclusionResponse, description = "finished (cached, or ?wait=true)"),
        (status = 202, body = OcclusionStatus, description = "started: follow events_url"),
        (status = 404, body = zfvis_api::ApiError), (status = 422, body = zfvis_api::ApiError),
        (status = 503, body = zfvis_api::ApiError)))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<StartQuery>, QueryRejection>,
    body: Result<Json<OcclusionRequest>, JsonRejection>,
) -> Result<Response, AppError> {
    let wait = q
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", e.body_text()))?
        .wait
        .unwrap_or(false);
    let Json(req) = body
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_body", e.body_text()))?;
    let image = crate::visualize::stored(&state, &id)?;
    let p = params(&req, state.model.net.num_classes())?;
    let key = key(&id, &p);
    let job = {
        let mut jobs = state
            .sweeps
            .jobs
            .lock()
            .map_err(|_| AppError::internal("sweep table poisoned"))?;
        let reusable = jobs.get(&key).filter(|j| {
            !matches!(
                &*j.state.borrow(),
                SweepState::Failed { .. } | SweepState::Cancelled
            )
        });
        match reusable {
            Some(job) => job.clone(),
            None => {
                let total = p.grid() * p.grid();
                let (tx, _) = watch::channel(SweepState::Queued { total });
                let job = Arc::new(SweepJob {
                    key: key.clone(),
                    image: id.clone(),
                    state: tx,
                    cancel: AtomicBool::new(false),
                    watchers: AtomicUsize::new(0),
                });
                jobs.put(key.clone(), job.clone());
                tokio::spawn(run(state.clone(), job.clone(), image, p));
                job
            }
        }
    };
    if !wait {
        return Ok(match &*job.state.borrow() {
            SweepState::Done(r, _) => Json(r.as_ref().clone()).into_response(),
            _ => (StatusCode::ACCEPTED, Json(job.status())).into_response(),
        });
    }
    let watcher = Watcher::new(job.clone());
    let mut rx = job.state.subscribe();
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            SweepState::Done(r, _) => return Ok(Json(r.as_ref().clone()).into_response()),
            SweepState::Failed {
                status,
                code,
                message,
            } => return Err(AppError::new(status, code, message)),
            SweepState::Cancelled => {
                return Err(AppError::new(
                    StatusCode::CONFLICT,
                    "cancelled",
                    "the sweep was cancelled",
                ))
            }
            _ => {}
        }
        if rx.changed().await.is_err() {
            drop(watcher);
            return Err(AppError::internal("sweep ended without a result"));
        }
    }
}

async fn run(
    state: Arc<AppState>,
    job: Arc<SweepJob>,
    image: Arc<crate::images::StoredImage>,
    p: OcclusionParams,
) {
    let fail = |status, code, message: String| {
        job.state.send_replace(SweepState::Failed {
            status,
            code,
            message,
        });
    };
    let permit = match tokio::time::timeout(
        state.limits.queue_timeout,
        state.sweeps.slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "another occlusion sweep is running; try again when it is done".into(),
            )
        }
    };
    let total = p.grid() * p.grid();
    job.state
        .send_replace(SweepState::Running { done: 0, total });
    let model = state.model.clone();
    let job2 = job.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let progress = |done: usize, total: usize| {
            // every few positions is plenty for a progress bar
            if done.is_multiple_of(4) || done == total {
                job2.state.send_replace(SweepState::Running { done, total });
            }
            !job2.cancel.load(Ordering::SeqCst)
        };
        zfnet::occlusion::sweep(
            &model.net,
            &model.manifest.preprocess,
            &image.trace.input,
            &p,
            Method::Incremental,
            &progress,
        )
    })
    .await;
    match result {
        Ok(Ok(r)) => match respond(&state, &job, &r, started.elapsed()) {
            Ok((resp, pics)) => {
                job.state
                    .send_replace(SweepState::Done(Arc::new(resp), Arc::new(pics)));
            }
            Err(e) => fail(e.status, e.code, e.message),
        },
        Ok(Err(zfnet::Error::Cancelled)) => {
            job.state.send_replace(SweepState::Cancelled);
        }
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Categorical colours for the class map (Tableau 10, then Category 10 again darker).
fn class_color(class: usize) -> [u8; 3] {
    let c = colorous::TABLEAU10[class % 10];
    let shade = if (class / 10) % 2 == 1 { 0.6 } else { 1.0 };
    [
        (c.r as f32 * shade) as u8,
        (c.g as f32 * shade) as u8,
        (c.b as f32 * shade) as u8,
    ]
}

/// The grid through viridis from its own minimum (dark) to its maximum (yellow).
fn min_max_heatmap(values: &[f32], g: usize) -> image::RgbImage {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    zfnet::render::heatmap_range(values, g, g, lo, hi)
}

fn respond(
    state: &AppState,
    job: &SweepJob,
    r: &OcclusionResult,
    elapsed: std::time::Duration,
) -> Result<(OcclusionResponse, Pictures), AppError> {
    let labels = &state.info.classes;
    let label = |c: usize| {
        labels
            .get(c)
            .map_or_else(|| format!("class {c}"), |l| l.label.clone())
    };
    let g = r.grid;
    let mut counts = std::collections::BTreeMap::new();
    for &c in &r.top_class {
        *counts.entry(c as usize).or_insert(0usize) += 1;
    }
    let legend = counts
        .into_iter()
        .map(|(class, cells)| {
            let [cr, cg, cb] = class_color(class);
            LegendEntry {
                class,
                label: label(class),
                color: format!("#{cr:02x}{cg:02x}{cb:02x}"),
                cells,
            }
        })
        .collect();
    let classes = image::RgbImage::from_fn(g as u32, g as u32, |x, y| {
        image::Rgb(class_color(
            r.top_class[y as usize * g + x as usize] as usize,
        ))
    });
    let pictures = Pictures {
        activation: zfnet::render::png(&min_max_heatmap(&r.activation, g)),
        probability: zfnet::render::png(&min_max_heatmap(&r.probability, g)),
        classes: zfnet::render::png(&classes),
    };
    let base = format!("/api/images/{}/occlusion/{}", job.image, job.key);
    let response = OcclusionResponse {
        key: job.key.clone(),
        image: job.image.clone(),
        size: r.params.size,
        stride: r.params.stride,
        grid: g,
        strongest_map: r.strongest_map,
        activation: r.activation.clone(),
        base_activation: r.base_activation,
        class: r.class,
        class_label: label(r.class),
        probability: r.probability.clone(),
        base_probability: r.base_probability,
        top_class: r.top_class.clone(),
        top_probability: r.top_probability.clone(),
        legend,
        activation_url: format!("{base}/activation.png"),
        probability_url: format!("{base}/probability.png"),
        classes_url: format!("{base}/classes.png"),
        projection_url: format!(
            "/api/images/{}/projection/conv5/{}?mode=unit",
            job.image, r.strongest_map
        ),
        elapsed_ms: elapsed.as_millis() as u64,
    };
    Ok((response, pictures))
}

fn find(state: &AppState, id: &str, key: &str) -> Result<Arc<SweepJob>, AppError> {
    state
        .sweeps
        .get(key)
        .filter(|j| j.image == id)
        .ok_or_else(|| {
            AppError::new(
                StatusCode::NOT_FOUND,
                "sweep_not_found",
                format!("no occlusion sweep '{key}' for image '{id}': start one with POST /api/images/{id}/occlusion"),
            )
        })
}

/// The result of a sweep (`200`), or its status while it runs (`202`).
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = OcclusionResponse), (status = 202, body = OcclusionStatus),
        (status = 404, body = zfvis_api::ApiError)))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let job = find(&state, &id, &key)?;
    let current = job.state.borrow().clone();
    match current {
        SweepState::Done(r, _) => Ok(Json(r.as_ref().clone()).into_response()),
        SweepState::Failed {
            status,
            code,
            message,
        } => Err(AppError::new(status, code, message)),
        _ => Ok((StatusCode::ACCEPTED, Json(job.status())).into_response()),
    }
}

/// Server-Sent Events: `progress` `{done, total}` while the sweep runs, then one `done` (the
/// `OcclusionResponse`) or `error` (an `ApiError`). Closing the stream cancels the sweep when
/// nobody else watches it.
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}/events", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "SSE"), (status = 404, body = zfvis_api::ApiError)))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, AppError> {
    let job = find(&state, &id, &key)?;
    let rx = job.state.subscribe();
    let watcher = Watcher::new(job);
    // (receiver, watcher, finished): the watcher lives as long as the stream
    let stream = futures_util::stream::unfold(
        (rx, watcher, false, true),
        |(mut rx, watcher, finished, first)| async move {
            if finished {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let current = rx.borrow_and_update().clone();
            let (event, finished) = match current {
                SweepState::Queued { total } => (
                    Event::default()
                        .event("progress")
                        .data(format!("{{\"done\":0,\"total\":{total}}}")),
                    false,
                ),
                SweepState::Running { done, total } => (
                    Event::default()
                        .event("progress")
                        .data(format!("{{\"done\":{done},\"total\":{total}}}")),
                    false,
                ),
                SweepState::Done(r, _) => (
                    Event::default()
                        .event("done")
                        .json_data(r.as_ref())
                        .unwrap_or_else(|_| Event::default().event("error").data("{}")),
                    true,
                ),
                SweepState::Failed { code, message, .. } => (
                    Event::default()
                        .event("error")
                        .json_data(zfvis_api::ApiError {
                            error: message,
                            code: code.into(),
                        })
                        .unwrap_or_default(),
                    true,
                ),
                SweepState::Cancelled => (
                    Event::default()
                        .event("error")
                        .data("{\"error\":\"the sweep was cancelled\",\"code\":\"cancelled\"}"),
                    true,
                ),
            };
            Some((Ok(event), (rx, watcher, finished, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The sweep's maps as PNG: `activation.png` (a), `probability.png` (b), `classes.png` (c).
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}/{picture}", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path), ("picture" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "PNG, one pixel per grid cell"),
        (status = 404, body = zfvis_api::ApiError)))]
pub async fn picture(
    State(state): State<Arc<AppState>>,
    Path((id, key, picture)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    let job = find(&state, &id, &key)?;
    let pictures = match &*job.state.borrow() {
        SweepState::Done(_, p) => p.clone(),
        _ => {
            return Err(AppError::new(
                StatusCode::CONFLICT,
                "not_finished",
                "the sweep has not finished; follow its events_url",
            ))
        }
    };
    let bytes = match picture.as_str() {
        "activation.png" => &pictures.activation,
        "probability.png" => &pictures.probability,
        "classes.png" => &pictures.classes,
        other => {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                "unknown_picture",
                format!("no picture '{other}': activation.png, probability.png or classes.png"),
            ))
        }
    };
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes.clone()).into_response())
}
