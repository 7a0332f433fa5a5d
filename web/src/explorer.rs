//! Layer tabs, the grid of feature maps for the current image, and the view of one map:
//! activation heatmap, receptive field on the input, deconvnet projection, input patch.

use crate::api;
use crate::chart::ColourBar;
use leptos::prelude::*;
use zfvis_api::{
    ImageResponse, LayerActivations, ProjectionMode, TopActivations, VisualizeResponse,
};

pub const LAYERS: [&str; 5] = ["conv1", "conv2", "conv3", "conv4", "conv5"];

/// What the explorer shows: kept in the URL hash as `#/IMAGE/LAYER/MAP/MODE[/X,Y]`.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub image: String,
    pub layer: String,
    pub map: Option<usize>,
    pub mode: ProjectionMode,
    /// A unit `(x, y)` picked on the activation map; `None`: the strongest.
    pub unit: Option<(u32, u32)>,
}

impl View {
    pub fn new(image: String) -> View {
        View {
            image,
            layer: "conv1".into(),
            map: None,
            mode: ProjectionMode::Unit,
            unit: None,
        }
    }

    pub fn to_hash(&self) -> String {
        match (self.map, self.unit) {
            (Some(m), Some((x, y))) => format!(
                "#/{}/{}/{m}/{}/{x},{y}",
                self.image,
                self.layer,
                self.mode.as_str()
            ),
            (Some(m), None) => {
                format!("#/{}/{}/{m}/{}", self.image, self.layer, self.mode.as_str())
            }
            (None, _) => format!("#/{}/{}", self.image, self.layer),
        }
    }

    pub fn from_hash(hash: &str) -> Option<View> {
        let mut parts = hash
            .trim_start_matches('#')
            .trim_start_matches('/')
            .split('/');
        let image = parts
            .next()
            // 64 hex digits (32 in links made before ids were the full SHA-256: they get the
            // "no longer kept" message)
            .filter(|s| matches!(s.len(), 32 | 64) && s.chars().all(|c| c.is_ascii_hexdigit()))?;
        let layer = parts
            .next()
            .filter(|l| LAYERS.contains(l))
            .unwrap_or("conv1");
        let map = parts.next().and_then(|m| m.parse().ok());
        let mode = match parts.next() {
            Some("map") => ProjectionMode::Map,
            _ => ProjectionMode::Unit,
        };
        let unit = parts.next().and_then(|u| {
            let (x, y) = u.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        });
        Some(View {
            image: image.into(),
            layer: layer.into(),
            map,
            mode,
            unit: map.and(unit),
        })
    }
}

