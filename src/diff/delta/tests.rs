//! The delta against the full pass: over random tailnets and random `PeersChanged` sequences,
//! wherever the delta decides, it says what a full pass of the patched tailnet says, records the
//! same devices, and leaves the periodic full pass (`reconcile`) nothing to find.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;

use super::{delta, Declined, Delta};
use crate::diff::{pass_outcome, Policy};
use crate::model::access::{DstPorts, FilterRule, NodeView, SshPrincipal, SshRule};
use crate::model::guard::{ApproveNew, Selector};
use crate::model::presence::Watch;
use crate::model::state::Known;
use crate::model::{Device, Health, NodeKey, Severity, Snapshot, StableNodeId, User, UserId};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Known users are 1..=3; user 4 appears only with a join (the bus carries no profile).
const USERS: i64 = 4;

fn user(id: i64) -> User {
    User {
        id: UserId(id),
        login: format!("user{id}@example.com"),
        display_name: format!("User {id}"),
    }
}

/// One device's facts, from a few small choices (so that changes collide: same hostnames, the
/// addresses the filter names, the tag a watch names).
#[derive(Debug, Clone)]
struct Facts {
    host: u8,
    user: i64,
    ip: u8,
    key: u8,
    tags: u8,
    routes: u8,
    expiry: u8,
}

fn facts() -> impl Strategy<Value = Facts> {
    (0..6u8, 1..=3i64, 1..40u8, 0..4u8, 0..4u8, 0..3u8, 0..4u8).prop_map(
        |(host, user, ip, key, tags, routes, expiry)| Facts {
            host,
            user,
            ip,
            key,
            tags,
            routes,
            expiry,
        },
    )
}

fn device(id: &str, f: &Facts) -> Device {
    let tags = [("tag:a", 1), ("tag:w", 2)]
        .into_iter()
        .filter(|(_, bit)| f.tags & bit != 0)
        .map(|(t, _)| t.to_owned())
        .collect();
    let routes = match f.routes {
        0 => vec![],
        1 => vec!["10.0.0.0/8".to_owned()],
        _ => vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()],
    };
    Device {
        id: StableNodeId(id.into()),
        node_id: None,
        node_key: NodeKey(format!("nodekey:{id}-{}", f.key)),
        hostname: format!("host{}", f.host),
        dns_name: format!("host{}.tail.ts.net.", f.host),
        os: "linux".into(),
        user_id: UserId(f.user),
        addresses: vec![format!("100.64.0.{}", f.ip)],
        tags,
        exit_node: f.routes == 2,
        routes,
        key_expiry: match f.expiry {
            0 => None,
            1 => Some(now() + Duration::days(3)),
            2 => Some(now() + Duration::days(90)),
            _ => Some(now() - Duration::days(1)),
        },
        expired: f.expiry == 3,
        created: None,
        is_self: false,
        shared: false,
    }
}

/// One bus message: the peers it carries.
#[derive(Debug, Clone)]
enum Change {
    /// A new device (its user may be one the monitor has never seen).
    Join { facts: Facts, user: i64 },
    /// An existing device (by index, modulo the tailnet) with new facts.
    Update { which: usize, facts: Facts },
    /// An existing device as it is: presence only.
    Same { which: usize },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (facts(), 1..=USERS).prop_map(|(facts, user)| Change::Join { facts, user }),
        (any::<usize>(), facts()).prop_map(|(which, facts)| Change::Update { which, facts }),
        any::<usize>().prop_map(|which| Change::Same { which }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    start: Vec<Facts>,
    /// Single addresses the packet filter names as sources, and one SSH principal's address.
    filter_ips: Vec<u8>,
    ssh_ip: Option<u8>,
    watch: bool,
    guard: bool,
    messages: Vec<Vec<Change>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(facts(), 1..10),
        prop::collection::vec(1..40u8, 0..3),
        prop::option::of(1..40u8),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(prop::collection::vec(change(), 1..4), 1..16),
    )
        .prop_map(|(start, filter_ips, ssh_ip, watch, guard, messages)| Case {
            start,
            filter_ips,
            ssh_ip,
            watch,
            guard,
            messages,
        })
}

