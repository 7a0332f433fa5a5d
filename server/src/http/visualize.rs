//! One feature map of an uploaded image: `/visualize/{layer}/{map}?image=ID` (without `image`: the
//! map's top-9, see [`super::probe`]) and its pictures (activation, patch, projection).

use super::extract::{MapParam, StoredParam, Q};
use super::images::stored;
use super::{png_response, png_response_shared, ApiRouter};
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use utoipa_axum::routes;
use zfnet::deconv::Rule;
use zfnet::views::{self, UnitChoice};
use zfvis_api::{
    paths, ApiError, ErrorCode, Method, MethodPicture, PixelBox, ProjectionMode, UnitPosition,
    VisualizeResponse,
};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(visualize))
        .routes(routes!(activation_png))
        .routes(routes!(patch_png))
        .routes(routes!(projection_png))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VisualizeQuery {
    /// Image id from `POST /api/images`.
    image: Option<String>,
    /// `unit` (default: the strongest activation only) or `map` (the whole feature map).
    mode: Option<ProjectionMode>,
    /// Unit column to project from instead of the strongest (with `y`).
    x: Option<u32>,
    /// Unit row.
    y: Option<u32>,
}

/// `(y, x)` from optional `x` and `y`: both or neither.
fn unit(x: Option<u32>, y: Option<u32>) -> Result<Option<(usize, usize)>, AppError> {
    match (x, y) {
        (None, None) => Ok(None),
        (Some(x), Some(y)) => Ok(Some((y as usize, x as usize))),
        _ => Err(AppError::new(
            ErrorCode::BadQuery,
            "give both x and y, or neither",
        )),
    }
}

fn position((y, x): (usize, usize)) -> UnitPosition {
    UnitPosition {
        x: x as u32,
        y: y as u32,
    }
}

pub fn pixel_box(b: zfnet::receptive::PixelBox) -> PixelBox {
    PixelBox {
        x0: b.x0,
        y0: b.y0,
        x1: b.x1,
        y1: b.y1,
    }
}

/// With `?image=ID`: one feature map of that image (strongest activation, receptive field,
/// picture URLs), a `VisualizeResponse`. Without: the map's top-9 over the probe set, a
/// `TopActivations`.
#[utoipa::path(get, path = "/visualize/{layer}/{map}", tag = "visualize",
    params(("layer" = String, Path, description = "conv1…conv5 or 1…5"), ("map" = usize, Path), VisualizeQuery),
    responses((status = 200, description = "VisualizeResponse with ?image, else TopActivations", body = VisualizeResponse),
        (status = 404, body = ApiError), (status = 422, body = ApiError)))]
