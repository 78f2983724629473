//! The IPN bus (`GET /localapi/v0/watch-ipn-bus?mask=N`): tailscaled's real-time stream, used
//! only as a *trigger*. Any Notify that may mean "the tailnet changed" makes the daemon re-read
//! `/status` (debounced), so the snapshot is always one consistent document whatever the daemon
//! version streams.
//!
//! Version matrix (spec/tailscale.md): before 1.98 peer changes arrive only as a full `NetMap`;
//! from 1.100 the `NetMap` is sent only initially and adds/removes reach only watchers that set
//! bit 12 (PeerChanges); from 1.102 bit 18 adds per-peer WireGuard states. We subscribe with
//! InitialState | PeerChanges, plus PeerWireGuardState on >= 1.102. Older daemons ignore unknown
//! bits; a daemon that answers 400 to a mask is retried with the bits it refused dropped.

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::model::{Device, NodeKey, StableNodeId, UserId};

pub const INITIAL_STATE: u64 = 1 << 1;
/// The first message carries the whole netmap (packet filter, SSH policy): read once, then closed.
pub const INITIAL_NETMAP: u64 = 1 << 3;
pub const PEER_CHANGES: u64 = 1 << 12;
pub const PEER_WIREGUARD_STATE: u64 = 1 << 18;

/// Parses the `major.minor` of a version string like `1.102.3-t…`.
pub fn version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The mask to subscribe with, for a daemon of this version (unknown: assume the newest).
pub fn mask_for(daemon_version: &str) -> u64 {
    let base = INITIAL_STATE | PEER_CHANGES;
    match version(daemon_version) {
        Some(v) if v < (1, 102) => base,
        _ => base | PEER_WIREGUARD_STATE,
    }
}

/// The next mask to try after a 400: drop the newest optional bit still set.
pub fn fallback_mask(mask: u64) -> Option<u64> {
    [PEER_WIREGUARD_STATE, PEER_CHANGES]
        .into_iter()
        .find(|b| mask & b != 0)
        .map(|b| mask & !b)
}

/// The fields of `ipn.Notify` that tell us something changed. Everything else is ignored; the
/// content of the change is read from `/status`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Notify {
    pub version: Option<String>,
    pub err_message: Option<String>,
    pub login_finished: Option<IgnoredAny>,
    /// 0 NoState, 1 InUseOtherUser, 2 NeedsLogin, 3 NeedsMachineAuth, 4 Stopped, 5 Starting, 6 Running.
    pub state: Option<i64>,
    pub self_change: Option<IgnoredAny>,
    pub net_map: Option<IgnoredAny>,
    pub peers_changed: Option<IgnoredAny>,
    pub peers_removed: Option<IgnoredAny>,
    pub user_profiles: Option<IgnoredAny>,
    pub peer_state: Option<std::collections::BTreeMap<String, PeerState>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PeerState {
    #[serde(rename = "PeerWireGuardState")]
    pub wireguard: String,
}

/// What a line of the bus means to the monitor.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// Something about the tailnet or the daemon changed: re-read `/status`.
    Changed,
    /// Only `PeersChanged`: these peers, as far as their [`Membership`] goes, to compare with
    /// what is known. Where nothing but presence (online, last seen, endpoints, DERP) changed,
    /// no pass is needed.
    ///
    /// [`Membership`]: crate::model::Membership
    Peers(Vec<Device>),
    /// A peer has an established WireGuard session with this node: re-read for `peer.connected`.
    Connected,
    /// Nothing the monitor cares about (engine stats, health, files …).
    Quiet,
    /// Not a Notify. The bus is not trusted blindly: re-read to be safe.
    Garbage,
}

/// A `tailcfg.Node` of `PeersChanged`, as far as membership goes.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct NodeWire {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "StableID")]
    stable_id: String,
    key: String,
    user: i64,
    name: String,
    addresses: Option<Vec<String>>,
    #[serde(rename = "AllowedIPs")]
    allowed_ips: Option<Vec<String>>,
    primary_routes: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    key_expiry: Option<String>,
    expired: bool,
    created: Option<String>,
    sharer: i64,
    hostinfo: Option<HostinfoWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct HostinfoWire {
    hostname: Option<String>,
    #[serde(rename = "OS")]
    os: Option<String>,
    sharee_node: bool,
}

