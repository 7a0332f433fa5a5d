//! The zfvis UI: Leptos client-side rendering, compiled to wasm32 by trunk.

mod analyses;
mod api;
mod chart;
mod correspondence;
mod evolution;
mod examples;
mod explorer;
mod models;
mod occlusion;
mod tour;
mod upload;

use explorer::{Explorer, View};
use leptos::prelude::*;
use upload::{Upload, UploadPanel};
use zfvis_api::{ImageResponse, ModelInfo};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

fn location_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

#[component]
fn App() -> impl IntoView {
    let model =
        LocalResource::new(|| api::get_json::<ModelInfo>(zfvis_api::paths::templates::MODEL));
    let models = models::models_resource();
    // the model's description, for every view that names its classes or statistics
    provide_context(model);
    let (image, set_image) = signal(None::<ImageResponse>);
    let (preview, set_preview) = signal(None::<(String, String)>); // (url, caption)
    let (view, set_view) = signal(None::<View>);
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let (tour_step, set_tour_step) = signal(tour::step_from_hash(&location_hash()));
    // presenter mode: larger type, full-width pictures, fewer controls; `?present` in the URL
    let (present, set_present) = signal(
        web_sys::window()
            .and_then(|w| w.location().search().ok())
            .is_some_and(|q| q.trim_start_matches('?').split('&').any(|p| p == "present")),
    );
    Effect::new(move |_| {
        let on = present.get();
        if let Some(root) = document().document_element() {
            let _ = root.class_list().toggle_with_force("present", on);
        }
        if let Some(w) = web_sys::window() {
            let url = models::page_url(api::page_model().as_deref(), on);
            if let Ok(h) = w.history() {
                let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
            }
        }
    });

    // Load an already-uploaded image (permalink, back/forward).
    let open_id = move |target: View| {
        if image.get_untracked().is_some_and(|i| i.id == target.image) {
            set_view.set(Some(target));
            return;
        }
        set_busy.set(true);
        set_error.set(None);
        leptos::task::spawn_local(async move {
            match api::get_json::<ImageResponse>(&zfvis_api::paths::image(&target.image)).await {
                Ok(img) => {
                    let caption = img
                        .source
                        .clone()
                        .unwrap_or_else(|| "opened from a link".into());
                    set_preview.set(Some((img.input_url.clone(), caption)));
                    set_image.set(Some(img));
                    set_view.set(Some(target));
                }
                Err(e) if e.code == Some(zfvis_api::ErrorCode::ImageNotFound) => set_error
                    .set(Some(
                    "This link points to an image the server no longer keeps (it holds the most \
                     recent uploads only). Upload the picture again to explore it."
                        .into(),
                )),
                Err(e) => set_error.set(Some(e.to_string())),
            }
            set_busy.set(false);
        });
    };
    if let Some(v) = View::from_hash(&location_hash()) {
        open_id(v);
    }
    let hash_listener = window_event_listener(leptos::ev::hashchange, move |_| {
        set_tour_step.set(tour::step_from_hash(&location_hash()));
        if let Some(v) = View::from_hash(&location_hash()) {
            if view.get_untracked().as_ref() != Some(&v) {
                open_id(v);
            }
        }
    });
    on_cleanup(move || hash_listener.remove());
    // The URL follows the view, so a link reopens it and back/forward step through views.
    Effect::new(move |_| {
        if let Some(v) = view.get() {
            let hash = v.to_hash();
            if location_hash() != hash {
                if let Some(w) = web_sys::window() {
                    let _ = w.location().set_hash(&hash);
                }
            }
        }
    });

    let on_upload = move |upload: Upload| {
        set_error.set(None);
        // nothing of the previous image stays on screen, whatever this upload turns out to be
        let keep_layer = view.get_untracked().map(|v| v.layer);
        set_view.set(None);
        set_image.set(None);
        set_busy.set(true);
        set_preview.set(Some((upload.url.clone(), upload.name.clone())));
        leptos::task::spawn_local(async move {
            match api::post_image::<ImageResponse>(
                zfvis_api::paths::templates::IMAGES,
                &upload.blob,
                &upload.name,
            )
            .await
            {
                Ok(img) => {
                    let mut next = View::new(img.id.clone());
                    if let Some(layer) = keep_layer {
                        next.layer = layer;
                    }
                    set_image.set(Some(img));
                    set_view.set(Some(next));
                }
                Err(e) => {
                    set_preview.set(None);
                    set_error.set(Some(e.to_string()));
                }
            }
            set_busy.set(false);
        });
    };

    view! {
        <Show when=move || tour_step.get().is_some()>
            <tour::Tour step=tour_step />
        </Show>
        <header class="topbar">
            <h1>"zfvis"</h1>
            <span class="tagline">"see inside ZFNet (Zeiler & Fergus, 2013)"</span>
            <a class="tour-start" id="tour-start" href="#/tour/1" title="a guided walk through the paper, for a projector">"▶ classroom tour"</a>
            <button class="present-toggle" id="present-toggle" aria-pressed=move || present.get().to_string()
                title="large type and full-width pictures for a projector (link: ?present)"
                on:click=move |_| set_present.update(|p| *p = !*p)>"presenter mode"</button>
            <models::ModelPicker models=models present=present />
            <Suspense fallback=|| view! { <span class="model">"loading model…"</span> }>
                {move || model.get().map(|m| match m {
                    Ok(m) => view! { <ModelBadge info=m /> }.into_any(),
                    Err(e) => view! { <span class="error">{e.to_string()}</span> }.into_any(),
                })}
            </Suspense>
        </header>
        <main class="layout">
            <section class="panel">
                <UploadPanel on_upload=on_upload />
                <examples::ClassPhotos />
            </section>
            <section class="panel">
                {move || match preview.get() {
                    Some((url, caption)) => view! {
                        <figure class="preview">
                            <img id="preview" alt="current image" src=url />
                            <figcaption>{caption}</figcaption>
                        </figure>
                    }.into_any(),
                    None => view! { <p class="hint">"Pick, drop or paste an image, or click a demo photo."</p> }.into_any(),
                }}
                <Show when=move || busy.get()>
                    <div class="progress" role="status"><span class="spinner"></span>"running ZFNet…"</div>
                </Show>
                {move || error.get().map(|e| view! { <p class="error" role="alert" id="error">{e}</p> })}
                {move || image.get().map(|img| view! { <Predictions image=img /> })}
            </section>
        </main>
        <Show when=move || image.get().is_some()>
            <nav class="jump" id="jump" aria-label="sections">
                {[("explorer", "feature maps"), ("occlusion", "occlusion"), ("invariance", "invariance"), ("correspondence", "correspondence")]
                    .into_iter().map(|(id, label)| view! {
                        <button data-jump=id on:click=move |_| {
                            if let Some(el) = document().get_element_by_id(id) {
                                el.scroll_into_view();
                            }
                        }>{label}</button>
                    }).collect_view()}
            </nav>
        </Show>
        <Show when=move || view.get().is_some()>
            <section class="panel explorer" id="explorer" aria-label="feature maps">
                <Explorer view=view set_view=set_view />
            </section>
        </Show>
        {move || image.get().map(|img| view! { <occlusion::OcclusionPanel image=img /> })}
        {move || image.get().map(|img| view! { <analyses::InvariancePanel image=img /> })}
        {move || image.get().map(|img| view! { <correspondence::CorrespondencePanel image=img /> })}
        {move || model.get().and_then(Result::ok).and_then(|m| m.evolution).map(|info| view! { <evolution::EvolutionPanel info=info /> })}
        <models::Compare models=models />
    }
}

