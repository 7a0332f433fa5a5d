//! Image bytes → the network's input: decode (with bounded size, turned upright by its EXIF
//! orientation), resize the shorter side, centre-crop, normalise to a CHW `f32` tensor.

use crate::manifest::Preprocess;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// Decoding refuses images with more pixels than this (before any allocation).
pub const MAX_PIXELS: u64 = 40_000_000;
/// …or a side longer than this.
pub const MAX_SIDE: u32 = 16_384;
/// …or a long side more than this many times the short side. Resizing scales the short side to
/// 256, so a 1×16384 strip (a 148-byte PNG) would become 256×4,194,304 pixels (3 GiB); at 32:1
/// the resized image is at most 256×8192 (6 MiB).
pub const MAX_ASPECT: u32 = 32;

/// Why an upload could not become an input.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ImageError {
    #[error("the file is not an image zfvis can read (JPEG, PNG or WebP): {0}")]
    NotAnImage(String),
    #[error("the image is damaged or truncated: {0}")]
    Corrupt(String),
    #[error("the image is {width}×{height} pixels; the limit is {MAX_PIXELS} pixels and {MAX_SIDE} per side")]
    TooLarge { width: u32, height: u32 },
    #[error("the image is empty (0 pixels)")]
    Empty,
    #[error("the image is {width}×{height} pixels; its long side may be at most {MAX_ASPECT}× its short side")]
    TooElongated { width: u32, height: u32 },
}

impl ImageError {
    /// Stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::NotAnImage(_) => "not_an_image",
            ImageError::Corrupt(_) => "corrupt_image",
            ImageError::TooLarge { .. } => "image_too_large",
            ImageError::Empty => "empty_image",
            ImageError::TooElongated { .. } => "image_too_elongated",
        }
    }
}

