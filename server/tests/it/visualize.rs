//! The visualize API against a real server: every layer, both modes, the pictures equal what
//! the library computes in-process, and bad requests get JSON errors.

use crate::common;
use crate::common::{demo_image, fixture_weights, upload, Server};
use reqwest::StatusCode;
use zfvis_api::{LayerActivations, VisualizeResponse};

async fn get_png(client: &reqwest::Client, url: &str) -> image::RgbImage {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    assert_eq!(resp.headers()["content-type"], "image/png");
    image::load_from_memory(&resp.bytes().await.unwrap())
        .unwrap()
        .to_rgb8()
}

#[tokio::test]
async fn every_layer_projects_in_both_modes_and_matches_the_library() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "horses.jpg").await;
    assert_eq!(image.id.len(), 64, "the full SHA-256");
    let again = upload(&client, &server.url, "horses.jpg").await;
    assert_eq!(again.id, image.id, "content-addressed");

    // the same computation in this process
    let model = zfnet::LoadedModel::load(&fixture_weights(), &candle_core::Device::Cpu).unwrap();
    let x = zfnet::preprocess::prepare(&demo_image("horses.jpg"), &model.manifest.preprocess)
        .unwrap()
        .to_tensor(&candle_core::Device::Cpu)
        .unwrap();
    let trace = model.net.forward_trace(&x).unwrap();

    let sides = [110, 26, 13, 13, 13];
    for layer in 1..=5usize {
        let layer_name = if layer % 2 == 0 {
            layer.to_string()
        } else {
            format!("conv{layer}")
        };
        let acts: LayerActivations = common::get_json(
            &client,
            &format!("{}/api/images/{}/layers/{layer_name}", server.url, image.id),
        )
        .await;
        let map = (0..acts.max.len())
            .max_by(|&a, &b| acts.max[a].total_cmp(&acts.max[b]))
            .unwrap();
        for mode in ["unit", "map"] {
            let v: VisualizeResponse = common::get_json(
                &client,
                &format!(
                    "{}/visualize/{layer_name}/{map}?image={}&mode={mode}",
                    server.url, image.id
                ),
            )
            .await;
            assert_eq!(v.layer, format!("conv{layer}"));
            assert_eq!(v.map_shape, [sides[layer - 1]; 2]);
            assert_eq!(v.max, acts.max[map]);
            assert_eq!(v.value, v.max);
            let rf = v.receptive_field;
            assert!(rf.x0 < rf.x1 && rf.y0 < rf.y1 && rf.x1 <= 224 && rf.y1 <= 224);

            let heat = get_png(&client, &format!("{}{}", server.url, v.activation_url)).await;
            // on the layer's shared scale the strongest map looks the same, a weaker one dimmer
            let shared = get_png(
                &client,
                &format!("{}{}?scale=layer", server.url, v.activation_url),
            )
            .await;
            assert!(
                shared == heat,
                "conv{layer}: the strongest map is its layer's scale"
            );
            let weakest = (0..acts.max.len())
                .min_by(|&a, &b| acts.max[a].total_cmp(&acts.max[b]))
                .unwrap();
            if acts.max[weakest] > 0.0 && acts.max[weakest] < 0.5 * acts.max[map] {
                let url = zfvis_api::paths::activation(&image.id, &layer_name, weakest);
                let own = get_png(&client, &format!("{}{url}", server.url)).await;
                let dim = get_png(&client, &format!("{}{url}?scale=layer", server.url)).await;
                let brightest =
                    |img: &image::RgbImage| img.pixels().map(|p| p.0[1] as u32).max().unwrap_or(0);
                assert!(
                    brightest(&dim) < brightest(&own),
                    "conv{layer} map {weakest}: not dimmer"
                );
            }
            assert_eq!(
                heat.dimensions(),
                (sides[layer - 1] as u32, sides[layer - 1] as u32)
            );
            let patch = get_png(&client, &format!("{}{}", server.url, v.patch_url)).await;
            assert_eq!(patch.dimensions(), (rf.x1 - rf.x0, rf.y1 - rf.y0));
            let proj = get_png(&client, &format!("{}{}", server.url, v.projection_url)).await;

            let selection = if mode == "unit" {
                zfnet::deconv::Selection::StrongestUnit
            } else {
                zfnet::deconv::Selection::WholeMap
            };
            let want =
                zfnet::deconv::project(&model.net, &trace, layer - 1, map, &selection).unwrap();
            let data: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                data.iter().any(|v| *v != 0.0),
                "conv{layer} {mode}: empty projection"
            );
            if mode == "map" {
                let expected = zfnet::render::projection_image_clipped(
                    &data,
                    224,
                    zfnet::render::whole(224),
                    zfnet::render::MAP_PROJECTION_QUANTILE,
                );
                assert_eq!(proj.dimensions(), (224, 224));
                assert!(
                    proj == expected,
                    "conv{layer} map projection differs from the library's"
                );
            } else {
                assert_eq!(
                    proj.dimensions(),
                    patch.dimensions(),
                    "unit projections are cropped to the RF"
                );
                // nothing outside the receptive field: the projection there must be exactly zero
                let (x0, y0, x1, y1) = (
                    rf.x0 as usize,
                    rf.y0 as usize,
                    rf.x1 as usize,
                    rf.y1 as usize,
                );
                for c in 0..3 {
                    for y in 0..224 {
                        for x in 0..224 {
                            if !(x0..x1).contains(&x) || !(y0..y1).contains(&y) {
                                assert_eq!(
                                    data[(c * 224 + y) * 224 + x],
                                    0.0,
                                    "signal outside RF at ({x},{y})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The three backward methods of one unit, served side by side, each equal to the library's
/// picture with that rule, and not all the same picture.
#[tokio::test]
async fn the_three_methods_are_served_side_by_side() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "horses.jpg").await;
    let model = zfnet::LoadedModel::load(&fixture_weights(), &candle_core::Device::Cpu).unwrap();
    let x = zfnet::preprocess::prepare(&demo_image("horses.jpg"), &model.manifest.preprocess)
        .unwrap()
        .to_tensor(&candle_core::Device::Cpu)
        .unwrap();
    let trace = model.net.forward_trace(&x).unwrap();
    let v: VisualizeResponse = common::get_json(
        &client,
        &format!("{}/visualize/conv3/5?image={}", server.url, image.id),
    )
    .await;
    let names: Vec<&str> = v.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["deconvnet", "gradient", "guided"]);
    assert_eq!(
        v.methods[0].url, v.projection_url,
        "the deconvnet is the projection"
    );
    let unit = (v.unit.y as usize, v.unit.x as usize);
    let mut pictures = Vec::new();
    for (m, rule) in v.methods.iter().zip(zfnet::deconv::Rule::ALL) {
        assert!(m.about.len() > 40 && m.title.contains("20"), "{m:?}");
        let got = get_png(&client, &format!("{}{}", server.url, m.url)).await;
        let want =
            zfnet::views::projection_image(&model, &trace, 2, 5, Some(unit), Some(unit), rule)
                .unwrap();
        assert!(
            got == want,
            "{}: the served picture differs",
            m.method.as_str()
        );
        pictures.push(got);
    }
    assert!(pictures[0] != pictures[1] && pictures[1] != pictures[2]);
    common::expect_get_errors(
        &client,
        &server.url,
        &[(
            format!("/api/images/{}/projection/conv3/5?method=lrp", image.id),
            422,
            "bad_query",
        )],
    )
    .await;
    let resp = client
        .get(format!(
            "{}/api/images/{}/projection/conv3/5?method=lrp",
            server.url, image.id
        ))
        .send()
        .await
        .unwrap();
    let err: zfvis_api::ApiError = resp.json().await.unwrap();
    assert!(
        err.error.contains("lrp"),
        "the error names the value: {}",
        err.error
    );
}

#[tokio::test]
async fn visualize_errors_are_json() {
    let server = Server::start(&fixture_weights(), &[]);
    let client = reqwest::Client::new();
    let image = upload(&client, &server.url, "kite.jpg").await;
    let cases = [
        (
            format!("/visualize/conv6/0?image={}", image.id),
            404,
            "unknown_layer",
        ),
        (
            format!("/visualize/fc6/0?image={}", image.id),
            404,
            "unknown_layer",
        ),
        (
            format!("/visualize/conv1/16?image={}", image.id),
            404,
            "map_out_of_range",
        ),
        (
            "/visualize/conv1/0?image=0123456789abcdef0123456789abcdef".to_string(),
            404,
            "image_not_found",
        ),
        (
            format!("/visualize/conv1/0?image={}&mode=all", image.id),
            422,
            "bad_query",
        ),
        (
            format!("/visualize/conv2/0?image={}&x=26&y=0", image.id),
            422,
            "position_out_of_range",
        ),
        (
            format!("/visualize/conv2/0?image={}&x=3", image.id),
            422,
            "bad_query",
        ),
        ("/visualize/conv2/0".to_string(), 404, "no_probe_index"),
        ("/visualize/conv2/0?mode=map".to_string(), 422, "bad_query"),
        (
            format!("/api/images/{}/projection/conv3/48", image.id),
            404,
            "map_out_of_range",
        ),
        (
            format!("/api/images/{}/activation/conv3/4?scale=global", image.id),
            422,
            "bad_query",
        ),
    ];
    common::expect_get_errors(&client, &server.url, &cases).await;
    // an explicit unit is honoured
    let v: VisualizeResponse = common::get_json(
        &client,
        &format!(
            "{}/visualize/conv1/2?image={}&x=5&y=7",
            server.url, image.id
        ),
    )
    .await;
    assert_eq!((v.unit.x, v.unit.y), (5, 7));
    assert_eq!(v.receptive_field.x0, 9);
    assert_eq!(v.receptive_field.y0, 13);
    // and the OpenAPI document lists the routes
    let spec: serde_json::Value =
        common::get_json(&client, &format!("{}/api/openapi.json", server.url)).await;
    for path in [
        "/visualize/{layer}/{map}",
        "/api/images",
        "/api/images/{id}/projection/{layer}/{map}",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
}

#[tokio::test]
async fn conv1_filters_are_drawn_from_the_weights() {
    let weights = fixture_weights();
    let server = Server::start(&weights, &[]);
    let client = reqwest::Client::new();
    let grid = get_png(
        &client,
        &format!("{}/api/model/filters/conv1.png", server.url),
    )
    .await;
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    let w = &tensors["conv1.weight"];
    let (n, _, k, _) = w.dims4().unwrap();
    let (cols, scale) = (12, 8);
    let cell = k * scale + scale;
    assert_eq!(
        grid.dimensions(),
        (
            (cols * cell + scale) as u32,
            (n.div_ceil(cols) * cell + scale) as u32
        )
    );
    // filter f's tap (c, y, x) is drawn at 128 + w·127/max|w| of that filter
    let data = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for f in [0, n - 1] {
        let filter = &data[f * 3 * k * k..(f + 1) * 3 * k * k];
        let peak = filter.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (y, x) in [(0, 0), (k - 1, 2)] {
            let px = grid.get_pixel(
                ((f % cols) * cell + scale + x * scale + 3) as u32,
                ((f / cols) * cell + scale + y * scale + 3) as u32,
            );
            for c in 0..3 {
                let want = (128.0 + filter[(c * k + y) * k + x] * 127.0 / peak).round();
                assert!(
                    (px.0[c] as f32 - want).abs() <= 1.0,
                    "filter {f} ({y},{x}) c{c}"
                );
            }
        }
    }
}
