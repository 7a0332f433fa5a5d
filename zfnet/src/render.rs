//! Pictures: deconv projections, activation heatmaps and input patches as PNG bytes.

use crate::receptive::PixelBox;
use image::{ImageBuffer, Rgb, RgbImage};
use std::io::Cursor;

/// Encodes an RGB image as PNG.
pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing an in-memory RgbImage to a Vec cannot fail.
    let _ = image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png);
    out
}

/// Whether `bytes` look like a whole PNG file: the signature at the start and the `IEND` chunk
/// (with its fixed CRC) at the end. A file cut short by a crash or a full disk fails this.
pub fn is_whole_png(bytes: &[u8]) -> bool {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    bytes.len() > SIGNATURE.len() + IEND.len()
        && bytes.starts_with(&SIGNATURE)
        && bytes.ends_with(&IEND)
}

/// The part inside `b` of a projection `[3, side, side]` as the paper shows it: contrast-normalised
/// over that part around zero, so grey is 0 and the strongest value of either sign there reaches
/// black or white. Pass the whole image's box for the uncropped picture.
pub fn projection_image(data: &[f32], side: usize, b: PixelBox) -> RgbImage {
    let peak = box_values(data, side, b).fold(0f32, |m, v| m.max(v.abs()));
    grey_centred(data, side, b, peak)
}

/// The values of a `[3, side, side]` image inside `b`, channel by channel, row by row.
fn box_values(data: &[f32], side: usize, b: PixelBox) -> impl Iterator<Item = f32> + '_ {
    let (x0, y0, x1, y1) = (b.x0 as usize, b.y0 as usize, b.x1 as usize, b.y1 as usize);
    (0..3).flat_map(move |c| {
        (y0..y1).flat_map(move |y| (x0..x1).map(move |x| data[(c * side + y) * side + x]))
    })
}

