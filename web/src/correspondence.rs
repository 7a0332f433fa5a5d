//! The paper's correspondence analysis (Fig. 8, Table 1): mask the same part in several images,
//! drawn by dragging on each picture, and read how consistently layers 5 and 7 change (Δ), beside
//! a random-position control and the paper's own table. The paper's set-up (5 springer images of
//! Imagenette val with eye and nose boxes) loads in one click when the probe set holds them.

use crate::api;
use crate::chart::COLOURS;
use crate::upload::DEMO_IMAGES;
use leptos::prelude::*;
use zfvis_api::{
    CorrespondencePart, CorrespondencePreset, CorrespondenceRequest, CorrespondenceResponse,
    ImageResponse, PixelBox,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub id: String,
    pub input_url: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Loading,
    Running,
    Done(Box<CorrespondenceResponse>),
    Failed(String),
}

/// A box of `side` pixels centred on `(x, y)`, kept inside the 224×224 crop.
fn centred(x: u32, y: u32, side: u32) -> PixelBox {
    let x0 = x.saturating_sub(side / 2).min(224 - side);
    let y0 = y.saturating_sub(side / 2).min(224 - side);
    PixelBox {
        x0,
        y0,
        x1: x0 + side,
        y1: y0 + side,
    }
}

/// Starting boxes for `n` images, to be redrawn on each one.
fn default_parts(n: usize) -> Vec<CorrespondencePart> {
    [
        ("left eye", 92, 88),
        ("right eye", 132, 88),
        ("nose", 112, 124),
    ]
    .into_iter()
    .map(|(name, x, y)| CorrespondencePart {
        name: name.into(),
        boxes: vec![centred(x, y, 24); n],
    })
    .collect()
}

async fn demo(name: &str) -> api::ApiResult<Img> {
    let r = crate::upload::upload_demo(name).await?;
    Ok(Img {
        id: r.id,
        input_url: r.input_url,
    })
}

/// Opens the paper's set-up from the probe set: the images' ids and input URLs, and the parts.
pub async fn preset() -> api::ApiResult<(Vec<Img>, Vec<CorrespondencePart>)> {
    let p: CorrespondencePreset =
        api::get_json(zfvis_api::paths::templates::CORRESPONDENCE_PRESET).await?;
    let mut images = Vec::new();
    for (file, index) in p.files.iter().zip(&p.probe_images) {
        let Some(index) = index else {
            return Err(format!(
                "the paper's set-up needs Imagenette val as the probe set ({} is not in it): \
                 zfvis serve --probe ../shared/datasets/imagenette/val",
                file
            )
            .into());
        };
        let r: ImageResponse = api::post_empty(&zfvis_api::paths::probe_image(*index)).await?;
        images.push(Img {
            id: r.id,
            input_url: r.input_url,
        });
    }
    Ok((images, p.parts))
}

