//! The guard (`[guard]`): which source addresses this server lets in on its Tailscale interface.
//! Plain data and one pure function; the store keeps the approvals, the privileged side applies
//! the set with nftables.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::StableNodeId;

/// The most addresses per family the guard's set holds (and the root side accepts).
pub const MAX_ADDRESSES: usize = 16_384;

/// What the guard lets in on the interface (besides replies to this server's own connections):
/// approved devices' addresses and the routes approved with them, as prefixes (a single address
/// is a /32 or /128), sorted, none inside another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardSet {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl GuardSet {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Builds the set from `nets`: sorted, without a prefix that another one holds.
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> GuardSet {
        let mut all: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
        // Broadest first, so that a prefix is checked against every one that could hold it.
        all.sort_by_key(|n| (n.prefix_len(), *n));
        let mut kept: Vec<IpNet> = Vec::new();
        for n in all {
            if !kept.iter().any(|k| k.contains(&n)) {
                kept.push(n);
            }
        }
        let mut set = GuardSet::default();
        for n in kept {
            match n {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set.v4.sort();
        set.v6.sort();
        set
    }

    pub fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4
            .iter()
            .map(|n| IpNet::V4(*n))
            .chain(self.v6.iter().map(|n| IpNet::V6(*n)))
    }
}

/// One approval as the store keeps it: of a device *with its node key* and the routes it had
/// when approved. A key the control plane swaps in (`device.rekeyed`) is not approved until the
/// owner approves it again, so a console that hands an approved device's identity to another
/// machine does not hand it the way in; a route added later waits for the next approval too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub device: StableNodeId,
    pub node_key: String,
    /// The routes (subnets, 4via6) approved with the device, sorted.
    #[serde(default)]
    pub routes: Vec<String>,
    /// RFC 3339.
    pub at: String,
    /// The local user who approved it (or `approve_new`, or `guard init`).
    pub by: String,
}

/// A change of the approvals, committed with its `guard.approved` / `guard.revoked` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalChange {
    pub device: StableNodeId,
    /// The node key approved (ignored for a revocation).
    pub node_key: String,
    /// The routes approved with it (ignored for a revocation).
    pub routes: Vec<String>,
    pub approved: bool,
    pub by: String,
}

/// What the guard keeps between passes (one record, written with the events it explains).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardState {
    /// The fingerprint of the interface and set last put in force.
    #[serde(default)]
    pub applied: Option<String>,
    /// Why the guard is not in force, as last said (`userspace`, `uninitialized`, `relay`,
    /// `tampered`, `remote_config`).
    #[serde(default)]
    pub unenforced: Option<String>,
    /// A digest of the counters the last poll looked at.
    #[serde(default)]
    pub seen: Option<String>,
    /// `guard off`, by whom: nothing is enforced until `guard on` or `guard init`.
    #[serde(default)]
    pub off: Option<String>,
    /// `guard init`, when: until then `enforce` locks nobody out and says so.
    #[serde(default)]
    pub initialized: Option<String>,
    /// The doors tailscaled serves itself that were open at the last pass (their keys), each
    /// said once when it opened.
    #[serde(default)]
    pub doors: Vec<String>,
    /// The exit node this server sends its traffic through (prefs `ExitNodeID`): its default
    /// route lets it send from any address, so it claims them all.
    #[serde(default)]
    pub exit_node: Option<String>,
    /// The root side's approvals version last mirrored into the store.
    #[serde(default)]
    pub version: u64,
    /// The node keys of peers already said to have no identity of their own (review G4).
    #[serde(default)]
    pub anomalies: Vec<String>,
    /// How the root side's set differs from the monitor's own computation, and since how many
    /// syncs (said once it persists).
    #[serde(default)]
    pub mismatch: Option<(String, u32)>,
    /// A digest of what the last sync was asked for (the peers as `/status` shows them, the exit
    /// node, the approvals' version), and when (RFC 3339): a pass that changes none of it asks
    /// the root side nothing.
    #[serde(default)]
    pub synced: Option<(String, String)>,
}

/// A way into this server that tailscaled answers itself, before the kernel and so before the
/// guard (tailscale.com `wgengine/netstack/netstack.go` `shouldProcessInbound`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Door {
    /// Stable: `ssh`, `web_client`, `serve:443`, `funnel:host:443`, `service:svc:name`,
    /// `peerapi`, `loopback`.
    pub key: String,
    /// What it is, for people.
    pub name: String,
    /// The TCP port, where there is one.
    pub port: Option<u16>,
    /// `[guard] tailscaled_doors = "close"` closes it (Tailscale SSH, the web client).
    pub closable: bool,
    /// What closes it.
    pub fix: String,
}

/// Why an approved address or route is left out of the set: an unapproved device may send from
/// it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    /// The approved device's stable ID.
    pub device: String,
    pub net: String,
    /// The unapproved peer whose address or route holds it (its stable ID, else its node key),
    /// and which one.
    pub by: String,
    pub claim: String,
}

/// One source the guard dropped, as nftables counted it (a `seen` set element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub addr: IpAddr,
    /// `tcp`, `udp`, `icmp`, … (nftables' name, or the protocol number).
    pub proto: String,
    /// The destination port (0 where the protocol has none).
    pub port: u16,
    pub packets: u64,
}

