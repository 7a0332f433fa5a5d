//! `zfvis`: the server and the command line around the ZFNet model.

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(zfvis::cli::run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes, no backtrace: this is what a CLI user sees.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
