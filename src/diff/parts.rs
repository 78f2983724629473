//! The health of each part of the node view: who can reach this server, Tailnet Lock, prefs.
//!
//! A part that cannot be read never blinds the rest: membership is diffed as usual, and the part
//! keeps what was last recorded of it. Its outage is said once (`monitor.part_unavailable`, with
//! what is not visible and the exact fix), not on every pass, and its return once
//! (`monitor.part_recovered`; for access, with who can reach this server now).
//!
//! Pure: values in, values out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::access::{Access, Part};
use crate::model::{Event, EventKind, PartDown, Snapshot};

/// The events of this pass about parts, and the parts down after it. A snapshot without a node
/// view (the CLI source) says nothing about parts: they stay as they were.
pub fn evaluate(
    prev: &BTreeMap<Part, PartDown>,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> (Vec<Event>, BTreeMap<Part, PartDown>) {
    let Some(view) = &snap.node else {
        return (Vec::new(), prev.clone());
    };
    let mut events = Vec::new();
    let mut down = BTreeMap::new();
    for part in Part::ALL {
        match (view.unread(part), prev.get(&part)) {
            (Some(u), None) => {
                events.push(unavailable(part, &u.error, &u.fix, now));
                down.insert(
                    part,
                    PartDown {
                        since: now,
                        error: u.error.clone(),
                        fix: u.fix.clone(),
                    },
                );
            }
            (Some(u), Some(d)) => {
                down.insert(
                    part,
                    PartDown {
                        since: d.since,
                        error: u.error.clone(),
                        fix: u.fix.clone(),
                    },
                );
            }
            (None, Some(d)) => {
                let mut e = Event::new(
                    EventKind::MonitorPartRecovered,
                    now,
                    format!("{} can be read again", capitalized(part.what())),
                );
                e.detail = format!("unreadable since {}", d.since.to_rfc3339());
                if part == Part::Access {
                    let a: Access = super::access::canonical(view, snap);
                    e.access = a.known.then(|| a.rows());
                }
                events.push(e);
            }
            (None, None) => {}
        }
    }
    (events, down)
}

/// `monitor.part_unavailable`: what is not visible, why, and the fix.
pub fn unavailable(part: Part, error: &str, fix: &str, now: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        EventKind::MonitorPartUnavailable,
        now,
        format!(
            "{} cannot be read: it is not watched until this is fixed (everything else is)",
            capitalized(part.what())
        ),
    );
    e.detail = error.to_owned();
    e.fix = fix.to_owned();
    e
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::access::{NodeView, Unread};

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    fn snap(unread: &[Part]) -> Snapshot {
        Snapshot {
            node: Some(NodeView {
                rules: (!unread.contains(&Part::Access)).then(Vec::new),
                unread: unread
                    .iter()
                    .map(|&part| Unread {
                        part,
                        error: format!("{} refused", part.as_str()),
                        fix: "do this".into(),
                    })
                    .collect(),
                ..NodeView::default()
            }),
            ..Snapshot::default()
        }
    }

    fn kinds(e: &[Event]) -> Vec<&str> {
        e.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn each_part_is_said_once_when_it_goes_and_once_when_it_comes_back() {
        let (ev, down) = evaluate(&BTreeMap::new(), &snap(&[Part::Access]), at(0));
        assert_eq!(kinds(&ev), ["monitor.part_unavailable"]);
        assert!(
            ev[0].summary.starts_with("Who can reach this server"),
            "{}",
            ev[0].summary
        );
        assert_eq!(
            (ev[0].detail.as_str(), ev[0].fix.as_str()),
            ("access refused", "do this")
        );
        assert_eq!(down[&Part::Access].since, at(0));

        // Still down: nothing, the first time kept.
        let (ev, down2) = evaluate(&down, &snap(&[Part::Access]), at(60));
        assert!(ev.is_empty());
        assert_eq!(down2, down);

        // Another part goes too: only that one is said.
        let (ev, down3) = evaluate(&down2, &snap(&[Part::Access, Part::TailnetLock]), at(90));
        assert_eq!(kinds(&ev), ["monitor.part_unavailable"]);
        assert!(ev[0].summary.contains("Tailnet Lock"));

        let (ev, down4) = evaluate(&down3, &snap(&[]), at(120));
        assert_eq!(
            kinds(&ev),
            ["monitor.part_recovered", "monitor.part_recovered"]
        );
        assert_eq!(
            ev[0].access,
            Some(vec![]),
            "access comes back with who can reach us"
        );
        assert!(down4.is_empty());
    }

    #[test]
    fn a_snapshot_without_a_node_view_changes_nothing() {
        let (_, down) = evaluate(&BTreeMap::new(), &snap(&[Part::Prefs]), at(0));
        let (ev, after) = evaluate(&down, &Snapshot::default(), at(1));
        assert!(ev.is_empty());
        assert_eq!(after, down);
    }
}
