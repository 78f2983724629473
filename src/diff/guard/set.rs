//! The set the guard lets in, from the peers WireGuard knows and the owner's approvals: one pure
//! function over addresses, routes and node keys, with no names. The root side decides with it
//! (from the netmap it reads itself); the monitor computes it too, from `/status`, to check the
//! root side's answer.
//!
//! tailscaled's WireGuard accepts a packet from a peer when its source lies inside *any* of that
//! peer's prefixes (its addresses and its routes: github.com/tailscale/wireguard-go
//! `device/allowedips.go` `AllowedPeerSourceIP`), whatever their length. So an approved address
//! or route is let in only when no peer that is not approved for it may send from it:
//! - an approved peer's current addresses, and the routes it had when it was approved;
//! - minus everything that overlaps a *claim*: an address or a route of an unapproved peer (any
//!   length, inside or outside the tailnet's ranges), a route of an approved peer that was added
//!   after its approval, and the default route of the exit node this server uses when that node
//!   is not approved.
//!
//! A peer is approved by its stable ID *and* node key; one without a stable ID, or sharing one
//! with another peer, is never approved (review G4): it is a claim like any unapproved peer.
//!
//! Everything else is dropped at the interface (replies to this server's own connections
//! excepted, by conntrack, on the root side).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::guard::{Anomaly, Approval, GuardSet, LeftOut, Peer};
use crate::model::state::KnownDevice;

/// One prefix a peer may send from.
struct Claim {
    peer: usize,
    net: IpNet,
    text: String,
}

/// Parses an address or a prefix (host bits cleared).
pub fn net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The peers of the devices known now (removed ones and this server left out), for the
/// monitor's own computation.
pub fn peers_of_known<'a>(devices: impl IntoIterator<Item = &'a KnownDevice>) -> Vec<Peer> {
    devices
        .into_iter()
        .filter(|k| !k.removed && !k.device.is_self)
        .map(|k| Peer {
            id: k.device.id.0.clone(),
            node_key: k.device.node_key.0.clone(),
            addresses: k.device.addresses.iter().filter_map(|a| net(a)).collect(),
            routes: k.device.routes.iter().filter_map(|r| net(r)).collect(),
        })
        .collect()
}

