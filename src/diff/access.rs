//! Who may reach this server: the canonical access model and its events.
//!
//! [`canonical`] turns the node view (the packet filter and SSH policy tailscaled was told, raw)
//! into an [`Access`]: each source resolved to the device and user behind it through the snapshot
//! (or the `whois` label the edge looked up), the IPv4 and IPv6 forms of one device merged into
//! one principal, port ranges merged, everything sorted. [`events`] compares two models by
//! principal, target and protocol, so only a real difference for this node is an event: a policy
//! push that re-sends the same rules (headscale does on every reload) produces nothing.
//!
//! Pure: values in, values out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::model::access::{
    ports_text, ssh_action_text, Access, CapEntry, NetmapPeer, NodeTrust, NodeView, Principal,
    Reach, SshAction, SshGrant, SshPrincipal,
};
use crate::model::{Change, Device, Event, EventKind, Snapshot, StableNodeId};

/// The target name of ports on this server itself.
pub const THIS_SERVER: &str = "this server";

/// Ports whose opening is called out by name.
const WELL_KNOWN: [(u16, &str); 3] = [(22, "SSH"), (3389, "RDP"), (5900, "VNC")];

struct Resolver<'a> {
    snap: &'a Snapshot,
    by_ip: BTreeMap<IpAddr, &'a Device>,
    /// Peers of the netmap that `/status` did not list (the filter can arrive first).
    netmap_peers: BTreeMap<IpAddr, &'a NetmapPeer>,
    /// The netmap's peers by stable ID: their owner when `/status` lacks the user profile yet.
    netmap_by_id: BTreeMap<&'a str, &'a NetmapPeer>,
    self_ips: Vec<IpAddr>,
}

impl<'a> Resolver<'a> {
    fn new(snap: &'a Snapshot, view: &'a NodeView) -> Self {
        let mut by_ip = BTreeMap::new();
        for d in snap.devices.values() {
            for a in &d.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    by_ip.insert(ip, d);
                }
            }
        }
        let mut netmap_peers = BTreeMap::new();
        let netmap_by_id = view.peers.iter().map(|p| (p.id.as_str(), p)).collect();
        for p in &view.peers {
            for a in &p.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    netmap_peers.insert(ip, p);
                }
            }
        }
        let self_ips = snap
            .self_device()
            .map(|d| d.addresses.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        Resolver {
            snap,
            by_ip,
            netmap_peers,
            netmap_by_id,
            self_ips,
        }
    }

    fn device(&self, d: &Device) -> Principal {
        let owner = if d.tags.is_empty() {
            match self.snap.users.get(&d.user_id) {
                Some(u) => u.login.clone(),
                // tailscaled can list a new peer before its user profile; the netmap has both.
                None => self
                    .netmap_by_id
                    .get(d.id.0.as_str())
                    .map_or_else(|| format!("user {}", d.user_id), |p| p.owner.clone()),
            }
        } else {
            d.tags.join(", ")
        };
        let ip = d
            .addresses
            .iter()
            .find(|a| !a.contains(':'))
            .or(d.addresses.first())
            .map_or(String::new(), |a| format!(", {a}"));
        let me = if d.is_self { ", this server" } else { "" };
        Principal {
            key: format!("node:{}", d.id),
            label: format!("{owner} ({}{ip}{me})", d.display_name()),
        }
    }

    fn ip(&self, ip: IpAddr) -> Principal {
        if let Some(d) = self.by_ip.get(&ip) {
            return self.device(d);
        }
        if let Some(p) = self.netmap_peers.get(&ip) {
            let v4 = p
                .addresses
                .iter()
                .find(|a| !a.contains(':'))
                .unwrap_or(&p.addresses[0]);
            return Principal {
                key: format!("node:{}", p.id),
                label: format!("{} ({}, {v4})", p.owner, p.hostname),
            };
        }
        let label = match self.snap.ip_whois.get(&ip.to_string()) {
            Some(w) => format!("{ip} ({w})"),
            None => format!("{ip} (no device this server knows)"),
        };
        Principal {
            key: format!("ip:{ip}"),
            label,
        }
    }

    /// A `SrcIPs` entry as a principal.
    fn source(&self, src: &str) -> Principal {
        let any = || Principal {
            key: "*".into(),
            label: "any device (*)".into(),
        };
        if src == "*" {
            return any();
        }
        if let Some(cap) = src.strip_prefix("cap:") {
            return Principal {
                key: format!("cap:{cap}"),
                label: format!("devices with capability {cap}"),
            };
        }
        if let Ok(ip) = src.parse::<IpAddr>() {
            return self.ip(ip);
        }
        if let Ok(net) = src.parse::<IpNet>() {
            if net.prefix_len() == net.max_prefix_len() {
                return self.ip(net.addr());
            }
            if net.prefix_len() == 0 {
                return any();
            }
            let s = net.trunc().to_string();
            if s == "100.64.0.0/10" || s == "fd7a:115c:a1e0::/48" {
                return Principal {
                    key: "tailnet".into(),
                    label: "every device in the tailnet (100.64.0.0/10)".into(),
                };
            }
            return Principal {
                key: format!("cidr:{s}"),
                label: format!("subnet {s}"),
            };
        }
        if src.contains('-') {
            return Principal {
                key: format!("range:{src}"),
                label: format!("addresses {src}"),
            };
        }
        Principal {
            key: format!("raw:{src}"),
            label: format!("source {src}"),
        }
    }

    /// What a `DstPorts.IP` (or `CapGrant.Dsts`) entry names, from this node's point of view.
    fn target(&self, dst: &str) -> String {
        if dst == "*" {
            return THIS_SERVER.into();
        }
        if let Ok(ip) = dst.parse::<IpAddr>() {
            return if self.self_ips.contains(&ip) {
                THIS_SERVER.into()
            } else {
                format!("host {ip}")
            };
        }
        if let Ok(net) = dst.parse::<IpNet>() {
            if self.self_ips.iter().any(|ip| net.contains(ip)) {
                return THIS_SERVER.into();
            }
            return format!("subnet {}", net.trunc());
        }
        format!("range {dst}")
    }

    fn ssh_principal(&self, p: &SshPrincipal) -> Principal {
        match p {
            SshPrincipal::Any => self.source("*"),
            SshPrincipal::NodeIp(ip) => self.source(ip),
            SshPrincipal::Node(id) => match self.snap.devices.get(&StableNodeId(id.clone())) {
                Some(d) => self.device(d),
                None => Principal {
                    key: format!("node:{id}"),
                    label: format!("node {id} (not visible to this server)"),
                },
            },
            SshPrincipal::UserLogin(login) => Principal {
                key: format!("user:{login}"),
                label: format!("{login} (any of their devices)"),
            },
        }
    }
}

