//! What changed on a known device: key, owner, name, addresses, tags, routes, exit node, expiry.

use chrono::{DateTime, Utc};

use crate::model::event_kind::EventKind;
use crate::model::{Change, Device, Event, Snapshot, User, UserId};

pub(super) fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

pub(super) fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("disabled".to_owned(), |t| t.to_rfc3339())
}

pub(super) fn device_changes(
    old: &Device,
    new: &Device,
    owner: Option<&User>,
    cur: &Snapshot,
    now: DateTime<Utc>,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |kind: EventKind, summary: String, changes: Vec<Change>| {
        let mut e = Event::new(kind, now, summary);
        e.device = Some(new.clone());
        e.user = owner.cloned();
        e.changes = changes;
        events.push(e);
    };
    let ch = |field: &str, old: String, new: String| Change {
        field: field.to_owned(),
        old,
        new,
    };
    let name = new.display_name();

    if old.node_key != new.node_key {
        push(
            EventKind::DeviceRekeyed,
            format!("Device {name} re-authenticated with a new node key"),
            vec![ch(
                "node_key",
                old.node_key.0.clone(),
                new.node_key.0.clone(),
            )],
        );
    }
    if old.user_id != new.user_id {
        let login = |id: UserId| {
            cur.users
                .get(&id)
                .map_or_else(|| format!("user {id}"), |u| u.login.clone())
        };
        let mut e_changes = vec![ch("user", login(old.user_id), login(new.user_id))];
        e_changes[0].old = format!("{} ({})", e_changes[0].old, old.user_id);
        e_changes[0].new = format!("{} ({})", e_changes[0].new, new.user_id);
        push(
            EventKind::DeviceOwnerChanged,
            format!("Device {name} now belongs to {}", login(new.user_id)),
            e_changes,
        );
    }
    if old.hostname != new.hostname || old.dns_name != new.dns_name {
        let mut c = Vec::new();
        if old.hostname != new.hostname {
            c.push(ch("hostname", old.hostname.clone(), new.hostname.clone()));
        }
        if old.dns_name != new.dns_name {
            c.push(ch("dns_name", old.dns_name.clone(), new.dns_name.clone()));
        }
        push(
            EventKind::DeviceRenamed,
            format!("Device {} was renamed to {name}", old.display_name()),
            c,
        );
    }
    if !crate::model::same_set(&old.addresses, &new.addresses) {
        push(
            EventKind::DeviceAddressesChanged,
            format!("Tailscale addresses of {name} changed"),
            vec![ch("addresses", list(&old.addresses), list(&new.addresses))],
        );
    }
    if !crate::model::same_set(&old.tags, &new.tags) {
        push(
            EventKind::DeviceTagsChanged,
            format!("ACL tags of {name} changed"),
            vec![ch("tags", list(&old.tags), list(&new.tags))],
        );
    }
    let subnets = |d: &Device| -> Vec<String> {
        d.routes
            .iter()
            .filter(|r| !crate::model::is_exit_route(r))
            .cloned()
            .collect()
    };
    let (old_sub, new_sub) = (subnets(old), subnets(new));
    if !crate::model::same_set(&old_sub, &new_sub) {
        push(
            EventKind::DeviceRoutesChanged,
            format!("Routes served by {name} changed"),
            vec![ch("routes", list(&old_sub), list(&new_sub))],
        );
    }
    if !old.exit_node && new.exit_node {
        push(
            EventKind::DeviceExitNodeOffered,
            format!("Device {name} now offers an exit node: it can carry other devices' traffic"),
            vec![ch("exit_node", "no".into(), "yes".into())],
        );
    }
    if old.key_expiry.is_some() && new.key_expiry.is_none() {
        push(
            EventKind::DeviceKeyExpiryDisabled,
            format!("Key expiry was disabled for {name}: its key now never expires"),
            vec![ch("key_expiry", opt_time(old.key_expiry), opt_time(None))],
        );
    }
    if !old.expired && new.expired {
        push(
            EventKind::DeviceExpired,
            format!("The node key of {name} has expired"),
            vec![ch("expired", "no".into(), "yes".into())],
        );
    }
    events
}
