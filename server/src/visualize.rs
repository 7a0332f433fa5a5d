//! Uploaded images and the per-map views: `/api/images…` and `/visualize/{layer}/{map}`.

use crate::error::AppError;
use crate::images::{content_id, StoredImage};
use crate::probes::{ensure_pictures, Picture};
use crate::routes::top_k;
use crate::state::{prepare_input, AppState};
use crate::upload::ImageUpload;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use zfnet::deconv::{project, strongest_units, Selection};
use zfnet::model::CONV_NAMES;
use zfnet::receptive::receptive_field;
use zfvis_api::{
    ImageResponse, LayerActivations, PixelBox, ProjectionMode, TopActivation, TopActivations,
    UnitPosition, VisualizeResponse,
};

/// `conv1`…`conv5` or `1`…`5` → 0-based index.
pub fn parse_layer(name: &str) -> Result<usize, AppError> {
    let index = CONV_NAMES.iter().position(|n| *n == name).or_else(|| {
        name.parse::<usize>()
            .ok()
            .filter(|n| (1..=5).contains(n))
            .map(|n| n - 1)
    });
    index.ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_layer",
            format!("unknown layer '{name}': use conv1…conv5 (or 1…5)"),
        )
    })
}

pub fn stored(state: &AppState, id: &str) -> Result<Arc<StoredImage>, AppError> {
    state.images.get(id).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!("no image with id '{id}' (unknown, or expired from the cache): upload it again with POST /api/images"),
        )
    })
}

fn check_map(
    image: &StoredImage,
    layer: usize,
    map: usize,
) -> Result<(usize, usize, usize), AppError> {
    let (_, c, h, w) = image.trace.convs[layer]
        .activation
        .dims4()
        .map_err(|e| AppError::internal(e.to_string()))?;
    if map >= c {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "map_out_of_range",
            format!(
                "{} has {c} feature maps (0…{}); there is no map {map}",
                CONV_NAMES[layer],
                c - 1
            ),
        ));
    }
    Ok((c, h, w))
}

fn png_response(bytes: Arc<Vec<u8>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        bytes.as_ref().clone(),
    )
        .into_response()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AppError> {
    q.map(|Query(t)| t)
        .map_err(|e| AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", e.body_text()))
}

/// Uploads an image, runs the traced forward pass and keeps the trace.
#[utoipa::path(post, path = "/api/images", tag = "images",
    request_body(content_type = "multipart/form-data", description = "file field `image` (JPEG, PNG, WebP)"),
    responses((status = 200, body = ImageResponse), (status = 413, body = zfvis_api::ApiError), (status = 422, body = zfvis_api::ApiError)))]
pub async fn upload_image(
    State(state): State<Arc<AppState>>,
    ImageUpload(bytes): ImageUpload,
) -> Result<Json<ImageResponse>, AppError> {
    Ok(Json(store_image(&state, bytes).await?))
}

/// Runs the traced forward pass on image bytes and keeps the trace under the content id.
async fn store_image(state: &Arc<AppState>, bytes: Vec<u8>) -> Result<ImageResponse, AppError> {
    let id = content_id(&bytes);
    if let Some(image) = state.images.get(&id) {
        return Ok(image.response.clone());
    }
    let trained = state.info.trained;
    let image = state
        .run_blocking(move |model| {
            let (input, tensor) = prepare_input(model, &bytes)?;
            let trace = model.net.forward_trace(&tensor)?;
            let predictions = top_k(model, &trace.logits, 5)?;
            let response = ImageResponse {
                input_url: format!("/api/images/{id}/input"),
                id,
                predictions,
                trained,
                width: input.original.0,
                height: input.original.1,
            };
            Ok(StoredImage {
                trace,
                crop: input.crop,
                response,
            })
        })
        .await?;
    let response = image.response.clone();
    state.images.insert(response.id.clone(), Arc::new(image));
    Ok(response)
}

#[utoipa::path(get, path = "/api/images/{id}", tag = "images",
    params(("id" = String, Path, description = "image id from POST /api/images")),
    responses((status = 200, body = ImageResponse), (status = 404, body = zfvis_api::ApiError)))]
pub async fn get_image(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<ImageResponse>, AppError> {
    Ok(Json(stored(&state, &id)?.response.clone()))
}

/// The 224×224 crop the network sees.
#[utoipa::path(get, path = "/api/images/{id}/input", tag = "images",
    params(("id" = String, Path)), responses((status = 200, content_type = "image/png", description = "PNG")))]
