//! What the guard keeps: the approvals (changed only with their event, in one transaction), its
//! state ([`GuardState`], one record in `meta`), and the dropped sources with when each group was
//! last alerted. A guard step writes all of it with its events, in the pass's one transaction
//! ([`crate::model::state::GuardCommit`]).

use std::collections::BTreeMap;

#[cfg(test)]
use crate::model::guard::ApprovalChange;
use crate::model::guard::{Approval, BlockedRecord, GuardState};
use crate::model::state::GuardCommit;

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::Result;
use crate::model::route::Route;
use crate::model::state::Known;
use crate::model::state::Outcome;
use crate::model::{Event, StableNodeId};
use crate::store::meta::{get_meta, set_meta};
use crate::store::Store;

const STATE: &str = "guard_state";
/// The notes of earlier versions, read once into [`GuardState`].
const OLD_NOTES: [&str; 5] = [
    "guard_applied",
    "guard_unenforced",
    "guard_seen",
    "guard_off",
    "guard_initialized",
];

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Writes `g` inside the caller's transaction.
pub(super) fn write(tx: &rusqlite::Transaction<'_>, g: &GuardCommit) -> rusqlite::Result<()> {
    let state = serde_json::to_string(&g.state).expect("guard state serializes");
    set_meta(tx, STATE, &state)?;
    for k in OLD_NOTES {
        tx.execute("DELETE FROM meta WHERE key = ?1", [k])?;
    }
    if g.clear_blocked {
        tx.execute("DELETE FROM guard_blocked", [])?;
    }
    for r in &g.blocked {
        tx.execute(
            "INSERT INTO guard_blocked (addr, device_id, first_ms, alerted_ms, packets) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(addr) DO UPDATE SET device_id = ?2, first_ms = ?3, alerted_ms = ?4, packets = ?5",
            params![
                r.key,
                r.device_id,
                r.first.timestamp_millis(),
                r.alerted.map(|t| t.timestamp_millis()),
                i64::try_from(r.packets).unwrap_or(i64::MAX)
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Every approval, by device.
    pub fn approvals(&self) -> Result<Vec<Approval>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT device_id, node_key, at, by, routes FROM guard_approved ORDER BY device_id",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(Approval {
                    device: StableNodeId(r.get(0)?),
                    node_key: r.get(1)?,
                    at: r.get(2)?,
                    by: r.get(3)?,
                    // A row that does not parse approves no route.
                    routes: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default(),
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
    }

    /// The approvals, by device.
    pub fn approvals_by_device(&self) -> Result<BTreeMap<StableNodeId, Approval>> {
        Ok(self
            .approvals()?
            .into_iter()
            .map(|a| (a.device.clone(), a))
            .collect())
    }

    /// Mirrors approval changes with their events (queued on `routes`) in one transaction, the
    /// guard's state unchanged.
    #[cfg(test)]
    pub fn record_approvals(
        &mut self,
        routes: &[Route],
        changes: Vec<ApprovalChange>,
        events: Vec<Event>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let commit = GuardCommit {
            state: self.guard_state()?,
            approvals: changes,
            ..GuardCommit::default()
        };
        self.record_guard(routes, commit, events, now)
    }

    /// The guard's state (from the notes of an earlier version, the first time).
    pub fn guard_state(&self) -> Result<GuardState> {
        let get = |k: &str| get_meta(&self.conn, k).map_err(self.err());
        if let Some(s) = get(STATE)? {
            return Ok(serde_json::from_str(&s).unwrap_or_default());
        }
        Ok(GuardState {
            applied: get("guard_applied")?,
            unenforced: get("guard_unenforced")?,
            seen: get("guard_seen")?,
            off: get("guard_off")?,
            initialized: get("guard_initialized")?,
            ..GuardState::default()
        })
    }

    /// Writes the guard's state, its records and `events` (queued on `routes`) in one
    /// transaction.
    pub fn record_guard(
        &mut self,
        routes: &[Route],
        commit: GuardCommit,
        events: Vec<Event>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.commit_pass(routes, now, |_, h| {
            (
                Outcome {
                    events,
                    guard: Some(commit),
                    ..Outcome::default()
                },
                h.clone(),
                false,
            )
        })?;
        Ok(())
    }

    /// The dropped sources recorded so far, by group.
    pub fn blocked(&self) -> Result<Vec<BlockedRecord>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT addr, device_id, first_ms, alerted_ms, packets FROM guard_blocked ORDER BY addr",
            )
            .map_err(self.err())?;
        let rows = st
            .query_map([], |r| {
                Ok(BlockedRecord {
                    key: r.get(0)?,
                    device_id: r.get(1)?,
                    first: from_ms(r.get(2)?),
                    alerted: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    packets: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err())
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
}

impl Store {
    /// What is known now (the cache of the last pass when nothing was committed since).
    pub fn known_now(&mut self) -> Result<&Known> {
        self.preload()?;
        Ok(&self.cache.as_ref().expect("preload fills the cache").known)
    }
}
