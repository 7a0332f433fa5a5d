//! `zfvis init-weights`: the seeded random-init placeholder model.

use super::DEFAULT_WEIGHTS;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Write the seeded random-init placeholder model (skipped if the file exists).
#[derive(Args)]
pub struct InitArgs {
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let written = zfnet::init::write_placeholder(&args.out, args.seed)
        .with_context(|| format!("writing the placeholder model to {}", args.out.display()))?;
    if written {
        println!(
            "wrote untrained placeholder model {} (seed {})",
            args.out.display(),
            args.seed
        );
    } else {
        println!("{} already exists; left as it is", args.out.display());
    }
    Ok(())
}