pub async fn input_png(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let image = stored(&state, &id)?;
    Ok(png_response(Arc::new(zfnet::render::png(&image.crop))))
}

/// Every map's strongest activation in one layer.
#[utoipa::path(get, path = "/api/images/{id}/layers/{layer}", tag = "images",
    params(("id" = String, Path), ("layer" = String, Path, description = "conv1…conv5 or 1…5")),
    responses((status = 200, body = LayerActivations), (status = 404, body = zfvis_api::ApiError)))]
pub async fn layer_activations(
    State(state): State<Arc<AppState>>,
    Path((id, layer)): Path<(String, String)>,
) -> Result<Json<LayerActivations>, AppError> {
    let layer = parse_layer(&layer)?;
    let image = stored(&state, &id)?;
    let act = &image.trace.convs[layer].activation;
    let max = act
        .max_keepdim(3)
        .and_then(|t| t.max_keepdim(2))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| AppError::internal(e.to_string()))?;
    let (_, _, h, w) = act.dims4().map_err(|e| AppError::internal(e.to_string()))?;
    Ok(Json(LayerActivations {
        layer: CONV_NAMES[layer].into(),
        image: id,
        max,
        map_shape: [h, w],
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VisualizeQuery {
    /// Image id from `POST /api/images`.
    image: Option<String>,
    /// `unit` (default: the strongest activation only) or `map` (the whole feature map).
    mode: Option<ProjectionMode>,
    /// Unit column to project from instead of the strongest (with `y`).
    x: Option<u32>,
    /// Unit row.
    y: Option<u32>,
}

/// The unit a request is about: the given `(x, y)` or the map's strongest.
struct UnitChoice {
    max: f32,
    strongest: (usize, usize),
    unit: (usize, usize),
    value: f32,
}

fn choose_unit(
    image: &StoredImage,
    layer: usize,
    map: usize,
    x: Option<u32>,
    y: Option<u32>,
) -> Result<UnitChoice, AppError> {
    let (_, h, w) = check_map(image, layer, map)?;
    let act = &image.trace.convs[layer].activation;
    let (sy, sx, max) = strongest_units(act, map)?[0];
    let unit = match (x, y) {
        (None, None) => (sy, sx),
        (Some(x), Some(y)) if (x as usize) < w && (y as usize) < h => (y as usize, x as usize),
        (Some(_), Some(_)) => {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "position_out_of_range",
                format!(
                    "x and y must be below {w} and {h} for {}",
                    CONV_NAMES[layer]
                ),
            ))
        }
        _ => {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_query",
                "give both x and y, or neither",
            ))
        }
    };
    let value = act
        .get(0)
        .and_then(|t| t.get(map))
        .and_then(|t| t.get(unit.0))
        .and_then(|t| t.get(unit.1))
        .and_then(|t| t.to_scalar::<f32>())
        .map_err(|e| AppError::internal(e.to_string()))?;
    Ok(UnitChoice {
        max,
        strongest: (sy, sx),
        unit,
        value,
    })
}

fn unit_query(x: Option<u32>, y: Option<u32>) -> String {
    match (x, y) {
        (Some(x), Some(y)) => format!("&x={x}&y={y}"),
        _ => String::new(),
    }
}

/// With `?image=ID`: one feature map of that image (strongest activation, receptive field,
/// picture URLs), a `VisualizeResponse`. Without: the map's top-9 over the probe set, a
/// `TopActivations`.
#[utoipa::path(get, path = "/visualize/{layer}/{map}", tag = "visualize",
    params(("layer" = String, Path, description = "conv1…conv5 or 1…5"), ("map" = usize, Path), VisualizeQuery),
    responses((status = 200, description = "VisualizeResponse with ?image, else TopActivations", body = VisualizeResponse),
        (status = 404, body = zfvis_api::ApiError), (status = 422, body = zfvis_api::ApiError)))]
