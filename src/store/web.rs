//! What the web view reads that no command did: the log a page at a time, and the viewers seen.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::Result;
use crate::store::meta::{get_meta, set_meta};
use crate::store::{LoggedEvent, Store};

const VIEWERS: &str = "web_viewers";

/// Which events a timeline page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub device: Option<String>,
    /// Only events at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// Up to `limit` events older than `before` (an event ID; `None`: the newest), newest first.
    /// Each filter has its index: no page reads more rows than it shows, but for `until`, which
    /// finds its first row by the time index.
    pub fn events_page(
        &self,
        filter: &EventFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        let mut before = before.unwrap_or(i64::MAX);
        if let Some(t) = filter.until {
            let first: Option<i64> = self
                .conn
                .query_row(
                    "SELECT MAX(id) FROM events WHERE at <= ?1",
                    [t.to_rfc3339()],
                    |r| r.get(0),
                )
                .map_err(self.err())?;
            before = before.min(first.map_or(0, |f| f + 1));
        }
        // Only the filters given are in the query, so that SQLite walks their index (a `?2 IS
        // NULL OR kind = ?2` would make it walk the log).
        let mut sql = "SELECT id, pass, data FROM events WHERE id < ?".to_owned();
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&before];
        for (column, value) in [
            ("kind", &filter.kind),
            ("severity", &filter.severity),
            ("device_id", &filter.device),
        ] {
            if let Some(v) = value {
                sql += &format!(" AND {column} = ?");
                args.push(v);
            }
        }
        sql += " ORDER BY id DESC LIMIT ?";
        let limit = limit as i64;
        args.push(&limit);
        let mut st = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows: Vec<(i64, i64, String)> = st
            .query_map(args.as_slice(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err())?;
        self.logged(rows)
    }

    /// The event `id` of the log, if there is one.
    pub fn event_by_id(&self, id: i64) -> Result<Option<LoggedEvent>> {
        Ok(self
            .events_page(&EventFilter::default(), Some(id.saturating_add(1)), 1)?
            .into_iter()
            .find(|l| l.id == id))
    }

    /// The viewers (`stable ID node key`) the web view has shown a page to.
    pub fn web_viewers(&self) -> Result<BTreeSet<String>> {
        Ok(get_meta(&self.conn, VIEWERS)
            .map_err(self.err())?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Records `viewer` as seen; returns whether it is new.
    pub fn note_web_viewer(&mut self, viewer: &str) -> Result<bool> {
        let mut seen = self.web_viewers()?;
        if !seen.insert(viewer.to_owned()) {
            return Ok(false);
        }
        let text = serde_json::to_string(&seen).expect("a set of strings serializes");
        set_meta(&self.conn, VIEWERS, &text).map_err(self.err())?;
        Ok(true)
    }
}
