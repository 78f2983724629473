//! Posture checks: the hardening advice, evaluated from the control view, this node's view and
//! this server's facts. Pure: values in, a [`Report`] out; [`drift`] turns two reports into
//! `posture.degraded` / `posture.improved` events.
//!
//! A check whose data could not be read is `unknown` with the reason (a missing scope, no
//! `[control]`), never `pass`; a feature the control plane lacks (Headscale) is `n/a`.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::model::control::ControlSnapshot;
use crate::model::posture::{
    Finding, KeyFacts, KnownPosture, PathFacts, Report, ServerFacts, Status,
};
use crate::model::{Event, EventKind, Severity, Snapshot};

/// Everything the checks read.
pub struct Inputs<'a> {
    /// The control view (`None`: not configured or not readable; `control_note` says which).
    pub control: Option<&'a ControlSnapshot>,
    pub control_note: &'a str,
    /// This node's view from the LocalAPI (`None`: tailscaled could not be read).
    pub node: Option<&'a Snapshot>,
    pub server: Option<&'a ServerFacts>,
    pub now: DateTime<Utc>,
}

/// Auth and API keys living longer than this are flagged.
const LONG_LIVED_DAYS: i64 = 90;
/// Devices not seen for this long are flagged.
const STALE_DAYS: i64 = 60;
/// `devicesKeyDurationDays` above this is flagged.
const KEY_DURATION_DAYS: i64 = 90;
/// The webhook events whose absence is flagged (all in `categoryTailnetManagement`).
const CRITICAL_WEBHOOK_EVENTS: [&str; 5] = [
    "nodeCreated",
    "nodeNeedsApproval",
    "policyUpdate",
    "userCreated",
    "userNeedsApproval",
];

/// The findings so far, and the area the checks being added belong to.
struct Out {
    findings: Vec<Finding>,
    area: &'static str,
}

/// Pass when the condition holds, else fail.
fn pass_if(ok: bool) -> Status {
    if ok {
        Status::Pass
    } else {
        Status::Fail
    }
}

/// A check's ID, title, severity and fix.
type Check<'a> = (&'a str, &'a str, Severity, &'a str);

impl Out {
    /// A pass/fail finding of `check`: `pass` is the evidence when `ok` holds, `fail` when not.
    fn judge(&mut self, check: Check, ok: bool, pass: impl Into<String>, fail: impl Into<String>) {
        let (id, title, severity, fix) = check;
        let evidence = if ok { pass.into() } else { fail.into() };
        self.add(id, title, severity, pass_if(ok), evidence, fix);
    }

    /// A check Headscale has no equivalent of.
    fn not_on_headscale(&mut self, id: &str, title: &str, severity: Severity) {
        self.add(
            id,
            title,
            severity,
            Status::NotAvailable,
            "not available on Headscale",
            "",
        );
    }

    fn add(
        &mut self,
        id: &str,
        title: &str,
        severity: Severity,
        status: Status,
        evidence: impl Into<String>,
        fix: &str,
    ) {
        self.findings.push(Finding {
            id: id.into(),
            area: self.area.into(),
            title: title.into(),
            severity,
            status,
            evidence: evidence.into(),
            fix: fix.into(),
        });
    }
}

fn list(names: &[String]) -> String {
    const MAX: usize = 10;
    let mut s = names
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        s += &format!(" and {} more", names.len() - MAX);
    }
    s
}

/// Runs every check.
pub fn evaluate(i: &Inputs) -> Report {
    let mut o = Out {
        findings: Vec::new(),
        area: "tailnet",
    };
    tailnet(&mut o, i);
    o.findings.sort_by(|a, b| a.id.cmp(&b.id));
    for (area, checks) in [
        ("policy", policy as fn(&mut Out, &Inputs)),
        ("devices", devices),
        ("keys", keys),
        ("server", server),
        ("server", visibility),
    ] {
        o.area = area;
        checks(&mut o, i);
    }
    o.area = "manual";
    o.add(
        "MN-01",
        "MFA is enforced at the identity provider",
        Severity::Warning,
        Status::Manual,
        "no API exposes it: check your identity provider",
        "require MFA for every account that can log in to the tailnet (https://tailscale.com/kb/1075/multifactor-auth)",
    );
    Report {
        findings: o.findings,
    }
}

fn is_headscale(i: &Inputs) -> bool {
    i.control.is_some_and(|c| c.kind == "headscale")
}

fn unreadable(i: &Inputs) -> String {
    format!("control view not read: {}", i.control_note)
}