pub async fn visualize(
    State(state): State<Arc<AppState>>,
    Path((layer_name, map)): Path<(String, usize)>,
    q: Result<Query<VisualizeQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let q = query(q)?;
    let layer = parse_layer(&layer_name)?;
    let Some(id) = q.image else {
        if q.mode.is_some() || q.x.is_some() || q.y.is_some() {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_image",
                "mode, x and y refer to an image: give ?image=ID too (from POST /api/images)",
            ));
        }
        return Ok(Json(top_activations(&state, layer, map).await?).into_response());
    };
    let image = stored(&state, &id)?;
    let (maps, h, w) = check_map(&image, layer, map)?;
    let choice = choose_unit(&image, layer, map, q.x, q.y)?;
    let mode = q.mode.unwrap_or_default();
    let rf = receptive_field(state.model.net.arch, layer).unit_box(choice.unit.0, choice.unit.1);
    let name = CONV_NAMES[layer];
    let unit = unit_query(q.x, q.y);
    Ok(Json(VisualizeResponse {
        layer: name.into(),
        map,
        maps,
        image: id.clone(),
        mode,
        max: choice.max,
        position: UnitPosition {
            x: choice.strongest.1 as u32,
            y: choice.strongest.0 as u32,
        },
        unit: UnitPosition {
            x: choice.unit.1 as u32,
            y: choice.unit.0 as u32,
        },
        value: choice.value,
        map_shape: [h, w],
        receptive_field: PixelBox {
            x0: rf.x0,
            y0: rf.y0,
            x1: rf.x1,
            y1: rf.y1,
        },
        activation_url: format!("/api/images/{id}/activation/{name}/{map}"),
        projection_url: format!(
            "/api/images/{id}/projection/{name}/{map}?mode={}{unit}",
            mode.as_str()
        ),
        patch_url: format!(
            "/api/images/{id}/patch/{name}/{map}?{}",
            unit.trim_start_matches('&')
        ),
    })
    .into_response())
}

/// The map's top-k over the probe set, with the pictures of every entry on disk.
async fn top_activations(
    state: &Arc<AppState>,
    layer: usize,
    map: usize,
) -> Result<TopActivations, AppError> {
    ensure_pictures(state, layer, map).await?;
    let probes = state.probes()?;
    let hits = probes.hits(layer, map)?;
    let rf = receptive_field(state.model.net.arch, layer);
    let name = CONV_NAMES[layer];
    let entries = hits
        .iter()
        .enumerate()
        .map(|(rank, hit)| {
            let b = rf.unit_box(hit.y as usize, hit.x as usize);
            let base = format!("/api/probe/{name}/{map}/{rank}");
            TopActivation {
                rank,
                value: hit.value,
                image: probes.index.images[hit.image as usize].path.clone(),
                label: probes.labels[hit.image as usize].clone(),
                unit: UnitPosition {
                    x: hit.x as u32,
                    y: hit.y as u32,
                },
                receptive_field: PixelBox {
                    x0: b.x0,
                    y0: b.y0,
                    x1: b.x1,
                    y1: b.y1,
                },
                patch_url: format!("{base}/patch.png"),
                reconstruction_url: format!("{base}/reconstruction.png"),
                open_url: format!("/api/probe/images/{}", hit.image),
            }
        })
        .collect();
    Ok(TopActivations {
        layer: name.into(),
        map,
        maps: probes.index.layers[layer].hits.len(),
        probe_images: probes.index.images.len(),
        probe_name: probes.name.clone(),
        entries,
    })
}

/// A top-k entry's patch or reconstruction (`patch.png` or `reconstruction.png`).
#[utoipa::path(get, path = "/api/probe/{layer}/{map}/{rank}/{picture}", tag = "visualize",
    params(("layer" = String, Path), ("map" = usize, Path), ("rank" = usize, Path),
        ("picture" = String, Path, description = "patch.png or reconstruction.png")),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = zfvis_api::ApiError)))]
pub async fn probe_picture(
    State(state): State<Arc<AppState>>,
    Path((layer, map, rank, picture)): Path<(String, usize, usize, String)>,
) -> Result<Response, AppError> {
    let layer = parse_layer(&layer)?;
    let kind = Picture::parse(&picture).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_picture",
            format!("no picture '{picture}': use patch.png or reconstruction.png"),
        )
    })?;
    let probes = state.probes()?;
    let hit = *probes.hits(layer, map)?.get(rank).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "rank_out_of_range",
            format!(
                "this map has {} entries; there is no rank {rank}",
                probes.index.k
            ),
        )
    })?;
    let path = probes.picture_path(&hit, layer, map, kind);
    if !path.exists() {
        ensure_pictures(&state, layer, map).await?;
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| AppError::internal(format!("reading {}: {e}", path.display())))?;
    Ok(png_response(Arc::new(bytes)))
}

/// Opens probe image `index` as if it had been uploaded.
#[utoipa::path(post, path = "/api/probe/images/{index}", tag = "images",
    params(("index" = usize, Path)),
    responses((status = 200, body = ImageResponse), (status = 404, body = zfvis_api::ApiError)))]
