//! Turns events into what a human reads: a subject, a plain-text body and an HTML body.
//!
//! Every value that comes from the tailnet passes through [`crate::sanitize`] here and nowhere
//! else: `line` for the subject and text, `html` for the HTML part. A device named
//! `evil\r\nBcc: x@y <script>` renders as one harmless line.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::model::{Device, Event, EventKind, Severity, User};
use crate::sanitize::{self, NAME_MAX, SUBJECT_MAX};

/// Facts about the monitor itself that go into every message.
#[derive(Debug, Clone)]
pub struct Context {
    /// Name of the monitored host (this server).
    pub host: String,
    /// The newest logged event of the message and its chain hash: kept in the recipient's
    /// mailbox, it lets `audit --anchor` prove later that the log was not rewritten.
    pub anchor: Option<Anchor>,
    /// Identifies the outbox rows of this message: the same rows retried give the same value,
    /// which channels with idempotency keys use (Matrix transaction id).
    pub batch: Option<String>,
}

/// A point of the event log's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub event_id: i64,
    pub hash: String,
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.event_id, self.hash)
    }
}

impl Context {
    pub fn new(host: &str) -> Context {
        Context {
            host: host.to_owned(),
            anchor: None,
            batch: None,
        }
    }
}

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt_when(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), when)
}

/// Label/value rows describing a device and its owner (values unsanitized).
fn device_rows(d: &Device, u: Option<&User>) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Device", d.display_name().to_owned()),
        ("DNS name", d.dns_name.clone()),
        (
            "User",
            u.map_or_else(
                || format!("user {}", d.user_id),
                |u| format!("{} ({})", u.login, u.display_name),
            ),
        ),
        ("Addresses", d.addresses.join(", ")),
        ("OS", d.os.clone()),
        ("Created", opt_when(d.created, "unknown")),
        (
            "Node ID",
            match d.node_id {
                Some(n) => format!("{} (numeric {n})", d.id),
                None => d.id.to_string(),
            },
        ),
        ("Node key", d.node_key.to_string()),
        (
            "Key expiry",
            opt_when(d.key_expiry, "disabled (never expires)"),
        ),
    ];
    if !d.tags.is_empty() {
        rows.push(("Tags", d.tags.join(", ")));
    }
    if !d.routes.is_empty() {
        rows.push(("Routes", d.routes.join(", ")));
    }
    if d.shared {
        rows.push(("Shared", "shared in from another tailnet".to_owned()));
    }
    rows
}

/// What the administrator should do about an event.
fn action(e: &Event) -> String {
    let generic = kind_action(e);
    if e.fix.is_empty() {
        generic
    } else {
        format!("{} — {generic}", sanitize::line(&e.fix, 600))
    }
}

