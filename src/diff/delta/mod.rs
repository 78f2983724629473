//! A join or a change as the IPN bus streams it (tailscaled >= 1.100: `PeersChanged` carries each
//! changed node whole), decided without re-reading the tailnet: the changed peers against what is
//! known, through the same [`membership::devices`] as a full pass.
//!
//! The delta decides only what depends on those peers alone. Wherever a full pass could decide
//! more from them, it declines with the reason, and `run` makes a full pass instead:
//! - the store is not past its baseline, or the tailnet is unreadable (the full pass raises the
//!   baseline or the recovery);
//! - a peer's owner is not a known user (`user.new` needs the profile the bus does not carry);
//! - a peer is this server, or a `[[watch]]` names it (presence is decided on the whole tailnet);
//! - an address or the ID of a peer, before or after, names a principal of the packet filter or
//!   SSH policy, read or recorded (a grant's label follows the device behind a single address);
//! - there is no view of who may reach this node to check that against.
//!
//! What a full pass of the same tailnet would say about these peers, the delta says: the property
//! test in `tests.rs` holds the two to the same events over random bus sequences, and the periodic
//! full pass (`reconcile`) finds nothing left after them.
//!
//! [`membership::devices`]: super::membership::devices

use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::diff::{guard, membership, Policy};
use crate::model::access::{NodeView, SshPrincipal};
use crate::model::state::{Known, Outcome};
use crate::model::{Device, Health, Snapshot};

/// Why a delta was declined: a full pass decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    NoBaseline,
    SourceDown,
    UnknownOwner,
    SelfOrWatched,
    NamedByAccess,
    NoView,
}

impl Declined {
    pub fn as_str(self) -> &'static str {
        match self {
            Declined::NoBaseline => "no baseline yet",
            Declined::SourceDown => "the tailnet was unreadable",
            Declined::UnknownOwner => "a new owner",
            Declined::SelfOrWatched => "this server or a watched device",
            Declined::NamedByAccess => "named by the access policy",
            Declined::NoView => "no view of who may reach this node",
        }
    }
}

/// What the bus says and what was last read with it.
pub struct Delta<'a> {
    /// The peers of one `PeersChanged`, whole.
    pub peers: &'a [Device],
    /// The tailnet's name, as the last full pass read it.
    pub tailnet: &'a str,
    /// Who may reach this node, as last read.
    pub view: Option<&'a NodeView>,
}

/// The outcome of `delta.peers` against `known`, or why a full pass must decide it.
pub fn delta(
    known: &Known,
    health: &Health,
    delta: &Delta,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Outcome, Declined> {
    if !known.baseline_done {
        return Err(Declined::NoBaseline);
    }
    if health.down_since.is_some() {
        return Err(Declined::SourceDown);
    }
    let view = delta.view.ok_or(Declined::NoView)?;
    let named = named_by_access(known, view);
    let mut cur = Snapshot {
        tailnet: delta.tailnet.to_owned(),
        ..Snapshot::default()
    };
    for d in delta.peers {
        let prev = known.devices.get(&d.id).map(|k| &k.device);
        let owner = known
            .users
            .get(&d.user_id)
            .filter(|u| !u.removed)
            .ok_or(Declined::UnknownOwner)?;
        let watched = |d: &Device| d.is_self || policy.watches.iter().any(|w| w.matches(d));
        if watched(d) || prev.is_some_and(watched) {
            return Err(Declined::SelfOrWatched);
        }
        let ids = [Some(d), prev]
            .into_iter()
            .flatten()
            .flat_map(|d| d.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
        if named.ids.contains(d.id.0.as_str()) || ids.into_iter().any(|ip| named.ips.contains(&ip))
        {
            return Err(Declined::NamedByAccess);
        }
        cur.users.insert(owner.user.id, owner.user.clone());
        // A change of owner names the previous one as the tailnet lists it.
        if let Some(before) = prev.and_then(|p| known.users.get(&p.user_id)) {
            if !before.removed {
                cur.users.insert(before.user.id, before.user.clone());
            }
        }
        cur.devices.insert(d.id.clone(), d.clone());
    }
    let mut out = Outcome::default();
    membership::devices(known, &cur, policy, now, &mut out);
    if let Some(approve_new) = &policy.guard {
        guard::new_devices(&mut out, approve_new, &cur);
    }
    for e in &mut out.events {
        e.tailnet.clone_from(&cur.tailnet);
    }
    Ok(out)
}

/// The addresses and node IDs that name a principal of who may reach this node: single-address
/// sources of the filter, SSH principals, and the recorded model's principals.
struct Named<'a> {
    ips: HashSet<IpAddr>,
    ids: HashSet<&'a str>,
}

fn named_by_access<'a>(known: &'a Known, view: &'a NodeView) -> Named<'a> {
    let single = |s: &str| -> Option<IpAddr> {
        s.parse::<IpAddr>().ok().or_else(|| {
            s.parse::<ipnet::IpNet>()
                .ok()
                .filter(|n| n.prefix_len() == n.max_prefix_len())
                .map(|n| n.addr())
        })
    };
    let mut n = Named {
        ips: HashSet::new(),
        ids: HashSet::new(),
    };
    for s in view.rules.iter().flatten().flat_map(|r| &r.srcs) {
        n.ips.extend(single(s));
    }
    for p in view.ssh.iter().flatten().flat_map(|r| &r.principals) {
        match p {
            SshPrincipal::NodeIp(ip) => n.ips.extend(single(ip)),
            SshPrincipal::Node(id) => {
                n.ids.insert(id.as_str());
            }
            SshPrincipal::UserLogin(_) | SshPrincipal::Any => {}
        }
    }
    let recorded = known.access.iter().flat_map(|a| {
        a.reach
            .iter()
            .map(|r| &r.who)
            .chain(a.ssh.iter().map(|s| &s.who))
            .chain(a.caps.iter().map(|c| &c.who))
    });
    for who in recorded {
        if let Some(ip) = who.key.strip_prefix("ip:") {
            n.ips.extend(single(ip));
        } else if let Some(id) = who.key.strip_prefix("node:") {
            n.ids.insert(id);
        }
    }
    n
}

#[cfg(test)]
mod tests;
