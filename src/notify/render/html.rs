//! One event as HTML (the mail HTML part), every value escaped.

use std::fmt::Write as _;

use crate::model::{Event, Severity};
use crate::notify::render::advice::action;
use crate::notify::render::{device_rows, severity_label, when};
use crate::sanitize;

pub(super) fn event_html(out: &mut String, e: &Event) {
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
