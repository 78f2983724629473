//! Presence watches: `device.offline` and `device.online` for the devices someone cares about.
//!
//! Flap control: a device that comes back within `offline_after` was never alerted; after an
//! alert, the next one for that device needs the opposite transition (and `back_after` of
//! downtime). A storm — this server itself offline — is one message, "N watched devices
//! unreachable — is this server offline?", not N: the monitor's own connectivity (`/status` Self
//! `Online`, which is tailscaled's "in a map poll with the control plane") decides which case it
//! is. While this server is off the control plane, tailscaled keeps every peer's last `Online`
//! (nobody tells it otherwise), so peers' presence is frozen, not trusted, until it is back. A
//! device that leaves the tailnet is `device.removed` (from the membership diff), never offline.
//!
//! Pure: values in, values out; the caller gets the next time a threshold falls due.

use chrono::{DateTime, Duration, Utc};

use crate::model::presence::{self, KnownPresence, Tracked, Watch};
use crate::model::{Event, EventKind, Severity, Snapshot};

fn human(d: Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.num_seconds().max(0) as u64))
        .to_string()
}

/// The events of this pass, the presence to record, and when a pending threshold falls due.
pub fn evaluate(
    watches: &[Watch],
    prev: Option<&KnownPresence>,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> (Vec<Event>, KnownPresence, Option<DateTime<Utc>>) {
    let mut next = KnownPresence::default();
    let mut events = Vec::new();
    let mut due: Option<DateTime<Utc>> = None;
    let mut offline_now = Vec::new();
    if watches.is_empty() {
        return (events, next, None);
    }
    let self_online = snap.self_online.unwrap_or(true);
    let all: Vec<&crate::model::Device> = snap.devices.values().collect();
    let cover = presence::assign(watches, &all, prev);
    let watched = |d: &crate::model::Device| cover.get(&d.id).copied();
    if !self_online {
        return this_server_offline(watches, prev, snap, now);
    }
    if let Some(p) = prev.filter(|p| p.self_offline_alerted) {
        let n = snap
            .devices
            .values()
            .filter(|d| !d.is_self && watched(d).is_some())
            .count();
        let mut e = Event::new(
            EventKind::DeviceOnline,
            now,
            format!(
                "This server is connected again after {}: {n} watched device(s) visible",
                human(now - p.self_offline_since.unwrap_or(now))
            ),
        );
        e.detail = "Presence is evaluated again from this server's netmap; a device that went away meanwhile is alerted after its offline_after.".into();
        e.device = snap.self_device().cloned();
        events.push(e);
    }
    for d in snap.devices.values() {
        let Some(w) = watched(d) else {
            continue;
        };
        let online = if d.is_self {
            self_online
        } else {
            snap.conns.get(&d.id).is_none_or(|c| c.online)
        };
        let before = prev.and_then(|p| p.devices.get(&d.id));
        let mut t = match before {
            Some(t) if t.online == online => t.clone(),
            Some(t) if online => {
                // Back. Alerted only if its going was, and it was away long enough.
                let down = now - t.since;
                if t.alerted && down >= w.back_after {
                    let mut e = Event::new(
                        EventKind::DeviceOnline,
                        now,
                        format!(
                            "{} is back online after {} (watch \"{}\")",
                            d.display_name(),
                            human(down),
                            w.name
                        ),
                    );
                    e.detail = format!(
                        "Offline since {} (source: this server's netmap, /status Online).",
                        t.since.to_rfc3339()
                    );
                    e.device = Some(d.clone());
                    e.user = snap.users.get(&d.user_id).cloned();
                    events.push(e);
                }
                Tracked {
                    online: true,
                    since: now,
                    alerted: false,
                    watch: w.name.clone(),
                    name: d.display_name().to_owned(),
                }
            }
            _ => Tracked {
                online,
                since: now,
                alerted: false,
                watch: w.name.clone(),
                name: d.display_name().to_owned(),
            },
        };
        t.name = d.display_name().to_owned();
        t.watch.clone_from(&w.name);
        if !t.online && !t.alerted {
            let at = t.since + w.offline_after;
            let open = w.schedule.as_ref().is_none_or(|s| s.active(now));
            if now >= at && open {
                offline_now.push((d.clone(), w.clone(), t.since));
            } else if now < at {
                due = Some(due.map_or(at, |x| x.min(at)));
            }
        }
        next.devices.insert(d.id.clone(), t);
    }
    for (d, w, since) in offline_now {
        let mut e = Event::new(
            EventKind::DeviceOffline,
            now,
            format!(
                "{} has been offline for {} (watch \"{}\")",
                d.display_name(),
                human(now - since),
                w.name
            ),
        );
        e.severity = w.severity;
        e.detail = format!(
            "Last seen online at {} (source: this server's netmap, /status Online).",
            since.to_rfc3339()
        );
        e.user = snap.users.get(&d.user_id).cloned();
        e.device = Some(d.clone());
        events.push(e);
        if let Some(t) = next.devices.get_mut(&d.id) {
            t.alerted = true;
        }
    }
    (events, next, due)
}

/// This server is off the control plane: what it shows of its peers is their state when it
/// left, so nothing is said per device. Once it has been off for the shortest `offline_after` of
/// the watches that cover a device (in their schedules), one message for all of them.
fn this_server_offline(
    watches: &[Watch],
    prev: Option<&KnownPresence>,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> (Vec<Event>, KnownPresence, Option<DateTime<Utc>>) {
    let mut events = Vec::new();
    let since = prev.and_then(|p| p.self_offline_since).unwrap_or(now);
    let mut next = KnownPresence {
        self_offline_since: Some(since),
        self_offline_alerted: prev.is_some_and(|p| p.self_offline_alerted),
        ..KnownPresence::default()
    };
    let mut covered = Vec::new();
    let all: Vec<&crate::model::Device> = snap.devices.values().collect();
    let cover = presence::assign(watches, &all, prev);
    for d in snap.devices.values() {
        let Some(&w) = cover.get(&d.id) else {
            continue;
        };
        let t = match prev.and_then(|p| p.devices.get(&d.id)) {
            Some(t) => t.clone(),
            None => Tracked {
                online: true,
                since: now,
                alerted: false,
                watch: w.name.clone(),
                name: d.display_name().to_owned(),
            },
        };
        next.devices.insert(d.id.clone(), t);
        if !d.is_self {
            covered.push((d, w));
        }
    }
    let open: Vec<_> = covered
        .iter()
        .filter(|(_, w)| w.schedule.as_ref().is_none_or(|s| s.active(now)))
        .collect();
    let Some(after) = open.iter().map(|(_, w)| w.offline_after).min() else {
        return (events, next, None);
    };
    if next.self_offline_alerted {
        return (events, next, None);
    }
    let at = since + after;
    if now < at {
        return (events, next, Some(at));
    }
    let names: Vec<&str> = open.iter().map(|(d, _)| d.display_name()).collect();
    let mut e = Event::new(
        EventKind::DeviceOffline,
        now,
        format!(
            "{} watched device(s) unreachable — is this server offline?",
            names.len()
        ),
    );
    e.severity = open
        .iter()
        .map(|(_, w)| w.severity)
        .max()
        .unwrap_or(Severity::Warning);
    e.detail = format!(
        "This server ({}) has not been connected to the control plane for {} (/status Self Online is false), so it cannot tell whether these are online: {}.",
        snap.self_name(),
        human(now - since),
        names.join(", ")
    );
    e.device = snap.self_device().cloned();
    events.push(e);
    next.self_offline_alerted = true;
    (events, next, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presence::Schedule;
    use crate::model::{Device, NodeKey, PeerConn, StableNodeId, UserId};
    use std::collections::BTreeMap;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn dev(id: &str, tags: &[&str]) -> Device {
        Device {
            id: StableNodeId(id.into()),
            node_id: None,
            node_key: NodeKey(format!("nodekey:{id}")),
            hostname: id.to_lowercase(),
            dns_name: String::new(),
            os: "linux".into(),
            user_id: UserId(1),
            addresses: vec![],
            tags: tags.iter().map(|s| s.to_string()).collect(),
            routes: vec![],
            exit_node: false,
            key_expiry: None,
            expired: false,
            created: None,
            is_self: id == "SELF",
            shared: false,
        }
    }

    fn watch(offline: i64, back: i64) -> Watch {
        Watch {
            name: "prod".into(),
            devices: vec!["tag:prod".into(), "db-01".into()],
            offline_after: Duration::seconds(offline),
            back_after: Duration::seconds(back),
            severity: Severity::Warning,
            schedule: None,
        }
    }

    /// web-01 (self), db-01 and api-01 (tag:prod), laptop (unwatched); `down` are offline.
    fn snap(down: &[&str], self_online: bool) -> Snapshot {
        let mut s = Snapshot {
            self_id: StableNodeId("SELF".into()),
            self_online: Some(self_online),
            ..Snapshot::default()
        };
        for d in [
            dev("SELF", &[]),
            dev("DB-01", &[]),
            dev("API-01", &["tag:prod"]),
            dev("LAPTOP", &[]),
        ] {
            s.conns.insert(
                d.id.clone(),
                PeerConn {
                    online: !down.contains(&d.id.0.as_str()),
                    ..PeerConn::default()
                },
            );
            s.devices.insert(d.id.clone(), d);
        }
        s
    }

    /// F19: anyone can name a device `web-01`. Of two devices of a watched name, the one that
    /// carries the watch's tag is watched; a watch that lists a tag and an untagged name still
    /// covers the untagged device; a newcomer taking a tracked name is not watched, nor alerted.
    #[test]
    fn a_namesake_is_not_watched_as_the_real_device() {
        let named = |id: &str, name: &str, tags: &[&str]| {
            let mut d = dev(id, tags);
            d.hostname = name.into();
            d
        };
        let w = Watch {
            name: "servers".into(),
            devices: vec!["tag:server".into(), "web-01".into(), "nas".into()],
            ..watch(60, 0)
        };
        let mut s = snap(&[], true);
        for d in [
            named("REAL", "web-01", &["tag:server"]),
            named("FAKE", "web-01", &[]),
            named("NAS", "nas", &[]),
        ] {
            s.devices.insert(d.id.clone(), d);
        }
        let all: Vec<&Device> = s.devices.values().collect();
        let ids = |m: BTreeMap<StableNodeId, &Watch>| -> Vec<String> {
            m.into_keys().map(|k| k.0).collect()
        };
        assert_eq!(
            ids(presence::assign(std::slice::from_ref(&w), &all, None)),
            ["NAS", "REAL"]
        );

        // Untagged, tracked first: a later namesake is not the watched device.
        let w = Watch {
            devices: vec!["web-01".into()],
            ..w
        };
        let mut first = snap(&[], true);
        let real = named("REAL", "web-01", &[]);
        first.devices.insert(real.id.clone(), real);
        let t0 = t("2026-11-24T12:00:00Z");
        let (_, known, _) = evaluate(std::slice::from_ref(&w), None, &first, t0);
        let mut second = first.clone();
        let fake = named("FAKE", "web-01", &[]);
        second.conns.insert(
            fake.id.clone(),
            PeerConn {
                online: false,
                ..PeerConn::default()
            },
        );
        second.devices.insert(fake.id.clone(), fake);
        let (events, next, due) = evaluate(
            std::slice::from_ref(&w),
            Some(&known),
            &second,
            t0 + Duration::seconds(600),
        );
        assert!(events.is_empty(), "{events:?}");
        assert!(due.is_none());
        assert_eq!(
            next.devices
                .keys()
                .map(|k| k.0.as_str())
                .collect::<Vec<_>>(),
            ["REAL"]
        );
    }

    /// Runs passes at the given second offsets; returns each pass's event kinds and summaries.
    fn run(w: &[Watch], passes: &[(i64, Snapshot)]) -> Vec<Vec<String>> {
        let t0 = t("2026-11-24T12:00:00Z");
        let mut known: Option<KnownPresence> = None;
        let mut out = Vec::new();
        for (at, s) in passes {
            let (ev, k, _) = evaluate(w, known.as_ref(), s, t0 + Duration::seconds(*at));
            out.push(
                ev.iter()
                    .map(|e| format!("{} {}", e.kind, e.summary))
                    .collect(),
            );
            known = Some(k);
        }
        out
    }

    #[test]
    fn offline_after_the_threshold_once_then_online_once() {
        let w = [watch(300, 0)];
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&["DB-01"], true)),
                (200, snap(&["DB-01"], true)),
                (310, snap(&["DB-01"], true)),
                (400, snap(&["DB-01"], true)),
                (500, snap(&[], true)),
                (600, snap(&[], true)),
            ],
        );
        assert!(r[0].is_empty() && r[1].is_empty() && r[2].is_empty());
        assert_eq!(r[3].len(), 1);
        assert!(
            r[3][0].starts_with("device.offline db-01 has been offline for 5m"),
            "{:?}",
            r[3]
        );
        assert!(r[4].is_empty(), "once per outage");
        assert_eq!(r[5].len(), 1);
        assert!(
            r[5][0].starts_with("device.online db-01 is back online after 8m"),
            "{:?}",
            r[5]
        );
        assert!(r[6].is_empty());
        // The unwatched laptop never counts.
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&["LAPTOP"], true)),
                (999, snap(&["LAPTOP"], true)),
            ],
        );
        assert!(r.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_bounce_shorter_than_offline_after_is_never_alerted() {
        let w = [watch(300, 0)];
        let mut passes = vec![(0, snap(&[], true))];
        for i in 0..100 {
            passes.push((10 + i * 20, snap(&["API-01"], true)));
            passes.push((20 + i * 20, snap(&[], true)));
        }
        let r = run(&w, &passes);
        assert!(r.iter().all(Vec::is_empty), "100 flaps, no message");
    }

    #[test]
    fn back_after_needs_that_much_downtime() {
        let w = [watch(60, 600)];
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&["DB-01"], true)),
                (100, snap(&["DB-01"], true)),
                (200, snap(&[], true)),
            ],
        );
        assert_eq!(r[2].len(), 1, "offline alerted");
        assert!(
            r[3].is_empty(),
            "back after 190 s < back_after 600 s: not alerted"
        );
    }

    #[test]
    fn a_storm_is_one_message() {
        let w = [watch(60, 0)];
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&["DB-01", "API-01"], false)),
                (100, snap(&["DB-01", "API-01"], false)),
                (200, snap(&[], true)),
            ],
        );
        assert_eq!(r[2].len(), 1, "{:?}", r[2]);
        assert!(
            r[2][0].contains("2 watched device(s) unreachable — is this server offline?"),
            "{:?}",
            r[2]
        );
        assert_eq!(r[3].len(), 1, "{:?}", r[3]);
        assert!(
            r[3][0].starts_with("device.online This server is connected again"),
            "{:?}",
            r[3]
        );
    }

    #[test]
    fn off_the_control_plane_peers_are_not_trusted_and_one_message_says_so() {
        // Real tailscaled keeps peers' last Online when this node loses the control plane: the
        // peers still look online, and it is one message, once, after offline_after.
        let w = [watch(60, 0)];
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&[], false)),
                (50, snap(&["DB-01"], false)),
                (80, snap(&[], false)),
                (200, snap(&[], false)),
                (300, snap(&[], true)),
            ],
        );
        assert!(r[1].is_empty() && r[2].is_empty(), "{r:?}");
        assert_eq!(r[3].len(), 1, "{r:?}");
        assert!(
            r[3][0].starts_with(
                "device.offline 2 watched device(s) unreachable — is this server offline?"
            ),
            "{r:?}"
        );
        assert!(r[4].is_empty(), "once per outage: {r:?}");
        assert_eq!(r[5].len(), 1, "{r:?}");
        assert!(
            r[5][0].starts_with("device.online This server is connected again after 4m 50s"),
            "{r:?}"
        );
        // Off for less than offline_after: nothing at all.
        let r = run(
            &w,
            &[
                (0, snap(&[], true)),
                (10, snap(&[], false)),
                (60, snap(&[], false)),
                (65, snap(&[], true)),
                (500, snap(&[], true)),
            ],
        );
        assert!(r.iter().all(Vec::is_empty), "{r:?}");
    }

    #[test]
    fn a_removed_device_is_not_offline() {
        let w = [watch(60, 0)];
        let mut gone = snap(&[], true);
        gone.devices.remove(&StableNodeId("DB-01".into()));
        let r = run(&w, &[(0, snap(&[], true)), (10, gone.clone()), (500, gone)]);
        assert!(r.iter().all(Vec::is_empty), "{r:?}");
    }

    #[test]
    fn schedules_and_their_dst_edges() {
        let s = Schedule::parse("Mon-Fri 08:00-18:00 Europe/Berlin").unwrap();
        // Tuesday 2026-03-24 07:30 UTC is 08:30 CET: open.
        assert!(s.active(t("2026-03-24T07:30:00Z")));
        // Tuesday 2026-03-31 06:30 UTC is 08:30 CEST (after the switch of 2026-03-29): open;
        // 06:30 UTC a week earlier was 07:30 CET: closed.
        assert!(s.active(t("2026-03-31T06:30:00Z")));
        assert!(!s.active(t("2026-03-24T06:30:00Z")));
        // Saturday: closed.
        assert!(!s.active(t("2026-03-28T10:00:00Z")));
        let night = Schedule::parse("Fri 22:00-06:00 UTC").unwrap();
        assert!(night.active(t("2026-03-27T23:00:00Z")), "Friday night");
        assert!(
            night.active(t("2026-03-28T05:00:00Z")),
            "its Saturday morning"
        );
        assert!(!night.active(t("2026-03-28T23:00:00Z")));
        for bad in [
            "Mon-Fri 08:00-18:00",
            "Moon 08:00-18:00 UTC",
            "Mon 8-18 UTC",
            "Mon 08:00-18:00 Mars/Base",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        // Outside the schedule nothing is sent; when it opens and the device is still down, it is.
        let mut w = watch(60, 0);
        w.schedule = Some(Schedule::parse("Mon-Fri 13:00-18:00 UTC").unwrap());
        let r = run(
            &[w],
            &[
                (0, snap(&[], true)),
                (10, snap(&["DB-01"], true)),
                (600, snap(&["DB-01"], true)),
                (3700, snap(&["DB-01"], true)),
            ],
        );
        assert!(r[2].is_empty(), "12:10 is outside 13:00-18:00");
        assert_eq!(r[3].len(), 1, "13:01: still down, alerted");
    }
}
