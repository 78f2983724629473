//! Devices: stale, long-lived keys disabled, outdated clients, unapproved routes, exit nodes.

use chrono::Duration;

use crate::model::posture::{DeviceFacts, Status};
use crate::posture::{is_headscale, list, pass_if, unreadable, Inputs, Out, STALE_DAYS};

/// A fact of a device that a check flags.
type Flag = fn(&DeviceFacts) -> bool;

pub(super) fn devices(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let Some(c) = i.control else {
        for id in [
            "DV-01", "DV-02", "DV-03", "DV-04", "DV-05", "DV-06", "DV-07",
        ] {
            o.add(id, Status::Unknown, unreadable(i), "");
        }
        return;
    };
    let name = |d: &crate::model::control::ControlDevice| {
        if d.hostname.is_empty() {
            d.name.clone()
        } else {
            d.hostname.clone()
        }
    };
    let user_no_expiry: Vec<String> = c
        .devices
        .values()
        .filter(|d| d.tags.is_empty() && d.key_expiry_disabled)
        .map(name)
        .collect();
    o.judge(
        "DV-01",
        user_no_expiry.is_empty(),
        format!(
            "all {} user-owned device(s) have key expiry",
            c.devices.values().filter(|d| d.tags.is_empty()).count()
        ),
        format!("key expiry disabled on {}", list(&user_no_expiry)),
    );
    let tagged_no_expiry: Vec<String> = c
        .devices
        .values()
        .filter(|d| !d.tags.is_empty() && d.key_expiry_disabled)
        .map(name)
        .collect();
    o.judge(
        "DV-02",
        tagged_no_expiry.is_empty(),
        "every tagged device's key expires",
        format!(
            "tagged devices that never expire: {}",
            list(&tagged_no_expiry)
        ),
    );
    let facts = &c.posture.devices;
    let cutoff = i.now - Duration::days(STALE_DAYS);
    let stale: Vec<String> = c
        .devices
        .values()
        .filter(|d| {
            d.online != Some(true)
                && facts
                    .get(&d.id)
                    .and_then(|f| f.last_seen)
                    .is_some_and(|t| t < cutoff)
        })
        .map(name)
        .collect();
    let seen_known = c
        .devices
        .keys()
        .any(|id| facts.get(id).is_some_and(|f| f.last_seen.is_some()));
    o.add(
        "DV-03",
        match (stale.is_empty(), seen_known || c.devices.is_empty()) {
            (false, _) => Status::Fail,
            (true, true) => Status::Pass,
            (true, false) => Status::Unknown,
        },
        if stale.is_empty() {
            "no device last seen more than 60 days ago (lastSeen)".to_owned()
        } else {
            format!("last seen more than 60 days ago: {}", list(&stale))
        },
        o.fix("DV-03"),
    );
    let by_fact = |f: Flag| -> Vec<String> {
        c.devices
            .values()
            .filter(|d| facts.get(&d.id).is_some_and(f))
            .map(name)
            .collect()
    };
    // Each check, the fact it flags, and how the evidence names the devices.
    let flags: [(&str, Flag, &str); 4] = [
        (
            "DV-04",
            |f| f.is_external == Some(true),
            "shared in from another tailnet",
        ),
        (
            "DV-05",
            |f| f.update_available == Some(true),
            "update available on",
        ),
        (
            "DV-06",
            |f| f.multiple_connections == Some(true),
            "connected more than once with the same node key (a cloned node?)",
        ),
        (
            "DV-07",
            |f| !f.tailnet_lock_error.is_empty(),
            "failing Tailnet Lock checks",
        ),
    ];
    for (id, pred, what) in flags {
        let fix = o.fix(id);
        if hs {
            o.not_on_headscale(id);
            continue;
        }
        let hits = by_fact(pred);
        o.add(
            id,
            pass_if(hits.is_empty()),
            if hits.is_empty() {
                format!(
                    "none of {} device(s) (Admin API /devices?fields=all)",
                    c.devices.len()
                )
            } else {
                format!("{what}: {}", list(&hits))
            },
            fix,
        );
    }
}