fn proto_names(protos: &[u8]) -> BTreeSet<String> {
    if protos.is_empty() {
        return ["tcp", "udp", "icmp"].map(String::from).into();
    }
    protos
        .iter()
        .map(|p| match p {
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            // ICMPv4 and ICMPv6 are one grant: the same rule in its two address families.
            1 | 58 => "icmp".to_owned(),
            132 => "sctp".to_owned(),
            n => format!("proto {n}"),
        })
        .collect()
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge(mut v: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `a` minus `b`, both merged.
fn subtract(a: &[(u16, u16)], b: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(mut lo, hi) in a {
        let mut done = false;
        for &(blo, bhi) in b {
            if bhi < lo || blo > hi {
                continue;
            }
            if blo > lo {
                out.push((lo, blo - 1));
            }
            if bhi >= hi {
                done = true;
                break;
            }
            lo = bhi + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

/// The canonical model of what this node was told.
pub fn canonical(view: &NodeView, snap: &Snapshot) -> Access {
    let r = Resolver::new(snap, view);
    let mut access = Access {
        known: view.rules.is_some(),
        trust: view.trust.clone(),
        ..Access::default()
    };
    type Key = (String, String, String);
    let mut reach: BTreeMap<Key, (Principal, Vec<(u16, u16)>)> = BTreeMap::new();
    let mut caps: BTreeSet<CapEntry> = BTreeSet::new();
    for rule in view.rules.iter().flatten() {
        let srcs: Vec<Principal> = rule.srcs.iter().map(|s| r.source(s)).collect();
        let protos = proto_names(&rule.protos);
        for d in &rule.dsts {
            let target = r.target(&d.ip);
            for p in &protos {
                let range = if p == "icmp" {
                    (0, 65535)
                } else {
                    (d.first.min(d.last), d.first.max(d.last))
                };
                for who in &srcs {
                    reach
                        .entry((who.key.clone(), target.clone(), p.clone()))
                        .or_insert_with(|| (who.clone(), Vec::new()))
                        .1
                        .push(range);
                }
            }
        }
        for g in &rule.caps {
            if !g.dsts.iter().any(|d| r.target(d) == THIS_SERVER) {
                continue;
            }
            for who in &srcs {
                for cap in &g.caps {
                    caps.insert(CapEntry {
                        who: who.clone(),
                        cap: cap.clone(),
                    });
                }
            }
        }
    }
    access.reach = reach
        .into_iter()
        .map(|((_, target, proto), (who, ports))| Reach {
            who,
            target,
            proto,
            ports: merge(ports),
        })
        .collect();
    access.caps = caps.into_iter().collect();

    // SSH: the first rule that maps a user for a principal decides (tailssh evaluates in order).
    let mut ssh: BTreeMap<(String, String), SshGrant> = BTreeMap::new();
    for rule in view.ssh.iter().flatten() {
        for p in &rule.principals {
            let who = r.ssh_principal(p);
            for (ssh_user, local) in &rule.users {
                if local.is_empty() {
                    continue;
                }
                ssh.entry((who.key.clone(), ssh_user.clone()))
                    .or_insert_with(|| SshGrant {
                        who: who.clone(),
                        ssh_user: ssh_user.clone(),
                        local_user: local.clone(),
                        action: rule.action,
                        recorded: rule.recorded,
                    });
            }
        }
    }
    access.ssh = ssh.into_values().collect();
    access
}

fn callouts(who: &Principal, added: &[(u16, u16)]) -> String {
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

fn ranges_or_nothing(v: Option<&Vec<(u16, u16)>>) -> String {
    match v {
        Some(p) if !p.is_empty() => ports_text(p),
        _ => "nothing".into(),
    }
}

fn ssh_text(g: Option<&SshGrant>) -> String {
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
fn ssh_rank(g: Option<&SshGrant>) -> (SshAction, bool) {
    g.map_or((SshAction::Reject, false), |g| (g.action, !g.recorded))
}

struct PerPrincipal<'a> {
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
    fn slot<'a, 'b>(
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

/// What to record after a pass that read `new`: each part as read where it could be, as last
/// recorded where it could not (an unread part is never recorded as empty or off).
pub fn merged(old: &Access, new: Access) -> Access {
    let trust = NodeTrust {
        tailnet_lock: new
            .trust
            .tailnet_lock
            .or_else(|| old.trust.tailnet_lock.clone()),
        ssh_server: new.trust.ssh_server.or(old.trust.ssh_server),
        advertised_routes: new
            .trust
            .advertised_routes
            .or_else(|| old.trust.advertised_routes.clone()),
        // From `/status`, read with the snapshot: `None` is "up to date", not "unknown".
        update_available: new.trust.update_available,
    };
    if new.known {
        Access { trust, ..new }
    } else {
        Access {
            trust,
            ..old.clone()
        }
    }
}

fn routes_text(r: &[String]) -> String {
    if r.is_empty() {
        "none".into()
    } else {
        r.join(", ")
    }
}

/// This node's own trust signals that changed (only where both sides could be read).
pub fn trust_events(old: &NodeTrust, new: &NodeTrust, now: DateTime<Utc>) -> Vec<Event> {
    let mut out = Vec::new();
    let ch = |field: &str, old: String, new: String| Change {
        field: field.into(),
        old,
        new,
    };
    if let (Some(o), Some(n)) = (&old.tailnet_lock, &new.tailnet_lock) {
        if o.enabled && !n.enabled {
            let mut e = Event::new(
                EventKind::NodeTailnetLockDisabled,
                now,
                "Tailnet Lock was disabled: the control plane can add nodes without a trusted signature",
            );
            e.changes = vec![ch("tailnet lock", "enabled".into(), "disabled".into())];
            out.push(e);
        } else if !o.enabled && n.enabled {
            let mut e = Event::new(
                EventKind::NodeTailnetLockChanged,
                now,
                "Tailnet Lock was enabled",
            );
            e.changes = vec![ch("tailnet lock", "disabled".into(), "enabled".into())];
            out.push(e);
        } else if o.trusted_keys != n.trusted_keys {
            let mut e = Event::new(
                EventKind::NodeTailnetLockChanged,
                now,
                "The Tailnet Lock trusted keys changed",
            );
            e.changes = vec![ch(
                "trusted keys",
                o.trusted_keys.join(", "),
                n.trusted_keys.join(", "),
            )];
            out.push(e);
        }
    }
    if let (Some(o), Some(n)) = (old.ssh_server, new.ssh_server) {
        if o != n {
            let on_off = |b: bool| if b { "on" } else { "off" }.to_owned();
            let mut e = Event::new(
                EventKind::NodeSshChanged,
                now,
                format!(
                    "The Tailscale SSH server on this node was turned {}",
                    on_off(n)
                ),
            );
            e.changes = vec![ch("tailscale ssh", on_off(o), on_off(n))];
            out.push(e);
        }
    }
    if let (Some(o), Some(n)) = (&old.advertised_routes, &new.advertised_routes) {
        if o != n {
            let summary = if new.is_exit_node() && !old.is_exit_node() {
                "This node now offers itself as an exit node".to_owned()
            } else {
                format!("This node now advertises routes: {}", routes_text(n))
            };
            let mut e = Event::new(EventKind::NodeRoutesChanged, now, summary);
            e.changes = vec![ch("advertised routes", routes_text(o), routes_text(n))];
            out.push(e);
        }
    }
    if let Some(v) = &new.update_available {
        if old.update_available.as_ref() != Some(v) {
            let mut e = Event::new(
                EventKind::NodeUpdateAvailable,
                now,
                format!("A newer tailscaled is available for this node: {v}"),
            );
            e.changes = vec![ch(
                "latest version",
                old.update_available
                    .clone()
                    .unwrap_or_else(|| "running the latest".into()),
                v.clone(),
            )];
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
                    let k = crate::diff::KnownDevice {
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
                    let k = crate::diff::KnownUser {
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
            e.summary.starts_with(
                "mallory@ (mallory-pc, 100.64.0.3) may now reach this server on tcp 22"
            ),
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
            },
            now(),
        );
        assert_eq!(
            kinds(&ev),
            [
                "node.tailnet_lock_changed",
                "node.ssh_changed",
                "node.routes_changed",
                "node.update_available"
            ]
        );
        assert!(ev.iter().all(|e| e.severity == Severity::Warning));
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
}
