//! The paper's Fig. 4: features forming during training. For a few maps of one layer, a row
//! each: the map's strongest activation over the probe set at every training snapshot, as its
//! deconvnet reconstruction, epoch by epoch (`GET /api/evolution/{layer}/{map}`).

use crate::api;
use leptos::prelude::*;
use zfvis_api::{paths, EvolutionInfo, EvolutionRow, IndexPhase};

/// Most rows at once (each row renders one picture per snapshot on first view).
const MAX_ROWS: usize = 8;

/// "0, 3, 7" → [0, 3, 7] (at most [`MAX_ROWS`], duplicates dropped); `None` when malformed.
fn parse_maps(text: &str) -> Option<Vec<usize>> {
    let mut maps = Vec::new();
    for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
        let m = part.parse::<usize>().ok()?;
        if !maps.contains(&m) {
            maps.push(m);
        }
    }
    (!maps.is_empty()).then(|| maps.into_iter().take(MAX_ROWS).collect())
}

#[component]
pub fn EvolutionPanel(info: EvolutionInfo) -> impl IntoView {
    let (layer, set_layer) = signal("conv1".to_string());
    let (maps, set_maps) = signal(vec![0usize, 1, 2, 3, 4, 5]);
    let (bad, set_bad) = signal(false);
    let epochs = info.epochs.clone();
    view! {
        <section class="panel evolution" id="evolution" aria-label="features forming during training">
            <h2>"Features forming during training (Fig. 4)"</h2>
            <p class="hint">{format!(
                "Each row is one feature map; each column a snapshot of the same training run ({}), epoch {}. \
                 The picture is the map's strongest activation over the probe set, projected back to pixels. \
                 In the paper, the lower layers settle within a few epochs; the upper ones only after 40–50.",
                info.run,
                epochs.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))}</p>
            <div class="compare-controls">
                <label>"layer "<select id="evolution-layer" on:change=move |ev| set_layer.set(event_target_value(&ev))>
                    {["conv1", "conv2", "conv3", "conv4", "conv5"].map(|l| view! { <option value=l selected=move || layer.get() == l>{l}</option> })}
                </select></label>
                <label>"maps "<input id="evolution-maps" type="text" inputmode="numeric" value="0, 1, 2, 3, 4, 5"
                    title=format!("up to {MAX_ROWS} map numbers, separated by commas")
                    on:change=move |ev| match parse_maps(&event_target_value(&ev)) {
                        Some(m) => { set_bad.set(false); set_maps.set(m); }
                        None => set_bad.set(true),
                    } /></label>
                <Show when=move || bad.get()>
                    <span class="error" role="alert">"give map numbers separated by commas, e.g. 0, 4, 9"</span>
                </Show>
            </div>
            <div class="evolution-rows" id="evolution-rows">
                {move || {
                    let layer = layer.get();
                    maps.get().into_iter().map(|m| view! { <EvolutionRowView layer=layer.clone() map=m /> }).collect_view()
                }}
            </div>
        </section>
    }
}

#[component]
fn EvolutionRowView(layer: String, map: usize) -> impl IntoView {
    let (retry, set_retry) = signal(0u32);
    let url = paths::evolution(&layer, map);
    let row = LocalResource::new(move || {
        let url = url.clone();
        retry.track();
        async move { api::get_json::<EvolutionRow>(&url).await }
    });
    view! {
        <div class="evolution-row" data-map=map>
            <span class="evolution-map">{format!("{layer} map {map}")}</span>
            <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"projecting…"</div> }>
                {move || row.get().map(|r| match r {
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    Ok(r) => {
                        if r.columns.iter().any(|c| c.index.state == IndexPhase::Building) {
                            set_timeout(move || set_retry.update(|n| *n += 1), std::time::Duration::from_secs(2));
                        }
                        view! {
                            <div class="evolution-cells">
                                {r.columns.into_iter().map(|c| {
                                    let caption = format!("epoch {}", c.epoch);
                                    match (c.top, c.index.state) {
                                        (Some(t), _) => {
                                            let title = format!("epoch {}: {:.3} on {}", c.epoch, t.value, t.label.clone().unwrap_or(t.image.clone()));
                                            view! {
                                                <figure class="evolution-cell" title=title>
                                                    <img class="recon" src=t.reconstruction_url alt=format!("{caption}: reconstruction") />
                                                    <figcaption>{caption}</figcaption>
                                                </figure>
                                            }.into_any()
                                        }
                                        (None, IndexPhase::Building) => view! {
                                            <figure class="evolution-cell pending" role="status">
                                                <span class="spinner"></span>
                                                <figcaption>{if c.index.total == 0 {
                                                    format!("{caption}: waiting to index")
                                                } else {
                                                    format!("{caption}: indexing {}/{}", c.index.done, c.index.total)
                                                }}</figcaption>
                                            </figure>
                                        }.into_any(),
                                        (None, _) => view! {
                                            <figure class="evolution-cell pending">
                                                <figcaption>{format!("{caption}: {}", c.index.message.unwrap_or_else(|| "no index".into()))}</figcaption>
                                            </figure>
                                        }.into_any(),
                                    }
                                }).collect_view()}
                            </div>
                        }.into_any()
                    }
                })}
            </Suspense>
        </div>
    }
}