/// A part of the control view a check reads: `Some(data)`, or `None` once the finding that says
/// why there is none is added (n/a on Headscale, the control view unread, `missing` refused).
#[allow(clippy::too_many_arguments)]
fn readable<'a, T>(
    o: &mut Out,
    i: &Inputs,
    (id, title, sev, fix): (&str, &str, Severity, &str),
    not_on_headscale: bool,
    part: Option<&'a Option<T>>,
    missing: &str,
) -> Option<&'a T> {
    let (status, evidence) = match part {
        _ if not_on_headscale && is_headscale(i) => (
            Status::NotAvailable,
            "not available on Headscale".to_owned(),
        ),
        None => (Status::Unknown, unreadable(i)),
        Some(None) => (Status::Unknown, format!("unknown ({missing})")),
        Some(Some(data)) => return Some(data),
    };
    o.add(id, title, sev, status, evidence, fix);
    None
}

/// A boolean or string setting: `Some(value)` if the settings could be read and carry it.
fn setting<'a>(i: &'a Inputs, key: &str) -> Result<&'a Value, String> {
    let Some(c) = i.control else {
        return Err(unreadable(i));
    };
    let Some(s) = &c.settings else {
        return Err("unknown (missing scope feature_settings:read: /settings was refused)".into());
    };
    match s.get(key) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(format!(
            "unknown (settings.{key} is null or absent: missing scope)"
        )),
    }
}

fn tailnet(o: &mut Out, i: &Inputs) {
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

/// The deepest policy read: json5 recurses without a limit, and a policy nested some 48,000
/// deep overflows the stack (an abort nothing can catch). Real policies nest a handful deep.
const MAX_POLICY_DEPTH: usize = 256;
/// The largest policy read (Tailscale caps a policy file at 1 MiB).
const MAX_POLICY_BYTES: usize = 4 << 20;

/// The policy as JSON (HuJSON: comments and trailing commas allowed), bounded in size and
/// nesting before the parser sees it.
fn policy_json(c: &ControlSnapshot) -> Option<Result<Value, String>> {
    let p = c.policy.as_ref()?;
    Some(parse_policy(&p.text))
}

fn parse_policy(text: &str) -> Result<Value, String> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "the policy is larger than {MAX_POLICY_BYTES} bytes ({} bytes): not read",
            text.len()
        ));
    }
    let depth = nesting_depth(&crate::model::policy::strip_comments(text));
    if depth > MAX_POLICY_DEPTH {
        return Err(format!(
            "the policy nests {depth} deep, more than {MAX_POLICY_DEPTH}: not read"
        ));
    }
    json5::from_str::<Value>(text).map_err(|e| format!("the policy does not parse: {e}"))
}

