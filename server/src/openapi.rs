//! The OpenAPI document served at `/api/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zfvis",
        description = "See inside ZFNet: predictions, feature maps, deconvnet projections."
    ),
    paths(
        crate::routes::health,
        crate::routes::model_info,
        crate::routes::conv1_filters,
        crate::routes::predict,
        crate::visualize::upload_image,
        crate::visualize::get_image,
        crate::visualize::input_png,
        crate::visualize::layer_activations,
        crate::visualize::visualize,
        crate::visualize::activation_png,
        crate::visualize::patch_png,
        crate::visualize::projection_png,
        crate::visualize::probe_picture,
        crate::visualize::open_probe_image,
        crate::occlusion::start,
        crate::occlusion::result,
        crate::occlusion::events,
        crate::occlusion::picture,
    ),
    components(schemas(zfvis_api::ApiError, zfvis_api::TopActivations))
)]
struct ApiDoc;

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
