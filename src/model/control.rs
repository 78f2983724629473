//! The control view: what the control plane (the Headscale API, the Tailscale Admin API) says
//! about the whole tailnet, converted at the edge. It covers what one node cannot see — devices
//! its ACLs hide from it, devices waiting for approval, the policy file, the tailnet settings —
//! and is kept beside the node view, never merged into it: the core reports where they disagree.
//!
//! Identity is shared with the node view through the stable node ID: the Admin API's `nodeId` is
//! the LocalAPI's `ID`; under Headscale the LocalAPI's `ID` is the decimal node id. Users are
//! matched by login name (Headscale's user `name`, Tailscale's `loginName`), which both views
//! carry.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StableNodeId;

/// One device as the control plane lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlDevice {
    pub id: StableNodeId,
    pub hostname: String,
    /// FQDN or given name, as the control plane names it.
    pub name: String,
    /// The owner's login (or the tags of a tagged device).
    pub user: String,
    pub os: String,
    pub addresses: Vec<String>,
    pub tags: Vec<String>,
    /// Approved (enabled) routes, sorted.
    pub routes: Vec<String>,
    /// `false`: waiting for approval (Tailscale device approval). Headscale has no approval.
    pub authorized: bool,
    pub key_expiry: Option<DateTime<Utc>>,
    pub key_expiry_disabled: bool,
    pub created: Option<DateTime<Utc>>,
    /// Connected to the control plane now (volatile: never compared).
    #[serde(default)]
    pub online: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlUser {
    pub id: String,
    pub login: String,
    pub display_name: String,
    pub role: String,
    pub status: String,
}

/// The policy file as text, with the control plane's version tag when it gives one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDoc {
    pub text: String,
    /// Tailscale's `ETag`; Headscale's `updatedAt`.
    pub etag: String,
}

/// One configuration audit log entry (Tailscale), to say who made a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Option<DateTime<Utc>>,
    pub actor: String,
    pub action: String,
    pub target: String,
}

/// The whole tailnet as the control plane describes it at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlSnapshot {
    /// `headscale` or `tailscale`.
    pub kind: String,
    pub devices: BTreeMap<StableNodeId, ControlDevice>,
    /// Keyed by login.
    pub users: BTreeMap<String, ControlUser>,
    /// Tailnet settings by their API names (`None`: this control plane has none, or no scope).
    pub settings: Option<BTreeMap<String, serde_json::Value>>,
    /// `None`: no policy at all (Headscale: allow-all) or not readable.
    pub policy: Option<PolicyDoc>,
    /// Recent configuration audit log entries, newest first (Tailscale, where readable).
    #[serde(default)]
    pub audit: Vec<AuditEntry>,
    /// What only the posture checks read (keys, webhooks, contacts, per-device facts).
    #[serde(default)]
    pub posture: super::posture::ControlPosture,
}

/// What the store keeps of the control view between passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownControl {
    pub devices: BTreeMap<StableNodeId, ControlDevice>,
    pub users: BTreeSet<String>,
    pub settings: Option<BTreeMap<String, serde_json::Value>>,
    pub policy: Option<PolicyDoc>,
    /// Devices in this node's netmap that the control plane did not list, with how many
    /// consecutive control reads missed them (alerted at the second; `u32::MAX` once alerted).
    #[serde(default)]
    pub unlisted: BTreeMap<StableNodeId, u32>,
    /// Set while the control plane cannot be read: since when, and why.
    #[serde(default)]
    pub down_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: String,
    /// Each posture check's status at the last control read.
    #[serde(default)]
    pub posture: super::posture::KnownPosture,
    /// The checks that failed then, with their evidence (for the digest).
    #[serde(default)]
    pub posture_failing: Vec<super::posture::Finding>,
}
