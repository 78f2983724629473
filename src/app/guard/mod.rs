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
use crate::diff::guard::set::{desired, peers_of_known};
use crate::model::guard::{ApprovalChange, Decision, Enforced, GuardSet, GuardState, LeftOut};
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
    hex::encode(&Sha256::digest(json)[..16])
}

fn fingerprint(interface: &str, set: &GuardSet) -> String {
    digest(&(interface, set))
}

/// The set the monitor computes from what it knows (its check on the root side's answer), and
/// what was left out of it and why. `approvals` are the root side's (as mirrored).
pub fn expected(store: &mut Store) -> Result<(GuardSet, Vec<LeftOut>), StoreError> {
    let approvals = store.approvals()?;
    let exit = store.guard_state()?.exit_node;
    let known = store.known_now()?;
    let peers = peers_of_known(known.devices.values());
    Ok(desired(&peers, &approvals, exit.as_deref()))
}

/// Why the relay failed, and what to do about it.
pub fn relay_fix(e: &RelayError) -> &'static str {
    match e {
        RelayError::Absent(_) => "enable the privileged relay: `systemctl enable --now tailscale-monitor-privileged.socket` (README: The guard)",
        RelayError::Denied(_) => "add the monitor's user to the relay's group (`usermod -aG tailscale-monitor tailscale-monitor`) and restart it",
        RelayError::Failed { .. } => "see the relay's log (`journalctl -u 'tailscale-monitor-privileged@*'`); is nftables installed (`apt install nftables`)?",
    }
}

/// The guard's part of a pass that read `snap`: the doors, then the root side's decision, then
/// the counters.
pub async fn after_pass(
    store: &mut Store,
    cfg: &Config,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut out = doors::observe(store, cfg, snap, now).await?;
    out.extend(after_delta(store, cfg, snap.tun, now).await?);
    Ok(out)
}

/// The guard's part of a bus delta (and the tail of a pass): the root side's decision when what
/// it decides from changed, then the counters. The doors follow the node view, which a delta
/// does not read. `tun` is `/status` `TUN` as last read.
pub async fn after_delta(
    store: &mut Store,
    cfg: &Config,
    tun: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    if sync_due(store, cfg, now)? {
        out.extend(enforce(store, cfg, tun, now).await?);
    }
    out.extend(poll(store, cfg, now).await?);
    Ok(out)
}

/// The longest a pass goes without asking the root side to sync (the safety net).
const RESYNC: chrono::Duration = chrono::Duration::minutes(10);

