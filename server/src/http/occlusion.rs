//! Occlusion sweeps over uploaded images: `POST /api/images/{id}/occlusion` starts one (or finds
//! it, keyed by image and parameters), progress streams as Server-Sent Events, `?wait=true`
//! answers with the result. Sweeps run one at a time (each uses every core). The client that
//! started a sweep may cancel it with its token; one nobody watches or polls for the grace period
//! stops by itself ([`crate::store::sweeps`]).

use super::extract::{ClientAddr, JsonBody, StoredParam, P, Q};
use super::ApiRouter;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::images::StoredImage;
use crate::store::sweeps::{SweepJob, SweepPictures, SweepState, Watcher};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use utoipa_axum::routes;
use zfnet::occlusion::{Fill, Method, OcclusionParams};
use zfvis_api::{
    ApiError, ErrorCode, OcclusionFill, OcclusionRequest, OcclusionResponse, OcclusionStatus,
    SweepProgress,
};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(result, cancel))
        .routes(routes!(events))
        .routes(routes!(picture))
}

fn unprocessable(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::BadParameters, message)
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StartQuery {
    /// Answer with the finished result instead of `202` and a status.
    wait: Option<bool>,
}

/// The outcome of a finished sweep, or `None` while it runs.
fn finished(state: &SweepState) -> Option<Result<Arc<OcclusionResponse>, AppError>> {
    match state {
        SweepState::Done(r, _) => Some(Ok(r.clone())),
        SweepState::Failed(e) => Some(Err(AppError::new(e.code, e.error.clone()))),
        SweepState::Cancelled => Some(Err(AppError::new(
            ErrorCode::Cancelled,
            "the sweep was cancelled",
        ))),
        SweepState::Queued { .. } | SweepState::Running { .. } => None,
    }
}

/// Starts an occlusion sweep (or finds the one with the same parameters).
#[utoipa::path(post, path = "/api/images/{id}/occlusion", tag = "occlusion",
    params(("id" = String, Path), StartQuery), request_body = OcclusionRequest,
    responses((status = 200, body = OcclusionResponse, description = "finished (cached, or ?wait=true)"),
        (status = 202, body = OcclusionStatus, description = "started: follow events_url"),
        (status = 404, body = ApiError), (status = 422, body = ApiError),
        (status = 503, body = ApiError)))]
async fn start(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    Q(q): Q<StartQuery>,
    stored: StoredParam,
    JsonBody(req): JsonBody<OcclusionRequest>,
) -> Result<Response, AppError> {
    let p = params(&req, state.model.net.num_classes())?;
    // a new sweep takes one of its client's places (the same sweep again takes none)
    let known = state
        .sweeps
        .get(&stored.id, &crate::store::sweeps::params_key(&p))
        .is_some_and(|j| !j.ended());
    let place = match client {
        Some(ip) if !known => {
            let max = state.limits.sweeps_per_client;
            Some(state.sweeps.client_place(ip, max).map_err(|n| {
                AppError::new(
                    ErrorCode::TooManySweeps,
                    format!(
                        "you have {n} occlusion sweeps queued or running, the most one client may \
                         have: wait for one to finish (or cancel it with its token)"
                    ),
                )
            })?)
        }
        _ => None,
    };
    let (job, new) = state.sweeps.find_or_queue(&stored.id, p);
    if new {
        tokio::spawn(run(state.clone(), job.clone(), stored.image, place));
    }
    job.touch();
    if !q.wait.unwrap_or(false) {
        return Ok(match &*job.state.borrow() {
            SweepState::Done(r, _) => Json(r.as_ref().clone()).into_response(),
            _ => {
                let mut status = job.status();
                // only the request that started the sweep learns how to cancel it
                status.token = new.then(|| job.token.clone());
                (StatusCode::ACCEPTED, Json(status)).into_response()
            }
        });
    }
    let _watcher = Watcher::new(job.clone());
    let mut rx = job.state.subscribe();
    loop {
        if let Some(outcome) = finished(&rx.borrow_and_update()) {
            return Ok(Json(outcome?.as_ref().clone()).into_response());
        }
        if rx.changed().await.is_err() {
            return Err(AppError::internal("sweep ended without a result"));
        }
    }
}

