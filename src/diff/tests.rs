//! The core against small snapshots: one test per event kind and rule.

use crate::model::Ascending;

use super::*;

use std::collections::BTreeMap;

use crate::model::{Device, StableNodeId, User, UserId};

use crate::diff::health::{source_down, source_recovered};

use crate::model::{NodeKey, Severity};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    t("2026-11-24T12:00:00Z")
}

#[test]
fn ascending_lookups_find_every_key_and_only_those() {
    let map: BTreeMap<&str, i32> = [("b", 2), ("d", 4), ("f", 6)].into();
    let mut a = Ascending::new(&map);
    let got: Vec<Option<i32>> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|k| a.get(k).copied())
        .collect();
    assert_eq!(
        got,
        [None, Some(2), None, Some(4), None, Some(6), None],
        "a merge walk must agree with a lookup per key"
    );
}

#[test]
fn stored_device_times_read_strict_and_lenient_forms() {
    let mut d = dev("n1", "a", 1, "100.64.0.1");
    d.key_expiry = Some(t("2027-01-02T03:04:05.123456789Z"));
    d.created = None;
    let json = serde_json::to_string(&d).unwrap();
    let back: Device = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d, "what serde writes reads back");
    // The lenient form chrono also accepts (a space, no `T`) still reads, and a record
    // without the fields (an older store) reads them as absent.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["key_expiry"] = "2027-01-02 03:04:05Z".into();
    v.as_object_mut().unwrap().remove("created");
    let back: Device = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back.key_expiry, Some(t("2027-01-02T03:04:05Z")));
    assert_eq!(back.created, None);
    v["key_expiry"] = "next tuesday".into();
    let err = serde_json::from_value::<Device>(v).unwrap_err().to_string();
    assert!(
        err.contains("input contains invalid characters") || err.contains("invalid"),
        "{err}"
    );
}

fn dev(id: &str, host: &str, user: i64, ip: &str) -> Device {
    Device {
        id: StableNodeId(id.into()),
        node_id: None,
        node_key: NodeKey(format!("nodekey:{id}")),
        hostname: host.into(),
        dns_name: format!("{host}.tail1.ts.net."),
        os: "linux".into(),
        user_id: UserId(user),
        addresses: vec![ip.into()],
        tags: vec![],
        routes: vec![],
        exit_node: false,
        key_expiry: Some(t("2027-06-01T00:00:00Z")),
        expired: false,
        created: Some(t("2026-01-01T00:00:00Z")),
        is_self: false,
        shared: false,
    }
}

fn user(id: i64, login: &str) -> User {
    User {
        id: UserId(id),
        login: login.into(),
        display_name: login.to_uppercase(),
    }
}

fn snapshot(devices: &[Device], users: &[User]) -> Snapshot {
    Snapshot {
        taken_at: now(),
        self_id: StableNodeId("nSELF".into()),
        dns_suffix: "tail1.ts.net".into(),
        devices: devices.iter().map(|d| (d.id.clone(), d.clone())).collect(),
        users: users.iter().map(|u| (u.id, u.clone())).collect(),
        ..Snapshot::default()
    }
}

/// Applies an outcome the way the store does.
fn apply(known: &mut Known, out: &Outcome) {
    known.baseline_done = true;
    for d in &out.devices {
        known.devices.insert(d.device.id.clone(), d.clone());
    }
    for u in &out.users {
        known.users.insert(u.user.id, u.clone());
    }
}

fn base() -> (Known, Vec<Device>, Vec<User>) {
    let devices = vec![
        dev("nSELF", "web-01", 1, "100.64.0.1"),
        dev("nA", "alice-laptop", 2, "100.64.0.2"),
        dev("nB", "bob-desktop", 3, "100.64.0.3"),
    ];
    let users = vec![
        user(1, "tagged-devices"),
        user(2, "alice@x"),
        user(3, "bob@x"),
    ];
    let mut known = Known::default();
    let out = diff(
        &known,
        &snapshot(&devices, &users),
        &Policy::default(),
        now(),
    );
    apply(&mut known, &out);
    (known, devices, users)
}

fn kinds(out: &Outcome) -> Vec<EventKind> {
    out.events.iter().map(|e| e.kind).collect()
}

fn run(known: &Known, devices: &[Device], users: &[User]) -> Outcome {
    diff(known, &snapshot(devices, users), &Policy::default(), now())
}

