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

/// A projection `[3, side, side]` as the paper shows it: contrast-normalised per image around
/// zero, so grey is 0 and the strongest value of either sign reaches black or white.
pub fn projection_image(data: &[f32], side: usize) -> RgbImage {
    let scale = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if scale > 0.0 { 127.0 / scale } else { 0.0 };
    let plane = side * side;
    ImageBuffer::from_fn(side as u32, side as u32, |x, y| {
        let i = y as usize * side + x as usize;
        Rgb(std::array::from_fn(|c| {
            (128.0 + data[c * plane + i] * scale)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

/// An activation map `[h, w]` through the viridis colormap, 0 → dark, the map's max → yellow
/// (`max` overrides the map's own maximum, to compare maps on one scale).
pub fn heatmap_image(plane: &[f32], h: usize, w: usize, max: Option<f32>) -> RgbImage {
    let top = max.unwrap_or_else(|| plane.iter().fold(0f32, |m, &v| m.max(v)));
    let scale = if top > 0.0 { 1.0 / top } else { 0.0 };
    ImageBuffer::from_fn(w as u32, h as u32, |x, y| {
        let v = (plane[y as usize * w + x as usize] * scale).clamp(0.0, 1.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_maps_zero_to_grey_and_extremes_to_black_and_white() {
        let side = 2;
        let mut data = vec![0f32; 3 * side * side];
        data[0] = 2.0;
        data[1] = -2.0;
        let img = projection_image(&data, side);
        assert_eq!(img.get_pixel(0, 0).0, [255, 128, 128]);
        assert_eq!(img.get_pixel(1, 0).0, [1, 128, 128]);
        assert_eq!(img.get_pixel(1, 1).0, [128, 128, 128]);
        let bytes = png(&img);
        assert_eq!(&bytes[1..4], b"PNG");
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
