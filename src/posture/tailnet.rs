//! Tailnet settings: approvals, key expiry, MFA, webhooks, log streaming, Tailnet Lock.

use crate::model::posture::Status;
use crate::posture::{
    is_headscale, pass_if, readable, setting, Inputs, Out, CRITICAL_WEBHOOK_EVENTS,
    KEY_DURATION_DAYS,
};

pub(super) fn tailnet(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    // Each check's setting, and the value that passes.
    let bools = [
        ("TN-01", "devicesApprovalOn", true),
        ("TN-02", "usersApprovalOn", true),
        ("TN-05", "networkFlowLoggingOn", true),
        ("TN-06", "httpsEnabled", false),
    ];
    for (id, key, want) in bools {
        let fix = o.fix(id);
        if hs {
            o.not_on_headscale(id);
            continue;
        }
        match setting(i, key) {
            Ok(v) => {
                let ok = v.as_bool() == Some(want);
                o.add(
                    id,
                    pass_if(ok),
                    format!("settings.{key} = {v} (Admin API /settings)"),
                    fix,
                );
            }
            Err(e) => o.add(id, Status::Unknown, e, fix),
        }
    }
    let fix = o.fix("TN-03");
    if hs {
        o.add(
            "TN-03",
            Status::NotAvailable,
            "not available through the Headscale API (config node.expiry); see DV-01",
            fix,
        );
    } else {
        match setting(i, "devicesKeyDurationDays") {
            Ok(v) => {
                let ok = v.as_i64().is_some_and(|d| d <= KEY_DURATION_DAYS);
                o.add(
                    "TN-03",
                    pass_if(ok),
                    format!("settings.devicesKeyDurationDays = {v}"),
                    fix,
                );
            }
            Err(e) => o.add("TN-03", Status::Unknown, e, fix),
        }
    }
    let fix = o.fix("TN-04");
    if hs {
        o.not_on_headscale("TN-04");
    } else {
        match setting(i, "usersRoleAllowedToJoinExternalTailnets") {
            Ok(v) => {
                let ok = matches!(v.as_str(), Some("none" | "admin"));
                o.add(
                    "TN-04",
                    pass_if(ok),
                    format!("settings.usersRoleAllowedToJoinExternalTailnets = {v}"),
                    fix,
                );
            }
            Err(e) => o.add("TN-04", Status::Unknown, e, fix),
        }
    }
    let cp = i.control.map(|c| &c.posture);
    let fix = o.fix("TN-07");
    let check = ("TN-07", fix);
    let stream = cp.map(|p| &p.log_streaming);
    if let Some(&on) = readable(
        o,
        i,
        check,
        true,
        stream,
        "missing scope log_streaming:read",
    ) {
        o.add(
            "TN-07",
            pass_if(on),
            format!(
                "logging/configuration/stream: {}",
                if on { "configured" } else { "not configured" }
            ),
            fix,
        );
    }
    let fix = o.fix("TN-08");
    let check = ("TN-08", fix);
    let contact = cp.map(|p| &p.security_contact);
    if let Some((email, unverified)) = readable(
        o,
        i,
        check,
        true,
        contact,
        "missing scope account_settings:read",
    ) {
        o.add(
            "TN-08",
            pass_if(!email.is_empty() && !unverified),
            format!("contacts.security.email = {email:?}, needsVerification = {unverified}"),
            fix,
        );
    }
    let fix = o.fix("TN-09");
    let check = ("TN-09", fix);
    let hooks = cp.map(|p| &p.webhooks);
    if let Some(hooks) = readable(o, i, check, true, hooks, "missing scope webhooks:read") {
        let covered = |ev: &str| {
            hooks.iter().any(|h| {
                h.subscriptions
                    .iter()
                    .any(|s| s == ev || s == "categoryTailnetManagement")
            })
        };
        let missing: Vec<String> = CRITICAL_WEBHOOK_EVENTS
            .iter()
            .filter(|e| !covered(e))
            .map(|e| e.to_string())
            .collect();
        o.add(
            "TN-09",
            pass_if(missing.is_empty()),
            if missing.is_empty() {
                format!(
                    "{} webhook endpoint(s) cover {}",
                    hooks.len(),
                    CRITICAL_WEBHOOK_EVENTS.join(", ")
                )
            } else {
                format!(
                    "{} webhook endpoint(s); not subscribed: {}",
                    hooks.len(),
                    missing.join(", ")
                )
            },
            fix,
        );
    }
}
