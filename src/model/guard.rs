//! The guard (`[guard]`): which source addresses this server lets in on its Tailscale interface.
//! Plain data and one pure function; the store keeps the approvals, the privileged side applies
//! the set with nftables.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::state::KnownDevice;
use super::StableNodeId;

/// The tailnet's IPv4 range (CGNAT, `100.64.0.0/10`).
pub const TAILNET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 64, 0, 0), 10);
/// The tailnet's IPv6 range (`fd7a:115c:a1e0::/48`).
pub const TAILNET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48);
/// The most addresses per family the guard's set holds (and the root side accepts).
pub const MAX_ADDRESSES: usize = 16_384;

/// Whether `ip` is inside the tailnet's ranges: only those are guarded, and only those may be
/// put in the set.
pub fn in_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => u32::from(a) >> (32 - TAILNET_V4.1) == u32::from(TAILNET_V4.0) >> 22,
        IpAddr::V6(a) => u128::from(a) >> (128 - TAILNET_V6.1) == u128::from(TAILNET_V6.0) >> 80,
    }
}

/// The addresses let in: those of approved devices, sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardSet {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl GuardSet {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// One approval as the store keeps it: of a device *with its node key*. A key the control plane
/// swaps in (`device.rekeyed`) is not approved until the owner approves it again, so a console
/// that hands an approved device's identity to another machine does not hand it the way in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub device: StableNodeId,
    pub node_key: String,
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
    pub approved: bool,
    pub by: String,
}

/// The set for the devices known now: every current tailnet address of an approved device (with
/// its approved node key) that no unapproved device also claims. A claim is an address of its
/// own, or a route of its inside the tailnet's ranges (a hostile control plane could give an
/// unapproved peer an approved device's address as a route, and WireGuard would then take that
/// source from it). So an address that moves to another device leaves the set in the pass that
/// sees the move, and one claimed twice is nobody's to let in. Default and other broad routes
/// (an exit node's `0.0.0.0/0`) claim nothing here: WireGuard prefers the longest prefix, the
/// device's own address. Removed devices and this server itself hold no place in it.
pub fn desired<'a>(
    devices: impl IntoIterator<Item = &'a KnownDevice>,
    approved: &BTreeMap<StableNodeId, String>,
) -> GuardSet {
    let mut mine: BTreeMap<IpAddr, bool> = BTreeMap::new();
    let mut claimed: Vec<ipnet::IpNet> = Vec::new();
    for k in devices {
        if k.removed || k.device.is_self {
            continue;
        }
        let ok = approved.get(&k.device.id) == Some(&k.device.node_key.0);
        for a in &k.device.addresses {
            let Ok(ip) = a.parse::<IpAddr>() else {
                continue;
            };
            if !in_tailnet(ip) {
                continue;
            }
            let e = mine.entry(ip).or_insert(ok);
            *e &= ok;
        }
        if !ok {
            claimed.extend(
                k.device
                    .routes
                    .iter()
                    .filter_map(|r| r.parse::<ipnet::IpNet>().ok())
                    .filter(|n| {
                        in_tailnet(n.network())
                            && in_tailnet(n.broadcast())
                            && n.prefix_len() > tailnet_len(n)
                    }),
            );
        }
    }
    let mut set = GuardSet::default();
    for (ip, ok) in mine {
        if !ok || claimed.iter().any(|n| n.contains(&ip)) {
            continue;
        }
        match ip {
            IpAddr::V4(a) => set.v4.push(a),
            IpAddr::V6(a) => set.v6.push(a),
        }
    }
    set
}

