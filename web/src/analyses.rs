//! The paper's Fig. 5 on the current image: how far layer 1 and layer 7 move, and how the class
//! probability changes, as the image is translated, scaled and rotated, beside up to four demo
//! photos (the paper plots five images).

use crate::api;
use crate::chart::{LineChart, COLOURS};
use crate::upload::DEMO_IMAGES;
use leptos::prelude::*;
use std::time::Duration;
use zfvis_api::{ApiError, ImageResponse, InvarianceRequest, InvarianceResponse, SweepProgress};

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Running,
    Done(Box<InvarianceResponse>),
    Failed(String),
}

#[component]
pub fn InvariancePanel(image: ImageResponse) -> impl IntoView {
    let (others, set_others) = signal(Vec::<&'static str>::new());
    let (steps, set_steps) = signal(15usize);
    let (phase, set_phase) = signal(Phase::Idle);
    let (elapsed, set_elapsed) = signal(0u32);
    let (progress, set_progress) = signal(None::<SweepProgress>);
    let id = image.id.clone();
    let run = move |_| {
        set_phase.set(Phase::Running);
        set_elapsed.set(0);
        let timer = set_interval_with_handle(
            move || set_elapsed.update(|t| *t += 1),
            Duration::from_millis(100),
        )
        .ok();
        let (id, names, steps) = (id.clone(), others.get_untracked(), steps.get_untracked());
        set_progress.set(None);
        leptos::task::spawn_local(async move {
            let outcome: api::ApiResult<InvarianceResponse> = async {
                let mut ids = Vec::new();
                for name in names {
                    ids.push(crate::upload::upload_demo(name).await?.id);
                }
                let request = InvarianceRequest {
                    others: ids,
                    steps: Some(steps),
                    class: None,
                };
                let url = zfvis_api::paths::invariance(&id, false);
                // progress as it comes, then the curves (or the error) as the last event
                let mut last: api::ApiResult<InvarianceResponse> =
                    Err("the server ended the stream without an answer".into());
                api::post_json_events(&url, &request, |event, data| match event {
                    "progress" => {
                        if let Ok(p) = serde_json::from_str::<SweepProgress>(data) {
                            set_progress.set(Some(p));
                        }
                    }
                    "done" => {
                        last = serde_json::from_str(data)
                            .map_err(|e| format!("unexpected answer from the server: {e}").into());
                    }
                    _ => {
                        last = Err(match serde_json::from_str::<ApiError>(data) {
                            Ok(e) => api::Failure {
                                code: Some(e.code),
                                message: e.error,
                            },
                            Err(_) => "the analysis failed".into(),
                        });
                    }
                })
                .await?;
                last
            }
            .await;
            if let Some(t) = timer {
                t.clear();
            }
            set_phase.set(match outcome {
                Ok(r) => Phase::Done(Box::new(r)),
                Err(e) => Phase::Failed(e.to_string()),
            });
        });
    };
    let toggle = move |name: &'static str| {
        set_others.update(|o| {
            if let Some(i) = o.iter().position(|n| *n == name) {
                o.remove(i);
            } else if o.len() < 4 {
                o.push(name);
            }
        })
    };
    view! {
        <section class="panel analyses" id="invariance" aria-label="invariance (Fig. 5)">
            <h2>"Invariance (the paper's Fig. 5)"</h2>
            <p class="meta">"Translate the image vertically (−60…60 px), zoom it (1…1.8×) and rotate it (0…350°); "
                "plot how far layer 1 and layer 7 (fc7) move from the original (Euclidean distance) and the probability of its class. "
                "The paper: layer 1 moves at once, layer 7 much less; the answer survives translation and scale, not rotation. "
                "Pixels brought in from outside the crop are mean grey."</p>
            <details class="explain">
                <summary>"What am I looking at?"</summary>
                <p>"Each chart has one curve per image. Columns 2 and 3: how far the features of the transformed image are from the original's, "
                   "at layer 1 (edges and colours) and layer 7 (the last hidden layer); column 4: how sure the network stays of the image's class. "
                   "Flat curves mean the layer does not care about that transform (paper §4.3, Fig. 5)."</p>
            </details>
            <div class="controls">
                <span>"compare with (up to 4): "</span>
                {DEMO_IMAGES.into_iter().map(|name| view! {
                    <label class="pick">
                        <input type="checkbox" data-other=name
                            prop:checked=move || others.get().contains(&name)
                            on:change=move |_| toggle(name) />
                        <img src=format!("/demo/{name}") alt=name loading="lazy" />
                    </label>
                }).collect_view()}
            </div>
            <div class="controls">
                <label>"steps per transform "
                    <select id="invariance-steps" on:change=move |ev| {
                        if let Ok(v) = event_target_value(&ev).parse() { set_steps.set(v) }
                    }>
                        <option value="9">"9"</option>
                        <option value="15" selected>"15"</option>
                        <option value="29">"29"</option>
                    </select>
                </label>
                <button id="invariance-run" on:click=run disabled=move || phase.get() == Phase::Running>
                    "Run invariance"
                </button>
            </div>
            {move || match phase.get() {
                Phase::Idle => ().into_any(),
                Phase::Running => {
                    let n = (1 + others.get().len()) * 3 * steps.get();
                    let counts = move || progress.get().map_or((0, n), |p| (p.done, p.total));
                    let (done, total) = (move || counts().0, move || counts().1);
                    view! {
                        <div class="progress" role="status" id="invariance-progress"><span class="spinner"></span>
                            <progress max=move || total().to_string() value=move || done().to_string()
                                aria-label="transformed images through ZFNet"></progress>
                            {move || format!(" {} of {} transformed images through ZFNet… {:.1} s",
                                done(), total(), elapsed.get() as f32 / 10.0)}
                        </div>
                    }.into_any()
                }
                Phase::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Phase::Done(r) => view! { <Curves r=*r /> }.into_any(),
            }}
        </section>
    }
}

