//! Elastic Common Schema: one JSON object per event. The categorization fields take only ECS's
//! allowed values (`event.kind`, `event.category`, `event.type`); the device is `device.*` and
//! `host.*`-free (the observer is this server); the chain is `event.sequence`, `event.hash` and
//! `tailscale_monitor.prev_hash`.

use serde_json::{json, Value};

use super::{bounded, Record, PRODUCT};
use crate::model::{EventKind, Severity};

/// The ECS version the fields follow.
pub(crate) const ECS_VERSION: &str = "8.11.0";

/// `event.category` and `event.type` of a kind (ECS allowed values only).
pub(crate) fn categorization(k: EventKind) -> (&'static [&'static str], &'static [&'static str]) {
    let name = k.as_str();
    let (area, what) = name.split_once('.').unwrap_or((name, ""));
    match (area, what) {
        ("device", "new") => (&["host"], &["creation"]),
        ("device", "removed") => (&["host"], &["deletion"]),
        ("user", "new") => (&["iam"], &["user", "creation"]),
        ("user", "removed") => (&["iam"], &["user", "deletion"]),
        ("peer", _) => (&["network"], &["connection", "start"]),
        ("guard", "blocked") => (
            &["network", "intrusion_detection"],
            &["connection", "denied"],
        ),
        ("guard", "approved") => (&["configuration", "iam"], &["allowed", "change"]),
        ("web", "refused") => (&["web", "authentication"], &["access", "denied"]),
        ("web", _) => (&["web"], &["access", "allowed"]),
        ("posture", _) => (&["configuration"], &["info"]),
        ("access" | "policy" | "node" | "control" | "guard", _) => {
            (&["configuration"], &["change"])
        }
        ("monitor", _) => (&["host"], &["info"]),
        _ => (&["host"], &["change"]),
    }
}

pub(crate) fn ecs(r: &Record<'_>) -> Value {
    let e = r.event();
    let (category, kind_type) = categorization(e.kind);
    let mut v = json!({
        "@timestamp": e.at.to_rfc3339(),
        "message": bounded(&e.summary),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": if e.severity == Severity::Critical { "alert" } else { "event" },
            "category": category,
            "type": kind_type,
            "action": e.kind.as_str(),
            "severity": match e.severity { Severity::Info => 1, Severity::Warning => 2, Severity::Critical => 3 },
            "sequence": r.seq(),
            "hash": r.c.hash,
            "created": e.at.to_rfc3339(),
            "module": "tailscale_monitor",
            "dataset": "tailscale_monitor.events",
            "provider": PRODUCT,
        },
        "observer": {"hostname": bounded(r.host), "product": PRODUCT, "vendor": PRODUCT, "type": "monitor"},
        "tailscale_monitor": {"prev_hash": r.c.prev_hash, "kind": e.kind.as_str(), "severity": e.severity.as_str()},
    });
    if let Some(d) = &e.device {
        v["device"] = json!({"id": bounded(&d.id.0)});
        v["tailscale_monitor"]["device"] = json!({
            "name": bounded(d.display_name()),
            "dns_name": bounded(&d.dns_name),
            "os": bounded(&d.os),
            "addresses": d.addresses.iter().map(|a| bounded(a)).collect::<Vec<_>>(),
            "tags": d.tags.iter().map(|a| bounded(a)).collect::<Vec<_>>(),
        });
    }
    if let Some(u) = &e.user {
        v["user"] = json!({"name": bounded(&u.login), "full_name": bounded(&u.display_name)});
    }
    if !e.detail.is_empty() {
        v["tailscale_monitor"]["detail"] = json!(bounded(&e.detail));
    }
    v
}
