//! The append-only, hash-chained event log: each row stores SHA-256 over the previous row's hash
//! and its own JSON; triggers refuse UPDATE and DELETE, and [`Store::verify_log`] finds an edit.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::Result;
use crate::model::route::Route;
use crate::model::state::Outcome;
use crate::model::Event;
use crate::store::meta::{get_meta, set_meta};
use crate::store::Store;
use crate::store::{parse_rfc3339, LoggedEvent, StoreError};

impl Store {
    /// Logs one event of the monitor's own (not from a snapshot) and queues it on `routes`.
    pub fn record_event(&mut self, routes: &[Route], event: Event) -> Result<()> {
        let now = event.at;
        self.commit_pass(routes, now, |_, h| {
            (
                Outcome {
                    events: vec![event],
                    ..Outcome::default()
                },
                h.clone(),
                false,
            )
        })?;
        Ok(())
    }

    /// When the last digest was recorded (`[digest] every`).
    pub fn digest_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(get_meta(&self.conn, "digest_at")
            .map_err(self.err())?
            .map(|t| parse_rfc3339(&t)))
    }

    /// When the baseline was taken, if it was.
    pub fn baseline_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(get_meta(&self.conn, "baseline_at")
            .map_err(self.err())?
            .map(|t| parse_rfc3339(&t)))
    }

    /// Records the digest like any event (queued for every channel that takes it) and when it
    /// was made.
    pub fn record_digest(&mut self, routes: &[Route], event: Event) -> Result<()> {
        let at = event.at;
        self.record_event(routes, event)?;
        set_meta(&self.conn, "digest_at", &at.to_rfc3339()).map_err(self.err())
    }

    /// Logged events, newest first, optionally only those at or after `since`.
    pub fn events(&self, since: Option<DateTime<Utc>>, limit: usize) -> Result<Vec<LoggedEvent>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, pass, data FROM events WHERE (?1 IS NULL OR at >= ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows: Vec<(i64, i64, String)> = stmt
            .query_map(params![since.map(|t| t.to_rfc3339()), limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        self.logged(rows)
    }

    /// Rows of `(id, pass, data)` as logged events.
    pub(super) fn logged(&self, rows: Vec<(i64, i64, String)>) -> Result<Vec<LoggedEvent>> {
        rows.into_iter()
            .map(|(id, pass, data)| {
                Ok(LoggedEvent {
                    id,
                    pass,
                    event: self.decode(&data, "event")?,
                })
            })
            .collect()
    }

    /// The newest event's ID and chain hash, and how many events the log holds.
    pub fn log_head(&self) -> Result<(i64, Option<(i64, String)>)> {
        let count: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(self.err())?;
        let head = self
            .conn
            .query_row(
                "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())?;
        Ok((count, head))
    }

    /// Remembers the newest anchor that left the machine in a delivered message, so that `audit`
    /// notices a log that now ends before it (F8: truncation of the tail).
    pub fn note_checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        if self.checkpoint()?.is_some_and(|old| old.id >= c.id) {
            return Ok(());
        }
        let text = serde_json::to_string(c).expect("checkpoint serializes");
        set_meta(&self.conn, "checkpoint", &text).map_err(self.err())
    }

    /// The newest anchor delivered, if any was.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        match get_meta(&self.conn, "checkpoint").map_err(self.err())? {
            Some(t) => Ok(Some(self.decode(&t, "checkpoint")?)),
            None => Ok(None),
        }
    }

    /// Known devices that no logged event names: a device written into the known state by hand
    /// is never alerted as new (F8). The baseline's device list counts as naming them.
    pub fn unlogged_devices(&self) -> Result<Vec<String>> {
        let mut named: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut stmt = self
            .conn
            .prepare("SELECT device_id, kind, data FROM events WHERE device_id IS NOT NULL OR kind = 'monitor.baseline'")
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            if let Some(id) = r.get::<_, Option<String>>(0).map_err(self.err())? {
                named.insert(id);
            }
            if r.get::<_, String>(1).map_err(self.err())? == "monitor.baseline" {
                let e: Event = self.decode(&r.get::<_, String>(2).map_err(self.err())?, "event")?;
                named.extend(e.devices.into_iter().map(|d| d.id.0));
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM devices ORDER BY id")
            .map_err(self.err())?;
        let known: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        Ok(known.into_iter().filter(|id| !named.contains(id)).collect())
    }

    /// The chain hash of one event, if it is in the log.
    pub fn event_hash(&self, id: i64) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT hash FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Recomputes the hash chain, and checks that the columns `events`, the digest and
    /// `/metrics` select on (`at`, `kind`, `severity`, `device_id`, `summary`) say what the hashed
    /// `data` says (F8: an event moved out of `events --since` by its `at` breaks nothing else);
    /// returns the ID of the first row that does not match, and why.
    pub fn verify_log(&self) -> Result<Option<(i64, &'static str)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, data, prev_hash, hash, at, kind, severity, device_id, summary FROM events ORDER BY id",
            )
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        let mut prev = String::new();
        while let Some(r) = rows.next().map_err(self.err())? {
            let get = |i| r.get::<_, String>(i).map_err(self.err());
            let (id, data, p, h): (i64, String, String, String) =
                (r.get(0).map_err(self.err())?, get(1)?, get(2)?, get(3)?);
            if p != prev || chain_hash(&prev, &data) != h {
                return Ok(Some((
                    id,
                    "its hash does not follow from its data and the row before",
                )));
            }
            let device: Option<String> = r.get(7).map_err(self.err())?;
            let consistent = serde_json::from_str::<Event>(&data).is_ok_and(|e| {
                e.at.to_rfc3339() == get(4).unwrap_or_default()
                    && e.kind.as_str() == get(5).unwrap_or_default()
                    && e.severity.as_str() == get(6).unwrap_or_default()
                    && e.device.map(|d| d.id.0) == device
                    && e.summary == get(8).unwrap_or_default()
            });
            if !consistent {
                return Ok(Some((
                    id,
                    "its time, kind, severity, device or summary column differs from its hashed data",
                )));
            }
            prev = h;
        }
        Ok(None)
    }

    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        data: &str,
        what: &str,
    ) -> Result<T> {
        serde_json::from_str(data).map_err(|err| StoreError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            detail: err.to_string(),
        })
    }
}

/// An anchor that left the machine: the event it ends at, its hash, when and where it went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub id: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    pub channel: String,
}

pub(super) fn chain_hash(prev: &str, data: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(data.as_bytes());
    hex::encode(h.finalize())
}
