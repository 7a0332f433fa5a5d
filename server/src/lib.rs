//! zfvis: the server and command line around the ZFNet model of the `zfnet` crate.
//!
//! Layers, each importing only the ones below it:
//! - [`cli`]: the commands (`serve`, `index`, `train`, `eval`, `export`, `init-weights`);
//! - [`http`]: routers per feature, extractors, the OpenAPI document ([`http::app`]);
//! - [`state`]: the shared [`state::AppState`], [`batch`]: forwards batched across requests;
//!   [`error`]: errors as JSON;
//! - [`store`]: uploaded images, the probe set, occlusion sweeps (no HTTP).

pub mod alloc;
pub mod batch;
pub mod cli;
pub mod error;
pub mod http;
pub mod state;
pub mod store;

pub use http::app;
