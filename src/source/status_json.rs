//! serde types for `ipnstate.Status` — the JSON of LocalAPI `GET /localapi/v0/status` and of
//! `tailscale status --json` — and their one conversion into a [`Snapshot`].
//!
//! The types mirror tailscaled's field names and are lenient on purpose: unknown fields are
//! ignored, absent fields default, `null` maps are empty. Fields come and go between releases
//! (see `fixtures/status-old-1.36.json`). What they must never do is turn a daemon that is not
//! `Running` into an empty tailnet: [`Status::into_snapshot`] refuses that.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::cut::Cut;
use super::wire::{go_time, map_values, null_default};
use crate::model::{Device, NodeKey, PeerConn, Snapshot, StableNodeId, User, UserId};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Status {
    #[serde(deserialize_with = "null_default")]
    pub version: String,
    #[serde(deserialize_with = "null_default")]
    pub backend_state: String,
    #[serde(rename = "TUN")]
    pub tun: Option<bool>,
    #[serde(rename = "AuthURL", deserialize_with = "null_default")]
    pub auth_url: String,
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_default")]
    pub tailscale_ips: Vec<String>,
    #[serde(rename = "Self")]
    pub self_: Option<PeerStatus>,
    #[serde(deserialize_with = "null_default")]
    pub health: Vec<String>,
    #[serde(rename = "MagicDNSSuffix", deserialize_with = "null_default")]
    pub magic_dns_suffix: String,
    pub current_tailnet: Option<TailnetStatus>,
    /// Keyed by node public key (which each peer also carries); `null` when there are no peers.
    #[serde(deserialize_with = "map_values")]
    pub peer: Vec<PeerStatus>,
    /// Keyed by decimal user ID; may be `null`.
    #[serde(deserialize_with = "null_default")]
    pub user: BTreeMap<String, UserProfile>,
    /// `tailcfg.ClientVersion`: whether a newer tailscaled exists (null when unknown).
    pub client_version: Option<ClientVersion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ClientVersion {
    #[serde(deserialize_with = "null_default")]
    pub running_latest: bool,
    #[serde(deserialize_with = "null_default")]
    pub latest_version: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TailnetStatus {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(rename = "MagicDNSSuffix", deserialize_with = "null_default")]
    pub magic_dns_suffix: String,
    /// `StableID` (tailscaled >= 1.104; empty under Headscale): the tailnet's own identity.
    #[serde(rename = "StableID", deserialize_with = "null_default")]
    pub stable_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PeerStatus {
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    #[serde(rename = "NodeID")]
    pub node_id: Option<i64>,
    #[serde(deserialize_with = "null_default")]
    pub public_key: String,
    #[serde(deserialize_with = "null_default")]
    pub host_name: String,
    #[serde(rename = "DNSName", deserialize_with = "null_default")]
    pub dns_name: String,
    #[serde(rename = "OS", deserialize_with = "null_default")]
    pub os: String,
    #[serde(rename = "UserID", deserialize_with = "null_default")]
    pub user_id: i64,
    #[serde(rename = "AltSharerUserID", deserialize_with = "null_default")]
    pub alt_sharer_user_id: i64,
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_default")]
    pub tailscale_ips: Vec<String>,
    #[serde(rename = "AllowedIPs", deserialize_with = "null_default")]
    pub allowed_ips: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub primary_routes: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub rx_bytes: u64,
    #[serde(deserialize_with = "null_default")]
    pub tx_bytes: u64,
    #[serde(deserialize_with = "go_time")]
    pub created: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "go_time")]
    pub last_handshake: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "null_default")]
    pub online: bool,
    #[serde(deserialize_with = "null_default")]
    pub exit_node_option: bool,
    #[serde(deserialize_with = "null_default")]
    pub active: bool,
    #[serde(deserialize_with = "null_default")]
    pub sharee_node: bool,
    #[serde(deserialize_with = "null_default")]
    pub expired: bool,
    /// Absent when key expiry is disabled for the node.
    #[serde(deserialize_with = "go_time")]
    pub key_expiry: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UserProfile {
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: i64,
    #[serde(deserialize_with = "null_default")]
    pub login_name: String,
    #[serde(deserialize_with = "null_default")]
    pub display_name: String,
}

