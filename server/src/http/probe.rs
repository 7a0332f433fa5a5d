//! The probe set: a map's top-9 (served by `/visualize/{layer}/{map}` without `image`), each
//! entry's pictures, and opening a probe image as an upload.

use super::extract::{MapParam, P};
use super::images::store_image;
use super::visualize::pixel_box;
use super::{png_response, ApiRouter};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::probes::{Picture, ProbeSet};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use std::sync::Arc;
use utoipa_axum::routes;
use zfnet::receptive::receptive_field;
use zfvis_api::{
    paths, ApiError, ErrorCode, ImageResponse, TopActivation, TopActivations, UnitPosition,
};

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .routes(routes!(probe_picture))
        .routes(routes!(open_probe_image, super::examples::probe_image_file))
        .routes(routes!(super::examples::class_examples))
}

/// Makes sure every hit of the map has its patch and reconstruction on disk, computing the
/// missing ones in one batch (once, when several requests ask at the same time).
async fn ensure_pictures(state: &Arc<AppState>, at: MapParam) -> Result<(), AppError> {
    ensure_first_pictures(state, at, usize::MAX).await
}

/// [`ensure_pictures`] for the `first` hits only (the evolution view needs the top-1 alone).
async fn ensure_first_pictures(
    state: &Arc<AppState>,
    at: MapParam,
    first: usize,
) -> Result<(), AppError> {
    if state
        .probes()?
        .missing_pictures(at.layer, at.map, first)?
        .is_empty()
    {
        return Ok(());
    }
    // one render per map however many ask at once; the others then find the pictures on disk
    let _turn = state
        .flights
        .turn(&format!("top9/{}/{}", at.layer, at.map))
        .await;
    let missing = state.probes()?.missing_pictures(at.layer, at.map, first)?;
    if missing.is_empty() {
        return Ok(());
    }
    let state2 = state.clone();
    state
        .run_blocking(move |model| {
            Ok(state2
                .probes()?
                .render_pictures(model, at.layer, at.map, &missing)?)
        })
        .await
}

/// Renders every map's top-9 pictures ahead of time, one map at a time and only while no
/// request wants a model slot, so a class never waits for a render (`serve --warm-top9`). A
/// map that is already on disk (earlier runs, other replicas) costs a directory check.
/// Progress goes to `/api/health` (`top9_warm`).
pub async fn warm_top9(state: Arc<AppState>) {
    let maps: Vec<MapParam> = state
        .model
        .net
        .convs
        .iter()
        .enumerate()
        .flat_map(|(layer, conv)| (0..conv.out_channels()).map(move |map| MapParam { layer, map }))
        .collect();
    let total = maps.len();
    let set = |done: usize| {
        if let Ok(mut w) = state.warm.lock() {
            *w = Some((done, total));
        }
    };
    set(0);
    let started = std::time::Instant::now();
    for (done, at) in maps.into_iter().enumerate() {
        while !state.idle() {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        if let Err(e) = ensure_pictures(&state, at).await {
            tracing::warn!(
                "top-9 warm-up stopped at {}/{}: {}",
                at.layer_name(),
                at.map,
                e.message
            );
            return;
        }
        set(done + 1);
        if (done + 1) % 100 == 0 {
            tracing::info!("top-9 warm-up: {} of {total} maps", done + 1);
        }
    }
    tracing::info!(
        "top-9 warm-up: all {total} maps ready ({:.0} s)",
        started.elapsed().as_secs_f32()
    );
}

/// The map's top-k over the probe set, with the pictures of every entry on disk.
pub async fn top_activations(
    state: &Arc<AppState>,
    at: MapParam,
) -> Result<TopActivations, AppError> {
    top_activations_rendered(state, at, usize::MAX).await
}

/// The map's top-k over the probe set, with the pictures of the first `rendered` entries on
/// disk (the others' are rendered when asked for).
pub async fn top_activations_rendered(
    state: &Arc<AppState>,
    at: MapParam,
    rendered: usize,
) -> Result<TopActivations, AppError> {
    let probes = state.probes()?;
    let hits = probes.hits(at.layer, at.map)?;
    ensure_first_pictures(state, at, rendered).await?;
    let rf = receptive_field(&state.model.net.layout, at.layer);
    let name = at.layer_name();
    let entries = hits
        .iter()
        .enumerate()
        .map(|(rank, hit)| TopActivation {
            rank,
            value: hit.value,
            image: probes.index.images[hit.image as usize].path.clone(),
            label: probes.labels[hit.image as usize].clone(),
            unit: UnitPosition {
                x: hit.x as u32,
                y: hit.y as u32,
            },
            receptive_field: pixel_box(rf.unit_box(hit.y as usize, hit.x as usize)),
            patch_url: state.url(paths::probe_picture(name, at.map, rank, "patch.png")),
            reconstruction_url: state.url(paths::probe_picture(
                name,
                at.map,
                rank,
                "reconstruction.png",
            )),
            open_url: state.url(paths::probe_image(hit.image as usize)),
        })
        .collect();
    Ok(TopActivations {
        layer: name.into(),
        map: at.map,
        maps: probes.index.layers[at.layer].hits.len(),
        probe_images: probes.index.images.len(),
        probe_name: probes.name.clone(),
        entries,
    })
}

/// A top-k entry's patch or reconstruction (`patch.png` or `reconstruction.png`).
#[utoipa::path(get, path = "/api/probe/{layer}/{map}/{rank}/{picture}", tag = "visualize",
    params(("layer" = String, Path), ("map" = usize, Path), ("rank" = usize, Path),
        ("picture" = String, Path, description = "patch.png or reconstruction.png")),
    responses((status = 200, content_type = "image/png", description = "PNG"), (status = 404, body = ApiError)))]
