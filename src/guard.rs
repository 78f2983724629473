//! The guard, monitor side: decides the set of addresses let in (the approved devices' current
//! addresses, [`crate::model::guard::desired`]) and asks the privileged relay to put it in force;
//! reads back what the kernel dropped and raises `guard.blocked` once per device and hour.
//!
//! It never holds `CAP_NET_ADMIN`: the relay applies the set (and validates it). What it applied
//! is noted in the store (`guard_applied`), so that a pass that changes nothing costs no
//! request, and `check`, `run` and the `guard` commands agree on it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::Config;
use crate::model::guard::{desired, Blocked, Enforced, GuardSet};
use crate::model::route::Route;
use crate::model::{Event, EventKind};
use crate::privileged::{self, RelayError};
use crate::store::{BlockedRow, Store, StoreError};

/// How long the relay has to answer.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `run` reads what the guard dropped.
pub const POLL: Duration = Duration::from_secs(2);
/// `guard.blocked` is raised at most once per device in this window.
pub const BLOCKED_WINDOW: chrono::Duration = chrono::Duration::hours(1);

const APPLIED: &str = "guard_applied";
const UNENFORCED: &str = "guard_unenforced";
/// The counters of the last poll that looked at them.
const SEEN: &str = "guard_seen";
/// Set by `guard off`: nothing is enforced until `guard on` or `guard init`.
pub const OFF: &str = "guard_off";
/// Set by `guard init`: until then `enforce` locks nobody out (the owner has not reviewed the
/// devices yet) and says so.
pub const INITIALIZED: &str = "guard_initialized";

/// Why the guard is not in force, as said once per reason.
fn unenforced(
    store: &mut Store,
    routes: &[Route],
    key: &str,
    why: &str,
    fix: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if store.guard_note(UNENFORCED)?.as_deref() == Some(key) {
        return Ok(Vec::new());
    }
    warn!(reason = %why, fix = %fix, "the guard is not in force");
    let mut e = Event::new(
        EventKind::GuardUnenforced,
        now,
        format!("The guard is NOT protecting this server: {why}"),
    );
    e.fix = fix.to_owned();
    store.record_event(routes, e.clone())?;
    store.set_guard_note(UNENFORCED, Some(key))?;
    Ok(vec![e])
}

/// A short hex digest of `json`'s serialization, to tell "the same as last time" by a note.
fn digest(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_vec(value).expect("serializes");
    Sha256::digest(json)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fingerprint(interface: &str, set: &GuardSet) -> String {
    digest(&(interface, set))
}

/// The set the guard should hold now.
pub fn wanted(store: &mut Store) -> Result<GuardSet, StoreError> {
    let approved = store.approved_keys()?;
    let known = store.known_now()?;
    Ok(desired(known.devices.values(), &approved))
}

/// Why the relay failed, and what to do about it.
fn relay_fix(e: &RelayError) -> &'static str {
    match e {
        RelayError::Absent(_) => "enable the privileged relay: `systemctl enable --now tailscale-monitor-privileged.socket` (README: The guard)",
        RelayError::Denied(_) => "add the monitor's user to the relay's group (`usermod -aG tailscale-monitor tailscale-monitor`) and restart it",
        RelayError::Failed { .. } => "see the relay's log (`journalctl -u 'tailscale-monitor-privileged@*'`); is nftables installed (`apt install nftables`)?",
    }
}

