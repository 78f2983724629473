//! This node's netmap, as far as access goes: the packet filter and SSH policy the control plane
//! pushed to it, plus `tka/status` and `prefs`. The netmap comes from one of three places
//! (`localapi::LocalApi::node_view` picks): the first line of `watch-ipn-bus?mask=8`
//! (NotifyInitialNetMap, readable by any local user, gone in tailscaled 1.104), the privileged
//! relay (`crate::privileged`), or `POST debug?action=current-netmap` when the monitor itself has
//! the LocalAPI's write permission. See spec/access.md for why not the `debug-packet-filter-*`
//! endpoints (write permission, and stale on >= 1.100 after an incremental filter update).
//!
//! `netmap.NetworkMap` has no JSON tags, so its keys are Go field names, and it is internal to
//! tailscale ("may change without notice"): everything but the fields below is skipped, and a
//! missing field is told apart from an empty one. A rule that does not parse is an error naming
//! the field — never an empty filter, which would read as "nobody can reach us any more".

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::cut::Cut;
use super::wire::{null_default, present};
use crate::model::access::{
    CapGrant, DstPorts, FilterRule, NetmapPeer, NodeTrust, ServeDoors, SshAction, SshPrincipal,
    SshRule, TailnetLock,
};

#[derive(Deserialize)]
struct Notify {
    #[serde(rename = "NetMap", default)]
    net_map: Option<NetMap>,
}

/// `netmap.NetworkMap`. `P` and `U` are what its peers and user profiles are read as: the
/// privileged relay skips both ([`IgnoredAny`]): it passes on no name.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de> + Default, U: Deserialize<'de> + Default"))]
struct NetMap<P = Vec<PeerWire>, U = BTreeMap<String, ProfileWire>> {
    #[serde(rename = "SelfNode", default)]
    self_node: Option<SelfWire>,
    #[serde(rename = "PacketFilterRules", default, deserialize_with = "present")]
    rules: Option<Option<Vec<RuleWire>>>,
    #[serde(rename = "PacketFilter", default, deserialize_with = "present")]
    matches: Option<Option<Vec<MatchWire>>>,
    #[serde(rename = "SSHPolicy", default)]
    ssh: Option<SshPolicyWire>,
    #[serde(rename = "Peers", default, deserialize_with = "null_default")]
    peers: P,
    #[serde(rename = "UserProfiles", default, deserialize_with = "null_default")]
    user_profiles: U,
}

/// This node's own identity in the netmap (`SelfNode`), to check a relayed netmap is this node's.
#[derive(Deserialize, Default)]
struct SelfWire {
    #[serde(rename = "StableID", default)]
    stable_id: String,
    #[serde(rename = "Addresses", default, deserialize_with = "null_default")]
    addresses: Vec<String>,
}

/// The identity fields of a `tailcfg.Node` peer: the same netmap as the filter, so a source
/// that just became a peer is named even before `/status` lists it.
#[derive(Deserialize)]
pub(crate) struct PeerWire {
    #[serde(rename = "StableID", default)]
    stable_id: String,
    #[serde(rename = "User", default)]
    user: i64,
    #[serde(rename = "Addresses", default, deserialize_with = "null_default")]
    addresses: Vec<String>,
    #[serde(rename = "Tags", default, deserialize_with = "null_default")]
    tags: Vec<String>,
    #[serde(rename = "Hostinfo", default)]
    hostinfo: Option<HostinfoWire>,
    #[serde(rename = "Name", default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct HostinfoWire {
    #[serde(rename = "Hostname", default)]
    hostname: String,
}

