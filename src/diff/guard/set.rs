//! The set the guard lets in, from the devices known now and the owner's approvals.
//!
//! tailscaled's WireGuard accepts a packet from a peer when its source lies inside *any* of that
//! peer's prefixes (its addresses and its routes: github.com/tailscale/wireguard-go
//! `device/allowedips.go` `AllowedPeerSourceIP`), whatever their length. So an approved address
//! or route is let in only when no device that is not approved for it may send from it:
//! - an approved device's current addresses, and the routes it had when it was approved;
//! - minus everything that overlaps a *claim*: an address or a route of an unapproved device
//!   (any length, inside or outside the tailnet's ranges), a route of an approved device that
//!   was added after its approval, and the default route of the exit node this server uses
//!   when that node is not approved.
//!
//! Everything else is dropped at the interface (replies to this server's own connections
//! excepted, by conntrack, on the root side).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::guard::{Approval, GuardSet, LeftOut};
use crate::model::state::KnownDevice;
use crate::model::StableNodeId;

/// One prefix a device may send from.
struct Claim<'a> {
    device: &'a StableNodeId,
    net: IpNet,
    text: &'a str,
}

fn net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The set for `devices`, and what was left out of it and why. `exit_node` is the peer this
/// server sends its traffic through (prefs `ExitNodeID`), whose default route claims every
/// address.
pub fn desired<'a>(
    devices: impl IntoIterator<Item = &'a KnownDevice>,
    approvals: &BTreeMap<StableNodeId, Approval>,
    exit_node: Option<&StableNodeId>,
) -> (GuardSet, Vec<LeftOut>) {
    let mut wanted: Vec<(&StableNodeId, IpNet, &str)> = Vec::new();
    // Host claims are looked up; broader ones (few) are scanned.
    let mut hosts: HashMap<IpAddr, Vec<&StableNodeId>> = HashMap::new();
    let mut broad: Vec<Claim<'_>> = Vec::new();
    for k in devices {
        let d = &k.device;
        if k.removed || d.is_self {
            continue;
        }
        let approval = approvals.get(&d.id).filter(|a| a.node_key == d.node_key.0);
        for a in &d.addresses {
            let Some(n) = net(a) else { continue };
            if approval.is_some() {
                wanted.push((&d.id, n, a));
            } else {
                hosts.entry(n.addr()).or_default().push(&d.id);
            }
        }
        for r in &d.routes {
            let Some(n) = net(r) else { continue };
            let approved = approval.is_some_and(|a| a.routes.iter().any(|x| x == r));
            if approved && n.prefix_len() > 0 {
                wanted.push((&d.id, n, r));
            } else if n.prefix_len() > 0 || (exit_node == Some(&d.id) && approval.is_none()) {
                // A default route claims everything only on the exit node this server uses, and
                // not when the owner approved that node: it is then trusted with it.
                broad.push(Claim {
                    device: &d.id,
                    net: n,
                    text: r,
                });
            }
        }
    }
    let mut left = Vec::new();
    let mut keep = Vec::new();
    for (id, n, text) in wanted {
        let host_claim = if n.prefix_len() == n.max_prefix_len() {
            hosts.get(&n.addr()).and_then(|v| v.first()).copied()
        } else {
            // A route: every unapproved address inside it is a claim.
            hosts
                .iter()
                .find(|(ip, _)| n.contains(*ip))
                .and_then(|(_, v)| v.first())
                .copied()
        };
        let by = host_claim
            .map(|by| (by, text.to_owned()))
            .filter(|(by, _)| *by != id)
            .or_else(|| {
                broad
                    .iter()
                    .find(|c| c.device != id && overlap(&c.net, &n))
                    .map(|c| (c.device, c.text.to_owned()))
            });
        match by {
            Some((by, claim)) => left.push(LeftOut {
                device: id.clone(),
                net: text.to_owned(),
                by: by.clone(),
                claim: if host_claim.is_some() {
                    "an address of its own".to_owned()
                } else {
                    claim
                },
            }),
            None => keep.push(n),
        }
    }
    left.sort_by(|a, b| (&a.device, &a.net).cmp(&(&b.device, &b.net)));
    (GuardSet::from_nets(keep), left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, NodeKey};

    fn dev(id: &str, addrs: &[&str], routes: &[&str]) -> KnownDevice {
        let mut device = Device::for_tests(id);
        device.node_key = NodeKey(format!("nodekey:{id}"));
        device.addresses = addrs.iter().map(|s| s.to_string()).collect();
        device.routes = routes.iter().map(|s| s.to_string()).collect();
        KnownDevice {
            device,
            removed: false,
            expiring_alerted: None,
            last_handshake: None,
            after_baseline: false,
        }
    }

    fn approve(ks: &[&KnownDevice]) -> BTreeMap<StableNodeId, Approval> {
        ks.iter()
            .map(|k| {
                (
                    k.device.id.clone(),
                    Approval {
                        device: k.device.id.clone(),
                        node_key: k.device.node_key.0.clone(),
                        routes: k.device.routes.clone(),
                        at: String::new(),
                        by: "t".into(),
                    },
                )
            })
            .collect()
    }

    fn v4(set: &GuardSet) -> Vec<String> {
        set.v4.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_approved_current_unshared_addresses_and_routes() {
        let a = dev(
            "nA",
            &["100.64.0.2", "fd7a:115c:a1e0::2"],
            &["192.168.1.0/24"],
        );
        let b = dev("nB", &["100.64.0.3"], &[]);
        let c = dev("nC", &["100.64.0.4"], &[]);
        let mut gone = dev("nD", &["100.64.0.5"], &[]);
        gone.removed = true;
        let mut me = dev("nSelf", &["100.64.0.1"], &[]);
        me.device.is_self = true;
        let approved = approve(&[&a, &c, &gone, &me]);
        let (set, left) = desired([&a, &b, &c, &gone, &me], &approved, None);
        assert_eq!(
            v4(&set),
            ["100.64.0.2/32", "100.64.0.4/32", "192.168.1.0/24"]
        );
        assert_eq!(set.v6.len(), 1);
        assert!(left.is_empty());
        // B takes C's address too: nobody's to let in.
        let b_took_it = dev("nB", &["100.64.0.3", "100.64.0.4"], &[]);
        let (set, left) = desired([&a, &b_took_it, &c], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.2/32", "192.168.1.0/24"]);
        assert_eq!(left[0].by.0, "nB");
        // A new node key under an approved ID is not approved.
        let mut rekeyed = a.clone();
        rekeyed.device.node_key = NodeKey("nodekey:attacker".into());
        let (set, _) = desired([&rekeyed, &c], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.4/32"]);
    }

    /// Review G2: a route of an unapproved device claims every approved address it holds,
    /// whatever its length, inside or across the tailnet's ranges.
    #[test]
    fn a_broad_route_of_an_unapproved_device_claims_what_it_holds() {
        let a = dev("nA", &["100.64.0.2", "fd7a:115c:a1e0::2"], &[]);
        let approved = approve(&[&a]);
        for route in [
            "100.64.0.2/32",
            "100.64.0.0/11",
            "100.64.0.0/10",
            "100.0.0.0/8",
            "0.0.0.0/1",
        ] {
            let m = dev("nM", &["100.64.0.9"], &[route]);
            let (set, left) = desired([&a, &m], &approved, None);
            assert!(set.v4.is_empty(), "{route}: {set:?}");
            assert_eq!(left[0].claim, route);
        }
        for route in ["fd7a:115c:a1e0::/48", "8000::/1"] {
            let m = dev("nM", &["100.64.0.9"], &[route]);
            let (set, _) = desired([&a, &m], &approved, None);
            assert!(set.v6.is_empty(), "{route}");
            assert_eq!(set.v4.len(), 1, "{route}");
        }
        // An exit node's default route claims everything only when this server uses it.
        let exit = dev("nX", &["100.64.0.9"], &["0.0.0.0/0", "::/0"]);
        let (set, _) = desired([&a, &exit], &approved, None);
        assert_eq!(set.len(), 2);
        let (set, left) = desired([&a, &exit], &approved, Some(&StableNodeId("nX".into())));
        assert_eq!(set.len(), 0);
        assert_eq!(left.len(), 2);
        // Unless the owner approved that exit node.
        let approved = approve(&[&a, &exit]);
        let (set, _) = desired([&a, &exit], &approved, Some(&StableNodeId("nX".into())));
        assert_eq!(set.len(), 3);
    }

    /// Issue 26: a route is let in only as approved with its device; a route added later waits,
    /// and claims what it holds meanwhile; one an unapproved device shares is nobody's.
    #[test]
    fn routes_are_approved_with_their_device_and_never_shared() {
        let mut r = dev("nR", &["100.64.0.7"], &["10.5.0.0/16"]);
        let a = dev("nA", &["100.64.0.2"], &[]);
        let approved = approve(&[&r, &a]);
        let (set, _) = desired([&r, &a], &approved, None);
        assert_eq!(v4(&set), ["10.5.0.0/16", "100.64.0.2/32", "100.64.0.7/32"]);
        // Added after the approval: not let in, and it claims A's address.
        r.device.routes.push("100.64.0.0/24".into());
        let (set, left) = desired([&r, &a], &approved, None);
        assert_eq!(v4(&set), ["10.5.0.0/16", "100.64.0.7/32"]);
        assert_eq!(
            (left[0].device.0.as_str(), left[0].by.0.as_str()),
            ("nA", "nR")
        );
        // An unapproved device claims part of the approved subnet.
        r.device.routes.pop();
        let m = dev("nM", &["100.64.0.9"], &["10.5.3.0/24"]);
        let (set, _) = desired([&r, &a, &m], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.2/32", "100.64.0.7/32"]);
        // An approved route that holds an unapproved device's address is left out too.
        let wide = dev("nW", &["100.64.0.8"], &["100.64.0.0/24"]);
        let m = dev("nM", &["100.64.0.9"], &[]);
        let approved = approve(&[&wide]);
        let (set, _) = desired([&wide, &m], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.8/32"]);
        // An exit node's own default route is never let in.
        let x = dev("nX", &["100.64.0.10"], &["0.0.0.0/0"]);
        let approved = approve(&[&x]);
        let (set, _) = desired([&x], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.10/32"]);
    }

    /// Review G3: addresses outside the tailnet's ranges (a headscale `prefixes.v4` elsewhere)
    /// are judged like any other.
    #[test]
    fn addresses_outside_the_tailnet_ranges_are_judged_too() {
        let a = dev("nA", &["10.99.0.2"], &[]);
        let m = dev("nM", &["10.99.0.5"], &[]);
        let approved = approve(&[&a]);
        let (set, _) = desired([&a, &m], &approved, None);
        assert_eq!(v4(&set), ["10.99.0.2/32"]);
    }
}