fn kind_action(e: &Event) -> String {
    let d = e.device.as_ref();
    let console = d.and_then(|d| d.addresses.first()).map_or_else(
        || "https://login.tailscale.com/admin/machines".to_owned(),
        |ip| format!("https://login.tailscale.com/admin/machines/{ip}"),
    );
    let hs_id = d.and_then(|d| d.node_id).map_or_else(
        || "<ID from `headscale nodes list`>".to_owned(),
        |n| n.to_string(),
    );
    match e.kind {
        EventKind::DeviceNew | EventKind::DeviceRekeyed | EventKind::DeviceOwnerChanged => format!(
            "If you do not recognize this, remove the device now — Tailscale admin console: {console} \
             (… menu → Remove); Headscale: `headscale nodes delete --identifier {hs_id}`. Then find out \
             who could add it: review auth keys, consider device approval and Tailnet Lock."
        ),
        EventKind::UserNew => "If you did not invite this user, suspend or remove them in the admin console \
             (https://login.tailscale.com/admin/users) or with `headscale users destroy`, and review their devices."
            .to_owned(),
        EventKind::DeviceRoutesChanged | EventKind::DeviceExitNodeOffered => format!(
            "Routes let a device carry other devices' traffic. If this was not approved on purpose, \
             disable them — admin console: {console} (Edit route settings); Headscale: \
             `headscale nodes approve-routes --identifier {hs_id} --routes ''`."
        ),
        EventKind::DeviceKeyExpiryDisabled => format!(
            "A key that never expires stays valid if the device is stolen. Re-enable key expiry unless \
             this is a server — admin console: {console} (… menu → Enable key expiry)."
        ),
        EventKind::DeviceKeyExpiring | EventKind::DeviceExpired => {
            "Re-authenticate the device (`tailscale up --force-reauth` on it) or remove it if it is no longer used."
                .to_owned()
        }
        EventKind::DeviceTagsChanged | EventKind::DeviceAddressesChanged | EventKind::DeviceRenamed => format!(
            "Tags and names decide which ACL rules apply. Confirm the change was intended: {console}"
        ),
        EventKind::DeviceRemoved | EventKind::UserRemoved => {
            "For your records. If nobody in your team removed it, someone else has admin access.".to_owned()
        }
        EventKind::PeerConnected => "For your records: a peer opened a WireGuard session with this server.".to_owned(),
        EventKind::AccessWidened | EventKind::AccessSshWidened | EventKind::AccessCapabilityGranted => {
            "The tailnet policy now lets these sources reach this server. If nobody on your team changed the \
             policy on purpose, someone with admin access did: restore the ACL (Tailscale: Access controls \
             in the admin console, https://login.tailscale.com/admin/acls; Headscale: `headscale policy get` / \
             `headscale policy set --file`), then review who holds admin rights. \
             `tailscale-monitor access` shows the whole current model."
                .to_owned()
        }
        EventKind::DeviceOffline => "Check the device (power, network, tailscaled). If this server itself is \
             offline, fix its connectivity first."
            .to_owned(),
        EventKind::DeviceOnline => "Nothing to do: it is reachable again.".to_owned(),
        EventKind::DevicePendingApproval => format!(
            "Approve it only if you know it: Tailscale admin console {console} (… menu → Approve), or remove \
             it there. Until approved it cannot reach anything."
        ),
        EventKind::DeviceApproved => "For your records: the device can now join the tailnet.".to_owned(),
        EventKind::DeviceUnlisted => "Treat this server's tailnet as compromised until explained: compare `tailscale \
             status` here with the admin console or `headscale nodes list`, and check who holds admin rights."
            .to_owned(),
        EventKind::PolicyChanged => "Review the diff. If nobody on your team made this change, restore the previous \
             policy (Tailscale: https://login.tailscale.com/admin/acls; Headscale: `headscale policy set --file`) \
             and review who holds admin rights."
            .to_owned(),
        EventKind::PostureDegraded => "Check the evidence above; if the change was not intended, apply the fix shown. \
             `tailscale-monitor posture` prints the whole report."
            .to_owned(),
        EventKind::MonitorDigest => "For your records. `tailscale-monitor events`, `devices`, `access`, `posture` and `audit` show each part in full.".to_owned(),
        EventKind::PostureImproved => "For your records: a hardening check passes again.".to_owned(),
        EventKind::SettingsChanged => "Confirm the change in the admin console (https://login.tailscale.com/admin/settings) \
             and revert it if it was not intended."
            .to_owned(),
        EventKind::AccessNarrowed => "For your records: fewer sources can reach this server. If this breaks \
             something, review the recent policy change."
            .to_owned(),
        EventKind::NodeTailnetLockDisabled => "Tailnet Lock protects you against a compromised control plane adding \
             nodes. Find out who disabled it (`tailscale lock status`, the admin console's configuration log) \
             and re-enable it with `tailscale lock init` if it was not on purpose."
            .to_owned(),
        EventKind::NodeTailnetLockChanged => "Check the trusted keys with `tailscale lock status`: every key should \
             belong to a device you control."
            .to_owned(),
        EventKind::NodeSshChanged => "Tailscale SSH on this server was turned on or off (`tailscale set --ssh`). \
             Whoever can write to tailscaled's socket did this; confirm it was you."
            .to_owned(),
        EventKind::NodeRoutesChanged => "This server now advertises different routes (or an exit node), so more \
             traffic can flow through it. Confirm with `tailscale debug prefs`; undo with \
             `tailscale set --advertise-routes= --advertise-exit-node=false`."
            .to_owned(),
        EventKind::NodeUpdateAvailable => "Update tailscaled on this server (your package manager, or `tailscale update`)."
            .to_owned(),
        EventKind::NodeTailnetChanged => "This server was moved to another tailnet: the devices it now trusts are \
             another organisation's. If you did not do this, log it out at once (`tailscale logout`) \
             and find out who had its key or the admin console."
            .to_owned(),
        EventKind::MonitorBaseline => "Review the list: every device and user should be one you recognize. \
             From now on you will be alerted about every change."
            .to_owned(),
        EventKind::MonitorSourceDown => "Until this is fixed the monitor cannot see changes. Check `systemctl status \
             tailscaled` and `tailscale status` on this server."
            .to_owned(),
        EventKind::MonitorSourceRecovered => "Nothing to do; changes made during the outage are reported separately."
            .to_owned(),
        EventKind::MonitorPartUnavailable => "Everything else is still watched and alerted. Apply the fix above; the \
             monitor keeps what it last recorded of this part and says so once it can read it again."
            .to_owned(),
        EventKind::MonitorPartRecovered => "Nothing to do; a change made meanwhile is reported separately."
            .to_owned(),
        EventKind::MonitorDeliveryFailed => "Fix the failing channel (see the error); the alerts stay queued and are \
             retried."
            .to_owned(),
        EventKind::MonitorStoreFailed => "Until the state database can be written the monitor records nothing: free \
             disk space or fix the error above. It retries on its own; changes made meanwhile are reported then."
            .to_owned(),
        EventKind::MonitorStoreRecovered => "Nothing to do; changes made meanwhile are reported separately.".to_owned(),
        EventKind::MonitorTest => "Nothing: this is a test. If you can read it, this channel works.".to_owned(),
    }
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

/// The subject line for a batch of events (at least one).
pub fn subject(cx: &Context, events: &[&Event]) -> String {
    let top = events
        .iter()
        .max_by_key(|e| e.severity)
        .expect("subject of at least one event");
    let more = if events.len() > 1 {
        format!(" (+{} more)", events.len() - 1)
    } else {
        String::new()
    };
    let raw = format!(
        "[tailscale-monitor] {} {}: {}{more}",
        sanitize::line(&cx.host, 40),
        severity_label(top.severity),
        top.summary
    );
    sanitize::line(&raw, SUBJECT_MAX)
}

/// Above this many events a message lists every event on one line each and details only the
/// first ones, so a storm (1,000 devices joining at once) is still one readable message.
pub const STORM: usize = 25;

fn storm_summary(text: &mut String, html: &mut String, events: &[&Event]) {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for e in events {
        *counts.entry(e.kind.as_str()).or_default() += 1;
    }
    let by_kind: Vec<String> = counts.iter().map(|(k, n)| format!("{n} × {k}")).collect();
    let _ = writeln!(
        text,
        "\nSummary: {}.\nEvery event, one per line:",
        by_kind.join(", ")
    );
    let _ = write!(
        html,
        "<p><b>Summary:</b> {}.</p><ol>",
        html_escape::encode_text(&by_kind.join(", "))
    );
    for e in events {
        let who = e.device.as_ref().map_or(String::new(), |d| {
            format!(" — {} {} {}", d.display_name(), d.addresses.join(","), d.id)
        });
        let _ = writeln!(
            text,
            "  - [{}] {}{}",
            e.kind,
            sanitize::line(&e.summary, 200),
            sanitize::line(&who, 200)
        );
        let _ = write!(
            html,
            "<li>[{}] {}{}</li>",
            e.kind,
            sanitize::html(&e.summary, 200),
            sanitize::html(&who, 200)
        );
    }
    html.push_str("</ol>");
    let _ = writeln!(text, "\nDetails of the first {STORM}:");
    let _ = write!(html, "<p>Details of the first {STORM}:</p>");
}

/// Renders a batch of events (one pass, or what accumulated while a channel was down).
pub fn render(cx: &Context, events: &[&Event]) -> Rendered {
    let keep = own_names(cx, events);
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let unlinked: Vec<Event> = events.iter().map(|e| unlinked(e, &keep)).collect();
    let events: Vec<&Event> = unlinked.iter().collect();
    let events = events.as_slice();
    let subject = subject(cx, events);
    let host = sanitize::line(&cx.host, NAME_MAX);
    let mut text = format!(
        "tailscale-monitor on {host} detected {} event(s).\n",
        events.len()
    );
    let mut html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <p>tailscale-monitor on <b>{}</b> detected {} event(s).</p>",
        sanitize::html(&cx.host, NAME_MAX),
        events.len()
    );
    let detailed = if events.len() > STORM {
        storm_summary(&mut text, &mut html, events);
        &events[..STORM]
    } else {
        events
    };
    for e in detailed {
        event_text(&mut text, e);
        event_html(&mut html, e);
    }
    text.push_str("\n-- \ntailscale-monitor: review everything with `tailscale-monitor events`.\n");
    html.push_str("<p style=\"color:#666\">tailscale-monitor: review everything with <code>tailscale-monitor events</code>.");
    if let Some(a) = &cx.anchor {
        // Only digits and hex: nothing here comes from the tailnet.
        let _ = writeln!(
            text,
            "Log anchor: {a} (keep this message; `tailscale-monitor audit --anchor {a}` proves the log up to here is unaltered)"
        );
        let _ = write!(
            html,
            "<br>Log anchor: <code>{a}</code> (keep this message; <code>tailscale-monitor audit --anchor {a}</code> proves the log up to here is unaltered)"
        );
    }
    html.push_str("</p></body></html>");
    Rendered {
        subject,
        text,
        html,
    }
}

