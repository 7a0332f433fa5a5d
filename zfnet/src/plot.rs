//! The training curves as a PNG: loss on the left, accuracy on the right, per epoch. Drawn with a
//! built-in 5×7 pixel font, so no font files or plotting stack are needed on a headless machine.

use image::{Rgb, RgbImage};

/// One epoch's numbers (as in `epochs.csv`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub val_top1: Option<f32>,
    pub val_top5: Option<f32>,
}

/// Parses `epochs.csv` (`epoch,step,train_loss,train_accuracy,val_top1,val_top5,elapsed_s`).
pub fn parse_epochs_csv(text: &str) -> Vec<EpochPoint> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Some(EpochPoint {
                epoch: f.first()?.parse().ok()?,
                train_loss: f.get(2)?.parse().ok()?,
                train_accuracy: f.get(3)?.parse().ok()?,
                val_top1: f.get(4).and_then(|v| v.parse().ok()),
                val_top5: f.get(5).and_then(|v| v.parse().ok()),
            })
        })
        .collect()
}

const W: u32 = 960;
const H: u32 = 400;
const BG: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);

/// 5×7 glyphs, one byte per row, low 5 bits, leftmost pixel = bit 4.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'c' => [0, 0, 14, 16, 16, 17, 14],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'h' => [16, 16, 22, 25, 17, 17, 17],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 15, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'u' => [0, 0, 17, 17, 17, 19, 13],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        'y' => [0, 0, 17, 17, 15, 1, 14],
        _ => [0; 7],
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale`² screen pixels.
fn text(img: &mut RgbImage, x: i32, y: i32, s: &str, color: Rgb<u8>, scale: i32) {
    for (i, c) in s.chars().enumerate() {
        let rows = glyph(c);
        for (dy, row) in rows.iter().enumerate() {
            for dx in 0..5 {
                if row & (1 << (4 - dx)) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(
                                img,
                                x + (i as i32 * 6 + dx) * scale + sx,
                                y + dy as i32 * scale + sy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// A 2-px line (Bresenham, thickened).
fn line(img: &mut RgbImage, (x0, y0): (i32, i32), (x1, y1): (i32, i32), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            put(img, x + ox, y + oy, c);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// A named, coloured line of `(epoch, value)` points.
type Series<'a> = (&'a str, Rgb<u8>, Vec<(usize, f32)>);

/// A y axis from 0 whose gridlines sit on round values: the step is 1, 2 or 5 × 10ᵏ, chosen so
/// that at most 5 intervals reach `max`. Returns `(step, intervals, decimals for the labels)`.
fn nice_axis(max: f32) -> (f32, usize, usize) {
    let rough = (max.max(1e-6) / 5.0) as f64;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let intervals = ((max as f64 / step) - 1e-6).ceil().max(1.0) as usize;
    let decimals = (-step.log10() - 1e-9).ceil().max(0.0) as usize;
    (step as f32, intervals, decimals)
}

/// Where a panel's legend goes: above the lines that fall (loss), below those that rise (accuracy).
#[derive(Clone, Copy)]
enum Legend {
    TopRight,
    BottomRight,
}

/// One panel: axes, grid on the axis' round values, y labels, the series as lines with dots, and
/// a legend.
fn panel(
    img: &mut RgbImage,
    (left, legend): (i32, Legend),
    title: &str,
    epochs: usize,
    (step, intervals, decimals): (f32, usize, usize),
    series: &[Series],
) {
    let (lo, hi) = (0.0, step * intervals as f32);
    let (top, bottom, width) = (40, H as i32 - 40, W as i32 / 2 - 90);
    let x_of = |e: usize| {
        left + (e.saturating_sub(1) as f32 / (epochs.max(2) - 1) as f32 * width as f32) as i32
    };
    let y_of = |v: f32| bottom - ((v - lo) / (hi - lo).max(1e-6) * (bottom - top) as f32) as i32;
    text(img, left, 12, title, AXIS, 2);
    for i in 0..=intervals {
        let v = step * i as f32;
        let y = y_of(v);
        for x in left..=left + width {
            put(img, x, y, GRID);
        }
        let label = format!("{v:.decimals$}");
        text(
            img,
            left - 8 - 6 * label.len() as i32,
            y - 3,
            &label,
            AXIS,
            1,
        );
    }
    for y in top..=bottom {
        put(img, left, y, AXIS);
    }
    for x in left..=left + width {
        put(img, x, bottom, AXIS);
    }
    let step = epochs.div_ceil(8).max(1);
    for e in (1..=epochs).filter(|e| (e - 1) % step == 0 || *e == epochs) {
        text(img, x_of(e) - 3, bottom + 8, &e.to_string(), AXIS, 1);
    }
    text(img, left + width / 2 - 15, bottom + 22, "epoch", AXIS, 1);
    let legend_top = match legend {
        Legend::TopRight => top + 8,
        Legend::BottomRight => bottom - 8 - 14 * series.len() as i32,
    };
    for (k, (name, color, points)) in series.iter().enumerate() {
        for w in points.windows(2) {
            line(
                img,
                (x_of(w[0].0), y_of(w[0].1)),
                (x_of(w[1].0), y_of(w[1].1)),
                *color,
            );
        }
        for &(e, v) in points {
            for (ox, oy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (0, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                put(img, x_of(e) + ox, y_of(v) + oy, *color);
            }
        }
        text(
            img,
            left + width - 110,
            legend_top + 14 * k as i32,
            name,
            *color,
            1,
        );
    }
}

/// Loss and accuracy per epoch as a 960×400 PNG-ready image.
pub fn training_curves(points: &[EpochPoint]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, BG);
    let epochs = points.iter().map(|p| p.epoch).max().unwrap_or(1);
    let max_loss = points.iter().map(|p| p.train_loss).fold(0.5f32, f32::max);
    let loss = vec![(
        "train loss",
        BLUE,
        points.iter().map(|p| (p.epoch, p.train_loss)).collect(),
    )];
    panel(
        &mut img,
        (70, Legend::TopRight),
        "loss",
        epochs,
        nice_axis(max_loss),
        &loss,
    );
    let pct = |f: fn(&EpochPoint) -> Option<f32>| {
        points
            .iter()
            .filter_map(|p| Some((p.epoch, f(p)? * 100.0)))
            .collect()
    };
    let acc = vec![
        ("train top-1", BLUE, pct(|p| Some(p.train_accuracy))),
        ("val top-1", ORANGE, pct(|p| p.val_top1)),
        ("val top-5", GREEN, pct(|p| p.val_top5)),
    ];
    panel(
        &mut img,
        (W as i32 / 2 + 70, Legend::BottomRight),
        "accuracy (%)",
        epochs,
        (25.0, 4, 0),
        &acc,
    );
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_trainers_csv_and_draws_every_series() {
        let csv = "epoch,step,train_loss,train_accuracy,val_top1,val_top5,elapsed_s\n\
                   1,74,2.1,0.25,0.31,0.8,1200\n2,148,1.7,0.41,,,2400\n3,222,1.4,0.52,0.55,0.92,3600\n";
        let points = parse_epochs_csv(csv);
        assert_eq!(points.len(), 3);
        assert_eq!(points[1].val_top1, None);
        assert_eq!(points[2].val_top5, Some(0.92));
        let img = training_curves(&points);
        let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        assert!(count(BLUE) > 200 && count(ORANGE) > 100 && count(GREEN) > 100);
    }

    #[test]
    fn loss_gridlines_sit_on_the_values_their_labels_name() {
        // A run whose first loss is 0.719: the old axis ran to 0.755 and labelled that line "0.8".
        assert_eq!(nice_axis(0.719), (0.2, 4, 1));
        assert_eq!(nice_axis(2.302), (0.5, 5, 1));
        assert_eq!(nice_axis(0.8), (0.2, 4, 1));
        assert_eq!(nice_axis(0.05), (0.01, 5, 2));
        assert_eq!(nice_axis(7.0), (2.0, 4, 0));
    }
}
