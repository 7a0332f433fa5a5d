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
    /// Weights (.safetensors) with the manifest beside them (.json). Repeatable: the first is
    /// the default model, every other one is served beside it (`?model=ID` on any route, the id
    /// being the file name without .safetensors; `GET /api/models` lists them).
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: Vec<PathBuf>,
    /// A folder of models (every NAME.safetensors with its NAME.json) served beside --weights.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Training snapshots to show features forming in (the paper's Fig. 4, `GET
    /// /api/evolution/{layer}/{map}`): a `zfvis train` run folder (its snapshots/) or a folder
    /// of epoch-NNN.safetensors (full or `zfvis export --conv-only`). Needs --probe; each
    /// snapshot's index is built in the background after the models' (then cached).
    #[arg(long, visible_alias = "run", requires = "probe")]
    evolution: Option<PathBuf>,
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
    /// A prebuilt index of --probe (from `zfvis index`) for the default model; it must match
    /// its weights and the images. Other models' indexes are built (or read from the cache).
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
    /// Once the probe index is ready, render every map's top-9 pictures of the default model in
    /// the background while no request needs the model (a class then never waits for one; ~20 min of idle CPU once
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
    /// Milliseconds the forward-batching worker waits for more predictions and uploads after
    /// the first; 0 (default) batches only what is already waiting, adding no latency.
    #[arg(long, default_value_t = 0)]
    batch_window_ms: u64,
    /// Most predictions and uploads run as one batched forward (1: each alone). Default: 8 on a
    /// GPU, where a batch costs little more than one image; 1 on the CPU, where batching measured
    /// no gain (the cores are busy either way; see the README's "Under load").
    #[arg(long)]
    max_batch: Option<usize>,
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

/// The weights files to serve, the default first, with their ids (file names).
fn model_files(args: &ServeArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = args.weights.clone();
    if let Some(dir) = &args.models {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the models folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .filter(|p| zfnet::manifest::manifest_path(p).exists())
            .collect();
        found.sort();
        anyhow::ensure!(
            !found.is_empty(),
            "{} holds no model (NAME.safetensors with NAME.json beside it)",
            dir.display()
        );
        files.extend(found);
    }
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = crate::state::model_id_from(&stem);
        if let Some((_, other)) = out.iter().find(|(i, _)| *i == id) {
            if other.canonicalize().ok() == path.canonicalize().ok() {
                continue; // the same file twice (e.g. the default also in --models)
            }
            anyhow::bail!(
                "two models would both be called '{id}': {} and {}; rename one file",
                other.display(),
                path.display()
            );
        }
        out.push((id, path));
    }
    Ok(out)
}

fn load_model(
    path: &std::path::Path,
    device: &candle_core::Device,
) -> anyhow::Result<zfnet::LoadedModel> {
    let model = zfnet::LoadedModel::load(path, device).with_context(|| {
        format!(
            "loading model {} (run `zfvis init-weights` for the untrained placeholder)",
            path.display()
        )
    })?;
    if !model.manifest.trained {
        tracing::warn!(
            "model {} is UNTRAINED: {}",
            model.manifest.name,
            model.manifest.provenance
        );
    }
    Ok(model)
}

/// The snapshots of `dir` (or of `dir/snapshots`) by epoch, from names `epoch-NNN.safetensors`.
fn snapshot_files(dir: &std::path::Path) -> anyhow::Result<Vec<(u32, PathBuf)>> {
    let inner = dir.join("snapshots");
    let dir = if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .with_context(|| format!("reading the snapshots folder {}", dir.display()))?
    {
        let path = entry?.path();
        let epoch = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("epoch-")?.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(epoch) = epoch {
            found.push((epoch, path));
        }
    }
    found.sort();
    anyhow::ensure!(
        !found.is_empty(),
        "{} holds no training snapshot (epoch-NNN.safetensors with its .json)",
        dir.display()
    );
    Ok(found)
}

