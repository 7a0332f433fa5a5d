//! What the server keeps between requests, free of HTTP: uploaded images and rendered PNGs
//! ([`images`]), the probe set and its picture cache ([`probes`]), occlusion sweeps ([`sweeps`]),
//! and the single flight of identical work ([`flight`]).

pub mod flight;
pub mod images;
pub mod probes;
pub mod sweeps;
