//! Entry point: parse arguments, set up logging, dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // A file-size limit (RLIMIT_FSIZE) must surface as a write error that is reported, not as a
    // SIGXFSZ that kills the process without a word.
    // SAFETY: only sets the process-wide disposition of one signal to SIG_IGN; no handler runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let filter =
        EnvFilter::try_from_env("TAILSCALE_MONITOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    tailscale_monitor::cli::main(tailscale_monitor::cli::Cli::parse()).await
}
