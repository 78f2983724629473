//! The access model and its events against small netmaps and snapshots.

use super::*;

use chrono::{DateTime, Utc};

use crate::model::access::{SshAction, SshPrincipal};
use crate::model::event_kind::EventKind;
use crate::model::{Device, Event};

use crate::diff::{diff, Known, Policy};
use crate::model::access::{DstPorts, FilterRule, SshRule, TailnetLock};
use crate::model::{NodeKey, Severity, User, UserId};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn dev(id: &str, host: &str, user: i64, n: u8) -> Device {
    Device {
        id: StableNodeId(id.into()),
        node_id: None,
        node_key: NodeKey(format!("nodekey:{id}")),
        hostname: host.into(),
        dns_name: String::new(),
        os: "linux".into(),
        user_id: UserId(user),
        addresses: vec![format!("100.64.0.{n}"), format!("fd7a:115c:a1e0::{n}")],
        tags: vec![],
        routes: vec![],
        exit_node: false,
        key_expiry: None,
        expired: false,
        created: None,
        is_self: id == "nSELF",
        shared: false,
    }
}

fn snap(rules: Vec<FilterRule>, ssh: Option<Vec<SshRule>>) -> Snapshot {
    let devices = [
        dev("nSELF", "web-01", 1, 1),
        dev("nALICE", "alice-pc", 1, 2),
        dev("nMAL", "mallory-pc", 7, 3),
    ];
    Snapshot {
        self_id: StableNodeId("nSELF".into()),
        devices: devices.iter().map(|d| (d.id.clone(), d.clone())).collect(),
        users: [(1, "alice@"), (7, "mallory@")]
            .into_iter()
            .map(|(id, l)| {
                (
                    UserId(id),
                    User {
                        id: UserId(id),
                        login: l.into(),
                        display_name: l.into(),
                    },
                )
            })
            .collect(),
        node: Some(NodeView {
            rules: Some(rules),
            ssh,
            ..NodeView::default()
        }),
        ..Snapshot::default()
    }
}

fn rule(srcs: &[&str], ports: &[(u16, u16)], protos: &[u8]) -> FilterRule {
    FilterRule {
        srcs: srcs.iter().map(|s| s.to_string()).collect(),
        dsts: ports
            .iter()
            .flat_map(|&(first, last)| {
                ["100.64.0.1", "fd7a:115c:a1e0::1"].map(|ip| DstPorts {
                    ip: ip.into(),
                    first,
                    last,
                })
            })
            .collect(),
        protos: protos.to_vec(),
        caps: vec![],
    }
}

fn ssh(p: SshPrincipal, user: &str, local: &str, action: SshAction) -> SshRule {
    SshRule {
        principals: vec![p],
        users: [(user.to_owned(), local.to_owned())].into(),
        action,
        recorded: false,
    }
}

/// The events between two snapshots (same devices), through the whole core (`diff`).
fn between(a: &Snapshot, b: &Snapshot) -> Vec<Event> {
    let known = Known {
        baseline_done: true,
        access: a.node.as_ref().map(|v| canonical(v, a)),
        control: None,
        presence: None,
        tailnet_id: None,
        devices: a
            .devices
            .values()
            .map(|d| {
                let k = crate::model::state::KnownDevice {
                    device: d.clone(),
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: false,
                };
                (d.id.clone(), k)
            })
            .collect(),
        users: a
            .users
            .values()
            .map(|u| {
                let k = crate::model::state::KnownUser {
                    user: u.clone(),
                    removed: false,
                };
                (u.id, k)
            })
            .collect(),
    };
    diff(&known, b, &Policy::default(), now()).events
}

fn kinds(ev: &[Event]) -> Vec<&str> {
    ev.iter().map(|e| e.kind.as_str()).collect()
}

const MAL4: &str = "100.64.0.3";
const MAL6: &str = "fd7a:115c:a1e0::3";
const ALICE: &str = "100.64.0.2";

