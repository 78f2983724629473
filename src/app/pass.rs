//! One pass of the monitor: snapshot → core → store (one transaction) → deliver.
//!
//! Shared by `check`, `run` and `demo`, so that all three behave the same.

use chrono::Utc;
use tracing::{debug, error, info, warn};

use crate::app::outage::StoreOutage;
use crate::config::Config;
use crate::diff::delta::{Declined, Delta};
use crate::diff::{connection_candidates, pass_outcome, ControlRead, Policy};
use crate::model::access::NodeView;
use crate::model::control::ControlSnapshot;
use crate::model::posture::ServerFacts;
use crate::model::route::Route;
use crate::model::{Device, Event, EventKind, Severity, Snapshot};
use crate::notify::{self, render, DeliveryReport};
use crate::source::control::{ControlError, ControlSource};
use crate::source::localapi::LocalApi;
use crate::source::{Source, SourceError};
use crate::store::{Store, StoreError};

/// What one pass saw and did.
#[derive(Debug)]
pub struct PassReport {
    /// The snapshot, or why there is none.
    pub seen: Result<Snapshot, SourceError>,
    /// Events recorded (and queued) by this pass.
    pub events: Vec<Event>,
    /// Why the control plane could not be read in this pass, if it was read and could not be.
    pub control_error: Option<ControlError>,
    /// When a watched device's offline threshold falls due.
    pub presence_due: Option<chrono::DateTime<Utc>>,
    /// The devices a `[[watch]]` covers, as this pass resolved them.
    pub watched: Vec<crate::model::StableNodeId>,
}

/// The control plane as read in one pass (`None` in `record`: not read this pass).
pub struct ControlSeen {
    pub source: String,
    pub result: Result<ControlSnapshot, ControlError>,
    /// This server's facts, collected with the read for the posture checks.
    pub server: Option<ServerFacts>,
}

/// Reads the control plane, if one is configured; `server` goes along for the posture checks.
async fn read_control(
    control: Option<&ControlSource>,
    server: Option<ServerFacts>,
) -> Option<ControlSeen> {
    let c = control?;
    let result = c.snapshot().await;
    if let Err(e) = &result {
        warn!(error = %e, "cannot read the control plane");
    }
    Some(ControlSeen {
        source: c.name(),
        result,
        server,
    })
}

impl PassReport {
    pub fn max_severity(&self) -> Option<Severity> {
        self.events.iter().map(|e| e.severity).max()
    }
}

/// How a caller runs the one pass. `check` reads everything; `run` reuses its last view of who
/// may reach this node between netmap changes and reads the control plane when it is due; `demo`
/// reads neither the control plane nor makes a digest.
#[derive(Default)]
pub struct Plan<'a> {
    /// Keep this view of the packet filter and SSH policy instead of reading it again.
    pub reuse_view: Option<&'a NodeView>,
    /// Read the control plane in this pass (with this server's facts for the posture checks).
    pub control: Option<&'a ControlSource>,
    /// Record the digest when it is due.
    pub digest: bool,
}

/// What the one pass did: the report, and whether the after-commit steps (a recovered store, a
/// digest) queued something beyond the pass's events.
pub struct Passed {
    pub report: PassReport,
    pub queued_more: bool,
}

/// The one pass, as `check` and `demo` run it: [`read`], then [`commit`].
pub async fn pass(
    source: &Source,
    store: &mut Store,
    cfg: &Config,
    plan: &Plan<'_>,
    outage: &mut Option<StoreOutage>,
) -> Result<Passed, StoreError> {
    let t = std::time::Instant::now();
    let seen = read(source, store, plan.reuse_view).await?;
    debug!(took = ?t.elapsed(), "pass: read");
    commit(source, store, cfg, seen, plan, outage).await
}

/// The read of a pass: tailscaled's documents are read and parsed on another worker while this
/// one loads what is known (a JoinSet: the read is cancelled if loading fails). `run` looks at
/// the result (its grace for a restarting tailscaled) before it commits.
pub async fn read(
    source: &Source,
    store: &mut Store,
    reuse_view: Option<&NodeView>,
) -> Result<Result<Snapshot, SourceError>, StoreError> {
    if let (Some(api), Some(view)) = (source.local_api(), reuse_view) {
        // `run` between netmap changes: only `/status` is read, and the known state is usually
        // cached already; no copy of the view for another worker.
        store.preload()?;
        return Ok(api.snapshot_with(Some(view)).await);
    }
    let mut reading = tokio::task::JoinSet::new();
    if let Some(api) = source.local_api() {
        let api = api.clone();
        reading.spawn(async move { api.snapshot().await });
    }
    let t = std::time::Instant::now();
    store.preload()?;
    debug!(took = ?t.elapsed(), "pass: known state loaded");
    Ok(match reading.join_next().await {
        Some(r) => r.unwrap_or_else(|e| Err(SourceError(format!("reading tailscaled: {e}")))),
        None => source.snapshot().await,
    })
}

