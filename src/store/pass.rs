//! One pass in one transaction: the known state, the events appended to the chain, their
//! deliveries queued, the health.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension as _, TransactionBehavior};

use super::Result;
use crate::model::route::Route;
use crate::model::state::Known;
use crate::model::state::Outcome;
use crate::model::Health;
use crate::store::known::load_known;
use crate::store::meta::{load_health, save_health, set_meta};
use crate::store::Store;
use crate::store::{chain_hash, ms, outbox, sqlite_err, Cache, Committed};

impl Store {
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
                    let held = match (&ev.device, r.coalesce.is_zero() || !ev.kind.coalesces()) {
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
        for a in outcome.guard.iter().flat_map(|g| &g.approvals) {
            if a.approved {
                tx.execute(
                    "INSERT INTO guard_approved (device_id, at, by, node_key, routes) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(device_id) DO UPDATE SET at = ?2, by = ?3, node_key = ?4, routes = ?5",
                    params![
                        a.device.0,
                        now_s,
                        a.by,
                        a.node_key,
                        serde_json::to_string(&a.routes).expect("routes serialize")
                    ],
                )
            } else {
                tx.execute(
                    "DELETE FROM guard_approved WHERE device_id = ?1",
                    params![a.device.0],
                )
            }
            .map_err(&e)?;
        }
        if let Some(g) = &outcome.guard {
            super::guard::write(&tx, g).map_err(&e)?;
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
}
