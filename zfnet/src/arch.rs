//! The layouts zfvis runs: ZFNet and, for the paper's Fig. 6 comparison, AlexNet, both as in the
//! imgclsmob / pytorchcv model zoo, and torchvision's AlexNet.
//!
//! All are five conv layers with ReLU and a 3×3/2 max pool after 1, 2 and 5, then three fully
//! connected layers. pytorchcv's add LRN after conv1–2 and pool in ceil mode; torchvision's AlexNet
//! has no LRN, pools in floor mode and pads conv1 by 2 (its adaptive 6×6 average pool is the
//! identity at 224 px). Channel widths and the fc width come from the weights, so narrower
//! variants (test fixtures) and wider ones (pytorchcv's zfnetb) take the same path.
//!
//! A [`Layout`] is the exact geometry: per conv layer its kernel, stride, padding, its LRN
//! parameters and its pool (size, stride, ceil or floor), if any. The three families above have
//! preset layouts; an imported graph (ONNX) brings its own, recorded in the model's manifest,
//! and the forward pass, the deconvnet, occlusion and receptive fields all follow it.

use crate::ops::lrn::LrnParams;
use crate::ops::maxpool::Pool2d;
use serde::{Deserialize, Serialize};

/// Input side length in pixels (square RGB).
pub const INPUT_SIZE: usize = 224;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Zeiler & Fergus 2013: conv1 7×7/2 p1, conv2 5×5/2 p0.
    Zfnet,
    /// Krizhevsky et al. 2012 as in pytorchcv: conv1 11×11/4 p0, conv2 5×5/1 p2.
    Alexnet,
    /// torchvision's `alexnet`: conv1 11×11/4 p2, conv2 5×5/1 p2, no LRN, floor-mode pools.
    #[serde(rename = "alexnet-torchvision")]
    AlexnetTorchvision,
}

/// One conv layer's geometry and what follows it: conv → ReLU → LRN? → max pool?.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConvSpec {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Cross-channel LRN after the ReLU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lrn: Option<LrnParams>,
    /// Max pool after the ReLU (and LRN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Pool2d>,
}

const fn conv(kernel: usize, stride: usize, padding: usize, lrn: bool, pool: bool) -> ConvSpec {
    ConvSpec {
        kernel,
        stride,
        padding,
        lrn: if lrn { Some(LrnParams::ZFNET) } else { None },
        pool: if pool {
            Some(Pool2d::OVERLAPPING_CEIL)
        } else {
            None
        },
    }
}

/// A network's exact geometry: its family (for names) and each conv layer's spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub family: Architecture,
    pub convs: [ConvSpec; 5],
}

impl From<Architecture> for Layout {
    fn from(family: Architecture) -> Layout {
        Layout {
            family,
            convs: family.conv_specs(),
        }
    }
}

impl Layout {
    /// Spatial side lengths through the conv stack: `(conv output, pooled output)` per layer.
    pub fn spatial_sizes(&self) -> [(usize, Option<usize>); 5] {
        let mut side = INPUT_SIZE;
        self.convs.map(|spec| {
            let out = spec.output_len(side);
            let pooled = spec.pool.map(|p| p.output_len(out));
            side = pooled.unwrap_or(out);
            (out, pooled)
        })
    }

    /// Side length of conv5's output (pooled if it is pooled): fc6 reads `channels × side²`.
    pub fn last_side(&self) -> usize {
        let (out, pooled) = self.spatial_sizes()[4];
        pooled.unwrap_or(out)
    }

    /// Whether this is its family's preset (nothing to record beyond the family's name).
    pub fn is_preset(&self) -> bool {
        self.convs == self.family.conv_specs()
    }
}

impl Architecture {
    pub fn conv_specs(self) -> [ConvSpec; 5] {
        let pool = self.pool();
        let specs = match self {
            Architecture::Zfnet => [
                conv(7, 2, 1, true, true),
                conv(5, 2, 0, true, true),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, true),
            ],
            Architecture::Alexnet => [
                conv(11, 4, 0, true, true),
                conv(5, 1, 2, true, true),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, true),
            ],
            Architecture::AlexnetTorchvision => [
                conv(11, 4, 2, false, true),
                conv(5, 1, 2, false, true),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, false),
                conv(3, 1, 1, false, true),
            ],
        };
        specs.map(|s| ConvSpec {
            pool: s.pool.map(|_| pool),
            ..s
        })
    }

    /// The max pool after conv1, conv2 and conv5: 3×3/2, ceil mode except torchvision's.
    pub fn pool(self) -> crate::ops::maxpool::Pool2d {
        crate::ops::maxpool::Pool2d {
            ceil_mode: self != Architecture::AlexnetTorchvision,
            ..crate::ops::maxpool::Pool2d::OVERLAPPING_CEIL
        }
    }

    /// The paper's channel widths of conv1…conv5.
    pub fn paper_channels(self) -> [usize; 5] {
        [96, 256, 384, 384, 256]
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Zfnet => "zfnet",
            Architecture::Alexnet => "alexnet",
            Architecture::AlexnetTorchvision => "alexnet-torchvision",
        }
    }
}

impl ConvSpec {
    /// Output length along one axis (0 when the kernel does not fit).
    pub fn output_len(&self, len: usize) -> usize {
        (len + 2 * self.padding)
            .checked_sub(self.kernel)
            .map_or(0, |n| n / self.stride + 1)
    }
}

/// Parameter count of a network with these widths.
pub fn parameter_count(
    layout: &Layout,
    channels: [usize; 5],
    fc_width: usize,
    classes: usize,
) -> u64 {
    let specs = layout.convs;
    let mut total = 0usize;
    let mut in_ch = 3;
    for (spec, &out_ch) in specs.iter().zip(&channels) {
        total += out_ch * in_ch * spec.kernel * spec.kernel + out_ch;
        in_ch = out_ch;
    }
    let side = layout.last_side();
    let flat = channels[4] * side * side;
    total += flat * fc_width + fc_width;
    total += fc_width * fc_width + fc_width;
    total += fc_width * classes + classes;
    total as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfnet_spatial_sizes_match_the_paper() {
        let sizes = Layout::from(Architecture::Zfnet).spatial_sizes();
        assert_eq!(
            sizes,
            [
                (110, Some(55)),
                (26, Some(13)),
                (13, None),
                (13, None),
                (13, Some(6))
            ]
        );
    }

    #[test]
    fn alexnet_spatial_sizes() {
        let sizes = Layout::from(Architecture::Alexnet).spatial_sizes();
        assert_eq!(
            sizes,
            [
                (54, Some(27)),
                (27, Some(13)),
                (13, None),
                (13, None),
                (13, Some(6))
            ]
        );
    }

    #[test]
    fn zfnet_has_the_papers_parameter_count() {
        let ch = Architecture::Zfnet.paper_channels();
        assert_eq!(
            parameter_count(&Architecture::Zfnet.into(), ch, 4096, 1000),
            62_357_608
        );
    }
}
