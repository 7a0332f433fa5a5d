//! Several models in one server. Every model has its own router (the whole API over its own
//! [`AppState`]: caches, probe index, sweeps); [`dispatch`] picks one by the query's `model=ID`
//! (the default without it), takes `model` out of the query and hands the request over, so no
//! handler or query type knows that models can be chosen. URLs in answers name their model again
//! (`AppState::url`). Unknown ids are `404 unknown_model`, naming the id and the ones there are.
//!
//! The models share the CPU ([`crate::state::Group`]: one set of job slots and one queue) and
//! the per-client sweep limit; `GET /api/models` lists them.

use super::ApiRouter;
use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use std::sync::Arc;
use tower::ServiceExt;
use utoipa_axum::routes;
use zfvis_api::paths::MODEL_PARAM;
use zfvis_api::{ErrorCode, ModelList};

pub fn router() -> ApiRouter {
    ApiRouter::new().routes(routes!(list_models))
}

/// Every model this server serves, the default first: pick one with `?model=ID` on any route.
#[utoipa::path(get, path = "/api/models", tag = "model", responses((status = 200, body = ModelList)))]
async fn list_models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let mut members = state.group.members();
    if members.is_empty() {
        // a state never admitted to a server (tests that build one router by hand)
        members.push(state.clone());
    }
    Json(ModelList {
        models: members.iter().map(|m| m.info.summary()).collect(),
    })
}

/// The API router of each model, by id (the first is the default), and the UI's.
#[derive(Clone)]
pub struct Routers {
    models: Arc<Vec<(String, Router)>>,
    ui: Router,
}

impl Routers {
    pub fn new(models: Vec<(String, Router)>, ui: Router) -> Self {
        Routers {
            models: Arc::new(models),
            ui,
        }
    }

    fn pick(&self, model: Option<&str>) -> Result<&Router, AppError> {
        let found = match model {
            None => self.models.first(),
            Some(id) => self.models.iter().find(|(m, _)| m == id),
        };
        found.map(|(_, r)| r).ok_or_else(|| {
            let ids: Vec<&str> = self.models.iter().map(|(m, _)| m.as_str()).collect();
            let asked: String = model.unwrap_or_default().chars().take(80).collect();
            AppError::new(
                ErrorCode::UnknownModel,
                format!(
                    "this server has no model '{asked}'; it serves {} (GET /api/models)",
                    ids.join(", ")
                ),
            )
        })
    }
}

/// Hands an API request to the router of the model its query names, anything else to the UI.
pub async fn dispatch(State(routers): State<Routers>, mut request: Request) -> Response {
    let path = request.uri().path();
    let api = path == "/api" || path.starts_with("/api/") || path.starts_with("/visualize/");
    if !api {
        return match routers.ui.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    let picked = take_model(request.uri()).and_then(|(model, uri)| {
        let router = routers.pick(model.as_deref())?.clone();
        Ok((router, uri))
    });
    match picked {
        Ok((router, uri)) => {
            *request.uri_mut() = uri;
            match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
        Err(e) => e.into_response(),
    }
}

/// The `model` a URI's query names (at most once), and the URI without it.
fn take_model(uri: &Uri) -> Result<(Option<String>, Uri), AppError> {
    let Some(query) = uri.query() else {
        return Ok((None, uri.clone()));
    };
    let mut model = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != MODEL_PARAM {
            rest.push(pair);
        } else if model.replace(value.to_string()).is_some() {
            return Err(AppError::new(
                ErrorCode::BadQuery,
                "the query names more than one model; give `model` once",
            ));
        }
    }
    if model.is_none() {
        return Ok((None, uri.clone()));
    }
    let path_and_query = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    let uri = path_and_query
        .parse::<Uri>()
        .map_err(|e| AppError::new(ErrorCode::BadQuery, format!("bad URI: {e}")))?;
    Ok((model, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_leaves_the_query_and_nothing_else_does() {
        let (m, u) = take_model(&"/api/x?a=1&model=alex&b=2".parse().unwrap()).unwrap();
        assert_eq!(m.as_deref(), Some("alex"));
        assert_eq!(u, "/api/x?a=1&b=2");
        let (m, u) = take_model(&"/api/x?model=alex".parse().unwrap()).unwrap();
        assert_eq!(
            (m.as_deref(), u.to_string().as_str()),
            (Some("alex"), "/api/x")
        );
        let (m, u) = take_model(&"/api/x?models=3".parse().unwrap()).unwrap();
        assert_eq!((m, u.to_string().as_str()), (None, "/api/x?models=3"));
        assert!(take_model(&"/api/x?model=a&model=b".parse().unwrap()).is_err());
    }
}