#[test]
fn a_new_source_is_widened_naming_user_device_and_port() {
    let a = snap(vec![rule(&[ALICE], &[(22, 22)], &[6])], None);
    let b = snap(
        vec![
            rule(&[ALICE], &[(22, 22)], &[6]),
            rule(&[MAL4, MAL6], &[(22, 22)], &[6]),
        ],
        None,
    );
    let ev = between(&a, &b);
    assert_eq!(kinds(&ev), ["access.widened"]);
    let e = &ev[0];
    assert_eq!(e.severity, Severity::Critical);
    assert!(
        e.summary
            .starts_with("mallory@ (mallory-pc, 100.64.0.3) may now reach this server on tcp 22"),
        "{}",
        e.summary
    );
    assert!(e.summary.contains("SSH port 22"), "{}", e.summary);
    assert_eq!(e.device.as_ref().unwrap().hostname, "mallory-pc");
    assert_eq!(e.user.as_ref().unwrap().login, "mallory@");
    assert_eq!(e.changes[0].old, "nothing");
    assert_eq!(e.changes[0].new, "22");
    // and back: narrowed, info
    let ev = between(&b, &a);
    assert_eq!(kinds(&ev), ["access.narrowed"]);
    assert_eq!(ev[0].severity, Severity::Info);
}

#[test]
fn ipv4_and_ipv6_of_one_device_are_one_grant() {
    let v4 = snap(vec![rule(&[MAL4], &[(443, 443)], &[6])], None);
    let both = snap(vec![rule(&[MAL4, MAL6], &[(443, 443)], &[6])], None);
    let v6 = snap(vec![rule(&[MAL6], &[(443, 443)], &[6])], None);
    assert!(between(&v4, &both).is_empty());
    assert!(between(&both, &v6).is_empty());
    let model = canonical(both.node.as_ref().unwrap(), &both);
    assert_eq!(model.reach.len(), 1, "{model:?}");
    // ICMPv4 and ICMPv6 too.
    let icmp4 = snap(vec![rule(&[MAL4], &[(0, 65535)], &[1])], None);
    let icmp6 = snap(vec![rule(&[MAL6], &[(0, 65535)], &[58])], None);
    assert!(between(&icmp4, &icmp6).is_empty());
}

#[test]
fn port_ranges_merge_and_split() {
    let split = snap(
        vec![
            rule(&[ALICE], &[(22, 22)], &[6]),
            rule(&[ALICE], &[(23, 80)], &[6]),
        ],
        None,
    );
    let merged = snap(vec![rule(&[ALICE], &[(22, 80)], &[6])], None);
    assert!(
        between(&split, &merged).is_empty(),
        "same ports, other rules"
    );
    let m = canonical(merged.node.as_ref().unwrap(), &merged);
    assert_eq!(m.reach[0].ports, vec![(22, 80)]);
    // 23 closes: narrowed only.
    let hole = snap(
        vec![
            rule(&[ALICE], &[(22, 22)], &[6]),
            rule(&[ALICE], &[(24, 80)], &[6]),
        ],
        None,
    );
    let ev = between(&merged, &hole);
    assert_eq!(kinds(&ev), ["access.narrowed"]);
    assert_eq!(ev[0].changes[0].new, "22, 24-80");
    // Growing one range is widened with old → new.
    let wider = snap(vec![rule(&[ALICE], &[(22, 443)], &[6])], None);
    let ev = between(&merged, &wider);
    assert_eq!(kinds(&ev), ["access.widened"]);
    assert_eq!(
        (ev[0].changes[0].old.as_str(), ev[0].changes[0].new.as_str()),
        ("22-80", "22-443")
    );
    assert!(!ev[0].summary.contains("SSH port"), "22 was open before");
}