/// What a sync is asked for: the peers as the monitor knows them, the exit node, the approvals'
/// version and the mode.
/// Hashed in place (no copy of the devices: a pass runs it whatever changed).
fn sync_input(store: &mut Store, cfg: &Config, state: &GuardState) -> Result<String, StoreError> {
    use std::hash::{Hash, Hasher};
    let known = store.known_now()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for k in known
        .devices
        .values()
        .filter(|k| !k.removed && !k.device.is_self)
    {
        let d = &k.device;
        (&d.id.0, &d.node_key.0, &d.addresses, &d.routes).hash(&mut h);
    }
    (
        &state.exit_node,
        state.version,
        cfg.guard.enforcing(),
        &cfg.guard.interface,
    )
        .hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

/// Whether a pass must ask the root side to sync: something it decides from changed, the guard
/// is not in force, or the last sync is older than [`RESYNC`]. A pass that changes nothing costs
/// the root side nothing (the 2 s read still checks the table).
fn sync_due(store: &mut Store, cfg: &Config, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let state = store.guard_state()?;
    if !cfg.guard.enforcing() || state.applied.is_none() || state.unenforced.is_some() {
        return Ok(true);
    }
    let input = sync_input(store, cfg, &state)?;
    Ok(match &state.synced {
        Some((i, at)) if *i == input => chrono::DateTime::parse_from_rfc3339(at)
            .map_or(true, |t| now - t.with_timezone(&Utc) >= RESYNC),
        _ => true,
    })
}

/// The root side's approvals into the store's mirror: each difference an event, with who made
/// it where the root side says (`approve_new`, an owner's `guard approve`).
fn mirror(
    store: &mut Store,
    step: &mut Step,
    d: &Decision,
    now: DateTime<Utc>,
) -> Result<Vec<ApprovalChange>, StoreError> {
    let mine = store.approvals()?;
    let known = store.known_now()?;
    let mut changes = Vec::new();
    let device = |id: &StableNodeId| known.devices.get(id).map(|k| k.device.clone());
    for a in &d.approvals {
        let same = mine
            .iter()
            .any(|m| m.device == a.device && m.node_key == a.node_key && m.routes == a.routes);
        if same {
            continue;
        }
        let name =
            device(&a.device).map_or_else(|| a.device.0.clone(), |d| d.display_name().to_owned());
        let mut e = Event::new(
            EventKind::GuardApproved,
            now,
            format!(
                "The guard lets {name} in at this server (approved by {})",
                a.by
            ),
        );
        e.device = device(&a.device);
        e.detail = format!("by {}", a.by);
        step.event(e);
        changes.push(ApprovalChange {
            device: a.device.clone(),
            node_key: a.node_key.clone(),
            routes: a.routes.clone(),
            approved: true,
            by: a.by.clone(),
        });
    }
    for m in &mine {
        if d.approvals.iter().any(|a| a.device == m.device) {
            continue;
        }
        let name =
            device(&m.device).map_or_else(|| m.device.0.clone(), |d| d.display_name().to_owned());
        let mut e = Event::new(
            EventKind::GuardRevoked,
            now,
            format!("The guard shuts {name} out at this server again (revoked at its root side)"),
        );
        e.device = device(&m.device);
        step.event(e);
        changes.push(ApprovalChange {
            device: m.device.clone(),
            node_key: String::new(),
            routes: Vec::new(),
            approved: false,
            by: "the root side".into(),
        });
    }
    Ok(changes)
}

/// Asks the root side to put its decision in force, mirrors it, and says what changed: the
/// approvals, why the guard is not in force, suspicious peers, a set that is not what the monitor
/// expects. `tun` is `/status` `TUN` (`None`: not read).
pub async fn enforce(
    store: &mut Store,
    cfg: &Config,
    tun: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut step = Step::load(store)?;
    let socket = &cfg.source.privileged_socket;
    if !cfg.guard.enforcing() {
        // The root side reads the same file: its sync removes a table left in force.
        if step.state.applied.is_some() {
            match privileged::guard_sync(socket, RELAY_TIMEOUT).await {
                Ok(d) if d.mode == "off" => {
                    info!("guard: enforcement removed (mode is off)");
                    step.state.applied = None;
                    step.state.doors.clear();
                    step.commit.clear_blocked = true;
                }
                Ok(_) => warn!("guard: the root side's config still says enforce"),
                Err(e) => {
                    warn!(error = %e, "guard: cannot reach the root side; retrying at the next pass")
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
    let d = match privileged::guard_sync(socket, RELAY_TIMEOUT).await {
        Ok(d) => d,
        Err(e) => {
            step.unenforced(
                "relay",
                &format!("the root side could not put it in force: {e}"),
                relay_fix(&e),
                now,
            );
            return step.commit(store, cfg, now);
        }
    };
    if let (Some(why), true) = (&d.repaired, d.applied) {
        let mut e = if d.rebooted {
            let mut e = Event::new(
                EventKind::GuardUnenforced,
                now,
                "The guard's table was not restored when this machine booted; it is put back now",
            );
            e.fix = "enable the restore unit: `systemctl enable tailscale-monitor-guard-restore.service` (it loads the table before tailscaled starts)".into();
            e
        } else {
            let gone = why == "the table is gone";
            let mut e = Event::new(
                EventKind::GuardUnenforced,
                now,
                if gone {
                    "The guard's nftables table was removed outside the monitor; it is put back"
                        .to_owned()
                } else {
                    format!("The guard's nftables table was changed outside the monitor ({why}); it is put back")
                },
            );
            e.fix = "someone with root on this server changed the firewall: find out who (`journalctl`, shell histories)".into();
            e
        };
        e.detail = why.clone();
        warn!(differs = %why, "guard: the table was not what root applied; put back");
        step.event(e);
        step.state.unenforced = None;
    }
    let changes = mirror(store, &mut step, &d, now)?;
    step.commit.approvals = changes;
    step.state.version = d.version;
    step.state.synced = Some((sync_input(store, cfg, &step.state)?, now.to_rfc3339()));
    step.state.initialized = d.initialized.then(|| "root".to_owned());
    if step.state.off.is_none() {
        if let Some(by) = &d.off {
            let mut e = Event::new(
                EventKind::GuardDisabled,
                now,
                format!("The guard was turned off by {by}: every device the tailnet policy lets in can reach this server"),
            );
            e.detail = format!("by {by}");
            step.event(e);
        }
    }
    step.state.off = d.off.clone();
    if d.off.is_some() && step.state.applied.take().is_some() {
        step.state.doors.clear();
        step.commit.clear_blocked = true;
    }
    for a in &d.anomalies {
        if step.state.anomalies.contains(&a.node_key) {
            continue;
        }
        let what = if a.what == "no_stable_id" {
            "has no stable ID".to_owned()
        } else {
            format!("shares the stable ID {} with another peer", a.id)
        };
        let mut e = Event::new(
            EventKind::GuardSuspiciousPeer,
            now,
            format!("A peer of this server ({}) {what}: it is never approved, and the guard lets nothing it may send from in", a.node_key),
        );
        e.fix =
            "find out who added it: a control plane that hides a peer's identity is hostile".into();
        step.event(e);
        step.state.anomalies.push(a.node_key.clone());
    }
    step.state
        .anomalies
        .retain(|k| d.anomalies.iter().any(|a| &a.node_key == k));
    if d.mode != "enforce" {
        step.unenforced(
            "root_config",
            "the root side's config says `[guard] mode = \"off\"` (it reads the monitor's config file, which must be root's and writable by no one else)",
            "make /etc/tailscale-monitor/config.toml owned by root and not writable by others, with `[guard] mode = \"enforce\"`",
            now,
        );
    } else if d.off.is_some() {
        // Said by `guard.disabled`.
    } else if !d.initialized {
        step.unenforced(
            "uninitialized",
            "`[guard] mode = \"enforce\"` is set, but no device has been approved yet",
            "review the devices (`tailscale-monitor devices`), then run `sudo tailscale-monitor guard init` to approve those of the baseline and put the guard in force",
            now,
        );
    } else if d.no_interface {
        step.unenforced(
            "no_interface",
            &format!(
                "the interface {} does not exist (tailscaled not in kernel TUN mode, or down)",
                d.interface
            ),
            "run tailscaled with a TUN device, or set `[guard] interface` to its name",
            now,
        );
    } else {
        let print = fingerprint(&d.interface, &d.set);
        if d.applied || step.state.applied.as_deref() != Some(print.as_str()) {
            info!(interface = %d.interface, prefixes = d.set.len(), "guard: in force");
        }
        step.state.applied = Some(print);
        if step.state.unenforced.take().is_some() {
            step.event(Event::new(
                EventKind::GuardEnforced,
                now,
                format!(
                    "The guard is in force again: {} approved address(es) and route(s) let in on {}",
                    d.set.len(),
                    d.interface
                ),
            ));
        }
        // The monitor's own computation, from `/status`, against the root side's answer.
        let (mine, _) = {
            let approvals = d.approvals.clone();
            let exit = step.state.exit_node.clone();
            let known = store.known_now()?;
            let peers = peers_of_known(known.devices.values());
            desired(&peers, &approvals, exit.as_deref())
        };
        if mine == d.set {
            step.state.mismatch = None;
        } else {
            let more: Vec<String> = d
                .set
                .nets()
                .filter(|n| !mine.nets().any(|m| m == *n))
                .map(|n| n.to_string())
                .collect();
            let less: Vec<String> = mine
                .nets()
                .filter(|n| !d.set.nets().any(|m| m == *n))
                .map(|n| n.to_string())
                .collect();
            let what = format!(
                "the root side lets in {} that the monitor would not, and leaves out {}",
                if more.is_empty() {
                    "nothing".to_owned()
                } else {
                    more.join(", ")
                },
                if less.is_empty() {
                    "nothing".to_owned()
                } else {
                    less.join(", ")
                }
            );
            let n = match &step.state.mismatch {
                Some((w, n)) if *w == what => n + 1,
                _ => 1,
            };
            if n == 2 {
                let mut e = Event::new(
                    EventKind::GuardMismatch,
                    now,
                    format!("The guard's set is not what the monitor expects: {what}"),
                );
                e.fix = "compare `tailscale-monitor guard status --json` with `tailscale status --json`".into();
                step.event(e);
            }
            step.state.mismatch = Some((what, n));
        }
    }
    step.commit(store, cfg, now)
}

/// Reads what the guard dropped (and that its table is still, whole, what root applied); raises
/// `guard.blocked` for a group whose packets grew, at most once per [`BLOCKED_WINDOW`].
pub async fn poll(
    store: &mut Store,
    cfg: &Config,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if !poll_due(store, cfg)? {
        return Ok(Vec::new());
    }
    match read_table(cfg).await {
        Some(e) => on_table(store, cfg, e, now).await,
        None => Ok(Vec::new()),
    }
}

/// Whether the table is the guard's to read now.
pub fn poll_due(store: &Store, cfg: &Config) -> Result<bool, StoreError> {
    let state = store.guard_state()?;
    Ok(cfg.guard.enforcing() && state.off.is_none() && state.applied.is_some())
}

/// The root side's reading of the table, within [`RELAY_TIMEOUT`] (no store: `run` does it off
/// its main loop). `None`: it could not be read (logged).
pub async fn read_table(cfg: &Config) -> Option<Enforced> {
    match privileged::guard_read(&cfg.source.privileged_socket, RELAY_TIMEOUT).await {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(error = %e, "guard: cannot read the table");
            None
        }
    }
}

/// What a reading of the table means: tampering (put back), newer approvals (mirrored), and
/// `guard.blocked`.
pub async fn on_table(
    store: &mut Store,
    cfg: &Config,
    enforced: Enforced,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let state = store.guard_state()?;
    let mut out = Vec::new();
    if let Some(why) = &enforced.differs {
        // The sync puts it back, and says so (`Decision::repaired`).
        warn!(differs = %why, "guard: the table is not what root applied; asking root to put it back");
        out.extend(enforce(store, cfg, None, now).await?);
    } else if enforced.version != state.version {
        out.extend(enforce(store, cfg, None, now).await?);
    }
    out.extend(blocked(store, cfg, &enforced, now)?);
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