/// The deepest nesting of `[` and `{` outside double-quoted strings (comments already removed).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for c in text.chars() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn policy(o: &mut Out, i: &Inputs) {
    let checks: [Check; 6] = [
        ("PL-01", "No allow-all rule (* → *:*)", Severity::Critical, "replace the rule with grants for the sources and ports each group needs (https://tailscale.com/kb/1192/acl-samples)"),
        ("PL-02", "autogroup:danger-all is not used", Severity::Critical, "remove autogroup:danger-all; name the sources instead"),
        ("PL-03", "No SSH accept to root from broad sources", Severity::Critical, "use \"action\": \"check\" and named users, e.g. {\"action\": \"check\", \"src\": [\"group:admins\"], \"dst\": [\"tag:server\"], \"users\": [\"autogroup:nonroot\"]}"),
        ("PL-04", "Tag owners are not every member", Severity::Warning, "give tagOwners to a group of admins, e.g. \"tag:server\": [\"group:admins\"]"),
        ("PL-05", "The policy has tests", Severity::Info, "add a \"tests\" section asserting what must and must not be reachable (https://tailscale.com/kb/1337/policy-syntax#tests)"),
        ("PL-06", "autoApprovers are not broad", Severity::Warning, "auto-approve routes and exit nodes only for tags owned by admins, e.g. \"exitNode\": [\"tag:exit\"]"),
    ];
    let Some(c) = i.control else {
        for (id, title, sev, fix) in checks {
            o.add(id, title, sev, Status::Unknown, unreadable(i), fix);
        }
        return;
    };
    let doc = match policy_json(c) {
        None if c.kind == "headscale" => {
            // Headscale without a policy allows everything.
            for (id, title, sev, fix) in checks {
                let (st, ev) = match id {
                    "PL-01" => (
                        Status::Fail,
                        "no policy is set: Headscale allows all traffic between all nodes"
                            .to_owned(),
                    ),
                    "PL-05" => (Status::Fail, "no policy is set".to_owned()),
                    _ => (
                        Status::Pass,
                        "no policy is set (nothing of this kind)".to_owned(),
                    ),
                };
                o.add(id, title, sev, st, ev, fix);
            }
            return;
        }
        None => {
            for (id, title, sev, fix) in checks {
                o.add(
                    id,
                    title,
                    sev,
                    Status::Unknown,
                    "unknown (missing scope policy_file:read)",
                    fix,
                );
            }
            return;
        }
        Some(Err(e)) => {
            for (id, title, sev, fix) in checks {
                o.add(id, title, sev, Status::Unknown, e.clone(), fix);
            }
            return;
        }
        Some(Ok(v)) => v,
    };
    let where_ = if c.kind == "headscale" {
        "headscale policy"
    } else {
        "tailnet policy file"
    };
    // PL-01: an ACL or grant from * to *:* (or to * with ip ["*"]).
    let mut allow_all = Vec::new();
    for (n, r) in doc["acls"].as_array().into_iter().flatten().enumerate() {
        let src = strings(&r["src"]);
        let dst = strings(&r["dst"]);
        if src.contains(&"*") && dst.contains(&"*:*") {
            allow_all.push(format!("acls[{n}]"));
        }
    }
    for (n, g) in doc["grants"].as_array().into_iter().flatten().enumerate() {
        let src = strings(&g["src"]);
        let dst = strings(&g["dst"]);
        let ip = strings(&g["ip"]);
        if src.contains(&"*") && dst.contains(&"*") && ip.contains(&"*") {
            allow_all.push(format!("grants[{n}]"));
        }
    }
    o.judge(
        checks[0],
        allow_all.is_empty(),
        format!("no rule from * to *:* in the {where_}"),
        format!(
            "{} allow(s) every source to every port ({where_})",
            allow_all.join(", ")
        ),
    );
    let text = &c
        .policy
        .as_ref()
        .map(|p| crate::model::policy::strip_comments(&p.text))
        .unwrap_or_default();
    let danger = text.contains("autogroup:danger-all");
    o.judge(
        checks[1],
        !danger,
        format!("not in the {where_}"),
        format!("autogroup:danger-all appears in the {where_}"),
    );
    let broad = |s: &str| matches!(s, "*" | "autogroup:member" | "autogroup:danger-all");
    let mut root_ssh = Vec::new();
    for (n, r) in doc["ssh"].as_array().into_iter().flatten().enumerate() {
        if r["action"].as_str() == Some("accept")
            && strings(&r["users"]).contains(&"root")
            && strings(&r["src"]).iter().any(|s| broad(s))
        {
            root_ssh.push(format!("ssh[{n}]"));
        }
    }
    o.judge(
        checks[2],
        root_ssh.is_empty(),
        "no SSH rule accepts root from *, autogroup:member or autogroup:danger-all".to_owned(),
        format!(
            "{} accept(s) root without a check from a broad source",
            root_ssh.join(", ")
        ),
    );
    let mut member_tags: Vec<String> = doc["tagOwners"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, owners)| strings(owners).iter().any(|s| broad(s)))
                .map(|(t, _)| t.clone())
                .collect()
        })
        .unwrap_or_default();
    member_tags.sort();
    o.judge(
        checks[3],
        member_tags.is_empty(),
        "no tag is owned by * or autogroup:member".to_owned(),
        format!("any member may apply {}", list(&member_tags)),
    );
    let tests = doc["tests"].as_array().is_some_and(|t| !t.is_empty())
        || doc["sshTests"].as_array().is_some_and(|t| !t.is_empty());
    o.judge(
        checks[4],
        tests,
        "a tests section is present".to_owned(),
        format!("no tests section in the {where_}"),
    );
    let mut wide = Vec::new();
    let aa = &doc["autoApprovers"];
    if strings(&aa["exitNode"]).iter().any(|s| broad(s)) {
        wide.push("exitNode".to_owned());
    }
    if let Some(routes) = aa["routes"].as_object() {
        for (r, who) in routes {
            if strings(who).iter().any(|s| broad(s)) {
                wide.push(format!("routes {r}"));
            }
        }
    }
    o.judge(
        checks[5],
        wide.is_empty(),
        "no autoApprover is * or autogroup:member".to_owned(),
        format!("any member is auto-approved for {}", list(&wide)),
    );
}

