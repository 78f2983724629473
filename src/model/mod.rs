//! Plain data: what a tailnet looks like to the monitor, and what it reports.
//!
//! Sources convert their wire formats into these types once, at the edge; the core (`diff`), the
//! store and the notifiers only ever see these. Nothing here does I/O.
//!
//! Identity is deliberately narrow: a device *is* its [`StableNodeId`], its credential is its
//! [`NodeKey`], a user *is* its [`UserId`]. Hostnames and IPs are attributes chosen by whoever
//! registers a device and are never used to decide whether something is new.

pub mod access;
pub mod control;
pub mod event_kind;
pub mod guard;
pub mod policy;
pub mod posture;
pub mod presence;
pub mod route;
pub mod state;
pub mod time;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use event_kind::EventKind;

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        /// Lookups by `&str` (the derived order and hash are the string's).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// Tailscale's stable node ID (`ID` in status, e.g. `n00005A9ACNTRL`). A device re-added to the
    /// tailnet gets a new one even if it keeps its hostname and IP.
    StableNodeId
);
string_id!(
    /// The node's WireGuard public key (`nodekey:…`). Changes when the device re-authenticates.
    NodeKey
);

/// Tailscale's numeric user ID (`UserID`; the keys of the status `User` map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One device as the monitor tracks it: only the attributes whose change matters for security.
/// Volatile facts (online, endpoints, traffic) live in [`PeerConn`] and never cause alerts by
/// themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: StableNodeId,
    /// Numeric node ID (newer daemons only; headscale's `nodes delete -i` takes it).
    #[serde(default)]
    pub node_id: Option<i64>,
    pub node_key: NodeKey,
    pub hostname: String,
    pub dns_name: String,
    pub os: String,
    pub user_id: UserId,
    /// Tailscale addresses of the device itself, sorted.
    pub addresses: Vec<String>,
    /// ACL tags, sorted.
    pub tags: Vec<String>,
    /// Approved routes beyond the device's own addresses (subnets, `0.0.0.0/0` and `::/0` for an
    /// exit node), sorted.
    pub routes: Vec<String>,
    /// The device may carry all traffic for others (it offers an approved exit node).
    pub exit_node: bool,
    /// `None` means key expiry is disabled for this device.
    #[serde(default, deserialize_with = "rfc3339_opt")]
    pub key_expiry: Option<DateTime<Utc>>,
    pub expired: bool,
    #[serde(default, deserialize_with = "rfc3339_opt")]
    pub created: Option<DateTime<Utc>>,
    /// This is the monitored node itself.
    pub is_self: bool,
    /// Shared into this tailnet from another one (or owned by a sharee).
    pub shared: bool,
}

/// An optional time read by `parse` straight from the document (no copy of the string); `null`
/// is `None`. One visitor for the stored model and tailscaled's documents, which differ only in
/// how a string is parsed.
pub(crate) fn opt_time<'de, D: serde::Deserializer<'de>>(
    d: D,
    parse: fn(&str) -> Result<Option<DateTime<Utc>>, String>,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    struct Time(fn(&str) -> Result<Option<DateTime<Utc>>, String>);
    impl serde::de::Visitor<'_> for Time {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Time(parse))
}

/// An optional RFC 3339 time as serde writes it, read as strict RFC 3339 ([`time::rfc3339`], a
/// fraction of the cost of the lenient parser serde uses, which remains the fallback): every stored
/// device carries two, and `check` reads them all.
fn rfc3339_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    opt_time(d, |v| {
        time::rfc3339(v)
            .or_else(|_| v.parse::<DateTime<Utc>>())
            .map(Some)
            .map_err(|e| e.to_string())
    })
}

/// What LocalAPI `whois` says is behind a tailnet address (every value from whoever registered
/// the device: rendered through the sanitizer like any name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoIs {
    pub ip: String,
    /// The node's MagicDNS name.
    pub node: String,
    /// Its node key (`nodekey:…`): what the guard approved with its stable ID.
    #[serde(default)]
    pub node_key: String,
    pub hostname: String,
    pub os: String,
    pub stable_id: String,
    pub login: String,
    pub display_name: String,
}

impl WhoIs {
    /// `node N (host, os, id) of login (display name)`: how a message names it.
    pub fn label(&self) -> String {
        format!(
            "node {} ({}, {}, {}) of {} ({})",
            self.node, self.hostname, self.os, self.stable_id, self.login, self.display_name
        )
    }
}

impl fmt::Display for WhoIs {
    /// `whois IP: ` and the label, as a connection event's detail says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "whois {}: {}", self.ip, self.label())
    }
}