fn view(c: &Case) -> NodeView {
    let mut srcs = vec!["100.64.0.0/10".to_owned()];
    srcs.extend(c.filter_ips.iter().map(|ip| format!("100.64.0.{ip}/32")));
    NodeView {
        rules: Some(vec![FilterRule {
            srcs,
            dsts: vec![DstPorts {
                ip: "100.64.0.100".into(),
                first: 22,
                last: 22,
            }],
            protos: vec![],
            caps: vec![],
        }]),
        ssh: c.ssh_ip.map(|ip| {
            vec![SshRule {
                principals: vec![SshPrincipal::NodeIp(format!("100.64.0.{ip}"))],
                users: BTreeMap::from([("root".to_owned(), "root".to_owned())]),
                action: Default::default(),
                recorded: false,
            }]
        }),
        ..NodeView::default()
    }
}

fn policy(c: &Case) -> Policy {
    let mut p = Policy::default();
    if c.watch {
        p.watches = vec![Watch {
            name: "prod".into(),
            devices: vec!["tag:w".into()],
            offline_after: Duration::minutes(5),
            back_after: Duration::zero(),
            severity: Severity::Warning,
            schedule: None,
        }];
    }
    if c.guard {
        p.guard = Some(ApproveNew::Matching(vec![Selector::Tag("tag:a".into())]));
    }
    p
}

fn snapshot(c: &Case) -> Snapshot {
    let mut self_dev = device("self", &c.start[0]);
    self_dev.addresses = vec!["100.64.0.100".into()];
    self_dev.is_self = true;
    self_dev.user_id = UserId(1);
    let mut s = Snapshot {
        taken_at: now(),
        tailnet: "example.com".into(),
        self_id: self_dev.id.clone(),
        node: Some(view(c)),
        ..Snapshot::default()
    };
    s.devices.insert(self_dev.id.clone(), self_dev);
    for (i, f) in c.start.iter().enumerate() {
        let d = device(&format!("n{i}"), f);
        s.devices.insert(d.id.clone(), d);
    }
    for u in 1..USERS {
        s.users.insert(UserId(u), user(u));
    }
    s
}

/// What a full pass records, as the store applies it.
fn full(known: &mut Known, snap: &Snapshot, policy: &Policy) -> Vec<crate::model::Event> {
    let (out, _, seen) = pass_outcome(known, &Health::default(), Ok(snap), None, policy, now());
    known.apply(&out, seen);
    out.events
}

fn run_case(c: &Case) -> Result<usize, TestCaseError> {
    let policy = policy(c);
    let mut snap = snapshot(c);
    let mut by_full = Known::default();
    full(&mut by_full, &snap, &policy);
    // A second pass settles what the baseline leaves to the next one (presence, access).
    full(&mut by_full, &snap, &policy);
    let mut by_delta = by_full.clone();
    let health = Health::default();
    let mut applied = 0;
    for (step, message) in c.messages.iter().enumerate() {
        let peers: Vec<Device> = message
            .iter()
            .enumerate()
            .map(|(k, ch)| {
                let existing: Vec<&Device> = snap.devices.values().filter(|d| !d.is_self).collect();
                match ch {
                    Change::Join { facts, user } => {
                        let mut f = facts.clone();
                        f.user = *user;
                        device(&format!("j{step}-{k}"), &f)
                    }
                    Change::Update { which, facts } => {
                        let d = existing[which % existing.len()];
                        device(&d.id.0, facts)
                    }
                    Change::Same { which } => existing[which % existing.len()].clone(),
                }
            })
            .collect();
        // The full pass reads the tailnet as it now is; a new user comes with a profile.
        let mut next = snap.clone();
        for d in &peers {
            next.devices.insert(d.id.clone(), d.clone());
            next.users
                .entry(d.user_id)
                .or_insert_with(|| user(d.user_id.0));
        }
        let expected = full(&mut by_full, &next, &policy);
        let view = next.node.clone();
        let d = Delta {
            peers: &peers,
            tailnet: &snap.tailnet,
            view: view.as_ref(),
        };
        match delta(&by_delta, &health, &d, &policy, now()) {
            Ok(out) => {
                applied += 1;
                prop_assert_eq!(&out.events, &expected, "step {}: {:?}", step, message);
                by_delta.apply(&out, false);
            }
            Err(why) => {
                prop_assert!(
                    why != Declined::NoBaseline && why != Declined::SourceDown,
                    "{:?}",
                    why
                );
                full(&mut by_delta, &next, &policy);
            }
        }
        prop_assert_eq!(&by_delta.devices, &by_full.devices, "step {}", step);
        prop_assert_eq!(&by_delta.users, &by_full.users, "step {}", step);
        snap = next;
    }
    // The reconcile: a full pass of the tailnet as it is finds nothing the deltas left.
    let (left, _, _) = pass_outcome(&by_delta, &health, Ok(&snap), None, &policy, now());
    prop_assert_eq!(&left.events, &Vec::new(), "the reconcile found events");
    prop_assert!(left.devices.is_empty(), "{:?}", left.devices);
    Ok(applied)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_delta_says_what_a_full_pass_says(c in case()) {
        run_case(&c)?;
    }
}