/// The event with every string that came from the tailnet defanged (`sanitize::unlink`): names,
/// OS strings, tags, changes, lists, the policy diff, the access rows, the summary and the note.
/// What the monitor writes itself (the fix, the console links) is left as it is, so that a
/// command in "What to do" can be copied as printed.
fn unlinked(e: &Event, keep: &[&str]) -> Event {
    let u = |s: &str| sanitize::unlink(s, keep);
    let dev = |d: &Device| Device {
        hostname: u(&d.hostname),
        // A MagicDNS name is kept whole (`own_names`); only a word inside a hostile one changes.
        dns_name: u(&d.dns_name),
        os: u(&d.os),
        tags: d.tags.iter().map(|t| u(t)).collect(),
        ..d.clone()
    };
    let user = |x: &User| User {
        display_name: u(&x.display_name),
        login: u(&x.login),
        ..x.clone()
    };
    Event {
        summary: u(&e.summary),
        detail: u(&e.detail),
        device: e.device.as_ref().map(dev),
        user: e.user.as_ref().map(user),
        changes: e
            .changes
            .iter()
            .map(|c| crate::model::Change {
                field: c.field.clone(),
                old: u(&c.old),
                new: u(&c.new),
            })
            .collect(),
        devices: e.devices.iter().map(dev).collect(),
        users: e.users.iter().map(user).collect(),
        diff: e.diff.iter().map(|l| u(l)).collect(),
        access: e.access.as_ref().map(|rows| {
            rows.iter()
                .map(|r| crate::model::access::AccessRow {
                    source: u(&r.source),
                    who: u(&r.who),
                    ports: r.ports.clone(),
                    ssh: u(&r.ssh),
                })
                .collect()
        }),
        ..e.clone()
    }
}

