//! What `/metrics` reads: counters the writes keep, a few rows whatever the size of the log.

use super::Result;
use crate::store::meta::load_health;
use crate::store::Metrics;
use crate::store::Store;

/// The queries of [`Store::metrics`] over the log and the outbox: counters only.
pub(super) const METRICS_SQL: [&str; 4] = [
    "SELECT kind, n FROM event_counts ORDER BY kind",
    "SELECT channel, delivered FROM delivery_counts WHERE delivered > 0 ORDER BY channel",
    "SELECT channel, failed FROM delivery_counts WHERE delivered + failed + pending > 0 ORDER BY channel",
    "SELECT channel, pending FROM delivery_counts WHERE pending > 0 ORDER BY channel",
];

impl Store {
    /// Devices ever recorded (0 for a new store): the tailnet's size, counted on the primary
    /// key's index (a filter on `removed` would read every row).
    pub fn device_count(&self) -> Result<usize> {
        self.conn
            .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(self.err())
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
            export_lag: pairs(super::export::EXPORT_LAG_SQL)?,
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
}
