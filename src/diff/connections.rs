//! WireGuard sessions (`peer.connected`) and key expiry (`device.key_expiring`).

use chrono::{DateTime, Utc};

use crate::diff::ConnectAlert;
use crate::diff::Policy;
use crate::model::event_kind::EventKind;
use crate::model::state::KnownDevice;
use crate::model::{Device, Event, Snapshot, StableNodeId, User};

pub(super) fn expires_within(d: &Device, policy: &Policy, now: DateTime<Utc>) -> bool {
    d.key_expiry
        .is_some_and(|t| !d.expired && t > now && t - now <= policy.key_expiry_warn)
}

/// Raises `device.key_expiring` once per expiry time, recording that it did in `k`.
pub(super) fn key_expiring(
    k: &mut KnownDevice,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    key_expiring_of(&k.device, &mut k.expiring_alerted, owner, policy, now)
}

/// [`key_expiring`] on the parts of a known device (no copy of the device when nothing changes).
pub(super) fn key_expiring_of(
    d: &Device,
    expiring_alerted: &mut Option<DateTime<Utc>>,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    if !expires_within(d, policy, now) || *expiring_alerted == d.key_expiry {
        return None;
    }
    *expiring_alerted = d.key_expiry;
    let at = d.key_expiry?;
    let mut e = Event::new(
        EventKind::DeviceKeyExpiring,
        now,
        format!(
            "Node key of {} expires in {} days ({})",
            d.display_name(),
            (at - now).num_days(),
            at.format("%Y-%m-%d %H:%M UTC")
        ),
    );
    e.device = Some(d.clone());
    e.user = owner.cloned();
    Some(e)
}

/// A handshake at `h` is a new connection if none was seen before, or the last one is older than
/// the quiet period.
pub(super) fn is_new_connection(
    prev: Option<DateTime<Utc>>,
    h: DateTime<Utc>,
    policy: &Policy,
) -> bool {
    prev.is_none_or(|p| h - p >= policy.connect_quiet)
}

/// Peers whose current handshake will be reported as `peer.connected` by [`diff`]: the edge asks
/// `whois` about these (and only these) before the pass.
///
/// `last` gives the last handshake recorded for a device; `None` means there is no baseline yet.
pub fn connection_candidates(
    last: Option<impl FnMut(&StableNodeId) -> Option<DateTime<Utc>>>,
    cur: &Snapshot,
    policy: &Policy,
) -> Vec<StableNodeId> {
    let Some(mut last) = last else {
        return Vec::new();
    };
    cur.conns
        .iter()
        .filter_map(|(id, c)| {
            let h = c.last_handshake?;
            let prev = last(id);
            (prev.is_none_or(|p| h > p) && is_new_connection(prev, h, policy)).then(|| id.clone())
        })
        .collect()
}

/// Raises `peer.connected` when a peer has a WireGuard handshake with this node for the first time,
/// or again after `connect_quiet` without one, and records the handshake in `k`.
pub(super) fn connected(
    k: &mut KnownDevice,
    cur: &Snapshot,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    let after_baseline = k.after_baseline;
    connected_of(
        &k.device,
        &mut k.last_handshake,
        after_baseline,
        cur,
        owner,
        policy,
        now,
    )
}

/// [`connected`] on the parts of a known device.
pub(super) fn connected_of(
    d: &Device,
    last_handshake: &mut Option<DateTime<Utc>>,
    after_baseline: bool,
    cur: &Snapshot,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    let h = cur.conns.get(&d.id)?.last_handshake?;
    let prev = *last_handshake;
    if prev.is_some_and(|p| h <= p) {
        return None;
    }
    *last_handshake = Some(h);
    if !is_new_connection(prev, h, policy) {
        return None;
    }
    let mut e = Event::new(
        EventKind::PeerConnected,
        now,
        format!(
            "{} ({}) opened a WireGuard session with this server",
            d.display_name(),
            owner.map_or("unknown user", |u| u.login.as_str())
        ),
    );
    e.detail = match prev {
        Some(p) => format!(
            "handshake at {}; the previous one was at {}",
            h.to_rfc3339(),
            p.to_rfc3339()
        ),
        None => format!("first handshake seen, at {}", h.to_rfc3339()),
    };
    if let Some(w) = cur.whois.get(&d.id) {
        e.detail = format!("{}; {w}", e.detail);
    }
    e.record_only = match policy.connect_alert {
        ConnectAlert::All => false,
        ConnectAlert::None => true,
        ConnectAlert::New => !after_baseline,
    };
    e.device = Some(d.clone());
    e.user = owner.cloned();
    Some(e)
}