/// A group of dropped sources as recorded: by device (its ID), or `unclaimed` for sources no
/// device claims; when it was first seen and last alerted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRecord {
    pub key: String,
    pub device_id: Option<String>,
    pub first: chrono::DateTime<chrono::Utc>,
    pub alerted: Option<chrono::DateTime<chrono::Utc>>,
    pub packets: u64,
}

/// What the kernel holds of the guard, as the root side read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    /// The table exists.
    pub present: bool,
    /// The interface its rules match.
    #[serde(default)]
    pub interface: String,
    /// The addresses let in.
    #[serde(default)]
    pub set: GuardSet,
    /// The sources dropped since the table was made (elements expire after an hour of silence).
    #[serde(default)]
    pub blocked: Vec<Blocked>,
    /// What the root side found against the table it applied last, checked whole (chains,
    /// hooks, priorities, rules, sets, the interface): `None` when it is that table.
    #[serde(default)]
    pub differs: Option<String>,
    /// The table is absent and this machine booted since it was applied (the restore unit did
    /// not run): not tampering.
    #[serde(default)]
    pub rebooted: bool,
    /// The root side's approvals changed since (a counter): the monitor mirrors them then.
    #[serde(default)]
    pub version: u64,
}

/// One peer as WireGuard knows it, with no name: what the set is computed from, on both sides.
/// Keyed by node key; the stable ID may be empty or shared (then it is never approved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: String,
    pub node_key: String,
    /// Its own addresses.
    pub addresses: Vec<IpNet>,
    /// Its other `AllowedIPs` (and primary routes): what else it may send from.
    pub routes: Vec<IpNet>,
}

/// A peer the guard cannot trust its identity for (review G4): raised, and a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub node_key: String,
    /// The stable ID it gave (empty: none).
    pub id: String,
    /// `no_stable_id` or `shared_stable_id`.
    pub what: String,
}

/// What the root side decided, as it answers `guard_sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The root side's own config: `enforce` or `off`.
    pub mode: String,
    pub interface: String,
    /// `guard init` has run (by the root side's record).
    pub initialized: bool,
    /// `guard off`, by whom.
    #[serde(default)]
    pub off: Option<String>,
    /// The interface does not exist (no kernel TUN: userspace networking, or tailscaled down).
    #[serde(default)]
    pub no_interface: bool,
    /// Every approval the root side keeps.
    #[serde(default)]
    pub approvals: Vec<Approval>,
    /// The approvals' version (a counter, bumped with each change).
    #[serde(default)]
    pub version: u64,
    /// The set in force (or that would be, when not enforcing).
    #[serde(default)]
    pub set: GuardSet,
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
    /// Whether this request changed the table.
    #[serde(default)]
    pub applied: bool,
    /// The table was not what root applied last (changed or removed by someone else): how. Put
    /// back when the request applies.
    #[serde(default)]
    pub repaired: Option<String>,
    /// It was gone, and this machine booted since it was applied (the restore unit did not run).
    #[serde(default)]
    pub rebooted: bool,
}

/// `[guard] approve_new`: which new devices are let in without `guard approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ApproveNew {
    /// None (the default): every new device waits for `guard approve`.
    #[default]
    Never,
    /// Those matching any of these.
    Matching(Vec<Selector>),
}

/// One entry of `approve_new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A stable node ID: this one device, whenever it appears.
    Id(String),
    /// `tag:…`: the control plane's word (whoever controls the policy can tag any device).
    Tag(String),
    /// `user@domain`: the control plane's word too.
    Login(String),
}

impl Selector {
    pub fn parse(s: &str) -> Selector {
        if s.starts_with("tag:") {
            Selector::Tag(s.to_owned())
        } else if s.contains('@') {
            Selector::Login(s.to_owned())
        } else {
            Selector::Id(s.to_owned())
        }
    }

    pub fn matches(&self, d: &super::Device, login: Option<&str>) -> bool {
        self.matches_parts(&d.id.0, &d.tags, login)
    }

    /// [`Selector::matches`] on the parts the root side has (no name).
    pub fn matches_parts(&self, id: &str, tags: &[String], login: Option<&str>) -> bool {
        match self {
            Selector::Id(x) => id == x,
            Selector::Tag(t) => tags.iter().any(|x| x == t),
            Selector::Login(l) => login == Some(l.as_str()) && tags.is_empty(),
        }
    }
}

impl ApproveNew {
    pub fn matches(&self, d: &super::Device, login: Option<&str>) -> Option<&Selector> {
        self.matches_parts(&d.id.0, &d.tags, login)
    }

    pub fn matches_parts(
        &self,
        id: &str,
        tags: &[String],
        login: Option<&str>,
    ) -> Option<&Selector> {
        match self {
            ApproveNew::Never => None,
            ApproveNew::Matching(v) => v.iter().find(|s| s.matches_parts(id, tags, login)),
        }
    }
}

/// A Linux interface name (what the root side also checks).
pub fn valid_interface(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && s != "."
        && s != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_no_prefix_inside_another() {
        let set = GuardSet::from_nets(
            [
                "100.64.0.2/32",
                "10.1.0.0/16",
                "10.1.2.0/24",
                "100.64.0.2/32",
                "fd7a:115c:a1e0::2/128",
            ]
            .iter()
            .map(|s| s.parse::<IpNet>().unwrap()),
        );
        assert_eq!(
            set.v4,
            vec![
                "10.1.0.0/16".parse::<Ipv4Net>().unwrap(),
                "100.64.0.2/32".parse().unwrap()
            ]
        );
        assert_eq!(set.v6.len(), 1);
    }
}