/// The part inside `b` with 0 at grey and `±peak` at white / black (beyond it clipped).
fn grey_centred(data: &[f32], side: usize, b: PixelBox, peak: f32) -> RgbImage {
    let (x0, y0) = (b.x0 as usize, b.y0 as usize);
    let (w, h) = ((b.x1 - b.x0) as usize, (b.y1 - b.y0) as usize);
    let scale = if peak > 0.0 { 127.0 / peak } else { 0.0 };
    ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
        Rgb(std::array::from_fn(|c| {
            (128.0 + data[(c * side + y0 + y as usize) * side + x0 + x as usize] * scale)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

/// Like [`projection_image`], but stretched so that the strongest `1 − quantile` of the values
/// (by magnitude) saturate to black or white: a whole map's projection spreads over many
/// receptive fields, and scaled by its single largest value most of it is grey on grey (the
/// paper's figures are contrast-stretched for display too).
pub fn projection_image_clipped(data: &[f32], side: usize, b: PixelBox, quantile: f32) -> RgbImage {
    let mut mags: Vec<f32> = box_values(data, side, b)
        .map(f32::abs)
        .filter(|v| *v > 0.0)
        .collect();
    if mags.is_empty() {
        return projection_image(data, side, b);
    }
    let k = ((mags.len() as f32 - 1.0) * quantile.clamp(0.0, 1.0)).round() as usize;
    let (_, q, _) = mags.select_nth_unstable_by(k, f32::total_cmp);
    grey_centred(data, side, b, *q)
}

/// The share of a whole-map projection's values left unsaturated by
/// [`projection_image_clipped`] in the views.
pub const MAP_PROJECTION_QUANTILE: f32 = 0.995;

/// The box covering a whole `side`×`side` image.
pub fn whole(side: usize) -> PixelBox {
    PixelBox {
        x0: 0,
        y0: 0,
        x1: side as u32,
        y1: side as u32,
    }
}

/// An activation map `[h, w]` through the viridis colormap, 0 → dark, the map's max → yellow
/// (`max` overrides the map's own maximum, to compare maps on one scale).
pub fn heatmap_image(plane: &[f32], h: usize, w: usize, max: Option<f32>) -> RgbImage {
    let top = max.unwrap_or_else(|| plane.iter().fold(0f32, |m, &v| m.max(v)));
    heatmap_range(plane, h, w, 0.0, top)
}

/// `[h, w]` values through viridis with `lo` → dark and `hi` → yellow (occlusion maps, whose
/// interest is in how much values drop, use their own min and max).
pub fn heatmap_range(plane: &[f32], h: usize, w: usize, lo: f32, hi: f32) -> RgbImage {
    let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
    ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
        let v = ((plane[y as usize * w + x as usize] - lo) * scale).clamp(0.0, 1.0);
        let c = colorous::VIRIDIS.eval_continuous(v as f64);
        Rgb([c.r, c.g, c.b])
    })
}

/// The part of `image` inside `b`.
pub fn crop(image: &RgbImage, b: PixelBox) -> RgbImage {
    image::imageops::crop_imm(
        image,
        b.x0,
        b.y0,
        (b.x1 - b.x0).max(1),
        (b.y1 - b.y0).max(1),
    )
    .to_image()
}

/// First-layer filters `[n, 3, k, k]` as one RGB picture (the paper's Fig. 6): a grid of `cols`
/// columns, each filter scaled `scale`× and contrast-stretched on its own (`0` → mid grey), with
/// a 1-scaled-pixel dark border between filters.
pub fn filter_grid(weights: &[f32], n: usize, k: usize, cols: usize, scale: usize) -> RgbImage {
    let rows = n.div_ceil(cols.max(1));
    let cell = k * scale + scale;
    let (w, h) = (cols * cell + scale, rows * cell + scale);
    let mut img = ImageBuffer::from_pixel(w as u32, h as u32, Rgb([16u8, 20, 24]));
    for f in 0..n {
        let filter = &weights[f * 3 * k * k..(f + 1) * 3 * k * k];
        let peak = filter.iter().fold(0f32, |m, v| m.max(v.abs()));
        let gain = if peak > 0.0 { 127.0 / peak } else { 0.0 };
        let (ox, oy) = ((f % cols) * cell + scale, (f / cols) * cell + scale);
        for y in 0..k * scale {
            for x in 0..k * scale {
                let (fy, fx) = (y / scale, x / scale);
                let px: [u8; 3] = std::array::from_fn(|c| {
                    (128.0 + filter[(c * k + fy) * k + fx] * gain)
                        .round()
                        .clamp(0.0, 255.0) as u8
                });
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(px));
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_png_is_not_whole() {
        let bytes = png(&RgbImage::new(5, 3));
        assert!(is_whole_png(&bytes));
        assert!(!is_whole_png(&bytes[..bytes.len() - 1]));
        assert!(!is_whole_png(&bytes[..bytes.len() / 2]));
        assert!(!is_whole_png(b""));
    }

    #[test]
    fn projection_maps_zero_to_grey_and_extremes_to_black_and_white() {
        let side = 2;
        let mut data = vec![0f32; 3 * side * side];
        data[0] = 2.0;
        data[1] = -2.0;
        let img = projection_image(&data, side, whole(side));
        assert_eq!(img.get_pixel(0, 0).0, [255, 128, 128]);
        assert_eq!(img.get_pixel(1, 0).0, [1, 128, 128]);
        assert_eq!(img.get_pixel(1, 1).0, [128, 128, 128]);
        // a crop is normalised over itself: the -2 alone now reaches black
        let part = projection_image(
            &data,
            side,
            PixelBox {
                x0: 1,
                y0: 0,
                x1: 2,
                y1: 2,
            },
        );
        assert_eq!(part.dimensions(), (1, 2));
        assert_eq!(part.get_pixel(0, 0).0, [1, 128, 128]);
        let bytes = png(&img);
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn clipped_projections_saturate_the_strongest_values_only() {
        // one huge value among 99 small ones: plain scaling leaves the small ones grey, clipping
        // at the 99th percentile shows them at full contrast and saturates the outlier
        let side = 10;
        let mut data = vec![0f32; 3 * side * side];
        for (i, v) in data[..side * side].iter_mut().enumerate() {
            *v = if i == 0 { 100.0 } else { 1.0 };
        }
        let plain = projection_image(&data, side, whole(side));
        assert_eq!(plain.get_pixel(5, 5).0[0], 129);
        let clipped = projection_image_clipped(&data, side, whole(side), 0.9);
        assert_eq!(clipped.get_pixel(0, 0).0[0], 255);
        assert_eq!(clipped.get_pixel(5, 5).0[0], 255);
        assert_eq!(clipped.get_pixel(5, 5).0[1], 128, "zero stays grey");
        // all zero: grey, no division by zero
        let zero = projection_image_clipped(&[0f32; 12], 2, whole(2), 0.9);
        assert!(zero.pixels().all(|p| p.0 == [128, 128, 128]));
    }

    #[test]
    fn heatmap_spans_the_colormap() {
        let img = heatmap_image(&[0.0, 1.0, 2.0, 4.0], 2, 2, None);
        let lo = colorous::VIRIDIS.eval_continuous(0.0);
        let hi = colorous::VIRIDIS.eval_continuous(1.0);
        assert_eq!(img.get_pixel(0, 0).0, [lo.r, lo.g, lo.b]);
        assert_eq!(img.get_pixel(1, 1).0, [hi.r, hi.g, hi.b]);
    }
}
