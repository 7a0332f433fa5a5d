//! `zfvis serve`: load the model (and the probe set), bind, serve the API and the UI.

use super::DEFAULT_WEIGHTS;
use crate::state::{Access, AppState, ConnLimits, Limits};
use crate::store::probes::{ProbeSet, ProbeState};
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Serve the API and the UI.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the chosen URL is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Weights (.safetensors) with the manifest beside them (.json).
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The built UI (trunk's output); the API still runs without it.
    #[arg(long, default_value = "dist")]
    ui_dir: PathBuf,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 20)]
    max_body_mib: usize,
    /// Probe images for top-9 views (searched recursively); indexed at start-up unless a
    /// matching index is cached. Without it, top-9 views answer 404 no_probe_index.
    #[arg(long)]
    probe: Option<PathBuf>,
    /// A prebuilt index of --probe (from `zfvis index`); it must match the weights and images.
    #[arg(long, requires = "probe")]
    index: Option<PathBuf>,
    /// Where probe indexes and top-9 pictures are cached.
    #[arg(long, env = "ZFVIS_CACHE", default_value = ".zfvis-cache")]
    cache_dir: PathBuf,
    /// Open connections at most; more are answered 503 and closed.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers (and to start the next one on a kept-alive
    /// connection).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds an upload may stall before it is ended.
    #[arg(long, default_value_t = 30)]
    body_timeout_secs: u64,
    /// Requests that may wait for a model slot; one more is answered 503 at once.
    #[arg(long, default_value_t = 64)]
    max_queued_jobs: usize,
    /// Once the probe index is ready, render every map's top-9 pictures in the background while
    /// no request needs the model (a class then never waits for one; ~20 min of idle CPU once
    /// per model and probe set, kept in --cache-dir).
    #[arg(long, requires = "probe")]
    warm_top9: bool,
    /// CPU-seconds (wall time × compute threads) one occlusion sweep may use; a sweep that
    /// will not fit stops early with 422 sweep_over_budget, naming what would.
    #[arg(long, default_value_t = 120.0)]
    max_sweep_cpu_secs: f64,
    /// Occlusion sweeps one client address may have queued or running (more get 429); raise it
    /// when a whole class reaches the server through one address (NAT).
    #[arg(long, default_value_t = 2)]
    max_sweeps_per_client: usize,
    /// Uploads kept on disk (in --cache-dir) so their ids stay valid after their traces leave
    /// memory and across restarts; the oldest go first.
    #[arg(long, default_value_t = 10_000)]
    max_stored_uploads: usize,
    /// Seconds a sweep that nobody watches or polls keeps computing before it stops.
    #[arg(long, default_value_t = 10)]
    sweep_grace_secs: u64,
    /// Another web origin allowed to make state-changing requests (uploads, sweeps), e.g.
    /// https://class.example; repeatable. The server's own origin always is.
    #[arg(long)]
    allowed_origin: Vec<String>,
    /// A host name the server answers to besides localhost/127.0.0.1 (when bound to loopback) or
    /// instead of any (otherwise); repeatable.
    #[arg(long)]
    allowed_host: Vec<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::alloc::keep_freed_memory();
    let device = zfnet::device::parse_device(&args.device)?;
    let model = zfnet::LoadedModel::load(&args.weights, &device).with_context(|| {
        format!(
            "loading model {} (run `zfvis init-weights` for the untrained placeholder)",
            args.weights.display()
        )
    })?;
    if !model.manifest.trained {
        tracing::warn!(
            "model {} is UNTRAINED: {}",
            model.manifest.name,
            model.manifest.provenance
        );
    }
    let limits = Limits {
        max_body_bytes: args.max_body_mib.max(1) * 1024 * 1024,
        sweep_grace: Duration::from_secs(args.sweep_grace_secs),
        max_queued_jobs: args.max_queued_jobs.max(1),
        sweep_cpu_secs: args.max_sweep_cpu_secs.max(0.1),
        sweeps_per_client: args.max_sweeps_per_client.max(1),
        ..Default::default()
    };
    // An explicit --index must fit: checked before binding, so a wrong file stops the start.
    let given_index = match (&args.probe, &args.index) {
        (Some(dir), Some(path)) => Some(tokio::task::block_in_place(|| {
            super::index::load_checked(&model, dir, path)
        })?),
        _ => None,
    };
    let uploads = crate::store::uploads::UploadStore::open(
        &args.cache_dir,
        &model.weights_sha256,
        model.manifest.preprocess.crop,
        args.max_stored_uploads,
    );
    let mut state = AppState::new(model, limits);
    state.uploads = uploads;
    state.conn = ConnLimits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
    };
    state.access = Access::for_address(args.addr, &args.allowed_host, &args.allowed_origin);
    let conn = state.conn;
    let state = Arc::new(state);
    let app = crate::http::app(state.clone(), Some(&args.ui_dir));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("zfvis listening on http://{local}/");
    if let Some(dir) = args.probe.clone() {
        // bound first: the index loads or builds in the background, its progress in /api/health
        state.probes.set(ProbeState::Building { done: 0, total: 0 });
        let cache = args.cache_dir.clone();
        let state = state.clone();
        let warm = args.warm_top9.then(tokio::runtime::Handle::current);
        tokio::task::spawn_blocking(move || {
            let model = state.model.clone();
            let built = match given_index {
                Some(index) => Ok(index),
                None => super::index::probe_index(&model, &dir, &cache, &mut |done, total| {
                    state.probes.set(ProbeState::Building { done, total });
                }),
            };
            match built {
                Ok(index) => {
                    let set = ProbeSet::new(index, dir, &cache, &model);
                    state.probes.set(ProbeState::Ready(Arc::new(set)));
                    tracing::info!("probe index ready");
                    if let Some(runtime) = warm {
                        runtime.spawn(crate::http::probe::warm_top9(state.clone()));
                    }
                }
                Err(e) => {
                    tracing::error!("probe index: {e:#}");
                    state.probes.set(ProbeState::Failed(format!("{e:#}")));
                }
            }
        });
    }
    crate::http::conn::serve(listener, app, conn, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
