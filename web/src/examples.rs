//! "Photos of the classes this model knows": one probe image per class (`GET
//! /api/probe/examples`). The model answers with one of its own classes whatever the picture, so
//! these are the photos on which its answers mean something. A click opens one like a probe
//! image of the top-9 (its id goes into the URL, and the page follows).

use crate::api;
use crate::explorer::View;
use leptos::prelude::*;
use zfvis_api::{paths, ClassExamples, ImageResponse};

#[component]
pub fn ClassPhotos() -> impl IntoView {
    let examples =
        LocalResource::new(|| api::get_json::<ClassExamples>(paths::templates::PROBE_EXAMPLES));
    let (failed, set_failed) = signal(None::<String>);
    let open = move |url: String| {
        set_failed.set(None);
        leptos::task::spawn_local(async move {
            match api::post_empty::<ImageResponse>(&url).await {
                Ok(img) => {
                    if let Some(w) = web_sys::window() {
                        let _ = w.location().set_hash(&View::new(img.id).to_hash());
                    }
                }
                Err(e) => set_failed.set(Some(e.to_string())),
            }
        });
    };
    move || {
        // no probe set, or one whose folders name none of the classes: nothing to offer
        let ex = examples.get().and_then(Result::ok)?;
        if ex.examples.is_empty() {
            return None;
        }
        let title = format!(
            "Photos of the {} classes this model knows{}",
            ex.classes,
            if ex.examples.len() < ex.classes {
                format!(" ({} of them in the probe set)", ex.examples.len())
            } else {
                String::new()
            }
        );
        Some(view! {
            <h2 class="demos-title" id="class-photos-title">{title}</h2>
            <div class="demos class-photos" id="class-photos">
                {ex.examples.into_iter().map(|e| {
                    let url = e.open_url.clone();
                    let title = format!("{} ({})", e.label, e.image);
                    view! {
                        <button class="demo class-photo" title=title
                            data-class=e.class on:click=move |_| open(url.clone())>
                            <img src=e.image_url alt=e.label.clone() loading="lazy" />
                            <span class="class-photo-label">{e.label}</span>
                        </button>
                    }
                }).collect_view()}
            </div>
            {move || failed.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        })
    }
}
