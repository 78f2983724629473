//! `access`: who may reach this server, from the node view.

use std::io::Write as _;
use std::path::Path;

use super::table::row;
use crate::cli::{load, pass};
use crate::sanitize;
use crate::store::Store;

pub(super) async fn access(explicit: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let cfg = load(explicit, true)?;
    let source = crate::source::Source::from_config(&cfg.source);
    let mut snap = source.snapshot().await?;
    let Some(view) = snap.node.as_ref() else {
        anyhow::bail!(
            "who may reach this node is not available from [tailscale] source = \"cli\"; use the LocalAPI source"
        );
    };
    if let Some(u) = view.unread(crate::model::access::Part::Access) {
        // Never an empty table: that would read as "nobody can reach this server".
        anyhow::bail!(
            "who can reach this server is not visible: {}. Fix: {}",
            u.error,
            u.fix
        );
    }
    if view.rules.is_none() {
        anyhow::bail!("this tailscaled's netmap carries no packet filter the monitor can read");
    }
    if let Some(api) = source.local_api() {
        pass::whois_sources(api, &mut snap).await;
    }
    let view = snap.node.clone().expect("checked above");
    // Addresses of devices that left this node's peer list are named as the monitor knew them
    // (as in the alerts), when its state can be read.
    let known = if cfg.state_dir.join("state.db").exists() {
        Store::open(&cfg.state_dir)
            .and_then(|s| s.known())
            .map(|k| k.devices)
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let model = crate::diff::access::canonical_with(&view, &snap, &known);
    let mut out = std::io::stdout().lock();
    if json {
        super::table::print_json(&model)?;
        return Ok(());
    }
    let s = |v: &str, n| sanitize::line(v, n);
    let rows = model.rows();
    const WIDTHS: [usize; 3] = [26, 46, 30];
    writeln!(
        out,
        "{}",
        row(&WIDTHS, &["SOURCE", "WHO", "PORTS", "SSH AS"])
    )?;
    for r in &rows {
        let cells = [
            s(&r.source, 26),
            s(&r.who, 46),
            s(&r.ports, 60),
            s(&r.ssh, 60),
        ];
        writeln!(
            out,
            "{}",
            row(&WIDTHS, &cells.each_ref().map(String::as_str))
        )?;
    }
    writeln!(
        out,
        "{} source(s) may reach {} (only rules that target this node are visible here)",
        rows.len(),
        s(snap.self_name(), 40)
    )?;
    let t = &model.trust;
    let unknown = || "unknown".to_owned();
    writeln!(
        out,
        "Tailnet Lock: {}; Tailscale SSH server: {}; advertised routes: {}; update: {}",
        t.tailnet_lock
            .as_ref()
            .map_or_else(unknown, |l| if l.enabled {
                format!("enabled ({} trusted keys)", l.trusted_keys.len())
            } else {
                "disabled".into()
            }),
        t.ssh_server
            .map_or_else(unknown, |b| if b { "on" } else { "off" }.into()),
        t.advertised_routes
            .as_ref()
            .map_or_else(unknown, |r| if r.is_empty() {
                "none".into()
            } else {
                s(&r.join(", "), 200)
            }),
        t.update_available.as_ref().map_or_else(
            || "up to date".into(),
            |v| format!("{} available", s(v, 40))
        ),
    )?;
    Ok(())
}
