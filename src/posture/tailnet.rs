//! Tailnet settings: approvals, key expiry, MFA, webhooks, log streaming, Tailnet Lock.

use crate::model::posture::Status;
use crate::model::Severity;
use crate::posture::{
    is_headscale, pass_if, readable, setting, Inputs, Out, CRITICAL_WEBHOOK_EVENTS,
    KEY_DURATION_DAYS,
};

pub(super) fn tailnet(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    #[allow(clippy::type_complexity)]
    let bools: [(&str, &str, &str, Severity, bool, &str); 4] = [
        (
            "TN-01",
            "devicesApprovalOn",
            "Device approval is required",
            Severity::Critical,
            true,
            "admin console → Settings → Device management → Require device approval",
        ),
        (
            "TN-02",
            "usersApprovalOn",
            "User approval is required",
            Severity::Warning,
            true,
            "admin console → Settings → User management → Require user approval",
        ),
        (
            "TN-05",
            "networkFlowLoggingOn",
            "Network flow logs are on",
            Severity::Info,
            true,
            "admin console → Logs → Network flow logs → Enable (Premium/Enterprise)",
        ),
        (
            "TN-06",
            "httpsEnabled",
            "HTTPS certificates are off (machine names go to public CT logs)",
            Severity::Info,
            false,
            "admin console → DNS → HTTPS Certificates → Disable, unless you need them",
        ),
    ];
    for (id, key, title, sev, want, fix) in bools {
        if hs {
            o.not_on_headscale(id, title, sev);
            continue;
        }
        match setting(i, key) {
            Ok(v) => {
                let ok = v.as_bool() == Some(want);
                o.add(
                    id,
                    title,
                    sev,
                    pass_if(ok),
                    format!("settings.{key} = {v} (Admin API /settings)"),
                    fix,
                );
            }
            Err(e) => o.add(id, title, sev, Status::Unknown, e, fix),
        }
    }
    let title = "Node keys expire within 90 days";
    let fix = "admin console → Settings → Device management → Key expiry: 90 days or less";
    if hs {
        o.add(
            "TN-03",
            title,
            Severity::Warning,
            Status::NotAvailable,
            "not available through the Headscale API (config node.expiry); see DV-01",
            "set node.expiry in headscale's config.yaml",
        );
    } else {
        match setting(i, "devicesKeyDurationDays") {
            Ok(v) => {
                let ok = v.as_i64().is_some_and(|d| d <= KEY_DURATION_DAYS);
                o.add(
                    "TN-03",
                    title,
                    Severity::Warning,
                    pass_if(ok),
                    format!("settings.devicesKeyDurationDays = {v}"),
                    fix,
                );
            }
            Err(e) => o.add("TN-03", title, Severity::Warning, Status::Unknown, e, fix),
        }
    }
    let title = "Only admins (or nobody) may join external tailnets";
    let fix = "admin console → Settings → User management → Who can join external tailnets: Admins or None";
    if hs {
        o.not_on_headscale("TN-04", title, Severity::Warning);
    } else {
        match setting(i, "usersRoleAllowedToJoinExternalTailnets") {
            Ok(v) => {
                let ok = matches!(v.as_str(), Some("none" | "admin"));
                o.add(
                    "TN-04",
                    title,
                    Severity::Warning,
                    pass_if(ok),
                    format!("settings.usersRoleAllowedToJoinExternalTailnets = {v}"),
                    fix,
                );
            }
            Err(e) => o.add("TN-04", title, Severity::Warning, Status::Unknown, e, fix),
        }
    }
    let cp = i.control.map(|c| &c.posture);
    let title = "Configuration logs are streamed out of the tailnet";
    let fix = "admin console → Logs → Configuration logs → Start streaming (to a SIEM the admin console cannot erase)";
    let check = ("TN-07", title, Severity::Info, fix);
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
            title,
            Severity::Info,
            pass_if(on),
            format!(
                "logging/configuration/stream: {}",
                if on { "configured" } else { "not configured" }
            ),
            fix,
        );
    }
    let title = "A verified security contact is set";
    let fix = "admin console → Settings → General → Contact preferences → Security issues";
    let check = ("TN-08", title, Severity::Info, fix);
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
            title,
            Severity::Info,
            pass_if(!email.is_empty() && !unverified),
            format!("contacts.security.email = {email:?}, needsVerification = {unverified}"),
            fix,
        );
    }
    let title = "A webhook is subscribed to the critical events";
    let fix = "admin console → Settings → Webhooks → subscribe an endpoint to categoryTailnetManagement (e.g. this monitor's [webhooks] receiver)";
    let check = ("TN-09", title, Severity::Warning, fix);
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
            title,
            Severity::Warning,
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
