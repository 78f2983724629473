//! Each filter source resolved to the device and user behind it (through the snapshot or a
//! `whois` label), and protocol numbers named.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::diff::access::THIS_SERVER;
use crate::model::access::{NetmapPeer, NodeView, Principal, SshPrincipal};
use crate::model::state::KnownDevice;
use crate::model::{Device, Snapshot, StableNodeId};

pub(super) struct Resolver<'a> {
    pub(super) snap: &'a Snapshot,
    /// The snapshot's devices by address, built at the first lookup ([`index`]).
    by_ip: OnceCell<Index<'a>>,
    /// Peers of the netmap that `/status` did not list (the filter can arrive first).
    netmap_peers: BTreeMap<IpAddr, &'a NetmapPeer>,
    /// The netmap's peers by stable ID: their owner when `/status` lacks the user profile yet.
    netmap_by_id: BTreeMap<&'a str, &'a NetmapPeer>,
    /// Devices the monitor knows ([`Resolver::with_known`]).
    known: Option<&'a BTreeMap<StableNodeId, KnownDevice>>,
    /// Those of them that this snapshot no longer lists (they left the peer list), by address,
    /// built at the first lookup the snapshot cannot answer: a grant to their addresses stays
    /// theirs, so that it is not "new" under a bare address.
    known_by_ip: OnceCell<Index<'a>>,
    self_ips: Vec<IpAddr>,
}

/// An address index, built only when a lookup needs it: most passes name few addresses or none
/// (a 10,000-device tailnet has 20,000 to parse and sort). Where two entries share an address,
/// the later wins, as a map's insert would.
struct Index<'a> {
    /// The devices' addresses in the order given.
    entries: Vec<(IpAddr, &'a Device)>,
    /// Each entry's [`key`] and position, sorted: plain integers to compare.
    sorted: Vec<(u128, u32)>,
}

/// An address as one integer. An IPv4 address and the IPv6 address of the same value (`::a.b.c.d`)
/// share a key; [`Index::find`] tells them apart.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

impl<'a> Index<'a> {
    fn new(devices: impl Iterator<Item = &'a Device>) -> Self {
        let entries: Vec<_> = devices
            .flat_map(|d| {
                d.addresses
                    .iter()
                    .filter_map(move |a| a.parse::<IpAddr>().ok().map(|ip| (ip, d)))
            })
            .collect();
        let mut sorted: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (ip, _))| (key(*ip), i as u32))
            .collect();
        sorted.sort_unstable();
        Index { entries, sorted }
    }

    /// The device at `ip`: of those that share it, the last given.
    fn find(&self, ip: IpAddr) -> Option<&'a Device> {
        let k = key(ip);
        let end = self.sorted.partition_point(|e| e.0 <= k);
        self.sorted[..end]
            .iter()
            .rev()
            .take_while(|e| e.0 == k)
            .map(|e| self.entries[e.1 as usize])
            .find(|e| e.0 == ip)
            .map(|e| e.1)
    }
}

impl<'a> Resolver<'a> {
    pub(super) fn new(snap: &'a Snapshot, view: &'a NodeView) -> Self {
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
            by_ip: OnceCell::new(),
            netmap_peers,
            netmap_by_id,
            known: None,
            known_by_ip: OnceCell::new(),
            self_ips,
        }
    }

    /// Also names addresses by the devices the monitor knows (`known`), when the snapshot does
    /// not list them.
    pub(super) fn with_known(mut self, known: &'a BTreeMap<StableNodeId, KnownDevice>) -> Self {
        self.known = Some(known);
        self
    }

    fn by_ip(&self, ip: IpAddr) -> Option<&'a Device> {
        self.by_ip
            .get_or_init(|| Index::new(self.snap.devices.values()))
            .find(ip)
    }

    fn known_by_ip(&self, ip: IpAddr) -> Option<&'a Device> {
        let known = self.known?;
        let index = self.known_by_ip.get_or_init(|| {
            // Only those it no longer lists: a listed device is named by its current addresses,
            // so that an address it left is unnamed in the pass that sees it move, not one pass
            // later. Both maps in key order: one merge walk, not a tree search per known device.
            let mut listed = crate::model::Ascending::new(&self.snap.devices);
            Index::new(
                known
                    .iter()
                    .filter(|(id, _)| listed.get(*id).is_none())
                    .map(|(_, k)| &k.device),
            )
        });
        index.find(ip)
    }

    pub(super) fn device(&self, d: &Device) -> Principal {
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

    pub(super) fn ip(&self, ip: IpAddr) -> Principal {
        if let Some(d) = self.by_ip(ip) {
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
        // Named as when it was visible: the same principal, so the same grant.
        if let Some(d) = self.known_by_ip(ip) {
            return self.device(d);
        }
        let label = match self.snap.ip_whois.get(&ip.to_string()) {
            Some(w) => format!("{ip} ({})", w.label()),
            None => format!("{ip} (no device this server knows)"),
        };
        Principal {
            key: format!("ip:{ip}"),
            label,
        }
    }

    /// A `SrcIPs` entry as a principal.
    pub(super) fn source(&self, src: &str) -> Principal {
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
    pub(super) fn target(&self, dst: &str) -> String {
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

    pub(super) fn ssh_principal(&self, p: &SshPrincipal) -> Principal {
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

pub(super) fn proto_names(protos: &[u8]) -> BTreeSet<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str, addresses: &[&str]) -> Device {
        let mut d = Device::for_tests(id);
        d.addresses = addresses.iter().map(|a| a.to_string()).collect();
        d
    }

    /// The index answers as a map built by inserting each address in turn would: the later
    /// device wins an address given twice, an IPv4 address is not its IPv6 namesake, and an
    /// address nobody has is nobody's.
    #[test]
    fn the_index_answers_as_inserting_into_a_map_would() {
        let devices = [
            at("a", &["100.64.0.1", "fd7a:115c:a1e0::1"]),
            at("b", &["100.64.0.2", "::100.64.0.1"]),
            at("c", &["100.64.0.2", "not an address"]),
            at("d", &["::1", "0.0.0.1"]),
        ];
        let index = Index::new(devices.iter());
        let mut map = BTreeMap::new();
        for d in &devices {
            for a in &d.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    map.insert(ip, d.id.0.as_str());
                }
            }
        }
        let asked = [
            "100.64.0.1",
            "::100.64.0.1",
            "100.64.0.2",
            "fd7a:115c:a1e0::1",
            "::1",
            "0.0.0.1",
            "100.64.0.3",
            "::",
        ];
        for ip in asked.map(|a| a.parse::<IpAddr>().unwrap()) {
            assert_eq!(
                index.find(ip).map(|d| d.id.0.as_str()),
                map.get(&ip).copied(),
                "{ip}"
            );
        }
        assert_eq!(index.find("100.64.0.2".parse().unwrap()).unwrap().id.0, "c");
    }
}