#[test]
fn a_star_source_and_a_range_over_well_known_ports_are_named() {
    let a = snap(vec![], None);
    let b = snap(vec![rule(&["*"], &[(1, 6000)], &[])], None);
    let ev = between(&a, &b);
    assert_eq!(kinds(&ev), ["access.widened"]);
    let s = &ev[0].summary;
    for want in [
        "any device (*)",
        "ANY source (*)",
        "SSH port 22",
        "RDP port 3389",
        "VNC port 5900",
        "this server on tcp 1-6000",
        "this server on udp 1-6000",
        "this server by icmp",
    ] {
        assert!(s.contains(want), "{want} in {s}");
    }
    // 0.0.0.0/0 and ::/0 are the same "any"; the tailnet range is named as such.
    let c = snap(vec![rule(&["0.0.0.0/0", "::/0"], &[(1, 6000)], &[])], None);
    assert!(between(&b, &c).is_empty());
    let t = snap(
        vec![rule(
            &["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
            &[(80, 80)],
            &[6],
        )],
        None,
    );
    let m = canonical(t.node.as_ref().unwrap(), &t);
    assert_eq!(m.reach.len(), 1);
    assert!(m.reach[0].who.label.contains("every device in the tailnet"));
    let sub = snap(vec![rule(&["10.0.0.0/8"], &[(80, 80)], &[6])], None);
    let m = canonical(sub.node.as_ref().unwrap(), &sub);
    assert_eq!(m.reach[0].who.label, "subnet 10.0.0.0/8");
}

#[test]
fn ssh_check_vs_accept_and_root() {
    let mal = || SshPrincipal::NodeIp(MAL4.into());
    let none = snap(vec![], None);
    let check = snap(
        vec![],
        Some(vec![ssh(mal(), "root", "root", SshAction::Check)]),
    );
    let accept = snap(
        vec![],
        Some(vec![ssh(mal(), "root", "root", SshAction::Accept)]),
    );
    let ev = between(&none, &check);
    assert_eq!(kinds(&ev), ["access.ssh_widened"]);
    assert!(
        ev[0].summary.contains("including ROOT"),
        "{}",
        ev[0].summary
    );
    assert!(
        ev[0].summary.contains("as root (check)"),
        "{}",
        ev[0].summary
    );
    let ev = between(&check, &accept);
    assert_eq!(
        kinds(&ev),
        ["access.ssh_widened"],
        "check → accept skips re-auth"
    );
    assert_eq!(ev[0].changes[0].old, "as root (check)");
    assert_eq!(ev[0].changes[0].new, "as root (accept)");
    assert_eq!(kinds(&between(&accept, &check)), ["access.narrowed"]);
    // IPv4 and IPv6 principals of one device: one grant.
    let both = snap(
        vec![],
        Some(vec![SshRule {
            principals: vec![mal(), SshPrincipal::NodeIp(MAL6.into())],
            users: [("root".to_owned(), "root".to_owned())].into(),
            action: SshAction::Accept,
            recorded: false,
        }]),
    );
    assert!(between(&accept, &both).is_empty());
    // A new local user (not root) for the same principal.
    let ubuntu = snap(
        vec![],
        Some(vec![
            ssh(mal(), "root", "root", SshAction::Accept),
            ssh(mal(), "ubuntu", "ubuntu", SshAction::Accept),
        ]),
    );
    let ev = between(&accept, &ubuntu);
    assert_eq!(kinds(&ev), ["access.ssh_widened"]);
    assert!(!ev[0].summary.contains("ROOT"), "{}", ev[0].summary);
    // "*" mapped to the same name includes root; an empty mapping matches nobody.
    let star = snap(
        vec![],
        Some(vec![ssh(SshPrincipal::Any, "*", "=", SshAction::Accept)]),
    );
    let ev = between(&none, &star);
    assert!(ev[0].summary.contains("ROOT") && ev[0].summary.contains("ANY source"));
    let nobody = snap(
        vec![],
        Some(vec![ssh(mal(), "root", "", SshAction::Accept)]),
    );
    assert!(between(&none, &nobody).is_empty());
}

#[test]
fn a_push_that_changes_nothing_for_this_node_is_silent() {
    let a = snap(
        vec![
            rule(&[ALICE], &[(22, 22)], &[6]),
            rule(&[MAL4], &[(443, 443)], &[6]),
        ],
        Some(vec![ssh(
            SshPrincipal::NodeIp(ALICE.into()),
            "root",
            "root",
            SshAction::Check,
        )]),
    );
    // Reordered, duplicated, and with a rule for another server's address.
    let mut other = rule(&["*"], &[(80, 80)], &[6]);
    other.dsts = vec![DstPorts {
        ip: "100.64.0.9".into(),
        first: 80,
        last: 80,
    }];
    let mut b = a.clone();
    if let Some(v) = b.node.as_mut() {
        let r = v.rules.as_mut().unwrap();
        r.reverse();
        r.push(rule(&[ALICE], &[(22, 22)], &[6]));
    }
    assert!(between(&a, &b).is_empty());
    // A rule toward another host is a different target, not "this server".
    if let Some(v) = b.node.as_mut() {
        v.rules.as_mut().unwrap().push(other);
    }
    let ev = between(&a, &b);
    assert_eq!(kinds(&ev), ["access.widened"]);
    assert!(
        ev[0].summary.contains("host 100.64.0.9"),
        "{}",
        ev[0].summary
    );
}

#[test]
fn capability_grants_and_unknown_models() {
    let mut with_cap = rule(&[MAL4], &[], &[]);
    with_cap.caps = vec![crate::model::access::CapGrant {
        dsts: vec!["100.64.0.1/32".into()],
        caps: vec!["https://tailscale.com/cap/debug-peer".into()],
    }];
    let a = snap(vec![], None);
    let b = snap(vec![with_cap], None);
    let ev = between(&a, &b);
    assert_eq!(kinds(&ev), ["access.capability_granted"]);
    assert_eq!(ev[0].severity, Severity::Warning);
    assert!(ev[0].summary.contains("debug-peer"), "{}", ev[0].summary);

    // A netmap without a filter we know: no comparison, no false "narrowed".
    let mut unknown = a.clone();
    unknown.node.as_mut().unwrap().rules = None;
    assert!(between(&b, &unknown).is_empty());
}

#[test]
fn a_source_only_the_netmap_lists_is_named_from_it() {
    let mut s = snap(vec![rule(&["100.64.0.9"], &[(22, 22)], &[6])], None);
    let m = canonical(s.node.as_ref().unwrap(), &s);
    assert_eq!(m.reach[0].who.key, "ip:100.64.0.9");
    s.node.as_mut().unwrap().peers = vec![crate::model::access::NetmapPeer {
        id: "nNEW".into(),
        hostname: "eve-pc".into(),
        owner: "eve@".into(),
        addresses: vec!["100.64.0.9".into(), "fd7a:115c:a1e0::9".into()],
    }];
    let m = canonical(s.node.as_ref().unwrap(), &s);
    assert_eq!(
        m.reach[0].who.key, "node:nNEW",
        "the same key /status will give"
    );
    assert_eq!(m.reach[0].who.label, "eve@ (eve-pc, 100.64.0.9)");
}

#[test]
fn trust_signals() {
    let lock = |enabled, keys: &[&str]| {
        Some(TailnetLock {
            enabled,
            trusted_keys: keys.iter().map(|k| k.to_string()).collect(),
        })
    };
    let base = NodeTrust {
        tailnet_lock: lock(true, &["tlpub:a"]),
        ssh_server: Some(false),
        advertised_routes: Some(vec![]),
        update_available: None,
        remote_config: Some(false),
        ..NodeTrust::default()
    };
    let ev = trust_events(
        &base,
        &NodeTrust {
            tailnet_lock: lock(false, &[]),
            ..base.clone()
        },
        now(),
    );
    assert_eq!(kinds(&ev), ["node.tailnet_lock_disabled"]);
    assert_eq!(ev[0].severity, Severity::Critical);
    let ev = trust_events(
        &base,
        &NodeTrust {
            tailnet_lock: lock(true, &["tlpub:a", "tlpub:evil"]),
            ssh_server: Some(true),
            advertised_routes: Some(vec!["0.0.0.0/0".into(), "::/0".into()]),
            update_available: Some("1.104.0".into()),
            remote_config: Some(true),
            ..NodeTrust::default()
        },
        now(),
    );
    assert_eq!(
        kinds(&ev),
        [
            "node.tailnet_lock_changed",
            "node.ssh_changed",
            "node.routes_changed",
            "node.remote_config",
            "node.update_available"
        ]
    );
    assert!(ev
        .iter()
        .all(|e| e.severity == Severity::Warning || e.kind == EventKind::NodeRemoteConfig));
    assert_eq!(ev[3].severity, Severity::Critical);
    assert!(ev[2].summary.contains("exit node"), "{}", ev[2].summary);
    // Unknown on one side: nothing.
    assert!(trust_events(&base, &NodeTrust::default(), now()).is_empty());
}

#[test]
fn baseline_lists_who_can_reach_this_server() {
    let s = snap(
        vec![rule(&[MAL4, MAL6], &[(22, 22)], &[6])],
        Some(vec![ssh(
            SshPrincipal::UserLogin("alice@".into()),
            "root",
            "root",
            SshAction::Check,
        )]),
    );
    let out = diff(&Known::default(), &s, &Policy::default(), now());
    let rows = out.events[0].access.clone().expect("access rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .any(|r| r.who.contains("mallory-pc") && r.ports == "tcp 22"));
    assert!(rows
        .iter()
        .any(|r| r.who.contains("alice@") && r.ssh == "root (check)"));
    assert!(out.access.is_some());
}

/// A device that leaves this node's peer list while an SSH rule still names its addresses keeps
/// its grant under its own name: no "may now SSH" for its bare addresses, no "narrowed" for it
/// (seen on real headscale and tailscaled 1.104.2 under load: the peer went before the policy).
#[test]
fn a_device_that_leaves_the_peer_list_keeps_its_grants_under_its_name() {
    let grant = || {
        Some(vec![SshRule {
            principals: vec![
                SshPrincipal::NodeIp(MAL4.into()),
                SshPrincipal::NodeIp(MAL6.into()),
            ],
            users: [("root".to_owned(), "root".to_owned())].into(),
            action: SshAction::Accept,
            recorded: false,
        }])
    };
    let before = snap(vec![], grant());
    let mut after = snap(vec![], grant());
    after.devices.remove(&StableNodeId("nMAL".into()));
    let ev = between(&before, &after);
    assert_eq!(kinds(&ev), ["device.removed"], "{ev:#?}");
}

/// Headscale can send a policy change before the peer it opens to: the widening is alerted under
/// the bare address, and the peer's arrival a moment later is the same grant, not another one.
#[test]
fn a_source_named_by_address_then_by_its_device_is_one_grant() {
    let open = || vec![rule(&[MAL4, MAL6], &[(22, 22)], &[6])];
    let mut none = snap(vec![], None);
    none.devices.remove(&StableNodeId("nMAL".into()));
    let mut early = snap(open(), None);
    early.devices.remove(&StableNodeId("nMAL".into()));
    let ev = between(&none, &early);
    assert_eq!(kinds(&ev), ["access.widened", "access.widened"], "{ev:#?}");
    assert!(
        ev[0].summary.contains("no device this server knows"),
        "{}",
        ev[0].summary
    );
    let named = snap(open(), None);
    let ev = between(&early, &named);
    assert_eq!(kinds(&ev), ["device.new"], "{ev:#?}");
}
