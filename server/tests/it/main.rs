//! Every server test in one binary: real HTTP against a real `zfvis serve` process and the CLI as
//! a user runs it ([`common`] starts them), plus in-process `oneshot` tests of the router
//! ([`routing`]).

mod analyses;
mod batching;
mod check_device;
mod common;
mod default_model;
mod evolution;
mod examples;
mod faults;
mod hardening;
mod http;
mod import;
mod index;
mod models;
mod occlusion;
mod probe;
mod replicas;
mod routing;
mod train_cli;
mod uploads;
mod visualize;