/// After a pass (and after `guard approve`/`revoke`/`on`): puts the current set in force, or
/// removes the table when `mode = "off"` and it was applied. `tun` is `/status` `TUN` of the
/// pass (`None`: not read). Returns the events it recorded.
pub async fn enforce(
    store: &mut Store,
    cfg: &Config,
    tun: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let routes = cfg.routes();
    let socket = &cfg.source.privileged_socket;
    if !cfg.guard.enforcing() || store.guard_note(OFF)?.is_some() {
        if store.guard_note(APPLIED)?.is_some() {
            match privileged::guard_remove(socket, RELAY_TIMEOUT).await {
                Ok(()) => {
                    info!("guard: enforcement removed (mode is off)");
                    store.set_guard_note(APPLIED, None)?;
                    store.clear_blocked()?;
                }
                Err(e) => {
                    warn!(error = %e, "guard: cannot remove the table; retrying at the next pass")
                }
            }
        }
        return Ok(Vec::new());
    }
    if tun == Some(false) {
        return unenforced(
            store,
            &routes,
            "userspace",
            "tailscaled runs in userspace networking mode (`/status` TUN is false), so there is no kernel interface to filter; no table was created",
            "run tailscaled with a TUN device (the default; not `--tun=userspace-networking`), or set `[guard] mode = \"off\"`",
            now,
        );
    }
    if store.guard_note(INITIALIZED)?.is_none() {
        return unenforced(
            store,
            &routes,
            "uninitialized",
            "`[guard] mode = \"enforce\"` is set, but no device has been approved yet",
            "review the devices (`tailscale-monitor devices`), then run `tailscale-monitor guard init` to approve those known now and put the guard in force",
            now,
        );
    }
    let set = wanted(store)?;
    let print = fingerprint(&cfg.guard.interface, &set);
    if store.guard_note(APPLIED)?.as_deref() == Some(print.as_str()) {
        return Ok(Vec::new());
    }
    match privileged::guard_apply(socket, &cfg.guard.interface, &set, RELAY_TIMEOUT).await {
        Ok(()) => {
            info!(interface = %cfg.guard.interface, addresses = set.len(), "guard: set in force");
            store.set_guard_note(APPLIED, Some(&print))?;
            let mut out = Vec::new();
            if store.guard_note(UNENFORCED)?.is_some() {
                let e = Event::new(
                    EventKind::GuardEnforced,
                    now,
                    format!(
                        "The guard is in force again: {} approved address(es) let in on {}",
                        set.len(),
                        cfg.guard.interface
                    ),
                );
                store.record_event(&routes, e.clone())?;
                store.set_guard_note(UNENFORCED, None)?;
                out.push(e);
            }
            Ok(out)
        }
        Err(e) => unenforced(
            store,
            &routes,
            "relay",
            &format!("the set could not be applied: {e}"),
            relay_fix(&e),
            now,
        ),
    }
}

/// Reads what the guard dropped (and that its table is still what was applied); raises
/// `guard.blocked` for a device whose packets grew, at most once per [`BLOCKED_WINDOW`].
pub async fn poll(
    store: &mut Store,
    cfg: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if !cfg.guard.enforcing()
        || store.guard_note(OFF)?.is_some()
        || store.guard_note(APPLIED)?.is_none()
    {
        return Ok(Vec::new());
    }
    let enforced = match privileged::guard_read(&cfg.source.privileged_socket, RELAY_TIMEOUT).await
    {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "guard: cannot read the table");
            return Ok(Vec::new());
        }
    };
    let mut out = Vec::new();
    let table = fingerprint(&enforced.interface, &enforced.set);
    let applied = store.guard_note(APPLIED)?;
    // What was applied last is in force: nothing to compute (a newer set is the next pass's).
    if !enforced.present || applied.as_deref() != Some(table.as_str()) {
        let ours = fingerprint(&cfg.guard.interface, &wanted(store)?);
        if enforced.present && table == ours {
            // Another process (`check`, a `guard` command) applied the newest set: note it.
            store.set_guard_note(APPLIED, Some(&ours))?;
        } else {
            tampered(store, cfg, &enforced, now, &mut out).await?;
        }
    }
    out.extend(blocked(store, cfg, &enforced, now)?);
    Ok(out)
}

/// The table is neither what was applied nor what should be: changed behind the monitor's back
/// (`nft flush ruleset`, another tool). Said, and put back.
async fn tampered(
    store: &mut Store,
    cfg: &Config,
    enforced: &Enforced,
    now: DateTime<Utc>,
    out: &mut Vec<Event>,
) -> Result<(), StoreError> {
    warn!(
        present = enforced.present,
        "guard: the table is not what was applied; applying it again"
    );
    store.set_guard_note(APPLIED, None)?;
    let what = if enforced.present {
        "changed"
    } else {
        "removed"
    };
    let mut e = Event::new(
        EventKind::GuardUnenforced,
        now,
        format!("The guard's nftables table was {what} outside the monitor; it is put back"),
    );
    e.fix = "someone with root on this server changed the firewall: find out who (`journalctl`, shell histories)".into();
    store.record_event(&cfg.routes(), e.clone())?;
    store.set_guard_note(UNENFORCED, Some("tampered"))?;
    out.push(e);
    out.extend(enforce(store, cfg, None, now).await?);
    Ok(())
}