/// [`load_model`], refusing a conv-stack-only snapshot (it cannot classify).
fn load_classifier(
    path: &std::path::Path,
    device: &candle_core::Device,
) -> anyhow::Result<zfnet::LoadedModel> {
    let model = load_model(path, device)?;
    anyhow::ensure!(
        model.net.has_head(),
        "{} holds the conv layers only (a training snapshot): it cannot classify; show it with \
         --evolution DIR instead",
        path.display()
    );
    Ok(model)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::alloc::keep_freed_memory();
    let device = zfnet::device::parse_device(&args.device)?;
    let files = model_files(&args)?;
    let (default_id, default_path) = files
        .first()
        .cloned()
        .context("no model given (--weights)")?;
    let model = load_classifier(&default_path, &device)?;
    let limits = Limits {
        max_body_bytes: args.max_body_mib.max(1) * 1024 * 1024,
        sweep_grace: Duration::from_secs(args.sweep_grace_secs),
        max_queued_jobs: args.max_queued_jobs.max(1),
        sweep_cpu_secs: args.max_sweep_cpu_secs.max(0.1),
        sweeps_per_client: args.max_sweeps_per_client.max(1),
        batch_window: Duration::from_millis(args.batch_window_ms.min(1000)),
        max_batch: args
            .max_batch
            .unwrap_or(if device.is_cpu() {
                1
            } else {
                crate::batch::MAX_BATCH
            })
            .clamp(1, 64),
        ..Default::default()
    };
    // An explicit --index must fit: checked before binding, so a wrong file stops the start.
    let given_index = match (&args.probe, &args.index) {
        (Some(dir), Some(path)) => Some(tokio::task::block_in_place(|| {
            super::index::load_checked(&model, dir, path)
        })?),
        _ => None,
    };
    let uploads = |model: &zfnet::LoadedModel| {
        crate::store::uploads::UploadStore::open(
            &args.cache_dir,
            &model.weights_sha256,
            model.manifest.preprocess.crop,
            args.max_stored_uploads,
        )
    };
    let mut state = AppState::new(model, limits);
    state.uploads = uploads(&state.model);
    state.set_id(default_id, true);
    state.conn = ConnLimits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
    };
    state.access = Access::for_address(args.addr, &args.allowed_host, &args.allowed_origin);
    let conn = state.conn;
    let mut others = Vec::new();
    for (id, path) in files.iter().skip(1) {
        let model = load_classifier(path, &device)?;
        let mut other = AppState::beside(model, &state);
        other.uploads = uploads(&other.model);
        other.set_id(id.clone(), false);
        tracing::info!("serving {} as ?model={id}", path.display());
        others.push(other);
    }
    if let Some(dir) = &args.evolution {
        let mut epochs = Vec::new();
        for (epoch, path) in snapshot_files(dir)? {
            let model = load_model(&path, &device)?;
            let mut snap = AppState::beside(model, &state);
            snap.set_id(format!("epoch-{epoch:03}"), false);
            state.evolution.push((epoch, Arc::new(snap)));
            epochs.push(epoch);
        }
        // "<folder>: <the run's provenance, up to the snapshot's own words>"
        let provenance = &state.evolution[0].1.model.manifest.provenance;
        let origin = provenance
            .split(", snapshot after")
            .next()
            .unwrap_or_default();
        let folder = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let folder = folder.file_name().map(|n| n.to_string_lossy().into_owned());
        let run = format!("{}: {origin}", folder.unwrap_or_default());
        tracing::info!("evolution: {} snapshots (epochs {epochs:?})", epochs.len());
        state.info.evolution = Some(zfvis_api::EvolutionInfo { run, epochs });
    }
    let state = Arc::new(state);
    let others: Vec<Arc<AppState>> = others.into_iter().map(Arc::new).collect();
    let app = crate::http::app_models(state.clone(), others.clone(), Some(&args.ui_dir));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("zfvis listening on http://{local}/");
    if let Some(dir) = args.probe.clone() {
        // bound first: the indexes load or build in the background (the default model's first),
        // their progress in /api/health
        let snapshots = state.evolution.iter().map(|(_, s)| s.clone());
        let all: Vec<Arc<AppState>> = std::iter::once(state.clone())
            .chain(others)
            .chain(snapshots)
            .collect();
        for s in &all {
            s.probes.set(ProbeState::Building { done: 0, total: 0 });
        }
        let cache = args.cache_dir.clone();
        let warm = args.warm_top9.then(tokio::runtime::Handle::current);
        tokio::task::spawn_blocking(move || {
            let mut given = given_index;
            for (i, state) in all.into_iter().enumerate() {
                let model = state.model.clone();
                let built = match given.take() {
                    Some(index) => Ok(index),
                    None => super::index::probe_index(&model, &dir, &cache, &mut |done, total| {
                        state.probes.set(ProbeState::Building { done, total });
                    }),
                };
                match built {
                    Ok(index) => {
                        let set = ProbeSet::new(index, dir.clone(), &cache, &model);
                        state.probes.set(ProbeState::Ready(Arc::new(set)));
                        tracing::info!("probe index of model {} ready", state.info.id);
                        if let (0, Some(runtime)) = (i, &warm) {
                            runtime.spawn(crate::http::probe::warm_top9(state.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::error!("probe index of model {}: {e:#}", state.info.id);
                        state.probes.set(ProbeState::Failed(format!("{e:#}")));
                    }
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
