//! The pure core: what the monitor knows × what the tailnet looks like now → events.
//!
//! [`diff`] takes values and returns values; it never reads a clock, a socket or a file, so every
//! event kind is tested here with a few snapshots and an assertion. The store persists the
//! [`Outcome`] (state changes and events) in one transaction; notifiers render the events.
//!
//! Rules that make this better than diffing `IP hostname` lines:
//! - identity is the stable node ID: a device re-added under an old hostname and IP is new;
//! - the first snapshot of an empty store is a *baseline*: one review event, no per-device alerts;
//! - a device that is known but was removed and comes back under the same ID is not "new";
//! - nothing here ever sees a failed read: sources return errors, not empty snapshots.

pub(crate) mod access;
pub(crate) mod control;
pub(crate) mod delta;
pub(crate) mod parts;
pub(crate) mod presence;

mod connections;
mod device_changes;
pub(crate) mod guard;
mod health;
mod lookalikes;
pub(crate) mod membership;
#[cfg(test)]
mod tests;

pub use connections::connection_candidates;

use crate::diff::health::node_outcome;

pub use membership::diff;

use chrono::{DateTime, Duration, Utc};

pub use crate::model::state::{Known, Outcome};
use crate::model::{EventKind, Health, Snapshot};

/// Which `peer.connected` events are sent (all are logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectAlert {
    /// Devices first seen after the baseline; the rest are record-only.
    New,
    All,
    None,
}

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Alert `device.key_expiring` when a node key expires within this much time.
    pub key_expiry_warn: Duration,
    /// A handshake after this long without one is a new `peer.connected`.
    pub connect_quiet: Duration,
    pub connect_alert: ConnectAlert,
    /// `[[watch]]`: devices whose presence is alerted.
    pub watches: Vec<crate::model::presence::Watch>,
    /// `[guard] mode = "enforce"`: which new devices `approve_new` lets in (`None`: no guard).
    pub guard: Option<crate::model::guard::ApproveNew>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            key_expiry_warn: Duration::days(14),
            connect_quiet: Duration::hours(1),
            connect_alert: ConnectAlert::New,
            watches: Vec::new(),
            guard: None,
        }
    }
}

/// The whole decision of one pass, given what the source returned: recovery/outage events around
/// the diff, and the new source health. The bool says whether the tailnet was actually seen (so
/// `last_seen` may advance). On a source error nothing known changes: no removals, no baseline.
pub fn pass_outcome(
    known: &Known,
    health: &Health,
    result: Result<&Snapshot, &str>,
    control: Option<ControlRead>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (Outcome, Health, bool) {
    let (mut out, h, seen) = node_outcome(known, health, result, policy, now);
    if let (Some(approve_new), Ok(snap)) = (&policy.guard, result) {
        guard::new_devices(&mut out, approve_new, snap);
    }
    if let Some(c) = control {
        // The posture audit, once per read: its drift goes to the control view's events, its
        // summary to the baseline.
        let evaluated = c.result.map(|cs| {
            let report = crate::posture::evaluate(&crate::posture::Inputs {
                control: Some(cs),
                control_note: "",
                node: result.ok(),
                server: c.server,
                now,
            });
            (cs, report)
        });
        let read = match &evaluated {
            Ok((cs, report)) => Ok((*cs, report)),
            Err(e) => Err(*e),
        };
        let (events, kc) = control::events(known, result.ok(), read, c.source, now);
        if let (Ok((cs, report)), Some(base)) = (
            read,
            out.events
                .iter_mut()
                .find(|e| e.kind == EventKind::MonitorBaseline),
        ) {
            base.detail = invisible_note(cs, result.ok());
            base.detail += &format!(
                "\n\nPosture: {} (`tailscale-monitor posture` for the report).{}",
                report.summary(),
                report
                    .findings
                    .iter()
                    .filter(|f| f.status == crate::model::posture::Status::Fail)
                    .map(|f| format!(
                        "\n- {} [{}] {}: {}",
                        f.id,
                        f.severity.as_str(),
                        f.title,
                        f.evidence
                    ))
                    .collect::<String>()
            );
        }
        let tailnet = result.map(|s| s.tailnet.clone()).unwrap_or_default();
        out.events.extend(events.into_iter().map(|mut e| {
            e.tailnet.clone_from(&tailnet);
            e
        }));
        out.control = kc;
    }
    (out, h, seen)
}

/// One read of the control plane, for [`pass_outcome`].
#[derive(Clone, Copy)]
pub struct ControlRead<'a> {
    /// How messages name the source ("headscale API https://…").
    pub source: &'a str,
    pub result: Result<&'a crate::model::control::ControlSnapshot, &'a str>,
    /// This server's facts for the posture checks (`None`: not collected).
    pub server: Option<&'a crate::model::posture::ServerFacts>,
}

/// For the baseline: the devices only the control plane lists, and the policy line that would
/// let this server see them (README "What one node can see").
fn invisible_note(cs: &crate::model::control::ControlSnapshot, node: Option<&Snapshot>) -> String {
    let hidden: Vec<String> = cs
        .devices
        .values()
        .filter(|d| node.is_none_or(|n| !n.devices.contains_key(&d.id)))
        .map(|d| format!("{} ({}, {})", d.hostname, d.user, d.addresses.join(", ")))
        .collect();
    if hidden.is_empty() {
        return "Every device the control plane lists is visible to this server.".into();
    }
    let me = node
        .and_then(|n| n.self_device())
        .map(|d| {
            d.tags
                .first()
                .cloned()
                .or_else(|| d.addresses.first().cloned())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "tag:monitor".into());
    format!(
        "Not visible to this server ({}): {}. Its ACLs do not connect them; to watch them from the node view too, add to the policy: {{\"action\": \"accept\", \"src\": [\"{me}\"], \"dst\": [\"*:1\"]}}",
        hidden.len(),
        hidden.join("; ")
    )
}
