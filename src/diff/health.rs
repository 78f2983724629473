//! The node view's health around the diff: `monitor.source_down`/`source_recovered`.

use chrono::{DateTime, Utc};

use crate::diff::parts;
use crate::diff::{diff, Policy};
use crate::model::event_kind::EventKind;
use crate::model::state::Known;
use crate::model::state::Outcome;
use crate::model::{Event, Health, Snapshot};

/// `monitor.source_down`: the tailnet could not be read. Raised once per outage.
pub fn source_down(error: &str, now: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        EventKind::MonitorSourceDown,
        now,
        "The tailnet cannot be read: the monitor is blind until this is fixed",
    );
    e.detail = error.to_owned();
    e
}

/// `monitor.source_recovered`: the tailnet can be read again after an outage.
pub fn source_recovered(down_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        EventKind::MonitorSourceRecovered,
        now,
        "The tailnet can be read again; changes made meanwhile are reported now",
    );
    if let Some(t) = down_since {
        e.detail = format!(
            "unreadable since {} ({} s)",
            t.to_rfc3339(),
            (now - t).num_seconds()
        );
    }
    e
}

pub(super) fn node_outcome(
    known: &Known,
    health: &Health,
    result: Result<&Snapshot, &str>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (Outcome, Health, bool) {
    match result {
        Ok(snap) => {
            let mut out = diff(known, snap, policy, now);
            if health.down_since.is_some() {
                out.events
                    .insert(0, source_recovered(health.down_since, now));
            }
            let (part_events, parts) = parts::evaluate(&health.parts, snap, now);
            out.events.extend(part_events);
            for e in &mut out.events {
                e.tailnet.clone_from(&snap.tailnet);
            }
            let h = Health {
                down_since: None,
                last_error: String::new(),
                last_ok: Some(now),
                parts,
            };
            (out, h, true)
        }
        Err(e) => {
            let mut out = Outcome::default();
            let down_since = match health.down_since {
                Some(t) => Some(t),
                None => {
                    out.events.push(source_down(e, now));
                    Some(now)
                }
            };
            let h = Health {
                down_since,
                last_error: e.to_owned(),
                last_ok: health.last_ok,
                parts: health.parts.clone(),
            };
            (out, h, false)
        }
    }
}
