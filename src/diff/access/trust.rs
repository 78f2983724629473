//! This node's own trust settings (routes it advertises, Tailnet Lock, prefs): `node.*` events.

use chrono::{DateTime, Utc};

use crate::model::access::NodeTrust;
use crate::model::event_kind::EventKind;
use crate::model::{Change, Event};

pub(super) fn routes_text(r: &[String]) -> String {
    if r.is_empty() {
        "none".into()
    } else {
        r.join(", ")
    }
}

/// This node's own trust signals that changed (only where both sides could be read).
pub fn trust_events(old: &NodeTrust, new: &NodeTrust, now: DateTime<Utc>) -> Vec<Event> {
    let mut out = Vec::new();
    let ch = |field: &str, old: String, new: String| Change {
        field: field.into(),
        old,
        new,
    };
    if let (Some(o), Some(n)) = (&old.tailnet_lock, &new.tailnet_lock) {
        if o.enabled && !n.enabled {
            let mut e = Event::new(
                EventKind::NodeTailnetLockDisabled,
                now,
                "Tailnet Lock was disabled: the control plane can add nodes without a trusted signature",
            );
            e.changes = vec![ch("tailnet lock", "enabled".into(), "disabled".into())];
            out.push(e);
        } else if !o.enabled && n.enabled {
            let mut e = Event::new(
                EventKind::NodeTailnetLockChanged,
                now,
                "Tailnet Lock was enabled",
            );
            e.changes = vec![ch("tailnet lock", "disabled".into(), "enabled".into())];
            out.push(e);
        } else if o.trusted_keys != n.trusted_keys {
            let mut e = Event::new(
                EventKind::NodeTailnetLockChanged,
                now,
                "The Tailnet Lock trusted keys changed",
            );
            e.changes = vec![ch(
                "trusted keys",
                o.trusted_keys.join(", "),
                n.trusted_keys.join(", "),
            )];
            out.push(e);
        }
    }
    if let (Some(o), Some(n)) = (old.ssh_server, new.ssh_server) {
        if o != n {
            let on_off = |b: bool| if b { "on" } else { "off" }.to_owned();
            let mut e = Event::new(
                EventKind::NodeSshChanged,
                now,
                format!(
                    "The Tailscale SSH server on this node was turned {}",
                    on_off(n)
                ),
            );
            e.changes = vec![ch("tailscale ssh", on_off(o), on_off(n))];
            out.push(e);
        }
    }
    if let (Some(o), Some(n)) = (&old.advertised_routes, &new.advertised_routes) {
        if o != n {
            let summary = if new.is_exit_node() && !old.is_exit_node() {
                "This node now offers itself as an exit node".to_owned()
            } else {
                format!("This node now advertises routes: {}", routes_text(n))
            };
            let mut e = Event::new(EventKind::NodeRoutesChanged, now, summary);
            e.changes = vec![ch("advertised routes", routes_text(o), routes_text(n))];
            out.push(e);
        }
    }
    if let (Some(false), Some(true)) = (old.remote_config, new.remote_config) {
        let mut e = Event::new(
            EventKind::NodeRemoteConfig,
            now,
            "RemoteConfig was turned on for this node: the control plane may now change any of its prefs and call any LocalAPI endpoint, so it can open Tailscale SSH or undo the guard",
        );
        e.changes = vec![ch("remote config", "off".into(), "on".into())];
        e.fix = "`tailscale set --remote-config=false` unless the tailnet's admins own this server"
            .into();
        out.push(e);
    }
    if let Some(v) = &new.update_available {
        if old.update_available.as_ref() != Some(v) {
            let mut e = Event::new(
                EventKind::NodeUpdateAvailable,
                now,
                format!("A newer tailscaled is available for this node: {v}"),
            );
            e.changes = vec![ch(
                "latest version",
                old.update_available
                    .clone()
                    .unwrap_or_else(|| "running the latest".into()),
                v.clone(),
            )];
            out.push(e);
        }
    }
    out
}