#[component]
fn ModelBadge(info: ModelInfo) -> impl IntoView {
    let params = format!("{:.1} M parameters", info.parameters as f64 / 1e6);
    let accuracy = info.accuracy.as_ref().map(|a| {
        let set = a.dataset.rsplit('/').take(2).collect::<Vec<_>>();
        let set = set.into_iter().rev().collect::<Vec<_>>().join("/");
        format!(
            " · top-1 {:.1}% (top-5 {:.1}%) on {} {set} images",
            a.top1 * 100.0,
            a.top5 * 100.0,
            a.images
        )
    });
    let layers = architecture_lines(&info);
    view! {
        <span class="model" title=info.provenance.clone()>
            {info.name.clone()} " · " {info.architecture.clone()} " · " {params}
            <span id="accuracy">{accuracy}</span>
        </span>
        <details class="architecture" id="architecture">
            <summary>"layers"</summary>
            <ol>{layers.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ol>
        </details>
        {(!info.trained).then(|| view! {
            <span class="untrained" id="untrained" title=info.provenance.clone()>
                "UNTRAINED model: random weights, predictions mean nothing"
            </span>
        })}
    }
}

/// One line per layer as the model's manifest has it (an imported graph brings its own
/// kernels, pools and input convention), the input first.
fn architecture_lines(info: &ModelInfo) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(i) = &info.input {
        let scale = if i.pixel_scale == 1.0 {
            "0–1".to_string()
        } else {
            format!("0–{}", i.pixel_scale)
        };
        lines.push(format!(
            "input: resize {}, crop {}, {} {scale}, mean {:?}, std {:?}",
            i.resize,
            i.crop,
            i.channel_order.to_uppercase(),
            i.mean,
            i.std
        ));
    }
    let dims = |d: &[usize]| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    };
    for l in &info.layers {
        let shape = dims(&l.output_shape);
        let mut line = match (l.kernel, l.stride, l.padding) {
            (Some(k), Some(s), Some(p)) => format!("{}: {k}×{k}/{s} pad {p} → {shape}", l.name),
            _ => format!("{}: → {shape}", l.name),
        };
        if l.lrn {
            line.push_str(" → LRN");
        }
        if let (Some(p), Some(out)) = (l.pool, &l.pooled_shape) {
            let out = dims(out);
            let mode = if p.ceil { "ceil" } else { "floor" };
            line.push_str(&format!(
                " → max pool {}×{}/{} {mode} → {out}",
                p.kernel, p.kernel, p.stride
            ));
        }
        lines.push(line);
    }
    lines
}