/// tailscaled 1.104 sorts and de-duplicates advertised routes and requested tags: a record
/// written from an older daemon, in another order or with a repeat, is the same set.
#[test]
fn routes_and_tags_in_another_order_or_without_a_repeat_are_no_change() {
    let (mut known, mut devices, users) = base();
    let old = &mut known
        .devices
        .get_mut(&StableNodeId("nA".into()))
        .unwrap()
        .device;
    old.tags = vec!["tag:b".into(), "tag:a".into(), "tag:a".into()];
    old.routes = vec![
        "10.1.0.0/16".into(),
        "10.0.0.0/8".into(),
        "10.1.0.0/16".into(),
    ];
    old.addresses = vec!["fd7a:115c:a1e0::2".into(), "100.64.0.2".into()];
    devices[1].tags = vec!["tag:a".into(), "tag:b".into()];
    devices[1].routes = vec!["10.0.0.0/8".into(), "10.1.0.0/16".into()];
    devices[1].addresses = vec!["100.64.0.2".into(), "fd7a:115c:a1e0::2".into()];
    let out = run(&known, &devices, &users);
    assert!(out.events.is_empty(), "{:?}", kinds(&out));
    assert_eq!(
        out.devices.len(),
        1,
        "the canonical form is recorded, silently"
    );
    devices[1].tags.push("tag:c".into());
    assert_eq!(
        kinds(&run(&known, &devices, &users)),
        [EventKind::DeviceTagsChanged]
    );
}

/// `CurrentTailnet.StableID` (1.104): pinned when first seen; a change is critical; empty
/// (Headscale, older daemons) is never a change.
#[test]
fn a_node_moved_to_another_tailnet_is_critical() {
    let (mut known, devices, users) = base();
    let mut snap = snapshot(&devices, &users);
    assert!(diff(&known, &snap, &Policy::default(), now())
        .tailnet_id
        .is_none());
    snap.tailnet_id = "T1234CNTRL".into();
    let out = diff(&known, &snap, &Policy::default(), now());
    assert!(out.events.is_empty());
    known.tailnet_id = out.tailnet_id;
    assert!(diff(&known, &snap, &Policy::default(), now())
        .tailnet_id
        .is_none());
    snap.tailnet_id = String::new();
    assert!(diff(&known, &snap, &Policy::default(), now())
        .events
        .is_empty());
    snap.tailnet_id = "TEVILCNTRL".into();
    let out = diff(&known, &snap, &Policy::default(), now());
    assert_eq!(kinds(&out), [EventKind::NodeTailnetChanged]);
    assert_eq!(out.events[0].severity, Severity::Critical);
    assert_eq!(out.events[0].changes[0].old, "T1234CNTRL");
}

#[test]
fn first_snapshot_is_one_baseline_event_listing_everything() {
    let devices = vec![
        dev("nSELF", "web-01", 1, "100.64.0.1"),
        dev("nA", "a", 2, "100.64.0.2"),
    ];
    let users = vec![user(1, "t"), user(2, "alice@x")];
    let out = diff(
        &Known::default(),
        &snapshot(&devices, &users),
        &Policy::default(),
        now(),
    );
    assert_eq!(kinds(&out), vec![EventKind::MonitorBaseline]);
    assert_eq!(out.events[0].devices.len(), 2);
    assert_eq!(out.events[0].users.len(), 2);
    assert_eq!(out.events[0].severity, Severity::Info);
    assert_eq!(out.devices.len(), 2);
    assert_eq!(out.users.len(), 2);
}

#[test]
fn unchanged_tailnet_yields_nothing() {
    let (known, devices, users) = base();
    let out = run(&known, &devices, &users);
    assert_eq!(out, Outcome::default());
}

