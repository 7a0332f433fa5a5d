//! Several models on one server: the picker (the page's model lives in its address, `?model=ID`,
//! so a link opens the same model) and the comparison of two models side by side: their conv1
//! filters (the paper's Fig. 6 b vs c) and the top-9 of any map (Fig. 6 d vs e shows conv2).

use crate::api;
use leptos::prelude::*;
use zfvis_api::{paths, ModelList, ModelSummary, TopActivations};

/// The server's models, fetched once and shared.
pub type Models = LocalResource<api::ApiResult<ModelList>>;

pub fn models_resource() -> Models {
    LocalResource::new(|| api::get_json::<ModelList>(paths::templates::MODELS))
}

/// "name · top-1 73.8% · conv1 anisotropy 0.11"
fn describe(m: &ModelSummary) -> String {
    let mut s = m.id.clone();
    if let Some(a) = &m.accuracy {
        s += &format!(" · top-1 {:.1}%", a.top1 * 100.0);
    }
    if !m.trained {
        s += " · UNTRAINED";
    }
    s
}

/// The page's address for model `id` (none for the default), keeping presenter mode and the view.
pub fn page_url(id: Option<&str>, present: bool) -> String {
    let w = web_sys::window();
    let path = w
        .as_ref()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_else(|| "/".into());
    let hash = w
        .as_ref()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default();
    let mut query: Vec<String> = Vec::new();
    if present {
        query.push("present".into());
    }
    if let Some(id) = id {
        query.push(format!("model={id}"));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("{path}{query}{hash}")
}

/// A select of the server's models, shown when it serves more than one. Picking one reloads
/// the page for that model (the open image and view come along: its id is valid for every model).
#[component]
pub fn ModelPicker(models: Models, present: ReadSignal<bool>) -> impl IntoView {
    move || {
        let list = models.get().and_then(Result::ok)?.models;
        if list.len() < 2 {
            return None;
        }
        let current = api::page_model();
        let default_id = list.iter().find(|m| m.default).map(|m| m.id.clone());
        let selected = current.clone().or(default_id.clone()).unwrap_or_default();
        Some(view! {
            <label class="model-picker">"model "
                <select id="model-picker" on:change=move |ev| {
                    let id = event_target_value(&ev);
                    let id = (Some(&id) != default_id.as_ref()).then_some(id);
                    if let Some(w) = web_sys::window() {
                        let _ = w.location().set_href(&page_url(id.as_deref(), present.get_untracked()));
                    }
                }>
                    {list.into_iter().map(|m| {
                        let is = m.id == selected;
                        view! { <option value=m.id.clone() selected=is>{describe(&m)}</option> }
                    }).collect_view()}
                </select>
            </label>
        })
    }
}

/// Two models side by side: conv1 filters, their statistics and the top-9 of a chosen map.
#[component]
pub fn Compare(models: Models) -> impl IntoView {
    let (a, set_a) = signal(None::<String>);
    let (b, set_b) = signal(None::<String>);
    let (layer, set_layer) = signal("conv2".to_string());
    let (map, set_map) = signal(0usize);
    move || {
        let list = models.get().and_then(Result::ok)?.models;
        if list.len() < 2 {
            return None;
        }
        // A: the page's model (else the default), B: the next one
        let first = api::page_model()
            .filter(|p| list.iter().any(|m| &m.id == p))
            .unwrap_or_else(|| list[0].id.clone());
        let second = list.iter().find(|m| m.id != first).map(|m| m.id.clone())?;
        if a.get_untracked().is_none() {
            set_a.set(Some(first));
            set_b.set(Some(second));
        }
        let options = move |chosen: ReadSignal<Option<String>>, list: Vec<ModelSummary>| {
            list.into_iter()
                .map(|m| {
                    let id = m.id.clone();
                    view! { <option value=m.id.clone() selected=move || chosen.get().as_ref() == Some(&id)>{describe(&m)}</option> }
                })
                .collect_view()
        };
        let column = move |pick: ReadSignal<Option<String>>,
                           list: Vec<ModelSummary>,
                           side: &'static str| {
            move || {
                let id = pick.get()?;
                let m = list.iter().find(|m| m.id == id)?.clone();
                let grid = paths::with_model(paths::templates::CONV1_FILTERS, Some(&id));
                let stats = m.conv1.map(|s| {
                    format!(
                        "conv1: low-frequency share {:.2} · anisotropy {:.2} ({:.0}% oriented) · {} dead: {}",
                        s.low_freq_share,
                        s.anisotropy,
                        s.oriented_fraction * 100.0,
                        s.dead_filters,
                        crate::explorer::conv1_verdict(&s)
                    )
                });
                Some(view! {
                    <div class="compare-column" id=format!("compare-{side}-column")>
                        <h3>{describe(&m)}</h3>
                        <details class="meta"><summary>"where its weights come from"</summary>{m.provenance.clone()}</details>
                        <img class="pixelated compare-filters" src=grid alt=format!("conv1 filters of {id}") />
                        <p class="meta compare-stats">{stats}</p>
                        <TopNineOf model=id layer=layer map=map />
                    </div>
                })
            }
        };
        Some(view! {
            <section class="panel compare" id="compare" aria-label="compare models">
                <h2>"Compare two models"</h2>
                <p class="hint">"The same probe images through two networks: their conv1 filters (the paper's Fig. 6 b–c) and \
                    the nine strongest activations of one map each (Fig. 6 d–e compares conv2). Map numbers are each model's own: \
                    map 5 of one network has nothing to do with map 5 of another."</p>
                <div class="compare-controls">
                    <label>"left "<select id="compare-a" on:change=move |ev| set_a.set(Some(event_target_value(&ev)))>{options(a, list.clone())}</select></label>
                    <label>"right "<select id="compare-b" on:change=move |ev| set_b.set(Some(event_target_value(&ev)))>{options(b, list.clone())}</select></label>
                    <label>"layer "<select id="compare-layer" on:change=move |ev| set_layer.set(event_target_value(&ev))>
                        {["conv1", "conv2", "conv3", "conv4", "conv5"].map(|l| view! { <option value=l selected=move || layer.get() == l>{l}</option> })}
                    </select></label>
                    <label>"map "<input id="compare-map" type="number" min="0" max="4095" prop:value=move || map.get().to_string()
                        on:change=move |ev| { if let Ok(m) = event_target_value(&ev).trim().parse::<usize>() { set_map.set(m); } } /></label>
                </div>
                <div class="compare-grid">
                    {column(a, list.clone(), "a")}
                    {column(b, list.clone(), "b")}
                </div>
            </section>
        })
    }
}