fn devices(o: &mut Out, i: &Inputs) {
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

fn key_risks(keys: &[KeyFacts], now: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
    let label = |k: &KeyFacts| {
        if k.description.is_empty() {
            format!("{} {}", k.kind, k.id)
        } else {
            format!("{} {} ({})", k.kind, k.id, k.description)
        }
    };
    let live = keys
        .iter()
        .filter(|k| !k.spent && k.expires.is_none_or(|e| e > now));
    let mut reusable = Vec::new();
    let mut long = Vec::new();
    for k in live {
        if k.reusable {
            reusable.push(label(k));
        }
        let life = match (k.created, k.expires) {
            (_, None) => None,
            (Some(c), Some(e)) => Some(e - c),
            (None, Some(e)) => Some(e - now),
        };
        if life.is_none_or(|l| l > Duration::days(LONG_LIVED_DAYS)) {
            long.push(format!(
                "{} ({})",
                label(k),
                k.expires.map_or("never expires".to_owned(), |e| format!(
                    "expires {}",
                    e.format("%Y-%m-%d")
                ))
            ));
        }
    }
    (reusable, long)
}

fn keys(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let cp = i.control.map(|c| &c.posture);
    let (auth_src, api_src) = if hs {
        ("GET /api/v1/preauthkey", "GET /api/v1/apikey")
    } else {
        ("Admin API /keys?all=true", "Admin API /keys?all=true")
    };
    let auth_fix = if hs {
        "headscale preauthkeys expire --id <id>; create single-use keys with --expiration 1h"
    } else {
        "admin console → Settings → Keys → revoke; create one-off keys that expire in a day"
    };
    #[allow(clippy::type_complexity)]
    let rows: [(
        &str,
        &str,
        Severity,
        Option<&Option<Vec<KeyFacts>>>,
        bool,
        &str,
        &str,
    ); 3] = [
        (
            "KY-01",
            "No reusable auth keys",
            Severity::Warning,
            cp.map(|p| &p.auth_keys),
            true,
            auth_src,
            auth_fix,
        ),
        (
            "KY-02",
            "No long-lived or non-expiring auth keys",
            Severity::Warning,
            cp.map(|p| &p.auth_keys),
            false,
            auth_src,
            auth_fix,
        ),
        (
            "KY-03",
            "No long-lived API keys",
            Severity::Warning,
            cp.map(|p| &p.api_keys),
            false,
            api_src,
            if hs {
                "headscale apikeys expire --prefix <prefix>; create keys with --expiration 30d"
            } else {
                "admin console → Settings → Keys → revoke; prefer OAuth clients"
            },
        ),
    ];
    for (id, title, sev, data, reusable, src, fix) in rows {
        let scope = if hs {
            format!("{src} was refused: the API key may not list keys")
        } else {
            format!("{src} was refused: missing scope auth_keys:read")
        };
        if let Some(keys) = readable(o, i, (id, title, sev, fix), false, data, &scope) {
            let (r, l) = key_risks(keys, i.now);
            let hits = if reusable { r } else { l };
            o.add(
                id,
                title,
                sev,
                pass_if(hits.is_empty()),
                if hits.is_empty() {
                    format!("{} key(s) read from {src}; none of this kind", keys.len())
                } else {
                    format!("{} ({src})", list(&hits))
                },
                fix,
            );
        }
    }
}

fn path_problems(p: &PathFacts, owner_root: bool) -> Vec<String> {
    let mut v = Vec::new();
    if !p.error.is_empty() {
        v.push(format!("{}: {}", p.path, p.error));
        return v;
    }
    if p.mode & 0o002 != 0 {
        v.push(format!(
            "{} is writable by others (mode {:o})",
            p.path,
            p.mode & 0o7777
        ));
    }
    if owner_root && p.uid != 0 {
        v.push(format!("{} is owned by uid {}, not root", p.path, p.uid));
    }
    v
}

/// SV-07: the monitor can see who may reach this server (on tailscaled >= 1.104 only through the
/// privileged relay, or as root).
fn visibility(o: &mut Out, i: &Inputs) {
    let title = "Who can reach this server is visible to the monitor";
    let (status, evidence, fix) = match i.node.map(|n| n.node.as_ref()) {
        None => (
            Status::Unknown,
            "tailscaled could not be read".to_owned(),
            String::new(),
        ),
        Some(None) => (
            Status::Unknown,
            "the CLI source reads no packet filter".to_owned(),
            "use [tailscale] source = \"localapi\"".to_owned(),
        ),
        Some(Some(v)) => match v.unread(crate::model::access::Part::Access) {
            Some(u) => (Status::Fail, u.error.clone(), u.fix.clone()),
            None => (
                Status::Pass,
                "this node's packet filter and SSH policy are read".to_owned(),
                String::new(),
            ),
        },
    };
    o.add("SV-07", title, Severity::Warning, status, evidence, &fix);
}

fn server(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let trust = i.node.and_then(|n| n.node.as_ref()).map(|v| &v.trust);
    let title = "Tailnet Lock is on (this node)";
    let fix =
        "tailscale lock init … on a trusted node (https://tailscale.com/kb/1226/tailnet-lock)";
    match (hs, trust.map(|t| &t.tailnet_lock)) {
        (true, _) => o.not_on_headscale("SV-01", title, Severity::Warning),
        (_, None) => o.add(
            "SV-01",
            title,
            Severity::Warning,
            Status::Unknown,
            "tailscaled could not be read",
            fix,
        ),
        (_, Some(None)) => o.add(
            "SV-01",
            title,
            Severity::Warning,
            Status::Unknown,
            "tka/status not available on this tailscaled",
            fix,
        ),
        (_, Some(Some(l))) => o.add(
            "SV-01",
            title,
            Severity::Warning,
            pass_if(l.enabled),
            format!(
                "LocalAPI tka/status: Enabled = {}, {} trusted key(s)",
                l.enabled,
                l.trusted_keys.len()
            ),
            fix,
        ),
    }
    let title = "tailscaled is up to date";
    match i.node {
        None => o.add(
            "SV-02",
            title,
            Severity::Warning,
            Status::Unknown,
            "tailscaled could not be read",
            "tailscale update",
        ),
        Some(n) => {
            let newer = n
                .update_available
                .clone()
                .or_else(|| trust.and_then(|t| t.update_available.clone()));
            o.add(
                "SV-02",
                title,
                Severity::Warning,
                if newer.is_some() {
                    Status::Fail
                } else {
                    Status::Pass
                },
                match newer {
                    Some(v) => format!(
                        "running {}, {v} is available (/status ClientVersion)",
                        n.version
                    ),
                    None => format!(
                        "running {}; no newer version announced (/status ClientVersion)",
                        n.version
                    ),
                },
                "tailscale update (or your package manager)",
            );
        }
    }
    let Some(s) = i.server else {
        for (id, title, sev) in [
            (
                "SV-03",
                "The monitor's files are owned right and not writable by others",
                Severity::Critical,
            ),
            (
                "SV-04",
                "The monitor's binary and config are immutable (chattr +i)",
                Severity::Info,
            ),
            (
                "SV-05",
                "The systemd sandbox is in effect",
                Severity::Warning,
            ),
            (
                "SV-06",
                "The socket read is tailscaled's",
                Severity::Critical,
            ),
        ] {
            o.add(
                id,
                title,
                sev,
                Status::Unknown,
                "this server's facts were not collected",
                "",
            );
        }
        return;
    };
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (p, root) in [(&s.binary, true), (&s.config, true), (&s.state, false)] {
        if let Some(p) = p {
            seen.push(p.path.clone());
            problems.extend(path_problems(p, root));
        }
    }
    // The state holds the event log: nobody but its owner may touch it. (Not compared with the
    // uid running this: an administrator's `check` as root must not look like drift.)
    if let Some(st) = &s.state {
        if st.error.is_empty() && st.mode & 0o007 != 0 {
            problems.push(format!(
                "{} is open to others (mode {:o})",
                st.path,
                st.mode & 0o7777
            ));
        }
    }
    o.add(
        "SV-03",
        "The monitor's files are owned right and not writable by others",
        Severity::Critical,
        pass_if(problems.is_empty()),
        if problems.is_empty() { format!("checked {}", seen.join(", ")) } else { problems.join("; ") },
        "chown root:tailscale-monitor /etc/tailscale-monitor/config.toml; chmod 0640 it; chmod 0755 the binary; chmod o-w everything",
    );
    let files: Vec<&PathFacts> = [&s.binary, &s.config].into_iter().flatten().collect();
    let unsupported: Vec<String> = files
        .iter()
        .filter(|p| p.immutable.is_none())
        .map(|p| p.path.clone())
        .collect();
    let mutable: Vec<String> = files
        .iter()
        .filter(|p| p.immutable == Some(false))
        .map(|p| p.path.clone())
        .collect();
    o.add(
        "SV-04",
        "The monitor's binary and config are immutable (chattr +i)",
        Severity::Info,
        if !mutable.is_empty() {
            Status::Fail
        } else if !unsupported.is_empty() || files.is_empty() {
            Status::Unknown
        } else {
            Status::Pass
        },
        if !mutable.is_empty() {
            format!("lsattr shows no i on {}", mutable.join(", "))
        } else if !unsupported.is_empty() {
            format!("the filesystem does not report attributes for {}", unsupported.join(", "))
        } else {
            format!("immutable: {}", files.iter().map(|p| p.path.as_str()).collect::<Vec<_>>().join(", "))
        },
        "chattr +i /usr/bin/tailscale-monitor /etc/tailscale-monitor/config.toml (chattr -i before an upgrade or edit)",
    );
    let title = "The systemd sandbox is in effect";
    let fix = "run it with the shipped unit (contrib/tailscale-monitor.service: NoNewPrivileges, SystemCallFilter, ProtectSystem=strict)";
    match s.sandbox {
        None => o.add("SV-05", title, Severity::Warning, Status::Unknown, "not running under systemd (no INVOCATION_ID); `run` under the unit reports this itself", fix),
        Some((nnp, seccomp)) => o.add(
            "SV-05",
            title,
            Severity::Warning,
            pass_if(nnp && seccomp == 2),
            format!("/proc/self/status: NoNewPrivs = {}, Seccomp = {seccomp}", u8::from(nnp)),
            fix,
        ),
    }
    let title = "The socket read is tailscaled's";
    let fix = "point [tailscale] socket at tailscaled's socket (/run/tailscale/tailscaled.sock), owned by root";
    match &s.socket {
        None => o.add(
            "SV-06",
            title,
            Severity::Critical,
            Status::Unknown,
            "no LocalAPI socket configured",
            fix,
        ),
        Some(p) if !p.error.is_empty() => o.add(
            "SV-06",
            title,
            Severity::Critical,
            Status::Unknown,
            format!("{}: {}", p.path, p.error),
            fix,
        ),
        Some(p) => {
            let is_socket = p.mode & 0o170000 == 0o140000;
            let ok = is_socket && p.uid == 0;
            o.add(
                "SV-06",
                title,
                Severity::Critical,
                pass_if(ok),
                format!(
                    "{}: {}, owned by uid {}",
                    p.path,
                    if is_socket {
                        "a unix socket"
                    } else {
                        "not a socket"
                    },
                    p.uid
                ),
                fix,
            );
        }
    }
}

/// `posture.degraded` for each check that went from pass to fail, `posture.improved` for fail to
/// pass. The first evaluation (nothing known) says nothing: the baseline carries the summary.
pub fn drift(prev: Option<&KnownPosture>, cur: &Report, now: DateTime<Utc>) -> Vec<Event> {
    let Some(prev) = prev.filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in &cur.findings {
        let (kind, verb) = match (prev.get(&f.id), f.status) {
            (Some(Status::Pass), Status::Fail) => (EventKind::PostureDegraded, "now fails"),
            (Some(Status::Fail), Status::Pass) => (EventKind::PostureImproved, "passes again"),
            _ => continue,
        };
        let mut e = Event::new(kind, now, format!("Posture {} {verb}: {}", f.id, f.title));
        if kind == EventKind::PostureDegraded {
            e.severity = f.severity;
        }
        e.detail = format!("{} Fix: {}", f.evidence, f.fix);
        out.push(e);
    }
    out
}

/// What to store of a report.
pub fn known(r: &Report) -> KnownPosture {
    r.findings
        .iter()
        .map(|f| (f.id.clone(), f.status))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: any policy text parses or fails, without a panic or a stack overflow.
    #[test]
    fn fuzz_policy_text() {
        crate::fuzz::check(
            "policy",
            &[br#"{
  // comment [[[
  "tagOwners": {"tag:server": ["ops@"]},
  "acls": [{"action": "accept", "src": ["ops@", "*"], "dst": ["tag:server:22", "*:*"]}],
  "ssh": [{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}],
}"#],
            |b| {
                let _ = parse_policy(&String::from_utf8_lossy(b));
            },
        );
    }

    /// F3: a policy nested 100,000 deep is an error, not a stack overflow; brackets in strings
    /// and comments do not count.
    #[test]
    fn a_deeply_nested_policy_is_refused_before_the_parser() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let e = parse_policy(&deep).unwrap_err();
        assert!(e.contains("nests 100000 deep"), "{e}");
        let ok = r#"{"acls": [{"src": ["[[[[["], "dst": ["*:*"]}] // [[[[[[
        }"#;
        assert_eq!(nesting_depth(&crate::model::policy::strip_comments(ok)), 4);
        assert!(parse_policy(ok).is_ok());
    }
    use crate::model::control::{ControlDevice, PolicyDoc};
    use crate::model::posture::{ControlPosture, DeviceFacts};
    use crate::model::StableNodeId;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn tailscale(settings: Option<Value>, policy: Option<&str>) -> ControlSnapshot {
        ControlSnapshot {
            kind: "tailscale".into(),
            settings: settings.map(|v| serde_json::from_value(v).unwrap()),
            policy: policy.map(|t| PolicyDoc {
                text: t.into(),
                etag: "1".into(),
            }),
            posture: ControlPosture {
                auth_keys: Some(vec![]),
                api_keys: Some(vec![]),
                ..ControlPosture::default()
            },
            ..ControlSnapshot::default()
        }
    }

    fn report(c: Option<&ControlSnapshot>) -> Report {
        evaluate(&Inputs {
            control: c,
            control_note: "no [control] configured",
            node: None,
            server: None,
            now: now(),
        })
    }

    fn status(r: &Report, id: &str) -> (Status, String) {
        let f = r.findings.iter().find(|f| f.id == id).unwrap();
        (f.status, f.evidence.clone())
    }

    #[test]
    fn settings_pass_fail_and_unknown() {
        let good = serde_json::json!({"devicesApprovalOn": true, "usersApprovalOn": true, "devicesKeyDurationDays": 30,
            "usersRoleAllowedToJoinExternalTailnets": "admin", "networkFlowLoggingOn": true, "httpsEnabled": false});
        let r = report(Some(&tailscale(Some(good), None)));
        for id in ["TN-01", "TN-02", "TN-03", "TN-04", "TN-05", "TN-06"] {
            assert_eq!(status(&r, id).0, Status::Pass, "{id}");
        }
        let bad = serde_json::json!({"devicesApprovalOn": false, "usersApprovalOn": false, "devicesKeyDurationDays": 180,
            "usersRoleAllowedToJoinExternalTailnets": "member", "networkFlowLoggingOn": false, "httpsEnabled": true});
        let r = report(Some(&tailscale(Some(bad), None)));
        for id in ["TN-01", "TN-02", "TN-03", "TN-04", "TN-05", "TN-06"] {
            assert_eq!(status(&r, id).0, Status::Fail, "{id}");
        }
        let nulls = serde_json::json!({"devicesApprovalOn": null});
        let r = report(Some(&tailscale(Some(nulls), None)));
        assert_eq!(status(&r, "TN-01").0, Status::Unknown);
        assert_eq!(status(&r, "TN-02").0, Status::Unknown, "absent");
        let r = report(Some(&tailscale(None, None)));
        assert!(status(&r, "TN-01").1.contains("feature_settings:read"));
        let r = report(None);
        assert!(
            r.findings
                .iter()
                .all(|f| f.status != Status::Pass || f.area == "server"),
            "nothing passes unread"
        );
        assert_eq!(status(&r, "MN-01").0, Status::Manual);
    }

    #[test]
    fn policy_checks_read_hujson() {
        let weak = r#"{
          // everything, for now
          "tagOwners": {"tag:server": ["autogroup:member"],},
          "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]},],
          "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["root"]}],
          "autoApprovers": {"exitNode": ["autogroup:member"], "routes": {"10.0.0.0/8": ["*"]}},
          "grants": [{"src": ["autogroup:danger-all"], "dst": ["tag:x"], "ip": ["443"]}],
        }"#;
        let r = report(Some(&tailscale(None, Some(weak))));
        for id in ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06"] {
            assert_eq!(status(&r, id).0, Status::Fail, "{id}: {:?}", status(&r, id));
        }
        assert!(status(&r, "PL-06")
            .1
            .contains("exitNode, routes 10.0.0.0/8"));
        let tight = r#"{
          // "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], (commented out)
          "tagOwners": {"tag:server": ["group:admins"]},
          "grants": [{"src": ["group:admins"], "dst": ["tag:server"], "ip": ["22"]}],
          "ssh": [{"action": "check", "src": ["group:admins"], "dst": ["tag:server"], "users": ["root"]}],
          "tests": [{"src": "alice@example.com", "accept": ["tag:server:22"]}],
        }"#;
        let r = report(Some(&tailscale(None, Some(tight))));
        for id in ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06"] {
            assert_eq!(status(&r, id).0, Status::Pass, "{id}: {:?}", status(&r, id));
        }
        let r = report(Some(&tailscale(None, Some("{ not json"))));
        assert!(status(&r, "PL-01").1.contains("does not parse"));
        let r = report(Some(&tailscale(None, None)));
        assert!(status(&r, "PL-01").1.contains("policy_file:read"));
        // Headscale without a policy allows everything.
        let mut hs = tailscale(None, None);
        hs.kind = "headscale".into();
        let r = report(Some(&hs));
        assert_eq!(status(&r, "PL-01").0, Status::Fail);
        assert_eq!(status(&r, "TN-01").0, Status::NotAvailable);
        assert_eq!(status(&r, "DV-06").0, Status::NotAvailable);
        assert_eq!(status(&r, "SV-01").0, Status::NotAvailable);
    }

    #[test]
    fn keys_and_devices() {
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let key = |id: &str, reusable, created: &str, expires: Option<&str>, spent| KeyFacts {
            id: id.into(),
            kind: "auth".into(),
            reusable,
            created: at(created),
            expires: expires.and_then(at),
            spent,
            ..KeyFacts::default()
        };
        let mut c = tailscale(None, None);
        c.posture.auth_keys = Some(vec![
            key(
                "short",
                false,
                "2026-11-24T00:00:00Z",
                Some("2026-11-26T00:00:00Z"),
                false,
            ),
            key(
                "expired",
                true,
                "2025-01-01T00:00:00Z",
                Some("2025-02-01T00:00:00Z"),
                false,
            ),
            key("revoked", true, "2026-11-01T00:00:00Z", None, true),
        ]);
        let r = report(Some(&c));
        assert_eq!(
            status(&r, "KY-01").0,
            Status::Pass,
            "expired and revoked keys are no risk"
        );
        assert_eq!(status(&r, "KY-02").0, Status::Pass);
        c.posture.auth_keys.as_mut().unwrap().push(key(
            "forever",
            true,
            "2026-11-01T00:00:00Z",
            None,
            false,
        ));
        let r = report(Some(&c));
        assert_eq!(status(&r, "KY-01").0, Status::Fail);
        assert!(status(&r, "KY-02").1.contains("forever (never expires)"));
        c.posture.api_keys = None;
        assert_eq!(status(&report(Some(&c)), "KY-03").0, Status::Unknown);

        let dev = |id: &str, tags: &[&str], no_expiry: bool| ControlDevice {
            id: StableNodeId(id.into()),
            hostname: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            key_expiry_disabled: no_expiry,
            ..ControlDevice::default()
        };
        for d in [
            dev("laptop", &[], true),
            dev("nas", &["tag:server"], true),
            dev("phone", &[], false),
        ] {
            c.devices.insert(d.id.clone(), d);
        }
        c.posture.devices.insert(
            StableNodeId("phone".into()),
            DeviceFacts {
                last_seen: at("2026-08-01T00:00:00Z"),
                multiple_connections: Some(true),
                ..DeviceFacts::default()
            },
        );
        let r = report(Some(&c));
        assert_eq!(
            status(&r, "DV-01"),
            (Status::Fail, "key expiry disabled on laptop".into())
        );
        assert_eq!(status(&r, "DV-02").0, Status::Fail);
        assert_eq!(
            status(&r, "DV-03").1,
            "last seen more than 60 days ago: phone"
        );
        assert_eq!(status(&r, "DV-06").0, Status::Fail);
        assert_eq!(status(&r, "DV-07").0, Status::Pass);
    }

    #[test]
    fn drift_is_pass_to_fail_and_back_never_unknown() {
        let ok = tailscale(Some(serde_json::json!({"devicesApprovalOn": true})), None);
        let off = tailscale(Some(serde_json::json!({"devicesApprovalOn": false})), None);
        let unread = tailscale(None, None);
        let (a, b, u) = (report(Some(&ok)), report(Some(&off)), report(Some(&unread)));
        assert!(
            drift(None, &a, now()).is_empty(),
            "the first evaluation is the baseline"
        );
        let ev = drift(Some(&known(&a)), &b, now());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::PostureDegraded);
        assert_eq!(ev[0].severity, Severity::Critical);
        assert!(drift(Some(&known(&b)), &b, now()).is_empty(), "once");
        assert!(
            drift(Some(&known(&a)), &u, now()).is_empty(),
            "unreadable is not a change"
        );
        let ev = drift(Some(&known(&b)), &a, now());
        assert_eq!(ev[0].kind, EventKind::PostureImproved);
        assert_eq!(ev[0].severity, Severity::Info);
    }
}