/// Why a status document cannot become a snapshot. Each message is one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusError {
    #[error("malformed status JSON: {0}")]
    Malformed(String),
    #[error("tailscaled is {state}, not Running{hint}")]
    NotRunning { state: String, hint: String },
    #[error("status has no Self node ID although tailscaled is Running")]
    NoSelf,
}

impl Status {
    pub fn parse(bytes: &[u8]) -> Result<Status, StatusError> {
        serde_json::from_slice(bytes).map_err(|e| StatusError::Malformed(e.to_string()))
    }

    /// A `/status` document to be fed as it arrives: its peer map is parsed entry by entry
    /// ([`Cut`]); [`Status::from_cut`] parses the rest.
    pub fn cut() -> Cut<PeerStatus> {
        Cut::new(&["Peer"], true)
    }

    /// The document fed to [`Status::cut`], parsed: what [`Status::parse`] gives for it whole.
    pub fn from_cut(cut: Cut<PeerStatus>) -> Result<Status, StatusError> {
        let (rest, peers) = cut.finish().map_err(StatusError::Malformed)?;
        let mut status = Status::parse(&rest)?;
        if !peers.is_empty() {
            if !status.peer.is_empty() {
                // A second `Peer` key, spelled with an escape and so not cut out, is a duplicate
                // field above: never reached.
                return Err(StatusError::Malformed("a second Peer map".into()));
            }
            status.peer = peers;
        }
        Ok(status)
    }

    /// Converts to the model. Fails unless the daemon is `Running` with a node identity.
    pub fn into_snapshot(self, taken_at: DateTime<Utc>) -> Result<Snapshot, StatusError> {
        if self.backend_state != "Running" {
            let state = if self.backend_state.is_empty() {
                "in an unknown state".to_owned()
            } else {
                // A hostile LocalAPI's state reaches log lines and alerts: one clean line.
                crate::sanitize::line(&self.backend_state, 40)
            };
            let hint = match self.backend_state.as_str() {
                "NeedsLogin" => " (logged out: run `tailscale up`)",
                "NeedsMachineAuth" => " (this node waits for approval in the admin console)",
                "Stopped" => " (run `tailscale up`)",
                "Starting" => " (still starting)",
                _ => "",
            };
            return Err(StatusError::NotRunning {
                state,
                hint: hint.to_owned(),
            });
        }
        let self_ps = self.self_.ok_or(StatusError::NoSelf)?;
        if self_ps.id.is_empty() {
            return Err(StatusError::NoSelf);
        }
        let dns_suffix = match &self.current_tailnet {
            Some(t) if !t.magic_dns_suffix.is_empty() => t.magic_dns_suffix.clone(),
            _ => self.magic_dns_suffix.clone(),
        };
        let mut snap = Snapshot {
            taken_at,
            version: crate::sanitize::line(&self.version, 64),
            tailnet_id: self
                .current_tailnet
                .as_ref()
                .map(|t| t.stable_id.clone())
                .unwrap_or_default(),
            tailnet: self.current_tailnet.map(|t| t.name).unwrap_or_default(),
            dns_suffix,
            tun: self.tun,
            self_id: StableNodeId(self_ps.id.clone()),
            update_available: self
                .client_version
                .filter(|c| !c.running_latest && !c.latest_version.is_empty())
                .map(|c| crate::sanitize::line(&c.latest_version, 64)),
            ..Snapshot::default()
        };
        // The maps are built in bulk from lists (sorted once), not by one insertion per peer.
        let mut devices = Vec::with_capacity(self.peer.len() + 1);
        let mut conns = Vec::with_capacity(self.peer.len());
        for (is_self, ps) in
            std::iter::once((true, self_ps)).chain(self.peer.into_iter().map(|p| (false, p)))
        {
            if ps.id.is_empty() {
                // A peer without a stable ID cannot be tracked; never happens on a sane daemon.
                continue;
            }
            let (device, conn) = ps.into_device(is_self);
            if is_self {
                snap.self_online = Some(conn.online);
            } else {
                conns.push((device.id.clone(), conn));
            }
            devices.push((device.id.clone(), device));
        }
        snap.devices = devices.into_iter().collect();
        snap.conns = conns.into_iter().collect();
        for (key, u) in self.user {
            let id = if u.id != 0 {
                u.id
            } else {
                key.parse().unwrap_or(0)
            };
            snap.users.insert(
                UserId(id),
                User {
                    id: UserId(id),
                    login: u.login_name,
                    display_name: u.display_name,
                },
            );
        }
        Ok(snap)
    }
}

