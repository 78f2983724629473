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
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::model::access::Access;
pub use crate::model::route::Route;
use crate::model::state::{Known, KnownDevice, KnownUser, Outcome};
pub use crate::model::Health;

mod known;
mod log;
pub use log::Checkpoint;
mod outbox;

use crate::model::{Event, EventKind, StableNodeId, UserId};
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
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    expiring_alerted TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    data TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass INTEGER NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    device_id TEXT,
    summary TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX events_at ON events(at);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    channel TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    last_error TEXT,
    delivered_ms INTEGER,
    UNIQUE (event_id, channel)
);
CREATE INDEX outbox_pending ON outbox(channel, delivered_ms, next_try_ms);
"#,
    r#"
ALTER TABLE devices ADD COLUMN last_handshake TEXT;
"#,
    r#"
ALTER TABLE outbox ADD COLUMN escalated INTEGER NOT NULL DEFAULT 0;
"#,
    // A delivery its channel refused for good (a 4xx other than 408/429): out of the queue, kept
    // for the record, never retried, never blocking what comes after it.
    r#"
ALTER TABLE outbox ADD COLUMN dead_ms INTEGER;
"#,
    // A repeated change of one device, held to go out with the others of its window as one
    // message (`[alerts] coalesce_window`); 0 for the row that opened the window.
    r#"
ALTER TABLE outbox ADD COLUMN coalesced INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_coalesce ON outbox(channel, created_ms);
"#,
    // What `/metrics` shows, kept up to date by the writes themselves: a scrape reads a few rows,
    // whatever the size of the log and the outbox (F16).
    r#"
