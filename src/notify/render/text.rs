//! One event as plain text (mail text parts, chats, the terminal).

use std::fmt::Write as _;

use crate::model::event_kind::EventKind;
use crate::model::Event;
use crate::notify::render::advice::action;
use crate::notify::render::{device_rows, severity_label, when};
use crate::sanitize;
use crate::sanitize::NAME_MAX;

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
