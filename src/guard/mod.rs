//! The guard, monitor side: the I/O around the core's decisions ([`crate::diff::guard`]). After
//! each pass it notes the doors tailscaled answers itself ([`doors`]), asks the privileged relay
//! to put the set in force, and reads back what the kernel dropped (`guard.blocked`). Each step
//! writes its state, its records and its events in one transaction.
//!
//! It never holds `CAP_NET_ADMIN`: the relay applies the set (and validates it). What it applied
//! is in the guard's state (`applied`), so that a pass that changes nothing costs no request, and
//! `check`, `run` and the `guard` commands agree on it.

pub mod doors;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::config::Config;
use crate::diff::guard::blocked::blocked_events;
use crate::diff::guard::set::desired;
use crate::model::guard::{Enforced, GuardSet, GuardState, LeftOut};
use crate::model::state::GuardCommit;
use crate::model::{Event, EventKind, Snapshot, StableNodeId};
use crate::privileged::{self, RelayError};
use crate::store::{Store, StoreError};

/// How long the relay has to answer.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `run` reads what the guard dropped.
pub const POLL: Duration = Duration::from_secs(2);
/// `guard.blocked` is raised at most once per device in this window.
pub const BLOCKED_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// One guard step's state, records and events, written together by [`Step::commit`].
struct Step {
    state: GuardState,
    commit: GuardCommit,
    events: Vec<Event>,
}

impl Step {
    fn load(store: &Store) -> Result<Step, StoreError> {
        let state = store.guard_state()?;
        Ok(Step {
            commit: GuardCommit {
                state: state.clone(),
                ..GuardCommit::default()
            },
            state,
            events: Vec::new(),
        })
    }

