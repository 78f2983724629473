//! What the guard keeps: the approvals (changed only with their event, in one transaction), the
//! sources it dropped and when each was alerted, and a few notes in `meta` (`guard_*`).

use std::collections::BTreeMap;

use crate::model::guard::{Approval, ApprovalChange};

use super::*;

/// A dropped source as recorded: when it was first seen and last alerted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRow {
    pub addr: String,
    pub device_id: Option<String>,
    pub first: DateTime<Utc>,
    pub alerted: Option<DateTime<Utc>>,
    pub packets: u64,
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Every approval, by device.
    pub fn approvals(&self) -> Result<Vec<Approval>> {
        let mut st = self
            .conn
            .prepare("SELECT device_id, node_key, at, by FROM guard_approved ORDER BY device_id")
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(Approval {
                    device: StableNodeId(r.get(0)?),
                    node_key: r.get(1)?,
                    at: r.get(2)?,
                    by: r.get(3)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// The approved devices' IDs, each with the node key approved.
    pub fn approved_keys(&self) -> Result<BTreeMap<StableNodeId, String>> {
        Ok(self
            .approvals()?
            .into_iter()
            .map(|a| (a.device, a.node_key))
            .collect())
    }

    /// Changes approvals and logs their events (queued on `routes`) in one transaction.
    pub fn record_approvals(
        &mut self,
        routes: &[Route],
        changes: Vec<ApprovalChange>,
        events: Vec<Event>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.commit_pass(routes, now, |_, h| {
            (
                Outcome {
                    events,
                    approvals: changes,
                    ..Outcome::default()
                },
                h.clone(),
                false,
            )
        })?;
        Ok(())
    }

    /// A `guard_*` note in `meta`.
    pub fn guard_note(&self, key: &str) -> Result<Option<String>> {
        debug_assert!(key.starts_with("guard_"));
        get_meta(&self.conn, key).map_err(self.err())
    }

    /// Sets (or, with `None`, clears) a `guard_*` note.
    pub fn set_guard_note(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        debug_assert!(key.starts_with("guard_"));
        match value {
            Some(v) => set_meta(&self.conn, key, v),
            None => self
                .conn
                .execute("DELETE FROM meta WHERE key = ?1", [key])
                .map(|_| ()),
        }
        .map_err(self.err())
    }

    /// The dropped sources recorded so far.
    pub fn blocked(&self) -> Result<Vec<BlockedRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT addr, device_id, first_ms, alerted_ms, packets FROM guard_blocked ORDER BY addr",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(BlockedRow {
                    addr: r.get(0)?,
                    device_id: r.get(1)?,
                    first: from_ms(r.get(2)?),
                    alerted: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    packets: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Writes the rows that changed (one transaction).
    pub fn save_blocked(&mut self, rows: &[BlockedRow]) -> Result<()> {
        let e = self.err();
        let tx = self.conn.transaction().map_err(&e)?;
        for r in rows {
            tx.execute(
                "INSERT INTO guard_blocked (addr, device_id, first_ms, alerted_ms, packets) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(addr) DO UPDATE SET device_id = ?2, first_ms = ?3, alerted_ms = ?4, packets = ?5",
                params![
                    r.addr,
                    r.device_id,
                    r.first.timestamp_millis(),
                    r.alerted.map(|t| t.timestamp_millis()),
                    i64::try_from(r.packets).unwrap_or(i64::MAX)
                ],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Approved devices whose latest approval event is missing from the log: a row written into
    /// `guard_approved` by hand lets a device in without anything ever saying so.
    pub fn unlogged_approvals(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT device_id FROM guard_approved a WHERE NOT EXISTS (
                   SELECT 1 FROM events e WHERE e.kind = 'guard.approved' AND e.device_id = a.device_id
                 ) ORDER BY device_id",
            )
            .map_err(self.err())?;
        let rows = st.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// Forgets the dropped sources (the table was removed: its counters are gone too).
    pub fn clear_blocked(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM guard_blocked", [])
            .map(|_| ())
            .map_err(self.err())
    }
}

impl Store {
    /// What is known now (the cache of the last pass when nothing was committed since).
    pub fn known_now(&mut self) -> Result<&Known> {
        self.preload()?;
        Ok(&self.cache.as_ref().expect("preload fills the cache").known)
    }
}