pub async fn open_probe_image(
    State(state): State<Arc<AppState>>,
    Path(index): Path<usize>,
) -> Result<Json<ImageResponse>, AppError> {
    let probes = state.probes()?;
    let image = probes.index.images.get(index).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!(
                "the probe set has {} images; there is no {index}",
                probes.index.images.len()
            ),
        )
    })?;
    let path = probes.root.join(&image.path);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| AppError::internal(format!("reading {}: {e}", path.display())))?;
    Ok(Json(store_image(&state, bytes).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PictureQuery {
    mode: Option<ProjectionMode>,
    x: Option<u32>,
    y: Option<u32>,
    /// Crop the projection to the unit's receptive field (default: yes in unit mode, no in map mode).
    crop: Option<bool>,
}

/// The activation map as a viridis heatmap, one pixel per unit.
#[utoipa::path(get, path = "/api/images/{id}/activation/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path)),
    responses((status = 200, content_type = "image/png", description = "PNG")))]
pub async fn activation_png(
    State(state): State<Arc<AppState>>,
    Path((id, layer, map)): Path<(String, String, usize)>,
) -> Result<Response, AppError> {
    let layer = parse_layer(&layer)?;
    let image = stored(&state, &id)?;
    let (_, h, w) = check_map(&image, layer, map)?;
    let plane = image.trace.convs[layer]
        .activation
        .get(0)
        .and_then(|t| t.get(map))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| AppError::internal(e.to_string()))?;
    let img = zfnet::render::heatmap_image(&plane, h, w, None);
    Ok(png_response(Arc::new(zfnet::render::png(&img))))
}

/// The input patch under the unit's receptive field.
#[utoipa::path(get, path = "/api/images/{id}/patch/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path), PictureQuery),
    responses((status = 200, content_type = "image/png", description = "PNG")))]
pub async fn patch_png(
    State(state): State<Arc<AppState>>,
    Path((id, layer, map)): Path<(String, String, usize)>,
    q: Result<Query<PictureQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let (_, layer, image, choice) = resolve_unit(&state, &id, &layer, map, q)?;
    let b = receptive_field(state.model.net.arch, layer).unit_box(choice.unit.0, choice.unit.1);
    let patch = zfnet::render::crop(&image.crop, b);
    Ok(png_response(Arc::new(zfnet::render::png(&patch))))
}

/// The picture routes' shared opening: their query, layer, stored image and chosen unit.
fn resolve_unit(
    state: &AppState,
    id: &str,
    layer: &str,
    map: usize,
    q: Result<Query<PictureQuery>, QueryRejection>,
) -> Result<(PictureQuery, usize, Arc<StoredImage>, UnitChoice), AppError> {
    let q = query(q)?;
    let layer = parse_layer(layer)?;
    let image = stored(state, id)?;
    let choice = choose_unit(&image, layer, map, q.x, q.y)?;
    Ok((q, layer, image, choice))
}

/// The deconvnet projection of the map (or its chosen unit) to pixel space.
#[utoipa::path(get, path = "/api/images/{id}/projection/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path), PictureQuery),
    responses((status = 200, content_type = "image/png", description = "PNG")))]
pub async fn projection_png(
    State(state): State<Arc<AppState>>,
    Path((id, layer, map)): Path<(String, String, usize)>,
    q: Result<Query<PictureQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let (q, layer, image, choice) = resolve_unit(&state, &id, &layer, map, q)?;
    let mode = q.mode.unwrap_or_default();
    let crop = q.crop.unwrap_or(mode == ProjectionMode::Unit);
    let key = format!(
        "{id}/{layer}/{map}/{}/{:?}/{crop}",
        mode.as_str(),
        choice.unit
    );
    if let Some(png) = state.images.png(&key) {
        return Ok(png_response(png));
    }
    let arch = state.model.net.arch;
    let png = state
        .run_blocking(move |model| {
            let selection = match mode {
                ProjectionMode::Unit => Selection::Units(vec![choice.unit]),
                ProjectionMode::Map => Selection::WholeMap,
            };
            let projection = project(&model.net, &image.trace, layer, map, &selection)?;
            let side = projection
                .dim(3)
                .map_err(|e| AppError::internal(e.to_string()))?;
            let data = projection
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| AppError::internal(e.to_string()))?;
            let region = if crop {
                receptive_field(arch, layer).unit_box(choice.unit.0, choice.unit.1)
            } else {
                zfnet::render::whole(side)
            };
            let picture = zfnet::render::projection_image(&data, side, region);
            Ok(Arc::new(zfnet::render::png(&picture)))
        })
        .await?;
    state.images.put_png(key, png.clone());
    Ok(png_response(png))
}