/// The names in a message that the tailnet itself made (MagicDNS names, the tailnet, this
/// server) and the event kinds (`device.new`): they may stay as they are. Everything else URL-shaped is defanged by `sanitize::unlink`.
fn own_names(cx: &Context, events: &[&Event]) -> Vec<String> {
    let mut keep = vec![cx.host.clone()];
    keep.extend(EventKind::ALL.iter().map(|k| k.as_str().to_owned()));
    for e in events {
        keep.push(e.tailnet.clone());
        if let Some(d) = &e.device {
            keep.push(d.dns_name.trim_end_matches('.').to_owned());
        }
    }
    keep.sort();
    keep.dedup();
    keep
}

/// One event as plain text, URL-shaped names defanged ([`render`] without the frame), for
/// channels that carry one event per message.
pub fn event_text_unlinked(out: &mut String, e: &Event) {
    let keep = own_names(&Context::new(""), &[e]);
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    event_text(out, &unlinked(e, &keep));
}

/// One event as plain text, for mail bodies and the terminal.
pub fn event_text(out: &mut String, e: &Event) {
    let s = |v: &str| sanitize::line(v, NAME_MAX);
    let _ = writeln!(
        out,
        "\n[{}] {} — {}\n  When:       {}",
        severity_label(e.severity),
        e.kind,
        sanitize::line(&e.summary, 300),
        when(e.at)
    );
    if let Some(d) = &e.device {
        for (k, v) in device_rows(d, e.user.as_ref()) {
            let _ = writeln!(out, "  {:<11} {}", format!("{k}:"), sanitize::line(&v, 300));
        }
    } else if let Some(u) = &e.user {
        let _ = writeln!(
            out,
            "  User:       {} ({}), ID {}",
            s(&u.login),
            s(&u.display_name),
            u.id
        );
    }
    for c in &e.changes {
        let _ = writeln!(
            out,
            "  Changed:    {}: {} → {}",
            s(&c.field),
            sanitize::line(&c.old, 200),
            sanitize::line(&c.new, 200)
        );
    }
    if !e.detail.is_empty() {
        let _ = writeln!(out, "  Note:       {}", sanitize::line(&e.detail, 500));
    }
    if !e.users.is_empty() {
        let _ = writeln!(out, "  Users ({}):", e.users.len());
        for u in &e.users {
            let _ = writeln!(
                out,
                "    - {} ({}), ID {}",
                s(&u.login),
                s(&u.display_name),
                u.id
            );
        }
    }
    if !e.devices.is_empty() {
        let _ = writeln!(out, "  Devices ({}):", e.devices.len());
        for d in &e.devices {
            let owner = e
                .users
                .iter()
                .find(|u| u.id == d.user_id)
                .map_or("?", |u| u.login.as_str());
            let _ = writeln!(
                out,
                "    - {} — {} — {} — {} — {}{}",
                s(d.display_name()),
                s(owner),
                s(&d.addresses.join(", ")),
                s(&d.os),
                s(&d.id.0),
                if d.is_self { " (this server)" } else { "" }
            );
        }
    }
    if !e.diff.is_empty() {
        let label = if e.kind == EventKind::MonitorDigest {
            "Digest"
        } else {
            "Diff"
        };
        let _ = writeln!(out, "  {label}:");
        for l in &e.diff {
            let _ = writeln!(out, "    {}", sanitize::line(l, 300));
        }
    }
    if let Some(rows) = &e.access {
        let _ = writeln!(out, "  Who can reach this server ({}):", rows.len());
        if rows.is_empty() {
            let _ = writeln!(out, "    - nobody: the policy lets no other device in");
        }
        for r in rows {
            let _ = writeln!(
                out,
                "    - {} — ports: {} — SSH as: {}",
                sanitize::line(&r.who, 200),
                sanitize::line(&r.ports, 300),
                sanitize::line(&r.ssh, 300)
            );
        }
    }
    let _ = writeln!(out, "  What to do: {}", sanitize::line(&action(e), 2000));
}

