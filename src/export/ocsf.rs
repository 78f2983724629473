//! OCSF: one event object per event, of the class its kind is:
//! - Device Inventory Info (5001) for joins and the baseline;
//! - Network Activity (4001), activity Refuse, for `guard.blocked`;
//! - Entity Management (3004) for control-plane, user and guard changes;
//! - Detection Finding (2004) for posture;
//! - Base Event (0) for the rest.
//!
//! The chain is `metadata.sequence` and `unmapped.tsmon_hash` / `tsmon_prev`.

use serde_json::{json, Value};

use super::{bounded, Record, PRODUCT};
use crate::model::{EventKind, Severity};

pub(crate) const OCSF_VERSION: &str = "1.3.0";

/// The class, category and activity of a kind: `(class_uid, category_uid, activity_id)`.
pub(crate) fn class(k: EventKind) -> (u32, u32, u32) {
    let name = k.as_str();
    match name {
        "device.new" | "monitor.baseline" => (5001, 5, 1),
        "guard.blocked" => (4001, 4, 5),
        _ if name.starts_with("posture.") => {
            (2004, 2, if name == "posture.improved" { 3 } else { 1 })
        }
        _ if name.starts_with("control.")
            || name.starts_with("user.")
            || name.starts_with("guard.")
            || name.starts_with("device.") =>
        {
            let activity = if name.ends_with(".removed") || name.ends_with(".revoked") {
                4
            } else if name.ends_with(".new") || name.ends_with(".approved") {
                1
            } else {
                3
            };
            (3004, 3, activity)
        }
        _ => (0, 0, 99),
    }
}

pub(crate) fn ocsf(r: &Record<'_>) -> Value {
    let e = r.event();
    let (class_uid, category_uid, activity_id) = class(e.kind);
    let severity_id = match e.severity {
        Severity::Info => 1,
        Severity::Warning => 3,
        Severity::Critical => 5,
    };
    let device = e.device.as_ref().map(|d| {
        json!({
            "uid": bounded(&d.id.0),
            "hostname": bounded(&d.hostname),
            "name": bounded(d.display_name()),
            "os": {"name": bounded(&d.os), "type_id": 0},
            "ip": d.addresses.first().map(|a| bounded(a)),
            "type_id": 0,
        })
    });
    let mut v = json!({
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "severity_id": severity_id,
        "time": e.at.timestamp_millis(),
        "message": bounded(&e.summary),
        "status_id": 1,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": PRODUCT},
            "sequence": r.seq(),
            "uid": r.c.hash,
            "log_name": "events",
        },
        "observables": [],
        "unmapped": {
            "tsmon_kind": e.kind.as_str(),
            "tsmon_hash": r.c.hash,
            "tsmon_prev": r.c.prev_hash,
            "tsmon_observer": bounded(r.host),
        },
    });
    match class_uid {
        5001 => {
            v["device"] =
                device.unwrap_or_else(|| json!({"type_id": 0, "hostname": bounded(r.host)}));
        }
        4001 => {
            let src = e.device.as_ref().and_then(|d| d.addresses.first().cloned());
            v["src_endpoint"] = json!({"ip": src.map(|s| bounded(&s)), "uid": e.device.as_ref().map(|d| bounded(&d.id.0))});
            v["dst_endpoint"] = json!({"hostname": bounded(r.host)});
            if let Some(d) = device {
                v["device"] = d;
            }
        }
        3004 => {
            let (name, uid, kind) = match (&e.device, &e.user) {
                (Some(d), _) => (d.display_name().to_owned(), d.id.0.clone(), "device"),
                (None, Some(u)) => (u.login.clone(), u.id.to_string(), "user"),
                (None, None) => (e.kind.as_str().to_owned(), String::new(), "setting"),
            };
            v["entity"] = json!({"name": bounded(&name), "uid": bounded(&uid), "type": kind});
        }
        2004 => {
            v["finding_info"] =
                json!({"title": bounded(&e.summary), "uid": format!("tsmon-{}", r.seq())});
        }
        _ => {
            if let Some(d) = device {
                v["device"] = d;
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_class() {
        assert_eq!(class(EventKind::DeviceNew), (5001, 5, 1));
        assert_eq!(class(EventKind::MonitorBaseline), (5001, 5, 1));
        assert_eq!(class(EventKind::GuardBlocked), (4001, 4, 5), "Refuse");
        assert_eq!(class(EventKind::PostureDegraded).0, 2004);
        assert_eq!(class(EventKind::DeviceRemoved), (3004, 3, 4));
        assert_eq!(class(EventKind::GuardApproved), (3004, 3, 1));
        for k in EventKind::ALL {
            let (c, cat, _) = class(k);
            assert_eq!(cat, c / 1000, "{k}");
        }
    }
}