impl NodeWire {
    /// `None` when a fact is missing: the node cannot be told unchanged, so a pass must look.
    /// Every field is filled as `/status` fills it (tailscaled's `peerStatusFromNode`: the key
    /// expiry rounded to the second, shared from `Sharer` or `Hostinfo.ShareeNode`), so that a
    /// device recorded from the bus is the device the next full pass reads.
    fn device(self) -> Option<Device> {
        let hi = self.hostinfo?;
        if self.stable_id.is_empty() || self.key.is_empty() {
            return None;
        }
        let addresses = crate::model::as_set(
            self.addresses?
                .into_iter()
                .map(|a| a.split('/').next().unwrap_or_default().to_owned())
                .collect(),
        );
        let routes = crate::source::status_json::routes_beyond(
            &addresses,
            self.allowed_ips.unwrap_or_default(),
            self.primary_routes.unwrap_or_default(),
        );
        let tags = crate::model::as_set(self.tags.unwrap_or_default());
        Some(Device {
            id: StableNodeId(self.stable_id),
            node_key: NodeKey(self.key),
            hostname: hi.hostname?,
            dns_name: self.name,
            os: hi.os?,
            user_id: UserId(self.user),
            addresses,
            tags,
            exit_node: crate::model::has_exit_route(&routes),
            routes,
            key_expiry: crate::source::wire::parse_time(self.key_expiry.as_deref())
                .map(round_to_second),
            expired: self.expired,
            created: crate::source::wire::parse_time(self.created.as_deref()),
            is_self: false,
            shared: self.sharer != 0 || hi.sharee_node,
            node_id: (self.id != 0).then_some(self.id),
        })
    }
}

/// Go's `Time.Round(time.Second)`, as `/status` reports a key expiry: halfway rounds up.
fn round_to_second(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{DurationRound as _, TimeDelta};
    t.duration_round(TimeDelta::seconds(1)).unwrap_or(t)
}

/// The peers a `PeersChanged`-only line carries, as `run`'s delta decides them (`None` for any
/// other line): what the real-daemon tests hold to `/status`, field for field.
pub fn bus_peers(line: &[u8]) -> Option<Vec<Device>> {
    match classify(line) {
        Signal::Peers(p) => Some(p),
        _ => None,
    }
}

