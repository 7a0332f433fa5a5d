//! What the server keeps between requests, free of HTTP: uploaded images and rendered PNGs
//! ([`images`]), the probe set and its picture cache ([`probes`]), occlusion sweeps ([`sweeps`]),
//! the single flight of identical work ([`flight`]), and every upload on disk ([`uploads`]).

pub mod flight;
pub mod images;
pub mod probes;
pub mod sweeps;
pub mod uploads;