/// One row per event kind the core produces: a change to the base tailnet and what it raises.
#[test]
fn every_kind() {
    type Mutate = fn(&mut Vec<Device>, &mut Vec<User>);
    let table: Vec<(&str, Mutate, Vec<EventKind>)> = vec![
        (
            "new device of an existing user",
            |d, _| d.push(dev("nC", "alice-phone", 2, "100.64.0.4")),
            vec![EventKind::DeviceNew],
        ),
        (
            "new user with a device",
            |d, u| {
                u.push(user(4, "mallory@evil"));
                d.push(dev("nM", "m", 4, "100.64.0.9"));
            },
            vec![EventKind::UserNew, EventKind::DeviceNew],
        ),
        (
            "re-added under the same hostname and IP",
            |d, _| {
                d.retain(|x| x.id.0 != "nB");
                d.push(dev("nB2", "bob-desktop", 3, "100.64.0.3"));
            },
            vec![EventKind::DeviceNew, EventKind::DeviceRemoved],
        ),
        (
            "rekey",
            |d, _| d[1].node_key = NodeKey("nodekey:new".into()),
            vec![EventKind::DeviceRekeyed],
        ),
        (
            "rename",
            |d, _| d[1].hostname = "alice-work".into(),
            vec![EventKind::DeviceRenamed],
        ),
        (
            "owner change",
            |d, _| d[1].user_id = UserId(3),
            vec![EventKind::DeviceOwnerChanged],
        ),
        (
            "addresses",
            |d, _| d[1].addresses = vec!["100.64.0.77".into()],
            vec![EventKind::DeviceAddressesChanged],
        ),
        (
            "tags",
            |d, _| d[1].tags = vec!["tag:prod".into()],
            vec![EventKind::DeviceTagsChanged],
        ),
        (
            "subnet routes",
            |d, _| d[2].routes = vec!["10.0.0.0/8".into()],
            vec![EventKind::DeviceRoutesChanged],
        ),
        (
            "exit node",
            |d, _| {
                d[2].routes = vec!["0.0.0.0/0".into(), "::/0".into()];
                d[2].exit_node = true;
            },
            vec![EventKind::DeviceExitNodeOffered],
        ),
        (
            "key expiry disabled",
            |d, _| d[1].key_expiry = None,
            vec![EventKind::DeviceKeyExpiryDisabled],
        ),
        (
            "key expiring within 14 days",
            |d, _| d[1].key_expiry = Some(t("2026-11-30T00:00:00Z")),
            vec![EventKind::DeviceKeyExpiring],
        ),
        (
            "expired",
            |d, _| d[1].expired = true,
            vec![EventKind::DeviceExpired],
        ),
        (
            "device removed",
            |d, _| d.retain(|x| x.id.0 != "nA"),
            vec![EventKind::DeviceRemoved],
        ),
        (
            "user removed with its device",
            |d, u| {
                d.retain(|x| x.id.0 != "nB");
                u.retain(|x| x.id != UserId(3));
            },
            vec![EventKind::DeviceRemoved, EventKind::UserRemoved],
        ),
        (
            "volatile change only (OS string)",
            |d, _| d[1].os = "linux-6.1".into(),
            vec![],
        ),
    ];
    for (name, mutate, want) in table {
        let (known, mut devices, mut users) = base();
        mutate(&mut devices, &mut users);
        let out = run(&known, &devices, &users);
        assert_eq!(kinds(&out), want, "{name}");
        for e in &out.events {
            assert_eq!(e.severity, e.kind.severity(), "{name}");
            if e.kind.as_str().starts_with("device.") {
                assert!(e.device.is_some(), "{name}: event names its device");
            }
        }
        // Applying the outcome makes the same snapshot quiet: alerts are raised once.
        let mut known = known;
        apply(&mut known, &out);
        assert_eq!(
            run(&known, &devices, &users).events,
            vec![],
            "{name}: repeated"
        );
    }
}

#[test]
fn reregistration_names_the_old_device() {
    let (known, mut devices, users) = base();
    devices.retain(|x| x.id.0 != "nB");
    devices.push(dev("nB2", "bob-desktop", 3, "100.64.0.3"));
    let out = run(&known, &devices, &users);
    let new = out
        .events
        .iter()
        .find(|e| e.kind == EventKind::DeviceNew)
        .unwrap();
    assert!(new.detail.contains("nB"), "{}", new.detail);
    assert_eq!(new.severity, Severity::Critical);
}

#[test]
fn a_known_device_that_returns_is_not_new() {
    let (mut known, devices, users) = base();
    let gone: Vec<Device> = devices.iter().filter(|d| d.id.0 != "nA").cloned().collect();
    let out = run(&known, &gone, &users);
    apply(&mut known, &out);
    let back = run(&known, &devices, &users);
    assert_eq!(kinds(&back), vec![]);
    assert_eq!(back.devices.len(), 1, "the record is marked present again");
}

#[test]
fn key_expiring_threshold_is_configurable() {
    let (known, mut devices, users) = base();
    devices[1].key_expiry = Some(t("2026-12-20T00:00:00Z")); // 26 days out
    assert_eq!(kinds(&run(&known, &devices, &users)), vec![]);
    let policy = Policy {
        key_expiry_warn: Duration::days(30),
        ..Policy::default()
    };
    let out = diff(&known, &snapshot(&devices, &users), &policy, now());
    assert_eq!(kinds(&out), vec![EventKind::DeviceKeyExpiring]);
}