#[component]
pub fn Explorer(
    view: ReadSignal<Option<View>>,
    set_view: WriteSignal<Option<View>>,
) -> impl IntoView {
    let update = move |f: &dyn Fn(&mut View)| {
        set_view.update(|v| {
            if let Some(v) = v {
                f(v)
            }
        })
    };
    let image = Memo::new(move |_| view.get().map(|v| v.image));
    let layer = Memo::new(move |_| view.get().map(|v| v.layer).unwrap_or_default());
    let map = Memo::new(move |_| view.get().and_then(|v| v.map));
    let mode = Memo::new(move |_| view.get().map(|v| v.mode).unwrap_or_default());
    let unit = Memo::new(move |_| view.get().and_then(|v| v.unit));
    let (sorted, set_sorted) = signal(true);
    let (shared, set_shared) = signal(true);
    // a map opened from the grid (far below) or by a link scrolls its view into sight
    Effect::new(move |previous: Option<Option<usize>>| {
        let now = map.get();
        if now.is_some() && previous != Some(now) {
            request_animation_frame(|| {
                if let Some(el) = document().get_element_by_id("map-view") {
                    el.scroll_into_view();
                }
            });
        }
        now
    });

    let activations = LocalResource::new(move || {
        let (image, layer) = (image.get(), layer.get());
        async move {
            let image = image?;
            Some(api::get_json::<LayerActivations>(&zfvis_api::paths::layer(&image, &layer)).await)
        }
    });

    view! {
        <div class="tabs">
        <nav class="tablist" role="tablist" aria-label="layers">
            {LAYERS.into_iter().map(|name| view! {
                <button role="tab" class="tab" data-layer=name
                    class:active=move || layer.get() == name
                    aria-selected=move || (layer.get() == name).to_string()
                    on:click=move |_| update(&|v| { v.layer = name.into(); v.map = None; v.unit = None; })>
                    {name}
                </button>
            }).collect_view()}
        </nav>
            <label class="sort">
                <input type="checkbox" prop:checked=move || sorted.get()
                    on:change=move |ev| set_sorted.set(event_target_checked(&ev)) />
                " strongest first"
            </label>
            <label class="sort">
                <input type="checkbox" id="shared-scale" prop:checked=move || shared.get()
                    on:change=move |ev| set_shared.set(event_target_checked(&ev)) />
                " one scale for all maps"
            </label>
        </div>
        <Show when=move || map.get().is_some()>
            <MapView image=image layer=layer map=map mode=mode unit=unit
                set_mode=move |m| update(&|v| v.mode = m)
                set_unit=move |u| update(&|v| v.unit = u)
                close=move || update(&|v| { v.map = None; v.unit = None; }) />
        </Show>
        <Show when=move || layer.get() == "conv1">
            <figure class="filters">
                <img id="conv1-filters" class="pixelated" src=crate::api::url(zfvis_api::paths::templates::CONV1_FILTERS) alt="the conv1 filters" />
                <figcaption>"the conv1 filters (7×7 RGB, each stretched to its own contrast, grey = 0; paper Fig. 6c) "
                    <a class="download" href=crate::api::url(zfvis_api::paths::templates::CONV1_FILTERS) download="conv1-filters.png">"download PNG"</a>
                </figcaption>
                <Conv1Stats />
            </figure>
        </Show>
        <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"loading feature maps…"</div> }>
            {move || activations.get().flatten().map(|acts| match acts {
                Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                Ok(acts) => {
                    let image = image.get().unwrap_or_default();
                    let mut order: Vec<usize> = (0..acts.max.len()).collect();
                    if sorted.get() {
                        order.sort_by(|&a, &b| acts.max[b].total_cmp(&acts.max[a]));
                    }
                    let top = acts.max.iter().cloned().fold(0f32, f32::max);
                    view! {
                        <p class="meta" id="grid-facts">{if shared.get() {
                            format!("{}: {} feature maps of {}×{}, all on one scale: a dim thumbnail is a weak map", acts.layer, acts.max.len(), acts.map_shape[0], acts.map_shape[1])
                        } else {
                            format!("{}: {} feature maps of {}×{}, each stretched to its own maximum (brightness does not compare)", acts.layer, acts.max.len(), acts.map_shape[0], acts.map_shape[1])
                        }}</p>
                        {shared.get().then(|| view! { <ColourBar lo="0".to_string() hi=format!("{top:.3}") /> })}
                        <div class="maps" id="map-grid">
                            {order.into_iter().map(|m| {
                                let src = crate::api::url(&if shared.get() {
                                    zfvis_api::paths::activation_shared(&image, &acts.layer, m)
                                } else {
                                    zfvis_api::paths::activation(&image, &acts.layer, m)
                                });
                                let strength = acts.max[m];
                                view! {
                                    <button class="map" data-map=m title=format!("map {m}: max {strength:.3}")
                                        class:selected=move || map.get() == Some(m)
                                        on:click=move |_| update(&|v| { v.map = Some(m); v.unit = None; })>
                                        <img src=src alt=format!("map {m}") loading="lazy" />
                                        <span class="index">{m}</span>
                                    </button>
                                }
                            }).collect_view()}
                        </div>
                    }.into_any()
                }
            })}
        </Suspense>
    }
}