/// Peers whose identity cannot be trusted: no stable ID, or one that several node keys share.
pub fn anomalies(peers: &[Peer]) -> Vec<Anomaly> {
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for p in peers {
        *by_id.entry(p.id.as_str()).or_default() += 1;
    }
    let mut out: Vec<Anomaly> = peers
        .iter()
        .filter_map(|p| {
            let what = if p.id.is_empty() {
                "no_stable_id"
            } else if by_id[p.id.as_str()] > 1 {
                "shared_stable_id"
            } else {
                return None;
            };
            Some(Anomaly {
                node_key: p.node_key.clone(),
                id: p.id.clone(),
                what: what.into(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.node_key.cmp(&b.node_key));
    out
}

/// The set for `peers`, and what was left out of it and why. `exit_node` is the stable ID of
/// the peer this server sends its traffic through (prefs `ExitNodeID`).
pub fn desired(
    peers: &[Peer],
    approvals: &[Approval],
    exit_node: Option<&str>,
) -> (GuardSet, Vec<LeftOut>) {
    let shared: std::collections::HashSet<&str> = anomalies(peers)
        .iter()
        .filter(|a| a.what == "shared_stable_id")
        .map(|a| {
            peers
                .iter()
                .find(|p| p.node_key == a.node_key)
                .map_or("", |p| p.id.as_str())
        })
        .collect();
    let approval_of = |p: &Peer| {
        (!p.id.is_empty() && !shared.contains(p.id.as_str()))
            .then(|| {
                approvals
                    .iter()
                    .find(|a| a.device.0 == p.id && a.node_key == p.node_key)
            })
            .flatten()
    };
    let name = |i: usize| -> String {
        let p = &peers[i];
        if p.id.is_empty() {
            p.node_key.clone()
        } else {
            p.id.clone()
        }
    };
    let mut wanted: Vec<(usize, IpNet, String)> = Vec::new();
    // Host claims are looked up; broader ones (few) are scanned.
    let mut hosts: HashMap<IpAddr, usize> = HashMap::new();
    let mut broad: Vec<Claim> = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let approval = approval_of(p);
        for n in &p.addresses {
            if approval.is_some() {
                wanted.push((i, *n, n.addr().to_string()));
            } else if n.prefix_len() == n.max_prefix_len() {
                hosts.entry(n.addr()).or_insert(i);
            } else {
                broad.push(Claim {
                    peer: i,
                    net: *n,
                    text: n.to_string(),
                });
            }
        }
        for n in &p.routes {
            let text = n.to_string();
            let approved = approval.is_some_and(|a| a.routes.iter().any(|r| net(r) == Some(*n)));
            if approved && n.prefix_len() > 0 {
                wanted.push((i, *n, text));
            } else if n.prefix_len() > 0 || (exit_node == Some(p.id.as_str()) && approval.is_none())
            {
                // A default route claims everything only on the exit node this server uses, and
                // not when the owner approved that node: it is then trusted with it.
                broad.push(Claim {
                    peer: i,
                    net: *n,
                    text,
                });
            }
        }
    }
    let mut left = Vec::new();
    let mut keep = Vec::new();
    for (i, n, text) in wanted {
        let host = if n.prefix_len() == n.max_prefix_len() {
            hosts.get(&n.addr()).copied()
        } else {
            // A route: every unapproved address inside it is a claim.
            hosts
                .iter()
                .filter(|(ip, _)| n.contains(*ip))
                .map(|(_, p)| *p)
                .min()
        };
        let by = host
            .filter(|p| *p != i)
            .map(|p| (p, "an address of its own".to_owned()))
            .or_else(|| {
                broad
                    .iter()
                    .find(|c| c.peer != i && overlap(&c.net, &n))
                    .map(|c| (c.peer, c.text.clone()))
            });
        match by {
            Some((p, claim)) => left.push(LeftOut {
                device: peers[i].id.clone(),
                net: text,
                by: name(p),
                claim,
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
    use crate::model::StableNodeId;

    fn peer(id: &str, addrs: &[&str], routes: &[&str]) -> Peer {
        Peer {
            id: id.into(),
            node_key: format!("nodekey:{id}"),
            addresses: addrs.iter().map(|s| net(s).unwrap()).collect(),
            routes: routes.iter().map(|s| net(s).unwrap()).collect(),
        }
    }

    fn approve(ps: &[&Peer]) -> Vec<Approval> {
        ps.iter()
            .map(|p| Approval {
                device: StableNodeId(p.id.clone()),
                node_key: p.node_key.clone(),
                routes: p.routes.iter().map(|n| n.to_string()).collect(),
                at: String::new(),
                by: "t".into(),
            })
            .collect()
    }

    fn v4(set: &GuardSet) -> Vec<String> {
        set.v4.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_approved_current_unshared_addresses_and_routes() {
        let a = peer(
            "nA",
            &["100.64.0.2", "fd7a:115c:a1e0::2"],
            &["192.168.1.0/24"],
        );
        let b = peer("nB", &["100.64.0.3"], &[]);
        let c = peer("nC", &["100.64.0.4"], &[]);
        let approved = approve(&[&a, &c]);
        let (set, left) = desired(&[a.clone(), b, c.clone()], &approved, None);
        assert_eq!(
            v4(&set),
            ["100.64.0.2/32", "100.64.0.4/32", "192.168.1.0/24"]
        );
        assert_eq!(set.v6.len(), 1);
        assert!(left.is_empty());
        // B takes C's address too: nobody's to let in.
        let b_took_it = peer("nB", &["100.64.0.3", "100.64.0.4"], &[]);
        let (set, left) = desired(&[a.clone(), b_took_it, c.clone()], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.2/32", "192.168.1.0/24"]);
        assert_eq!(left[0].by, "nB");
        // A new node key under an approved ID is not approved.
        let mut rekeyed = a.clone();
        rekeyed.node_key = "nodekey:attacker".into();
        let (set, _) = desired(&[rekeyed, c], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.4/32"]);
    }

    /// Review G2: a route of an unapproved peer claims every approved address it holds,
    /// whatever its length, inside or across the tailnet's ranges.
    #[test]
    fn a_broad_route_of_an_unapproved_peer_claims_what_it_holds() {
        let a = peer("nA", &["100.64.0.2", "fd7a:115c:a1e0::2"], &[]);
        let approved = approve(&[&a]);
        for route in [
            "100.64.0.2/32",
            "100.64.0.0/11",
            "100.64.0.0/10",
            "100.0.0.0/8",
            "0.0.0.0/1",
            "64.0.0.0/2",
        ] {
            let m = peer("nM", &["100.64.0.9"], &[route]);
            let (set, left) = desired(&[a.clone(), m], &approved, None);
            assert!(set.v4.is_empty(), "{route}: {set:?}");
            assert_eq!(left[0].claim, route);
        }
        for route in ["fd7a:115c:a1e0::/48", "8000::/1"] {
            let m = peer("nM", &["100.64.0.9"], &[route]);
            let (set, _) = desired(&[a.clone(), m], &approved, None);
            assert!(set.v6.is_empty(), "{route}");
            assert_eq!(set.v4.len(), 1, "{route}");
        }
        // An exit node's default route claims everything only when this server uses it.
        let exit = peer("nX", &["100.64.0.9"], &["0.0.0.0/0", "::/0"]);
        let (set, _) = desired(&[a.clone(), exit.clone()], &approved, None);
        assert_eq!(set.len(), 2);
        let (set, left) = desired(&[a.clone(), exit.clone()], &approved, Some("nX"));
        assert_eq!(set.len(), 0);
        assert_eq!(left.len(), 2);
        // Unless the owner approved that exit node.
        let approved = approve(&[&a, &exit]);
        let (set, _) = desired(&[a, exit], &approved, Some("nX"));
        assert_eq!(set.len(), 3);
    }

    /// Issue 26: a route is let in only as approved with its peer; a route added later waits,
    /// and claims what it holds meanwhile; one an unapproved peer shares is nobody's.
    #[test]
    fn routes_are_approved_with_their_peer_and_never_shared() {
        let mut r = peer("nR", &["100.64.0.7"], &["10.5.0.0/16"]);
        let a = peer("nA", &["100.64.0.2"], &[]);
        let approved = approve(&[&r, &a]);
        let (set, _) = desired(&[r.clone(), a.clone()], &approved, None);
        assert_eq!(v4(&set), ["10.5.0.0/16", "100.64.0.2/32", "100.64.0.7/32"]);
        // Added after the approval: not let in, and it claims A's address.
        r.routes.push(net("100.64.0.0/24").unwrap());
        let (set, left) = desired(&[r.clone(), a.clone()], &approved, None);
        assert_eq!(v4(&set), ["10.5.0.0/16", "100.64.0.7/32"]);
        assert_eq!((left[0].device.as_str(), left[0].by.as_str()), ("nA", "nR"));
        // An unapproved peer claims part of the approved subnet.
        r.routes.pop();
        let m = peer("nM", &["100.64.0.9"], &["10.5.3.0/24"]);
        let (set, _) = desired(&[r, a, m], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.2/32", "100.64.0.7/32"]);
        // An approved route that holds an unapproved peer's address is left out too.
        let wide = peer("nW", &["100.64.0.8"], &["100.64.0.0/24"]);
        let m = peer("nM", &["100.64.0.9"], &[]);
        let approved = approve(&[&wide]);
        let (set, _) = desired(&[wide, m], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.8/32"]);
        // An exit node's own default route is never let in.
        let x = peer("nX", &["100.64.0.10"], &["0.0.0.0/0"]);
        let approved = approve(&[&x]);
        let (set, _) = desired(&[x], &approved, None);
        assert_eq!(v4(&set), ["100.64.0.10/32"]);
    }

    /// Review G3: addresses outside the tailnet's ranges are judged like any other.
    #[test]
    fn addresses_outside_the_tailnet_ranges_are_judged_too() {
        let a = peer("nA", &["10.99.0.2"], &[]);
        let m = peer("nM", &["10.99.0.5"], &[]);
        let approved = approve(&[&a]);
        let (set, _) = desired(&[a, m], &approved, None);
        assert_eq!(v4(&set), ["10.99.0.2/32"]);
    }

    /// Review G4: a peer without a stable ID, or one sharing an approved peer's ID under another
    /// node key, is named and claims what it holds; the approved ID shared is no longer trusted.
    #[test]
    fn peers_without_an_identity_of_their_own_are_claims_and_anomalies() {
        let a = peer("nA", &["100.64.0.2"], &[]);
        let approved = approve(&[&a]);
        let mut ghost = peer("", &["100.64.0.9"], &["100.64.0.2/32"]);
        ghost.node_key = "nodekey:ghost".into();
        let (set, left) = desired(&[a.clone(), ghost.clone()], &approved, None);
        assert!(set.v4.is_empty());
        assert_eq!(left[0].by, "nodekey:ghost");
        assert_eq!(anomalies(&[a.clone(), ghost])[0].what, "no_stable_id");
        let mut twin = peer("nA", &["100.64.0.9"], &[]);
        twin.node_key = "nodekey:twin".into();
        let (set, _) = desired(&[a.clone(), twin.clone()], &approved, None);
        assert!(set.v4.is_empty(), "a shared ID approves nobody: {set:?}");
        let an = anomalies(&[a, twin]);
        assert_eq!(an.len(), 2);
        assert!(an.iter().all(|x| x.what == "shared_stable_id"));
    }
}
