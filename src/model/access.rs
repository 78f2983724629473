//! Who may reach this server, in two forms.
//!
//! [`NodeView`] is what tailscaled was told, converted once at the edge from the netmap's
//! `PacketFilterRules` and `SSHPolicy`, LocalAPI `tka/status`, `prefs` and `/status`
//! `ClientVersion`: raw sources (IPs, CIDRs, `*`), no interpretation. It travels in the
//! [`Snapshot`](super::Snapshot).
//!
//! [`Access`] is the canonical model the core derives from it (`diff::access`): sources resolved
//! to devices and users, IPv4 and IPv6 forms of one device merged, port ranges merged, sorted. Two
//! policy pushes that mean the same for this node give equal `Access` values, so a push that
//! changes nothing for this node produces no event. `Access` is what the store keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One `tailcfg.FilterRule` pushed to this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    /// `SrcIPs`: IPs, CIDRs, `a-b` ranges, `*`, or `cap:<node capability>`.
    pub srcs: Vec<String>,
    pub dsts: Vec<DstPorts>,
    /// `IPProto`; empty means TCP, UDP and ICMP.
    pub protos: Vec<u8>,
    pub caps: Vec<CapGrant>,
}

/// One `DstPorts` entry: a destination (IP, CIDR, range or `*`) and a port range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DstPorts {
    pub ip: String,
    pub first: u16,
    pub last: u16,
}

/// One `CapGrant`: peer capabilities granted toward these destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapGrant {
    pub dsts: Vec<String>,
    pub caps: Vec<String>,
}

/// Who an SSH rule applies to (`tailcfg.SSHPrincipal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SshPrincipal {
    Node(String),
    NodeIp(String),
    UserLogin(String),
    Any,
}

/// One `tailcfg.SSHRule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshRule {
    pub principals: Vec<SshPrincipal>,
    /// `sshUsers`: requested SSH user (or `*`) → local user (`=` same name, empty: no match).
    pub users: BTreeMap<String, String>,
    pub action: SshAction,
    /// `recorders` is set: sessions are recorded.
    pub recorded: bool,
}

/// What an SSH rule does, from `tailcfg.SSHAction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshAction {
    #[default]
    Reject,
    /// `holdAndDelegate`: the user must re-authenticate (check mode).
    Check,
    Accept,
}

/// This node's own trust signals. `None` means "could not be read" (an old daemon, a build
/// without the feature), never "off".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTrust {
    #[serde(default)]
    pub tailnet_lock: Option<TailnetLock>,
    /// `RunSSH`: the Tailscale SSH server runs on this node.
    #[serde(default)]
    pub ssh_server: Option<bool>,
    /// `AdvertiseRoutes` (sorted): subnets and, for an exit node, `0.0.0.0/0` and `::/0`.
    #[serde(default)]
    pub advertised_routes: Option<Vec<String>>,
    /// The newer tailscaled version available, when `ClientVersion` says this one is not latest:
    /// recorded here by the core from [`Snapshot::update_available`](crate::model::Snapshot), its
    /// one home; no source puts it in a view.
    #[serde(default)]
    pub update_available: Option<String>,
    /// `RunWebClient`: the web client on port 5252, answered by tailscaled itself.
    #[serde(default)]
    pub web_client: Option<bool>,
    /// `RemoteConfig` (tailscale >= 1.102): the control plane may change any pref and call any
    /// LocalAPI endpoint of this node.
    #[serde(default)]
    pub remote_config: Option<bool>,
    /// `ShieldsUp`: tailscaled refuses every inbound connection.
    #[serde(default)]
    pub shields_up: Option<bool>,
    /// `ExitNodeID`: the peer this node sends its traffic through (empty: none).
    #[serde(default)]
    pub exit_node_id: Option<String>,
    /// What `serve-config` makes tailscaled answer itself.
    #[serde(default)]
    pub serve: Option<ServeDoors>,
}

