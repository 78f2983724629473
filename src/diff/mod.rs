//! The pure core: what the monitor knows × what the tailnet looks like now → events.
//!
//! [`diff`] takes values and returns values; it never reads a clock, a socket or a file, so every
//! event kind is tested here with a few snapshots and an assertion. The store persists the
//! [`Outcome`] (state changes and events) in one transaction; notifiers render the events.
//!
//! Rules that make this better than diffing `IP hostname` lines:
//! - identity is the stable node ID: a device re-added under an old hostname and IP is new;
//! - the first snapshot of an empty store is a *baseline*: one review event, no per-device alerts;
//! - a device that is known but was removed and comes back under the same ID is not "new";
//! - nothing here ever sees a failed read: sources return errors, not empty snapshots.

pub mod access;
pub mod control;
pub mod parts;

pub mod presence;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::model::access::Access;
pub use crate::model::state::{Known, KnownDevice, KnownUser, Outcome};
use crate::model::{
    Change, Device, Event, EventKind, Health, Snapshot, StableNodeId, User, UserId,
};

/// Which `peer.connected` events are sent (all are logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectAlert {
    /// Devices first seen after the baseline; the rest are record-only.
    New,
    All,
    None,
}

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Alert `device.key_expiring` when a node key expires within this much time.
    pub key_expiry_warn: Duration,
    /// A handshake after this long without one is a new `peer.connected`.
    pub connect_quiet: Duration,
    pub connect_alert: ConnectAlert,
    /// `[[watch]]`: devices whose presence is alerted.
    pub watches: Vec<crate::model::presence::Watch>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            key_expiry_warn: Duration::days(14),
            connect_quiet: Duration::hours(1),
            connect_alert: ConnectAlert::New,
            watches: Vec::new(),
        }
    }
}

/// Compares the current snapshot with what is known. `now` is the detection time.
pub fn diff(known: &Known, cur: &Snapshot, policy: &Policy, now: DateTime<Utc>) -> Outcome {
    if !known.baseline_done {
        return baseline(cur, policy, now);
    }
    let mut out = Outcome::default();

    let control_logins = |login: &str| {
        known
            .control
            .as_ref()
            .is_some_and(|c| c.users.contains(login))
    };
    for user in cur.users.values() {
        match known.users.get(&user.id) {
            None if control_logins(&user.login) => out.users.push(KnownUser {
                user: user.clone(),
                removed: false,
            }),
            None => {
                let mut e = Event::new(
                    EventKind::UserNew,
                    now,
                    format!("New user {} ({})", user.login, user.display_name),
                );
                e.user = Some(user.clone());
                out.events.push(e);
                out.users.push(KnownUser {
                    user: user.clone(),
                    removed: false,
                });
            }
            Some(k) if k.removed || k.user != *user => out.users.push(KnownUser {
                user: user.clone(),
                removed: false,
            }),
            Some(_) => {}
        }
    }

    // Built on the first new device: one pass over what is known, not one per new device.
    let mut lookalikes: Option<Lookalikes> = None;
    let mut known_devices = Ascending::new(&known.devices);
    for dev in cur.devices.values() {
        let owner = cur.users.get(&dev.user_id);
        match known_devices.get(&dev.id) {
            // Reported already from the control view, while this node could not see it.
            None if known
                .control
                .as_ref()
                .is_some_and(|c| c.devices.contains_key(&dev.id)) =>
            {
                out.devices.push(KnownDevice {
                    device: dev.clone(),
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: true,
                });
            }
            None => {
                let mut e = Event::new(
                    EventKind::DeviceNew,
                    now,
                    format!(
                        "New device {} ({}) of {} joined the tailnet",
                        dev.display_name(),
                        dev.os,
                        owner
                            .as_ref()
                            .map_or("an unknown user", |u| u.login.as_str())
                    ),
                );
                e.detail = lookalikes
                    .get_or_insert_with(|| Lookalikes::new(known))
                    .hint(dev);
                e.device = Some(dev.clone());
                e.user = owner.cloned();
                out.events.push(e);
                let mut k = KnownDevice {
                    device: dev.clone(),
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: true,
                };
                if let Some(e) = key_expiring(&mut k, owner, policy, now) {
                    out.events.push(e);
                }
                out.events
                    .extend(connected(&mut k, cur, owner, policy, now));
                out.devices.push(k);
            }
            Some(prev) => {
                // The device is copied only when something about it is to be recorded.
                let mut expiring_alerted =
                    prev.expiring_alerted.filter(|&t| Some(t) == dev.key_expiry);
                let mut last_handshake = prev.last_handshake;
                let changed = prev.device != *dev;
                if changed {
                    out.events
                        .extend(device_changes(&prev.device, dev, owner, cur, now));
                }
                if let Some(e) = key_expiring_of(dev, &mut expiring_alerted, owner, policy, now) {
                    out.events.push(e);
                }
                out.events.extend(connected_of(
                    dev,
                    &mut last_handshake,
                    prev.after_baseline,
                    cur,
                    owner,
                    policy,
                    now,
                ));
                if prev.removed
                    || changed
                    || prev.expiring_alerted != expiring_alerted
                    || prev.last_handshake != last_handshake
                {
                    out.devices.push(KnownDevice {
                        device: dev.clone(),
                        removed: false,
                        expiring_alerted,
                        last_handshake,
                        after_baseline: prev.after_baseline,
                    });
                }
            }
        }
    }

    let mut cur_devices = Ascending::new(&cur.devices);
    for (id, k) in &known.devices {
        if !k.removed && cur_devices.get(id).is_none() {
            let owner = known.users.get(&k.device.user_id).map(|u| u.user.clone());
            let mut e = Event::new(
                EventKind::DeviceRemoved,
                now,
                format!(
                    "Device {} left the tailnet (or is no longer visible to this node)",
                    k.device.display_name()
                ),
            );
            e.device = Some(k.device.clone());
            e.user = owner;
            out.events.push(e);
            out.devices.push(KnownDevice {
                removed: true,
                ..k.clone()
            });
        }
    }
    for (id, k) in &known.users {
        if !k.removed && !cur.users.contains_key(id) {
            let mut e = Event::new(
                EventKind::UserRemoved,
                now,
                format!("User {} is no longer in the tailnet", k.user.login),
            );
            e.user = Some(k.user.clone());
            out.events.push(e);
            out.users.push(KnownUser {
                removed: true,
                ..k.clone()
            });
        }
    }
    let (events, presence, due) =
        presence::evaluate(&policy.watches, known.presence.as_ref(), cur, now);
    out.events.extend(events);
    out.watched = presence.devices.keys().cloned().collect();
    // Nothing watched and nothing remembered: nothing to write.
    let empty = crate::model::presence::KnownPresence::default();
    if known.presence.as_ref().unwrap_or(&empty) != &presence {
        out.presence = Some(presence);
    }
    out.presence_due = due;
    if !cur.tailnet_id.is_empty() && known.tailnet_id.as_deref() != Some(&cur.tailnet_id) {
        if let Some(old) = &known.tailnet_id {
            let mut e = Event::new(
                EventKind::NodeTailnetChanged,
                now,
                format!(
                    "This server now belongs to another tailnet ({})",
                    if cur.tailnet.is_empty() {
                        &cur.tailnet_id
                    } else {
                        &cur.tailnet
                    }
                ),
            );
            e.changes = vec![Change {
                field: "tailnet".into(),
                old: old.clone(),
                new: cur.tailnet_id.clone(),
            }];
            out.events.push(e);
        }
        out.tailnet_id = Some(cur.tailnet_id.clone());
    }
    if let Some(view) = &cur.node {
        let new = access::canonical(view, cur);
        match &known.access {
            Some(old) => {
                // Two parts, compared each where both sides could be read: who may reach this
                // server (an unknown model is never compared: no false "narrowed"), and this
                // node's trust signals (a Tailnet Lock change is seen whatever the filter).
                if old.known && new.known {
                    out.events.extend(access::events(old, &new, cur, now));
                }
                out.events
                    .extend(access::trust_events(&old.trust, &new.trust, now));
                let next = access::merged(old, new);
                if next != *old {
                    out.access = Some(next);
                }
            }
            None => out.access = Some(new),
        }
    }
    out
}

