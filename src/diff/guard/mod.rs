//! The guard's part of a pass: a new device's `device.new` message says whether `[guard]
//! approve_new` matches it (the root side, which owns the approvals, then lets it in, and its
//! `guard.approved` follows) or that it is blocked at this server until its owner approves it
//! here. And
//! the guard's own decisions, pure like the rest of the core: the set let in ([`set`]), which
//! dropped packets become `guard.blocked` ([`blocked`]), and which ways in tailscaled answers
//! itself ([`doors`]).

pub(crate) mod blocked;
pub(crate) mod doors;
pub(crate) mod set;

use crate::model::guard::ApproveNew;
use crate::model::state::Outcome;
use crate::model::{EventKind, Snapshot};

pub(super) fn new_devices(out: &mut Outcome, approve_new: &ApproveNew, snap: &Snapshot) {
    // An approval covers a node key and the routes of its moment: a new key or a new route waits
    // for the next approval.
    for e in out.events.iter_mut() {
        let Some(d) = &e.device else { continue };
        let what = match e.kind {
            EventKind::DeviceRekeyed => "its new key is not: it is blocked here",
            EventKind::DeviceRoutesChanged if !approvable_routes(d).is_empty() => {
                "a route it did not have then is not: traffic from it is dropped here"
            }
            _ => continue,
        };
        e.fix = format!(
            "If this device is approved at this server's guard, {what} until you run `sudo tailscale-monitor guard approve {}`",
            d.id.0
        );
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
        e.fix = match approve_new.matches(d, login) {
            Some(sel) => format!(
                "`[guard] approve_new` matches it ({sel:?}): the guard's root side lets it in at this server, and says so (`guard.approved`)"
            ),
            None => format!(
                "Blocked at this server by the guard until you run `sudo tailscale-monitor guard approve {}`",
                d.id.0
            ),
        };
    }
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
