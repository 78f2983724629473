//! Turns events into what a human reads: a subject, a plain-text body and an HTML body.
//!
//! Every value that comes from the tailnet passes through [`crate::sanitize`] here and nowhere
//! else: `line` for the subject and text, `html` for the HTML part. A device named
//! `evil\r\nBcc: x@y <script>` renders as one harmless line.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::model::{Device, Event, EventKind, Severity, User};
use crate::sanitize::{self, NAME_MAX, SUBJECT_MAX};

pub(crate) mod advice;
pub(crate) mod blocks;
mod html;
#[cfg(test)]
mod tests;
mod text;

use crate::notify::render::html::event_html;

pub use text::event_text;

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
    /// `[web] url`: each event links to its page of the web view (its device's, else the
    /// timeline).
    pub web: Option<String>,
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
            web: None,
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

/// The web view's page of `e` (its device's, else the timeline at it), when `[web] url` is set.
/// The device's stable ID is percent-encoded: nothing from the tailnet shapes the URL.
fn web_link(cx: &Context, e: &Event) -> Option<String> {
    let base = cx.web.as_deref()?;
    Some(match &e.device {
        Some(d) => format!(
            "{base}/devices/{}",
            percent_encoding::utf8_percent_encode(&d.id.0, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => format!("{base}/timeline"),
    })
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
        if let Some(url) = web_link(cx, e) {
            let _ = writeln!(text, "  Web view:   {url}");
            let u = sanitize::html(&url, 400);
            let _ = write!(html, "<p><a href=\"{u}\">Open in the web view</a></p>");
        }
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
