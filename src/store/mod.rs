//! SQLite store: known devices and users, the append-only event log, the delivery outbox.
//!
//! The contract that makes "no detected event is ever lost" true: [`Store::commit_pass`] records
//! the new state, appends the pass's events and queues one delivery per event and channel in one
//! `BEGIN IMMEDIATE` transaction. The state never moves past an event whose alert is not queued;
//! a crash before the commit re-detects, a crash after it re-delivers.
//!
//! Concurrency: `BEGIN IMMEDIATE` serializes passes across processes (two `check`s at once: the
//! second sees what the first recorded and finds nothing new). Deliveries are claimed with a lease
//! so two drainers never send the same row at the same time; a crashed drainer's lease expires and
//! the row is retried (at-least-once).
//!
//! The event log is append-only (triggers refuse UPDATE and DELETE) and hash-chained: each row
//! stores SHA-256 over the previous row's hash and its own JSON, so an edit is detectable by
//! [`Store::verify_log`].
//!
//! Layout: this file opens and migrates the database and holds the one transaction
//! ([`Store::commit_pass`]); `known.rs` reads the known state, `log.rs` the event log, `outbox.rs`
//! the deliveries.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior};

use crate::model::state::{Known, KnownDevice};
pub use crate::model::Health;

mod export;
mod guard;
mod known;
mod log;
mod meta;
mod metrics;
mod outbox;
mod pass;
mod schema;
#[cfg(test)]
mod tests;
mod web;

pub use export::Chained;
pub use log::Checkpoint;
pub use web::EventFilter;

use crate::store::meta::{get_meta, load_health};

use schema::MIGRATIONS;

use crate::model::Event;
use known::load_known;
use log::chain_hash;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database {path}: schema version {found} is newer than this binary knows ({known}); upgrade tailscale-monitor")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state database {path}: cannot switch to WAL journaling (journal mode stays {mode}); is it on a file system without shared memory, such as NFS?")]
    NoWal { path: PathBuf, mode: String },
    /// A state directory or database this process must not use (F6, F7).
    #[error("state {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("state database {path}: corrupt record {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

impl StoreError {
    /// The invoking user may not open the state (typically `check` run by hand as someone other
    /// than the service user): a usage error to report on the terminal, not an outage to alert.
    pub fn is_access_denied(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::PermissionDenied,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => f.code == rusqlite::ErrorCode::CannotOpen,
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// Versioned migrations; index + 1 is the schema version. Never edit one that has shipped.
/// What [`Store::commit_pass`] recorded.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    pub events: Vec<Event>,
    pub queued: usize,
    /// When a watched device's offline threshold falls due.
    pub presence_due: Option<DateTime<Utc>>,
    /// The devices a `[[watch]]` covers.
    pub watched: Vec<crate::model::StableNodeId>,
}

/// A logged event with its row ID and pass number.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub id: i64,
    pub pass: i64,
    pub event: Event,
}

/// A claimed delivery: one event for one channel.
#[derive(Debug, Clone)]
pub struct Pending {
    pub outbox_id: i64,
    pub channel: String,
    pub attempts: i64,
    pub created: DateTime<Utc>,
    pub event: LoggedEvent,
    /// The event's hash in the log's chain.
    pub hash: String,
}

/// What `/metrics` reports.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub devices: i64,
    pub users: i64,
    pub events_by_kind: Vec<(String, i64)>,
    pub delivered: Vec<(String, i64)>,
    pub failed_attempts: Vec<(String, i64)>,
    pub pending: Vec<(String, i64)>,
    pub health: Health,
    /// Watched devices: name, watch, 1 online / 0 offline.
    pub presence: Vec<(String, String, i64)>,
    /// Each `[[export]]` that has a cursor: how many logged events it has not handed over.
    pub export_lag: Vec<(String, i64)>,
}

/// What [`Store::reroute_orphans`] did with the rows of one channel that is no longer configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rerouted {
    pub from: String,
    pub to: Vec<String>,
    /// Rows moved to at least one configured channel.
    pub moved: usize,
    /// Rows whose event no configured channel's filter takes.
    pub dropped: usize,
}

/// Undelivered outbox rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: i64,
    pub failing: i64,
    pub last_error: Option<String>,
}

/// A device row for `devices`.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub known: KnownDevice,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// The devices only the control plane lists: none of `rows` that is still present is them. One
/// pass over each side (a set of the present IDs), whatever the size of the tailnet.
pub fn control_only<'a>(
    control: Option<&'a crate::model::control::KnownControl>,
    rows: &[DeviceRow],
) -> Vec<&'a crate::model::control::ControlDevice> {
    let present: std::collections::HashSet<&crate::model::StableNodeId> = rows
        .iter()
        .filter(|r| !r.known.removed)
        .map(|r| &r.known.device.id)
        .collect();
    control
        .map(|c| {
            c.devices
                .values()
                .filter(|d| !present.contains(&d.id))
                .collect()
        })
        .unwrap_or_default()
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// What is known as of this connection's last commit, and the `data_version` it was read at:
    /// `run` does not load and deserialize every row on every pass, only when another process
    /// (`check`, another `run`) has committed since.
    cache: Option<Cache>,
}

