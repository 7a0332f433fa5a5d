//! Every URL of the API, built in one place for the server (the URLs it puts in its answers) and
//! the UI (the URLs it fetches). The server's routes are declared with the same templates
//! (`{name}` segments); a server test checks each builder against the OpenAPI document.
//!
//! Layers are written as given (`conv1` or `1`); ids and keys are hex, so nothing needs escaping.

use crate::{Method, ProjectionMode};

/// The route templates, in axum/OpenAPI syntax.
pub mod templates {
    pub const HEALTH: &str = "/api/health";
    pub const MODEL: &str = "/api/model";
    pub const MODELS: &str = "/api/models";
    pub const CONV1_FILTERS: &str = "/api/model/filters/conv1.png";
    pub const PREDICT: &str = "/api/predict";
    pub const IMAGES: &str = "/api/images";
    pub const IMAGE: &str = "/api/images/{id}";
    pub const INPUT: &str = "/api/images/{id}/input";
    pub const LAYER: &str = "/api/images/{id}/layers/{layer}";
    pub const ACTIVATION: &str = "/api/images/{id}/activation/{layer}/{map}";
    pub const PROJECTION: &str = "/api/images/{id}/projection/{layer}/{map}";
    pub const PATCH: &str = "/api/images/{id}/patch/{layer}/{map}";
    pub const VISUALIZE: &str = "/visualize/{layer}/{map}";
    pub const PROBE_PICTURE: &str = "/api/probe/{layer}/{map}/{rank}/{picture}";
    pub const PROBE_IMAGE: &str = "/api/probe/images/{index}";
    pub const PROBE_EXAMPLES: &str = "/api/probe/examples";
    pub const OCCLUSION: &str = "/api/images/{id}/occlusion";
    pub const SWEEP: &str = "/api/images/{id}/occlusion/{key}";
    pub const SWEEP_EVENTS: &str = "/api/images/{id}/occlusion/{key}/events";
    pub const SWEEP_PICTURE: &str = "/api/images/{id}/occlusion/{key}/{picture}";
    pub const INVARIANCE: &str = "/api/images/{id}/invariance";
    pub const CORRESPONDENCE: &str = "/api/correspondence";
    pub const CORRESPONDENCE_PRESET: &str = "/api/correspondence/preset";
    pub const EVOLUTION: &str = "/api/evolution/{layer}/{map}";
    pub const EVOLUTION_PICTURE: &str = "/api/evolution/{layer}/{map}/{epoch}/{picture}";
    pub const OPENAPI: &str = "/api/openapi.json";
}

/// A unit of a feature map as a query suffix (`&x=…&y=…`), or nothing for the strongest.
fn unit_query(unit: Option<(u32, u32)>) -> String {
    unit.map_or(String::new(), |(x, y)| format!("&x={x}&y={y}"))
}

pub fn image(id: &str) -> String {
    format!("/api/images/{id}")
}

pub fn input(id: &str) -> String {
    format!("/api/images/{id}/input")
}

pub fn layer(id: &str, layer: &str) -> String {
    format!("/api/images/{id}/layers/{layer}")
}

pub fn activation(id: &str, layer: &str, map: usize) -> String {
    format!("/api/images/{id}/activation/{layer}/{map}")
}

/// [`activation`] drawn on the layer's shared scale (0 → the layer's strongest activation).
pub fn activation_shared(id: &str, layer: &str, map: usize) -> String {
    format!("/api/images/{id}/activation/{layer}/{map}?scale=layer")
}

/// The deconvnet projection of a map (or of `unit`, `(x, y)`; default the strongest).
pub fn projection(
    id: &str,
    layer: &str,
    map: usize,
    mode: ProjectionMode,
    unit: Option<(u32, u32)>,
) -> String {
    projection_by(id, layer, map, mode, unit, Method::Deconvnet)
}

