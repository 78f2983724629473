//! Entry point: parse arguments, set up logging, dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// mimalloc: a pass allocates and frees tens of megabytes of short-lived strings; with it a
// nothing-new `check` at 10,000 peers takes about a third less time, mostly fewer page faults
// (BENCHMARKS.md, NOTES.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A file-size limit (RLIMIT_FSIZE) must surface as a write error that is reported, not as a
    // SIGXFSZ that kills the process without a word.
    // SAFETY: only sets the process-wide disposition of one signal to SIG_IGN; no handler runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = tailscale_monitor::Cli::parse();
    if matches!(cli.command, tailscale_monitor::Command::Run) {
        // Before the runtime and the first pass allocate.
        tailscale_monitor::memory::for_daemon();
    }
    // `check` runs from cron, which mails whatever reaches stderr: only errors by default (each
    // said once per outage), the rest is in the status line and the log.
    let default = match cli.command {
        tailscale_monitor::Command::Check => "error",
        // The root side's record of every change (review G14): info under the socket unit too.
        tailscale_monitor::Command::Privileged { .. } => "info",
        _ => "info",
    };
    let filter = EnvFilter::try_from_env("TAILSCALE_MONITOR_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(tailscale_monitor::main(cli)),
        Err(e) => {
            eprintln!("tailscale-monitor: cannot start the async runtime: {e}");
            ExitCode::from(3)
        }
    }
}