/// Waits for a sweep slot, runs the sweep on the blocking pool and publishes its outcome.
async fn run(
    state: Arc<AppState>,
    job: Arc<SweepJob>,
    image: Arc<StoredImage>,
    _place: Option<crate::store::sweeps::ClientPlace>,
) {
    let fail = |e: AppError| job.state.send_replace(SweepState::Failed(e.body()));
    let slot = tokio::time::timeout(
        state.limits.queue_timeout,
        state.sweeps.slots.clone().acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = slot else {
        fail(AppError::new(
            ErrorCode::Overloaded,
            "another occlusion sweep is running; try again when it is done",
        ));
        return;
    };
    let p = job.params;
    let total = p.grid() * p.grid();
    job.state
        .send_replace(SweepState::Running { done: 0, total });
    let model = state.model.clone();
    let job2 = job.clone();
    let grace = state.limits.sweep_grace;
    let budget = Budget::new(state.limits.sweep_cpu_secs);
    let started = std::time::Instant::now();
    let budget2 = budget.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let budget = budget2;
        let progress = |done: usize, total: usize| {
            // every few positions is plenty for a progress bar
            if done.is_multiple_of(4) || done == total {
                job2.state.send_replace(SweepState::Running { done, total });
            }
            !job2.should_stop(grace) && budget.allows(done, total)
        };
        let result = zfnet::occlusion::sweep(
            &model.net,
            &model.manifest.preprocess,
            &image.trace.input,
            &p,
            Method::for_device(model.net.device()),
            &progress,
        )?;
        let pictures = zfnet::occlusion::pictures(&result);
        Ok::<_, zfnet::Error>((result, pictures))
    })
    .await;
    match outcome {
        Ok(Ok((r, pics))) => {
            let response = respond(&state, &job, r, started.elapsed());
            let pictures = SweepPictures {
                activation: zfnet::render::png(&pics.activation),
                probability: zfnet::render::png(&pics.probability),
                probability_stretched: zfnet::render::png(&pics.probability_stretched),
                classes: zfnet::render::png(&pics.classes),
            };
            job.state
                .send_replace(SweepState::Done(Arc::new(response), Arc::new(pictures)));
        }
        Ok(Err(zfnet::Error::Cancelled)) if budget.exceeded().is_some() => {
            fail(budget.error(p));
        }
        Ok(Err(zfnet::Error::Cancelled)) => {
            job.state.send_replace(SweepState::Cancelled);
        }
        Ok(Err(e)) => {
            fail(AppError::from(e));
        }
        Err(e) => {
            fail(AppError::internal(e));
        }
    }
}

/// One sweep's CPU-seconds budget: wall time since it started computing × the compute threads.
/// After a few positions the cost of the whole sweep is projected; one that will not fit stops
/// then, not at the end of its budget.
#[derive(Clone)]
struct Budget(Arc<BudgetInner>);

struct BudgetInner {
    limit: f64,
    started: std::time::Instant,
    threads: f64,
    /// `(projected CPU-seconds, positions done, total)` once over.
    over: std::sync::Mutex<Option<(f64, usize, usize)>>,
}

impl Budget {
    /// Positions measured before the sweep's cost is projected from them.
    const SAMPLE: usize = 8;

    fn new(limit: f64) -> Self {
        Budget(Arc::new(BudgetInner {
            limit,
            started: std::time::Instant::now(),
            threads: rayon::current_num_threads() as f64,
            over: Default::default(),
        }))
    }

    fn allows(&self, done: usize, total: usize) -> bool {
        let spent = self.0.started.elapsed().as_secs_f64() * self.0.threads;
        let projected = if done >= Self::SAMPLE {
            spent / done as f64 * total as f64
        } else {
            spent
        };
        // a little slack on the projection: early positions are not quite typical
        if spent > self.0.limit || projected > 1.25 * self.0.limit {
            if let Ok(mut over) = self.0.over.lock() {
                over.get_or_insert((projected.max(spent), done, total));
            }
            return false;
        }
        true
    }

