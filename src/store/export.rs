//! What `[[export]]` reads and keeps: the log after a cursor, with each event's chain hashes, and
//! the cursor itself.

use rusqlite::{params, OptionalExtension as _};

use super::Result;
use crate::store::{LoggedEvent, Store};

/// An event of the log with its place in the chain.
#[derive(Debug, Clone)]
pub struct Chained {
    pub logged: LoggedEvent,
    pub hash: String,
    pub prev_hash: String,
}

/// Each export's lag: the newest event's ID less its cursor.
pub(super) const EXPORT_LAG_SQL: &str =
    "SELECT name, COALESCE((SELECT MAX(id) FROM events), 0) - last_id FROM export_cursor ORDER BY name";

impl Store {
    /// Up to `limit` events after `after` (an event ID), oldest first, with their hashes.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Chained>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, pass, data, hash, prev_hash FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(self.err())?;
        let rows: Vec<(i64, i64, String, String, String)> = st
            .query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        rows.into_iter()
            .map(|(id, pass, data, hash, prev_hash)| {
                Ok(Chained {
                    logged: LoggedEvent {
                        id,
                        pass,
                        event: self.decode(&data, "event")?,
                    },
                    hash,
                    prev_hash,
                })
            })
            .collect()
    }

    /// Every event's ID and hash: the chain, for `audit --witness`.
    pub fn chain(&self) -> Result<std::collections::BTreeMap<i64, String>> {
        let mut st = self
            .conn
            .prepare("SELECT id, hash FROM events ORDER BY id")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The last event export `name` handed over (0: none yet).
    pub fn export_cursor(&self, name: &str) -> Result<i64> {
        Ok(self.cursor_row(name)?.map_or(0, |(last, _)| last))
    }

    /// Export `name`'s row: the cursor and the batch in flight, if it has a row.
    fn cursor_row(&self, name: &str) -> Result<Option<(i64, Option<i64>)>> {
        self.conn
            .query_row(
                "SELECT last_id, inflight FROM export_cursor WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Gives export `name` a cursor at the start of the log if it has none, so that its lag counts
    /// from its first round (a collector that never took anything is the whole log behind).
    pub fn init_export_cursor(&self, name: &str) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO export_cursor (name, last_id, at_ms) VALUES (?1, 0, ?2)",
                params![name, now],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Export `name` handed over every event up to `id` (and has no batch in flight).
    pub fn set_export_cursor(&self, name: &str, id: i64) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        self.conn
            .execute(
                "INSERT INTO export_cursor (name, last_id, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET last_id = ?2, at_ms = ?3, inflight = NULL",
                params![name, id, now],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Export `name` is about to hand over the events up to `id` to a collector that cannot be
    /// read back: if it stops before [`Store::set_export_cursor`], those may have gone.
    pub fn set_export_inflight(&self, name: &str, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE export_cursor SET inflight = ?2 WHERE name = ?1",
                params![name, id],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The last event of the batch export `name` was handing over when it stopped, if it stopped
    /// in the middle of one.
    pub fn export_inflight(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.cursor_row(name)?.and_then(|(_, inflight)| inflight))
    }

    /// How many logged events each export has not handed over, by name.
    pub fn export_lags(&self) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare(EXPORT_LAG_SQL).map_err(self.err())?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The newest event's ID, and the time of the oldest event after `after` (the backlog's age).
    pub fn backlog(&self, after: i64) -> Result<(i64, Option<String>)> {
        let newest: Option<i64> = self
            .conn
            .query_row("SELECT MAX(id) FROM events", [], |r| r.get(0))
            .map_err(self.err())?;
        let oldest: Option<String> = self
            .conn
            .query_row(
                "SELECT at FROM events WHERE id > ?1 ORDER BY id LIMIT 1",
                [after],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok((newest.unwrap_or(0), oldest))
    }
}
