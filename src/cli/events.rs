//! `events`: the event log, newest first.

use std::io::Write as _;
use std::path::Path;

use chrono::Utc;

use crate::cli::{open_store, parse_since};
use crate::sanitize;

pub(super) fn events(
    explicit: Option<&Path>,
    since: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let store = open_store(explicit)?;
    let since = since.map(|s| parse_since(s, Utc::now())).transpose()?;
    let events = store.events(since, limit)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<serde_json::Value> = events
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(&l.event).expect("event serializes");
                v["id"] = l.id.into();
                v["pass"] = l.pass.into();
                v
            })
            .collect();
        super::table::print_json(&v)?;
        return Ok(());
    }
    for l in &events {
        let e = &l.event;
        writeln!(
            out,
            "{}  {:<8} {:<26} {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.severity,
            e.kind,
            sanitize::line(&e.summary, 200)
        )?;
    }
    if let Some((bad, why)) = store.verify_log()? {
        writeln!(
            out,
            "WARNING: the event log was altered at or after event #{bad} ({why})"
        )?;
    }
    Ok(())
}