#[component]
fn MapView(
    image: Memo<Option<String>>,
    layer: Memo<String>,
    map: Memo<Option<usize>>,
    mode: Memo<ProjectionMode>,
    unit: Memo<Option<(u32, u32)>>,
    set_mode: impl Fn(ProjectionMode) + Copy + Send + Sync + 'static,
    set_unit: impl Fn(Option<(u32, u32)>) + Copy + Send + Sync + 'static,
    close: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let details = LocalResource::new(move || {
        let (image, layer, map, mode, unit) =
            (image.get(), layer.get(), map.get(), mode.get(), unit.get());
        async move {
            let (image, map) = (image?, map?);
            Some(
                api::get_json::<VisualizeResponse>(&zfvis_api::paths::visualize(
                    &layer,
                    map,
                    Some((&image, mode, unit)),
                ))
                .await,
            )
        }
    });
    // a click on a picture of the map (shown at any size) picks the unit under the pointer
    let pick = move |ev: leptos::ev::MouseEvent, shape: [usize; 2]| {
        let el = event_target::<web_sys::HtmlElement>(&ev);
        let (w, h) = (
            el.client_width().max(1) as f64,
            el.client_height().max(1) as f64,
        );
        let x = (ev.offset_x() as f64 / w * shape[1] as f64)
            .floor()
            .clamp(0.0, shape[1] as f64 - 1.0);
        let y = (ev.offset_y() as f64 / h * shape[0] as f64)
            .floor()
            .clamp(0.0, shape[0] as f64 - 1.0);
        set_unit(Some((x as u32, y as u32)));
    };
    view! {
        <section class="mapview" id="map-view">
            <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"projecting…"</div> }>
                {move || details.get().flatten().map(|d| match d {
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    Ok(v) => {
                        let rf = v.receptive_field;
                        // the input is drawn at up to 448 px, smaller on a phone: the box in percent
                        let pct = |v: u32| v as f32 / 224.0 * 100.0;
                        let style = format!("left:{:.3}%;top:{:.3}%;width:{:.3}%;height:{:.3}%",
                            pct(rf.x0), pct(rf.y0), pct(rf.x1 - rf.x0), pct(rf.y1 - rf.y0));
                        let input = crate::api::url(&zfvis_api::paths::input(&v.image));
                        let title = format!("{} · map {} of {}", v.layer, v.map, v.maps);
                        let picked = if v.unit != v.position { format!("; picked unit (x {}, y {}) = {:.4}", v.unit.x, v.unit.y, v.value) } else { String::new() };
                        let facts = format!("strongest activation {:.4} at (x {}, y {}) of {}×{}{picked}; receptive field x {}–{}, y {}–{}. Click the activation map to pick another unit.",
                            v.max, v.position.x, v.position.y, v.map_shape[1], v.map_shape[0], rf.x0, rf.x1, rf.y0, rf.y1);
                        let shape = v.map_shape;
                        view! {
                            <header class="mapview-head">
                                <h2 id="map-title">{title}</h2>
                                <div class="modes" role="group">
                                    <button class:active=move || mode.get() == ProjectionMode::Unit id="mode-unit"
                                        on:click=move |_| set_mode(ProjectionMode::Unit)>"single unit"</button>
                                    <button class:active=move || mode.get() == ProjectionMode::Map id="mode-map"
                                        on:click=move |_| set_mode(ProjectionMode::Map)>"whole map"</button>
                                </div>
                                <button class="close" aria-label="close the map view" on:click=move |_| close()>"✕"</button>
                            </header>
                            <p class="meta" id="map-facts">{facts}</p>
                            <details class="explain" id="map-explain">
                                <summary>"What am I looking at?"</summary>
                                <p>"The activation map is where this feature map fired on the photo, one pixel per unit (paper §2). "
                                   "The projection runs the network backwards from one unit (or the whole map) to pixels with the deconvnet (§2.1, Fig. 1): "
                                   "it shows which structure in the photo excited the unit, grey meaning no influence. "
                                   "The patch is the part of the photo the unit can see (its receptive field); the box on the input marks it."</p>
                            </details>
                            <div class="figures">
                                <figure>
                                    <div class="stage">
                                        <img class="input" src=input alt="network input" />
                                        <img class="overlay pickable" src=v.activation_url.clone() alt="activation overlay"
                                            on:click=move |ev| pick(ev, shape) />
                                        <div class="rf" id="rf-box" style=style></div>
                                    </div>
                                    <figcaption>"input (224×224) with the activation map and the unit's receptive field"</figcaption>
                                </figure>
                                <figure>
                                    <img class="pixelated big pickable" src=v.activation_url.clone() alt="activation map (click a unit)" id="activation-img"
                                        on:click=move |ev| pick(ev, shape) />
                                    <ColourBar lo="0".to_string() hi=format!("{:.3}", v.max) />
                                    <figcaption>"activation map, one pixel per unit (click one to pick it) "
                                        <a class="download" href=v.activation_url.clone() download=format!("{}-{}-activation.png", v.layer, v.map)>"PNG"</a></figcaption>
                                </figure>
                                <figure>
                                    <img class="big" src=v.projection_url.clone() alt="deconvnet projection" id="projection-img" />
                                    <figcaption>{match (v.mode, v.unit == v.position) {
                                        (ProjectionMode::Unit, true) => "deconvnet projection of the strongest unit (grey = 0) ",
                                        (ProjectionMode::Unit, false) => "deconvnet projection of the picked unit (grey = 0) ",
                                        (ProjectionMode::Map, _) => "deconvnet projection of the whole map (grey = 0; stretched so the strongest 0.5% of values saturate) ",
                                    }}
                                        <a class="download" href=v.projection_url.clone() download=format!("{}-{}-projection-{}.png", v.layer, v.map, v.mode.as_str())>"PNG"</a></figcaption>
                                </figure>
                                <figure>
                                    <img class="big" src=v.patch_url.clone() alt="input patch" id="patch-img" />
                                    <figcaption>"input patch under the receptive field "
                                        <a class="download" href=v.patch_url.clone() download=format!("{}-{}-patch.png", v.layer, v.map)>"PNG"</a></figcaption>
                                </figure>
                            </div>
                            <section class="methods" id="methods">
                                <h3>"Three ways back to pixels"</h3>
                                <p class="meta">"The same unit taken back to the input by three methods that differ only in what the backward pass does at each ReLU (grey = 0, cropped to the receptive field)."</p>
                                <div class="figures">
                                    {v.methods.iter().map(|m| view! {
                                        <figure class="method">
                                            <img class="big" src=m.url.clone() alt=m.title.clone() id=format!("method-{}", m.method.as_str()) />
                                            <figcaption><strong>{m.title.clone()}</strong><br />{m.about.clone()}</figcaption>
                                        </figure>
                                    }).collect_view()}
                                </div>
                            </section>
                        }.into_any()
                    }
                })}
            </Suspense>
            <TopNine layer=layer map=map />
        </section>
    }
}