#[test]
fn monitor_health_events() {
    let down = source_down("LocalAPI /x: connection refused", now());
    assert_eq!(down.kind, EventKind::MonitorSourceDown);
    assert_eq!(down.severity, Severity::Critical);
    assert!(down.detail.contains("refused"));
    let up = source_recovered(Some(t("2026-11-24T11:59:00Z")), now());
    assert_eq!(up.kind, EventKind::MonitorSourceRecovered);
    assert!(up.detail.contains("60 s"));
}

#[test]
fn outage_is_reported_once_and_changes_nothing() {
    let (known, devices, users) = base();
    let policy = Policy::default();
    let (out, h, seen) = pass_outcome(
        &known,
        &Health::default(),
        Err("refused"),
        None,
        &policy,
        now(),
    );
    assert_eq!(kinds(&out), vec![EventKind::MonitorSourceDown]);
    assert!(
        out.devices.is_empty() && out.users.is_empty(),
        "no removals"
    );
    assert!(!seen);
    let (again, h2, _) = pass_outcome(&known, &h, Err("refused"), None, &policy, now());
    assert_eq!(kinds(&again), vec![], "raised once per outage");
    assert_eq!(h2.down_since, h.down_since);
    let mut joined = devices.clone();
    joined.push(dev("nNEW", "joined-meanwhile", 2, "100.64.0.50"));
    let snap = snapshot(&joined, &users);
    let (back, h3, seen) = pass_outcome(&known, &h2, Ok(&snap), None, &policy, now());
    assert_eq!(
        kinds(&back),
        vec![EventKind::MonitorSourceRecovered, EventKind::DeviceNew]
    );
    assert!(seen && h3.down_since.is_none());
}

fn with_handshake(devices: &[Device], users: &[User], id: &str, at: &str) -> Snapshot {
    let mut s = snapshot(devices, users);
    s.conns.insert(
        StableNodeId(id.into()),
        crate::model::PeerConn {
            last_handshake: Some(t(at)),
            ..Default::default()
        },
    );
    s
}

#[test]
fn peer_connected_alerts_new_devices_and_records_known_ones() {
    let (mut known, mut devices, users) = base();
    let policy = Policy::default();
    // A device from the baseline connects: logged, not sent.
    let out = diff(
        &known,
        &with_handshake(&devices, &users, "nA", "2026-11-24T11:59:00Z"),
        &policy,
        now(),
    );
    assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
    assert!(out.events[0].record_only);
    apply(&mut known, &out);
    // Handshakes every 2 minutes of an ongoing session are not new connections.
    let out = diff(
        &known,
        &with_handshake(&devices, &users, "nA", "2026-11-24T12:01:00Z"),
        &policy,
        now(),
    );
    assert_eq!(kinds(&out), vec![]);
    assert_eq!(out.devices.len(), 1, "the newer handshake is recorded");
    apply(&mut known, &out);
    // After the quiet period, it is a new connection again.
    let out = diff(
        &known,
        &with_handshake(&devices, &users, "nA", "2026-11-24T13:30:00Z"),
        &policy,
        now(),
    );
    assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
    // A device that joined after the baseline connects: alerted.
    devices.push(dev("nNEW", "newcomer", 2, "100.64.0.8"));
    let out = run(&known, &devices, &users);
    apply(&mut known, &out);
    let out = diff(
        &known,
        &with_handshake(&devices, &users, "nNEW", "2026-11-24T11:59:30Z"),
        &policy,
        now(),
    );
    assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
    assert!(!out.events[0].record_only);
    let all = Policy {
        connect_alert: ConnectAlert::None,
        ..Policy::default()
    };
    let (known, devices, users) = base();
    let out = diff(
        &known,
        &with_handshake(&devices, &users, "nB", "2026-11-24T11:59:00Z"),
        &all,
        now(),
    );
    assert!(out.events[0].record_only);
}

