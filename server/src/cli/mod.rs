//! The command line: one module per command, each with its own arguments.

pub mod check_device;
pub mod correspondence;
pub mod eval;
pub mod export;
pub mod import;
pub mod index;
pub mod init_weights;
pub mod serve;
pub mod train;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The default model: the committed trained weights, or the seeded placeholder setup writes there.
pub const DEFAULT_WEIGHTS: &str = "model-weights/zfnet-imagenette.safetensors";

#[derive(Parser)]
#[command(
    name = "zfvis",
    version,
    about = "See inside ZFNet: deconvnet projections, top activations, occlusion"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Index(index::IndexArgs),
    Train(train::TrainArgs),
    Eval(eval::EvalArgs),
    Export(export::ExportArgs),
    Import(import::ImportArgs),
    InitWeights(init_weights::InitArgs),
    Correspondence(correspondence::CorrespondenceArgs),
    CheckDevice(check_device::CheckDeviceArgs),
}

/// Parses the command line and runs the command.
pub async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // the batch commands compute on this thread; tell tokio so it can move other tasks away
    use tokio::task::block_in_place as blocking;
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args).await,
        Command::Index(args) => blocking(|| index::run(args)),
        Command::Train(args) => blocking(|| train::run(args)),
        Command::Eval(args) => blocking(|| eval::run(args)),
        Command::Export(args) => export::run(args),
        Command::Import(args) => blocking(|| import::run(args)),
        Command::InitWeights(args) => init_weights::run(args),
        Command::Correspondence(args) => blocking(|| correspondence::run(args)),
        Command::CheckDevice(args) => blocking(|| check_device::run(args)),
    }
}