/// [`projection`] by `method` (the deconvnet adds nothing to the URL).
pub fn projection_by(
    id: &str,
    layer: &str,
    map: usize,
    mode: ProjectionMode,
    unit: Option<(u32, u32)>,
    method: Method,
) -> String {
    let by = match method {
        Method::Deconvnet => String::new(),
        m => format!("&method={}", m.as_str()),
    };
    format!(
        "/api/images/{id}/projection/{layer}/{map}?mode={}{}{by}",
        mode.as_str(),
        unit_query(unit)
    )
}

/// The input patch under `unit`'s receptive field (default the strongest unit).
pub fn patch(id: &str, layer: &str, map: usize, unit: Option<(u32, u32)>) -> String {
    let q = unit_query(unit);
    format!(
        "/api/images/{id}/patch/{layer}/{map}?{}",
        q.trim_start_matches('&')
    )
}

/// An uploaded image's view of a map: its id, the projection mode and the unit `(x, y)` (default
/// the strongest).
pub type ImageView<'a> = (&'a str, ProjectionMode, Option<(u32, u32)>);

/// One map of an uploaded image (`image`), or its top-9 over the probe set (`None`).
pub fn visualize(layer: &str, map: usize, image: Option<ImageView>) -> String {
    match image {
        None => format!("/visualize/{layer}/{map}"),
        Some((id, mode, unit)) => format!(
            "/visualize/{layer}/{map}?image={id}&mode={}{}",
            mode.as_str(),
            unit_query(unit)
        ),
    }
}

/// A top-k entry's `patch.png` or `reconstruction.png`.
pub fn probe_picture(layer: &str, map: usize, rank: usize, picture: &str) -> String {
    format!("/api/probe/{layer}/{map}/{rank}/{picture}")
}

pub fn probe_image(index: usize) -> String {
    format!("/api/probe/images/{index}")
}

/// One row of Fig. 4: the map's strongest activation at every snapshot's epoch.
pub fn evolution(layer: &str, map: usize) -> String {
    format!("/api/evolution/{layer}/{map}")
}

/// A snapshot's top-1 `patch.png` or `reconstruction.png` of a map.
pub fn evolution_picture(layer: &str, map: usize, epoch: u32, picture: &str) -> String {
    format!("/api/evolution/{layer}/{map}/{epoch}/{picture}")
}

/// Starts a sweep; `wait` answers with the result.
pub fn occlusion(id: &str, wait: bool) -> String {
    if wait {
        format!("/api/images/{id}/occlusion?wait=true")
    } else {
        format!("/api/images/{id}/occlusion")
    }
}

/// The Fig. 5 curves of an image (POST); `csv` answers `text/csv` instead of JSON.
pub fn invariance(id: &str, csv: bool) -> String {
    if csv {
        format!("/api/images/{id}/invariance?format=csv")
    } else {
        format!("/api/images/{id}/invariance")
    }
}

/// Table 1 for a set of images and parts (POST).
pub fn correspondence() -> String {
    templates::CORRESPONDENCE.to_string()
}

pub fn sweep(id: &str, key: &str) -> String {
    format!("/api/images/{id}/occlusion/{key}")
}

pub fn sweep_events(id: &str, key: &str) -> String {
    format!("/api/images/{id}/occlusion/{key}/events")
}

/// `activation.png`, `probability.png` or `classes.png` of a finished sweep.
pub fn sweep_picture(id: &str, key: &str, picture: &str) -> String {
    format!("/api/images/{id}/occlusion/{key}/{picture}")
}

/// The query parameter that picks a model on a server that serves several.
pub const MODEL_PARAM: &str = "model";

