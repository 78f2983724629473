//! What the monitor keeps between passes (the known state, which the store persists) and what a
//! pass decides (the [`Outcome`], committed in one transaction). Plain data: the store and the
//! core both use it, neither owns it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::access::Access;
use super::{Device, Event, StableNodeId, User, UserId};

/// A device the store knows, with the attributes last recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownDevice {
    pub device: Device,
    pub removed: bool,
    /// The key expiry for which `device.key_expiring` was already raised (so it is raised once).
    #[serde(default)]
    pub expiring_alerted: Option<DateTime<Utc>>,
    /// The latest WireGuard handshake with this node the monitor has seen.
    #[serde(default)]
    pub last_handshake: Option<DateTime<Utc>>,
    /// First seen after the baseline (not part of what the administrator reviewed).
    #[serde(default)]
    pub after_baseline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownUser {
    pub user: User,
    pub removed: bool,
}

/// Everything the monitor has ever recorded about the tailnet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    /// False only for an empty store: the next snapshot becomes the baseline.
    pub baseline_done: bool,
    pub devices: BTreeMap<StableNodeId, KnownDevice>,
    pub users: BTreeMap<UserId, KnownUser>,
    /// Who could reach this server at the last pass that could tell (`None`: never known).
    pub access: Option<Access>,
    /// The control view as last read (`None`: no control source, or never read).
    pub control: Option<crate::model::control::KnownControl>,
    /// Presence of the watched devices as of the last pass.
    pub presence: Option<crate::model::presence::KnownPresence>,
    /// The tailnet's stable ID as first seen (`None`: never reported by the daemon).
    pub tailnet_id: Option<String>,
}

impl Known {
    /// Applies a committed outcome, as the store records it.
    pub fn apply(&mut self, out: &Outcome, seen_ok: bool) {
        if seen_ok {
            self.baseline_done = true;
        }
        for d in &out.devices {
            self.devices.insert(d.device.id.clone(), d.clone());
        }
        for u in &out.users {
            self.users.insert(u.user.id, u.clone());
        }
        if let Some(a) = &out.access {
            self.access = Some(a.clone());
        }
        if let Some(c) = &out.control {
            self.control = Some(c.clone());
        }
        if let Some(p) = &out.presence {
            self.presence = Some(p.clone());
        }
        if let Some(t) = &out.tailnet_id {
            self.tailnet_id = Some(t.clone());
        }
    }
}

/// What a pass found: events to log and deliver, and the records that changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub events: Vec<Event>,
    pub devices: Vec<KnownDevice>,
    pub users: Vec<KnownUser>,
    /// The access model to record, when it changed.
    pub access: Option<Access>,
    /// The control view to record, when it changed.
    pub control: Option<crate::model::control::KnownControl>,
    /// The presence to record, when it changed.
    pub presence: Option<crate::model::presence::KnownPresence>,
    /// The tailnet's stable ID to record, when it is new or changed.
    pub tailnet_id: Option<String>,
    /// When a watched device's `offline_after` falls due (for `run` to pass again then).
    pub presence_due: Option<DateTime<Utc>>,
    /// The devices a `[[watch]]` covers now (for `run` to pass on their presence changes).
    pub watched: Vec<StableNodeId>,
    /// The guard's state and the dropped sources' records, written with the events they explain.
    pub guard: Option<GuardCommit>,
}

/// What a guard step writes, in the transaction of its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardCommit {
    pub state: super::guard::GuardState,
    /// The root side's approvals, mirrored.
    pub approvals: Vec<super::guard::ApprovalChange>,
    pub blocked: Vec<super::guard::BlockedRecord>,
    /// Forget every dropped source (the table, and its counters, are gone).
    pub clear_blocked: bool,
}
