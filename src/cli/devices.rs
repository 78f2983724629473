//! `devices`: the known devices, watched ones first.

use std::io::Write as _;
use std::path::Path;

use super::table::row;
use crate::cli::open_store;
use crate::sanitize;

pub(super) fn devices(explicit: Option<&Path>, json: bool, all: bool) -> anyhow::Result<()> {
    let store = open_store(explicit)?;
    let mut rows = store.devices()?;
    rows.retain(|r| all || !r.known.removed);
    let known = store.known()?;
    let users = known.users;
    // The control view, when `[control]` is configured: which devices this node cannot see.
    let control = known.control;
    let hidden = crate::store::control_only(control.as_ref(), &rows);
    // Watched devices first ([[watch]]), each with its presence.
    let presence = store.presence()?.unwrap_or_default();
    rows.sort_by(|a, b| {
        let w = |r: &crate::store::DeviceRow| !presence.devices.contains_key(&r.known.device.id);
        (w(a), a.known.device.display_name()).cmp(&(w(b), b.known.device.display_name()))
    });
    let state = |d: &crate::model::Device| {
        presence.devices.get(&d.id).map(|t| {
            format!(
                "{} since {} (watch {})",
                if t.online { "online" } else { "offline" },
                t.since.format("%Y-%m-%d %H:%M"),
                sanitize::line(&t.watch, 30)
            )
        })
    };
    let login = |d: &crate::model::Device| {
        users
            .get(&d.user_id)
            .map_or_else(|| d.user_id.to_string(), |u| u.user.login.clone())
    };
    let view = |d: &crate::model::Device| match &control {
        None => "node",
        Some(c) if c.devices.contains_key(&d.id) => "both",
        Some(_) if d.shared => "node (shared in)",
        Some(_) => "node only",
    };
    let mut out = std::io::stdout().lock();
    if json {
        let mut v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "device": r.known.device,
                    "user": login(&r.known.device),
                    "removed": r.known.removed,
                    "first_seen": r.first_seen,
                    "last_seen": r.last_seen,
                    "view": view(&r.known.device),
                    "presence": presence.devices.get(&r.known.device.id),
                })
            })
            .collect();
        v.extend(hidden.iter().map(|d| {
            serde_json::json!({
                "device": crate::diff::control::as_device(d),
                "user": d.user,
                "removed": false,
                "view": "control only",
                "authorized": d.authorized,
            })
        }));
        super::table::print_json(&v)?;
        return Ok(());
    }
    let s = |v: &str, n| sanitize::line(v, n);
    const WIDTHS: [usize; 6] = [24, 28, 34, 10, 20, 20];
    let header = [
        "NAME",
        "USER",
        "ADDRESSES",
        "OS",
        "FIRST SEEN",
        "LAST SEEN",
        "VIEW",
    ];
    writeln!(out, "{}", row(&WIDTHS, &header))?;
    for r in &rows {
        let d = &r.known.device;
        let mut name = s(d.display_name(), 22);
        if d.is_self {
            name += "*";
        }
        if r.known.removed {
            name += " (gone)";
        }
        let cells = [
            name,
            s(&login(d), 28),
            s(&d.addresses.join(","), 34),
            s(&d.os, 10),
            r.first_seen.format("%Y-%m-%d %H:%M").to_string(),
            r.last_seen.format("%Y-%m-%d %H:%M").to_string(),
            view(d).to_string(),
            state(d).map_or(String::new(), |x| format!("; {x}")),
        ];
        writeln!(
            out,
            "{}",
            row(&WIDTHS, &cells.each_ref().map(String::as_str))
        )?;
    }
    for d in &hidden {
        let cells = [
            s(&d.hostname, 22),
            s(&d.user, 28),
            s(&d.addresses.join(","), 34),
            s(&d.os, 10),
            d.created
                .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            "-".to_owned(),
            "control only".to_owned(),
            if d.authorized {
                String::new()
            } else {
                ", waiting for approval".to_owned()
            },
        ];
        writeln!(
            out,
            "{}",
            row(&WIDTHS, &cells.each_ref().map(String::as_str))
        )?;
    }
    let mut summary = format!("{} device(s)", rows.len() + hidden.len());
    if control.is_some() {
        summary += &format!(
            ", {} not visible to this server (see README: What one node can see)",
            hidden.len()
        );
    }
    writeln!(out, "{summary}; * = this server")?;
    Ok(())
}
