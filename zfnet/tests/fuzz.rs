//! A bounded mutation fuzzer for decode + preprocess (the code every upload runs): thousands of
//! damaged images built from valid JPEG, PNG and WebP files (flipped bytes, cut files, spliced
//! chunks, header sizes set to extremes) must each give a picture or an error, never a panic,
//! and never a picture that is not 224×224. Seeded, so a failure repeats; the number of cases is
//! fixed (`ZFVIS_FUZZ_CASES` raises it for a longer local run).

use image::ImageEncoder;
use std::io::Cursor;
use zfnet::manifest::Preprocess;

/// xorshift64*: a small deterministic generator for the mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(61, 47, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), 61, 47, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .write_image(img.as_raw(), 61, 47, image::ExtendedColorType::Rgb8)
        .unwrap();
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(Cursor::new(&mut webp))
        .write_image(img.as_raw(), 61, 47, image::ExtendedColorType::Rgb8)
        .unwrap();
    let demo = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/assets/demo/kite.jpg"),
    )
    .unwrap();
    vec![png, jpeg, webp, demo]
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            // flip a few bits
            0 | 1 => {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            // cut the file
            2 => {
                let keep = rng.below(b.len());
                b.truncate(keep.max(1));
            }
            // splice: repeat a chunk somewhere else
            3 => {
                let (from, len) = (rng.below(b.len()), 1 + rng.below(64));
                let chunk: Vec<u8> = b[from..(from + len).min(b.len())].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            // extreme values in the first 64 bytes (where PNG/JPEG/WebP keep their sizes)
            4 => {
                let at = rng.below(b.len().min(64));
                b[at] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            // a random byte anywhere
            _ => {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
        }
    }
    b
}

#[test]
fn damaged_images_give_a_picture_or_an_error_never_a_panic() {
    let cases: usize = std::env::var("ZFVIS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200);
    let seeds = seeds();
    let p = Preprocess::imagenet();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut ok, mut refused) = (0, 0);
    for case in 0..cases {
        let seed = &seeds[case % seeds.len()];
        // the big demo photo is slow to decode: use it for one case in 16
        if case % seeds.len() == 3 && case % 16 != 3 {
            continue;
        }
        let bytes = mutate(&mut rng, seed);
        let outcome = std::panic::catch_unwind(|| zfnet::preprocess::prepare(&bytes, &p));
        match outcome {
            Ok(Ok(prepared)) => {
                assert_eq!(prepared.crop.dimensions(), (224, 224), "case {case}");
                assert!(prepared.data.iter().all(|v| v.is_finite()), "case {case}");
                ok += 1;
            }
            Ok(Err(e)) => {
                assert!(
                    !e.to_string().is_empty(),
                    "case {case}: an error without words"
                );
                refused += 1;
            }
            Err(_) => panic!("case {case}: prepare panicked on {} bytes", bytes.len()),
        }
    }
    eprintln!("{ok} decoded, {refused} refused");
    assert!(
        ok > 0 && refused > 0,
        "the mutations exercise both outcomes"
    );
}