#[component]
fn Curves(r: InvarianceResponse) -> impl IntoView {
    let href = format!(
        "data:text/csv;charset=utf-8,{}",
        js_sys::encode_uri_component(&r.csv())
    );
    let legend = r
        .images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let name = if i == 0 { "this image".to_string() } else { format!("image {}", i + 1) };
            view! {
                <li><span class="swatch" style=format!("background:{}", COLOURS[i % COLOURS.len()])></span>
                    {format!("{name}: {} ({:.0}%)", img.class_label, img.base_probability * 100.0)}</li>
            }
        })
        .collect_view();
    let rows = (0..r.images.first().map_or(0, |i| i.curves.len()))
        .map(|t| {
            let first = &r.images[0].curves[t];
            let (xs, axis) = (first.amounts.clone(), first.transform.axis().to_string());
            let pick = |f: fn(&zfvis_api::InvarianceCurve) -> &Vec<f32>| -> Vec<Vec<f32>> {
                r.images.iter().map(|i| f(&i.curves[t]).clone()).collect()
            };
            let row = ["a", "b", "c"].get(t).copied().unwrap_or("");
            view! {
                <div class="chart-row" data-transform=first.transform.as_str()>
                    <LineChart title=format!("{row}2 layer 1 distance") x_label=axis.clone() y_label="Euclidean distance".into()
                        xs=xs.clone() series=pick(|c| &c.layer1) y_max=None />
                    <LineChart title=format!("{row}3 layer 7 distance") x_label=axis.clone() y_label="Euclidean distance".into()
                        xs=xs.clone() series=pick(|c| &c.layer7) y_max=None />
                    <LineChart title=format!("{row}4 class probability") x_label=axis y_label="P(class)".into()
                        xs=xs series=pick(|c| &c.probability) y_max=Some(1.0) />
                </div>
            }
        })
        .collect_view();
    view! {
        <ul class="legend" id="invariance-legend">{legend}</ul>
        <div class="charts" id="invariance-charts">{rows}</div>
        <p class="meta">{format!("{} images × 3 transforms × {} steps in {:.1} s · ", r.images.len(), r.steps, r.elapsed_ms as f32 / 1000.0)}
            <a class="download" id="invariance-csv" href=href download="invariance.csv">"CSV"</a></p>
    }
}
