//! Classroom mode: a guided tour through the paper's story on a demo photo, one idea per step,
//! large type and high contrast for a projector; ← → / space / Esc, URL `#/tour/N`.

use crate::api;
use leptos::prelude::*;
use zfvis_api::{
    ImageResponse, InvarianceRequest, InvarianceResponse, LayerActivations, OcclusionRequest,
    OcclusionResponse, OcclusionStatus, TopActivations, VisualizeResponse,
};

pub const STEPS: usize = 11;
const DEMO: &str = "dog.jpg";

/// `#/tour/N` → step N (1-based).
pub fn step_from_hash(hash: &str) -> Option<usize> {
    let rest = hash
        .trim_start_matches('#')
        .trim_start_matches('/')
        .strip_prefix("tour")?;
    let n = rest.trim_start_matches('/').parse().unwrap_or(1);
    Some(n.clamp(1, STEPS))
}

fn go(step: Option<usize>) {
    if let Some(w) = web_sys::window() {
        let hash = step.map_or("#/".to_string(), |s| format!("#/tour/{s}"));
        let _ = w.location().set_hash(&hash);
    }
}

struct Step {
    title: &'static str,
    text: &'static str,
}

const TEXT: [Step; STEPS] = [
    Step { title: "1 · Layer 1 filters", text: "ZFNet's first layer is 96 small 7×7 colour filters, learned from the training images (paper Fig. 6c)." },
    Step { title: "2 · Layer 1 feature maps", text: "Sliding each filter over the photo gives one feature map: bright wherever the photo looks like that filter." },
    Step { title: "3 · Layer 2", text: "Each tile pairs a probe-image patch with its deconvnet reconstruction: the nine strongest activations of the layer-2 map this photo excites most (paper Fig. 2). Layer-2 units see 27-pixel patches." },
    Step { title: "4 · Layer 3", text: "Deeper units see larger patches (75 pixels at layer 3) and can combine what layer 2 found." },
    Step { title: "5 · Layer 4", text: "Layer-4 units see 107-pixel squares; in a trained network their nine best patches often come from one class." },
    Step { title: "6 · Layer 5", text: "Layer-5 units see 139-pixel squares, most of the 224-pixel input; compare what their nine best patches have in common." },
    Step { title: "7 · The deconvnet", text: "To see what one activation saw, the deconvnet runs the network backwards: unpool with the recorded switches, rectify, filter with the transposed weights." },
    Step { title: "8 · Occlusion", text: "Hide one part of the photo with a grey square at a time: where the class probability drops, the network was looking there (paper Fig. 7)." },
    Step { title: "9 · Three ways back", text: "The deconvnet is one of three ways to take a unit back to pixels; the gradient and guided backpropagation differ from it only in what they do at each ReLU on the way down." },
    Step { title: "10 · Invariance", text: "Shift, zoom and turn the photo and measure how far the features move: layer 1 jumps at the smallest shift, layer 7 grows gradually, as the paper found (Fig. 5); the probability shows what the answer survives." },
    Step { title: "11 · Correspondence", text: "Hide the same part (an eye, the nose) in five dog photos: if the features change the same way each time, the network has found that part in every photo without being told about parts (paper Fig. 8, Table 1)." },
];

#[component]
pub fn Tour(step: ReadSignal<Option<usize>>) -> impl IntoView {
    let keys = window_event_listener(leptos::ev::keydown, move |e| {
        let Some(s) = step.get_untracked() else {
            return;
        };
        match e.key().as_str() {
            "ArrowRight" | " " | "PageDown" | "Enter" => {
                e.prevent_default();
                go(Some((s + 1).min(STEPS)));
            }
            "ArrowLeft" | "PageUp" | "Backspace" => {
                e.prevent_default();
                go(Some(s.saturating_sub(1).max(1)));
            }
            "Escape" => go(None),
            _ => {}
        }
    });
    on_cleanup(move || keys.remove());
    // the demo photo, uploaded once for the whole tour
    let image = LocalResource::new(|| async { crate::upload::upload_demo(DEMO).await });
    view! {
        <div class="tour" id="tour" role="dialog" aria-label="classroom tour">
            {move || step.get().map(|s| {
                let t = &TEXT[s - 1];
                view! {
                    <div class="tour-head">
                        <h1 id="tour-title">{t.title}</h1>
                        <span class="tour-count">{format!("{s} / {STEPS}")}</span>
                    </div>
                    <p class="tour-text" id="tour-text">{t.text}</p>
                    <div class="tour-stage" id="tour-stage">
                        <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"loading…"</div> }>
                            {move || image.get().map(|r| match r {
                                Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                                Ok(img) => view! { <StepView step=s image=img /> }.into_any(),
                            })}
                        </Suspense>
                    </div>
                    <nav class="tour-nav">
                        <button id="tour-prev" disabled=s == 1 on:click=move |_| go(Some(s - 1))>"← back"</button>
                        <button id="tour-exit" on:click=move |_| go(None)>"exit (Esc)"</button>
                        <button id="tour-next" disabled=s == STEPS on:click=move |_| go(Some(s + 1))>"next → (space)"</button>
                    </nav>
                }
            })}
        </div>
    }
}

