//! The zfvis UI: Leptos client-side rendering, compiled to wasm32 by trunk.

mod api;
mod upload;

use leptos::prelude::*;
use upload::{Upload, UploadPanel};
use zfvis_api::{ModelInfo, PredictResponse};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let model = LocalResource::new(|| api::get_json::<ModelInfo>("/api/model"));
    let (current, set_current) = signal(None::<Upload>);
    let (prediction, set_prediction) = signal(None::<PredictResponse>);
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);

    let on_upload = move |upload: Upload| {
        set_error.set(None);
        set_prediction.set(None);
        set_busy.set(true);
        let blob = upload.blob.clone();
        let name = upload.name.clone();
        set_current.set(Some(upload));
        leptos::task::spawn_local(async move {
            match api::post_image::<PredictResponse>("/api/predict", &blob, &name).await {
                Ok(p) => set_prediction.set(Some(p)),
                Err(e) => set_error.set(Some(e)),
            }
            set_busy.set(false);
        });
    };

    view! {
        <header class="topbar">
            <h1>"zfvis"</h1>
            <span class="tagline">"see inside ZFNet (Zeiler & Fergus, 2013)"</span>
            <Suspense fallback=|| view! { <span class="model">"loading model…"</span> }>
                {move || model.get().map(|m| match m {
                    Ok(m) => view! { <ModelBadge info=m /> }.into_any(),
                    Err(e) => view! { <span class="error">{e}</span> }.into_any(),
                })}
            </Suspense>
        </header>
        <main class="layout">
            <section class="panel">
                <UploadPanel on_upload=on_upload />
            </section>
            <section class="panel">
                <Show when=move || current.get().is_some() fallback=|| view! {
                    <p class="hint">"Pick, drop or paste an image, or click a demo photo."</p>
                }>
                    <figure class="preview">
                        <img id="preview" alt="uploaded image"
                            src=move || current.get().map(|u| u.url).unwrap_or_default() />
                        <figcaption>{move || current.get().map(|u| u.name).unwrap_or_default()}</figcaption>
                    </figure>
                </Show>
                <Show when=move || busy.get()>
                    <div class="progress" role="status"><span class="spinner"></span>"running ZFNet…"</div>
                </Show>
                {move || error.get().map(|e| view! { <p class="error" role="alert" id="error">{e}</p> })}
                {move || prediction.get().map(|p| view! { <Predictions prediction=p /> })}
            </section>
        </main>
    }
}

#[component]
fn ModelBadge(info: ModelInfo) -> impl IntoView {
    let params = format!("{:.1} M parameters", info.parameters as f64 / 1e6);
    view! {
        <span class="model" title=info.provenance.clone()>
            {info.name.clone()} " · " {info.architecture.clone()} " · " {params}
        </span>
        {(!info.trained).then(|| view! {
            <span class="untrained" id="untrained" title=info.provenance.clone()>
                "UNTRAINED model: random weights, predictions mean nothing"
            </span>
        })}
    }
}

#[component]
fn Predictions(prediction: PredictResponse) -> impl IntoView {
    view! {
        <h2>"Top-5 predictions"</h2>
        <ol class="predictions" id="predictions">
            {prediction.predictions.into_iter().map(|p| {
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
        <p class="meta">{format!("input {}×{} px → resized to 256, centre crop 224", prediction.width, prediction.height)}</p>
    }
}