/// What makes a device the same member of the tailnet: every [`Device`] field whose change a pass
/// looks at (key, owner, names, OS, addresses, tags, routes, expiry). `run`'s IPN-bus filter
/// compares it to tell a presence-only `PeersChanged` (no pass) from a real change, and the diff
/// compares it to decide whether [`Device`]'s changes are looked for: one definition for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Membership<'a> {
    pub id: &'a str,
    pub key: &'a str,
    pub user: i64,
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub addresses: &'a [String],
    pub tags: &'a [String],
    pub routes: &'a [String],
    pub key_expiry: Option<DateTime<Utc>>,
    pub expired: bool,
}

impl Membership<'_> {
    /// A 64-bit digest, for `run` to keep per device between passes instead of a copy.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

impl Device {
    /// The device's [`Membership`]. Every field is named: a new `Device` field must be placed
    /// here, in or out, before the crate compiles.
    pub fn membership(&self) -> Membership<'_> {
        let Device {
            id,
            node_key,
            hostname,
            dns_name,
            os,
            user_id,
            addresses,
            tags,
            routes,
            key_expiry,
            expired,
            // Derived from `routes`.
            exit_node: _,
            // Facts of the record, not of membership: not on the bus, never reported changed.
            node_id: _,
            created: _,
            is_self: _,
            shared: _,
        } = self;
        Membership {
            id: &id.0,
            key: &node_key.0,
            user: user_id.0,
            name: dns_name,
            hostname,
            os,
            addresses,
            tags,
            routes,
            key_expiry: *key_expiry,
            expired: *expired,
        }
    }
}

impl Device {
    /// The best short name for messages: the hostname, else the first DNS label, else the ID.
    pub fn display_name(&self) -> &str {
        if !self.hostname.is_empty() {
            &self.hostname
        } else if let Some(label) = self.dns_name.split('.').next().filter(|l| !l.is_empty()) {
            label
        } else {
            &self.id.0
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub login: String,
    pub display_name: String,
}

/// Per-peer connection facts, where the source knows them. Used for `peer.connected`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConn {
    pub online: bool,
    pub active: bool,
    pub last_handshake: Option<DateTime<Utc>>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The whole tailnet as one source saw it at one instant. A snapshot only exists for a daemon that
/// is `Running`: sources return an error instead of an empty or partial snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// Daemon version string, e.g. `1.102.3-t…`.
    pub version: String,
    /// Tailnet name (`CurrentTailnet.Name`), if the daemon reports it.
    pub tailnet: String,
    /// The tailnet's stable ID (`CurrentTailnet.StableID`, tailscaled >= 1.104; empty under
    /// Headscale and on older daemons).
    #[serde(default)]
    pub tailnet_id: String,
    /// MagicDNS suffix, used to tell a Tailscale tailnet (`*.ts.net`) from a Headscale one.
    pub dns_suffix: String,
    pub self_id: StableNodeId,
    pub devices: BTreeMap<StableNodeId, Device>,
    pub users: BTreeMap<UserId, User>,
    pub conns: BTreeMap<StableNodeId, PeerConn>,
    /// What LocalAPI `whois` said about peers that just connected (filled at the edge).
    #[serde(default)]
    pub whois: BTreeMap<StableNodeId, WhoIs>,
    /// Who may reach this node, as tailscaled was told (`None`: this source cannot tell).
    #[serde(default)]
    pub node: Option<access::NodeView>,
    /// `/status` Self `Online`: this node is connected to the control plane (`None`: unknown).
    #[serde(default)]
    pub self_online: Option<bool>,
    /// From `/status` `ClientVersion`: the newer version available, when this one is not latest.
    #[serde(default)]
    pub update_available: Option<String>,
    /// `whois` labels of filter sources that are no device in this snapshot (filled at the edge).
    #[serde(default)]
    pub ip_whois: BTreeMap<String, WhoIs>,
    /// `/status` `TUN`: tailscaled uses a kernel interface (`false`: userspace networking, which
    /// the guard cannot enforce in the kernel; `None`: not reported).
    #[serde(default)]
    pub tun: Option<bool>,
}

impl Snapshot {
    pub fn self_device(&self) -> Option<&Device> {
        self.devices.get(&self.self_id)
    }

    /// Name of the monitored host, for subjects and status lines.
    pub fn self_name(&self) -> &str {
        self.self_device()
            .map(Device::display_name)
            .unwrap_or("this node")
    }