/// Decodes image bytes to RGB, checking the pixel bounds from the header before decoding.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::NotAnImage(e.to_string()))
    };
    let probe = reader()?;
    if probe.format().is_none() {
        return Err(ImageError::NotAnImage("unrecognised file signature".into()));
    }
    let format = probe.format();
    let (width, height) = probe.into_dimensions().map_err(classify)?;
    if width == 0 || height == 0 {
        return Err(ImageError::Empty);
    }
    if width > MAX_SIDE || height > MAX_SIDE || width as u64 * height as u64 > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    if u64::from(width.max(height)) > u64::from(width.min(height)) * u64::from(MAX_ASPECT) {
        return Err(ImageError::TooElongated { width, height });
    }
    if format == Some(image::ImageFormat::Jpeg) && !jpeg_has_end_after_last_scan(bytes) {
        // JPEG decoders fill a cut-off scan with grey and report success; refuse instead.
        return Err(ImageError::Corrupt(
            "JPEG ends before its end-of-image marker (truncated upload?)".into(),
        ));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 * 2);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    // phones store pictures sideways and say so in EXIF: turn them upright, as viewers do
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(classify)?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Neither byte pair
/// can occur inside entropy-coded data (0xFF is stuffed as FF 00), and an EXIF thumbnail's own
/// markers come before the main scans.
fn jpeg_has_end_after_last_scan(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

fn classify(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(u) => ImageError::NotAnImage(u.to_string()),
        image::ImageError::Limits(l) => ImageError::Corrupt(l.to_string()),
        image::ImageError::IoError(io) => ImageError::Corrupt(io.to_string()),
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// Resize so the shorter side is `resize` (and neither side is below `min_side`).
pub fn resize_shorter(image: &RgbImage, resize: u32, min_side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    // torchvision's rule (`Resize(256)`): the short side becomes `resize`, the long side
    // ⌊resize · long / short⌋
    let long = |l: u32, s: u32| ((u64::from(resize) * u64::from(l)) / u64::from(s.max(1))) as u32;
    let (nw, nh) = if w <= h {
        (resize, long(h, w))
    } else {
        (long(w, h), resize)
    };
    let (nw, nh) = (nw.max(min_side), nh.max(min_side));
    if (nw, nh) == (w, h) {
        image.clone()
    } else {
        image::imageops::resize(image, nw, nh, FilterType::Triangle)
    }
}

/// The offset of a centred `crop` in `len`: torchvision's `CenterCrop`, `round((len − crop) / 2)`
/// with halves rounded to even, as Python does.
fn centre_offset(len: u32, crop: u32) -> u32 {
    let twice = len.saturating_sub(crop);
    let (half, odd) = (twice / 2, twice % 2 == 1);
    if odd && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resize so the shorter side is `p.resize`, then take the centred `p.crop` square; the same sizes
/// and offsets as torchvision's `Resize(resize)` → `CenterCrop(crop)` (tools/preprocess_fidelity.py
/// measures how close the pixels are).
pub fn resize_and_crop(image: &RgbImage, p: &Preprocess) -> RgbImage {
    let resized = resize_shorter(image, p.resize, p.crop);
    let (nw, nh) = resized.dimensions();
    let x = centre_offset(nw, p.crop);
    let y = centre_offset(nh, p.crop);
    image::imageops::crop_imm(&resized, x, y, p.crop, p.crop).to_image()
}

/// Bumped whenever [`resize_and_crop`] changes what the network sees, so caches computed from
/// earlier crops (probe indexes, their pictures) are not reused.
pub const PIPELINE_VERSION: u32 = 2;

/// The normalised CHW data of a cropped RGB image.
pub fn normalise(crop: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let (w, h) = crop.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in crop.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p.normalize(c, px.0);
        }
    }
    out
}

/// An image made ready for the network.
#[derive(Debug)]
pub struct Prepared {
    /// The `crop`×`crop` RGB image the network sees (for patches and display).
    pub crop: RgbImage,
    /// Its normalised CHW data.
    pub data: Vec<f32>,
    /// Size of the image as decoded.
    pub original: (u32, u32),
}

impl Prepared {
    /// The data as a `[1, 3, crop, crop]` tensor on `device`.
    pub fn to_tensor(
        &self,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let side = self.crop.width() as usize;
        candle_core::Tensor::from_slice(&self.data, (1, 3, side, side), device)
    }
}

/// Image bytes → [`decode`] → [`resize_and_crop`] → [`normalise`].
pub fn prepare(bytes: &[u8], p: &Preprocess) -> Result<Prepared, ImageError> {
    let image = decode(bytes)?;
    let original = image.dimensions();
    let crop = resize_and_crop(&image, p);
    let data = normalise(&crop, p);
    Ok(Prepared {
        crop,
        data,
        original,
    })
}

/// Inverse of [`normalise`] for one pixel channel value, clamped to a byte.
pub fn denormalise(value: f32, channel: usize, p: &Preprocess) -> u8 {
    p.denormalize(channel, value).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64×32 JPEG with four flat quadrants (red, green / blue, white) carrying EXIF orientation
    /// `o` in an APP1 segment written by hand (big-endian TIFF, one IFD entry, tag 0x0112).
    fn jpeg_with_orientation(o: u16) -> Vec<u8> {
        let img = RgbImage::from_fn(64, 32, |x, y| {
            image::Rgb(match (x < 32, y < 16) {
                (true, true) => [255, 0, 0],
                (false, true) => [0, 255, 0],
                (true, false) => [0, 0, 255],
                (false, false) => [255, 255, 255],
            })
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let [hi, lo] = o.to_be_bytes();
        let mut app1 = vec![0xFF, 0xE1, 0x00, 0x22];
        app1.extend_from_slice(b"Exif\0\0MM\0\x2A\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01");
        app1.extend_from_slice(&[hi, lo, 0, 0, 0, 0, 0, 0]);
        assert_eq!(app1.len(), 2 + 0x22);
        let mut out = jpeg[..2].to_vec();
        out.extend(app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_picture_upright_for_all_eight_values() {
        // (orientation, size after turning, colour of the top-left corner), from the EXIF spec:
        // 2 mirrors, 3 turns 180°, 4 flips, 5 transposes, 6 turns 90° clockwise, 7 transverses,
        // 8 turns 90° anticlockwise
        let (red, green, blue, white) = ([255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]);
        let cases = [
            (1, (64, 32), red),
            (2, (64, 32), green),
            (3, (64, 32), white),
            (4, (64, 32), blue),
            (5, (32, 64), red),
            (6, (32, 64), blue),
            (7, (32, 64), white),
            (8, (32, 64), green),
        ];
        for (o, size, corner) in cases {
            let img = decode(&jpeg_with_orientation(o)).unwrap();
            assert_eq!(img.dimensions(), size, "orientation {o}");
            let px = img.get_pixel(4, 4).0;
            let close = px
                .iter()
                .zip(corner)
                .all(|(a, b)| (*a as i32 - b).abs() < 40);
            assert!(close, "orientation {o}: top-left {px:?}, want {corner:?}");
        }
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut buf = Vec::new();
        img.write_to(&mut Cursor::new(&mut buf), image::ImageFormat::Png)
            .unwrap();
        buf
    }

    /// The resize bomb: a strip of 1×16384 pixels (a few hundred bytes of PNG) passes the pixel
    /// limits, but resizing its short side to 256 would allocate 3 GiB.
    #[test]
    fn refuses_strips_before_resizing_them() {
        for (w, h) in [(1, 16_384), (16_384, 1), (2, 4_000), (7, 225)] {
            let err = prepare(&png(w, h), &Preprocess::imagenet()).unwrap_err();
            assert_eq!(
                err,
                ImageError::TooElongated {
                    width: w,
                    height: h
                }
            );
            assert!(err.to_string().contains("32×"), "{err}");
        }
        // 32:1 is still accepted
        let ok = prepare(&png(32 * 9, 9), &Preprocess::imagenet()).expect("32:1");
        assert_eq!(ok.crop.dimensions(), (224, 224));
    }

    #[test]
    fn rejects_non_images_and_truncated_files() {
        assert_eq!(decode(b"hello world").unwrap_err().code(), "not_an_image");
        let bytes = png(64, 48);
        let err = decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert_eq!(err.code(), "corrupt_image", "{err}");
    }

    #[test]
    fn rejects_a_jpeg_cut_inside_its_scan() {
        let img = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 99])
        });
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode(&jpeg).is_ok());
        let cut = &jpeg[..jpeg.len() - 40];
        assert_eq!(decode(cut).unwrap_err().code(), "corrupt_image");
    }

    #[test]
    fn sizes_and_offsets_follow_torchvision() {
        // Resize(256): long side floored; CenterCrop: round half to even
        let img = RgbImage::new(640, 427);
        assert_eq!(resize_shorter(&img, 256, 224).dimensions(), (383, 256));
        let img = RgbImage::new(427, 640);
        assert_eq!(resize_shorter(&img, 256, 224).dimensions(), (256, 383));
        assert_eq!(centre_offset(383, 224), 80); // round(79.5) = 80
        assert_eq!(centre_offset(381, 224), 78); // round(78.5) = 78
        assert_eq!(centre_offset(256, 224), 16);
        assert_eq!(centre_offset(224, 224), 0);
    }

    #[test]
    fn resize_and_crop_gives_the_centre_square() {
        let img = decode(&png(400, 300)).unwrap();
        let p = Preprocess::imagenet();
        let crop = resize_and_crop(&img, &p);
        assert_eq!(crop.dimensions(), (224, 224));
        let data = normalise(&crop, &p);
        assert_eq!(data.len(), 3 * 224 * 224);
        // blue channel is constant 7 everywhere
        let b = (7.0 / 255.0 - p.mean[2]) / p.std[2];
        assert!(data[2 * 224 * 224..].iter().all(|v| (v - b).abs() < 1e-6));
        assert_eq!(denormalise(b, 2, &p), 7);
    }
}