/// The rest of the pass, the same for every caller: `whois` for what the core cannot look up
/// itself, the control plane when planned (after the node view: a device that joined in between
/// is then in both, not "unlisted"), the one-transaction commit, then the after-commit steps:
/// the store's recovery from an outage, and the digest when due.
pub async fn commit(
    source: &Source,
    store: &mut Store,
    cfg: &Config,
    mut seen: Result<Snapshot, SourceError>,
    plan: &Plan<'_>,
    outage: &mut Option<StoreOutage>,
) -> Result<Passed, StoreError> {
    let t = std::time::Instant::now();
    enrich(source, store, &mut seen, &cfg.policy).await?;
    let control = match plan.control {
        Some(c) => read_control(Some(c), Some(crate::source::server::facts(cfg))).await,
        None => None,
    };
    debug!(took = ?t.elapsed(), "pass: whois and the control plane");
    let t = std::time::Instant::now();
    let routes = cfg.routes();
    let mut report = record(store, &routes, &cfg.policy, seen, control)?;
    debug!(took = ?t.elapsed(), "pass: decided and committed");
    let t = std::time::Instant::now();
    let mut queued_more = false;
    // The guard follows what the pass saw; a source outage changes nothing.
    if let Ok(snap) = &report.seen {
        let now = Utc::now();
        let guarded = crate::app::guard::after_pass(store, cfg, snap, now).await?;
        queued_more |= !guarded.is_empty();
        report.events.extend(guarded);
    }
    if let Some(o) = outage.take() {
        if let Err(e) = o.recovered(store, &routes, &cfg.state_dir) {
            *outage = Some(o);
            return Err(e);
        }
        queued_more = true;
    }
    if plan.digest {
        queued_more |=
            crate::app::digest::record_if_due(store, &routes, cfg.digest_every, Utc::now())?;
    }
    debug!(took = ?t.elapsed(), "pass: the guard and the digest");
    Ok(Passed {
        report,
        queued_more,
    })
}

/// What the bus said changed, and what the last full pass read beside the devices.
pub struct BusDelta<'a> {
    pub peers: &'a [Device],
    pub tailnet: &'a str,
    pub view: Option<&'a NodeView>,
    pub tun: Option<bool>,
}

/// A `PeersChanged` decided without reading the tailnet ([`crate::diff::delta`]): the changed
/// peers against what is known, committed in one transaction with their events, then the guard's
/// step. `Ok(Ok(to_send))`: whether something was queued for a channel. `Ok(Err(why))`: declined,
/// and nothing was written; a full pass decides.
pub async fn delta(
    store: &mut Store,
    cfg: &Config,
    bus: &BusDelta<'_>,
) -> Result<Result<bool, Declined>, StoreError> {
    let now = Utc::now();
    let mut declined = None;
    let d = Delta {
        peers: bus.peers,
        tailnet: bus.tailnet,
        view: bus.view,
    };
    let committed = store.commit_pass(&cfg.routes(), now, |known, health| {
        let out =
            crate::diff::delta::delta(known, health, &d, &cfg.policy, now).unwrap_or_else(|why| {
                declined = Some(why);
                Default::default()
            });
        (out, health.clone(), false)
    })?;
    if let Some(why) = declined {
        return Ok(Err(why));
    }
    for e in &committed.events {
        info!(kind = %e.kind, severity = %e.severity, summary = %crate::sanitize::line(&e.summary, 200), "event");
    }
    let guarded = crate::app::guard::after_delta(store, cfg, bus.tun, now).await?;
    Ok(Ok(committed.queued > 0 || !guarded.is_empty()))
}

/// Adds what the core cannot fetch itself to a fresh snapshot: `whois` answers for peers that are
/// about to count as newly connected.
async fn enrich(
    source: &Source,
    store: &Store,
    seen: &mut Result<Snapshot, SourceError>,
    policy: &Policy,
) -> Result<(), StoreError> {
    match (source.local_api(), seen) {
        (Some(api), Ok(snap)) => {
            whois_sources(api, snap).await;
            whois(api, store, snap, policy).await
        }
        _ => Ok(()),
    }
}