    fn exceeded(&self) -> Option<(f64, usize, usize)> {
        *self.0.over.lock().ok()?
    }

    fn error(&self, p: OcclusionParams) -> AppError {
        let (cost, done, total) = self.exceeded().unwrap_or_default();
        let fits = ((total as f64) * self.0.limit / cost.max(1e-9)).floor() as usize;
        let stride = (1..=zfnet::arch::INPUT_SIZE)
            .find(|&s| {
                let g = zfnet::arch::INPUT_SIZE.div_ceil(s);
                g * g <= fits.max(1)
            })
            .unwrap_or(zfnet::arch::INPUT_SIZE);
        AppError::new(
            ErrorCode::SweepOverBudget,
            format!(
                "a {}-px square at stride {} ({total} positions) would take about {cost:.0} \
                 CPU-seconds here (measured over {done}), over this server's {:.0} per sweep: \
                 use stride {stride} or more",
                p.size, p.stride, self.0.limit
            ),
        )
    }
}

fn respond(
    state: &AppState,
    job: &SweepJob,
    r: zfnet::occlusion::OcclusionResult,
    elapsed: std::time::Duration,
) -> OcclusionResponse {
    let labels = &state.info.classes;
    let label = |c: usize| {
        labels
            .get(c)
            .map_or_else(|| format!("class {c}"), |l| l.label.clone())
    };
    let legend = zfnet::occlusion::class_legend(&r.top_class)
        .into_iter()
        .map(|(class, cells, [cr, cg, cb])| zfvis_api::LegendEntry {
            class,
            label: label(class),
            color: format!("#{cr:02x}{cg:02x}{cb:02x}"),
            cells,
        })
        .collect();
    let (id, key) = (&job.image, &job.key);
    OcclusionResponse {
        key: key.clone(),
        image: id.clone(),
        size: r.params.size,
        stride: r.params.stride,
        grid: r.grid,
        strongest_map: r.strongest_map,
        base_activation: r.base_activation,
        class: r.class,
        class_label: label(r.class),
        base_probability: r.base_probability,
        legend,
        activation_url: state.url(zfvis_api::paths::sweep_picture(id, key, "activation.png")),
        probability_url: state.url(zfvis_api::paths::sweep_picture(id, key, "probability.png")),
        classes_url: state.url(zfvis_api::paths::sweep_picture(id, key, "classes.png")),
        projection_url: state.url(zfvis_api::paths::projection(
            id,
            "conv5",
            r.strongest_map,
            zfvis_api::ProjectionMode::Unit,
            None,
        )),
        elapsed_ms: elapsed.as_millis() as u64,
        activation: r.activation,
        probability: r.probability,
        top_class: r.top_class,
        top_probability: r.top_probability,
    }
}

fn find(state: &AppState, id: &str, key: &str) -> Result<Arc<SweepJob>, AppError> {
    state.sweeps.get(id, key).ok_or_else(|| {
        AppError::new(
            ErrorCode::SweepNotFound,
            format!("no occlusion sweep '{key}' for image '{id}': start one with POST /api/images/{id}/occlusion"),
        )
    })
}

/// The result of a sweep (`200`), or its status while it runs (`202`).
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = OcclusionResponse), (status = 202, body = OcclusionStatus),
        (status = 404, body = ApiError)))]