#[test]
fn severities_are_the_documented_ones() {
    use EventKind::*;
    for k in [
        UserNew,
        DeviceNew,
        DeviceOwnerChanged,
        MonitorSourceDown,
        MonitorDeliveryFailed,
        MonitorStoreFailed,
    ] {
        assert_eq!(k.severity(), Severity::Critical, "{k}");
    }
    for k in [
        DeviceRekeyed,
        DeviceRenamed,
        DeviceRoutesChanged,
        DeviceExitNodeOffered,
        DeviceKeyExpiryDisabled,
    ] {
        assert_eq!(k.severity(), Severity::Warning, "{k}");
    }
    for k in [
        DeviceRemoved,
        UserRemoved,
        PeerConnected,
        MonitorBaseline,
        MonitorSourceRecovered,
    ] {
        assert_eq!(k.severity(), Severity::Info, "{k}");
    }
}

#[test]
fn kinds_round_trip_through_their_names() {
    for k in EventKind::ALL {
        assert_eq!(EventKind::parse(k.as_str()), Some(k));
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
}

/// `[guard] approve_new`: the root side owns the approvals, so the core approves nobody; a new
/// device's `device.new` says whether approve_new matches it (then the root side lets it in) or
/// that it is blocked until `guard approve`. A login matches only that user's untagged devices.
#[test]
fn the_guard_says_which_new_devices_approve_new_matches_and_that_the_others_are_blocked() {
    use crate::model::guard::{ApproveNew, Selector};
    let (known, mut devices, mut users) = base();
    devices.push(dev("nNEW1", "ci-runner", 2, "100.64.0.9"));
    devices.push(dev("nNEW2", "evil", 4, "100.64.0.10"));
    let mut tagged = dev("nNEW3", "box", 5, "100.64.0.11");
    tagged.tags = vec!["tag:x".into()];
    devices.push(tagged);
    users.push(user(4, "mallory@x"));
    users.push(user(5, "carol@x"));
    let policy = Policy {
        guard: Some(ApproveNew::Matching(vec![
            Selector::parse("nNEW1"),
            Selector::parse("carol@x"),
        ])),
        ..Policy::default()
    };
    let (out, _, _) = pass_outcome(
        &known,
        &Health::default(),
        Ok(&snapshot(&devices, &users)),
        None,
        &policy,
        now(),
    );
    assert!(out.guard.is_none(), "the core approves nobody");
    assert!(out
        .events
        .iter()
        .all(|e| e.kind != EventKind::GuardApproved));
    let new = |id: &str| {
        out.events
            .iter()
            .find(|e| e.kind == EventKind::DeviceNew && e.device.as_ref().unwrap().id.0 == id)
            .unwrap()
    };
    assert!(
        new("nNEW1").fix.contains("approve_new"),
        "{}",
        new("nNEW1").fix
    );
    assert!(
        new("nNEW3").fix.contains("Blocked"),
        "a login does not approve a tagged device: {}",
        new("nNEW3").fix
    );
    assert!(
        new("nNEW2")
            .fix
            .contains("tailscale-monitor guard approve nNEW2"),
        "{}",
        new("nNEW2").fix
    );
    // A known device re-keyed: approvals are of node keys, so its message says it is blocked
    // until approved again.
    let mut rekeyed = devices.clone();
    rekeyed[1].node_key = NodeKey("nodekey:swapped".into());
    let (out2, _, _) = pass_outcome(
        &known,
        &Health::default(),
        Ok(&snapshot(&rekeyed[..3], &users)),
        None,
        &policy,
        now(),
    );
    let e = out2
        .events
        .iter()
        .find(|e| e.kind == EventKind::DeviceRekeyed)
        .unwrap();
    assert!(e.fix.contains("guard approve nA"), "{}", e.fix);
    // A route added to a known device: it waits for the next approval, and the message says so.
    let mut routed = devices.clone();
    routed[1].routes = vec!["10.5.0.0/16".into()];
    let (out3, _, _) = pass_outcome(
        &known,
        &Health::default(),
        Ok(&snapshot(&routed[..3], &users)),
        None,
        &policy,
        now(),
    );
    let e = out3
        .events
        .iter()
        .find(|e| e.kind == EventKind::DeviceRoutesChanged)
        .unwrap();
    assert!(
        e.fix
            .contains("dropped here until you run `sudo tailscale-monitor guard approve nA`"),
        "{}",
        e.fix
    );
    // Without the guard, nothing of it.
    let (out, _, _) = pass_outcome(
        &known,
        &Health::default(),
        Ok(&snapshot(&devices, &users)),
        None,
        &Policy::default(),
        now(),
    );
    assert!(out.guard.is_none());
    assert!(out
        .events
        .iter()
        .all(|e| e.fix.is_empty() && e.kind != EventKind::GuardApproved));
}