/// Classifies one line of the stream.
pub fn classify(line: &[u8]) -> Signal {
    let n: Notify = match serde_json::from_slice(line) {
        Ok(n) => n,
        Err(_) => return Signal::Garbage,
    };
    let others = n.state.is_some()
        || n.login_finished.is_some()
        || n.self_change.is_some()
        || n.net_map.is_some()
        || n.peers_removed.is_some()
        || n.user_profiles.is_some()
        || n.err_message.is_some();
    if n.peers_changed.is_some() && !others {
        // Re-parse only this field: the facts of each changed peer.
        #[derive(Deserialize)]
        struct Only {
            #[serde(rename = "PeersChanged")]
            peers: Vec<NodeWire>,
        }
        return match serde_json::from_slice::<Only>(line).ok().and_then(|o| {
            o.peers
                .into_iter()
                .map(NodeWire::device)
                .collect::<Option<Vec<_>>>()
        }) {
            Some(facts) if !facts.is_empty() => Signal::Peers(facts),
            _ => Signal::Changed,
        };
    }
    if n.state.is_some()
        || n.login_finished.is_some()
        || n.self_change.is_some()
        || n.net_map.is_some()
        || n.peers_changed.is_some()
        || n.peers_removed.is_some()
        || n.user_profiles.is_some()
        || n.err_message.is_some()
    {
        return Signal::Changed;
    }
    if n.peer_state
        .as_ref()
        .is_some_and(|m| m.values().any(|p| p.wireguard == "established"))
    {
        return Signal::Connected;
    }
    Signal::Quiet
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: any bus line classifies without a panic, in bounded time.
    #[test]
    fn fuzz_bus_lines() {
        crate::fuzz::check(
            "bus line",
            &[
                br#"{"Version":"1.104.2","State":6}"#,
                br#"{"PeersChanged":[{"ID":5,"StableID":"n5","Key":"nodekey:5","User":7,"Name":"a.ts.net.","Addresses":["100.64.0.5/32"],"AllowedIPs":["100.64.0.5/32","10.0.0.0/8"],"Tags":["tag:b"],"KeyExpiry":"2027-01-01T00:00:00Z","Hostinfo":{"Hostname":"a","OS":"linux"}}]}"#,
                br#"{"PeerState":{"nX":{"PeerWireGuardState":"established"}}}"#,
            ],
            |b| {
                let _ = classify(b);
            },
        );
    }

    #[test]
    fn mask_follows_the_version_matrix() {
        assert_eq!(mask_for("1.96.5-tabc"), (1 << 1) | (1 << 12));
        assert_eq!(mask_for("1.100.0"), (1 << 1) | (1 << 12));
        assert_eq!(mask_for("1.102.3-t1e2a"), (1 << 1) | (1 << 12) | (1 << 18));
        assert_eq!(mask_for(""), (1 << 1) | (1 << 12) | (1 << 18));
        assert_eq!(
            fallback_mask(mask_for("1.102.0")),
            Some((1 << 1) | (1 << 12))
        );
        assert_eq!(fallback_mask((1 << 1) | (1 << 12)), Some(1 << 1));
        assert_eq!(fallback_mask(1 << 1), None);
    }

    /// tailscaled 1.104 answers 400 to bits 3 (NotifyInitialNetMap) and 8 (NotifyRateLimit): the
    /// main watch never asks for them, on any version or fallback.
    #[test]
    fn the_main_mask_never_carries_the_bits_1_104_refuses() {
        for v in [
            "",
            "1.80.0",
            "1.96.5",
            "1.100.1",
            "1.102.5",
            "1.104.2-t",
            "2.0.0",
        ] {
            let mut m = Some(mask_for(v));
            while let Some(mask) = m {
                assert_eq!(mask & ((1 << 3) | (1 << 8)), 0, "{v}: {mask}");
                m = fallback_mask(mask);
            }
        }
    }

    /// 1.104's first line has no `SelfChange` and (without bit 12 or 15 in the mask) no peers in
    /// `InitialStatus`: it still starts a pass that reads `/status`, which seeds everything.
    #[test]
    fn the_first_line_of_1_104_still_starts_a_pass() {
        let first = br#"{"Version":"1.104.2-t","SessionID":"s1","State":6,"InitialStatus":{"Self":{"ID":"n1"},"Peer":null}}"#;
        assert_eq!(classify(first), Signal::Changed);
        // A 1.104 full netmap now lists dropped peers: a pass, never a presence-only skip.
        assert_eq!(
            classify(br#"{"PeersChanged":[],"PeersRemoved":[7]}"#),
            Signal::Changed
        );
    }

    #[test]
    fn classifies_notifies() {
        assert_eq!(
            classify(br#"{"Version":"1.102.3","State":6}"#),
            Signal::Changed
        );
        assert_eq!(classify(br#"{"NetMap":{"Peers":[]}}"#), Signal::Changed);
        assert_eq!(
            classify(br#"{"PeersChanged":[{"ID":5}]}"#),
            Signal::Changed,
            "facts missing"
        );
        let node = br#"{"PeersChanged":[{"ID":5,"StableID":"n5","Key":"nodekey:5","User":7,"Name":"a.ts.net.","Addresses":["100.64.0.5/32"],"AllowedIPs":["100.64.0.5/32","10.0.0.0/8"],"Tags":["tag:b","tag:a"],"KeyExpiry":"2027-01-01T00:00:00Z","Hostinfo":{"Hostname":"a","OS":"linux"},"Online":true}]}"#;
        let Signal::Peers(f) = classify(node) else {
            panic!("{:?}", classify(node))
        };
        assert_eq!(f[0].addresses, ["100.64.0.5"]);
        assert_eq!(f[0].routes, ["10.0.0.0/8"]);
        assert_eq!(f[0].tags, ["tag:a", "tag:b"]);
        assert_eq!(classify(br#"{"PeersRemoved":[5]}"#), Signal::Changed);
        assert_eq!(classify(br#"{"NetMap":null}"#), Signal::Quiet);
        assert_eq!(
            classify(br#"{"PeerState":{"nX":{"PeerWireGuardState":"established","PeerWireGuardStateAt":"2026-11-24T10:00:00Z"}}}"#),
            Signal::Connected
        );
        assert_eq!(
            classify(br#"{"PeerState":{"nX":{"PeerWireGuardState":"handshake"}}}"#),
            Signal::Quiet
        );
        assert_eq!(classify(br#"{"Engine":{"RBytes":10}}"#), Signal::Quiet);
        assert_eq!(classify(b"{\"State\":"), Signal::Garbage);
        assert_eq!(classify(b"<html>"), Signal::Garbage);
    }
}