async fn result(
    State(state): State<Arc<AppState>>,
    segments: P<(String, String)>,
) -> Result<Response, AppError> {
    let P((id, key)) = segments;
    let job = find(&state, &id, &key)?;
    job.touch();
    let current = job.state.borrow().clone();
    match current {
        SweepState::Done(r, _) => Ok(Json(r.as_ref().clone()).into_response()),
        SweepState::Failed(e) => Err(AppError::new(e.code, e.error)),
        _ => Ok((StatusCode::ACCEPTED, Json(job.status())).into_response()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CancelQuery {
    /// The `token` of the `202` answer that started the sweep.
    token: String,
}

/// Cancels a running sweep; only the client that started it holds the token.
#[utoipa::path(delete, path = "/api/images/{id}/occlusion/{key}", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path), CancelQuery),
    responses((status = 202, body = OcclusionStatus, description = "cancelling (or already over)"),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    segments: P<(String, String)>,
    Q(q): Q<CancelQuery>,
) -> Result<Response, AppError> {
    let P((id, key)) = segments;
    let job = find(&state, &id, &key)?;
    let matches = q.token.len() == job.token.len()
        && q.token
            .bytes()
            .zip(job.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !matches {
        return Err(AppError::new(
            ErrorCode::BadToken,
            "only the client that started this sweep can cancel it (wrong or missing token)",
        ));
    }
    job.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok((StatusCode::ACCEPTED, Json(job.status())).into_response())
}

/// The SSE event for a sweep state, and whether it is the last.
fn event(state: &SweepState) -> (Event, bool) {
    let progress = |done, total| {
        Event::default()
            .event("progress")
            .json_data(SweepProgress { done, total })
    };
    let error = |e: ApiError| Event::default().event("error").json_data(e);
    let (event, last) = match state {
        SweepState::Queued { total } => (progress(0, *total), false),
        SweepState::Running { done, total } => (progress(*done, *total), false),
        SweepState::Done(r, _) => (Event::default().event("done").json_data(r.as_ref()), true),
        SweepState::Failed(e) => (error(e.clone()), true),
        SweepState::Cancelled => (
            error(ApiError {
                error: "the sweep was cancelled".into(),
                code: ErrorCode::Cancelled,
            }),
            true,
        ),
    };
    (
        event.unwrap_or_else(|_| Event::default().event("error").data("{}")),
        last,
    )
}

/// Server-Sent Events: `progress` `{done, total}` while the sweep runs, then one `done` (the
/// `OcclusionResponse`) or `error` (an `ApiError`). While a stream is open the sweep is not
/// abandoned.
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}/events", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "text/event-stream", description = "SSE"), (status = 404, body = ApiError)))]
async fn events(
    State(state): State<Arc<AppState>>,
    segments: P<(String, String)>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, AppError> {
    let P((id, key)) = segments;
    let job = find(&state, &id, &key)?;
    let rx = job.state.subscribe();
    let watcher = Watcher::new(job);
    // (receiver, watcher, finished, first): the watcher lives as long as the stream
    let stream = futures_util::stream::unfold(
        (rx, watcher, false, true),
        |(mut rx, watcher, finished, first)| async move {
            if finished || (!first && rx.changed().await.is_err()) {
                return None;
            }
            let (event, last) = event(&rx.borrow_and_update());
            Some((Ok(event), (rx, watcher, last, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The sweep's maps as PNG: `activation.png` (a), `probability.png` (b, absolute 0–1),
/// `probability-stretched.png` (b, from its minimum to its maximum), `classes.png` (c).
#[utoipa::path(get, path = "/api/images/{id}/occlusion/{key}/{picture}", tag = "occlusion",
    params(("id" = String, Path), ("key" = String, Path), ("picture" = String, Path)),
    responses((status = 200, content_type = "image/png", description = "PNG, one pixel per grid cell"),
        (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn picture(
    State(state): State<Arc<AppState>>,
    segments: P<(String, String, String)>,
) -> Result<Response, AppError> {
    let P((id, key, picture)) = segments;
    let job = find(&state, &id, &key)?;
    let pictures = match &*job.state.borrow() {
        SweepState::Done(_, p) => p.clone(),
        _ => {
            return Err(AppError::new(
                ErrorCode::NotFinished,
                "the sweep has not finished; follow its events_url",
            ))
        }
    };
    let bytes = pictures.get(&picture).ok_or_else(|| {
        AppError::new(
            ErrorCode::UnknownPicture,
            format!("no picture '{picture}': activation.png, probability.png, probability-stretched.png or classes.png"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes.to_vec()).into_response())
}
