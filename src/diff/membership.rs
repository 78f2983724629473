//! Users and devices: new, changed, removed, back; the baseline of an empty store.

use chrono::{DateTime, Utc};

use crate::diff::connections::{
    connected, connected_of, expires_within, key_expiring, key_expiring_of,
};
use crate::diff::device_changes::device_changes;
use crate::diff::lookalikes::Lookalikes;
use crate::diff::Policy;
use crate::diff::{access, presence};
use crate::model::access::Access;
use crate::model::event_kind::EventKind;
use crate::model::state::Outcome;
use crate::model::state::{Known, KnownDevice, KnownUser};
use crate::model::{Ascending, Change, Event, Snapshot};

/// Compares the current snapshot with what is known. `now` is the detection time.
pub fn diff(known: &Known, cur: &Snapshot, policy: &Policy, now: DateTime<Utc>) -> Outcome {
    if !known.baseline_done {
        return baseline(cur, policy, now);
    }
    let mut out = Outcome::default();

    let control_logins = |login: &str| {
        known
            .control
            .as_ref()
            .is_some_and(|c| c.users.contains(login))
    };
    for user in cur.users.values() {
        match known.users.get(&user.id) {
            None if control_logins(&user.login) => out.users.push(KnownUser {
                user: user.clone(),
                removed: false,
            }),
            None => {
                let mut e = Event::new(
                    EventKind::UserNew,
                    now,
                    format!("New user {} ({})", user.login, user.display_name),
                );
                e.user = Some(user.clone());
                out.events.push(e);
                out.users.push(KnownUser {
                    user: user.clone(),
                    removed: false,
                });
            }
            Some(k) if k.removed || k.user != *user => out.users.push(KnownUser {
                user: user.clone(),
                removed: false,
            }),
            Some(_) => {}
        }
    }

    devices(known, cur, policy, now, &mut out);

    let mut cur_devices = Ascending::new(&cur.devices);
    for (id, k) in &known.devices {
        if !k.removed && cur_devices.get(id).is_none() {
            let owner = known.users.get(&k.device.user_id).map(|u| u.user.clone());
            let mut e = Event::new(
                EventKind::DeviceRemoved,
                now,
                format!(
                    "Device {} left the tailnet (or is no longer visible to this node)",
                    k.device.display_name()
                ),
            );
            e.device = Some(k.device.clone());
            e.user = owner;
            out.events.push(e);
            out.devices.push(KnownDevice {
                removed: true,
                ..k.clone()
            });
        }
    }
    for (id, k) in &known.users {
        if !k.removed && !cur.users.contains_key(id) {
            let mut e = Event::new(
                EventKind::UserRemoved,
                now,
                format!("User {} is no longer in the tailnet", k.user.login),
            );
            e.user = Some(k.user.clone());
            out.events.push(e);
            out.users.push(KnownUser {
                removed: true,
                ..k.clone()
            });
        }
    }
    let (events, presence, due) =
        presence::evaluate(&policy.watches, known.presence.as_ref(), cur, now);
    out.events.extend(events);
    out.watched = presence.devices.keys().cloned().collect();
    // Nothing watched and nothing remembered: nothing to write.
    let empty = crate::model::presence::KnownPresence::default();
    if known.presence.as_ref().unwrap_or(&empty) != &presence {
        out.presence = Some(presence);
    }
    out.presence_due = due;
    if !cur.tailnet_id.is_empty() && known.tailnet_id.as_deref() != Some(&cur.tailnet_id) {
        if let Some(old) = &known.tailnet_id {
            let mut e = Event::new(
                EventKind::NodeTailnetChanged,
                now,
                format!(
                    "This server now belongs to another tailnet ({})",
                    if cur.tailnet.is_empty() {
                        &cur.tailnet_id
                    } else {
                        &cur.tailnet
                    }
                ),
            );
            e.changes = vec![Change {
                field: "tailnet".into(),
                old: old.clone(),
                new: cur.tailnet_id.clone(),
            }];
            out.events.push(e);
        }
        out.tailnet_id = Some(cur.tailnet_id.clone());
    }
    if let Some(view) = &cur.node {
        let new = access::canonical_with(view, cur, &known.devices);
        match &known.access {
            Some(old) => {
                // Two parts, compared each where both sides could be read: who may reach this
                // server (an unknown model is never compared: no false "narrowed"), and this
                // node's trust signals (a Tailnet Lock change is seen whatever the filter).
                if old.known && new.known {
                    let old = access::reattributed(old, view, cur);
                    out.events.extend(access::events(&old, &new, cur, now));
                }
                out.events
                    .extend(access::trust_events(&old.trust, &new.trust, now));
                let next = access::merged(old, new);
                if next != *old {
                    out.access = Some(next);
                }
            }
            None => out.access = Some(new),
        }
    }
    out
}

