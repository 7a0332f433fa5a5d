//! The occlusion panel: size/stride/class controls, a live progress bar fed by the server's
//! Server-Sent Events, then the paper's three maps over the image with a class legend, and the
//! strongest conv5 map's projection (Fig. 7).

use crate::api;
use crate::chart::ColourBar;
use leptos::prelude::*;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};
use zfvis_api::{ImageResponse, ModelInfo, OcclusionRequest, OcclusionResponse, OcclusionStatus};

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Running { done: usize, total: usize },
    Done(Box<OcclusionResponse>),
    Failed(String),
}

#[component]
pub fn OcclusionPanel(image: ImageResponse) -> impl IntoView {
    let model = crate::model_info().unwrap_or_else(|| {
        LocalResource::new(|| api::get_json::<ModelInfo>(zfvis_api::paths::templates::MODEL))
    });
    let (size, set_size) = signal(48usize);
    let (stride, set_stride) = signal(16usize);
    let (class, set_class) = signal(None::<usize>);
    let (phase, set_phase) = signal(Phase::Idle);
    // the open event stream, and how to cancel the sweep when this page started it: a new sweep
    // or leaving the view cancels an unfinished one
    let stream = StoredValue::new_local(None::<EventSource>);
    let cancel_url = StoredValue::new_local(None::<String>);
    let close_stream = move || {
        stream.update_value(|s| {
            if let Some(es) = s.take() {
                es.close();
            }
        });
        if let Some(url) = cancel_url.try_update_value(Option::take).flatten() {
            leptos::task::spawn_local(async move {
                let _ = api::delete(&url).await;
            });
        }
    };
    on_cleanup(close_stream);
    let id = image.id.clone();
    let start = move |_| {
        close_stream();
        set_phase.set(Phase::Running { done: 0, total: 0 });
        let request = OcclusionRequest {
            size: Some(size.get_untracked()),
            stride: Some(stride.get_untracked()),
            fill: None,
            class: class.get_untracked(),
        };
        let url = zfvis_api::paths::occlusion(&id, false);
        leptos::task::spawn_local(async move {
            match api::post_json::<OcclusionStatus, OcclusionResponse>(&url, &request).await {
                Ok(api::Started::Done(r)) => set_phase.set(Phase::Done(Box::new(r))),
                Ok(api::Started::Accepted(s)) => {
                    if let Some(token) = &s.token {
                        cancel_url.set_value(Some(format!("{}?token={token}", s.result_url)));
                    }
                    set_phase.set(Phase::Running {
                        done: s.done,
                        total: s.total,
                    });
                    match follow(&s.events_url, set_phase) {
                        Ok(es) => stream.set_value(Some(es)),
                        Err(e) => set_phase.set(Phase::Failed(e)),
                    }
                }
                Err(e) => set_phase.set(Phase::Failed(e.to_string())),
            }
        });
    };
    let top = image
        .predictions
        .first()
        .map(|p| p.label.clone())
        .unwrap_or_default();
    let input = image.input_url.clone();
    view! {
        <section class="panel occlusion" id="occlusion" aria-label="occlusion">
            <h2>"Occlusion sensitivity"</h2>
            <p class="meta">"A grey square slides over the image; each cell shows what the network does with that part hidden (paper Fig. 7)."</p>
            <div class="controls">
                <label>"square "
                    <select id="occ-size" on:change=move |e| set_size.set(event_target_value(&e).parse().unwrap_or(48))>
                        {[16usize, 32, 48, 64, 96].into_iter().map(|s| view! { <option value=s selected=s == 48>{format!("{s} px")}</option> }).collect_view()}
                    </select>
                </label>
                <label>"stride "
                    <select id="occ-stride" on:change=move |e| set_stride.set(event_target_value(&e).parse().unwrap_or(16))>
                        {[8usize, 16, 32, 56].into_iter().map(|s| view! { <option value=s selected=s == 16>{format!("{s} px")}</option> }).collect_view()}
                    </select>
                </label>
                <label>"class "
                    <select id="occ-class" on:change=move |e| set_class.set(event_target_value(&e).parse().ok())>
                        <option value="" selected=true>{format!("top prediction ({top})")}</option>
                        <Suspense fallback=|| ()>
                            {move || model.get().and_then(|m| m.ok()).map(|m| m.classes.into_iter().map(|c| view! {
                                <option value=c.index>{c.label}</option>
                            }).collect_view())}
                        </Suspense>
                    </select>
                </label>
                <button id="occ-start" class="primary" on:click=start
                    disabled=move || matches!(phase.get(), Phase::Running { .. })>"Run sweep"</button>
            </div>
            {move || match phase.get() {
                Phase::Idle => ().into_any(),
                Phase::Running { done, total } => view! {
                    <div class="occ-progress" role="status">
                        <progress id="occ-progress" max=total.max(1) value=done></progress>
                        <span>{if total == 0 { "starting…".to_string() } else { format!("{done} / {total} positions") }}</span>
                    </div>
                }.into_any(),
                Phase::Failed(e) => view! { <p class="error" id="occ-error">{e}</p> }.into_any(),
                Phase::Done(r) => view! { <OcclusionMaps result=*r input=input.clone() /> }.into_any(),
            }}
        </section>
    }
}