    /// Whether the control server is Tailscale's (so the admin console applies) rather than
    /// Headscale or another one.
    pub fn is_tailscale_saas(&self) -> bool {
        self.dns_suffix.ends_with(".ts.net") || self.dns_suffix == "ts.net"
    }
}

/// A list that means a set (tags, routes, addresses) in one canonical form: sorted, each once.
/// A default route (`0.0.0.0/0` or `::/0`): what makes a device an exit node.
pub fn is_exit_route(r: &str) -> bool {
    r == "0.0.0.0/0" || r == "::/0"
}

/// Some of `routes` is a default route.
pub fn has_exit_route(routes: &[String]) -> bool {
    routes.iter().any(|r| is_exit_route(r))
}

/// tailscaled 1.104 sorts and de-duplicates a node's advertised routes and requested tags before
/// it sends them; older daemons and control planes do not. Every edge converts with this, and
/// the core compares with [`same_set`], so an upgrade that only reorders is no change.
pub fn as_set(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether two lists hold the same set (order and repeats ignored: records written before
/// [`as_set`] may hold either).
pub fn same_set(a: &[String], b: &[String]) -> bool {
    if a == b {
        return true;
    }
    let set = |v: &[String]| -> std::collections::BTreeSet<String> { v.iter().cloned().collect() };
    set(a) == set(b)
}

/// The monitor's view of its own source: up, or down since when and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub down_since: Option<DateTime<Utc>>,
    pub last_error: String,
    pub last_ok: Option<DateTime<Utc>>,
    /// The parts of the node view that could not be read at the last pass that read the tailnet.
    pub parts: BTreeMap<access::Part, PartDown>,
}

/// A part of the node view that cannot be read: since when, why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDown {
    pub since: DateTime<Utc>,
    pub error: String,
    pub fix: String,
}

/// How urgent an event is. Ordered: `Info < Warning < Critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attribute that changed, with its old and new value rendered as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub old: String,
    pub new: String,
}

/// Something the monitor detected. Carries copies of the device and user as they were at
/// detection time, so that a message or webhook can be rendered long after, without the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub severity: Severity,
    pub at: DateTime<Utc>,
    /// One plain-text line saying what happened (built from untrusted values: sanitize on output).
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// For `monitor.baseline`: every device and user present at the baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<User>,
    /// For `policy.changed`: the unified diff of the policy file, one line each (`+`, `-`, ` `).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// For `monitor.baseline`: who can reach this server (`None`: not known to this source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<access::AccessRow>>,
    /// Free-form detail (error text for `monitor.*`, the handshake for `peer.connected`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The tailnet's name, where known (Alertmanager's `tailnet` label).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tailnet: String,
    /// The exact fix, where the detector knows it better than the kind's generic advice (what to
    /// install for a part that cannot be read). Rendered first under "What to do".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// Logged but not sent to any channel (policy, e.g. `peer.connected` of long-known devices).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_only: bool,
}

#[cfg(test)]
impl Device {
    /// A plain Linux device `id` (hostname `id`, node key `nodekey:<id>`, user 1, no address),
    /// for tests to adjust.
    pub fn for_tests(id: &str) -> Device {
        Device {
            id: StableNodeId(id.into()),
            node_id: None,
            node_key: NodeKey(format!("nodekey:{id}")),
            hostname: id.into(),
            dns_name: String::new(),
            os: "linux".into(),
            user_id: UserId(1),
            addresses: vec![],
            tags: vec![],
            routes: vec![],
            exit_node: false,
            key_expiry: None,
            expired: false,
            created: None,
            is_self: false,
            shared: false,
        }
    }
}

impl Event {
    pub fn new(kind: EventKind, at: DateTime<Utc>, summary: impl Into<String>) -> Self {
        Event {
            kind,
            severity: kind.severity(),
            at,
            summary: summary.into(),
            device: None,
            user: None,
            changes: Vec::new(),
            devices: Vec::new(),
            users: Vec::new(),
            access: None,
            diff: Vec::new(),
            detail: String::new(),
            tailnet: String::new(),
            fix: String::new(),
            record_only: false,
        }
    }
}

/// Lookups in a map by keys that come in ascending order (another map of the same keys, walked in
/// order): one merge instead of a tree search per key.
pub struct Ascending<'a, K, V>(std::iter::Peekable<std::collections::btree_map::Iter<'a, K, V>>);

impl<'a, K: Ord, V> Ascending<'a, K, V> {
    pub fn new(map: &'a BTreeMap<K, V>) -> Self {
        Ascending(map.iter().peekable())
    }

    /// The value of `key`; keys asked must not decrease.
    pub fn get<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&'a V>
    where
        K: std::borrow::Borrow<Q>,
    {
        while let Some((k, _)) = self.0.peek() {
            match (*k).borrow().cmp(key) {
                std::cmp::Ordering::Less => {
                    self.0.next();
                }
                std::cmp::Ordering::Equal => return self.0.next().map(|(_, v)| v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}
