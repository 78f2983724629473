//! The control view against what is known and against the node view.
//!
//! What only the control plane can tell: devices and users this node cannot see (its ACLs hide
//! them), devices waiting for approval, the policy file and the tailnet settings. What only the
//! comparison can tell: a device in this node's netmap that the control plane does not list
//! (`device.unlisted`: the control plane hides it, or the netmap was tampered with).
//!
//! A device or user first reported from the control view is not reported again when it later
//! shows up in the node view (`diff` checks the known control devices), and the reverse.
//! Pure: values in, values out.

use chrono::{DateTime, Utc};

use super::Known;
use crate::model::control::{AuditEntry, ControlDevice, ControlSnapshot, KnownControl, PolicyDoc};
use crate::model::{
    Change, Device, Event, EventKind, NodeKey, Snapshot, StableNodeId, User, UserId,
};

/// How many consecutive control reads must miss a device of the netmap before it is
/// `device.unlisted` (a device deleted between the two reads of one pass is not).
const UNLISTED_AFTER: u32 = 2;

/// Settings whose change is critical when it goes this way.
fn critical_setting(key: &str, old: &serde_json::Value, new: &serde_json::Value) -> bool {
    match key {
        "devicesApprovalOn" | "usersApprovalOn" => old == &serde_json::json!(true) && new != old,
        "devicesKeyDurationDays" => match (old.as_i64(), new.as_i64()) {
            (Some(o), Some(n)) => n > o,
            (Some(_), None) => true,
            _ => false,
        },
        _ => false,
    }
}

/// A control device as a model device, for messages.
pub fn as_device(d: &ControlDevice) -> Device {
    Device {
        id: d.id.clone(),
        node_id: d.id.0.parse().ok(),
        node_key: NodeKey::default(),
        hostname: d.hostname.clone(),
        dns_name: d.name.clone(),
        os: d.os.clone(),
        user_id: UserId(0),
        addresses: d.addresses.clone(),
        tags: d.tags.clone(),
        routes: d.routes.clone(),
        exit_node: crate::model::has_exit_route(&d.routes),
        key_expiry: if d.key_expiry_disabled {
            None
        } else {
            d.key_expiry
        },
        expired: false,
        created: d.created,
        is_self: false,
        shared: false,
    }
}

fn as_user(login: &str, display: &str) -> User {
    User {
        id: UserId(0),
        login: login.to_owned(),
        display_name: display.to_owned(),
    }
}

/// The most recent audit entry that mentions any of `needles`, as a line for the message.
fn who_did(audit: &[AuditEntry], needles: &[&str]) -> Option<String> {
    audit
        .iter()
        .find(|a| {
            let hay = format!("{} {}", a.action, a.target).to_lowercase();
            needles.iter().any(|n| hay.contains(&n.to_lowercase()))
        })
        .map(|a| {
            format!(
                "Changed by {} ({}{}{})",
                a.actor,
                a.action,
                if a.target.is_empty() { "" } else { " " },
                a.target
            ) + &a
                .at
                .map(|t| format!(" at {}", t.to_rfc3339()))
                .unwrap_or_default()
        })
}