/// Asks tailscaled who is behind filter and SSH sources that are no device of the snapshot (a
/// peer this node cannot list), so that messages name them. At most a few per pass.
pub async fn whois_sources(api: &LocalApi, snap: &mut Snapshot) {
    const MAX_LOOKUPS: usize = 16;
    let Some(view) = &snap.node else { return };
    let single_ip = |s: &str| -> Option<String> {
        let host = s
            .strip_suffix("/32")
            .or_else(|| s.strip_suffix("/128"))
            .unwrap_or(s);
        host.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_string())
    };
    let mut wanted: std::collections::HashSet<String> = view
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.srcs.iter())
        .chain(view.ssh.iter().flatten().flat_map(|r| {
            r.principals.iter().filter_map(|p| match p {
                crate::model::access::SshPrincipal::NodeIp(ip) => Some(ip),
                _ => None,
            })
        }))
        .filter_map(|s| single_ip(s))
        .collect();
    // One walk over the devices' addresses, looked up in the (usually much smaller) set wanted.
    for a in snap.devices.values().flat_map(|d| &d.addresses) {
        if wanted.is_empty() {
            break;
        }
        wanted.remove(a.as_str());
    }
    let mut wanted: Vec<String> = wanted.into_iter().collect();
    wanted.sort();
    for ip in wanted.into_iter().take(MAX_LOOKUPS) {
        match api.whois(&ip).await {
            Ok(w) => {
                snap.ip_whois.insert(ip, w);
            }
            Err(e) => debug!(error = %e, "whois of a filter source failed"),
        }
    }
}

/// Asks tailscaled who is behind each peer that is about to count as newly connected (at most a
/// few per pass). A failed lookup is logged and leaves the event without it.
async fn whois(
    api: &LocalApi,
    store: &Store,
    snap: &mut Snapshot,
    policy: &Policy,
) -> Result<(), StoreError> {
    const MAX_LOOKUPS: usize = 16;
    if snap.conns.values().all(|c| c.last_handshake.is_none()) {
        return Ok(());
    }
    let last = store.last_handshakes()?;
    // The snapshot's connections are walked in ID order.
    let last = last.as_ref().map(|l| l.ascending());
    for id in connection_candidates(last, snap, policy)
        .into_iter()
        .take(MAX_LOOKUPS)
    {
        let Some(ip) = snap
            .devices
            .get(&id)
            .and_then(|d| d.addresses.iter().find(|a| !a.contains(':')))
            .cloned()
        else {
            continue;
        };
        match api.whois(&ip).await {
            Ok(w) => {
                snap.whois.insert(id, w);
            }
            Err(e) => warn!(error = %e, "whois failed"),
        }
    }
    Ok(())
}

/// Records the outcome of a snapshot attempt in one transaction.
fn record(
    store: &mut Store,
    routes: &[Route],
    policy: &Policy,
    seen: Result<Snapshot, SourceError>,
    control: Option<ControlSeen>,
) -> Result<PassReport, StoreError> {
    let now = Utc::now();
    let control_error = control
        .as_ref()
        .and_then(|c| c.result.as_ref().err().cloned());
    // A 429 is the control plane asking to come back later, not an outage: this pass did not
    // read it (the caller waits the `Retry-After`).
    let control = control.filter(|c| !matches!(c.result, Err(ControlError::RateLimited { .. })));
    let committed = store.commit_pass(routes, now, |known, health| {
        let c = control.as_ref().map(|c| ControlRead {
            source: &c.source,
            result: c.result.as_ref().map_err(|e| e.message()),
            server: c.server.as_ref(),
        });
        pass_outcome(
            known,
            health,
            seen.as_ref().map_err(|e| e.0.as_str()),
            c,
            policy,
            now,
        )
    })?;
    if let Err(e) = &seen {
        // An error once, when the outage is raised; a warning while it lasts.
        if committed
            .events
            .iter()
            .any(|ev| ev.kind == EventKind::MonitorSourceDown)
        {
            error!(error = %e, "cannot read the tailnet");
        } else {
            warn!(error = %e, "tailnet still unreadable");
        }
    }
    for e in &committed.events {
        info!(kind = %e.kind, severity = %e.severity, summary = %crate::sanitize::line(&e.summary, 200), "event");
    }
    Ok(PassReport {
        seen,
        events: committed.events,
        control_error,
        presence_due: committed.presence_due,
        watched: committed.watched,
    })
}

/// Drains the outbox for every channel.
pub async fn deliver(
    store: &mut Store,
    cfg: &Config,
    host: &str,
    ignore_backoff: bool,
) -> Result<DeliveryReport, StoreError> {
    let mut cx = render::Context::new(host);
    cx.web = cfg.web.as_ref().and_then(|w| w.url.clone());
    notify::deliver(
        store,
        &cfg.channels,
        &cx,
        Utc::now(),
        ignore_backoff,
        cfg.delivery_max_age,
    )
    .await
}

/// This machine's host name, for messages.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this server".to_owned())
}
