//! `zfvis`: the server and the command line around the ZFNet model.

mod alloc;
mod error;
mod images;
mod index_cmd;
mod occlusion;
mod openapi;
mod probes;
mod routes;
mod state;
mod train_cmd;
mod upload;
mod visualize;

use anyhow::Context;
use axum::Router;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use tracing_subscriber::EnvFilter;

/// The default model: the committed trained weights, or the seeded placeholder setup writes there.
const DEFAULT_WEIGHTS: &str = "model-weights/zfnet-imagenette.safetensors";

#[derive(Parser)]
#[command(
    name = "zfvis",
    version,
    about = "See inside ZFNet: deconvnet projections, top activations, occlusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the UI.
    Serve {
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
    },
    /// Top-k activations of every conv map over a folder of probe images (or `index merge`).
    #[command(args_conflicts_with_subcommands = true)]
    Index {
        #[command(subcommand)]
        action: Option<IndexAction>,
        /// Folder of images, searched recursively (JPEG, PNG, WebP).
        #[arg(long)]
        probe: Option<PathBuf>,
        /// Index file to write (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_WEIGHTS)]
        weights: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Index only slice i of n (every n-th image from i), e.g. 0/4; combine with `index merge`.
        #[arg(long)]
        shard: Option<String>,
        /// Images per forward pass.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Activations kept per map.
        #[arg(long, default_value_t = 9)]
        top: usize,
    },
    /// Train ZFNet on a folder-per-class set (DATA/train/<class>/…, optional DATA/val/<class>/…).
    Train {
        /// Dataset root holding train/ (and val/ for per-epoch validation).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Run directory: checkpoints, logs, snapshots, the final model.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its last checkpoint.
        #[arg(long, conflicts_with_all = ["data", "out"])]
        resume: Option<PathBuf>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Epochs in all (with --resume: moves the end of the run).
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Images per forward/backward pass; gradients of a batch's passes are summed.
        #[arg(long, default_value_t = 32)]
        micro_batch: usize,
        #[arg(long, default_value_t = 0.01)]
        lr: f64,
        /// Epochs at whose start the learning rate is divided by 10, e.g. 20,27 (with --resume:
        /// only drops still ahead of the run may move).
        #[arg(long, value_delimiter = ',')]
        lr_drops: Option<Vec<usize>>,
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        /// fc6/fc7 width (4096 in the paper).
        #[arg(long, default_value_t = zfnet::init::DEFAULT_FC_WIDTH)]
        fc_width: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds between checkpoints.
        #[arg(long, default_value_t = 120)]
        checkpoint_secs: u64,
        /// Stop (with a checkpoint) after this many optimizer steps in total.
        #[arg(long)]
        max_steps: Option<usize>,
    },
    /// Top-1 and top-5 accuracy over a folder-per-class set (folders matched by WordNet id or label).
    Eval {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = DEFAULT_WEIGHTS)]
        weights: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Write the result into the model's manifest.
        #[arg(long)]
        record: bool,
    },
    /// Copy a model (weights + manifest) to another place, optionally as fp16 (half the size).
    Export {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Store the tensors as fp16; loading converts back to f32.
        #[arg(long)]
        f16: bool,
    },
    /// Write the seeded random-init placeholder model (skipped if the file exists).
    InitWeights {
        #[arg(long, default_value = DEFAULT_WEIGHTS)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum IndexAction {
    /// Combine partial indexes (from --shard runs) into the index of their union.
    Merge {
        /// Partial index files.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes, no backtrace: this is what a CLI user sees.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            addr,
            weights,
            device,
            ui_dir,
            max_body_mib,
            probe,
            index,
            cache_dir,
        } => {
            let probe = probe.map(|p| ProbeArgs {
                dir: p,
                index,
                cache_dir,
            });
            serve(addr, &weights, &device, &ui_dir, max_body_mib, probe).await
        }
        Command::Index {
            action: Some(IndexAction::Merge { parts, out }),
            ..
        } => index_cmd::merge(&parts, &out),
        Command::Index {
            action: None,
            probe,
            out,
            weights,
            device,
            shard,
            batch,
            top,
        } => {
            alloc::keep_freed_memory();
            let probe = probe.context("give --probe DIR (the images to index)")?;
            let out = out.context("give --out FILE (where to write the index)")?;
            tokio::task::block_in_place(|| {
                index_cmd::build(
                    &weights,
                    &device,
                    &probe,
                    &out,
                    shard.as_deref(),
                    batch,
                    top,
                )
            })
        }
        Command::Train {
            data,
            out,
            resume,
            device,
            epochs,
            batch,
            micro_batch,
            lr,
            lr_drops,
            weight_decay,
            fc_width,
            seed,
            checkpoint_secs,
            max_steps,
        } => {
            alloc::keep_freed_memory();
            let defaults = zfnet::train::TrainConfig::default();
            let config = zfnet::train::TrainConfig {
                epochs: epochs.unwrap_or(defaults.epochs),
                batch,
                micro_batch,
                lr,
                lr_drops: lr_drops.clone().unwrap_or(defaults.lr_drops.clone()),
                weight_decay,
                fc_width,
                seed,
                checkpoint_secs,
                ..defaults
            };
            tokio::task::block_in_place(|| {
                train_cmd::train(train_cmd::TrainArgs {
                    data: data.as_deref(),
                    out: out.as_deref(),
                    resume: resume.as_deref(),
                    device: &device,
                    config,
                    schedule_change: zfnet::train::ScheduleChange { epochs, lr_drops },
                    max_steps,
                })
            })
        }
        Command::Eval {
            data,
            weights,
            device,
            batch,
            record,
        } => {
            tokio::task::block_in_place(|| train_cmd::eval(&weights, &data, &device, batch, record))
        }
        Command::Export { weights, out, f16 } => export(&weights, &out, f16),
        Command::InitWeights { out, seed } => {
            let written = zfnet::init::write_placeholder(&out, seed)
                .with_context(|| format!("writing the placeholder model to {}", out.display()))?;
            if written {
                println!(
                    "wrote untrained placeholder model {} (seed {seed})",
                    out.display()
                );
            } else {
                println!("{} already exists; left as it is", out.display());
            }
            Ok(())
        }
    }
}