/// Lookups in a map by keys that come in ascending order (another map of the same keys, walked in
/// order): one merge instead of a tree search per key.
struct Ascending<'a, K, V>(std::iter::Peekable<std::collections::btree_map::Iter<'a, K, V>>);

impl<'a, K: Ord, V> Ascending<'a, K, V> {
    fn new(map: &'a BTreeMap<K, V>) -> Self {
        Ascending(map.iter().peekable())
    }

    /// The value of `key`; keys asked must not decrease.
    fn get(&mut self, key: &K) -> Option<&'a V> {
        while let Some((k, _)) = self.0.peek() {
            match (*k).cmp(key) {
                std::cmp::Ordering::Less => {
                    self.0.next();
                }
                std::cmp::Ordering::Equal => return self.0.next().map(|(_, v)| v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

fn baseline(cur: &Snapshot, policy: &Policy, now: DateTime<Utc>) -> Outcome {
    let mut e = Event::new(
        EventKind::MonitorBaseline,
        now,
        format!(
            "Monitoring started: baseline of {} devices and {} users recorded for review",
            cur.devices.len(),
            cur.users.len()
        ),
    );
    e.devices = cur.devices.values().cloned().collect();
    e.users = cur.users.values().cloned().collect();
    let access = cur.node.as_ref().map(|v| access::canonical(v, cur));
    e.access = access.as_ref().filter(|a| a.known).map(Access::rows);
    let devices = cur
        .devices
        .values()
        .map(|d| {
            let mut k = KnownDevice {
                device: d.clone(),
                removed: false,
                expiring_alerted: None,
                last_handshake: cur.conns.get(&d.id).and_then(|c| c.last_handshake),
                after_baseline: false,
            };
            // Listed in the baseline already; do not raise it again on the next pass.
            if expires_within(d, policy, now) {
                k.expiring_alerted = d.key_expiry;
            }
            k
        })
        .collect();
    let users = cur
        .users
        .values()
        .map(|u| KnownUser {
            user: u.clone(),
            removed: false,
        })
        .collect();
    Outcome {
        events: vec![e],
        devices,
        users,
        access,
        control: None,
        presence: (!policy.watches.is_empty())
            .then(|| presence::evaluate(&policy.watches, None, cur, now).1),
        presence_due: None,
        watched: Vec::new(),
        tailnet_id: (!cur.tailnet_id.is_empty()).then(|| cur.tailnet_id.clone()),
    }
}

fn expires_within(d: &Device, policy: &Policy, now: DateTime<Utc>) -> bool {
    d.key_expiry
        .is_some_and(|t| !d.expired && t > now && t - now <= policy.key_expiry_warn)
}

/// Raises `device.key_expiring` once per expiry time, recording that it did in `k`.
fn key_expiring(
    k: &mut KnownDevice,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    key_expiring_of(&k.device, &mut k.expiring_alerted, owner, policy, now)
}

/// [`key_expiring`] on the parts of a known device (no copy of the device when nothing changes).
fn key_expiring_of(
    d: &Device,
    expiring_alerted: &mut Option<DateTime<Utc>>,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    if !expires_within(d, policy, now) || *expiring_alerted == d.key_expiry {
        return None;
    }
    *expiring_alerted = d.key_expiry;
    let at = d.key_expiry?;
    let mut e = Event::new(
        EventKind::DeviceKeyExpiring,
        now,
        format!(
            "Node key of {} expires in {} days ({})",
            d.display_name(),
            (at - now).num_days(),
            at.format("%Y-%m-%d %H:%M UTC")
        ),
    );
    e.device = Some(d.clone());
    e.user = owner.cloned();
    Some(e)
}

/// A handshake at `h` is a new connection if none was seen before, or the last one is older than
/// the quiet period.
fn is_new_connection(prev: Option<DateTime<Utc>>, h: DateTime<Utc>, policy: &Policy) -> bool {
    prev.is_none_or(|p| h - p >= policy.connect_quiet)
}

/// Peers whose current handshake will be reported as `peer.connected` by [`diff`]: the edge asks
/// `whois` about these (and only these) before the pass.
///
/// `last` gives the last handshake recorded for a device; `None` means there is no baseline yet.
pub fn connection_candidates(
    last: Option<impl Fn(&StableNodeId) -> Option<DateTime<Utc>>>,
    cur: &Snapshot,
    policy: &Policy,
) -> Vec<StableNodeId> {
    let Some(last) = last else {
        return Vec::new();
    };
    cur.conns
        .iter()
        .filter_map(|(id, c)| {
            let h = c.last_handshake?;
            let prev = last(id);
            (prev.is_none_or(|p| h > p) && is_new_connection(prev, h, policy)).then(|| id.clone())
        })
        .collect()
}

/// Raises `peer.connected` when a peer has a WireGuard handshake with this node for the first time,
/// or again after `connect_quiet` without one, and records the handshake in `k`.
fn connected(
    k: &mut KnownDevice,
    cur: &Snapshot,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    let after_baseline = k.after_baseline;
    connected_of(
        &k.device,
        &mut k.last_handshake,
        after_baseline,
        cur,
        owner,
        policy,
        now,
    )
}

/// [`connected`] on the parts of a known device.
fn connected_of(
    d: &Device,
    last_handshake: &mut Option<DateTime<Utc>>,
    after_baseline: bool,
    cur: &Snapshot,
    owner: Option<&User>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Option<Event> {
    let h = cur.conns.get(&d.id)?.last_handshake?;
    let prev = *last_handshake;
    if prev.is_some_and(|p| h <= p) {
        return None;
    }
    *last_handshake = Some(h);
    if !is_new_connection(prev, h, policy) {
        return None;
    }
    let mut e = Event::new(
        EventKind::PeerConnected,
        now,
        format!(
            "{} ({}) opened a WireGuard session with this server",
            d.display_name(),
            owner.map_or("unknown user", |u| u.login.as_str())
        ),
    );
    e.detail = match prev {
        Some(p) => format!(
            "handshake at {}; the previous one was at {}",
            h.to_rfc3339(),
            p.to_rfc3339()
        ),
        None => format!("first handshake seen, at {}", h.to_rfc3339()),
    };
    if let Some(w) = cur.whois.get(&d.id) {
        e.detail = format!("{}; {w}", e.detail);
    }
    e.record_only = match policy.connect_alert {
        ConnectAlert::All => false,
        ConnectAlert::None => true,
        ConnectAlert::New => !after_baseline,
    };
    e.device = Some(d.clone());
    e.user = owner.cloned();
    Some(e)
}

/// Known devices by hostname and by address, to explain when a new device looks like an old one
/// (the re-registration the old script missed).
struct Lookalikes<'a> {
    known: &'a Known,
    by_host: HashMap<&'a str, Vec<&'a StableNodeId>>,
    by_addr: HashMap<&'a str, Vec<&'a StableNodeId>>,
}

impl<'a> Lookalikes<'a> {
    fn new(known: &'a Known) -> Self {
        let mut by_host: HashMap<&str, Vec<&StableNodeId>> = HashMap::new();
        let mut by_addr: HashMap<&str, Vec<&StableNodeId>> = HashMap::new();
        for (id, k) in &known.devices {
            if !k.device.hostname.is_empty() {
                by_host.entry(&k.device.hostname).or_default().push(id);
            }
            for a in &k.device.addresses {
                by_addr.entry(a).or_default().push(id);
            }
        }
        Lookalikes {
            known,
            by_host,
            by_addr,
        }
    }

    fn hint(&self, dev: &Device) -> String {
        let mut ids: BTreeSet<&StableNodeId> = BTreeSet::new();
        if !dev.hostname.is_empty() {
            ids.extend(
                self.by_host
                    .get(dev.hostname.as_str())
                    .into_iter()
                    .flatten(),
            );
        }
        for a in &dev.addresses {
            ids.extend(self.by_addr.get(a.as_str()).into_iter().flatten());
        }
        reregistration_hint(ids.into_iter().map(|id| &self.known.devices[id]))
    }
}

/// The hint for a new device, given the known devices that share its hostname or an address.
fn reregistration_hint<'a>(similar: impl Iterator<Item = &'a KnownDevice>) -> String {
    let similar: Vec<String> = similar
        .map(|k| {
            format!(
                "{} ({}{})",
                k.device.display_name(),
                k.device.id,
                if k.removed { ", removed" } else { "" }
            )
        })
        .collect();
    if similar.is_empty() {
        String::new()
    } else {
        format!(
            "Same hostname or address as previously known device {}: a re-registration with a new \
             identity. Confirm it was re-added on purpose.",
            similar.join(", ")
        )
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("disabled".to_owned(), |t| t.to_rfc3339())
}

fn is_exit_route(r: &String) -> bool {
    r == "0.0.0.0/0" || r == "::/0"
}

fn device_changes(
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
            .filter(|r| !is_exit_route(r))
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

/// `monitor.source_down`: the tailnet could not be read. Raised once per outage.
pub fn source_down(error: &str, now: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        EventKind::MonitorSourceDown,
        now,
        "The tailnet cannot be read: the monitor is blind until this is fixed",
    );
    e.detail = error.to_owned();
    e
}

/// `monitor.source_recovered`: the tailnet can be read again after an outage.
pub fn source_recovered(down_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        EventKind::MonitorSourceRecovered,
        now,
        "The tailnet can be read again; changes made meanwhile are reported now",
    );
    if let Some(t) = down_since {
        e.detail = format!(
            "unreadable since {} ({} s)",
            t.to_rfc3339(),
            (now - t).num_seconds()
        );
    }
    e
}

/// The whole decision of one pass, given what the source returned: recovery/outage events around
/// the diff, and the new source health. The bool says whether the tailnet was actually seen (so
/// `last_seen` may advance). On a source error nothing known changes: no removals, no baseline.
pub fn pass_outcome(
    known: &Known,
    health: &Health,
    result: Result<&Snapshot, &str>,
    control: Option<ControlRead>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (Outcome, Health, bool) {
    let (mut out, h, seen) = node_outcome(known, health, result, policy, now);
    if let Some(c) = control {
        // The posture audit, once per read: its drift goes to the control view's events, its
        // summary to the baseline.
        let evaluated = c.result.map(|cs| {
            let report = crate::posture::evaluate(&crate::posture::Inputs {
                control: Some(cs),
                control_note: "",
                node: result.ok(),
                server: c.server,
                now,
            });
            (cs, report)
        });
        let read = match &evaluated {
            Ok((cs, report)) => Ok((*cs, report)),
            Err(e) => Err(*e),
        };
        let (events, kc) = control::events(known, result.ok(), read, c.source, now);
        if let (Ok((cs, report)), Some(base)) = (
            read,
            out.events
                .iter_mut()
                .find(|e| e.kind == EventKind::MonitorBaseline),
        ) {
            base.detail = invisible_note(cs, result.ok());
            base.detail += &format!(
                "\n\nPosture: {} (`tailscale-monitor posture` for the report).{}",
                report.summary(),
                report
                    .findings
                    .iter()
                    .filter(|f| f.status == crate::model::posture::Status::Fail)
                    .map(|f| format!(
                        "\n- {} [{}] {}: {}",
                        f.id,
                        f.severity.as_str(),
                        f.title,
                        f.evidence
                    ))
                    .collect::<String>()
            );
        }
        let tailnet = result.map(|s| s.tailnet.clone()).unwrap_or_default();
        out.events.extend(events.into_iter().map(|mut e| {
            e.tailnet.clone_from(&tailnet);
            e
        }));
        out.control = kc;
    }
    (out, h, seen)
}

/// One read of the control plane, for [`pass_outcome`].
#[derive(Clone, Copy)]
pub struct ControlRead<'a> {
    /// How messages name the source ("headscale API https://…").
    pub source: &'a str,
    pub result: Result<&'a crate::model::control::ControlSnapshot, &'a str>,
    /// This server's facts for the posture checks (`None`: not collected).
    pub server: Option<&'a crate::model::posture::ServerFacts>,
}

/// For the baseline: the devices only the control plane lists, and the policy line that would
/// let this server see them (README "What one node can see").
fn invisible_note(cs: &crate::model::control::ControlSnapshot, node: Option<&Snapshot>) -> String {
    let hidden: Vec<String> = cs
        .devices
        .values()
        .filter(|d| node.is_none_or(|n| !n.devices.contains_key(&d.id)))
        .map(|d| format!("{} ({}, {})", d.hostname, d.user, d.addresses.join(", ")))
        .collect();
    if hidden.is_empty() {
        return "Every device the control plane lists is visible to this server.".into();
    }
    let me = node
        .and_then(|n| n.self_device())
        .map(|d| {
            d.tags
                .first()
                .cloned()
                .or_else(|| d.addresses.first().cloned())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "tag:monitor".into());
    format!(
        "Not visible to this server ({}): {}. Its ACLs do not connect them; to watch them from the node view too, add to the policy: {{\"action\": \"accept\", \"src\": [\"{me}\"], \"dst\": [\"*:1\"]}}",
        hidden.len(),
        hidden.join("; ")
    )
}

fn node_outcome(
    known: &Known,
    health: &Health,
    result: Result<&Snapshot, &str>,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (Outcome, Health, bool) {
    match result {
        Ok(snap) => {
            let mut out = diff(known, snap, policy, now);
            if health.down_since.is_some() {
                out.events
                    .insert(0, source_recovered(health.down_since, now));
            }
            let (part_events, parts) = parts::evaluate(&health.parts, snap, now);
            out.events.extend(part_events);
            for e in &mut out.events {
                e.tailnet.clone_from(&snap.tailnet);
            }
            let h = Health {
                down_since: None,
                last_error: String::new(),
                last_ok: Some(now),
                parts,
            };
            (out, h, true)
        }
        Err(e) => {
            let mut out = Outcome::default();
            let down_since = match health.down_since {
                Some(t) => Some(t),
                None => {
                    out.events.push(source_down(e, now));
                    Some(now)
                }
            };
            let h = Health {
                down_since,
                last_error: e.to_owned(),
                last_ok: health.last_ok,
                parts: health.parts.clone(),
            };
            (out, h, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeKey, Severity};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn now() -> DateTime<Utc> {
        t("2026-11-24T12:00:00Z")
    }

    #[test]
    fn ascending_lookups_find_every_key_and_only_those() {
        let map: BTreeMap<&str, i32> = [("b", 2), ("d", 4), ("f", 6)].into();
        let mut a = Ascending::new(&map);
        let got: Vec<Option<i32>> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|k| a.get(k).copied())
            .collect();
        assert_eq!(
            got,
            [None, Some(2), None, Some(4), None, Some(6), None],
            "a merge walk must agree with a lookup per key"
        );
    }

    #[test]
    fn stored_device_times_read_strict_and_lenient_forms() {
        let mut d = dev("n1", "a", 1, "100.64.0.1");
        d.key_expiry = Some(t("2027-01-02T03:04:05.123456789Z"));
        d.created = None;
        let json = serde_json::to_string(&d).unwrap();
        let back: Device = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d, "what serde writes reads back");
        // The lenient form chrono also accepts (a space, no `T`) still reads, and a record
        // without the fields (an older store) reads them as absent.
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["key_expiry"] = "2027-01-02 03:04:05Z".into();
        v.as_object_mut().unwrap().remove("created");
        let back: Device = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.key_expiry, Some(t("2027-01-02T03:04:05Z")));
        assert_eq!(back.created, None);
        v["key_expiry"] = "next tuesday".into();
        let err = serde_json::from_value::<Device>(v).unwrap_err().to_string();
        assert!(
            err.contains("input contains invalid characters") || err.contains("invalid"),
            "{err}"
        );
    }

    fn dev(id: &str, host: &str, user: i64, ip: &str) -> Device {
        Device {
            id: StableNodeId(id.into()),
            node_id: None,
            node_key: NodeKey(format!("nodekey:{id}")),
            hostname: host.into(),
            dns_name: format!("{host}.tail1.ts.net."),
            os: "linux".into(),
            user_id: UserId(user),
            addresses: vec![ip.into()],
            tags: vec![],
            routes: vec![],
            exit_node: false,
            key_expiry: Some(t("2027-06-01T00:00:00Z")),
            expired: false,
            created: Some(t("2026-01-01T00:00:00Z")),
            is_self: false,
            shared: false,
        }
    }

    fn user(id: i64, login: &str) -> User {
        User {
            id: UserId(id),
            login: login.into(),
            display_name: login.to_uppercase(),
        }
    }

    fn snapshot(devices: &[Device], users: &[User]) -> Snapshot {
        Snapshot {
            taken_at: now(),
            self_id: StableNodeId("nSELF".into()),
            dns_suffix: "tail1.ts.net".into(),
            devices: devices.iter().map(|d| (d.id.clone(), d.clone())).collect(),
            users: users.iter().map(|u| (u.id, u.clone())).collect(),
            ..Snapshot::default()
        }
    }

    /// Applies an outcome the way the store does.
    fn apply(known: &mut Known, out: &Outcome) {
        known.baseline_done = true;
        for d in &out.devices {
            known.devices.insert(d.device.id.clone(), d.clone());
        }
        for u in &out.users {
            known.users.insert(u.user.id, u.clone());
        }
    }

    fn base() -> (Known, Vec<Device>, Vec<User>) {
        let devices = vec![
            dev("nSELF", "web-01", 1, "100.64.0.1"),
            dev("nA", "alice-laptop", 2, "100.64.0.2"),
            dev("nB", "bob-desktop", 3, "100.64.0.3"),
        ];
        let users = vec![
            user(1, "tagged-devices"),
            user(2, "alice@x"),
            user(3, "bob@x"),
        ];
        let mut known = Known::default();
        let out = diff(
            &known,
            &snapshot(&devices, &users),
            &Policy::default(),
            now(),
        );
        apply(&mut known, &out);
        (known, devices, users)
    }

    fn kinds(out: &Outcome) -> Vec<EventKind> {
        out.events.iter().map(|e| e.kind).collect()
    }

    fn run(known: &Known, devices: &[Device], users: &[User]) -> Outcome {
        diff(known, &snapshot(devices, users), &Policy::default(), now())
    }

    /// tailscaled 1.104 sorts and de-duplicates advertised routes and requested tags: a record
    /// written from an older daemon, in another order or with a repeat, is the same set.
    #[test]
    fn routes_and_tags_in_another_order_or_without_a_repeat_are_no_change() {
        let (mut known, mut devices, users) = base();
        let old = &mut known
            .devices
            .get_mut(&StableNodeId("nA".into()))
            .unwrap()
            .device;
        old.tags = vec!["tag:b".into(), "tag:a".into(), "tag:a".into()];
        old.routes = vec![
            "10.1.0.0/16".into(),
            "10.0.0.0/8".into(),
            "10.1.0.0/16".into(),
        ];
        old.addresses = vec!["fd7a:115c:a1e0::2".into(), "100.64.0.2".into()];
        devices[1].tags = vec!["tag:a".into(), "tag:b".into()];
        devices[1].routes = vec!["10.0.0.0/8".into(), "10.1.0.0/16".into()];
        devices[1].addresses = vec!["100.64.0.2".into(), "fd7a:115c:a1e0::2".into()];
        let out = run(&known, &devices, &users);
        assert!(out.events.is_empty(), "{:?}", kinds(&out));
        assert_eq!(
            out.devices.len(),
            1,
            "the canonical form is recorded, silently"
        );
        devices[1].tags.push("tag:c".into());
        assert_eq!(
            kinds(&run(&known, &devices, &users)),
            [EventKind::DeviceTagsChanged]
        );
    }

    /// `CurrentTailnet.StableID` (1.104): pinned when first seen; a change is critical; empty
    /// (Headscale, older daemons) is never a change.
    #[test]
    fn a_node_moved_to_another_tailnet_is_critical() {
        let (mut known, devices, users) = base();
        let mut snap = snapshot(&devices, &users);
        assert!(diff(&known, &snap, &Policy::default(), now())
            .tailnet_id
            .is_none());
        snap.tailnet_id = "T1234CNTRL".into();
        let out = diff(&known, &snap, &Policy::default(), now());
        assert!(out.events.is_empty());
        known.tailnet_id = out.tailnet_id;
        assert!(diff(&known, &snap, &Policy::default(), now())
            .tailnet_id
            .is_none());
        snap.tailnet_id = String::new();
        assert!(diff(&known, &snap, &Policy::default(), now())
            .events
            .is_empty());
        snap.tailnet_id = "TEVILCNTRL".into();
        let out = diff(&known, &snap, &Policy::default(), now());
        assert_eq!(kinds(&out), [EventKind::NodeTailnetChanged]);
        assert_eq!(out.events[0].severity, Severity::Critical);
        assert_eq!(out.events[0].changes[0].old, "T1234CNTRL");
    }

    #[test]
    fn first_snapshot_is_one_baseline_event_listing_everything() {
        let devices = vec![
            dev("nSELF", "web-01", 1, "100.64.0.1"),
            dev("nA", "a", 2, "100.64.0.2"),
        ];
        let users = vec![user(1, "t"), user(2, "alice@x")];
        let out = diff(
            &Known::default(),
            &snapshot(&devices, &users),
            &Policy::default(),
            now(),
        );
        assert_eq!(kinds(&out), vec![EventKind::MonitorBaseline]);
        assert_eq!(out.events[0].devices.len(), 2);
        assert_eq!(out.events[0].users.len(), 2);
        assert_eq!(out.events[0].severity, Severity::Info);
        assert_eq!(out.devices.len(), 2);
        assert_eq!(out.users.len(), 2);
    }

    #[test]
    fn unchanged_tailnet_yields_nothing() {
        let (known, devices, users) = base();
        let out = run(&known, &devices, &users);
        assert_eq!(out, Outcome::default());
    }

    /// One row per event kind the core produces: a change to the base tailnet and what it raises.
    #[test]
    fn every_kind() {
        type Mutate = fn(&mut Vec<Device>, &mut Vec<User>);
        let table: Vec<(&str, Mutate, Vec<EventKind>)> = vec![
            (
                "new device of an existing user",
                |d, _| d.push(dev("nC", "alice-phone", 2, "100.64.0.4")),
                vec![EventKind::DeviceNew],
            ),
            (
                "new user with a device",
                |d, u| {
                    u.push(user(4, "mallory@evil"));
                    d.push(dev("nM", "m", 4, "100.64.0.9"));
                },
                vec![EventKind::UserNew, EventKind::DeviceNew],
            ),
            (
                "re-added under the same hostname and IP",
                |d, _| {
                    d.retain(|x| x.id.0 != "nB");
                    d.push(dev("nB2", "bob-desktop", 3, "100.64.0.3"));
                },
                vec![EventKind::DeviceNew, EventKind::DeviceRemoved],
            ),
            (
                "rekey",
                |d, _| d[1].node_key = NodeKey("nodekey:new".into()),
                vec![EventKind::DeviceRekeyed],
            ),
            (
                "rename",
                |d, _| d[1].hostname = "alice-work".into(),
                vec![EventKind::DeviceRenamed],
            ),
            (
                "owner change",
                |d, _| d[1].user_id = UserId(3),
                vec![EventKind::DeviceOwnerChanged],
            ),
            (
                "addresses",
                |d, _| d[1].addresses = vec!["100.64.0.77".into()],
                vec![EventKind::DeviceAddressesChanged],
            ),
            (
                "tags",
                |d, _| d[1].tags = vec!["tag:prod".into()],
                vec![EventKind::DeviceTagsChanged],
            ),
            (
                "subnet routes",
                |d, _| d[2].routes = vec!["10.0.0.0/8".into()],
                vec![EventKind::DeviceRoutesChanged],
            ),
            (
                "exit node",
                |d, _| {
                    d[2].routes = vec!["0.0.0.0/0".into(), "::/0".into()];
                    d[2].exit_node = true;
                },
                vec![EventKind::DeviceExitNodeOffered],
            ),
            (
                "key expiry disabled",
                |d, _| d[1].key_expiry = None,
                vec![EventKind::DeviceKeyExpiryDisabled],
            ),
            (
                "key expiring within 14 days",
                |d, _| d[1].key_expiry = Some(t("2026-11-30T00:00:00Z")),
                vec![EventKind::DeviceKeyExpiring],
            ),
            (
                "expired",
                |d, _| d[1].expired = true,
                vec![EventKind::DeviceExpired],
            ),
            (
                "device removed",
                |d, _| d.retain(|x| x.id.0 != "nA"),
                vec![EventKind::DeviceRemoved],
            ),
            (
                "user removed with its device",
                |d, u| {
                    d.retain(|x| x.id.0 != "nB");
                    u.retain(|x| x.id != UserId(3));
                },
                vec![EventKind::DeviceRemoved, EventKind::UserRemoved],
            ),
            (
                "volatile change only (OS string)",
                |d, _| d[1].os = "linux-6.1".into(),
                vec![],
            ),
        ];
        for (name, mutate, want) in table {
            let (known, mut devices, mut users) = base();
            mutate(&mut devices, &mut users);
            let out = run(&known, &devices, &users);
            assert_eq!(kinds(&out), want, "{name}");
            for e in &out.events {
                assert_eq!(e.severity, e.kind.severity(), "{name}");
                if e.kind.as_str().starts_with("device.") {
                    assert!(e.device.is_some(), "{name}: event names its device");
                }
            }
            // Applying the outcome makes the same snapshot quiet: alerts are raised once.
            let mut known = known;
            apply(&mut known, &out);
            assert_eq!(
                run(&known, &devices, &users).events,
                vec![],
                "{name}: repeated"
            );
        }
    }

    #[test]
    fn reregistration_names_the_old_device() {
        let (known, mut devices, users) = base();
        devices.retain(|x| x.id.0 != "nB");
        devices.push(dev("nB2", "bob-desktop", 3, "100.64.0.3"));
        let out = run(&known, &devices, &users);
        let new = out
            .events
            .iter()
            .find(|e| e.kind == EventKind::DeviceNew)
            .unwrap();
        assert!(new.detail.contains("nB"), "{}", new.detail);
        assert_eq!(new.severity, Severity::Critical);
    }

    #[test]
    fn a_known_device_that_returns_is_not_new() {
        let (mut known, devices, users) = base();
        let gone: Vec<Device> = devices.iter().filter(|d| d.id.0 != "nA").cloned().collect();
        let out = run(&known, &gone, &users);
        apply(&mut known, &out);
        let back = run(&known, &devices, &users);
        assert_eq!(kinds(&back), vec![]);
        assert_eq!(back.devices.len(), 1, "the record is marked present again");
    }

    #[test]
    fn key_expiring_threshold_is_configurable() {
        let (known, mut devices, users) = base();
        devices[1].key_expiry = Some(t("2026-12-20T00:00:00Z")); // 26 days out
        assert_eq!(kinds(&run(&known, &devices, &users)), vec![]);
        let policy = Policy {
            key_expiry_warn: Duration::days(30),
            ..Policy::default()
        };
        let out = diff(&known, &snapshot(&devices, &users), &policy, now());
        assert_eq!(kinds(&out), vec![EventKind::DeviceKeyExpiring]);
    }

    #[test]
    fn monitor_health_events() {
        let down = source_down("LocalAPI /x: connection refused", now());
        assert_eq!(down.kind, EventKind::MonitorSourceDown);
        assert_eq!(down.severity, Severity::Critical);
        assert!(down.detail.contains("refused"));
        let up = source_recovered(Some(t("2026-11-24T11:59:00Z")), now());
        assert_eq!(up.kind, EventKind::MonitorSourceRecovered);
        assert!(up.detail.contains("60 s"));
    }

    #[test]
    fn outage_is_reported_once_and_changes_nothing() {
        let (known, devices, users) = base();
        let policy = Policy::default();
        let (out, h, seen) = pass_outcome(
            &known,
            &Health::default(),
            Err("refused"),
            None,
            &policy,
            now(),
        );
        assert_eq!(kinds(&out), vec![EventKind::MonitorSourceDown]);
        assert!(
            out.devices.is_empty() && out.users.is_empty(),
            "no removals"
        );
        assert!(!seen);
        let (again, h2, _) = pass_outcome(&known, &h, Err("refused"), None, &policy, now());
        assert_eq!(kinds(&again), vec![], "raised once per outage");
        assert_eq!(h2.down_since, h.down_since);
        let mut joined = devices.clone();
        joined.push(dev("nNEW", "joined-meanwhile", 2, "100.64.0.50"));
        let snap = snapshot(&joined, &users);
        let (back, h3, seen) = pass_outcome(&known, &h2, Ok(&snap), None, &policy, now());
        assert_eq!(
            kinds(&back),
            vec![EventKind::MonitorSourceRecovered, EventKind::DeviceNew]
        );
        assert!(seen && h3.down_since.is_none());
    }

    fn with_handshake(devices: &[Device], users: &[User], id: &str, at: &str) -> Snapshot {
        let mut s = snapshot(devices, users);
        s.conns.insert(
            StableNodeId(id.into()),
            crate::model::PeerConn {
                last_handshake: Some(t(at)),
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn peer_connected_alerts_new_devices_and_records_known_ones() {
        let (mut known, mut devices, users) = base();
        let policy = Policy::default();
        // A device from the baseline connects: logged, not sent.
        let out = diff(
            &known,
            &with_handshake(&devices, &users, "nA", "2026-11-24T11:59:00Z"),
            &policy,
            now(),
        );
        assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
        assert!(out.events[0].record_only);
        apply(&mut known, &out);
        // Handshakes every 2 minutes of an ongoing session are not new connections.
        let out = diff(
            &known,
            &with_handshake(&devices, &users, "nA", "2026-11-24T12:01:00Z"),
            &policy,
            now(),
        );
        assert_eq!(kinds(&out), vec![]);
        assert_eq!(out.devices.len(), 1, "the newer handshake is recorded");
        apply(&mut known, &out);
        // After the quiet period, it is a new connection again.
        let out = diff(
            &known,
            &with_handshake(&devices, &users, "nA", "2026-11-24T13:30:00Z"),
            &policy,
            now(),
        );
        assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
        // A device that joined after the baseline connects: alerted.
        devices.push(dev("nNEW", "newcomer", 2, "100.64.0.8"));
        let out = run(&known, &devices, &users);
        apply(&mut known, &out);
        let out = diff(
            &known,
            &with_handshake(&devices, &users, "nNEW", "2026-11-24T11:59:30Z"),
            &policy,
            now(),
        );
        assert_eq!(kinds(&out), vec![EventKind::PeerConnected]);
        assert!(!out.events[0].record_only);
        let all = Policy {
            connect_alert: ConnectAlert::None,
            ..Policy::default()
        };
        let (known, devices, users) = base();
        let out = diff(
            &known,
            &with_handshake(&devices, &users, "nB", "2026-11-24T11:59:00Z"),
            &all,
            now(),
        );
        assert!(out.events[0].record_only);
    }

    #[test]
    fn severities_are_the_documented_ones() {
        use EventKind::*;
        for k in [
            UserNew,
            DeviceNew,
            DeviceOwnerChanged,
            MonitorSourceDown,
            MonitorDeliveryFailed,
            MonitorStoreFailed,
        ] {
            assert_eq!(k.severity(), Severity::Critical, "{k}");
        }
        for k in [
            DeviceRekeyed,
            DeviceRenamed,
            DeviceRoutesChanged,
            DeviceExitNodeOffered,
            DeviceKeyExpiryDisabled,
        ] {
            assert_eq!(k.severity(), Severity::Warning, "{k}");
        }
        for k in [
            DeviceRemoved,
            UserRemoved,
            PeerConnected,
            MonitorBaseline,
            MonitorSourceRecovered,
        ] {
            assert_eq!(k.severity(), Severity::Info, "{k}");
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