/// The property is not vacuous: an ordinary join (a known owner, an address no rule names) is
/// decided by the delta, and the cases above take the delta path often.
#[test]
fn a_join_of_a_known_owner_is_decided_by_the_delta() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut cases, mut applied) = (0, 0);
    for _ in 0..200 {
        let c = case().new_tree(&mut runner).unwrap().current();
        applied += run_case(&c).unwrap();
        cases += c.messages.len();
    }
    assert!(
        applied * 4 > cases,
        "the delta decided {applied} of {cases} messages"
    );
    let c = Case {
        start: vec![Facts {
            host: 0,
            user: 1,
            ip: 1,
            key: 0,
            tags: 0,
            routes: 0,
            expiry: 2,
        }],
        filter_ips: vec![],
        ssh_ip: None,
        watch: false,
        guard: true,
        messages: vec![],
    };
    let policy = policy(&c);
    let snap = snapshot(&c);
    let mut known = Known::default();
    full(&mut known, &snap, &policy);
    let joiner = device(
        "j",
        &Facts {
            host: 0,
            user: 2,
            ip: 9,
            key: 0,
            tags: 0,
            routes: 1,
            expiry: 2,
        },
    );
    let v = view(&c);
    let d = Delta {
        peers: std::slice::from_ref(&joiner),
        tailnet: "example.com",
        view: Some(&v),
    };
    let out = delta(&known, &Health::default(), &d, &policy, now()).unwrap();
    let kinds: Vec<_> = out.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["device.new"]);
    assert!(
        out.events[0].fix.contains("guard approve j"),
        "{}",
        out.events[0].fix
    );
    assert_eq!(out.events[0].tailnet, "example.com");
    // Declined, each for its reason.
    let mut stranger = joiner.clone();
    stranger.user_id = UserId(9);
    let d = Delta {
        peers: std::slice::from_ref(&stranger),
        ..d
    };
    assert_eq!(
        delta(&known, &Health::default(), &d, &policy, now()),
        Err(Declined::UnknownOwner)
    );
    let mut named = joiner.clone();
    named.addresses = vec!["100.64.0.7".into()];
    let mut c2 = c.clone();
    c2.filter_ips = vec![7];
    let v2 = view(&c2);
    let d = Delta {
        peers: std::slice::from_ref(&named),
        view: Some(&v2),
        ..d
    };
    assert_eq!(
        delta(&known, &Health::default(), &d, &policy, now()),
        Err(Declined::NamedByAccess)
    );
    let down = Health {
        down_since: Some(now()),
        ..Health::default()
    };
    assert_eq!(
        delta(&known, &down, &d, &policy, now()),
        Err(Declined::SourceDown)
    );
    assert_eq!(
        delta(&Known::default(), &Health::default(), &d, &policy, now()),
        Err(Declined::NoBaseline)
    );
}