/// The parts of tailscaled's `ServeConfig` (`ipn/serve.go`) that open a way into this node,
/// background and foreground sessions together, each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeDoors {
    /// `TCP` ports (serve and funnel listeners).
    #[serde(default)]
    pub tcp: Vec<u16>,
    /// `AllowFunnel` host:ports: open to the whole internet through Tailscale's relays.
    #[serde(default)]
    pub funnel: Vec<String>,
    /// `Services` names (`svc:…`): VIP services this node answers.
    #[serde(default)]
    pub services: Vec<String>,
}

impl NodeTrust {
    pub fn is_exit_node(&self) -> bool {
        self.advertised_routes
            .as_ref()
            .is_some_and(|r| super::has_exit_route(r))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailnetLock {
    pub enabled: bool,
    /// Trusted key IDs (`tlpub:…`), sorted.
    pub trusted_keys: Vec<String>,
}

/// A peer as the netmap names it (the same message as the filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetmapPeer {
    /// Stable node ID.
    pub id: String,
    pub hostname: String,
    /// The owner's login, or the tags of a tagged device.
    pub owner: String,
    /// Bare IPs (no prefix length).
    pub addresses: Vec<String>,
}

/// What the node view says about access to this server, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// `None`: the netmap carried no packet filter in a form we know (reported, not guessed).
    pub rules: Option<Vec<FilterRule>>,
    /// `None`: no SSH policy (Tailscale SSH not allowed to anyone).
    pub ssh: Option<Vec<SshRule>>,
    /// The netmap's peers, to name sources `/status` does not list yet.
    #[serde(default)]
    pub peers: Vec<NetmapPeer>,
    pub trust: NodeTrust,
    /// The parts of this view that could not be read, with why and how to fix it. A part listed
    /// here is left as it was last recorded: never read as "empty" or "nobody".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<Unread>,
    /// The stable ID of the node whose netmap this is, where its source says (checked against
    /// `/status` Self: a relay answering for another daemon is not this node's view).
    #[serde(skip)]
    pub netmap_self: Option<String>,
}

impl NodeView {
    /// Whether `other` says the same about who may reach this node (the netmap's peers, which
    /// only name sources, left out).
    pub fn same_access(&self, other: &NodeView) -> bool {
        self.rules == other.rules
            && self.ssh == other.ssh
            && self.trust == other.trust
            && self.unread == other.unread
    }

    /// Why `part` could not be read this time, if it could not.
    pub fn unread(&self, part: Part) -> Option<&Unread> {
        self.unread.iter().find(|u| u.part == part)
    }
}

/// A part of the node view with a health of its own. Membership (`/status`) is not one: without
/// it there is no snapshot at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The packet filter and SSH policy: who can reach this server.
    Access,
    /// `tka/status`.
    TailnetLock,
    /// `prefs`: the Tailscale SSH server and the advertised routes.
    Prefs,
    /// `serve-config`: what `tailscale serve` and funnel make tailscaled answer itself.
    Serve,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Access, Part::TailnetLock, Part::Prefs, Part::Serve];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Access => "access",
            Part::TailnetLock => "tailnet_lock",
            Part::Prefs => "prefs",
            Part::Serve => "serve",
        }
    }

    pub fn parse(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// What a reader loses while this part is unread.
    pub fn what(self) -> &'static str {
        match self {
            Part::Access => "who can reach this server (its packet filter and SSH policy)",
            Part::TailnetLock => "this node's Tailnet Lock state",
            Part::Prefs => "this node's Tailscale SSH server and advertised routes (prefs)",
            Part::Serve => "what this node serves with `tailscale serve` (serve-config)",
        }
    }
}

/// One part of the node view that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    pub part: Part,
    /// One line: what failed (stable from one pass to the next while the cause lasts).
    pub error: String,
    /// The exact fix, for the administrator.
    pub fix: String,
}

/// A source as the administrator should read it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Principal {
    /// Identity used for comparison: `*`, `tailnet`, `node:<stable ID>`, `user:<login>`,
    /// `cidr:<prefix>`, `ip:<addr>`, `range:<a-b>`, `cap:<capability>`.
    pub key: String,
    /// "mallory@ (mallory-pc, 100.64.0.3)", "any device (*)", "subnet 10.0.0.0/8".
    pub label: String,
}

