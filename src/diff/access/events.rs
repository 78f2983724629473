//! Two access models compared by principal, target and protocol: `access.*` events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::diff::access::ports::{merge, subtract};
use crate::diff::access::THIS_SERVER;
use crate::model::access::{
    ports_text, ssh_action_text, Access, Principal, Reach, SshAction, SshGrant,
};
use crate::model::event_kind::EventKind;
use crate::model::{Change, Event, Snapshot, StableNodeId};

/// Ports whose opening is called out by name.
pub(super) const WELL_KNOWN: [(u16, &str); 3] = [(22, "SSH"), (3389, "RDP"), (5900, "VNC")];

pub(super) fn callouts(who: &Principal, added: &[(u16, u16)]) -> String {
    let mut notes: Vec<String> = Vec::new();
    if who.is_any() {
        notes.push("ANY source (*)".into());
    }
    for (port, name) in WELL_KNOWN {
        if added.iter().any(|&(a, b)| a <= port && port <= b) {
            notes.push(format!("{name} port {port}"));
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!(" — {}", notes.join(", "))
    }
}

pub(super) fn ranges_or_nothing(v: Option<&Vec<(u16, u16)>>) -> String {
    match v {
        Some(p) if !p.is_empty() => ports_text(p),
        _ => "nothing".into(),
    }
}

pub(super) fn ssh_text(g: Option<&SshGrant>) -> String {
    match g {
        None => "no".into(),
        Some(g) => {
            let mut s = format!("as {} ({}", g.local_user_text(), ssh_action_text(g.action));
            if g.recorded {
                s.push_str(", recorded");
            }
            s.push(')');
            s
        }
    }
}

/// A grant is wider when it lets in where it did not, skips a check, or stops recording.
pub(super) fn ssh_rank(g: Option<&SshGrant>) -> (SshAction, bool) {
    g.map_or((SshAction::Reject, false), |g| (g.action, !g.recorded))
}

pub(super) struct PerPrincipal<'a> {
    who: &'a Principal,
    /// "this server on tcp 443" for each widening.
    opened: Vec<String>,
    widened: Vec<Change>,
    added: Vec<(u16, u16)>,
    narrowed: Vec<Change>,
    ssh_widened: Vec<Change>,
    root: bool,
}