CREATE TABLE event_counts (kind TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO event_counts SELECT kind, COUNT(*) FROM events GROUP BY kind;
CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (kind, n) VALUES (NEW.kind, 1)
        ON CONFLICT (kind) DO UPDATE SET n = n + 1;
END;
CREATE TABLE delivery_counts (
    channel TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO delivery_counts
    SELECT channel, SUM(delivered_ms IS NOT NULL), SUM(attempts - (delivered_ms IS NOT NULL)),
           SUM(delivered_ms IS NULL AND dead_ms IS NULL)
    FROM outbox GROUP BY channel;
CREATE TRIGGER outbox_counted_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO delivery_counts (channel) VALUES (NEW.channel) ON CONFLICT (channel) DO NOTHING;
    UPDATE delivery_counts SET
        delivered = delivered + (NEW.delivered_ms IS NOT NULL),
        failed = failed + NEW.attempts - (NEW.delivered_ms IS NOT NULL),
        pending = pending + (NEW.delivered_ms IS NULL AND NEW.dead_ms IS NULL)
    WHERE channel = NEW.channel;
END;
CREATE TRIGGER outbox_counted_delete AFTER DELETE ON outbox BEGIN
    UPDATE delivery_counts SET
        delivered = delivered - (OLD.delivered_ms IS NOT NULL),
        failed = failed - (OLD.attempts - (OLD.delivered_ms IS NOT NULL)),
        pending = pending - (OLD.delivered_ms IS NULL AND OLD.dead_ms IS NULL)
    WHERE channel = OLD.channel;
END;
CREATE TRIGGER outbox_counted_update AFTER UPDATE OF attempts, delivered_ms, dead_ms, channel ON outbox BEGIN
    UPDATE delivery_counts SET
        delivered = delivered - (OLD.delivered_ms IS NOT NULL),
        failed = failed - (OLD.attempts - (OLD.delivered_ms IS NOT NULL)),
        pending = pending - (OLD.delivered_ms IS NULL AND OLD.dead_ms IS NULL)
    WHERE channel = OLD.channel;
    INSERT INTO delivery_counts (channel) VALUES (NEW.channel) ON CONFLICT (channel) DO NOTHING;
    UPDATE delivery_counts SET
        delivered = delivered + (NEW.delivered_ms IS NOT NULL),
        failed = failed + NEW.attempts - (NEW.delivered_ms IS NOT NULL),
        pending = pending + (NEW.delivered_ms IS NULL AND NEW.dead_ms IS NULL)
    WHERE channel = NEW.channel;
END;
"#,
];

/// The queries of [`Store::metrics`] over the log and the outbox: counters only.
const METRICS_SQL: [&str; 4] = [
    "SELECT kind, n FROM event_counts ORDER BY kind",
    "SELECT channel, delivered FROM delivery_counts WHERE delivered > 0 ORDER BY channel",
    "SELECT channel, failed FROM delivery_counts WHERE delivered + failed + pending > 0 ORDER BY channel",
    "SELECT channel, pending FROM delivery_counts WHERE pending > 0 ORDER BY channel",
];

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
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
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

    /// Runs one pass atomically: loads what is known, lets `decide` compute the outcome and the
    /// new source health, then records state, events and deliveries in the same transaction.
    pub fn commit_pass<F>(
        &mut self,
        routes: &[Route],
        now: DateTime<Utc>,
        decide: F,
    ) -> Result<Committed>
    where
        F: FnOnce(&Known, &Health) -> (Outcome, Health, bool),
    {
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let version: i64 = tx
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(&e)?;
        let (mut known, health) = match self.cache.take() {
            Some(c) if c.version == version => (c.known, c.health),
            _ => (load_known(&tx, &self.path)?, load_health(&tx).map_err(&e)?),
        };
        let (outcome, new_health, seen_ok) = decide(&known, &health);

        let now_s = now.to_rfc3339();
        for k in &outcome.devices {
            let data = serde_json::to_string(&k.device).expect("device serializes");
            // `last_seen` is written only when a device leaves: while it is present it is the time of
            // the last pass (meta `last_pass`), so a pass that changes nothing rewrites no row.
            tx.execute(
                "INSERT INTO devices (id, data, removed, expiring_alerted, first_seen, last_seen, last_handshake)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET data = ?2, removed = ?3, expiring_alerted = ?4, last_handshake = ?6,
                   last_seen = CASE WHEN ?3 THEN ?5 ELSE last_seen END",
                params![
                    k.device.id.0,
                    data,
                    k.removed,
                    k.expiring_alerted.map(|t| t.to_rfc3339()),
                    now_s,
                    k.last_handshake.map(|t| t.to_rfc3339())
                ],
            )
            .map_err(&e)?;
        }
        for k in &outcome.users {
            let data = serde_json::to_string(&k.user).expect("user serializes");
            tx.execute(
                "INSERT INTO users (id, data, removed, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET data = ?2, removed = ?3,
                   last_seen = CASE WHEN ?3 THEN ?4 ELSE last_seen END",
                params![k.user.id.0, data, k.removed, now_s],
            )
            .map_err(&e)?;
        }
        if seen_ok {
            set_meta(&tx, "last_pass", &now_s).map_err(&e)?;
        }
        if !known.baseline_done && seen_ok {
            set_meta(&tx, "baseline_at", &now_s).map_err(&e)?;
        }
        if let Some(a) = &outcome.access {
            let data = serde_json::to_string(a).expect("access model serializes");
            set_meta(&tx, "access", &data).map_err(&e)?;
        }
        if let Some(c) = &outcome.control {
            let data = serde_json::to_string(c).expect("control view serializes");
            set_meta(&tx, "control", &data).map_err(&e)?;
        }
        if let Some(t) = &outcome.tailnet_id {
            set_meta(&tx, "tailnet_id", t).map_err(&e)?;
        }
        if let Some(p) = &outcome.presence {
            let data = serde_json::to_string(p).expect("presence serializes");
            set_meta(&tx, "presence", &data).map_err(&e)?;
        }
        save_health(&tx, &health, &new_health).map_err(&e)?;

        let mut queued = 0;
        if !outcome.events.is_empty() {
            let pass: i64 = tx
                .query_row("SELECT COALESCE(MAX(pass), 0) + 1 FROM events", [], |r| {
                    r.get(0)
                })
                .map_err(&e)?;
            let mut prev: String = tx
                .query_row(
                    "SELECT hash FROM events ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&e)?
                .unwrap_or_default();
            for ev in &outcome.events {
                let data = serde_json::to_string(ev).expect("event serializes");
                let hash = chain_hash(&prev, &data);
                tx.execute(
                    "INSERT INTO events (pass, at, kind, severity, device_id, summary, data, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        pass,
                        ev.at.to_rfc3339(),
                        ev.kind.as_str(),
                        ev.severity.as_str(),
                        ev.device.as_ref().map(|d| d.id.0.clone()),
                        ev.summary,
                        data,
                        prev,
                        hash
                    ],
                )
                .map_err(&e)?;
                let event_id = tx.last_insert_rowid();
                for r in routes.iter().filter(|r| !ev.record_only && r.accepts(ev)) {
                    let held = match (&ev.device, r.coalesce.is_zero()) {
                        (Some(d), false) => {
                            outbox::window_of(&tx, r, ev.kind, &d.id.0, now).map_err(&e)?
                        }
                        _ => None,
                    };
                    tx.execute(
                        "INSERT INTO outbox (event_id, channel, created_ms, next_try_ms, coalesced) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![event_id, r.channel, ms(now), held.unwrap_or(ms(now)), held.is_some()],
                    )
                    .map_err(&e)?;
                    queued += 1;
                }
                prev = hash;
            }
        }
        tx.commit().map_err(&e)?;
        known.apply(&outcome, seen_ok);
        self.cache = Some(Cache {
            version,
            known,
            health: new_health,
        });
        Ok(Committed {
            events: outcome.events,
            queued,
            presence_due: outcome.presence_due,
            watched: outcome.watched,
        })
    }

    /// Figures for `/metrics`, read in one go.
    pub fn metrics(&self) -> Result<Metrics> {
        let e = self.err();
        let count =
            |sql: &str| -> Result<i64> { self.conn.query_row(sql, [], |r| r.get(0)).map_err(&e) };
        let pairs = |sql: &str| -> Result<Vec<(String, i64)>> {
            let mut stmt = self.conn.prepare(sql).map_err(&e)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&e)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            Ok(rows)
        };
        Ok(Metrics {
            devices: count("SELECT COUNT(*) FROM devices WHERE removed = 0")?,
            users: count("SELECT COUNT(*) FROM users WHERE removed = 0")?,
            events_by_kind: pairs(METRICS_SQL[0])?,
            delivered: pairs(METRICS_SQL[1])?,
            failed_attempts: pairs(METRICS_SQL[2])?,
            pending: pairs(METRICS_SQL[3])?,
            health: load_health(&self.conn).map_err(&e)?,
            presence: self
                .presence()?
                .map(|p| {
                    p.devices
                        .values()
                        .map(|t| (t.name.clone(), t.watch.clone(), i64::from(t.online)))
                        .collect()
                })
                .unwrap_or_default(),
        })
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

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )
    .map(|_| ())
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

fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn load_health(conn: &Connection) -> rusqlite::Result<Health> {
    Ok(Health {
        down_since: get_meta(conn, "down_since")?
            .filter(|s| !s.is_empty())
            .map(|s| parse_rfc3339(&s)),
        last_error: get_meta(conn, "last_error")?.unwrap_or_default(),
        last_ok: get_meta(conn, "last_ok")?
            .filter(|s| !s.is_empty())
            .map(|s| parse_rfc3339(&s)),
        // Written by this version; an unreadable row reads as "all parts up", which re-raises
        // a part that is still down once rather than never.
        parts: get_meta(conn, "parts")?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
    })
}

/// Writes the rows of `h` that differ from `old` (what was loaded): a pass that changes nothing
/// rewrites only `last_ok`.
fn save_health(conn: &Connection, old: &Health, h: &Health) -> rusqlite::Result<()> {
    let t = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    if h.down_since != old.down_since {
        set_meta(conn, "down_since", &t(h.down_since))?;
    }
    if h.last_error != old.last_error {
        set_meta(conn, "last_error", &h.last_error)?;
    }
    if h.parts != old.parts {
        set_meta(
            conn,
            "parts",
            &serde_json::to_string(&h.parts).expect("parts serialize"),
        )?;
    }
    if h.last_ok != old.last_ok {
        set_meta(conn, "last_ok", &t(h.last_ok))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventKind, Severity};

    fn route() -> Vec<Route> {
        vec![Route {
            channel: "mail".into(),
            min_severity: Severity::Info,
            kinds: None,
            coalesce: std::time::Duration::ZERO,
        }]
    }

    fn outcome(n: usize) -> Outcome {
        Outcome {
            events: (0..n)
                .map(|i| Event::new(EventKind::DeviceNew, Utc::now(), format!("e{i}")))
                .collect(),
            ..Outcome::default()
        }
    }

    #[test]
    fn concurrent_first_opens_all_succeed() {
        // Several processes (here: connections) opening a fresh store at once all switch it to
        // WAL; SQLite answers the losers with an immediate SQLITE_BUSY that skips the busy
        // handler, which must be waited out, not reported.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (state, barrier) = (state.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&state).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        }
    }

    fn known_device(id: &str) -> KnownDevice {
        KnownDevice {
            device: crate::model::Device {
                id: StableNodeId(id.into()),
                node_id: None,
                node_key: crate::model::NodeKey(format!("nodekey:{id}")),
                hostname: id.into(),
                dns_name: String::new(),
                os: "linux".into(),
                user_id: UserId(1),
                addresses: vec![],
                tags: vec![],
                routes: vec![],
                exit_node: false,
                key_expiry: None,
                expired: false,
                created: None,
                is_self: false,
                shared: false,
            },
            removed: false,
            expiring_alerted: None,
            last_handshake: None,
            after_baseline: false,
        }
    }

    #[test]
    fn a_pass_that_changes_nothing_rewrites_no_device_and_last_seen_follows_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let devices: Vec<KnownDevice> = (0..500).map(|i| known_device(&format!("n{i}"))).collect();
        let t0 = Utc::now() - chrono::Duration::hours(1);
        s.commit_pass(&route(), t0, |_, h| {
            let out = Outcome {
                devices: devices.clone(),
                ..Outcome::default()
            };
            (out, h.clone(), true)
        })
        .unwrap();
        let before = s.conn.total_changes();
        let t1 = Utc::now();
        s.commit_pass(&route(), t1, |_, h| (Outcome::default(), h.clone(), true))
            .unwrap();
        // health and last_pass only: a few meta rows, no device row.
        assert!(
            s.conn.total_changes() - before <= 4,
            "{}",
            s.conn.total_changes() - before
        );
        let rows = s.devices().unwrap();
        assert_eq!(rows.len(), 500);
        assert!(rows
            .iter()
            .all(|r| r.last_seen.timestamp() == t1.timestamp()));
        // A removal keeps its own last_seen.
        let t2 = Utc::now() + chrono::Duration::minutes(1);
        let mut gone = devices[0].clone();
        gone.removed = true;
        s.commit_pass(&route(), t2, |_, h| {
            let out = Outcome {
                devices: vec![gone.clone()],
                ..Outcome::default()
            };
            (out, h.clone(), true)
        })
        .unwrap();
        let t3 = t2 + chrono::Duration::minutes(5);
        s.commit_pass(&route(), t3, |_, h| (Outcome::default(), h.clone(), true))
            .unwrap();
        let rows = s.devices().unwrap();
        let r0 = rows.iter().find(|r| r.known.device.id.0 == "n0").unwrap();
        assert_eq!(r0.last_seen.timestamp(), t2.timestamp());
        assert!(rows
            .iter()
            .filter(|r| r.known.device.id.0 != "n0")
            .all(|r| r.last_seen.timestamp() == t3.timestamp()));
    }

    #[test]
    fn the_cached_known_state_is_reloaded_after_another_process_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Store::open(dir.path()).unwrap();
        let mut b = Store::open(dir.path()).unwrap();
        let add = |s: &mut Store, id: &str| {
            let d = known_device(id);
            s.commit_pass(&route(), Utc::now(), move |_, h| {
                let out = Outcome {
                    devices: vec![d.clone()],
                    ..Outcome::default()
                };
                (out, h.clone(), true)
            })
            .unwrap();
        };
        add(&mut a, "nA");
        add(&mut b, "nB");
        let mut seen = Vec::new();
        a.commit_pass(&route(), Utc::now(), |k, h| {
            seen = k.devices.keys().map(|id| id.0.clone()).collect();
            (Outcome::default(), h.clone(), true)
        })
        .unwrap();
        assert_eq!(seen, ["nA", "nB"], "a sees what b committed");
        add(&mut a, "nC");
        a.commit_pass(&route(), Utc::now(), |k, h| {
            seen = k.devices.keys().map(|id| id.0.clone()).collect();
            (Outcome::default(), h.clone(), true)
        })
        .unwrap();
        assert_eq!(seen, ["nA", "nB", "nC"], "its own commits are in the cache");
    }

    #[test]
    fn file_is_private_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = Store::open(&state).unwrap();
        let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(s);
        Store::open(&state).unwrap(); // re-open is a no-op migration
    }

    /// F6, F7: a `state.db` that is a link, a directory others may write, and (for root) a
    /// directory of another user are refused, and nothing is created through them.
    #[test]
    fn an_unsafe_state_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("pwned");
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&target, state.join("state.db")).unwrap();
        let e = Store::open(&state).err().expect("a link is refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!target.exists(), "nothing created through the link");
        fs::remove_file(state.join("state.db")).unwrap();

        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Store::open(&state)
            .err()
            .expect("a world-writable directory is refused");
        assert!(e.to_string().contains("writable by others"), "{e}");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(Store::open(&state).is_ok());

        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
            let e = Store::open(&state)
                .err()
                .expect("root refuses another user's state");
            assert!(e.to_string().contains("runuser"), "{e}");
        }
    }

    /// F2: a claim never returns more rows than the batch limit, oldest first; a dead row is out
    /// of the queue for good.
    #[test]
    fn claims_are_bounded_and_dead_rows_leave_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        s.commit_pass(&route(), now, |_, h| (outcome(25), h.clone(), true))
            .unwrap();
        let lease = Duration::from_secs(60);
        let first = s.claim(None, now, lease, true, 10).unwrap();
        assert_eq!(first.len(), 10);
        let ids: Vec<i64> = first.iter().map(|p| p.outbox_id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        s.mark_dead(&ids[..1], "HTTP 400", now).unwrap();
        s.mark_failed(&ids[1..], "HTTP 429", now).unwrap();
        // 24 left in the queue: two full claims and the rest (claimed rows are leased).
        assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 10);
        assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 10);
        assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 4);
        assert_eq!(
            s.outbox_depth().unwrap().pending,
            24,
            "the dead one is not pending"
        );
    }

    #[test]
    fn pass_queues_deliveries_and_outbox_leases() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let c = s
            .commit_pass(&route(), now, |_, h| (outcome(2), h.clone(), true))
            .unwrap();
        assert_eq!(c.queued, 2);
        let lease = Duration::from_secs(60);
        let got = s.claim(None, now, lease, false, usize::MAX).unwrap();
        assert_eq!(got.len(), 2);
        assert!(
            s.claim(None, now, lease, false, usize::MAX)
                .unwrap()
                .is_empty(),
            "leased"
        );
        s.mark_failed(
            &[got[0].outbox_id],
            "boom",
            now + chrono::Duration::seconds(30),
        )
        .unwrap();
        s.mark_delivered(&[got[1].outbox_id], now).unwrap();
        assert!(
            s.claim(None, now, lease, false, usize::MAX)
                .unwrap()
                .is_empty(),
            "backoff"
        );
        assert_eq!(
            s.claim(None, now, lease, true, usize::MAX).unwrap().len(),
            1,
            "check ignores backoff"
        );
        assert_eq!(
            s.outbox_depth().unwrap(),
            OutboxDepth {
                pending: 1,
                failing: 1,
                last_error: Some("boom".into())
            }
        );
    }

    /// F16: a scrape reads counters, never the log or the outbox, and the counters say what a
    /// scan of them would (after deliveries, failures, dead letters and a reroute).
    #[test]
    fn metrics_read_counters_that_match_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        s.commit_pass(&route(), now, |_, h| (outcome(12), h.clone(), true))
            .unwrap();
        let lease = Duration::from_secs(60);
        let got = s.claim(None, now, lease, true, usize::MAX).unwrap();
        let ids: Vec<i64> = got.iter().map(|p| p.outbox_id).collect();
        s.mark_delivered(&ids[..5], now).unwrap();
        s.mark_failed(&ids[5..9], "HTTP 503", now).unwrap();
        s.mark_failed(&ids[5..7], "HTTP 503", now).unwrap();
        s.mark_dead(&ids[9..10], "HTTP 400", now).unwrap();
        let other = [Route {
            channel: "chat".into(),
            ..route()[0].clone()
        }];
        s.reroute_orphans(&other, now).unwrap();
        s.commit_pass(&route(), now, |_, h| (outcome(3), h.clone(), true))
            .unwrap();
        let scan = |sql: &str| -> Vec<(String, i64)> {
            let mut st = s.conn.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        let m = s.metrics().unwrap();
        assert_eq!(
            m.events_by_kind,
            scan("SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind")
        );
        assert_eq!(m.delivered, scan("SELECT channel, COUNT(*) FROM outbox WHERE delivered_ms IS NOT NULL GROUP BY channel ORDER BY channel"));
        assert_eq!(m.failed_attempts, scan("SELECT channel, SUM(attempts - (delivered_ms IS NOT NULL)) FROM outbox GROUP BY channel ORDER BY channel"));
        assert_eq!(m.pending, scan("SELECT channel, COUNT(*) FROM outbox WHERE delivered_ms IS NULL AND dead_ms IS NULL GROUP BY channel ORDER BY channel"));
        assert!(
            m.delivered.iter().any(|(c, n)| c == "mail" && *n == 5),
            "{:?}",
            m.delivered
        );
        assert!(
            m.pending.iter().any(|(c, _)| c == "chat"),
            "{:?}",
            m.pending
        );
        for sql in METRICS_SQL {
            let mut st = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let detail: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert!(
                detail
                    .iter()
                    .all(|d| !d.contains("events") && !d.contains("outbox")),
                "{sql}: {detail:?}"
            );
        }
    }

    #[test]
    fn rows_of_a_removed_channel_move_to_the_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        // Two alerts queued for "mail" under the old config.
        s.commit_pass(&route(), now, |_, h| (outcome(2), h.clone(), true))
            .unwrap();
        let new_routes = vec![
            Route {
                channel: "email".into(),
                min_severity: Severity::Info,
                kinds: None,
                coalesce: std::time::Duration::ZERO,
            },
            Route {
                channel: "pager".into(),
                min_severity: Severity::Info,
                kinds: Some(vec![EventKind::DeviceRekeyed]),
                coalesce: std::time::Duration::ZERO,
            },
        ];
        let r = s.reroute_orphans(&new_routes, now).unwrap();
        assert_eq!(
            r,
            vec![Rerouted {
                from: "mail".into(),
                to: vec!["email".into()],
                moved: 2,
                dropped: 0
            }]
        );
        let got = s
            .claim(None, now, Duration::from_secs(60), true, usize::MAX)
            .unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.channel == "email"));
        assert!(s.reroute_orphans(&new_routes, now).unwrap().is_empty());

        // No configured channel takes it: dropped from the outbox, still in the log.
        s.commit_pass(&route(), now, |_, h| (outcome(1), h.clone(), true))
            .unwrap();
        let r = s.reroute_orphans(&new_routes[1..], now).unwrap();
        assert_eq!((r[0].moved, r[0].dropped), (0, 1));
        assert_eq!(s.outbox_depth().unwrap().pending, 2, "the two leased");
        assert_eq!(s.events(None, 100).unwrap().len(), 3);
        // No channel at all: nothing moves.
        s.commit_pass(&route(), now, |_, h| (outcome(1), h.clone(), true))
            .unwrap();
        assert!(s.reroute_orphans(&[], now).unwrap().is_empty());
    }

    #[test]
    fn log_is_append_only_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        for _ in 0..3 {
            s.commit_pass(&route(), Utc::now(), |_, h| (outcome(2), h.clone(), true))
                .unwrap();
        }
        assert_eq!(s.verify_log().unwrap(), None);
        assert!(s.conn.execute("DELETE FROM events", []).is_err());
        assert!(s
            .conn
            .execute("UPDATE events SET summary = 'x'", [])
            .is_err());
        // Tampering behind the triggers' back is detected by the chain.
        s.conn.execute_batch("DROP TRIGGER events_append_only_update; UPDATE events SET data = replace(data, 'e1', 'zz') WHERE id = 2").unwrap();
        assert_eq!(s.verify_log().unwrap().map(|b| b.0), Some(2));
        // F8: a column outside the hash that no longer says what the hashed data says.
        let dir2 = tempfile::tempdir().unwrap();
        let mut t = Store::open(dir2.path()).unwrap();
        t.commit_pass(&route(), Utc::now(), |_, h| (outcome(3), h.clone(), true))
            .unwrap();
        t.conn.execute_batch("DROP TRIGGER events_append_only_update; UPDATE events SET at = '2001-01-01T00:00:00+00:00' WHERE id = 3").unwrap();
        let (bad, why) = t.verify_log().unwrap().expect("detected");
        assert_eq!(bad, 3);
        assert!(why.contains("time, kind"), "{why}");
        let events = s.events(None, 100).unwrap();
        assert_eq!(events.len(), 6);
        assert_eq!(events[0].pass, 3, "newest first");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("state.db")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn garbage_file_is_a_clear_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        fs::write(
            &db,
            b"this is not a database, and it is long enough to have a header....",
        )
        .unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("state.db"), "{err}");
        assert!(fs::read(&db)
            .unwrap()
            .starts_with(b"this is not a database"));
    }
}