#[component]
pub fn CorrespondencePanel(image: ImageResponse) -> impl IntoView {
    let first = Img {
        id: image.id.clone(),
        input_url: image.input_url.clone(),
    };
    let (images, set_images) = signal(vec![first.clone()]);
    let (parts, set_parts) = signal(default_parts(1));
    let (active, set_active) = signal(0usize);
    let (phase, set_phase) = signal(Phase::Idle);
    let drag = StoredValue::new(None::<(usize, u32, u32)>);

    let add_demo = move |name: &'static str| {
        set_phase.set(Phase::Loading);
        leptos::task::spawn_local(async move {
            match demo(name).await {
                Ok(img) if images.get_untracked().iter().all(|i| i.id != img.id) => {
                    set_images.update(|v| v.push(img));
                    set_parts.update(|ps| {
                        for (p, d) in ps.iter_mut().zip(default_parts(1)) {
                            p.boxes.push(d.boxes[0]);
                        }
                    });
                    set_phase.set(Phase::Idle);
                }
                Ok(_) => set_phase.set(Phase::Idle),
                Err(e) => set_phase.set(Phase::Failed(e.to_string())),
            }
        });
    };
    let load_preset = move |_| {
        set_phase.set(Phase::Loading);
        leptos::task::spawn_local(async move {
            match preset().await {
                Ok((imgs, ps)) => {
                    set_images.set(imgs);
                    set_parts.set(ps);
                    set_phase.set(Phase::Idle);
                }
                Err(e) => set_phase.set(Phase::Failed(e.to_string())),
            }
        });
    };
    let reset = move |_| {
        set_images.set(vec![first.clone()]);
        set_parts.set(default_parts(1));
        set_phase.set(Phase::Idle);
    };
    let run = move |_| {
        let request = CorrespondenceRequest {
            images: images.get_untracked().into_iter().map(|i| i.id).collect(),
            parts: parts.get_untracked(),
            repetitions: Some(10),
            seed: None,
        };
        set_phase.set(Phase::Running);
        leptos::task::spawn_local(async move {
            let url = zfvis_api::paths::correspondence();
            let outcome: api::ApiResult<CorrespondenceResponse> = match api::post_json::<
                CorrespondenceResponse,
                CorrespondenceResponse,
            >(&url, &request)
            .await
            {
                Ok(api::Started::Done(r) | api::Started::Accepted(r)) => Ok(r),
                Err(e) => Err(e),
            };
            set_phase.set(match outcome {
                Ok(r) => Phase::Done(Box::new(r)),
                Err(e) => Phase::Failed(e.to_string()),
            });
        });
    };
    // drawing: press, drag, release on a picture sets the active part's box there
    let press = move |i: usize, ev: leptos::ev::PointerEvent| {
        ev.prevent_default();
        drag.set_value(Some((
            i,
            ev.offset_x().clamp(0, 223) as u32,
            ev.offset_y().clamp(0, 223) as u32,
        )));
    };
    let release = move |i: usize, ev: leptos::ev::PointerEvent| {
        let Some((j, x0, y0)) = drag.get_value() else {
            return;
        };
        drag.set_value(None);
        if i != j {
            return;
        }
        let (x1, y1) = (
            ev.offset_x().clamp(0, 224) as u32,
            ev.offset_y().clamp(0, 224) as u32,
        );
        let b = PixelBox {
            x0: x0.min(x1),
            y0: y0.min(y1),
            x1: x0.max(x1).max(x0.min(x1) + 4).min(224),
            y1: y0.max(y1).max(y0.min(y1) + 4).min(224),
        };
        let part = active.get_untracked();
        set_parts.update(|ps| {
            if let Some(slot) = ps.get_mut(part).and_then(|p| p.boxes.get_mut(i)) {
                *slot = b;
            }
        });
    };

    view! {
        <section class="panel analyses" id="correspondence" aria-label="correspondence (Table 1)">
            <h2>"Correspondence (the paper's Fig. 8 and Table 1)"</h2>
            <p class="meta">"Mask the same part in several images; Δ measures how consistently that changes layer 5 and layer 7 "
                "(the mean fraction of features whose change has a different sign in two images; lower = more consistent). "
                "A random box of the first part's size is the control. Pick a part, then drag on each picture to place its box."</p>
            <div class="controls">
                <button id="corr-preset" on:click=load_preset>"the paper's set-up (5 springer images)"</button>
                <button on:click=reset>"start over with this image"</button>
                <span>"add: "</span>
                {DEMO_IMAGES.into_iter().map(|name| view! {
                    <button class="demo small" data-corr-demo=name title=name on:click=move |_| add_demo(name)>
                        <img src=format!("/demo/{name}") alt=name loading="lazy" />
                    </button>
                }).collect_view()}
            </div>
            <div class="controls" role="group">
                <span>"drawing: "</span>
                {move || parts.get().into_iter().enumerate().map(|(k, p)| view! {
                    <button class:active=move || active.get() == k data-part=k
                        style=format!("border-color:{}", COLOURS[k % COLOURS.len()])
                        on:click=move |_| set_active.set(k)>{p.name}</button>
                }).collect_view()}
            </div>
            <div class="corr-images" id="corr-images">
                {move || images.get().into_iter().enumerate().map(|(i, img)| view! {
                    <div class="corr-stage" data-image=i
                        on:pointerdown=move |ev| press(i, ev)
                        on:pointerup=move |ev| release(i, ev)>
                        <img src=img.input_url alt=format!("image {}", i + 1) draggable="false" />
                        {move || parts.get().into_iter().enumerate().filter_map(|(k, p)| {
                            let b = *p.boxes.get(i)?;
                            Some(view! {
                                <div class="corr-box" title=p.name.clone()
                                    style=format!("left:{}px;top:{}px;width:{}px;height:{}px;border-color:{}",
                                        b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0, COLOURS[k % COLOURS.len()])></div>
                            })
                        }).collect_view()}
                    </div>
                }).collect_view()}
            </div>
            <div class="controls">
                <button id="corr-run" on:click=run
                    disabled=move || images.get().len() < 2 || matches!(phase.get(), Phase::Running | Phase::Loading)>
                    {move || format!("Measure Δ on {} images", images.get().len())}
                </button>
                {move || (images.get().len() < 2).then(|| view! { <span class="meta">"add at least one more image"</span> })}
            </div>
            {move || match phase.get() {
                Phase::Idle => ().into_any(),
                Phase::Loading => view! { <div class="progress" role="status"><span class="spinner"></span>"loading images…"</div> }.into_any(),
                Phase::Running => {
                    let n = images.get().len() * (parts.get().len() + 10);
                    view! { <div class="progress" role="status" id="corr-progress"><span class="spinner"></span>{format!("{n} masked images through ZFNet…")}</div> }.into_any()
                }
                Phase::Failed(e) => view! { <p class="error" role="alert" id="corr-error">{e}</p> }.into_any(),
                Phase::Done(r) => view! { <DeltaTable r=*r /> }.into_any(),
            }}
        </section>
    }
}

#[component]
pub fn DeltaTable(r: CorrespondenceResponse) -> impl IntoView {
    let cell = |m: f32, s: f32| format!("{m:.3} ± {s:.3}");
    let rows = r
        .rows
        .iter()
        .map(|row| {
            let paper = row
                .paper
                .map(|p| (cell(p[0].mean, p[0].std), cell(p[1].mean, p[1].std)));
            let (p5, p7) = paper.unwrap_or(("–".into(), "–".into()));
            view! {
                <tr>
                    <td>{row.part.clone()}</td>
                    <td>{cell(row.layer5.mean, row.layer5.std)}</td>
                    <td>{cell(row.layer7.mean, row.layer7.std)}</td>
                    <td class="paper">{p5}</td>
                    <td class="paper">{p7}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="delta" id="corr-table">
            <thead><tr><th>"masked"</th><th>"Δ layer 5"</th><th>"Δ layer 7"</th><th>"paper Δ5"</th><th>"paper Δ7"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <p class="meta">{format!("{} images, {} random draws, {:.1} s. Lower Δ than the random row: hiding that part changes the features alike in every image, a sign the network locates it.",
            r.images, r.repetitions, r.elapsed_ms as f32 / 1000.0)}</p>
    }
}