/// The events between two access models of this node (both `known`).
pub fn events(old: &Access, new: &Access, snap: &Snapshot, now: DateTime<Utc>) -> Vec<Event> {
    let mut out = Vec::new();
    let mut per: BTreeMap<&str, PerPrincipal> = BTreeMap::new();
    pub(super) fn slot<'a, 'b>(
        per: &'b mut BTreeMap<&'a str, PerPrincipal<'a>>,
        who: &'a Principal,
    ) -> &'b mut PerPrincipal<'a> {
        per.entry(&who.key).or_insert_with(|| PerPrincipal {
            who,
            opened: vec![],
            widened: vec![],
            added: vec![],
            narrowed: vec![],
            ssh_widened: vec![],
            root: false,
        })
    }

    let key = |r: &Reach| (r.who.key.clone(), r.target.clone(), r.proto.clone());
    let old_reach: BTreeMap<_, &Reach> = old.reach.iter().map(|r| (key(r), r)).collect();
    let new_reach: BTreeMap<_, &Reach> = new.reach.iter().map(|r| (key(r), r)).collect();
    for (k, n) in &new_reach {
        let o = old_reach.get(k).map(|o| &o.ports);
        let added = subtract(&n.ports, o.map_or(&[][..], |v| v.as_slice()));
        let removed = o.map_or(vec![], |o| subtract(o, &n.ports));
        let field = format!("{} on {}", n.proto, n.target);
        let change = Change {
            field,
            old: ranges_or_nothing(o),
            new: ports_text(&n.ports),
        };
        if !added.is_empty() {
            let s = slot(&mut per, &n.who);
            if n.target == THIS_SERVER && n.proto != "icmp" {
                s.added.extend(&added);
            }
            s.opened.push(if n.proto == "icmp" {
                format!("{} by icmp", n.target)
            } else {
                format!("{} on {} {}", n.target, n.proto, ports_text(&added))
            });
            s.widened.push(change);
        } else if !removed.is_empty() {
            slot(&mut per, &n.who).narrowed.push(change);
        }
    }
    for (k, o) in &old_reach {
        if !new_reach.contains_key(k) {
            slot(&mut per, &o.who).narrowed.push(Change {
                field: format!("{} on {}", o.proto, o.target),
                old: ports_text(&o.ports),
                new: "nothing".into(),
            });
        }
    }

    let skey = |g: &SshGrant| (g.who.key.clone(), g.ssh_user.clone());
    let old_ssh: BTreeMap<_, &SshGrant> = old.ssh.iter().map(|g| (skey(g), g)).collect();
    let new_ssh: BTreeMap<_, &SshGrant> = new.ssh.iter().map(|g| (skey(g), g)).collect();
    let all: BTreeSet<_> = old_ssh.keys().chain(new_ssh.keys()).cloned().collect();
    for k in &all {
        let (o, n) = (old_ssh.get(k).copied(), new_ssh.get(k).copied());
        if o == n {
            continue;
        }
        let who = n.or(o).map(|g| &g.who).expect("one side exists");
        let change = Change {
            field: format!("ssh as {}", k.1),
            old: ssh_text(o),
            new: ssh_text(n),
        };
        let wider = ssh_rank(n) > ssh_rank(o)
            || (n.is_some_and(|n| n.action != SshAction::Reject)
                && o.is_some_and(|o| o.local_user != n.map_or("", |n| &n.local_user)));
        let s = slot(&mut per, who);
        if wider {
            s.root |= n.is_some_and(SshGrant::allows_root);
            s.ssh_widened.push(change);
        } else {
            s.narrowed.push(change);
        }
    }

    let device_of = |who: &Principal| {
        who.key
            .strip_prefix("node:")
            .and_then(|id| snap.devices.get(&StableNodeId(id.into())))
    };
    let attach = |e: &mut Event, who: &Principal| {
        if let Some(d) = device_of(who) {
            e.user = snap.users.get(&d.user_id).cloned();
            e.device = Some(d.clone());
        }
    };
    for p in per.values() {
        if !p.widened.is_empty() {
            let mut e = Event::new(
                EventKind::AccessWidened,
                now,
                format!(
                    "{} may now reach {}{}",
                    p.who.label,
                    p.opened.join("; "),
                    callouts(p.who, &merge(p.added.clone()))
                ),
            );
            e.changes = p.widened.clone();
            attach(&mut e, p.who);
            out.push(e);
        }
        if !p.ssh_widened.is_empty() {
            let what: Vec<&str> = p.ssh_widened.iter().map(|c| c.new.as_str()).collect();
            let root = if p.root { " — including ROOT" } else { "" };
            let any = if p.who.is_any() {
                " — ANY source (*)"
            } else {
                ""
            };
            let mut e = Event::new(
                EventKind::AccessSshWidened,
                now,
                format!(
                    "{} may now SSH into this server: {}{root}{any}",
                    p.who.label,
                    what.join("; ")
                ),
            );
            e.changes = p.ssh_widened.clone();
            attach(&mut e, p.who);
            out.push(e);
        }
        if !p.narrowed.is_empty() {
            let mut e = Event::new(
                EventKind::AccessNarrowed,
                now,
                format!("{} can reach less of this server", p.who.label),
            );
            e.changes = p.narrowed.clone();
            attach(&mut e, p.who);
            out.push(e);
        }
    }

    let old_caps: BTreeSet<(&str, &str)> = old
        .caps
        .iter()
        .map(|c| (c.who.key.as_str(), c.cap.as_str()))
        .collect();
    let mut granted: BTreeMap<&str, (&Principal, Vec<&str>)> = BTreeMap::new();
    for c in &new.caps {
        if !old_caps.contains(&(c.who.key.as_str(), c.cap.as_str())) {
            granted
                .entry(&c.who.key)
                .or_insert((&c.who, vec![]))
                .1
                .push(&c.cap);
        }
    }
    for (who, caps) in granted.values() {
        let mut e = Event::new(
            EventKind::AccessCapabilityGranted,
            now,
            format!(
                "{} was granted {} toward this server",
                who.label,
                caps.join(", ")
            ),
        );
        e.changes = caps
            .iter()
            .map(|c| Change {
                field: "capability".into(),
                old: "not granted".into(),
                new: (*c).to_owned(),
            })
            .collect();
        attach(&mut e, who);
        out.push(e);
    }

    out
}
