//! Getting an image in: file picker, drag and drop, paste, or a demo photo.

use crate::api;
use leptos::prelude::*;
use web_sys::{Blob, File};

/// The demo photos trunk copies to `/demo/` (see web/assets/demo/LICENSES.md).
/// Sends a bundled demo photo to the server (which finds it again if it has it: ids are content
/// hashes) and returns its description.
pub async fn upload_demo(name: &str) -> crate::api::ApiResult<zfvis_api::ImageResponse> {
    let blob = crate::api::get_blob(&format!("/demo/{name}")).await?;
    crate::api::post_image(zfvis_api::paths::templates::IMAGES, &blob, name).await
}

/// The first file of a drop, as an upload.
fn dropped(ev: &leptos::ev::DragEvent) -> Option<Upload> {
    let file = ev.data_transfer()?.files()?.get(0)?;
    Upload::from_file(file)
}

pub const DEMO_IMAGES: [&str; 12] = [
    "dog.jpg",
    "chelsea.png",
    "eagle.jpg",
    "giraffe.jpg",
    "horses.jpg",
    "kite.jpg",
    "coffee.png",
    "flower.jpg",
    "rocket.jpg",
    "astronaut.png",
    "person.jpg",
    "china.jpg",
];

/// An image chosen by the user, with an object URL to show it.
#[derive(Clone, Debug, PartialEq)]
pub struct Upload {
    pub blob: Blob,
    pub name: String,
    pub url: String,
}

impl Upload {
    fn new(blob: Blob, name: String) -> Option<Upload> {
        let url = web_sys::Url::create_object_url_with_blob(&blob).ok()?;
        Some(Upload { blob, name, url })
    }

    fn from_file(file: File) -> Option<Upload> {
        let name = file.name();
        Upload::new(file.into(), name)
    }
}

#[component]
pub fn UploadPanel(on_upload: impl Fn(Upload) + Copy + Send + Sync + 'static) -> impl IntoView {
    let (dragging, set_dragging) = signal(false);
    let (demo_error, set_demo_error) = signal(None::<String>);

    let on_pick = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|f| f.get(0)) {
            if let Some(u) = Upload::from_file(file) {
                on_upload(u);
            }
        }
        input.set_value("");
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        set_dragging.set(false);
        if let Some(u) = dropped(&ev) {
            on_upload(u);
        }
    };
    // A file dropped anywhere on the page is taken, not opened by the browser in place of the app.
    let page_dragover = window_event_listener(leptos::ev::dragover, |ev| ev.prevent_default());
    let page_drop = window_event_listener(leptos::ev::drop, move |ev| {
        if ev.default_prevented() {
            return; // the drop zone took it
        }
        ev.prevent_default();
        if let Some(u) = dropped(&ev) {
            on_upload(u);
        }
    });
    on_cleanup(move || {
        page_dragover.remove();
        page_drop.remove();
    });
    // Paste anywhere on the page.
    let paste = window_event_listener(leptos::ev::paste, move |ev| {
        let Some(items) = ev.clipboard_data().and_then(|d| d.files()) else {
            return;
        };
        if let Some(file) = items.get(0) {
            if let Some(u) = Upload::from_file(file) {
                on_upload(u);
            }
        }
    });
    on_cleanup(move || paste.remove());

    let load_demo = move |name: &'static str| {
        set_demo_error.set(None);
        leptos::task::spawn_local(async move {
            match api::get_blob(&format!("/demo/{name}")).await {
                Ok(blob) => {
                    if let Some(u) = Upload::new(blob, name.to_string()) {
                        on_upload(u);
                    }
                }
                Err(e) => set_demo_error.set(Some(e.to_string())),
            }
        });
    };

    view! {
        <label
            class="dropzone"
            class:dragging=move || dragging.get()
            on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); set_dragging.set(true); }
            on:dragleave=move |_| set_dragging.set(false)
            on:drop=on_drop
        >
            <input type="file" id="file-input" accept="image/jpeg,image/png,image/webp" on:change=on_pick />
            <span>"Drop an image here, click to choose one, or paste (Ctrl+V)"</span>
        </label>
        <h2 class="demos-title">"Demo photos"</h2>
        <div class="demos">
            {DEMO_IMAGES.into_iter().map(|name| view! {
                <button class="demo" title=name data-demo=name on:click=move |_| load_demo(name)>
                    <img src=format!("/demo/{name}") alt=name loading="lazy" />
                </button>
            }).collect_view()}
        </div>
        {move || demo_error.get().map(|e| view! { <p class="error">{e}</p> })}
    }
}