async fn visualize(
    State(state): State<Arc<AppState>>,
    Q(q): Q<VisualizeQuery>,
    at: MapParam,
) -> Result<Response, AppError> {
    let Some(id) = q.image else {
        if q.mode.is_some() || q.x.is_some() || q.y.is_some() {
            return Err(AppError::new(
                ErrorCode::BadQuery,
                "mode, x and y refer to an image: give ?image=ID too (from POST /api/images)",
            ));
        }
        let top = super::probe::top_activations(&state, at).await?;
        return Ok(Json(top).into_response());
    };
    let image = stored(&state, &id).await?;
    let (maps, h, w) = views::check_map(&image.trace, at.layer, at.map)?;
    let requested = unit(q.x, q.y)?;
    let choice = views::choose_unit(&image.trace, at.layer, at.map, requested)?;
    let mode = q.mode.unwrap_or_default();
    let name = at.layer_name();
    let unit_xy = requested.map(|(y, x)| (x as u32, y as u32));
    Ok(Json(VisualizeResponse {
        layer: name.into(),
        map: at.map,
        maps,
        mode,
        max: choice.max,
        position: position(choice.strongest),
        unit: position(choice.unit),
        value: choice.value,
        map_shape: [h, w],
        receptive_field: pixel_box(views::unit_box(&state.model, at.layer, choice.unit)),
        activation_url: state.url(paths::activation(&id, name, at.map)),
        projection_url: state.url(paths::projection(&id, name, at.map, mode, unit_xy)),
        patch_url: state.url(paths::patch(&id, name, at.map, unit_xy)),
        methods: Method::ALL
            .iter()
            .map(|&m| MethodPicture {
                method: m,
                title: m.title().into(),
                about: m.about().into(),
                url: state.url(paths::projection_by(
                    &id,
                    name,
                    at.map,
                    ProjectionMode::Unit,
                    unit_xy,
                    m,
                )),
            })
            .collect(),
        image: id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PictureQuery {
    mode: Option<ProjectionMode>,
    /// How the unit is taken back to pixels: `deconvnet` (default), `gradient` or `guided`.
    method: Option<Method>,
    x: Option<u32>,
    y: Option<u32>,
    /// Crop the projection to the unit's receptive field (default: yes in unit mode, no in map mode).
    crop: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ActivationQuery {
    /// `map` (default): 0 → this map's maximum; `layer`: 0 → the strongest activation of the whole
    /// layer, so thumbnails compare across maps.
    scale: Option<String>,
}

/// The activation map as a viridis heatmap, one pixel per unit.
#[utoipa::path(get, path = "/api/images/{id}/activation/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path), ActivationQuery),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError),
        (status = 422, body = ApiError)))]
async fn activation_png(
    Q(q): Q<ActivationQuery>,
    at: MapParam,
    stored: StoredParam,
) -> Result<Response, AppError> {
    let shared = match q.scale.as_deref() {
        None | Some("map") => false,
        Some("layer") => true,
        Some(other) => {
            return Err(AppError::new(
                ErrorCode::BadQuery,
                format!("scale must be map or layer, not \"{other}\""),
            ))
        }
    };
    let img = views::activation_image(&stored.image.trace, at.layer, at.map, shared)?;
    Ok(png_response(zfnet::render::png(&img)))
}

/// The picture routes' shared opening: the stored image's chosen unit.
fn choose(stored: &StoredParam, at: MapParam, q: &PictureQuery) -> Result<UnitChoice, AppError> {
    let requested = unit(q.x, q.y)?;
    Ok(views::choose_unit(
        &stored.image.trace,
        at.layer,
        at.map,
        requested,
    )?)
}

/// The input patch under the unit's receptive field.
#[utoipa::path(get, path = "/api/images/{id}/patch/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path), PictureQuery),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError),
        (status = 422, body = ApiError)))]
async fn patch_png(
    State(state): State<Arc<AppState>>,
    Q(q): Q<PictureQuery>,
    at: MapParam,
    stored: StoredParam,
) -> Result<Response, AppError> {
    let choice = choose(&stored, at, &q)?;
    let b = views::unit_box(&state.model, at.layer, choice.unit);
    let patch = zfnet::render::crop(&stored.image.crop, b);
    Ok(png_response(zfnet::render::png(&patch)))
}

/// The map (or its chosen unit) taken back to pixel space: by the deconvnet (the paper), or with
/// `method=gradient` / `guided` by the two attribution methods that differ from it only at ReLUs.
#[utoipa::path(get, path = "/api/images/{id}/projection/{layer}/{map}", tag = "visualize",
    params(("id" = String, Path), ("layer" = String, Path), ("map" = usize, Path), PictureQuery),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError),
        (status = 422, body = ApiError)))]
async fn projection_png(
    State(state): State<Arc<AppState>>,
    Q(q): Q<PictureQuery>,
    at: MapParam,
    stored: StoredParam,
) -> Result<Response, AppError> {
    let choice = choose(&stored, at, &q)?;
    let mode = q.mode.unwrap_or_default();
    let method = q.method.unwrap_or_default();
    let crop = q.crop.unwrap_or(mode == ProjectionMode::Unit);
    let key = format!(
        "{}/{}/{}/{}/{:?}/{crop}/{}",
        stored.id,
        at.layer,
        at.map,
        mode.as_str(),
        choice.unit,
        method.as_str()
    );
    if let Some(png) = state.images.png(&key) {
        return Ok(png_response_shared(png));
    }
    // identical projections asked for at once (a class on one permalink) are computed once
    let _turn = state.flights.turn(&key).await;
    if let Some(png) = state.images.png(&key) {
        return Ok(png_response_shared(png));
    }
    let image = stored.image.clone();
    let png = state
        .run_blocking(move |model| {
            let unit = (mode == ProjectionMode::Unit).then_some(choice.unit);
            let crop = crop.then_some(choice.unit);
            let rule = match method {
                Method::Deconvnet => Rule::Deconvnet,
                Method::Gradient => Rule::Gradient,
                Method::Guided => Rule::Guided,
            };
            let picture =
                views::projection_image(model, &image.trace, at.layer, at.map, unit, crop, rule)?;
            Ok(Arc::new(zfnet::render::png(&picture)))
        })
        .await?;
    state.images.put_png(key, png.clone());
    Ok(png_response_shared(png))
}
