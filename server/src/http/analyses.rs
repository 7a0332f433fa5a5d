//! The paper's analyses on uploaded images: invariance curves (Fig. 5,
//! `POST /api/images/{id}/invariance`) and correspondence (Fig. 8 / Table 1,
//! `POST /api/correspondence`). Both run on the blocking pool as one model job and answer when
//! done (a few seconds; invariance can stream its progress instead); invariance results are
//! cached by image and parameters.

use super::extract::{JsonBody, StoredParam, Q};
use super::images::stored;
use super::ApiRouter;
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use utoipa_axum::routes;
use zfnet::correspondence::{MaskBox, Part};
use zfnet::invariance::Transform as T;
use zfvis_api::{
    ApiError, CorrespondencePart, CorrespondencePreset, CorrespondenceRequest,
    CorrespondenceResponse, CorrespondenceRow, DeltaStat, ErrorCode, InvarianceCurve,
    InvarianceImage, InvarianceRequest, InvarianceResponse, SweepProgress, Transform,
};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(invariance))
        .routes(routes!(correspondence))
        .routes(routes!(preset))
}

/// Default amounts per transform: rotation every 25°, as many for the other two.
const DEFAULT_STEPS: usize = 15;
/// Default draws of the random control.
const DEFAULT_REPETITIONS: usize = 10;

fn bad(message: impl Into<String>) -> AppError {
    AppError::new(ErrorCode::BadParameters, message)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct InvarianceQuery {
    /// `json` (default) or `csv` (one row per image, transform and amount).
    format: Option<String>,
}

fn label(state: &AppState, c: usize) -> String {
    state
        .info
        .classes
        .get(c)
        .map_or_else(|| format!("class {c}"), |l| l.label.clone())
}

/// The Fig. 5 curves: for this image and up to 4 others, the distance of layer 1's and fc7's
/// features from the original's and the class probability, as the image is translated
/// vertically (−60…60 px), scaled (1…1.8) and rotated (0…350°).
///
/// Answers when done (a few seconds) with the curves, or, when the request accepts
/// `text/event-stream`, streams Server-Sent Events as a sweep's stream does: `progress`
/// `{done, total}` (transformed images) while it runs, then `done` (the response) or `error`
/// (an `ApiError`, e.g. `overloaded`). Closing the stream cancels the work; only its own
/// request can. Bad parameters are still plain 4xx answers.
#[utoipa::path(post, path = "/api/images/{id}/invariance", tag = "analyses",
    params(("id" = String, Path), InvarianceQuery), request_body = InvarianceRequest,
    responses((status = 200, body = InvarianceResponse,
        description = "the curves (text/csv with ?format=csv; SSE with Accept: text/event-stream)"),
        (status = 404, body = ApiError), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn invariance(
    State(state): State<Arc<AppState>>,
    Q(q): Q<InvarianceQuery>,
    headers: HeaderMap,
    first: StoredParam,
    JsonBody(req): JsonBody<InvarianceRequest>,
) -> Result<Response, AppError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(AppError::new(
                ErrorCode::BadQuery,
                format!("format must be json or csv, not \"{other}\""),
            ))
        }
    };
    let streamed = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
    let steps = req.steps.unwrap_or(DEFAULT_STEPS);
    zfnet::invariance::check(
        1 + req.others.len(),
        steps,
        req.class,
        state.model.net.num_classes(),
    )
    .map_err(|e| bad(e.to_string()))?;
    let ids: Vec<String> = std::iter::once(first.id.clone())
        .chain(req.others.iter().cloned())
        .collect();
    let mut images = Vec::with_capacity(ids.len());
    for id in &ids {
        images.push(stored(&state, id).await?);
    }
    let job = InvarianceJob {
        key: format!("invariance/{}/{steps}/{:?}", ids.join(","), req.class),
        ids,
        images,
        steps,
        class: req.class,
    };
    if streamed {
        return Ok(stream(state, job).into_response());
    }
    let response = job.run(&state, None).await?;
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            response.csv(),
        )
            .into_response());
    }
    Ok(Json(response).into_response())
}

