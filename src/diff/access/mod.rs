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

use crate::model::access::{Access, CapEntry, NodeTrust, NodeView, Principal, Reach, SshGrant};
use crate::model::{Snapshot, StableNodeId};

/// The target name of ports on this server itself.
pub const THIS_SERVER: &str = "this server";

mod events;
mod ports;
mod resolve;
#[cfg(test)]
mod tests;
mod trust;

pub use events::events;

use crate::diff::access::ports::merge;
use crate::diff::access::resolve::{proto_names, Resolver};

pub use trust::trust_events;

/// The canonical model of what this node was told.
pub fn canonical(view: &NodeView, snap: &Snapshot) -> Access {
    model(Resolver::new(snap, view), view)
}

/// [`canonical`], with an address that the snapshot no longer lists named by the device the
/// monitor knows for it: a device that leaves the peer list keeps its grants under its name, so
/// that they are neither "new" under a bare address nor "narrowed" for the device.
pub fn canonical_with(
    view: &NodeView,
    snap: &Snapshot,
    known: &BTreeMap<StableNodeId, crate::model::state::KnownDevice>,
) -> Access {
    model(Resolver::new(snap, view).with_known(known), view)
}

fn model(r: Resolver, view: &NodeView) -> Access {
    let mut access = Access {
        known: view.rules.is_some(),
        trust: view.trust.clone(),
        ..Access::default()
    };
    // Recorded with the node's trust, read with `/status` (the snapshot is its one home).
    access.trust.update_available = r.snap.update_available.clone();
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
        web_client: new.trust.web_client.or(old.trust.web_client),
        remote_config: new.trust.remote_config.or(old.trust.remote_config),
        shields_up: new.trust.shields_up.or(old.trust.shields_up),
        exit_node_id: new
            .trust
            .exit_node_id
            .or_else(|| old.trust.exit_node_id.clone()),
        serve: new.trust.serve.or_else(|| old.trust.serve.clone()),
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

/// The last model, with each bare address it named (`ip:…`: a source the filter listed before
/// tailscaled listed the device) named by the device that now holds it. Headscale can send a
/// policy change before the peer it opens to; the widening is alerted then, under the address,
/// and the peer's arrival a moment later is the same grant, not another one.
pub fn reattributed(old: &Access, view: &NodeView, snap: &Snapshot) -> Access {
    let r = Resolver::new(snap, view);
    let rename = |p: &Principal| -> Principal {
        match p
            .key
            .strip_prefix("ip:")
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        {
            Some(ip) => {
                let named = r.ip(ip);
                if named.key.starts_with("node:") {
                    named
                } else {
                    p.clone()
                }
            }
            None => p.clone(),
        }
    };
    type Key = (String, String, String);
    let mut reach: BTreeMap<Key, Reach> = BTreeMap::new();
    for x in &old.reach {
        let who = rename(&x.who);
        let e = reach
            .entry((who.key.clone(), x.target.clone(), x.proto.clone()))
            .or_insert_with(|| Reach {
                who,
                target: x.target.clone(),
                proto: x.proto.clone(),
                ports: Vec::new(),
            });
        e.ports.extend(&x.ports);
    }
    let mut ssh: Vec<SshGrant> = old
        .ssh
        .iter()
        .map(|g| SshGrant {
            who: rename(&g.who),
            ..g.clone()
        })
        .collect();
    ssh.sort();
    ssh.dedup();
    Access {
        reach: reach
            .into_values()
            .map(|mut x| {
                x.ports = merge(std::mem::take(&mut x.ports));
                x
            })
            .collect(),
        ssh,
        ..old.clone()
    }
}
