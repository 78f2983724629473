//! The guard's part of a pass: a new device is either let in by `[guard] approve_new` (its
//! approval committed with the pass, and logged as `guard.approved`) or said, in its
//! `device.new` message, to be blocked at this server until its owner approves it here. And
//! the guard's own decisions, pure like the rest of the core: the set let in ([`set`]), which
//! dropped packets become `guard.blocked` ([`blocked`]), and which ways in tailscaled answers
//! itself ([`doors`]).

pub(crate) mod blocked;
pub(crate) mod doors;
pub(crate) mod set;

use chrono::{DateTime, Utc};

use crate::model::guard::{ApprovalChange, ApproveNew};
use crate::model::state::Outcome;
use crate::model::{Event, EventKind, Snapshot};

pub(super) fn new_devices(
    out: &mut Outcome,
    approve_new: &ApproveNew,
    snap: &Snapshot,
    now: DateTime<Utc>,
) {
    let mut approved = Vec::new();
    for e in out
        .events
        .iter_mut()
        .filter(|e| e.kind == EventKind::DeviceRekeyed)
    {
        if let Some(d) = &e.device {
            e.fix = format!(
                "If this device was approved at this server's guard, its new key is not: it is blocked here until you run `tailscale-monitor guard approve {}`",
                d.id.0
            );
        }
    }
    for e in out
        .events
        .iter_mut()
        .filter(|e| e.kind == EventKind::DeviceRoutesChanged)
    {
        if let Some(d) = &e.device {
            if !approvable_routes(d).is_empty() {
                e.fix = format!(
                    "If this device is approved at this server's guard, a route it did not have then is not: traffic from it is dropped here until you run `tailscale-monitor guard approve {}`",
                    d.id.0
                );
            }
        }
    }
    for e in out
        .events
        .iter_mut()
        .filter(|e| e.kind == EventKind::DeviceNew)
    {
        let Some(d) = &e.device else { continue };
        if d.is_self {
            continue;
        }
        let login = snap.users.get(&d.user_id).map(|u| u.login.as_str());
        match approve_new.matches(d, login) {
            Some(sel) => {
                let by = format!("approve_new ({sel:?})");
                let mut a = Event::new(
                    EventKind::GuardApproved,
                    now,
                    format!(
                        "The guard lets {} in at this server: `[guard] approve_new` matches it",
                        d.display_name()
                    ),
                );
                a.device = Some(d.clone());
                a.detail = format!("by {by}");
                out.approvals.push(ApprovalChange {
                    device: d.id.clone(),
                    node_key: d.node_key.0.clone(),
                    routes: approvable_routes(d),
                    approved: true,
                    by,
                });
                approved.push(a);
            }
            None => {
                e.fix = format!(
                    "Blocked at this server by the guard until you run `tailscale-monitor guard approve {}`",
                    d.id.0
                );
            }
        }
    }
    out.events.extend(approved);
}

/// The routes an approval of `d` covers: its subnet and 4via6 routes, never a default route (an
/// exit node's `0.0.0.0/0` would let any source in; replies to this server's own connections
/// through it pass as replies).
pub fn approvable_routes(d: &crate::model::Device) -> Vec<String> {
    d.routes
        .iter()
        .filter(|r| r.parse::<ipnet::IpNet>().is_ok_and(|n| n.prefix_len() > 0))
        .cloned()
        .collect()
}