/// A node's routes beyond its own addresses (`AllowedIPs` and `PrimaryRoutes` without the /32 and
/// /128 of each address), sorted: subnets, and `0.0.0.0/0`/`::/0` for an exit node. The one
/// derivation for `/status` peers and the bus's `tailcfg.Node`s, so the two compare equal.
pub fn routes_beyond(
    addresses: &[String],
    allowed_ips: Vec<String>,
    primary_routes: Vec<String>,
) -> Vec<String> {
    // An address's own route is the address with its full-length prefix (compared in place: no
    // search for the `/` in every route of every peer).
    let own = |r: &str| {
        addresses.iter().any(|a| {
            r.strip_prefix(a.as_str())
                .is_some_and(|len| len == if a.contains(':') { "/128" } else { "/32" })
        })
    };
    let routes: Vec<String> = allowed_ips
        .into_iter()
        .chain(primary_routes)
        .filter(|r| !own(r))
        .collect();
    crate::model::as_set(routes)
}

impl PeerStatus {
    fn into_device(self, is_self: bool) -> (Device, PeerConn) {
        let addresses = crate::model::as_set(self.tailscale_ips);
        let routes = routes_beyond(&addresses, self.allowed_ips, self.primary_routes);
        let exit_node = self.exit_node_option || crate::model::has_exit_route(&routes);
        let tags = crate::model::as_set(self.tags);
        let conn = PeerConn {
            online: self.online,
            active: self.active,
            last_handshake: self.last_handshake,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
        };
        let device = Device {
            id: StableNodeId(self.id),
            node_id: self.node_id.filter(|&n| n != 0),
            node_key: NodeKey(self.public_key),
            hostname: self.host_name,
            dns_name: self.dns_name,
            os: self.os,
            user_id: UserId(self.user_id),
            addresses,
            tags,
            routes,
            exit_node,
            key_expiry: self.key_expiry,
            expired: self.expired,
            created: self.created,
            is_self,
            shared: self.alt_sharer_user_id != 0 || self.sharee_node,
        };
        (device, conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: `/status` from a hostile or broken daemon never panics, and parses in bounded time.
    #[test]
    fn fuzz_status() {
        crate::fuzz::check(
            "status",
            &[
                include_bytes!("../../tests/fixtures/status-running.json"),
                include_bytes!("../../tests/fixtures/status-shared-and-exit.json"),
                include_bytes!("../../tests/fixtures/status-old-1.36.json"),
                include_bytes!("../../tests/fixtures/captured-1.102.5-headscale.json"),
            ],
            |b| {
                if let Ok(s) = Status::parse(b) {
                    let _ = s.into_snapshot(chrono::Utc::now());
                }
            },
        );
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn snap(name: &str) -> Result<Snapshot, StatusError> {
        Status::parse(&fixture(name))?.into_snapshot(Utc::now())
    }

    #[test]
    fn every_fixture_parses() {
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).unwrap();
                Status::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "expected the shared fixtures, found {n}");
    }

    #[test]
    fn running_fixture_becomes_snapshot() {
        let s = snap("status-running.json").unwrap();
        assert_eq!(s.self_id.0, "n00005A17CNTRL");
        assert_eq!(s.devices.len(), 5);
        assert!(s.devices[&s.self_id].is_self);
        assert_eq!(s.users.len(), 3);
        assert!(s.is_tailscale_saas());
        let nas = s.devices.values().find(|d| d.hostname == "nas").unwrap();
        assert_eq!(nas.routes, vec!["192.168.10.0/24"]);
        assert!(!nas.exit_node);
        assert_eq!(nas.tags, vec!["tag:server", "tag:storage"]);
        assert!(nas.key_expiry.is_none(), "tagged node without KeyExpiry");
        let laptop = s
            .devices
            .values()
            .find(|d| d.hostname == "alice-laptop")
            .unwrap();
        assert!(laptop.key_expiry.is_some());
        assert!(laptop.created.is_some());
        assert_eq!(laptop.node_id, Some(1001));
        assert!(s.conns[&laptop.id].last_handshake.is_some());
    }

    #[test]
    fn old_daemon_fixture_becomes_snapshot() {
        let s = snap("status-old-1.36.json").unwrap();
        assert_eq!(s.devices.len(), 5);
        assert!(s.devices.values().all(|d| d.node_id.is_none()));
    }

    #[test]
    fn shared_and_exit_nodes_are_marked() {
        let s = snap("status-shared-and-exit.json").unwrap();
        assert!(s.devices.values().any(|d| d.shared), "a shared-in node");
        assert!(s.devices.values().any(|d| d.exit_node), "an exit node");
    }

    #[test]
    fn documents_captured_from_real_daemons_become_snapshots() {
        for (name, version) in [
            ("captured-1.102.5-headscale.json", (1, 102)),
            ("captured-1.96.5-headscale.json", (1, 96)),
        ] {
            let s = snap(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.devices.len(), 2, "{name}");
            assert_eq!(s.users.len(), 1, "{name}");
            assert!(!s.is_tailscale_saas(), "{name}: a headscale tailnet");
            assert_eq!(
                crate::source::ipnbus::version(&s.version),
                Some(version),
                "{name}"
            );
            assert!(s
                .devices
                .values()
                .all(|d| !d.node_key.0.is_empty() && !d.addresses.is_empty()));
        }
    }

    #[test]
    fn null_peer_map_is_a_tailnet_of_one() {
        let s = snap("status-no-peers.json").unwrap();
        assert_eq!(s.devices.len(), 1);
    }

    #[test]
    fn needs_login_is_an_error_not_an_empty_tailnet() {
        let err = snap("status-needs-login.json").unwrap_err();
        assert!(matches!(err, StatusError::NotRunning { .. }), "{err}");
        assert!(err.to_string().contains("NeedsLogin"));
    }

    /// F17: the state and the version reach log lines; a hostile LocalAPI cannot forge lines.
    #[test]
    fn state_and_version_are_one_clean_line() {
        let err =
            Status::parse(br#"{"BackendState": "Odd\n2026-12-01T00:00:00Z INFO forged\u001b[2J"}"#)
                .unwrap()
                .into_snapshot(Utc::now())
                .unwrap_err()
                .to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err:?}");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fixture("status-running.json")).unwrap();
        doc["Version"] = "1.104.2\nINFO forged\u{1b}[2J".into();
        let s = Status::parse(doc.to_string().as_bytes())
            .unwrap()
            .into_snapshot(Utc::now())
            .unwrap();
        assert!(
            !s.version.contains('\n') && !s.version.contains('\u{1b}'),
            "{:?}",
            s.version
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for doc in [&b"{"[..], b"not json", b"", b"{\"Peer\": 5}"] {
            assert!(matches!(Status::parse(doc), Err(StatusError::Malformed(_))));
        }
        // An object without BackendState is not a Running daemon.
        let err = Status::parse(b"{}")
            .unwrap()
            .into_snapshot(Utc::now())
            .unwrap_err();
        assert!(matches!(err, StatusError::NotRunning { .. }));
    }
}