fn event_html(out: &mut String, e: &Event) {
    let h = |v: &str| sanitize::html(v, 300);
    let color = match e.severity {
        Severity::Critical => "#b00020",
        Severity::Warning => "#b26a00",
        Severity::Info => "#555",
    };
    let _ = write!(
        out,
        "<h3 style=\"color:{color}\">{} · {} — {}</h3><table cellpadding=\"2\">\
         <tr><td><b>When</b></td><td>{}</td></tr>",
        severity_label(e.severity),
        e.kind,
        h(&e.summary),
        when(e.at)
    );
    if let Some(d) = &e.device {
        for (k, v) in device_rows(d, e.user.as_ref()) {
            let _ = write!(out, "<tr><td><b>{k}</b></td><td>{}</td></tr>", h(&v));
        }
    } else if let Some(u) = &e.user {
        let _ = write!(
            out,
            "<tr><td><b>User</b></td><td>{} ({}), ID {}</td></tr>",
            h(&u.login),
            h(&u.display_name),
            u.id
        );
    }
    for c in &e.changes {
        let _ = write!(
            out,
            "<tr><td><b>Changed</b></td><td>{}: {} → {}</td></tr>",
            h(&c.field),
            h(&c.old),
            h(&c.new)
        );
    }
    if !e.detail.is_empty() {
        let _ = write!(
            out,
            "<tr><td><b>Note</b></td><td>{}</td></tr>",
            h(&e.detail)
        );
    }
    out.push_str("</table>");
    if !e.users.is_empty() {
        let _ = write!(out, "<p><b>Users ({})</b></p><ul>", e.users.len());
        for u in &e.users {
            let _ = write!(
                out,
                "<li>{} ({}), ID {}</li>",
                h(&u.login),
                h(&u.display_name),
                u.id
            );
        }
        out.push_str("</ul>");
    }
    if !e.devices.is_empty() {
        let _ = write!(
            out,
            "<p><b>Devices ({})</b></p><table border=\"1\" cellpadding=\"3\" style=\"border-collapse:collapse\">\
             <tr><th>Device</th><th>User</th><th>Addresses</th><th>OS</th><th>Node ID</th></tr>",
            e.devices.len()
        );
        for d in &e.devices {
            let owner = e
                .users
                .iter()
                .find(|u| u.id == d.user_id)
                .map_or("?", |u| u.login.as_str());
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                h(d.display_name()),
                h(owner),
                h(&d.addresses.join(", ")),
                h(&d.os),
                h(&d.id.0)
            );
        }
        out.push_str("</table>");
    }
    if !e.diff.is_empty() {
        out.push_str("<pre style=\"background:#f6f6f6;padding:6px\">");
        for l in &e.diff {
            let color = match l.chars().next() {
                Some('+') => "#0a0",
                Some('-') => "#b00020",
                _ => "#555",
            };
            let _ = writeln!(out, "<span style=\"color:{color}\">{}</span>", h(l));
        }
        out.push_str("</pre>");
    }
    if let Some(rows) = &e.access {
        let _ = write!(
            out,
            "<p><b>Who can reach this server ({})</b></p>",
            rows.len()
        );
        if rows.is_empty() {
            out.push_str("<p>Nobody: the policy lets no other device in.</p>");
        } else {
            out.push_str(
                "<table border=\"1\" cellpadding=\"3\" style=\"border-collapse:collapse\">\
                 <tr><th>Who</th><th>Ports</th><th>SSH as</th></tr>",
            );
            for r in rows {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    h(&r.who),
                    h(&r.ports),
                    h(&r.ssh)
                );
            }
            out.push_str("</table>");
        }
    }
    let _ = write!(out, "<p><b>What to do:</b> {}</p>", h(&action(e)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeKey, StableNodeId, UserId};

    fn hostile() -> Event {
        let d = Device {
            id: StableNodeId("nEVIL".into()),
            node_id: Some(7),
            node_key: NodeKey("nodekey:ee".into()),
            hostname: "evil\r\nBcc: x@y <script>alert(1)</script>".into(),
            dns_name: "evil.ts.net.".into(),
            os: "linux\u{1b}[2J".into(),
            user_id: UserId(9),
            addresses: vec!["100.64.0.66".into()],
            tags: vec![],
            routes: vec![],
            exit_node: false,
            key_expiry: None,
            expired: false,
            created: None,
            is_self: false,
            shared: false,
        };
        let mut e = Event::new(
            EventKind::DeviceNew,
            Utc::now(),
            format!("New device {} joined", d.hostname),
        );
        e.user = Some(User {
            id: UserId(9),
            login: "m@x".into(),
            display_name: "Mallory <img src=x onerror=alert(1)>\u{202E}".into(),
        });
        e.device = Some(d);
        e
    }

    /// F17: a control plane's device ID and addresses are sanitized in the text body too.
    #[test]
    fn a_hostile_device_id_cannot_break_the_text_body() {
        let cx = Context::new("web-01");
        let mut e = hostile();
        let d = e.device.as_mut().unwrap();
        d.id = StableNodeId("nX\n\u{1b}[31mFAKE LINE".into());
        d.addresses = vec!["100.64.0.1\n\u{1b}[2Jinjected".into()];
        let base = Event::new(EventKind::MonitorBaseline, Utc::now(), "baseline");
        let mut base = base;
        base.devices = vec![e.device.clone().unwrap()];
        for ev in [&e, &base] {
            let r = render(&cx, &[ev]);
            assert!(!r.text.contains('\u{1b}'), "{}", r.text);
            assert!(!r.text.contains("\nFAKE LINE"), "{}", r.text);
            assert!(!r.text.contains("\ninjected"), "{}", r.text);
        }
    }

    /// F17: a device named like a login page is no link in its own alert (mail clients and
    /// chats link bare domains and URLs on their own); the tailnet's own names stay as they are.
    #[test]
    fn a_url_shaped_name_is_no_link() {
        let cx = Context::new("web-01");
        for name in [
            "www.login-bank.com",
            "https://evil.example/login",
            "login.evil.example",
        ] {
            let mut e = hostile();
            let d = e.device.as_mut().unwrap();
            d.hostname = name.into();
            d.dns_name = "login-bank.example.ts.net.".into();
            e.summary = format!("New device {name} joined");
            let r = render(&cx, &[&e]);
            for part in [&r.subject, &r.text, &r.html] {
                assert!(!part.contains(name), "{name} in {part}");
            }
            assert!(r.text.contains("login-bank.example.ts.net"), "{}", r.text);
            assert!(r
                .text
                .contains("https://login.tailscale.com/admin/machines/100.64.0.66"));
            let mut one = String::new();
            event_text_unlinked(&mut one, &e);
            assert!(!one.contains(name), "{one}");
        }
        // What the monitor writes itself stays copyable.
        let mut e = hostile();
        e.fix = "run `systemctl enable --now tailscale-monitor-privileged.socket` (see install.sh)"
            .into();
        let r = render(&cx, &[&e]);
        assert!(
            r.text
                .contains("tailscale-monitor-privileged.socket` (see install.sh)"),
            "{}",
            r.text
        );
    }

    #[test]
    fn hostile_names_cannot_inject() {
        let cx = Context::new("web-01");
        let e = hostile();
        let r = render(&cx, &[&e]);
        assert!(!r.subject.contains('\r') && !r.subject.contains('\n'));
        assert!(r.subject.chars().count() <= SUBJECT_MAX + 1);
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<img"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"));
        assert!(!r.text.contains('\u{1b}'));
        assert!(!r.text.contains('\u{202E}'));
        assert!(!r.text.contains("\r\nBcc"));
        assert!(r.text.contains("headscale nodes delete --identifier 7"));
        assert!(r
            .text
            .contains("https://login.tailscale.com/admin/machines/100.64.0.66"));
    }

    #[test]
    fn a_storm_lists_every_device_and_details_only_the_first() {
        let cx = Context::new("web-01");
        let events: Vec<Event> = (0..1000)
            .map(|i| {
                let mut e = hostile();
                e.summary = format!("New device dev-{i} joined");
                e
            })
            .collect();
        let refs: Vec<&Event> = events.iter().collect();
        let r = render(&cx, &refs);
        assert!(
            r.text.contains("Summary: 1000 × device.new"),
            "{}",
            &r.text[..300]
        );
        for i in [0, 500, 999] {
            assert!(r.text.contains(&format!("New device dev-{i} joined")));
            assert!(r.html.contains(&format!("New device dev-{i} joined")));
        }
        assert_eq!(
            r.text.matches("What to do:").count(),
            STORM,
            "details for the first {STORM} only"
        );
    }

    #[test]
    fn the_log_anchor_ends_every_message_that_has_one() {
        let e = Event::new(EventKind::DeviceRemoved, Utc::now(), "Device x left");
        let mut cx = Context::new("web-01");
        assert!(!render(&cx, &[&e]).text.contains("Log anchor"));
        cx.anchor = Some(Anchor {
            event_id: 7,
            hash: "ab".repeat(32),
        });
        let r = render(&cx, &[&e]);
        let want = format!("Log anchor: 7:{}", "ab".repeat(32));
        assert!(
            r.text.contains(&want) && r.html.contains("Log anchor: <code>7:"),
            "{}",
            r.text
        );
    }

    #[test]
    fn subject_names_the_worst_event_and_counts_the_rest() {
        let cx = Context::new("web-01");
        let a = Event::new(EventKind::DeviceRemoved, Utc::now(), "Device x left");
        let b = hostile();
        let s = subject(&cx, &[&a, &b]);
        assert!(
            s.starts_with("[tailscale-monitor] web-01 CRITICAL: New device evil"),
            "{s}"
        );
        assert!(s.ends_with("(+1 more)"), "{s}");
    }
}