struct Cache {
    version: i64,
    known: Known,
    health: Health,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn parse_rfc3339(s: &str) -> DateTime<Utc> {
    crate::model::time::rfc3339(s).unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) `<dir>/state.db`, mode 0600 in a 0700 directory, WAL, migrated.
    pub fn open(dir: &Path) -> Result<Store> {
        let io = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let path = dir.join("state.db");
        check_safe(dir, &path)?;
        // Create the file ourselves so it is 0600 from the first byte (SQLite gives its -wal and
        // -shm files the database file's mode). Never open an existing database file outside
        // SQLite: closing any descriptor of a file drops all of this process's POSIX locks on it,
        // which would let another process checkpoint away the WAL of a live connection.
        if !path.exists() {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut store = Store {
            conn,
            path,
            cache: None,
        };
        store.init()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError {
        sqlite_err(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn init(&mut self) -> Result<()> {
        let e = sqlite_err(&self.path);
        self.conn
            .busy_timeout(Duration::from_secs(30))
            .map_err(&e)?;
        self.enter_wal()?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(&e)?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(&e)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(&e)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(&e)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Switches the database to WAL. When several processes open a fresh database at once, the
    /// switch of all but one fails at once with SQLITE_BUSY: it upgrades a read lock to a write
    /// lock, where SQLite skips the busy handler. Wait it out with the same 30 s budget.
    fn enter_wal(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r: rusqlite::Result<String> =
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0));
            match r {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(mode) => {
                    return Err(StoreError::NoWal {
                        path: self.path.clone(),
                        mode,
                    })
                }
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(StoreError::Sqlite {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Loads what is known into this connection's cache, unless it is current: [`Store::commit_pass`]
    /// then starts from it if nothing was committed in between (`check` loads while tailscaled's
    /// documents are read).
    pub fn preload(&mut self) -> Result<()> {
        let e = sqlite_err(&self.path);
        let tx = self.conn.transaction().map_err(&e)?;
        let version: i64 = tx
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(&e)?;
        if self.cache.as_ref().is_some_and(|c| c.version == version) {
            return Ok(());
        }
        let known = load_known(&tx, &self.path)?;
        let health = load_health(&tx).map_err(&e)?;
        tx.commit().map_err(&e)?;
        self.cache = Some(Cache {
            version,
            known,
            health,
        });
        Ok(())
    }

    /// For a process about to exit (`check`): what is known is left to the exit, not freed
    /// device by device (10,000 devices' worth of small allocations). The connection stays, to be
    /// closed as usual.
    pub fn leave_known_to_exit(&mut self) {
        std::mem::forget(self.cache.take());
    }

    /// The cache of [`Store::preload`] or the last commit, if nothing was committed since.
    pub(super) fn current_cache(&self) -> Option<&Known> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ok()?;
        self.cache
            .as_ref()
            .filter(|c| c.version == version)
            .map(|c| &c.known)
    }

    /// Presence of the watched devices as of the last pass.
    pub fn presence(&self) -> Result<Option<crate::model::presence::KnownPresence>> {
        let Some(text) = get_meta(&self.conn, "presence").map_err(self.err())? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                what: "presence".into(),
                detail: err.to_string(),
            })
    }
}

/// Maps a SQLite error to one naming the database file.
fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    }
}

/// Refuses a state directory another user may write, or (for root) one that belongs to another
/// user, and a `state.db` that is a symbolic link: SQLite would follow it and create or write
/// the file it points to, with root's rights when root runs a command (F6, F7).
fn check_safe(dir: &Path, db: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_ = |path: &Path, why: String| StoreError::Unsafe {
        path: path.to_owned(),
        why,
    };
    let m = fs::metadata(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_(
            dir,
            format!(
                "the directory is writable by others (mode {:o}): chmod 0700 it",
                m.mode() & 0o7777
            ),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && m.uid() != 0 {
        return Err(unsafe_(
            dir,
            format!(
                "it belongs to uid {}, not root: run this as that user (e.g. `runuser -u tailscale-monitor -- tailscale-monitor …`), so that root never follows its files",
                m.uid()
            ),
        ));
    }
    if fs::symlink_metadata(db).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(unsafe_(
            db,
            "is a symbolic link; the state database must be a plain file".into(),
        ));
    }
    Ok(())
}
