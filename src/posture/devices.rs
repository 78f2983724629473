//! Devices: stale, long-lived keys disabled, outdated clients, unapproved routes, exit nodes.

use chrono::Duration;

use crate::model::posture::Status;
use crate::model::Severity;
use crate::posture::{is_headscale, list, pass_if, unreadable, Inputs, Out, STALE_DAYS};

pub(super) fn devices(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let Some(c) = i.control else {
        for (id, title, sev) in [
            (
                "DV-01",
                "Key expiry is on for user devices",
                Severity::Warning,
            ),
            ("DV-02", "Tagged devices' keys expire", Severity::Info),
            ("DV-03", "No device unseen for 60+ days", Severity::Info),
            ("DV-04", "No external (shared-in) devices", Severity::Info),
            ("DV-05", "Devices are up to date", Severity::Info),
            ("DV-06", "No node key in use twice", Severity::Critical),
            ("DV-07", "No Tailnet Lock errors", Severity::Warning),
        ] {
            o.add(id, title, sev, Status::Unknown, unreadable(i), "");
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
        (
            "DV-01",
            "Key expiry is on for user devices",
            Severity::Warning,
            if hs {
                "headscale nodes expire <id> and re-register with an expiring key; set node.expiry"
            } else {
                "admin console → Machines → … → Enable key expiry"
            },
        ),
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
        (
            "DV-02",
            "Tagged devices' keys expire",
            Severity::Info,
            "enable key expiry on tagged servers and rotate them with an OAuth client or auth key",
        ),
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
        "No device unseen for 60+ days",
        Severity::Info,
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
        if hs {
            "headscale nodes delete -i <id>"
        } else {
            "admin console → Machines → remove devices no longer in use"
        },
    );
    let by_fact = |f: fn(&crate::model::posture::DeviceFacts) -> bool| -> Vec<String> {
        c.devices
            .values()
            .filter(|d| facts.get(&d.id).is_some_and(f))
            .map(name)
            .collect()
    };
    #[allow(clippy::type_complexity)]
    let flags: [(
        &str,
        &str,
        Severity,
        fn(&crate::model::posture::DeviceFacts) -> bool,
        &str,
        &str,
    ); 4] = [
        (
            "DV-04",
            "No external (shared-in) devices",
            Severity::Info,
            |f| f.is_external == Some(true),
            "shared in from another tailnet",
            "admin console → Machines → review shared-in devices and remove unneeded shares",
        ),
        (
            "DV-05",
            "Devices are up to date",
            Severity::Info,
            |f| f.update_available == Some(true),
            "update available on",
            "update those clients, or turn on Settings → Device management → Auto-updates",
        ),
        (
            "DV-06",
            "No node key in use twice",
            Severity::Critical,
            |f| f.multiple_connections == Some(true),
            "connected more than once with the same node key (a cloned node?)",
            "remove the device and re-register it; find the copy of its state",
        ),
        (
            "DV-07",
            "No Tailnet Lock errors",
            Severity::Warning,
            |f| !f.tailnet_lock_error.is_empty(),
            "failing Tailnet Lock checks",
            "tailscale lock sign the devices you trust; remove the others",
        ),
    ];
    for (id, title, sev, pred, what, fix) in flags {
        if hs {
            o.not_on_headscale(id, title, sev);
            continue;
        }
        let hits = by_fact(pred);
        o.add(
            id,
            title,
            sev,
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