/// The top-9 reconstructions of `layer`/`map` of model `model`, with their patches.
#[component]
fn TopNineOf(model: String, layer: ReadSignal<String>, map: ReadSignal<usize>) -> impl IntoView {
    let (retry, set_retry) = signal(0u32);
    let model = StoredValue::new(model);
    let top = LocalResource::new(move || {
        let url = paths::with_model(
            &paths::visualize(&layer.get(), map.get(), None),
            Some(&model.get_value()),
        );
        retry.track();
        async move { api::get_json::<TopActivations>(&url).await }
    });
    view! {
        <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"finding the top-9…"</div> }>
            {move || top.get().map(|t| match t {
                Err(e) if e.code == Some(zfvis_api::ErrorCode::IndexBuilding) => {
                    set_timeout(move || set_retry.update(|n| *n += 1), std::time::Duration::from_secs(2));
                    view! { <div class="progress" role="status"><span class="spinner"></span>{e.to_string()}</div> }.into_any()
                }
                Err(e) => view! { <p class="hint compare-error">{e.to_string()}</p> }.into_any(),
                Ok(t) => view! {
                    <p class="meta">{format!("{} map {}: top {} of {} probe images (reconstruction | patch)", t.layer, t.map, t.entries.len(), t.probe_images)}</p>
                    <div class="top9-grid compare-top9">
                        {t.entries.into_iter().map(|e| {
                            let label = e.label.clone().unwrap_or_default();
                            view! {
                                <div class="top9-pair" title=format!("#{} {:.3} {}", e.rank + 1, e.value, e.image)>
                                    <img class="recon" src=e.reconstruction_url alt="reconstruction" />
                                    <img class="patch" src=e.patch_url alt="probe patch" />
                                    <span class="top9-label">{label}</span>
                                </div>
                            }
                        }).collect_view()}
                    </div>
                }.into_any(),
            })}
        </Suspense>
    }
}