/// Subscribes to a sweep's events; the closures live as long as the page (a few per sweep).
fn follow(url: &str, set_phase: WriteSignal<Phase>) -> Result<EventSource, String> {
    let es =
        EventSource::new(url).map_err(|_| "the browser cannot open an event stream".to_string())?;
    let data = |e: &MessageEvent| e.data().as_string().unwrap_or_default();
    let on_progress = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data(&e)) {
            let n = |k: &str| v[k].as_u64().unwrap_or(0) as usize;
            set_phase.set(Phase::Running {
                done: n("done"),
                total: n("total"),
            });
        }
    });
    let es_done = es.clone();
    let on_done = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        es_done.close();
        match serde_json::from_str::<OcclusionResponse>(&data(&e)) {
            Ok(r) => set_phase.set(Phase::Done(Box::new(r))),
            Err(err) => set_phase.set(Phase::Failed(format!("unexpected answer: {err}"))),
        }
    });
    let es_err = es.clone();
    let on_error = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        es_err.close();
        let message = serde_json::from_str::<zfvis_api::ApiError>(&data(&e))
            .map(|a| a.error)
            .unwrap_or_else(|_| "the connection to the server was lost".into());
        set_phase.set(Phase::Failed(message));
    });
    for (name, f) in [
        ("progress", &on_progress),
        ("done", &on_done),
        ("error", &on_error),
    ] {
        es.add_event_listener_with_callback(name, f.as_ref().unchecked_ref())
            .map_err(|_| "cannot listen to the event stream".to_string())?;
    }
    on_progress.forget();
    on_done.forget();
    on_error.forget();
    Ok(es)
}

#[component]
fn OcclusionMaps(result: OcclusionResponse, input: String) -> impl IntoView {
    let r = result;
    let overlay = |url: String, id: &'static str, alt: &'static str| {
        let input = input.clone();
        view! {
            <div class="stage">
                <img class="input" src=input alt="network input" />
                <img class="overlay pixelated" src=url alt=alt id=id />
            </div>
        }
    };
    let range = |v: &[f32]| {
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    };
    let (a_lo, a_hi) = range(&r.activation);
    let (p_lo, p_hi) = range(&r.probability);
    let (stretch, set_stretch) = signal(false);
    let p_url = r.probability_url.clone();
    let p_src = move || {
        if stretch.get() {
            p_url.replace("probability.png", "probability-stretched.png")
        } else {
            p_url.clone()
        }
    };
    view! {
        <details class="explain">
            <summary>"What am I looking at?"</summary>
            <p>"A grey square hides one part of the photo at a time; each cell of the maps is what the network did with the square there (paper §4.2, Fig. 7). "
               "(a) how active the conv5 feature map that fires most on the whole photo stays; (b) how likely the class still is: dark where hiding that part hurt; "
               "(c) which class wins instead. Where (b) goes dark, the network was using that part of the picture."</p>
        </details>
        <p class="meta" id="occ-facts">{format!(
            "{}×{} positions, {}-px square every {} px, {} ms. Unoccluded: conv5 map {} totals {:.2}; p({}) = {:.1}%.",
            r.grid, r.grid, r.size, r.stride, r.elapsed_ms, r.strongest_map, r.base_activation,
            r.class_label, r.base_probability * 100.0)}</p>
        <div class="figures occ-maps">
            <figure>
                {overlay(r.activation_url.clone(), "occ-activation", "strongest conv5 map activity")}
                <figcaption>{format!("(a) total activity of conv5 map {} with the square at each place (its own range)", r.strongest_map)}</figcaption>
                <ColourBar lo=format!("{a_lo:.2}") hi=format!("{a_hi:.2}") />
                <a class="download" href=r.activation_url.clone() download=format!("occlusion-conv5-{}.png", r.strongest_map)>"download PNG"</a>
            </figure>
            <figure>
                <div class="stage">
                    <img class="input" src=input.clone() alt="network input" />
                    <img class="overlay pixelated" src=p_src alt="class probability" id="occ-probability" />
                </div>
                <figcaption id="occ-probability-caption">{
                    let name = r.class_label.clone();
                    move || if stretch.get() {
                        format!("(b) p({name}) with the square at each place, STRETCHED from its lowest {:.1}% (dark) to its highest {:.1}% (bright): small changes look large", p_lo * 100.0, p_hi * 100.0)
                    } else {
                        format!("(b) p({name}) with the square at each place, on the absolute scale (here {:.1}% to {:.1}%)", p_lo * 100.0, p_hi * 100.0)
                    }
                }</figcaption>
                {move || if stretch.get() {
                    view! { <ColourBar lo=format!("{:.1}%", p_lo * 100.0) hi=format!("{:.1}%", p_hi * 100.0) /> }
                } else {
                    view! { <ColourBar lo="0%".to_string() hi="100%".to_string() /> }
                }}
                <label class="sort"><input type="checkbox" id="occ-stretch" prop:checked=move || stretch.get()
                    on:change=move |ev| set_stretch.set(event_target_checked(&ev)) />" stretch to its range"</label>
                <a class="download" href=r.probability_url.clone() download="occlusion-probability.png">"download PNG"</a>
            </figure>
            <figure>
                {overlay(r.classes_url.clone(), "occ-classes", "most probable class")}
                <figcaption>"(c) most probable class"</figcaption>
                <ul class="legend" id="occ-legend">
                    {r.legend.iter().map(|l| view! {
                        <li><span class="swatch" style=format!("background:{}", l.color)></span>{format!("{} ({} cells)", l.label, l.cells)}</li>
                    }).collect_view()}
                </ul>
                <a class="download" href=r.classes_url.clone() download="occlusion-classes.png">"download PNG"</a>
            </figure>
            <figure>
                <img class="big" src=r.projection_url.clone() alt="projection" id="occ-projection" />
                <figcaption>{format!("(d) deconvnet projection of conv5 map {}'s strongest unit", r.strongest_map)}</figcaption>
                <a class="download" href=r.projection_url.clone() download=format!("projection-conv5-{}.png", r.strongest_map)>"download PNG"</a>
            </figure>
        </div>
    }
}