/// The map's nine strongest activations over the probe set: each input patch beside its
/// deconvnet reconstruction (the paper's Fig. 2). Clicking one opens that probe image.
#[component]
fn TopNine(layer: Memo<String>, map: Memo<Option<usize>>) -> impl IntoView {
    // while the server is still building its probe index, ask again every two seconds
    let (retry, set_retry) = signal(0u32);
    let top = LocalResource::new(move || {
        let (layer, map) = (layer.get(), map.get());
        retry.track();
        async move {
            let map = map?;
            Some(
                api::get_json::<TopActivations>(&zfvis_api::paths::visualize(&layer, map, None))
                    .await,
            )
        }
    });
    let (opening, set_opening) = signal(None::<String>);
    let open = move |url: String, layer: String, map: usize| {
        set_opening.set(Some("opening the probe image…".into()));
        leptos::task::spawn_local(async move {
            match api::post_empty::<ImageResponse>(&url).await {
                Ok(img) => {
                    set_opening.set(None);
                    if let Some(w) = web_sys::window() {
                        let _ = w
                            .location()
                            .set_hash(&format!("#/{}/{layer}/{map}/unit", img.id));
                    }
                }
                Err(e) => set_opening.set(Some(e.to_string())),
            }
        });
    };
    view! {
        <section class="topnine" id="top9">
            <details class="explain">
                <summary>"What is the top-9?"</summary>
                <p>"The nine images of the probe set on which this feature map fires most, each at its strongest unit (paper Fig. 2): "
                   "the patch that unit sees beside its deconvnet reconstruction. What the nine share is what the map detects; "
                   "the number is the activation."</p>
            </details>
            <Suspense fallback=|| view! { <div class="progress"><span class="spinner"></span>"finding the top-9 over the probe set…"</div> }>
                {move || top.get().flatten().map(|t| match t {
                    Err(e) if e.code == Some(zfvis_api::ErrorCode::IndexBuilding) => {
                        set_timeout(move || set_retry.update(|n| *n += 1), std::time::Duration::from_secs(2));
                        view! {
                            <div class="progress" role="status" id="top9-building"><span class="spinner"></span>{e.to_string()}</div>
                        }.into_any()
                    }
                    Err(e) => view! { <p class="hint" id="top9-missing">{format!("top-9: {e}")}</p> }.into_any(),
                    Ok(t) => {
                        let caption = format!(
                            "top {} of {} · map {} over {} probe images ({}): patch | reconstruction; click to open",
                            t.entries.len(), t.layer, t.map, t.probe_images, t.probe_name);
                        let (layer, map) = (t.layer.clone(), t.map);
                        view! {
                            <h3>{caption}</h3>
                            <div class="top9-grid" id="top9-grid">
                                {t.entries.into_iter().map(|e| {
                                    let url = e.open_url.clone();
                                    let layer = layer.clone();
                                    let label = e.label.clone().unwrap_or_else(|| e.image.clone());
                                    let title = format!("#{} {:.3} · {}", e.rank + 1, e.value, e.image);
                                    let (patch_url, recon_url) = (e.patch_url.clone(), e.reconstruction_url.clone());
                                    view! {
                                        <div class="top9-cell">
                                        <button class="top9-pair" title=title
                                            on:click=move |_| open(url.clone(), layer.clone(), map)>
                                            <img class="patch" src=e.patch_url alt="probe patch" />
                                            <img class="recon" src=e.reconstruction_url alt="reconstruction" />
                                            <span class="top9-label">{format!("{:.2} · {label}", e.value)}</span>
                                        </button>
                                        <span class="top9-downloads">
                                            <a class="download" href=patch_url.clone() download=format!("top{}-patch.png", e.rank + 1)>"patch"</a>
                                            " · "
                                            <a class="download" href=recon_url.clone() download=format!("top{}-reconstruction.png", e.rank + 1)>"reconstruction"</a>
                                        </span>
                                        </div>
                                    }
                                }).collect_view()}
                            </div>
                        }.into_any()
                    }
                })}
            </Suspense>
            {move || opening.get().map(|m| view! { <p class="meta">{m}</p> })}
        </section>
    }
}