/// What the nine have in common, as the labels of their probe images say (nothing is claimed
/// that the labels do not show).
fn agreement(t: &TopActivations) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for label in t.entries.iter().filter_map(|e| e.label.clone()) {
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    match counts.first() {
        Some((label, n)) if *n >= 5 => {
            format!("{n} of the {} come from {label} images.", t.entries.len())
        }
        Some(_) => format!(
            "They come from {} different classes: this map responds to something they share, not to one class.",
            counts.len()
        ),
        None => String::new(),
    }
}

/// The strongest map of `layer` for the image.
async fn strongest(image: &str, layer: &str) -> api::ApiResult<usize> {
    let acts = api::get_json::<LayerActivations>(&zfvis_api::paths::layer(image, layer)).await?;
    Ok(acts
        .max
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0)
}

#[component]
fn StepView(step: usize, image: ImageResponse) -> impl IntoView {
    let id = image.id.clone();
    match step {
        1 => {
            // what the filters show, in words measured from them (zfnet::filter_stats)
            let model = crate::model_info();
            let verdict = move || {
                let stats = model.and_then(|m| m.get()).and_then(Result::ok)?.conv1?;
                Some(format!(
                    "This model's filters: {} (orientation {:.2} and smoothness {:.2}, where random filters score 0.10 and 0.17).",
                    crate::explorer::conv1_verdict(&stats),
                    stats.anisotropy,
                    stats.low_freq_share
                ))
            };
            view! {
                <img class="tour-filters pixelated" id="tour-filters" src=crate::api::url(zfvis_api::paths::templates::CONV1_FILTERS) alt="the 96 conv1 filters" />
                <p class="tour-caption" id="tour-filters-verdict">{verdict}</p>
            }
            .into_any()
        }
        2 => {
            let id2 = id.clone();
            let maps = LocalResource::new(move || {
                let id = id2.clone();
                async move {
                    let acts =
                        api::get_json::<LayerActivations>(&zfvis_api::paths::layer(&id, "conv1"))
                            .await?;
                    let mut order: Vec<usize> = (0..acts.max.len()).collect();
                    order.sort_by(|&a, &b| acts.max[b].total_cmp(&acts.max[a]));
                    Ok::<_, api::Failure>(order.into_iter().take(8).collect::<Vec<_>>())
                }
            });
            view! {
                <div class="tour-row">
                    <img class="tour-input" src=image.input_url.clone() alt="the photo" />
                    <Suspense fallback=|| ()>
                        {move || maps.get().map(|r| match r {
                            Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                            Ok(ms) => view! {
                                <div class="tour-maps" id="tour-maps">
                                    {ms.into_iter().map(|m| view! {
                                        <img class="pixelated" src=crate::api::url(&zfvis_api::paths::activation(&id, "conv1", m)) alt=format!("conv1 map {m}") />
                                    }).collect_view()}
                                </div>
                            }.into_any(),
                        })}
                    </Suspense>
                </div>
            }
            .into_any()
        }
        3..=6 => {
            let layer = format!("conv{}", step - 1);
            let top = LocalResource::new(move || {
                let (id, layer) = (id.clone(), layer.clone());
                async move {
                    let m = strongest(&id, &layer).await?;
                    api::get_json::<TopActivations>(&zfvis_api::paths::visualize(&layer, m, None))
                        .await
                }
            });
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"finding the top-9…"</div> }>
                    {move || top.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(t) => view! {
                            <p class="tour-caption">{format!("{} map {}: its 9 strongest activations over {} probe images. {}", t.layer, t.map, t.probe_images, agreement(&t))}</p>
                            <div class="tour-top9" id="tour-top9">
                                {t.entries.into_iter().map(|e| view! {
                                    <div class="top9-pair">
                                        <img src=e.patch_url alt="patch" />
                                        <img src=e.reconstruction_url alt="reconstruction" />
                                    </div>
                                }).collect_view()}
                            </div>
                        }.into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
        7 => {
            let view_res = LocalResource::new(move || {
                let id = id.clone();
                async move {
                    let m = strongest(&id, "conv5").await?;
                    api::get_json::<VisualizeResponse>(&zfvis_api::paths::visualize(
                        "conv5",
                        m,
                        Some((&id, zfvis_api::ProjectionMode::Unit, None)),
                    ))
                    .await
                }
            });
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"projecting…"</div> }>
                    {move || view_res.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(v) => view! {
                            <div class="tour-row">
                                <figure><img class="tour-input" src=crate::api::url(&zfvis_api::paths::input(&v.image)) alt="the photo" /><figcaption>"the photo"</figcaption></figure>
                                <figure><img class="tour-input" id="tour-projection" src=v.projection_url.clone() alt="projection" /><figcaption>{format!("what conv5 map {}'s strongest unit saw", v.map)}</figcaption></figure>
                            </div>
                        }.into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
        9 => {
            let view_res = LocalResource::new(move || {
                let id = id.clone();
                async move {
                    let m = strongest(&id, "conv4").await?;
                    api::get_json::<VisualizeResponse>(&zfvis_api::paths::visualize(
                        "conv4",
                        m,
                        Some((&id, zfvis_api::ProjectionMode::Unit, None)),
                    ))
                    .await
                }
            });
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"three backward passes…"</div> }>
                    {move || view_res.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(v) => view! {
                            <p class="tour-caption">{format!("conv4 map {}'s strongest unit, cropped to what it sees:", v.map)}</p>
                            <div class="tour-row" id="tour-methods">
                                <figure><img class="tour-input" src=v.patch_url.clone() alt="input patch" /><figcaption>"the patch it sees"</figcaption></figure>
                                {v.methods.into_iter().map(|m| view! {
                                    <figure><img class="tour-input pixelated" src=m.url alt=m.title.clone() /><figcaption>{m.title}</figcaption></figure>
                                }).collect_view()}
                            </div>
                        }.into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
        10 => {
            let curves = LocalResource::new(move || {
                let id = id.clone();
                async move {
                    let request = InvarianceRequest {
                        steps: Some(15),
                        ..Default::default()
                    };
                    let r: api::ApiResult<InvarianceResponse> =
                        match api::post_json::<InvarianceResponse, InvarianceResponse>(
                            &zfvis_api::paths::invariance(&id, false),
                            &request,
                        )
                        .await?
                        {
                            api::Started::Done(r) | api::Started::Accepted(r) => Ok(r),
                        };
                    r
                }
            });
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"shifting, zooming and turning the photo (45 forward passes)…"</div> }>
                    {move || curves.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(r) => invariance_view(r).into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
        11 => {
            let table = LocalResource::new(|| async {
                let (images, parts) = crate::correspondence::preset().await?;
                let request = zfvis_api::CorrespondenceRequest {
                    images: images.iter().map(|i| i.id.clone()).collect(),
                    parts,
                    repetitions: Some(10),
                    seed: None,
                };
                let r: api::ApiResult<zfvis_api::CorrespondenceResponse> =
                    match api::post_json::<
                        zfvis_api::CorrespondenceResponse,
                        zfvis_api::CorrespondenceResponse,
                    >(&zfvis_api::paths::correspondence(), &request)
                    .await?
                    {
                        api::Started::Done(r) | api::Started::Accepted(r) => Ok(r),
                    };
                r.map(|r| (images, r))
            });
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"masking eyes and noses in five photos (65 forward passes)…"</div> }>
                    {move || table.get().map(|r| match r {
                        // without Imagenette as the probe set: the paper's own table, said to be the paper's
                        Err(e) => view! {
                            <p class="tour-caption" id="tour-corr-missing">{format!("Not measurable on this server ({e}). The paper's Table 1 (lower = more consistent):")}</p>
                            <table class="delta tour-table" id="tour-corr-paper">
                                <thead><tr><th>"masked"</th><th>"Δ layer 5"</th><th>"Δ layer 7"</th></tr></thead>
                                <tbody>
                                    {zfvis_api::PAPER_TABLE_1.iter().map(|(part, m5, s5, m7, s7)| view! {
                                        <tr><td>{*part}</td><td>{format!("{m5:.3} ± {s5:.3}")}</td><td>{format!("{m7:.3} ± {s7:.3}")}</td></tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                        Ok((images, r)) => view! {
                            <div class="tour-row" id="tour-corr-images">
                                {images.into_iter().map(|i| view! { <img class="tour-thumb" src=i.input_url alt="probe photo" /> }).collect_view()}
                            </div>
                            <div class="tour-table" id="tour-corr-table"><crate::correspondence::DeltaTable r=r /></div>
                        }.into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
        _ => {
            let sweep = LocalResource::new(move || {
                let id = id.clone();
                async move {
                    let request = OcclusionRequest {
                        size: Some(48),
                        stride: Some(16),
                        ..Default::default()
                    };
                    match api::post_json::<OcclusionStatus, OcclusionResponse>(
                        &zfvis_api::paths::occlusion(&id, true),
                        &request,
                    )
                    .await?
                    {
                        api::Started::Done(r) => Ok(r),
                        api::Started::Accepted(_) => {
                            Err(api::Failure::from("the sweep did not finish"))
                        }
                    }
                }
            });
            let input = image.input_url.clone();
            view! {
                <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"sliding the grey square over the photo (a few seconds)…"</div> }>
                    {move || sweep.get().map(|r| match r {
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                        Ok(r) => view! {
                            <div class="tour-row" id="tour-occlusion">
                                {[(r.probability_url.clone(), format!("p({}) with that part hidden", r.class_label)),
                                  (r.classes_url.clone(), "most probable class".to_string()),
                                  (r.activation_url.clone(), format!("conv5 map {} activity", r.strongest_map))]
                                    .into_iter().map(|(url, caption)| view! {
                                    <figure>
                                        <div class="stage tour-stage-img"><img class="input" src=input.clone() alt="photo" /><img class="overlay pixelated" src=url alt=caption.clone() /></div>
                                        <figcaption>{caption}</figcaption>
                                    </figure>
                                }).collect_view()}
                            </div>
                        }.into_any(),
                    })}
                </Suspense>
            }
            .into_any()
        }
    }
}

/// Three of Fig. 5's plots for the tour (translation at layers 1 and 7, rotation's probability)
/// and a caption measured from the curves.
fn invariance_view(r: InvarianceResponse) -> impl IntoView {
    use crate::chart::LineChart;
    let Some(img) = r.images.into_iter().next() else {
        return view! { <p class="error">"no curves"</p> }.into_any();
    };
    let (Some(shift), Some(turn)) = (img.curves.first(), img.curves.get(2)) else {
        return view! { <p class="error">"no curves"</p> }.into_any();
    };
    let range = |v: &[f32]| {
        v.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            })
    };
    let (s_lo, s_hi) = range(&shift.probability);
    let (t_lo, _) = range(&turn.probability);
    let caption = format!(
        "P({}) is {:.0}% on the photo; shifted up to 60 px it stays between {:.0}% and {:.0}%; turned, it falls as low as {:.0}%.",
        img.class_label,
        img.base_probability * 100.0,
        s_lo * 100.0,
        s_hi * 100.0,
        t_lo * 100.0
    );
    view! {
        <p class="tour-caption" id="tour-invariance-caption">{caption}</p>
        <div class="tour-row tour-charts" id="tour-invariance">
            <LineChart title="layer 1 distance".into() x_label="vertical shift (pixels)".into() y_label="Euclidean distance".into()
                xs=shift.amounts.clone() series=vec![shift.layer1.clone()] y_max=None />
            <LineChart title="layer 7 distance".into() x_label="vertical shift (pixels)".into() y_label="Euclidean distance".into()
                xs=shift.amounts.clone() series=vec![shift.layer7.clone()] y_max=None />
            <LineChart title="class probability".into() x_label="rotation (degrees)".into() y_label="P(class)".into()
                xs=turn.amounts.clone() series=vec![turn.probability.clone()] y_max=Some(1.0) />
        </div>
    }
    .into_any()
}