async fn probe_picture(
    State(state): State<Arc<AppState>>,
    at: MapParam,
    segments: P<(String, String, usize, String)>,
) -> Result<Response, AppError> {
    let P((_, _, rank, picture)) = segments;
    entry_picture(&state, at, rank, &picture).await
}

/// The patch or reconstruction (`picture`) of a map's top-k entry `rank`, from the disk cache or
/// rendered now.
pub async fn entry_picture(
    state: &Arc<AppState>,
    at: MapParam,
    rank: usize,
    picture: &str,
) -> Result<Response, AppError> {
    let kind = Picture::parse(picture).ok_or_else(|| {
        AppError::new(
            ErrorCode::UnknownPicture,
            format!("no picture '{picture}': use patch.png or reconstruction.png"),
        )
    })?;
    let probes = state.probes()?;
    let hit = *probes.hits(at.layer, at.map)?.get(rank).ok_or_else(|| {
        AppError::new(
            ErrorCode::RankOutOfRange,
            format!(
                "this map has {} entries; there is no rank {rank}",
                probes.index.k
            ),
        )
    })?;
    let path = probes.picture_path(&hit, at.layer, at.map, kind);
    let bytes = match ProbeSet::read_picture(&path) {
        Some(bytes) => bytes,
        None => {
            // missing, or cut short by a crash: (re)compute the map's pictures up to this one
            ensure_first_pictures(state, at, rank + 1).await?;
            ProbeSet::read_picture(&path).ok_or_else(|| {
                AppError::internal(format!("{} is still not a whole PNG", path.display()))
            })?
        }
    };
    Ok(png_response(bytes))
}

/// Opens probe image `index` as if it had been uploaded.
#[utoipa::path(post, path = "/api/probe/images/{index}", tag = "images",
    params(("index" = usize, Path)),
    responses((status = 200, body = ImageResponse), (status = 404, body = ApiError)))]
async fn open_probe_image(
    State(state): State<Arc<AppState>>,
    P(index): P<usize>,
) -> Result<Json<ImageResponse>, AppError> {
    let probes = state.probes()?;
    let (path, bytes) = super::examples::probe_file(&probes, index, usize::MAX).await?;
    let source = match probes.labels.get(index).cloned().flatten() {
        Some(label) => format!("probe image {path} (class: {label})"),
        None => format!("probe image {path}"),
    };
    Ok(Json(store_image(&state, bytes, Some(source)).await?))
}