/// The control view's events and the control state to record (`None`: unchanged). A successful
/// read comes with its posture report, evaluated once by the caller.
pub fn events(
    known: &Known,
    node: Option<&Snapshot>,
    read: Result<(&ControlSnapshot, &crate::model::posture::Report), &str>,
    source: &str,
    now: DateTime<Utc>,
) -> (Vec<Event>, Option<KnownControl>) {
    let prev = known.control.as_ref();
    let mut out = Vec::new();
    let (cur, report) = match read {
        Err(e) => {
            let mut next = prev.cloned().unwrap_or_default();
            if next.down_since.is_none() {
                let mut ev = Event::new(
                    EventKind::MonitorSourceDown,
                    now,
                    format!(
                        "The control plane ({source}) cannot be read: devices this server cannot see, approvals, policy and settings are not watched until this is fixed"
                    ),
                );
                ev.detail = e.to_owned();
                out.push(ev);
                next.down_since = Some(now);
            }
            next.last_error = e.to_owned();
            let changed = Some(&next) != prev;
            return (out, changed.then_some(next));
        }
        Ok(read) => read,
    };
    let mut next = KnownControl {
        devices: cur.devices.clone(),
        users: cur.users.keys().cloned().collect(),
        settings: cur.settings.clone(),
        policy: cur.policy.clone(),
        unlisted: Default::default(),
        down_since: None,
        last_error: String::new(),
        posture: Default::default(),
        posture_failing: Vec::new(),
    };
    let drift = crate::posture::drift(prev.map(|p| &p.posture), report, now);
    next.posture = crate::posture::known(report);
    next.posture_failing = report
        .findings
        .iter()
        .filter(|f| f.status == crate::model::posture::Status::Fail)
        .cloned()
        .collect();
    if let Some(t) = prev.and_then(|p| p.down_since) {
        let mut ev = Event::new(
            EventKind::MonitorSourceRecovered,
            now,
            format!("The control plane ({source}) can be read again"),
        );
        ev.detail = format!("unreadable since {}", t.to_rfc3339());
        out.push(ev);
    }
    let node_ids = |id: &StableNodeId| {
        known.devices.contains_key(id) || node.is_some_and(|s| s.devices.contains_key(id))
    };
    let node_logins = |login: &str| {
        known.users.values().any(|u| u.user.login == login)
            || node.is_some_and(|s| s.users.values().any(|u| u.login == login))
    };
    let first = prev.is_none();

    for d in cur.devices.values() {
        let before = prev.and_then(|p| p.devices.get(&d.id));
        let owner = cur.users.get(&d.user);
        let user = as_user(&d.user, owner.map_or("", |u| u.display_name.as_str()));
        if !first && before.is_none() && !node_ids(&d.id) {
            let mut e = Event::new(
                EventKind::DeviceNew,
                now,
                format!(
                    "New device {} ({}) of {} joined the tailnet — not visible to this server: its ACLs do not connect them",
                    d.hostname, d.os, d.user
                ),
            );
            e.device = Some(as_device(d));
            e.user = Some(user.clone());
            e.detail = format!(
                "Reported by the control plane ({source}); this server's netmap does not list it."
            );
            if let Some(w) = who_did(&cur.audit, &[&d.hostname, &d.id.0]) {
                e.detail = format!("{} {w}", e.detail);
            }
            out.push(e);
        }
        let was_authorized = before.is_none_or(|b| b.authorized);
        if !d.authorized && (was_authorized || first) {
            let mut e = Event::new(
                EventKind::DevicePendingApproval,
                now,
                format!(
                    "Device {} ({}) of {} is waiting for approval",
                    d.hostname, d.os, d.user
                ),
            );
            e.device = Some(as_device(d));
            e.user = Some(user.clone());
            out.push(e);
        } else if d.authorized && before.is_some_and(|b| !b.authorized) {
            let mut e = Event::new(
                EventKind::DeviceApproved,
                now,
                format!("Device {} of {} was approved", d.hostname, d.user),
            );
            e.device = Some(as_device(d));
            e.user = Some(user);
            if let Some(w) = who_did(&cur.audit, &[&d.hostname, &d.id.0]) {
                e.detail = w;
            }
            out.push(e);
        }
    }
    if let Some(p) = prev {
        for (id, d) in &p.devices {
            if !cur.devices.contains_key(id) && !node_ids(id) {
                let mut e = Event::new(
                    EventKind::DeviceRemoved,
                    now,
                    format!(
                        "Device {} (not visible to this server) was removed from the tailnet",
                        d.hostname
                    ),
                );
                e.device = Some(as_device(d));
                out.push(e);
            }
        }
    }
    if !first {
        for u in cur.users.values() {
            let known_before = prev.is_some_and(|p| p.users.contains(&u.login));
            if !known_before && !node_logins(&u.login) {
                let mut e = Event::new(
                    EventKind::UserNew,
                    now,
                    format!(
                        "New user {} ({}) — reported by the control plane; no device of theirs is visible to this server",
                        u.login, u.display_name
                    ),
                );
                e.user = Some(as_user(&u.login, &u.display_name));
                out.push(e);
            }
        }
    }

    // In the netmap, not listed by the control plane (shared-in devices belong to other tailnets).
    if let Some(snap) = node {
        for d in snap.devices.values() {
            if d.shared || cur.devices.contains_key(&d.id) {
                continue;
            }
            let seen = prev
                .and_then(|p| p.unlisted.get(&d.id))
                .copied()
                .unwrap_or(0);
            let count = if seen == u32::MAX { seen } else { seen + 1 };
            if count == UNLISTED_AFTER {
                let mut e = Event::new(
                    EventKind::DeviceUnlisted,
                    now,
                    format!(
                        "Device {} is in this server's netmap but the control plane ({source}) does not list it",
                        d.display_name()
                    ),
                );
                e.detail = "Either the control plane hides it from the admin view, or this node's netmap was tampered with. Compare `tailscale status` with the admin console or `headscale nodes list`.".into();
                e.device = Some(d.clone());
                e.user = snap.users.get(&d.user_id).cloned();
                out.push(e);
                next.unlisted.insert(d.id.clone(), u32::MAX);
            } else {
                next.unlisted.insert(d.id.clone(), count);
            }
        }
    }

    if let Some(p) = prev {
        let changed = match (&p.policy, &cur.policy) {
            (Some(a), Some(b)) if !a.etag.is_empty() && !b.etag.is_empty() => {
                a.etag != b.etag && a.text != b.text
            }
            (a, b) => a.as_ref().map(|d| &d.text) != b.as_ref().map(|d| &d.text),
        };
        if changed {
            out.push(policy_event(
                p.policy.as_ref(),
                cur.policy.as_ref(),
                cur,
                source,
                now,
            ));
        }
        if let (Some(a), Some(b)) = (&p.settings, &cur.settings) {
            let mut changes = Vec::new();
            let mut critical = false;
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (o, n) = (
                    a.get(k).unwrap_or(&serde_json::Value::Null),
                    b.get(k).unwrap_or(&serde_json::Value::Null),
                );
                if o != n {
                    critical |= critical_setting(k, o, n);
                    changes.push(Change {
                        field: k.clone(),
                        old: o.to_string(),
                        new: n.to_string(),
                    });
                }
            }
            if !changes.is_empty() {
                let what: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{} {} → {}", c.field, c.old, c.new))
                    .collect();
                let mut e = Event::new(
                    EventKind::SettingsChanged,
                    now,
                    format!("Tailnet settings changed: {}", what.join(", ")),
                );
                if critical {
                    e.severity = crate::model::Severity::Critical;
                }
                e.changes = changes;
                if let Some(w) = who_did(&cur.audit, &["setting", "tailnet"]) {
                    e.detail = w;
                }
                out.push(e);
            }
        }
    }
    out.extend(drift);
    let changed = Some(&next) != prev;
    (out, changed.then_some(next))
}