impl Principal {
    pub fn is_any(&self) -> bool {
        self.key == "*"
    }
}

/// Which ports of one protocol a source may reach on one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reach {
    pub who: Principal,
    /// "this server", or a subnet this node routes.
    pub target: String,
    /// `tcp`, `udp`, `icmp`, `sctp`, or `proto N`.
    pub proto: String,
    /// Merged, sorted, non-overlapping inclusive ranges.
    pub ports: Vec<(u16, u16)>,
}

/// Who may SSH in as which local user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SshGrant {
    pub who: Principal,
    /// The user asked for at login (`*`: any).
    pub ssh_user: String,
    /// The local account it maps to (`=`: the same name as asked).
    pub local_user: String,
    pub action: SshAction,
    /// Sessions are recorded.
    pub recorded: bool,
}

impl SshGrant {
    /// The local account as a reader says it: `root`, `ubuntu`, "any user".
    pub fn local_user_text(&self) -> String {
        match (self.ssh_user.as_str(), self.local_user.as_str()) {
            ("*", "=") => "any user".into(),
            (u, "=") => u.to_owned(),
            (_, l) => l.to_owned(),
        }
    }

    /// May log in as root: asked for explicitly, or any user mapped to the same name.
    pub fn allows_root(&self) -> bool {
        self.action != SshAction::Reject
            && (self.local_user == "root" || (self.ssh_user == "*" && self.local_user == "="))
    }
}

/// A peer capability granted toward this server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CapEntry {
    pub who: Principal,
    pub cap: String,
}

/// The canonical access model of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `false` when the netmap carried no packet filter we could read: the model is unknown.
    pub known: bool,
    pub reach: Vec<Reach>,
    pub ssh: Vec<SshGrant>,
    pub caps: Vec<CapEntry>,
    pub trust: NodeTrust,
}

/// Formats port ranges: `22`, `80-443`, `*` for all.
pub fn ports_text(ports: &[(u16, u16)]) -> String {
    if ports == [(0, 65535)] {
        return "*".to_owned();
    }
    ports
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of the "who can reach this server" table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRow {
    pub source: String,
    pub who: String,
    pub ports: String,
    pub ssh: String,
}

impl Access {
    /// The model as a table, one row per source: what it may reach and as whom it may SSH in.
    pub fn rows(&self) -> Vec<AccessRow> {
        let mut by: BTreeMap<&str, (String, Vec<String>, Vec<String>)> = BTreeMap::new();
        for r in &self.reach {
            let e = by
                .entry(&r.who.key)
                .or_insert_with(|| (r.who.label.clone(), vec![], vec![]));
            let ports = if r.proto == "icmp" {
                "icmp".to_owned()
            } else {
                format!("{} {}", r.proto, ports_text(&r.ports))
            };
            e.1.push(if r.target == "this server" {
                ports
            } else {
                format!("{ports} via {}", r.target)
            });
        }
        for g in &self.ssh {
            if g.action == SshAction::Reject {
                continue;
            }
            let e = by
                .entry(&g.who.key)
                .or_insert_with(|| (g.who.label.clone(), vec![], vec![]));
            let mut s = format!("{} ({}", g.local_user_text(), ssh_action_text(g.action));
            if g.recorded {
                s.push_str(", recorded");
            }
            s.push(')');
            e.2.push(s);
        }
        by.into_iter()
            .map(|(key, (who, ports, ssh))| AccessRow {
                source: key.to_owned(),
                who,
                ports: if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join("; ")
                },
                ssh: if ssh.is_empty() {
                    "-".into()
                } else {
                    ssh.join(", ")
                },
            })
            .collect()
    }
}

pub fn ssh_action_text(a: SshAction) -> &'static str {
    match a {
        SshAction::Accept => "accept",
        SshAction::Check => "check",
        SshAction::Reject => "reject",
    }
}
