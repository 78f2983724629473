//! `run`: the long-lived monitor.
//!
//! One task, one loop, driven by `select!`: a pass every `interval`; the outbox drained when a
//! delivery is due (with backoff); SIGHUP reloads the config (a bad file is logged and the old
//! config kept); SIGTERM/SIGINT finish the pass in flight, try the outbox once more within a
//! few seconds, and exit. Whatever is not delivered stays in the outbox for the next start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::monitor;
use crate::source::Source;
use crate::store::Store;

/// How often the outbox is checked for due deliveries when nothing else happens.
const DELIVERY_POLL: Duration = Duration::from_secs(2);
/// How long shutdown may spend flushing the outbox.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

pub async fn run(config_path: Option<PathBuf>, mut cfg: Config) -> anyhow::Result<()> {
    let mut store = Store::open(&cfg.state_dir)?;
    let mut source = Source::from_config(&cfg.source);
    let host = monitor::local_hostname();
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut tick = interval(cfg.daemon.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if cfg.channels.is_empty() {
        warn!("no [[notify]] channel configured: alerts are only logged and kept in `events`");
    }
    info!(
        socket = %cfg.source.socket.display(),
        state = %store.path().display(),
        interval = ?cfg.daemon.interval,
        channels = cfg.channels.len(),
        "tailscale-monitor running"
    );

    loop {
        tokio::select! {
            _ = tick.tick() => {
                monitor::observe(&source, &mut store, &cfg.routes(), &cfg.policy).await?;
                monitor::deliver(&mut store, &cfg.channels, &host, false).await?;
            }
            _ = sleep(DELIVERY_POLL) => {
                if store.next_due()?.is_some_and(|t| t <= Utc::now()) {
                    monitor::deliver(&mut store, &cfg.channels, &host, false).await?;
                }
            }
            _ = hup.recv() => {
                let Some(path) = &config_path else {
                    warn!("SIGHUP: reloading the default config");
                    continue;
                };
                match Config::load(path) {
                    Ok(new) => {
                        if new.state_dir != cfg.state_dir {
                            warn!("SIGHUP: [state] dir changed; restart to use the new one");
                        }
                        source = Source::from_config(&new.source);
                        tick = interval(new.daemon.interval);
                        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        cfg = Config { state_dir: cfg.state_dir.clone(), ..new };
                        info!(channels = cfg.channels.len(), "config reloaded");
                    }
                    Err(e) => error!(error = %e, "SIGHUP: config not reloaded, keeping the old one"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down: flushing the outbox");
    let deadline = Instant::now() + SHUTDOWN_FLUSH;
    match tokio::time::timeout_at(
        deadline,
        monitor::deliver(&mut store, &cfg.channels, &host, true),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(error = %e, "flushing the outbox"),
        Err(_) => warn!("outbox flush timed out; pending alerts are sent at the next start"),
    }
    info!(pending = store.outbox_depth()?.pending, "stopped");
    Ok(())
}