fn policy_event(
    old: Option<&PolicyDoc>,
    new: Option<&PolicyDoc>,
    cur: &ControlSnapshot,
    source: &str,
    now: DateTime<Utc>,
) -> Event {
    let text = |d: Option<&PolicyDoc>| d.map_or(String::new(), |d| d.text.clone());
    let (diff, widens) = crate::model::policy::policy_diff(&text(old), &text(new));
    let removed = new.is_none();
    let mut e = Event::new(
        EventKind::PolicyChanged,
        now,
        if removed && cur.kind == "headscale" {
            format!("The tailnet policy was removed ({source}): with no policy, every device may reach every other (allow-all)")
        } else if widens {
            format!("The tailnet policy changed ({source}) and widens access")
        } else {
            format!("The tailnet policy changed ({source})")
        },
    );
    e.severity = if widens || removed {
        crate::model::Severity::Critical
    } else {
        crate::model::Severity::Warning
    };
    e.diff = diff;
    if let Some(w) = who_did(&cur.audit, &["policy", "acl"]) {
        e.detail = w;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::{KnownDevice, KnownUser};
    use crate::model::Severity;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cdev(id: &str, host: &str, user: &str, authorized: bool) -> ControlDevice {
        ControlDevice {
            id: StableNodeId(id.into()),
            hostname: host.into(),
            name: format!("{host}.example.ts.net"),
            user: user.into(),
            os: "linux".into(),
            addresses: vec!["100.64.0.9".into()],
            authorized,
            ..ControlDevice::default()
        }
    }

    fn control(devs: &[ControlDevice], users: &[&str]) -> ControlSnapshot {
        ControlSnapshot {
            kind: "tailscale".into(),
            devices: devs.iter().map(|d| (d.id.clone(), d.clone())).collect(),
            users: users
                .iter()
                .map(|u| {
                    (
                        u.to_string(),
                        crate::model::control::ControlUser {
                            login: u.to_string(),
                            display_name: u.to_uppercase(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..ControlSnapshot::default()
        }
    }

    /// The node view: web-01 (self) and laptop of alice@.
    fn node() -> Snapshot {
        let mk = |id: &str, host: &str| Device {
            id: StableNodeId(id.into()),
            hostname: host.into(),
            ..as_device(&cdev(id, host, "alice@", true))
        };
        let mut s = Snapshot {
            self_id: StableNodeId("nSELF".into()),
            ..Snapshot::default()
        };
        for d in [mk("nSELF", "web-01"), mk("nLAPTOP", "laptop")] {
            s.devices.insert(d.id.clone(), d);
        }
        s.users.insert(UserId(0), as_user("alice@", "Alice"));
        s
    }

    fn known_from(s: &Snapshot, control: Option<KnownControl>) -> Known {
        Known {
            baseline_done: true,
            tailnet_id: None,
            devices: s
                .devices
                .values()
                .map(|d| {
                    let k = KnownDevice {
                        device: d.clone(),
                        removed: false,
                        expiring_alerted: None,
                        last_handshake: None,
                        after_baseline: false,
                    };
                    (d.id.clone(), k)
                })
                .collect(),
            users: s
                .users
                .values()
                .map(|u| {
                    let k = KnownUser {
                        user: u.clone(),
                        removed: false,
                    };
                    (u.id, k)
                })
                .collect(),
            access: None,
            control,
            presence: None,
        }
    }

    fn base() -> Vec<ControlDevice> {
        vec![
            cdev("nSELF", "web-01", "alice@", true),
            cdev("nLAPTOP", "laptop", "alice@", true),
        ]
    }

    /// One control read against the known state of node `n` with control view `kc`.
    fn read(
        n: &Snapshot,
        kc: Option<KnownControl>,
        result: Result<&ControlSnapshot, &str>,
    ) -> (Vec<Event>, Option<KnownControl>) {
        let report = result.ok().map(|cs| {
            crate::posture::evaluate(&crate::posture::Inputs {
                control: Some(cs),
                control_note: "",
                node: Some(n),
                server: None,
                now: now(),
            })
        });
        events(
            &known_from(n, kc),
            Some(n),
            result.map(|cs| (cs, report.as_ref().expect("a report for a read"))),
            "headscale API",
            now(),
        )
    }

    /// Runs two control reads: the first records, the second is compared.
    fn after(first: &ControlSnapshot, second: &ControlSnapshot) -> Vec<Event> {
        let n = node();
        let (_, kc) = read(&n, None, Ok(first));
        let (ev, _) = read(&n, kc, Ok(second));
        ev
    }

    /// Event kinds, without the posture drift a change may also cause (tested in `posture`).
    fn kinds(ev: &[Event]) -> Vec<&str> {
        ev.iter()
            .map(|e| e.kind.as_str())
            .filter(|k| !k.starts_with("posture."))
            .collect()
    }

    #[test]
    fn a_device_only_the_control_plane_lists_is_new_and_says_so() {
        let mut devs = base();
        devs.push(cdev("nMAL", "mallory-pc", "mallory@", true));
        let ev = after(
            &control(&base(), &["alice@"]),
            &control(&devs, &["alice@", "mallory@"]),
        );
        assert_eq!(kinds(&ev), ["device.new", "user.new"]);
        assert!(
            ev[0].summary.contains("not visible to this server"),
            "{}",
            ev[0].summary
        );
        assert_eq!(ev[0].severity, Severity::Critical);
        assert!(ev[1].summary.contains("mallory@"));
        // A device the node view already reports is not reported again from the control view.
        let ev = after(
            &control(&base(), &["alice@"]),
            &control(&base(), &["alice@"]),
        );
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn approval_pending_then_approved() {
        let mut devs = base();
        devs.push(cdev("nNEW", "new-box", "alice@", false));
        let ev = after(&control(&base(), &["alice@"]), &control(&devs, &["alice@"]));
        assert_eq!(kinds(&ev), ["device.new", "device.pending_approval"]);
        assert_eq!(ev[1].severity, Severity::Critical);
        let mut approved = devs.clone();
        approved[2].authorized = true;
        let ev = after(
            &control(&devs, &["alice@"]),
            &control(&approved, &["alice@"]),
        );
        assert_eq!(kinds(&ev), ["device.approved"]);
        assert_eq!(ev[0].severity, Severity::Info);
        // Waiting already at the first read: still alerted (it is actionable).
        let n = node();
        let (ev, _) = read(&n, None, Ok(&control(&devs, &["alice@"])));
        assert_eq!(kinds(&ev), ["device.pending_approval"]);
    }

    #[test]
    fn a_netmap_device_the_control_plane_does_not_list_is_unlisted_on_the_second_read() {
        let only_self = control(&[cdev("nSELF", "web-01", "alice@", true)], &["alice@"]);
        let n = node();
        let (ev, kc) = read(&n, None, Ok(&only_self));
        assert!(ev.is_empty(), "one miss is not enough: {ev:?}");
        let (ev, kc) = read(&n, kc, Ok(&only_self));
        assert_eq!(kinds(&ev), ["device.unlisted"]);
        assert_eq!(ev[0].device.as_ref().unwrap().hostname, "laptop");
        let (ev, _) = read(&n, kc, Ok(&only_self));
        assert!(ev.is_empty(), "alerted once");
    }

    #[test]
    fn an_id_mapping_that_fails_is_unlisted_and_new_not_silent() {
        // The control plane names the laptop by another ID: the node's device is unlisted and
        // the control's is new; neither view's device goes unreported.
        let mut devs = base();
        devs[1].id = StableNodeId("99".into());
        let n = node();
        let (_, kc) = read(&n, None, Ok(&control(&base(), &["alice@"])));
        let (ev, kc) = read(&n, kc, Ok(&control(&devs, &["alice@"])));
        assert_eq!(kinds(&ev), ["device.new"]);
        let (ev, _) = read(&n, kc, Ok(&control(&devs, &["alice@"])));
        assert_eq!(kinds(&ev), ["device.unlisted"]);
    }

    #[test]
    fn policy_changes_with_a_diff_and_widening_is_critical() {
        let with = |text: &str, etag: &str| {
            let mut c = control(&base(), &["alice@"]);
            c.policy = Some(PolicyDoc {
                text: text.into(),
                etag: etag.into(),
            });
            c
        };
        let tight = "{\n  // only admins\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:admins\"], \"dst\": [\"tag:server:22\"]}\n  ]\n}\n";
        let open = "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}\n";
        let ev = after(&with(tight, "\"a\""), &with(open, "\"b\""));
        assert_eq!(kinds(&ev), ["policy.changed"]);
        assert_eq!(ev[0].severity, Severity::Critical);
        assert!(
            ev[0]
                .diff
                .iter()
                .any(|l| l.starts_with('+') && l.contains("*:*")),
            "{:?}",
            ev[0].diff
        );
        assert!(ev[0]
            .diff
            .iter()
            .any(|l| l.starts_with('-') && l.contains("group:admins")));
        // Same ETag: unchanged, whatever the text looks like.
        assert!(after(&with(tight, "\"a\""), &with(tight, "\"a\"")).is_empty());
        // A comment that mentions "*" widens nothing: a warning.
        let commented = tight.replace("// only admins", "// never \"*\" here");
        let ev = after(&with(tight, "\"a\""), &with(&commented, "\"c\""));
        assert_eq!(ev[0].severity, Severity::Warning);
        // A new SSH rule widens.
        let ssh = tight.replace("\n}\n", ",\n  \"ssh\": [{\"action\": \"accept\", \"src\": [\"bob@\"], \"dst\": [\"tag:server\"], \"users\": [\"root\"]}]\n}\n");
        let ev = after(&with(tight, "\"a\""), &with(&ssh, "\"d\""));
        assert_eq!(ev[0].severity, Severity::Critical);
        // Headscale: the policy removed is allow-all.
        let mut hs_old = with(tight, "");
        hs_old.kind = "headscale".into();
        let mut hs_new = control(&base(), &["alice@"]);
        hs_new.kind = "headscale".into();
        let ev = after(&hs_old, &hs_new);
        assert!(ev[0].summary.contains("allow-all"), "{}", ev[0].summary);
        assert_eq!(ev[0].severity, Severity::Critical);
    }

    #[test]
    fn settings_changes_and_who_did_it() {
        let with = |approval: bool, days: i64| {
            let mut c = control(&base(), &["alice@"]);
            c.settings = Some(
                [
                    ("devicesApprovalOn".to_owned(), serde_json::json!(approval)),
                    ("devicesKeyDurationDays".to_owned(), serde_json::json!(days)),
                    ("httpsEnabled".to_owned(), serde_json::json!(false)),
                ]
                .into(),
            );
            c
        };
        let mut off = with(false, 90);
        off.audit = vec![AuditEntry {
            at: Some(now()),
            actor: "eve@example.com".into(),
            action: "UPDATE".into(),
            target: "tailnet settings".into(),
        }];
        let ev = after(&with(true, 90), &off);
        assert_eq!(kinds(&ev), ["settings.changed"]);
        assert_eq!(ev[0].severity, Severity::Critical);
        assert!(ev[0].summary.contains("devicesApprovalOn true → false"));
        assert!(
            ev[0].detail.contains("Changed by eve@example.com"),
            "{}",
            ev[0].detail
        );
        let ev = after(&with(true, 90), &with(true, 180));
        assert_eq!(ev[0].severity, Severity::Critical, "longer keys");
        let ev = after(&with(true, 90), &with(true, 30));
        assert_eq!(ev[0].severity, Severity::Warning, "shorter keys");
    }

    #[test]
    fn an_unreadable_control_plane_is_down_once_and_recovers() {
        let n = node();
        let (_, kc) = read(&n, None, Ok(&control(&base(), &["alice@"])));
        let (ev, kc) = read(&n, kc, Err("HTTP 401: invalid API key"));
        assert_eq!(kinds(&ev), ["monitor.source_down"]);
        assert!(ev[0].summary.contains("control plane (headscale API)"));
        let (ev, kc2) = read(&n, kc.clone(), Err("HTTP 401"));
        assert!(ev.is_empty());
        let kc = kc2.or(kc);
        let (ev, _) = read(&n, kc, Ok(&control(&base(), &["alice@"])));
        assert_eq!(kinds(&ev), ["monitor.source_recovered"]);
    }
}