/// One invariance request, checked and ready to run.
struct InvarianceJob {
    key: String,
    ids: Vec<String>,
    images: Vec<Arc<crate::store::images::StoredImage>>,
    steps: usize,
    class: Option<usize>,
}

/// What the event stream of a running invariance job has to say.
#[derive(Clone)]
enum Progress {
    Running(SweepProgress),
    Done(Arc<InvarianceResponse>),
    Failed(ApiError),
}

impl InvarianceJob {
    /// The curves, from the cache or computed on the blocking pool; `progress` hears of every
    /// transform done, and a send that fails (the stream was closed) cancels the work.
    async fn run(
        self,
        state: &Arc<AppState>,
        progress: Option<Arc<watch::Sender<Progress>>>,
    ) -> Result<InvarianceResponse, AppError> {
        if let Some(json) = state.analyses.get(&self.key) {
            return serde_json::from_slice(&json).map_err(AppError::internal);
        }
        let started = Instant::now();
        let (images, steps, class) = (self.images, self.steps, self.class);
        let curves = state
            .run_blocking(move |model| {
                let inputs: Vec<_> = images.iter().map(|i| i.trace.input.clone()).collect();
                let classes = vec![class; inputs.len()];
                let report = |done, total| match &progress {
                    Some(tx) => tx
                        .send(Progress::Running(SweepProgress { done, total }))
                        .is_ok(),
                    None => true,
                };
                Ok(zfnet::invariance::invariance(
                    &model.net, &inputs, &classes, steps, &report,
                )?)
            })
            .await?;
        let response = InvarianceResponse {
            steps,
            elapsed_ms: started.elapsed().as_millis() as u64,
            images: self
                .ids
                .iter()
                .zip(curves)
                .map(|(id, c)| InvarianceImage {
                    image: id.clone(),
                    class: c.class,
                    class_label: label(state, c.class),
                    base_probability: c.base_probability,
                    curves: c.curves.into_iter().map(wire_curve).collect(),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&response).map_err(AppError::internal)?;
        state.analyses.put(self.key, Arc::new(json));
        Ok(response)
    }
}

/// Runs `job` in a task and streams its progress and outcome as SSE; dropping the stream drops
/// the only receiver, so the job's next progress report fails and the work stops.
fn stream(
    state: Arc<AppState>,
    job: InvarianceJob,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let total = job.images.len() * zfnet::invariance::Transform::ALL.len() * job.steps;
    let cached = state
        .analyses
        .get(&job.key)
        .and_then(|json| serde_json::from_slice(&json).ok());
    let start = match cached {
        Some(r) => Progress::Done(Arc::new(r)),
        None => Progress::Running(SweepProgress { done: 0, total }),
    };
    let computing = matches!(start, Progress::Running(_));
    let (tx, rx) = watch::channel(start);
    let tx = Arc::new(tx);
    if computing {
        tokio::spawn(async move {
            let outcome = job.run(&state, Some(tx.clone())).await;
            tx.send_replace(match outcome {
                Ok(r) => Progress::Done(Arc::new(r)),
                Err(e) => Progress::Failed(e.body()),
            });
        });
    }
    let stream =
        futures_util::stream::unfold((rx, false, true), |(mut rx, finished, first)| async move {
            if finished || (!first && rx.changed().await.is_err()) {
                return None;
            }
            let current = rx.borrow_and_update().clone();
            let (event, last) = match current {
                Progress::Running(p) => (Event::default().event("progress").json_data(p), false),
                Progress::Done(r) => (Event::default().event("done").json_data(r.as_ref()), true),
                Progress::Failed(e) => (Event::default().event("error").json_data(e), true),
            };
            let event = event.unwrap_or_else(|_| Event::default().event("error").data("{}"));
            Some((Ok(event), (rx, last, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn wire_curve(c: zfnet::invariance::Curve) -> InvarianceCurve {
    InvarianceCurve {
        transform: match c.transform {
            T::Translate => Transform::Translate,
            T::Scale => Transform::Scale,
            T::Rotate => Transform::Rotate,
        },
        amounts: c.amounts,
        layer1: c.layer1,
        layer7: c.layer7,
        probability: c.probability,
        top_class: c.top_class,
    }
}

/// Table 1: mask the same part in several images and measure how consistently the layer-5 and
/// layer-7 features change (Δ, lower = more consistent), beside a random-position control and
/// the paper's own figures.
#[utoipa::path(post, path = "/api/correspondence", tag = "analyses",
    request_body = CorrespondenceRequest,
    responses((status = 200, body = CorrespondenceResponse), (status = 404, body = ApiError),
        (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn correspondence(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CorrespondenceRequest>,
) -> Result<Json<CorrespondenceResponse>, AppError> {
    use zfnet::correspondence as c;
    let n = req.images.len();
    let repetitions = req.repetitions.unwrap_or(DEFAULT_REPETITIONS);
    let parts: Vec<Part> = req
        .parts
        .iter()
        .map(|p| Part {
            name: p.name.chars().take(40).collect(),
            boxes: p
                .boxes
                .iter()
                .map(|b| MaskBox {
                    x0: b.x0,
                    y0: b.y0,
                    x1: b.x1,
                    y1: b.y1,
                })
                .collect(),
        })
        .collect();
    // checked before taking a job slot (the library checks the same)
    c::check(n, &parts, repetitions).map_err(|e| bad(e.to_string()))?;
    let mut images = Vec::with_capacity(req.images.len());
    for id in &req.images {
        images.push(stored(&state, id).await?);
    }
    let seed = req.seed.unwrap_or(1);
    let started = Instant::now();
    let rows = state
        .run_blocking(move |model| {
            let inputs: Vec<_> = images.iter().map(|i| i.trace.input.clone()).collect();
            Ok(c::correspondence(
                &model.net,
                &inputs,
                &parts,
                repetitions,
                seed,
                &|_, _| true,
            )?)
        })
        .await?;
    let stat = |d: c::Delta| DeltaStat {
        mean: d.mean,
        std: d.std,
    };
    Ok(Json(CorrespondenceResponse {
        images: n,
        repetitions,
        elapsed_ms: started.elapsed().as_millis() as u64,
        rows: rows
            .into_iter()
            .map(|r| CorrespondenceRow {
                paper: zfvis_api::paper_delta(&r.part),
                layer5: stat(r.layer5),
                layer7: stat(r.layer7),
                part: r.part,
            })
            .collect(),
    }))
}

/// The paper's correspondence set-up on Imagenette (5 frontal English springer images of its val
/// set with left-eye, right-eye and nose boxes), with each image's place in this server's probe
/// set when it holds them.
#[utoipa::path(get, path = "/api/correspondence/preset", tag = "analyses",
    responses((status = 200, body = CorrespondencePreset)))]
async fn preset(
    State(state): State<Arc<AppState>>,
) -> Result<Json<CorrespondencePreset>, AppError> {
    let p = zfnet::correspondence::springer_preset()?;
    let probes = state.probes().ok();
    let probe_images = p
        .files
        .iter()
        .map(|f| {
            let suffix = format!("{}/{f}", p.folder);
            probes.as_ref().and_then(|s| {
                s.index
                    .images
                    .iter()
                    .position(|i| i.path == suffix || i.path.ends_with(&format!("/{suffix}")))
            })
        })
        .collect();
    Ok(Json(CorrespondencePreset {
        about: p.about,
        folder: p.folder,
        files: p.files,
        parts: p
            .parts
            .into_iter()
            .map(|part| CorrespondencePart {
                name: part.name,
                boxes: part
                    .boxes
                    .into_iter()
                    .map(|b| zfvis_api::PixelBox {
                        x0: b.x0,
                        y0: b.y0,
                        x1: b.x1,
                        y1: b.y1,
                    })
                    .collect(),
            })
            .collect(),
        probe_images,
    }))
}