fn export(weights: &Path, out: &Path, f16: bool) -> anyhow::Result<()> {
    let model = zfnet::LoadedModel::load(weights, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", weights.display()))?;
    let dtype = if f16 {
        candle_core::DType::F16
    } else {
        candle_core::DType::F32
    };
    let tensors = candle_core::safetensors::load(weights, &candle_core::Device::Cpu)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
        .collect::<candle_core::Result<std::collections::HashMap<_, _>>>()?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    let mut manifest = model.manifest;
    if f16 {
        manifest
            .provenance
            .push_str(" Stored as fp16 by `zfvis export --f16`.");
        // accuracy must be measured again on the fp16 weights
        manifest.evaluation = None;
    }
    manifest.save(&zfnet::manifest::manifest_path(out))?;
    println!("wrote {} ({:?})", out.display(), dtype);
    Ok(())
}

struct ProbeArgs {
    dir: PathBuf,
    index: Option<PathBuf>,
    cache_dir: PathBuf,
}

async fn serve(
    addr: SocketAddr,
    weights: &Path,
    device: &str,
    ui_dir: &Path,
    max_body_mib: usize,
    probe: Option<ProbeArgs>,
) -> anyhow::Result<()> {
    let device = zfnet::device::parse_device(device)?;
    let model = zfnet::LoadedModel::load(weights, &device).with_context(|| {
        format!(
            "loading model {} (run `zfvis init-weights` for the untrained placeholder)",
            weights.display()
        )
    })?;
    if !model.manifest.trained {
        tracing::warn!(
            "model {} is UNTRAINED: {}",
            model.manifest.name,
            model.manifest.provenance
        );
    }
    let limits = state::Limits {
        max_body_bytes: max_body_mib.max(1) * 1024 * 1024,
        ..Default::default()
    };
    let probes = match probe {
        Some(p) => {
            let index = tokio::task::block_in_place(|| {
                index_cmd::probe_index(&model, &p.dir, p.index.as_deref(), &p.cache_dir)
            })?;
            Some(probes::ProbeSet::new(index, p.dir, &p.cache_dir, &model))
        }
        None => None,
    };
    let mut state = state::AppState::new(model, limits);
    if let Some(p) = probes {
        state = state.with_probes(p);
    }
    let state = Arc::new(state);
    let app = app(state, ui_dir);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("zfvis listening on http://{local}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn app(state: Arc<state::AppState>, ui_dir: &Path) -> Router {
    let visualize = Router::new()
        .route(
            "/visualize/{layer}/{map}",
            axum::routing::get(visualize::visualize),
        )
        .with_state(state.clone());
    let api = routes::api_router(state);
    let index = ui_dir.join("index.html");
    let ui = if index.exists() {
        Router::new().fallback_service(ServeDir::new(ui_dir).fallback(ServeFile::new(index)))
    } else {
        tracing::warn!(
            "no UI at {} (build it with scripts/build-web.sh); serving the API only",
            ui_dir.display()
        );
        Router::new().fallback(|| async {
            axum::response::Html(
                "<h1>zfvis</h1><p>The UI is not built. Run <code>scripts/run.sh</code>, or use the API at /api/model.</p>",
            )
        })
    };
    Router::new()
        .nest("/api", api)
        .merge(visualize)
        .merge(ui)
        .layer(TraceLayer::new_for_http())
}
