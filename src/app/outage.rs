//! The state database failing and working again: one mechanism for `check`, `run` and its start.
//!
//! While the database fails, the channels are told straight (`monitor.store_failed`): the outbox
//! lives in the database that failed. The outage is remembered in memory by `run` and as an empty
//! mark file in the state directory (its mtime is when it was last told), so that `check` from
//! cron, or `run` after a restart, tells an outage at most once per [`ALERT_EVERY`] however often
//! it is retried, and records `monitor.store_recovered` once, when the database works again.

use std::path::Path;

use chrono::{DateTime, Utc};

use tracing::{info, warn};

use crate::config::Config;
use crate::model::route::Route;
use crate::model::{Event, EventKind};
use crate::notify::{self, render};
use crate::store::{Store, StoreError};

/// The mark file's name in the state directory.
pub const MARK: &str = "store-failed";
/// How often a lasting outage is told again by `check` (one told per channel otherwise).
pub const ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// One outage of the state database.
#[derive(Debug, Clone)]
pub struct StoreOutage {
    pub since: DateTime<Utc>,
    /// The last error (`None`: known only from the mark of an earlier process).
    pub error: Option<String>,
    /// Channels that have received `monitor.store_failed` for it.
    pub told: Vec<String>,
}

impl StoreOutage {
    pub fn new(since: DateTime<Utc>) -> StoreOutage {
        StoreOutage {
            since,
            error: None,
            told: Vec::new(),
        }
    }

    /// The outage an earlier process told, from its mark (never followed through a link: F7).
    pub fn from_mark(state_dir: &Path) -> Option<StoreOutage> {
        let meta = std::fs::symlink_metadata(state_dir.join(MARK)).ok()?;
        let since = meta
            .modified()
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now());
        Some(StoreOutage::new(since))
    }

    /// Whether a mark says that an outage was told less than [`ALERT_EVERY`] ago.
    pub fn told_recently(state_dir: &Path) -> bool {
        std::fs::symlink_metadata(state_dir.join(MARK))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < ALERT_EVERY))
    }

    /// Tells every channel not yet told, straight; marks the outage in the state directory once
    /// some channel took it. `error` is the database's error, one line.
    pub async fn tell(&mut self, cfg: &Config, host: &str, db: &Path, error: &str) {
        self.error = Some(error.to_owned());
        let before = self.told.len();
        alert_store_failed(cfg, host, db, self.since, error, &mut self.told).await;
        if self.told.len() > before {
            mark(&cfg.state_dir);
        }
    }

    /// The database works again: logs `monitor.store_recovered` (delivered with the rest) and
    /// removes the mark.
    pub fn recovered(
        &self,
        store: &mut Store,
        routes: &[Route],
        state_dir: &Path,
    ) -> Result<(), StoreError> {
        record_store_recovered(store, routes, self.since, self.error.as_deref())?;
        let _ = std::fs::remove_file(state_dir.join(MARK));
        Ok(())
    }
}

/// Sends `monitor.store_failed` straight to every channel whose filter takes it and whose name is
/// not in `told` (the outbox lives in the database that failed); adds the channels that accepted it
/// to `told`.
async fn alert_store_failed(
    cfg: &Config,
    host: &str,
    path: &std::path::Path,
    since: chrono::DateTime<Utc>,
    error: &str,
    told: &mut Vec<String>,
) {
    let mut ev = Event::new(
        EventKind::MonitorStoreFailed,
        since,
        format!(
            "tailscale-monitor on {host} cannot use its state database {}",
            path.display()
        ),
    );
    ev.detail = error.to_owned();
    let cx = render::Context::new(host);
    for ch in &cfg.channels {
        if told.contains(&ch.name) || !ch.route.accepts(&ev) {
            continue;
        }
        match notify::send(ch, &cx, &[&ev], false).await {
            Ok(()) => told.push(ch.name.clone()),
            Err(err) => {
                warn!(channel = %ch.name, error = %err, "could not send monitor.store_failed")
            }
        }
    }
}

/// Logs `monitor.store_recovered`, queued on `routes`: the state database, failing since `since`
/// (with `error`, when known), could be written again.
fn record_store_recovered(
    store: &mut Store,
    routes: &[Route],
    since: chrono::DateTime<Utc>,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let took = (now - since).to_std().unwrap_or_default();
    let mut ev = Event::new(
        EventKind::MonitorStoreRecovered,
        now,
        format!(
            "The state database {} can be written again, after {}",
            store.path().display(),
            humantime::format_duration(std::time::Duration::from_secs(took.as_secs()))
        ),
    );
    ev.detail = match error {
        Some(e) => format!("It failed from {}: {e}", since.to_rfc3339()),
        None => format!("It failed from {}.", since.to_rfc3339()),
    };
    store.record_event(routes, ev)?;
    info!(after = ?took, "state database writable again");
    Ok(())
}

/// An empty file: creating it needs no free blocks. If even that fails, the next attempt tells
/// again, which is the safe side. `O_NOFOLLOW`: never through a link the service user planted.
fn mark(state_dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(state_dir.join(MARK));
    // Its time is when the outage was last told: an existing mark is touched.
    if let Ok(f) = f {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// A state database that `cmd` (`check`, or `run` at startup) cannot use: tells the channels
/// straight, at most once per [`ALERT_EVERY`], unless the invoking user
/// merely may not open it. Returns the one-line message for the terminal.
pub async fn store_unusable(cfg: &Config, host: &str, e: &StoreError, cmd: &str) -> String {
    let error = e.to_string();
    if e.is_access_denied() {
        return format!(
            "{error} (run `{cmd}` as the user that owns the state, e.g. `runuser -u tailscale-monitor -- tailscale-monitor {cmd}`)"
        );
    }
    if !StoreOutage::told_recently(&cfg.state_dir) {
        let mut o =
            StoreOutage::from_mark(&cfg.state_dir).unwrap_or_else(|| StoreOutage::new(Utc::now()));
        o.tell(cfg, host, &cfg.state_dir.join("state.db"), &error)
            .await;
    }
    error
}

/// Once the store works: if an earlier `check` or `run` start told a store failure, log
/// `monitor.store_recovered` (delivered with the rest) and clear the mark.
pub fn store_recovered(cfg: &Config, store: &mut Store) -> Result<(), StoreError> {
    match StoreOutage::from_mark(&cfg.state_dir) {
        Some(o) => o.recovered(store, &cfg.routes(), &cfg.state_dir),
        None => Ok(()),
    }
}