/// What conv1 filters with these statistics look like, in words (thresholds: the floors of a
/// learned conv1; random filters score 0.17 and 0.10).
pub fn conv1_verdict(stats: &zfvis_api::FilterStats) -> &'static str {
    if stats.low_freq_share >= 0.35 && stats.anisotropy >= 0.4 {
        "smooth colour blobs and oriented edges: learned filters"
    } else if stats.low_freq_share >= 0.35 {
        "smooth colour blobs and gradients, few oriented edges yet"
    } else {
        "indistinguishable from random filters: this conv1 has not learned much"
    }
}

/// How learned the conv1 filters look, against what random filters score.
#[component]
fn Conv1Stats() -> impl IntoView {
    let model = crate::model_info();
    move || {
        let stats = model.and_then(|m| m.get()).and_then(Result::ok)?.conv1?;
        let verdict = conv1_verdict(&stats);
        Some(view! {
            <p class="meta" id="conv1-stats">
                {format!(
                    "low-frequency share {:.2} (random filters: 0.17) · orientation anisotropy {:.2} (random: 0.10; \
                     {:.0}% of filters oriented) · {} dead of {}: {verdict}",
                    stats.low_freq_share,
                    stats.anisotropy,
                    stats.oriented_fraction * 100.0,
                    stats.dead_filters,
                    stats.filters
                )}
            </p>
        })
    }
}
