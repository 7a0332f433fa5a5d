//! The paper's analyses on uploaded images: invariance curves (Fig. 5,
//! `POST /api/images/{id}/invariance`) and correspondence (Fig. 8 / Table 1,
//! `POST /api/correspondence`). Both run on the blocking pool as one model job and answer when
//! done (a few seconds); invariance results are cached by image and parameters.

use super::extract::{stored, JsonBody, StoredParam, Q};
use super::ApiRouter;
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use utoipa_axum::routes;
use zfnet::correspondence::{MaskBox, Part, PAPER_TABLE_1};
use zfnet::invariance::Transform as T;
use zfvis_api::{
    ApiError, CorrespondencePart, CorrespondencePreset, CorrespondenceRequest,
    CorrespondenceResponse, CorrespondenceRow, DeltaStat, ErrorCode, InvarianceCurve,
    InvarianceImage, InvarianceRequest, InvarianceResponse, Transform,
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
#[utoipa::path(post, path = "/api/images/{id}/invariance", tag = "analyses",
    params(("id" = String, Path), InvarianceQuery), request_body = InvarianceRequest,
    responses((status = 200, body = InvarianceResponse, description = "the curves (or text/csv with ?format=csv)"),
        (status = 404, body = ApiError), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
async fn invariance(
    State(state): State<Arc<AppState>>,
    Q(q): Q<InvarianceQuery>,
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
    let steps = req.steps.unwrap_or(DEFAULT_STEPS);
    if !(2..=zfnet::invariance::MAX_STEPS).contains(&steps) {
        return Err(bad(format!(
            "steps must be 2–{}, got {steps}",
            zfnet::invariance::MAX_STEPS
        )));
    }
    if req.others.len() + 1 > zfnet::invariance::MAX_IMAGES {
        return Err(bad(format!(
            "at most {} other images, got {}",
            zfnet::invariance::MAX_IMAGES - 1,
            req.others.len()
        )));
    }
    let ids: Vec<String> = std::iter::once(first.id.clone())
        .chain(req.others.iter().cloned())
        .collect();
    let images = ids
        .iter()
        .map(|id| stored(&state, id))
        .collect::<Result<Vec<_>, _>>()?;
    let key = format!("invariance/{}/{steps}/{:?}", ids.join(","), req.class);
    let response = match state.images.png(&key) {
        Some(json) => {
            serde_json::from_slice::<InvarianceResponse>(&json).map_err(AppError::internal)?
        }
        None => {
            let started = Instant::now();
            let class = req.class;
            let curves = state
                .run_blocking(move |model| {
                    let inputs: Vec<_> = images.iter().map(|i| i.trace.input.clone()).collect();
                    let classes = vec![class; inputs.len()];
                    Ok(zfnet::invariance::invariance(
                        &model.net,
                        &inputs,
                        &classes,
                        steps,
                        &|_, _| true,
                    )?)
                })
                .await?;
            let response = InvarianceResponse {
                steps,
                elapsed_ms: started.elapsed().as_millis() as u64,
                images: ids
                    .iter()
                    .zip(curves)
                    .map(|(id, c)| InvarianceImage {
                        image: id.clone(),
                        class: c.class,
                        class_label: label(&state, c.class),
                        base_probability: c.base_probability,
                        curves: c.curves.into_iter().map(wire_curve).collect(),
                    })
                    .collect(),
            };
            let json = serde_json::to_vec(&response).map_err(AppError::internal)?;
            state.images.put_png(key, Arc::new(json));
            response
        }
    };
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            invariance_csv(&response),
        )
            .into_response());
    }
    Ok(Json(response).into_response())
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

fn invariance_csv(r: &InvarianceResponse) -> String {
    let mut out = String::from(
        "image,class,transform,amount,layer1_distance,layer7_distance,probability,top_class\n",
    );
    for img in &r.images {
        for c in &img.curves {
            for k in 0..c.amounts.len() {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    img.image,
                    img.class,
                    c.transform.as_str(),
                    c.amounts[k],
                    c.layer1[k],
                    c.layer7[k],
                    c.probability[k],
                    c.top_class[k]
                ));
            }
        }
    }
    out
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
    if !(2..=c::MAX_IMAGES).contains(&n) {
        return Err(bad(format!("give 2–{} images, got {n}", c::MAX_IMAGES)));
    }
    if req.parts.is_empty() || req.parts.len() > c::MAX_PARTS {
        return Err(bad(format!(
            "give 1–{} parts, got {}",
            c::MAX_PARTS,
            req.parts.len()
        )));
    }
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
    // the library checks counts and boxes; check them here too so nothing waits for a job slot
    for p in &parts {
        if p.boxes.len() != n {
            return Err(bad(format!(
                "part \"{}\" has {} boxes for {n} images",
                p.name,
                p.boxes.len()
            )));
        }
        for b in &p.boxes {
            b.validate()
                .map_err(|e| bad(format!("part \"{}\": {e}", p.name)))?;
        }
    }
    let images = req
        .images
        .iter()
        .map(|id| stored(&state, id))
        .collect::<Result<Vec<_>, _>>()?;
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
                paper: PAPER_TABLE_1
                    .iter()
                    .find(|p| p.0.eq_ignore_ascii_case(r.part.trim()))
                    .map(|p| {
                        [
                            DeltaStat {
                                mean: p.1,
                                std: p.2,
                            },
                            DeltaStat {
                                mean: p.3,
                                std: p.4,
                            },
                        ]
                    }),
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
