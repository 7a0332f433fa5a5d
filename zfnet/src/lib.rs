//! ZFNet (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2013) in candle.
//!
//! - [`model`]: the network and its traced forward pass (activations + max-pool switches).
//! - [`deconv`]: deconvnet projections back to pixels; [`receptive`]: receptive fields.
//! - [`occlusion`]: occlusion sweeps (naive, batched, incremental).
//! - [`render`]: projections, activation heatmaps and patches as PNG; [`views`]: what the
//!   server's views compute (predictions, maxima, the chosen unit, pictures).
//! - [`ops`]: LRN and ceil-mode max pooling with switches, which candle lacks.
//! - [`arch`]: layer geometry of ZFNet and AlexNet.
//! - [`manifest`]: what a weights file is (classes, preprocessing, provenance).
//! - [`preprocess`]: image bytes → normalised input.
//! - [`init`]: the seeded random-init placeholder model.
//! - [`filter_stats`]: how learned a conv1 filter bank looks (low-frequency share, anisotropy).
//! - [`train`]: SGD training with resumable checkpoints; [`dataset`]: folder-per-class image sets.
//!
//! No web code lives here; the server and CLI build on this crate.

pub mod arch;
pub mod correspondence;
pub mod dataset;
pub mod deconv;
pub mod device;
pub mod device_check;
mod error;
pub mod filter_stats;
pub mod fsutil;
pub mod import;
pub mod init;
pub mod invariance;
pub mod manifest;
pub mod model;
pub mod occlusion;
pub mod ops;
pub mod plot;
pub mod preprocess;
pub mod probe;
pub mod receptive;
pub mod render;
pub mod topk;
pub mod train;
pub mod views;

pub use error::{Error, Result};
pub use model::{LoadedModel, Trace, ZfNet};