/// The prefix length of the tailnet range `n`'s family has (a route as broad as the whole
/// range is no claim on one address).
fn tailnet_len(n: &ipnet::IpNet) -> u8 {
    match n {
        ipnet::IpNet::V4(_) => TAILNET_V4.1,
        ipnet::IpNet::V6(_) => TAILNET_V6.1,
    }
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

    /// Whether this entry rests on the control plane's word (a tag or an owner).
    pub fn trusts_control(&self) -> bool {
        !matches!(self, Selector::Id(_))
    }

    pub fn matches(&self, d: &super::Device, login: Option<&str>) -> bool {
        match self {
            Selector::Id(id) => d.id.0 == *id,
            Selector::Tag(t) => d.tags.iter().any(|x| x == t),
            Selector::Login(l) => login == Some(l.as_str()) && d.tags.is_empty(),
        }
    }
}

impl ApproveNew {
    pub fn matches(&self, d: &super::Device, login: Option<&str>) -> Option<&Selector> {
        match self {
            ApproveNew::Never => None,
            ApproveNew::Matching(v) => v.iter().find(|s| s.matches(d, login)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, NodeKey};

    fn dev(id: &str, addrs: &[&str]) -> KnownDevice {
        let mut device = Device::for_tests(id);
        device.node_key = NodeKey(String::new());
        device.addresses = addrs.iter().map(|s| s.to_string()).collect();
        KnownDevice {
            device,
            removed: false,
            expiring_alerted: None,
            last_handshake: None,
            after_baseline: false,
        }
    }

    #[test]
    fn ranges() {
        for ok in [
            "100.64.0.1",
            "100.127.255.255",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0:ffff::9",
        ] {
            assert!(in_tailnet(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "100.63.255.255",
            "100.128.0.0",
            "10.0.0.1",
            "fd7a:115c:a1e1::1",
            "::1",
            "0.0.0.0",
        ] {
            assert!(!in_tailnet(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn only_approved_current_unshared_tailnet_addresses() {
        let a = dev("nA", &["100.64.0.2", "fd7a:115c:a1e0::2", "192.168.1.9"]);
        let b = dev("nB", &["100.64.0.3"]);
        // B claims A's address too: nobody's to let in.
        let c = dev("nC", &["100.64.0.4", "100.64.0.2"]);
        let mut gone = dev("nD", &["100.64.0.5"]);
        gone.removed = true;
        let mut me = dev("nSelf", &["100.64.0.1"]);
        me.device.is_self = true;
        let approved: BTreeMap<_, _> = ["nA", "nC", "nD", "nSelf"]
            .into_iter()
            .map(|s| (StableNodeId(s.into()), String::new()))
            .collect();
        let set = desired([&a, &b, &c, &gone, &me], &approved);
        assert_eq!(
            set.v4,
            vec![
                "100.64.0.2".parse::<Ipv4Addr>().unwrap(),
                "100.64.0.4".parse().unwrap()
            ]
        );
        assert_eq!(
            set.v6,
            vec!["fd7a:115c:a1e0::2".parse::<Ipv6Addr>().unwrap()]
        );
        let b_took_it = dev("nB", &["100.64.0.3", "100.64.0.4"]);
        let set = desired([&a, &b_took_it, &c], &approved);
        assert_eq!(set.v4, vec!["100.64.0.2".parse::<Ipv4Addr>().unwrap()]);
        // An unapproved device given an approved address as a route (a /32 inside the tailnet)
        // takes it out of the set; an exit node's default route claims nothing.
        let mut spoof = dev("nB", &["100.64.0.3"]);
        spoof.device.routes = vec!["100.64.0.2/32".into(), "0.0.0.0/0".into(), "::/0".into()];
        let set = desired([&a, &spoof, &c], &approved);
        assert_eq!(set.v4, vec!["100.64.0.4".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(
            set.v6,
            vec!["fd7a:115c:a1e0::2".parse::<Ipv6Addr>().unwrap()]
        );
        // A new node key under an approved ID is not approved.
        let mut rekeyed = a.clone();
        rekeyed.device.node_key = NodeKey("nodekey:attacker".into());
        let set = desired([&rekeyed, &c], &approved);
        assert_eq!(set.v4, vec!["100.64.0.4".parse::<Ipv4Addr>().unwrap()]);
    }
}