fn blocked(
    store: &mut Store,
    cfg: &Config,
    enforced: &Enforced,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if enforced.blocked.is_empty() {
        return Ok(Vec::new());
    }
    // Elements stay for an hour after their last packet: most polls see the same counters, and
    // cost no more than comparing them with the last poll's.
    let seen = digest(&enforced.blocked);
    if store.guard_note(SEEN)?.as_deref() == Some(seen.as_str()) {
        return Ok(Vec::new());
    }
    store.set_guard_note(SEEN, Some(&seen))?;
    let known = store.known_now()?.clone();
    // Who holds each address now (else who held it last).
    let mut owner: BTreeMap<String, &crate::model::Device> = BTreeMap::new();
    for k in known.devices.values() {
        for a in &k.device.addresses {
            if !k.removed || !owner.contains_key(a) {
                owner.insert(a.clone(), &k.device);
            }
        }
    }
    // One group per device (its IPv4 and IPv6 together), else per address.
    let mut groups: BTreeMap<String, Vec<&Blocked>> = BTreeMap::new();
    for b in &enforced.blocked {
        let addr = b.addr.to_string();
        let key = owner.get(&addr).map_or(addr, |d| d.id.0.clone());
        groups.entry(key).or_default().push(b);
    }
    let rows: BTreeMap<String, BlockedRow> = store
        .blocked()?
        .into_iter()
        .map(|r| (r.addr.clone(), r))
        .collect();
    let mut changed = Vec::new();
    let mut events = Vec::new();
    for (key, hits) in groups {
        let packets = hits.iter().fold(0u64, |n, b| n.saturating_add(b.packets));
        let mut row = rows.get(&key).cloned().unwrap_or(BlockedRow {
            addr: key.clone(),
            device_id: None,
            first: now,
            alerted: None,
            packets: 0,
        });
        // Elements expire after an hour of silence: fewer packets than recorded is a new run.
        let base = if packets < row.packets {
            0
        } else {
            row.packets
        };
        if packets == base {
            continue;
        }
        let device = hits
            .first()
            .and_then(|b| owner.get(&b.addr.to_string()))
            .copied();
        row.device_id = device.map(|d| d.id.0.clone());
        let due = row.alerted.is_none_or(|t| now - t >= BLOCKED_WINDOW);
        if due {
            let who = device.map_or_else(
                || format!("{} (an address no known device holds)", hits[0].addr),
                |d| {
                    let login = known
                        .users
                        .get(&d.user_id)
                        .map_or("an unknown user", |u| u.user.login.as_str());
                    format!("{} ({}) of {login}", d.display_name(), hits[0].addr)
                },
            );
            let ports: Vec<String> = hits
                .iter()
                .map(|b| {
                    let port = if b.port == 0 {
                        String::new()
                    } else {
                        format!("/{}", b.port)
                    };
                    format!("{}{port} ({} packets)", b.proto, b.packets)
                })
                .collect();
            let mut e = Event::new(
                EventKind::GuardBlocked,
                now,
                format!(
                    "The guard dropped {who} trying to reach this server or route through it: {}",
                    ports.join(", ")
                ),
            );
            e.device = device.cloned();
            e.detail = format!(
                "{packets} packet(s) dropped since {}; the device is not approved at this server.",
                row.first.format("%Y-%m-%d %H:%M:%S UTC")
            );
            if let Some(d) = device {
                e.fix = format!(
                    "If you know this device: `tailscale-monitor guard approve {}`",
                    d.id.0
                );
            }
            store.record_event(&cfg.routes(), e.clone())?;
            events.push(e);
            row.alerted = Some(now);
        }
        row.packets = packets;
        changed.push(row);
    }
    store.save_blocked(&changed)?;
    Ok(events)
}

/// The local user running a command: the login user (`/proc/self/loginuid`, which `sudo` and
/// `runuser` keep) and, when different, the user it runs as.
pub fn local_user() -> String {
    let name = |uid: u32| -> String {
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers; `buf` outlives the call; read only when `out` is set.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return format!("uid {uid}");
        }
        // SAFETY: getpwuid_r filled `pw_name` with a NUL-terminated string inside `buf`.
        let s = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        crate::sanitize::line(&s.to_string_lossy(), 64)
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let login = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX);
    match login {
        Some(l) if l != uid => format!("{} (as {})", name(l), name(uid)),
        _ => name(uid),
    }
}