#[component]
fn Predictions(image: ImageResponse) -> impl IntoView {
    view! {
        <h2>"Top-5 predictions"</h2>
        <ol class="predictions" id="predictions">
            {image.predictions.into_iter().map(|p| {
                let pct = p.probability * 100.0;
                view! {
                    <li class="prediction">
                        <span class="label">{p.label}</span>
                        <span class="bar"><span class="fill" style=format!("width:{pct:.1}%")></span></span>
                        <span class="prob">{format!("{pct:.1}%")}</span>
                    </li>
                }
            }).collect_view()}
        </ol>
        <p class="meta">{
            let model = model_info();
            let (w, h) = (image.width, image.height);
            move || {
                // the model's own preprocessing (an imported model may differ)
                let input = model.and_then(|m| m.get()).and_then(Result::ok).and_then(|m| m.input);
                let (resize, crop) = input.map_or((256, 224), |i| (i.resize, i.crop));
                format!("input {w}×{h} px → resized to {resize}, centre crop {crop}")
            }
        }</p>
        <KnownClasses />
    }
}

/// The model's resource, provided by [`App`].
pub fn model_info() -> Option<LocalResource<api::ApiResult<ModelInfo>>> {
    use_context::<LocalResource<api::ApiResult<ModelInfo>>>()
}

/// "This model knows N classes: …": a model that can only answer with its own classes says so
/// next to its answers.
#[component]
fn KnownClasses() -> impl IntoView {
    let model = model_info();
    move || {
        let info = model.and_then(|m| m.get()).and_then(Result::ok)?;
        let names: Vec<String> = info.classes.iter().map(|c| c.label.clone()).collect();
        let n = names.len();
        Some(view! {
            <details class="known-classes" id="known-classes">
                <summary>{format!("This model knows {n} classes; it answers with one of them whatever the picture shows")}</summary>
                <p>{names.join(", ")}</p>
            </details>
        })
    }
}
