//! A finished sweep as pictures: (a) through viridis from the grid's own minimum (dark) to its
//! maximum (yellow); (b) the class probability on the absolute scale 0 (dark) → 1 (yellow), so a
//! drop from 100% to 99.8% does not look like a strong effect; (c) one categorical colour per
//! class, with a legend.

use super::OcclusionResult;
use image::RgbImage;

/// The three maps of a sweep, one pixel per grid cell.
pub struct SweepPictures {
    pub activation: RgbImage,
    /// On the absolute scale 0 → 1.
    pub probability: RgbImage,
    /// Stretched from the grid's own minimum to its maximum (small changes made visible; label it).
    pub probability_stretched: RgbImage,
    pub classes: RgbImage,
}

/// Categorical colours for the class map (Tableau 10, then the same ten darker).
pub fn class_color(class: usize) -> [u8; 3] {
    let c = colorous::TABLEAU10[class % 10];
    let shade = if (class / 10) % 2 == 1 { 0.6 } else { 1.0 };
    [
        (c.r as f32 * shade) as u8,
        (c.g as f32 * shade) as u8,
        (c.b as f32 * shade) as u8,
    ]
}

/// The grid through viridis from its own minimum (dark) to its maximum (yellow).
fn min_max_heatmap(values: &[f32], g: usize) -> RgbImage {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    crate::render::heatmap_range(values, g, g, lo, hi)
}

pub fn pictures(r: &OcclusionResult) -> SweepPictures {
    let g = r.grid;
    SweepPictures {
        activation: min_max_heatmap(&r.activation, g),
        probability: crate::render::heatmap_range(&r.probability, g, g, 0.0, 1.0),
        probability_stretched: min_max_heatmap(&r.probability, g),
        classes: RgbImage::from_fn(g as u32, g as u32, |x, y| {
            image::Rgb(class_color(
                r.top_class[y as usize * g + x as usize] as usize,
            ))
        }),
    }
}

/// The classes present in a most-probable-class grid: `(class, cells, colour)`, by class.
pub fn class_legend(top_class: &[u32]) -> Vec<(usize, usize, [u8; 3])> {
    let mut counts = std::collections::BTreeMap::new();
    for &c in top_class {
        *counts.entry(c as usize).or_insert(0usize) += 1;
    }
    counts
        .into_iter()
        .map(|(class, cells)| (class, cells, class_color(class)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_is_drawn_on_the_absolute_scale() {
        let r = OcclusionResult {
            params: super::super::OcclusionParams::default(),
            grid: 2,
            strongest_map: 0,
            activation: vec![1.0, 2.0, 3.0, 4.0],
            base_activation: 4.0,
            class: 0,
            probability: vec![0.998, 0.999, 1.0, 0.0],
            base_probability: 1.0,
            top_class: vec![0; 4],
            top_probability: vec![1.0; 4],
        };
        let p = pictures(&r).probability;
        let top = colorous::VIRIDIS.eval_continuous(1.0);
        let near_top = |px: &image::Rgb<u8>| {
            px.0.iter()
                .zip([top.r, top.g, top.b])
                .all(|(a, b)| (*a as i32 - b as i32).abs() <= 2)
        };
        // 99.8% and 100% look alike (bright), 0 is dark
        assert!(near_top(p.get_pixel(0, 0)) && near_top(p.get_pixel(0, 1)));
        let bottom = colorous::VIRIDIS.eval_continuous(0.0);
        assert_eq!(p.get_pixel(1, 1).0, [bottom.r, bottom.g, bottom.b]);
        // the stretched variant spreads 99.8–100% over the whole range
        let narrow = OcclusionResult {
            probability: vec![0.998, 0.999, 1.0, 0.9985],
            ..r.clone()
        };
        let s = pictures(&narrow).probability_stretched;
        assert!(near_top(s.get_pixel(0, 1)));
        assert_eq!(s.get_pixel(0, 0).0, [bottom.r, bottom.g, bottom.b]);
    }

    #[test]
    fn the_legend_counts_cells_per_class_in_class_order() {
        let legend = class_legend(&[3, 1, 3, 3, 12]);
        let classes: Vec<_> = legend.iter().map(|l| (l.0, l.1)).collect();
        assert_eq!(classes, vec![(1, 1), (3, 3), (12, 1)]);
        // class 12 is class 2's colour, darker
        assert_ne!(legend[2].2, class_color(2));
    }
}