/// `url` for the model `model` (`None`: the server's default): `model=ID` added to its query.
/// Model ids are letters, digits, `-`, `_` and `.`, so nothing needs escaping.
pub fn with_model(url: &str, model: Option<&str>) -> String {
    match model {
        None => url.to_string(),
        Some(m) => {
            let sep = match url.find('?') {
                None => '?',
                Some(i) if i + 1 == url.len() || url.ends_with('&') => {
                    return format!("{url}{MODEL_PARAM}={m}")
                }
                Some(_) => '&',
            };
            format!("{url}{sep}{MODEL_PARAM}={m}")
        }
    }
}

/// The model a URL names with `model=…`, if any.
pub fn model_of(url: &str) -> Option<&str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(MODEL_PARAM)?.strip_prefix('='))
}

/// Whether `id` can name a model: 1–64 of letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn valid_model_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `path` (without its query) fits `template`: the same segments, `{…}` matching any
/// non-empty segment.
pub fn matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            if t.starts_with('{') && t.ends_with('}') {
                !p.is_empty()
            } else {
                t == p
            }
        })
}

#[cfg(test)]
mod tests {
    use super::templates::*;
    use super::*;

    #[test]
    fn every_builder_fits_its_template() {
        let u = Some((3, 4));
        let cases = [
            (IMAGE, image("ab")),
            (INPUT, input("ab")),
            (LAYER, layer("ab", "conv2")),
            (ACTIVATION, activation("ab", "conv2", 7)),
            (
                PROJECTION,
                projection("ab", "conv2", 7, ProjectionMode::Map, u),
            ),
            (PATCH, patch("ab", "conv2", 7, u)),
            (VISUALIZE, visualize("conv2", 7, None)),
            (
                VISUALIZE,
                visualize("conv2", 7, Some(("ab", ProjectionMode::Unit, u))),
            ),
            (PROBE_PICTURE, probe_picture("conv2", 7, 0, "patch.png")),
            (PROBE_IMAGE, probe_image(12)),
            (OCCLUSION, occlusion("ab", true)),
            (SWEEP, sweep("ab", "k")),
            (SWEEP_EVENTS, sweep_events("ab", "k")),
            (SWEEP_PICTURE, sweep_picture("ab", "k", "classes.png")),
            (EVOLUTION, evolution("conv2", 7)),
            (
                EVOLUTION_PICTURE,
                evolution_picture("conv2", 7, 5, "patch.png"),
            ),
        ];
        for (template, path) in cases {
            assert!(matches(template, &path), "{path} does not fit {template}");
        }
        assert!(!matches(IMAGE, "/api/images/ab/input"));
        assert!(!matches(IMAGE, "/api/images/"));
    }

    #[test]
    fn a_model_joins_any_query() {
        assert_eq!(with_model("/api/model", None), "/api/model");
        assert_eq!(
            with_model("/api/model", Some("alex")),
            "/api/model?model=alex"
        );
        assert_eq!(
            with_model(&patch("ab", "conv1", 2, None), Some("a")),
            "/api/images/ab/patch/conv1/2?model=a"
        );
        let u = with_model(
            &projection("ab", "conv1", 2, ProjectionMode::Unit, None),
            Some("a"),
        );
        assert_eq!(u, "/api/images/ab/projection/conv1/2?mode=unit&model=a");
        assert_eq!(model_of(&u), Some("a"));
        assert_eq!(model_of("/api/model?models=x"), None);
        assert_eq!(model_of("/api/model"), None);
        assert!(valid_model_id("zfnet-imagenette_v1.2"));
        for bad in ["", ".hidden", "a/b", "a b", "a&b", "é"] {
            assert!(!valid_model_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn queries_are_well_formed() {
        assert_eq!(
            patch("ab", "conv1", 2, None),
            "/api/images/ab/patch/conv1/2?"
        );
        assert_eq!(
            patch("ab", "conv1", 2, Some((5, 6))),
            "/api/images/ab/patch/conv1/2?x=5&y=6"
        );
        assert_eq!(
            projection("ab", "conv1", 2, ProjectionMode::Unit, None),
            "/api/images/ab/projection/conv1/2?mode=unit"
        );
    }
}