#[derive(Deserialize)]
struct ProfileWire {
    #[serde(rename = "LoginName", default)]
    login_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuleWire {
    #[serde(rename = "SrcIPs", default, deserialize_with = "null_default")]
    src_ips: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    dst_ports: Vec<DstWire>,
    #[serde(rename = "IPProto", default, deserialize_with = "null_default")]
    ip_proto: Vec<u8>,
    #[serde(default, deserialize_with = "null_default")]
    cap_grant: Vec<CapGrantWire>,
}

#[derive(Deserialize)]
struct DstWire {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "Ports", default)]
    ports: Option<PortRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortRange {
    first: u16,
    last: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CapGrantWire {
    #[serde(default, deserialize_with = "null_default")]
    dsts: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    caps: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    cap_map: BTreeMap<String, IgnoredAny>,
}

/// `filtertype.Match` (`NetMap.PacketFilter`), for daemons whose netmap has no rules.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MatchWire {
    #[serde(rename = "IPProto", default, deserialize_with = "null_default")]
    ip_proto: Vec<u8>,
    #[serde(default, deserialize_with = "null_default")]
    srcs: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    dsts: Vec<NetPorts>,
    #[serde(default, deserialize_with = "null_default")]
    caps: Vec<MatchCap>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetPorts {
    net: String,
    ports: PortRange,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MatchCap {
    dst: String,
    cap: String,
}

#[derive(Deserialize)]
struct SshPolicyWire {
    #[serde(default, deserialize_with = "null_default")]
    rules: Vec<SshRuleWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SshRuleWire {
    #[serde(default, deserialize_with = "null_default")]
    principals: Vec<PrincipalWire>,
    #[serde(default, deserialize_with = "null_default")]
    ssh_users: BTreeMap<String, String>,
    #[serde(default)]
    action: Option<ActionWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PrincipalWire {
    #[serde(default)]
    node: String,
    #[serde(rename = "nodeIP", default)]
    node_ip: String,
    #[serde(default)]
    user_login: String,
    #[serde(default)]
    any: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ActionWire {
    #[serde(default)]
    reject: bool,
    #[serde(default)]
    accept: bool,
    #[serde(default)]
    hold_and_delegate: String,
    #[serde(default, deserialize_with = "null_default")]
    recorders: Vec<String>,
}

/// The access part of one netmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetmapAccess {
    /// `None` when the netmap has neither `PacketFilterRules` nor `PacketFilter`.
    pub rules: Option<Vec<FilterRule>>,
    pub ssh: Option<Vec<SshRule>>,
    pub peers: Vec<NetmapPeer>,
    /// `SelfNode.StableID` (empty when the netmap has none).
    pub self_id: String,
}

/// What the privileged relay passes on of a netmap: the filter, the SSH policy and this node's
/// own stable ID and addresses. No peer, no name, no key.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
pub struct FilterOnly {
    pub self_id: String,
    /// Bare IPs.
    pub self_addresses: Vec<String>,
    pub rules: Option<Vec<FilterRule>>,
    pub ssh: Option<Vec<SshRule>>,
}

/// Parses the first line of `watch-ipn-bus?mask=8`. The error says what is wrong, in one line.
#[cfg(test)]
pub fn parse_initial_notify(line: &[u8]) -> Result<NetmapAccess, String> {
    let mut cut = initial_notify_cut();
    cut.feed(line);
    parse_initial_notify_cut(cut)
}

/// The first IPN bus message, to be fed as it arrives: its netmap's peers are parsed one by one
/// ([`Cut`]), and the line is never held whole (8 MB at 10,000 peers).
pub(crate) fn initial_notify_cut() -> Cut<PeerWire> {
    Cut::new(&["NetMap", "Peers"], false)
}

/// The line fed to [`initial_notify_cut`], parsed: what [`parse_initial_notify`] gives.
pub(crate) fn parse_initial_notify_cut(cut: Cut<PeerWire>) -> Result<NetmapAccess, String> {
    let malformed = |e| format!("malformed packet filter or SSH policy in the netmap: {e}");
    let (rest, peers) = cut.finish().map_err(malformed)?;
    let n: Notify = serde_json::from_slice(&rest).map_err(|e| malformed(e.to_string()))?;
    let mut nm = n
        .net_map
        .ok_or("the first IPN bus message carries no NetMap (is the daemon logged in?)")?;
    if !peers.is_empty() {
        if !nm.peers.is_empty() {
            // A second `Peers` key, spelled with an escape: a duplicate field above.
            return Err(malformed("a second Peers list".into()));
        }
        nm.peers = peers;
    }
    access_of(nm)
}

/// Parses the answer of `POST /localapi/v0/debug?action=current-netmap` (a bare
/// `netmap.NetworkMap`), peers included.
pub fn parse_current_netmap(body: &[u8]) -> Result<NetmapAccess, String> {
    let nm: NetMap = serde_json::from_slice(body)
        .map_err(|e| format!("malformed packet filter or SSH policy in the netmap: {e}"))?;
    access_of(nm)
}

/// A `tailcfg.Node` peer as the guard's root side reads it: keys and prefixes, plus the tags and
/// owner `approve_new` matches on (compared, never printed).
#[derive(Deserialize)]
struct GuardPeerWire {
    #[serde(rename = "StableID", default)]
    stable_id: String,
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "User", default)]
    user: i64,
    #[serde(rename = "Addresses", default, deserialize_with = "null_default")]
    addresses: Vec<String>,
    #[serde(rename = "AllowedIPs", default, deserialize_with = "null_default")]
    allowed_ips: Vec<String>,
    #[serde(rename = "PrimaryRoutes", default, deserialize_with = "null_default")]
    primary_routes: Vec<String>,
    #[serde(rename = "Tags", default, deserialize_with = "null_default")]
    tags: Vec<String>,
}

/// One peer for the guard's root side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardPeer {
    pub peer: crate::model::guard::Peer,
    pub tags: Vec<String>,
    pub login: Option<String>,
}

/// The root side's parse of `current-netmap` for the guard: every peer (keyed by node key, none
/// skipped), its addresses and its other `AllowedIPs`, and this node's own stable ID.
pub fn parse_guard_peers(body: &[u8]) -> Result<(String, Vec<GuardPeer>), String> {
    let nm: NetMap<Vec<GuardPeerWire>, BTreeMap<String, ProfileWire>> =
        serde_json::from_slice(body).map_err(|e| format!("malformed netmap: {e}"))?;
    let me = nm.self_node.unwrap_or_default();
    let net = crate::diff::guard::set::net;
    let peers = nm
        .peers
        .into_iter()
        .map(|p| {
            let addresses: Vec<ipnet::IpNet> = p.addresses.iter().filter_map(|a| net(a)).collect();
            let mut routes: Vec<ipnet::IpNet> = p
                .allowed_ips
                .iter()
                .chain(&p.primary_routes)
                .filter_map(|r| net(r))
                .filter(|n| !addresses.contains(n))
                .collect();
            routes.sort();
            routes.dedup();
            GuardPeer {
                login: nm
                    .user_profiles
                    .get(&p.user.to_string())
                    .map(|u| u.login_name.clone()),
                tags: p.tags,
                peer: crate::model::guard::Peer {
                    id: p.stable_id,
                    node_key: p.key,
                    addresses,
                    routes,
                },
            }
        })
        .collect();
    Ok((me.stable_id, peers))
}

/// The privileged relay's parse of `current-netmap`: peers and profiles skipped unread.
pub fn parse_filter_only(body: &[u8]) -> Result<FilterOnly, String> {
    let nm: NetMap<IgnoredAny, IgnoredAny> = serde_json::from_slice(body)
        .map_err(|e| format!("malformed packet filter or SSH policy in the netmap: {e}"))?;
    let me = nm.self_node.unwrap_or_default();
    let (rules, ssh) = filter_of(nm.rules, nm.matches, nm.ssh)?;
    Ok(FilterOnly {
        self_id: me.stable_id,
        self_addresses: me.addresses.into_iter().map(bare_ip).collect(),
        rules,
        ssh,
    })
}

/// The address of a prefix (`100.64.0.1/32` → `100.64.0.1`), cut in place.
fn bare_ip(mut a: String) -> String {
    if let Some(i) = a.find('/') {
        a.truncate(i);
    }
    a
}

type Filter = (Option<Vec<FilterRule>>, Option<Vec<SshRule>>);

fn filter_of(
    rules: Option<Option<Vec<RuleWire>>>,
    matches: Option<Option<Vec<MatchWire>>>,
    ssh: Option<SshPolicyWire>,
) -> Result<Filter, String> {
    let rules = match (rules, matches) {
        (Some(rules), _) => Some(
            rules
                .unwrap_or_default()
                .into_iter()
                .map(rule)
                .collect::<Result<_, _>>()?,
        ),
        (None, Some(matches)) => Some(
            matches
                .unwrap_or_default()
                .into_iter()
                .map(from_match)
                .collect(),
        ),
        (None, None) => None,
    };
    Ok((
        rules,
        ssh.map(|p| p.rules.into_iter().map(ssh_rule).collect()),
    ))
}

fn access_of(nm: NetMap) -> Result<NetmapAccess, String> {
    let (rules, ssh) = filter_of(nm.rules, nm.matches, nm.ssh)?;
    let self_id = nm.self_node.map(|n| n.stable_id).unwrap_or_default();
    let logins: std::collections::HashMap<i64, &str> = nm
        .user_profiles
        .iter()
        .filter_map(|(id, u)| Some((id.parse().ok()?, u.login_name.as_str())))
        .collect();
    let mut peers: Vec<NetmapPeer> = nm
        .peers
        .into_iter()
        .filter(|p| !p.stable_id.is_empty())
        .map(|p| {
            let login = logins
                .get(&p.user)
                .map_or_else(|| format!("user {}", p.user), |l| (*l).to_owned());
            let hostname = match p.hostinfo {
                Some(h) if !h.hostname.is_empty() => h.hostname,
                _ => p.name.split('.').next().unwrap_or_default().to_owned(),
            };
            NetmapPeer {
                id: p.stable_id,
                hostname,
                owner: if p.tags.is_empty() {
                    login
                } else {
                    p.tags.join(", ")
                },
                addresses: p.addresses.into_iter().map(bare_ip).collect(),
            }
        })
        .collect();
    // By ID (stable: one ID listed twice keeps its order), for the walk beside `/status`.
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(NetmapAccess {
        rules,
        ssh,
        peers,
        self_id,
    })
}

fn rule(r: RuleWire) -> Result<FilterRule, String> {
    if r.src_ips.iter().any(|s| s.trim().is_empty()) {
        return Err("malformed packet filter in the netmap: an empty SrcIPs entry".into());
    }
    let mut dsts = Vec::with_capacity(r.dst_ports.len());
    for d in r.dst_ports {
        if d.ip.trim().is_empty() {
            return Err(
                "malformed packet filter in the netmap: a DstPorts entry without IP".into(),
            );
        }
        let (first, last) = d.ports.map_or((0, 65535), |p| (p.first, p.last));
        if first > last {
            return Err(format!(
                "malformed packet filter in the netmap: port range {first}-{last} for {}",
                crate::sanitize::line(&d.ip, 60)
            ));
        }
        dsts.push(DstPorts {
            ip: d.ip,
            first,
            last,
        });
    }
    let caps = r
        .cap_grant
        .into_iter()
        .map(|g| {
            let mut caps = g.caps;
            caps.extend(g.cap_map.into_keys());
            caps.sort();
            caps.dedup();
            CapGrant { dsts: g.dsts, caps }
        })
        .collect();
    Ok(FilterRule {
        srcs: r.src_ips,
        dsts,
        protos: r.ip_proto,
        caps,
    })
}

fn from_match(m: MatchWire) -> FilterRule {
    FilterRule {
        srcs: m.srcs,
        dsts: m
            .dsts
            .into_iter()
            .map(|d| DstPorts {
                ip: d.net,
                first: d.ports.first.min(d.ports.last),
                last: d.ports.last.max(d.ports.first),
            })
            .collect(),
        protos: m.ip_proto,
        caps: m
            .caps
            .into_iter()
            .map(|c| CapGrant {
                dsts: vec![c.dst],
                caps: vec![c.cap],
            })
            .collect(),
    }
}

fn ssh_rule(r: SshRuleWire) -> SshRule {
    let a = r.action.unwrap_or_default();
    let action = if a.reject {
        SshAction::Reject
    } else if !a.hold_and_delegate.is_empty() {
        SshAction::Check
    } else if a.accept {
        SshAction::Accept
    } else {
        SshAction::Reject
    };
    SshRule {
        principals: r
            .principals
            .into_iter()
            .filter_map(|p| {
                if p.any {
                    Some(SshPrincipal::Any)
                } else if !p.node.is_empty() {
                    Some(SshPrincipal::Node(p.node))
                } else if !p.node_ip.is_empty() {
                    Some(SshPrincipal::NodeIp(p.node_ip))
                } else if !p.user_login.is_empty() {
                    Some(SshPrincipal::UserLogin(p.user_login))
                } else {
                    None
                }
            })
            .collect(),
        users: r.ssh_users,
        action,
        recorded: !a.recorders.is_empty(),
    }
}

/// `GET /localapi/v0/tka/status` (`ipnstate.NetworkLockStatus`).
pub fn parse_tka(body: &[u8]) -> Result<TailnetLock, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Key {
        #[serde(default)]
        key: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Status {
        #[serde(default)]
        enabled: bool,
        #[serde(default, deserialize_with = "null_default")]
        trusted_keys: Vec<Key>,
    }
    let s: Status =
        serde_json::from_slice(body).map_err(|e| format!("malformed tka/status: {e}"))?;
    let mut trusted_keys: Vec<String> = s.trusted_keys.into_iter().map(|k| k.key).collect();
    trusted_keys.sort();
    Ok(TailnetLock {
        enabled: s.enabled,
        trusted_keys,
    })
}

/// `GET /localapi/v0/prefs`: the Tailscale SSH server and the advertised routes.
pub fn parse_prefs(body: &[u8], trust: &mut NodeTrust) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Prefs {
        #[serde(rename = "RunSSH", default)]
        run_ssh: bool,
        #[serde(rename = "AdvertiseRoutes", default, deserialize_with = "null_default")]
        advertise_routes: Vec<String>,
        #[serde(rename = "RunWebClient", default)]
        run_web_client: bool,
        /// Absent before tailscale 1.102: unknown there, not off.
        #[serde(rename = "RemoteConfig", default)]
        remote_config: Option<bool>,
        #[serde(rename = "ShieldsUp", default)]
        shields_up: bool,
        #[serde(rename = "ExitNodeID", default, deserialize_with = "null_default")]
        exit_node_id: String,
    }
    let p: Prefs = serde_json::from_slice(body).map_err(|e| format!("malformed prefs: {e}"))?;
    let mut routes = p.advertise_routes;
    routes.sort();
    trust.ssh_server = Some(p.run_ssh);
    trust.advertised_routes = Some(routes);
    trust.web_client = Some(p.run_web_client);
    trust.remote_config = p.remote_config;
    trust.shields_up = Some(p.shields_up);
    trust.exit_node_id = Some(p.exit_node_id);
    Ok(())
}