/// The devices `cur` lists, against what is known: new, changed, back, expiring, connected. The
/// full pass gives it the whole tailnet; the bus's delta ([`super::delta`]) only the peers that
/// changed, so that both decide a device the same way.
pub(super) fn devices(
    known: &Known,
    cur: &Snapshot,
    policy: &Policy,
    now: DateTime<Utc>,
    out: &mut Outcome,
) {
    // Built on the first new device: one pass over what is known, not one per new device.
    let mut lookalikes: Option<Lookalikes> = None;
    let mut known_devices = Ascending::new(&known.devices);
    // The connections have the devices' keys (less this server's): the same walk.
    let mut conns = Ascending::new(&cur.conns);
    for dev in cur.devices.values() {
        let handshake = conns.get(&dev.id).and_then(|c| c.last_handshake);
        let owner = cur.users.get(&dev.user_id);
        match known_devices.get(&dev.id) {
            // Reported already from the control view, while this node could not see it.
            None if known
                .control
                .as_ref()
                .is_some_and(|c| c.devices.contains_key(&dev.id)) =>
            {
                out.devices.push(KnownDevice {
                    device: dev.clone(),
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: true,
                });
            }
            None => {
                let mut e = Event::new(
                    EventKind::DeviceNew,
                    now,
                    format!(
                        "New device {} ({}) of {} joined the tailnet",
                        dev.display_name(),
                        dev.os,
                        owner
                            .as_ref()
                            .map_or("an unknown user", |u| u.login.as_str())
                    ),
                );
                e.detail = lookalikes
                    .get_or_insert_with(|| Lookalikes::new(known))
                    .hint(dev);
                e.device = Some(dev.clone());
                e.user = owner.cloned();
                out.events.push(e);
                let mut k = KnownDevice {
                    device: dev.clone(),
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: true,
                };
                if let Some(e) = key_expiring(&mut k, owner, policy, now) {
                    out.events.push(e);
                }
                out.events
                    .extend(connected(&mut k, cur, owner, policy, now));
                out.devices.push(k);
            }
            Some(prev) => {
                // The device is copied only when something about it is to be recorded.
                let mut expiring_alerted =
                    prev.expiring_alerted.filter(|&t| Some(t) == dev.key_expiry);
                let mut last_handshake = prev.last_handshake;
                let changed = prev.device != *dev;
                // What is reported is what `run`'s bus filter compares: one definition.
                if changed && prev.device.membership() != dev.membership() {
                    out.events
                        .extend(device_changes(&prev.device, dev, owner, cur, now));
                }
                if let Some(e) = key_expiring_of(dev, &mut expiring_alerted, owner, policy, now) {
                    out.events.push(e);
                }
                // Only a handshake newer than the last recorded one can be news (looked up
                // again there: rare).
                if handshake.is_some_and(|h| last_handshake.is_none_or(|p| h > p)) {
                    out.events.extend(connected_of(
                        dev,
                        &mut last_handshake,
                        prev.after_baseline,
                        cur,
                        owner,
                        policy,
                        now,
                    ));
                }
                if prev.removed
                    || changed
                    || prev.expiring_alerted != expiring_alerted
                    || prev.last_handshake != last_handshake
                {
                    out.devices.push(KnownDevice {
                        device: dev.clone(),
                        removed: false,
                        expiring_alerted,
                        last_handshake,
                        after_baseline: prev.after_baseline,
                    });
                }
            }
        }
    }
}

pub(super) fn baseline(cur: &Snapshot, policy: &Policy, now: DateTime<Utc>) -> Outcome {
    let mut e = Event::new(
        EventKind::MonitorBaseline,
        now,
        format!(
            "Monitoring started: baseline of {} devices and {} users recorded for review",
            cur.devices.len(),
            cur.users.len()
        ),
    );
    e.devices = cur.devices.values().cloned().collect();
    e.users = cur.users.values().cloned().collect();
    let access = cur.node.as_ref().map(|v| access::canonical(v, cur));
    e.access = access.as_ref().filter(|a| a.known).map(Access::rows);
    let devices = cur
        .devices
        .values()
        .map(|d| {
            let mut k = KnownDevice {
                device: d.clone(),
                removed: false,
                expiring_alerted: None,
                last_handshake: cur.conns.get(&d.id).and_then(|c| c.last_handshake),
                after_baseline: false,
            };
            // Listed in the baseline already; do not raise it again on the next pass.
            if expires_within(d, policy, now) {
                k.expiring_alerted = d.key_expiry;
            }
            k
        })
        .collect();
    let users = cur
        .users
        .values()
        .map(|u| KnownUser {
            user: u.clone(),
            removed: false,
        })
        .collect();
    Outcome {
        events: vec![e],
        devices,
        users,
        access,
        control: None,
        presence: (!policy.watches.is_empty())
            .then(|| presence::evaluate(&policy.watches, None, cur, now).1),
        presence_due: None,
        watched: Vec::new(),
        guard: None,
        tailnet_id: (!cur.tailnet_id.is_empty()).then(|| cur.tailnet_id.clone()),
    }
}
