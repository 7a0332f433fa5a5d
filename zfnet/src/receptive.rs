//! Receptive fields: which input pixels a unit of a conv layer sees.
//!
//! Walking up the layers (conv, then its pool if any) with the usual recurrences
//! `size' = size + (k − 1)·jump`, `offset' = offset − padding·jump`, `jump' = jump·stride`, unit
//! `(y, x)` of a layer sees input rows `offset + y·jump … offset + y·jump + size − 1` (likewise
//! columns), clipped to the image. For ZFNet: conv1 7 px (jump 2), conv2 27 (8), conv3 75 (16),
//! conv4 107 (16), conv5 139 (16).

use crate::arch::{Layout, INPUT_SIZE};

/// Receptive-field geometry of one layer's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptiveField {
    /// Side of the field in input pixels (before clipping).
    pub size: i64,
    /// Input pixels between neighbouring units.
    pub jump: i64,
    /// Input coordinate of unit 0's first pixel (negative: it starts in the padding).
    pub offset: i64,
}

/// A box in input pixels, `x0..x1` and `y0..y1` half-open, clipped to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

/// Receptive field of the rectified output of conv layer `layer` (0-based).
pub fn receptive_field(layout: &Layout, layer: usize) -> ReceptiveField {
    let mut rf = ReceptiveField {
        size: 1,
        jump: 1,
        offset: 0,
    };
    for (i, spec) in layout.convs.iter().enumerate().take(layer + 1) {
        rf = ReceptiveField {
            size: rf.size + (spec.kernel as i64 - 1) * rf.jump,
            offset: rf.offset - spec.padding as i64 * rf.jump,
            jump: rf.jump * spec.stride as i64,
        };
        if let (Some(pool), true) = (spec.pool, i < layer) {
            rf = ReceptiveField {
                size: rf.size + (pool.kernel as i64 - 1) * rf.jump,
                offset: rf.offset,
                jump: rf.jump * pool.stride as i64,
            };
        }
    }
    rf
}

impl ReceptiveField {
    /// The clipped input box under unit `(y, x)`.
    pub fn unit_box(&self, y: usize, x: usize) -> PixelBox {
        let clip = |v: i64| v.clamp(0, INPUT_SIZE as i64) as u32;
        let y0 = self.offset + y as i64 * self.jump;
        let x0 = self.offset + x as i64 * self.jump;
        PixelBox {
            x0: clip(x0),
            y0: clip(y0),
            x1: clip(x0 + self.size),
            y1: clip(y0 + self.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfnet_receptive_fields() {
        let sizes: Vec<_> = (0..5)
            .map(|l| receptive_field(&crate::arch::Architecture::Zfnet.into(), l))
            .collect();
        assert_eq!(
            sizes.iter().map(|r| r.size).collect::<Vec<_>>(),
            [7, 27, 75, 107, 139]
        );
        assert_eq!(
            sizes.iter().map(|r| r.jump).collect::<Vec<_>>(),
            [2, 8, 16, 16, 16]
        );
        assert_eq!(
            sizes[0].unit_box(0, 0),
            PixelBox {
                x0: 0,
                y0: 0,
                x1: 6,
                y1: 6
            }
        );
        assert_eq!(
            sizes[0].unit_box(10, 20),
            PixelBox {
                x0: 39,
                y0: 19,
                x1: 46,
                y1: 26
            }
        );
        assert_eq!(sizes[4].unit_box(12, 12).x1, 224);
    }
}
