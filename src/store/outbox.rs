//! The delivery outbox: one row per event and channel, claimed with a lease so two drainers never
//! send the same row at once, retried with backoff, moved when its channel leaves the config.

use chrono::{DateTime, Utc};
use rusqlite::{params, TransactionBehavior};

use std::time::Duration;

use super::Result;
use crate::model::event_kind::EventKind;
use crate::model::route::Route;
use crate::model::Event;
use crate::store::Store;
use crate::store::{
    from_ms, ms, sqlite_err, LoggedEvent, OutboxDepth, Pending, Rerouted, StoreError,
};

impl Store {
    /// Claims at most `limit` due deliveries, oldest first (all pending ones if `ignore_backoff`),
    /// leasing them for `lease`.
    pub fn claim(
        &mut self,
        channel: Option<&str>,
        now: DateTime<Utc>,
        lease: Duration,
        ignore_backoff: bool,
        limit: usize,
    ) -> Result<Vec<Pending>> {
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        type Row = (i64, String, i64, i64, i64, i64, String, String);
        let rows: Vec<Row> = {
            let mut stmt = tx
                .prepare(
                    "SELECT o.id, o.channel, o.attempts, o.created_ms, e.id, e.pass, e.data, e.hash
                     FROM outbox o JOIN events e ON e.id = o.event_id
                     WHERE o.delivered_ms IS NULL AND o.dead_ms IS NULL
                       AND (o.lease_until_ms IS NULL OR o.lease_until_ms <= ?1)
                       AND (o.next_try_ms <= ?1 OR (?2 AND o.coalesced = 0))
                       AND (?3 IS NULL OR o.channel = ?3)
                     ORDER BY o.id
                     LIMIT ?4",
                )
                .map_err(&e)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![ms(now), ignore_backoff, channel, limit], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .map_err(&e)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            rows
        };
        let until = ms(now) + lease.as_millis() as i64;
        let mut out = Vec::with_capacity(rows.len());
        for (outbox_id, channel, attempts, created, event_id, pass, data, hash) in rows {
            tx.execute(
                "UPDATE outbox SET lease_until_ms = ?2 WHERE id = ?1",
                params![outbox_id, until],
            )
            .map_err(&e)?;
            let event = serde_json::from_str(&data).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("event {event_id}"),
                detail: err.to_string(),
            })?;
            out.push(Pending {
                outbox_id,
                channel,
                attempts,
                created: from_ms(created),
                event: LoggedEvent {
                    id: event_id,
                    pass,
                    event,
                },
                hash,
            });
        }
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    /// Moves undelivered rows of channels that are no longer configured to the configured
    /// channels whose filter takes their event, so that renaming or removing a channel never
    /// strands an alert. Rows no configured channel takes are dropped from the outbox (the event
    /// stays in the log). Does nothing when no channel is configured.
    pub fn reroute_orphans(
        &mut self,
        routes: &[Route],
        now: DateTime<Utc>,
    ) -> Result<Vec<Rerouted>> {
        if routes.is_empty() {
            return Ok(Vec::new());
        }
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        // Runs before every delivery round: only rows of unknown channels are read.
        let configured: Vec<&str> = routes.iter().map(|r| r.channel.as_str()).collect();
        let configured = serde_json::to_string(&configured).expect("names serialize");
        let rows: Vec<(i64, String, i64, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT o.id, o.channel, o.event_id, e.data
                     FROM outbox o JOIN events e ON e.id = o.event_id
                     WHERE o.delivered_ms IS NULL AND o.dead_ms IS NULL
                       AND (o.lease_until_ms IS NULL OR o.lease_until_ms <= ?1)
                       AND o.channel NOT IN (SELECT value FROM json_each(?2))
                     ORDER BY o.id",
                )
                .map_err(&e)?;
            let rows = stmt
                .query_map(params![ms(now), configured], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(&e)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            rows
        };
        let mut out: Vec<Rerouted> = Vec::new();
        for (outbox_id, channel, event_id, data) in rows {
            let event: Event = serde_json::from_str(&data).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("event {event_id}"),
                detail: err.to_string(),
            })?;
            let i = match out.iter().position(|r| r.from == channel) {
                Some(i) => i,
                None => {
                    out.push(Rerouted {
                        from: channel.clone(),
                        ..Rerouted::default()
                    });
                    out.len() - 1
                }
            };
            let mut taken = false;
            for r in routes.iter().filter(|r| r.accepts(&event)) {
                tx.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, channel, created_ms, next_try_ms)
                     VALUES (?1, ?2, ?3, ?3)",
                    params![event_id, r.channel, ms(now)],
                )
                .map_err(&e)?;
                taken = true;
                if !out[i].to.contains(&r.channel) {
                    out[i].to.push(r.channel.clone());
                }
            }
            tx.execute("DELETE FROM outbox WHERE id = ?1", params![outbox_id])
                .map_err(&e)?;
            if taken {
                out[i].moved += 1;
            } else {
                out[i].dropped += 1;
            }
        }
        tx.commit().map_err(&e)?;
        Ok(out)
    }

    pub fn mark_delivered(&mut self, ids: &[i64], now: DateTime<Utc>) -> Result<()> {
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        for id in ids {
            tx.execute(
                "UPDATE outbox SET delivered_ms = ?2, lease_until_ms = NULL, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, ms(now)],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    pub fn mark_failed(&mut self, ids: &[i64], error: &str, next_try: DateTime<Utc>) -> Result<()> {
        self.update_rows(
            ids,
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_try_ms = ?3, lease_until_ms = NULL WHERE id = ?1",
            (error, ms(next_try)),
        )
    }

    /// Takes rows out of the queue for good: their channel refused them permanently.
    pub fn mark_dead(&mut self, ids: &[i64], error: &str, now: DateTime<Utc>) -> Result<()> {
        self.update_rows(
            ids,
            "UPDATE outbox SET dead_ms = ?3, attempts = attempts + 1, last_error = ?2, lease_until_ms = NULL, escalated = 1 WHERE id = ?1",
            (error, ms(now)),
        )
    }

    /// Runs `sql` (`?1` the row id, `?2` and `?3` the values) on each row, in one transaction.
    fn update_rows(&mut self, ids: &[i64], sql: &str, (a, b): (&str, i64)) -> Result<()> {
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        for id in ids {
            tx.execute(sql, params![id, a, b]).map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Undelivered rows of `channel` that have failed and were queued before `before`, not yet
    /// reported as a delivery failure. Marks them reported.
    pub fn take_stale(&mut self, channel: &str, before: DateTime<Utc>) -> Result<Vec<i64>> {
        let e = sqlite_err(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&e)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL AND dead_ms IS NULL AND last_error IS NOT NULL
                     AND escalated = 0 AND created_ms < ?2",
                )
                .map_err(&e)?;
            let rows = stmt
                .query_map(params![channel, ms(before)], |r| r.get(0))
                .map_err(&e)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            rows
        };
        for id in &ids {
            tx.execute("UPDATE outbox SET escalated = 1 WHERE id = ?1", [id])
                .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        Ok(ids)
    }

    /// Undelivered rows: how many in all, how many have failed at least once (rows merely in
    /// flight in another process are not failures), and the last error among them.
    pub fn outbox_depth(&self) -> Result<OutboxDepth> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COUNT(last_error),
                        (SELECT last_error FROM outbox WHERE delivered_ms IS NULL AND dead_ms IS NULL AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1)
                 FROM outbox WHERE delivered_ms IS NULL AND dead_ms IS NULL",
                [],
                |r| {
                    Ok(OutboxDepth {
                        pending: r.get(0)?,
                        failing: r.get(1)?,
                        last_error: r.get(2)?,
                    })
                },
            )
            .map_err(self.err())
    }

    /// The earliest time an undelivered row becomes due, if any.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = self
            .conn
            .query_row(
                "SELECT MIN(MAX(next_try_ms, COALESCE(lease_until_ms, 0))) FROM outbox WHERE delivered_ms IS NULL AND dead_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(v.map(from_ms))
    }
}

/// When the coalescing window that a change of `device` of `kind` on this route falls in ends,
/// if one is open: a row of the same kind and device that opened a window (was not held itself)
/// less than `coalesce` ago. `None`: this change opens a window and goes out now.
pub(super) fn window_of(
    tx: &rusqlite::Transaction<'_>,
    r: &Route,
    kind: EventKind,
    device: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<i64>> {
    let window = i64::try_from(r.coalesce.as_millis()).unwrap_or(i64::MAX);
    let opened: Option<i64> = tx.query_row(
        "SELECT MAX(o.created_ms) FROM outbox o JOIN events e ON e.id = o.event_id
             WHERE o.channel = ?1 AND o.coalesced = 0 AND o.created_ms > ?2
               AND e.kind = ?3 AND e.device_id = ?4",
        params![
            r.channel,
            ms(now).saturating_sub(window),
            kind.as_str(),
            device
        ],
        |row| row.get(0),
    )?;
    Ok(opened.map(|t| t.saturating_add(window)))
}
