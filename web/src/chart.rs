//! A small SVG line chart: axes with ticks and units, one polyline per series, for the analyses.

use leptos::prelude::*;

/// Series colours, one per image, readable on the dark theme and on a projector.
pub const COLOURS: [&str; 5] = ["#4cc9f0", "#f72585", "#ffd166", "#06d6a0", "#b388ff"];

/// Five round tick values covering `lo..=hi`.
fn ticks(lo: f32, hi: f32) -> Vec<f32> {
    (0..5).map(|i| lo + (hi - lo) * i as f32 / 4.0).collect()
}

fn label(v: f32) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `series[i]` = the y values of image `i` over `xs`; y runs from 0 to `y_max` (or the data's
/// largest value).
#[component]
pub fn LineChart(
    title: String,
    x_label: String,
    y_label: String,
    xs: Vec<f32>,
    series: Vec<Vec<f32>>,
    y_max: Option<f32>,
) -> impl IntoView {
    let (w, h) = (300.0f32, 200.0f32);
    let (left, right, top, bottom) = (46.0f32, 10.0f32, 22.0f32, 38.0f32);
    let x_lo = xs.first().copied().unwrap_or(0.0);
    let x_hi = xs.last().copied().unwrap_or(1.0).max(x_lo + 1e-6);
    let data_max = series.iter().flatten().fold(0f32, |m, &v| m.max(v));
    let y_hi = y_max.unwrap_or(data_max).max(1e-6);
    let px = move |x: f32| left + (x - x_lo) / (x_hi - x_lo) * (w - left - right);
    let py = move |y: f32| h - bottom - y / y_hi * (h - top - bottom);
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, ys)| {
            let points = xs
                .iter()
                .zip(ys)
                .map(|(&x, &y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect::<Vec<_>>()
                .join(" ");
            view! {
                <polyline points=points fill="none" stroke=COLOURS[i % COLOURS.len()] stroke-width="2" />
            }
        })
        .collect_view();
    let x_ticks = ticks(x_lo, x_hi)
        .into_iter()
        .map(|t| {
            view! {
                <line x1=px(t) x2=px(t) y1=h - bottom y2=h - bottom + 4.0 stroke="#8a97a6" />
                <text x=px(t) y=h - bottom + 15.0 text-anchor="middle" class="tick">{label(t)}</text>
            }
        })
        .collect_view();
    let y_ticks = ticks(0.0, y_hi)
        .into_iter()
        .map(|t| {
            view! {
                <line x1=left - 4.0 x2=w - right y1=py(t) y2=py(t) stroke="#2c3642" />
                <text x=left - 6.0 y=py(t) + 4.0 text-anchor="end" class="tick">{label(t)}</text>
            }
        })
        .collect_view();
    view! {
        <figure class="chart">
            <svg viewBox=format!("0 0 {w} {h}") role="img" aria-label=title.clone()>
                <text x=w / 2.0 y=14.0 text-anchor="middle" class="chart-title">{title.clone()}</text>
                {y_ticks}
                <line x1=left x2=left y1=top y2=h - bottom stroke="#8a97a6" />
                <line x1=left x2=w - right y1=h - bottom y2=h - bottom stroke="#8a97a6" />
                {x_ticks}
                {lines}
                <text x=(left + w - right) / 2.0 y=h - 4.0 text-anchor="middle" class="axis">{x_label}</text>
                <text x=12.0 y=(top + h - bottom) / 2.0 text-anchor="middle" class="axis"
                    transform=format!("rotate(-90 12 {})", (top + h - bottom) / 2.0)>{y_label}</text>
            </svg>
        </figure>
    }
}

/// A horizontal viridis colour bar with its numeric ends, for a heatmap.
#[component]
pub fn ColourBar(lo: String, hi: String) -> impl IntoView {
    view! {
        <div class="colourbar" role="img" aria-label=format!("colour scale from {lo} (dark) to {hi} (yellow)")>
            <span class="lo">{lo.clone()}</span>
            <span class="ramp"></span>
            <span class="hi">{hi.clone()}</span>
        </div>
    }
}
