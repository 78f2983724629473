//! The `meta` table: one value per key (times, the health rows, the presence, the checkpoint).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension as _};

use crate::model::Health;
use crate::store::parse_rfc3339;

pub(super) fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )
    .map(|_| ())
}

pub(super) fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub(super) fn load_health(conn: &Connection) -> rusqlite::Result<Health> {
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
pub(super) fn save_health(conn: &Connection, old: &Health, h: &Health) -> rusqlite::Result<()> {
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