/// `GET /localapi/v0/serve-config` (`ipn.ServeConfig`, `ipn/serve.go`): the TCP ports, funnel
/// host:ports and VIP services tailscaled answers itself, foreground sessions included. `null`
/// (nothing served) is none.
pub fn parse_serve_config(body: &[u8]) -> Result<ServeDoors, String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Serve {
        #[serde(rename = "TCP", deserialize_with = "null_default")]
        tcp: BTreeMap<String, serde::de::IgnoredAny>,
        #[serde(rename = "AllowFunnel", deserialize_with = "null_default")]
        allow_funnel: BTreeMap<String, bool>,
        #[serde(rename = "Services", deserialize_with = "null_default")]
        services: BTreeMap<String, serde::de::IgnoredAny>,
        #[serde(rename = "Foreground", deserialize_with = "null_default")]
        foreground: BTreeMap<String, Serve>,
    }
    let s: Option<Serve> =
        serde_json::from_slice(body).map_err(|e| format!("malformed serve-config: {e}"))?;
    let s = s.unwrap_or_default();
    let mut out = ServeDoors::default();
    for c in std::iter::once(&s).chain(s.foreground.values()) {
        for p in c.tcp.keys() {
            let port = p.parse::<u16>().map_err(|_| {
                format!(
                    "serve-config: TCP port {:?} is not a port",
                    crate::sanitize::line(p, 20)
                )
            })?;
            out.tcp.push(port);
        }
        out.funnel.extend(
            c.allow_funnel
                .iter()
                .filter(|(_, on)| **on)
                .map(|(k, _)| crate::sanitize::line(k, 260)),
        );
        out.services
            .extend(c.services.keys().map(|k| crate::sanitize::line(k, 80)));
    }
    for v in [&mut out.funnel, &mut out.services] {
        v.sort();
        v.dedup();
    }
    out.tcp.sort_unstable();
    out.tcp.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETMAP: &[u8] = br#"{"SelfNode":{"StableID":"n1","Addresses":["100.64.0.1/32"]},"Peers":[{"StableID":"n2","User":3,"Addresses":["100.64.0.2/32"],"Hostinfo":{"Hostname":"b"},"Name":"b.ts.net."}],"UserProfiles":{"3":{"LoginName":"bob@"}},"PacketFilterRules":[{"SrcIPs":["100.64.0.2","fd7a:115c:a1e0::2"],"DstPorts":[{"IP":"100.64.0.1","Ports":{"First":22,"Last":22}}],"IPProto":[6],"CapGrant":[{"Dsts":["100.64.0.1/32"],"Caps":["x"]}]}],"PacketFilter":[{"IPProto":[6],"Srcs":["100.64.0.2/32"],"Dsts":[{"Net":"100.64.0.1/32","Ports":{"First":80,"Last":80}}]}],"SSHPolicy":{"rules":[{"principals":[{"nodeIP":"100.64.0.2"},{"userLogin":"bob@"},{"any":true}],"sshUsers":{"root":"root","*":"="},"action":{"accept":true,"recorders":["1.2.3.4:80"]}}]}}"#;

    /// Issue 20: the netmap (bus line, `current-netmap`, the relay's cut), `tka/status` and
    /// `prefs` never panic on hostile input, and parse in bounded time.
    #[test]
    fn fuzz_netmap_tka_prefs() {
        let line = [&br#"{"NetMap":"#[..], NETMAP, b"}"].concat();
        crate::fuzz::check("netmap bus line", &[&line], |b| {
            let _ = parse_initial_notify(b);
        });
        crate::fuzz::check("current-netmap", &[NETMAP], |b| {
            let _ = parse_current_netmap(b);
            let _ = parse_filter_only(b);
        });
        crate::fuzz::check(
            "tka/status and prefs",
            &[
                br#"{"Enabled":true,"TrustedKeys":[{"Key":"tlpub:a"}]}"#,
                br#"{"RunSSH":true,"AdvertiseRoutes":["10.0.0.0/8","0.0.0.0/0"]}"#,
            ],
            |b| {
                let _ = parse_tka(b);
                let _ = parse_prefs(b, &mut NodeTrust::default());
            },
        );
    }

    /// The bus line fed in any pieces gives what a whole-line parse gives: peers (with hostile
    /// names that look like the syntax the cutter follows), filter and SSH policy alike.
    #[test]
    fn notify_in_any_pieces_is_notify_whole() {
        let whole = |b: &[u8]| -> Result<String, String> {
            let n: Notify = serde_json::from_slice(b).map_err(|e| e.to_string())?;
            access_of(n.net_map.ok_or("none")?).map(|a| format!("{a:?}"))
        };
        let hostile = br#"{"Version":"Peers","NetMap":{"SelfNode":{"StableID":"n1","Peers":[{"StableID":"x"}]},"Other":{"Peers":[1]},"Peers":[{"StableID":"n2","User":3,"Addresses":["100.64.0.2/32"],"Hostinfo":{"Hostname":"b\"]}[{"},"Name":"]\"["},[],{"StableID":"n3","Tags":["tag:]"]}],"UserProfiles":{"3":{"LoginName":"[\"Peers\":["}}},"Peers":[{"StableID":"top"}]}"#;
        let line = [&br#"{"NetMap":"#[..], NETMAP, b"}"].concat();
        crate::source::cut::agree::always(&[line, hostile.to_vec()], whole, |b, cuts| {
            let cut = crate::source::cut::agree::pieces(initial_notify_cut(), b, cuts);
            parse_initial_notify_cut(cut).map(|a| format!("{a:?}"))
        });
        let a = parse_initial_notify(hostile).unwrap();
        let ids: Vec<&str> = a.peers.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["n2", "n3"]);
        assert_eq!(a.peers[0].hostname, "b\"]}[{");
    }

    #[test]
    fn rules_ssh_and_their_absence() {
        let line = br#"{"NetMap":{"Peers":[{"x":1}],"PacketFilterRules":[{"SrcIPs":["100.64.0.2","fd7a:115c:a1e0::2"],"DstPorts":[{"IP":"100.64.0.1","Ports":{"First":22,"Last":22}}]}],
            "SSHPolicy":{"rules":[{"principals":[{"nodeIP":"100.64.0.2"}],"sshUsers":{"root":"root"},"action":{"accept":true,"recorders":["1.2.3.4:80"]}}]}}}"#;
        let a = parse_initial_notify(line).unwrap();
        let rules = a.rules.unwrap();
        assert_eq!(rules[0].srcs.len(), 2);
        assert_eq!((rules[0].dsts[0].first, rules[0].dsts[0].last), (22, 22));
        let ssh = a.ssh.unwrap();
        assert_eq!(ssh[0].action, SshAction::Accept);
        assert!(ssh[0].recorded);

        let empty =
            parse_initial_notify(br#"{"NetMap":{"PacketFilterRules":null,"SSHPolicy":null}}"#)
                .unwrap();
        assert_eq!(empty.rules, Some(vec![]));
        assert_eq!(empty.ssh, None);
        let old = parse_initial_notify(br#"{"NetMap":{"PacketFilter":[{"IPProto":[6],"Srcs":["100.64.0.2/32"],"Dsts":[{"Net":"100.64.0.1/32","Ports":{"First":80,"Last":80}}]}]}}"#).unwrap();
        assert_eq!(old.rules.unwrap()[0].dsts[0].ip, "100.64.0.1/32");
        let none = parse_initial_notify(br#"{"NetMap":{"Peers":[]}}"#).unwrap();
        assert_eq!(none.rules, None, "unknown, not empty");
    }

    #[test]
    fn malformed_rules_are_errors_not_empty() {
        for bad in [
            &br#"{"NetMap":{"PacketFilterRules":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":"x","Last":1}}]}]}}"#[..],
            br#"{"NetMap":{"PacketFilterRules":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":90,"Last":80}}]}]}}"#,
            br#"{"NetMap":{"PacketFilterRules":{"not":"a list"}}}"#,
            br#"{"NetMap":{"PacketFilterRules":[{"SrcIPs":[""],"DstPorts":[]}]}}"#,
            br#"{"NetMap":null}"#,
            b"not json",
        ] {
            let e = parse_initial_notify(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