    fn event(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Writes what changed (nothing when nothing did).
    fn commit(
        self,
        store: &mut Store,
        cfg: &Config,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, StoreError> {
        let changed = self.state != self.commit.state
            || !self.commit.blocked.is_empty()
            || self.commit.clear_blocked
            || !self.events.is_empty();
        if changed {
            let commit = GuardCommit {
                state: self.state,
                ..self.commit
            };
            store.record_guard(&cfg.routes(), commit, self.events.clone(), now)?;
        }
        Ok(self.events)
    }

    /// Says once per reason why the guard is not in force.
    fn unenforced(&mut self, key: &str, why: &str, fix: &str, now: DateTime<Utc>) {
        if self.state.unenforced.as_deref() == Some(key) {
            return;
        }
        warn!(reason = %why, fix = %fix, "the guard is not in force");
        let mut e = Event::new(
            EventKind::GuardUnenforced,
            now,
            format!("The guard is NOT protecting this server: {why}"),
        );
        e.fix = fix.to_owned();
        self.event(e);
        self.state.unenforced = Some(key.to_owned());
    }
}

/// A short hex digest of `value`'s serialization, to tell "the same as last time".
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

/// The set the guard should hold now, and what was left out of it and why.
pub fn wanted(store: &mut Store) -> Result<(GuardSet, Vec<LeftOut>), StoreError> {
    let approvals = store.approvals_by_device()?;
    let exit = store.guard_state()?.exit_node.map(StableNodeId);
    let known = store.known_now()?;
    Ok(desired(known.devices.values(), &approvals, exit.as_ref()))
}

/// Why the relay failed, and what to do about it.
pub fn relay_fix(e: &RelayError) -> &'static str {
    match e {
        RelayError::Absent(_) => "enable the privileged relay: `systemctl enable --now tailscale-monitor-privileged.socket` (README: The guard)",
        RelayError::Denied(_) => "add the monitor's user to the relay's group (`usermod -aG tailscale-monitor tailscale-monitor`) and restart it",
        RelayError::Failed { .. } => "see the relay's log (`journalctl -u 'tailscale-monitor-privileged@*'`); is nftables installed (`apt install nftables`)?",
    }
}

/// The guard's part of a pass that read `snap`: the doors, then the set, then the counters.
pub async fn after_pass(
    store: &mut Store,
    cfg: &Config,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut out = doors::observe(store, cfg, snap, now).await?;
    out.extend(enforce(store, cfg, snap.tun, now).await?);
    out.extend(poll(store, cfg, now).await?);
    Ok(out)
}

/// Puts the current set in force, or removes the table when `mode = "off"` and it was applied.
/// `tun` is `/status` `TUN` (`None`: not read). Returns the events it recorded.
pub async fn enforce(
    store: &mut Store,
    cfg: &Config,
    tun: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut step = Step::load(store)?;
    let socket = &cfg.source.privileged_socket;
    if !cfg.guard.enforcing() || step.state.off.is_some() {
        if step.state.applied.is_some() {
            match privileged::guard_remove(socket, RELAY_TIMEOUT).await {
                Ok(()) => {
                    info!("guard: enforcement removed (mode is off)");
                    step.state.applied = None;
                    step.state.doors.clear();
                    step.commit.clear_blocked = true;
                }
                Err(e) => {
                    warn!(error = %e, "guard: cannot remove the table; retrying at the next pass")
                }
            }
        }
        return step.commit(store, cfg, now);
    }
    if tun == Some(false) {
        step.unenforced(
            "userspace",
            "tailscaled runs in userspace networking mode (`/status` TUN is false), so there is no kernel interface to filter, and every loopback listener on this host is reachable from the tailnet; no table was created",
            "run tailscaled with a TUN device (the default; not `--tun=userspace-networking`), or set `[guard] mode = \"off\"`",
            now,
        );
        return step.commit(store, cfg, now);
    }
    if step.state.initialized.is_none() {
        step.unenforced(
            "uninitialized",
            "`[guard] mode = \"enforce\"` is set, but no device has been approved yet",
            "review the devices (`tailscale-monitor devices`), then run `tailscale-monitor guard init` to approve those known now and put the guard in force",
            now,
        );
        return step.commit(store, cfg, now);
    }
    let (set, _) = wanted(store)?;
    let print = fingerprint(&cfg.guard.interface, &set);
    if step.state.applied.as_deref() == Some(print.as_str()) {
        return step.commit(store, cfg, now);
    }
    match privileged::guard_apply(socket, &cfg.guard.interface, &set, RELAY_TIMEOUT).await {
        Ok(()) => {
            info!(interface = %cfg.guard.interface, prefixes = set.len(), "guard: set in force");
            step.state.applied = Some(print);
            if step.state.unenforced.take().is_some() {
                step.event(Event::new(
                    EventKind::GuardEnforced,
                    now,
                    format!(
                        "The guard is in force again: {} approved address(es) and route(s) let in on {}",
                        set.len(),
                        cfg.guard.interface
                    ),
                ));
            }
        }
        Err(e) => step.unenforced(
            "relay",
            &format!("the set could not be applied: {e}"),
            relay_fix(&e),
            now,
        ),
    }
    step.commit(store, cfg, now)
}

/// Reads what the guard dropped (and that its table is still what was applied); raises
/// `guard.blocked` for a group whose packets grew, at most once per [`BLOCKED_WINDOW`].
pub async fn poll(
    store: &mut Store,
    cfg: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let state = store.guard_state()?;
    if !cfg.guard.enforcing() || state.off.is_some() || state.applied.is_none() {
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
    let table = fingerprint(&enforced.interface, &enforced.set);
    // What was applied last is in force: nothing to compute (a newer set is the next pass's).
    if !enforced.present || enforced.foreign || state.applied.as_deref() != Some(table.as_str()) {
        let ours = fingerprint(&cfg.guard.interface, &wanted(store)?.0);
        let mut step = Step::load(store)?;
        if enforced.present && !enforced.foreign && table == ours {
            // Another process (`check`, a `guard` command) applied the newest set: note it.
            step.state.applied = Some(ours);
            step.commit(store, cfg, now)?;
        } else {
            return tampered(store, cfg, step, &enforced, now).await;
        }
    }
    blocked(store, cfg, &enforced, now)
}

/// The table is neither what was applied nor what should be: changed behind the monitor's back
/// (`nft flush ruleset`, another tool). Said, and put back.
async fn tampered(
    store: &mut Store,
    cfg: &Config,
    mut step: Step,
    enforced: &Enforced,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    warn!(
        present = enforced.present,
        "guard: the table is not what was applied; applying it again"
    );
    step.state.applied = None;
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
    step.event(e);
    step.state.unenforced = Some("tampered".into());
    let mut out = step.commit(store, cfg, now)?;
    out.extend(enforce(store, cfg, None, now).await?);
    Ok(out)
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
    let mut step = Step::load(store)?;
    // Elements stay for an hour after their last packet: most polls see the same counters, and
    // cost no more than comparing them with the last poll's.
    let seen = digest(&enforced.blocked);
    if step.state.seen.as_deref() == Some(seen.as_str()) {
        return Ok(Vec::new());
    }
    step.state.seen = Some(seen);
    let records: BTreeMap<_, _> = store
        .blocked()?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let known = store.known_now()?;
    let (events, rows) = blocked_events(known, &enforced.blocked, &records, BLOCKED_WINDOW, now);
    step.commit.blocked = rows;
    step.events = events;
    step.commit(store, cfg, now)
}

/// `guard init` / `guard on`: clears `off` (and, for init, notes when).
pub fn turn_on(store: &mut Store, cfg: &Config, init: bool) -> Result<(), StoreError> {
    let mut step = Step::load(store)?;
    step.state.off = None;
    if init {
        step.state.initialized = Some(Utc::now().to_rfc3339());
    }
    step.commit(store, cfg, Utc::now()).map(|_| ())
}

/// `guard off`: the table is gone (the caller removed it), and `event` says by whom.
pub fn turned_off(
    store: &mut Store,
    cfg: &Config,
    by: &str,
    event: Event,
) -> Result<(), StoreError> {
    let mut step = Step::load(store)?;
    step.state.off = Some(by.to_owned());
    step.state.applied = None;
    step.state.doors.clear();
    step.commit.clear_blocked = true;
    step.event(event);
    step.commit(store, cfg, Utc::now()).map(|_| ())
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
