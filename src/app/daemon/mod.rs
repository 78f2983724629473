//! `run`: the long-lived monitor.
//!
//! One loop, driven by `select!`, owns the store. Passes are triggered by:
//! - the IPN bus (a task holding `watch-ipn-bus` open, see [`bus`]): any Notify that may mean a
//!   change schedules a pass after a short debounce, so a burst of notifies is one `/status` read;
//! - a timer: every `reconcile` while the bus streams (the safety net), every `interval` while it
//!   does not (polling, and the CLI source);
//! - the bus going down or coming back (to see at once whether tailscaled is still there);
//! - every `access_interval`, a cheap re-read of who may reach this node (one netmap line,
//!   `tka/status`, `prefs`), because tailscaled >= 1.100 applies a packet-filter-only update with
//!   no bus message at all; only a difference from the last pass costs a full pass.
//!
//! tailscaled restarts end the stream; the bus task reconnects with capped exponential backoff.
//! A failed read is *not* recorded until tailscaled has been unreachable for `grace`, so a restart
//! raises nothing; past it, `monitor.source_down` is raised once. What joined meanwhile is found by
//! the first pass that succeeds, and nothing already known is reported again.
//!
//! systemd: `READY=1` after the first pass, `WATCHDOG=1` pings when `WatchdogSec=` is set,
//! `RELOADING=1` on SIGHUP (the config is reloaded; a bad file is logged and the old one kept),
//! `STOPPING=1` on SIGTERM/SIGINT, which finish the pass in flight and flush the outbox for up to
//! a few seconds. Undelivered alerts stay queued for the next start.
//!
//! A state database that cannot be written (disk full, I/O error) does not stop `run`: the
//! failure is sent at once as `monitor.store_failed` on every channel, straight rather than through
//! the outbox it cannot write, and the pass is retried every few seconds. The first pass that
//! commits again logs `monitor.store_recovered`; what changed meanwhile is found by that pass.
//!
//! The loop's parts: [`schedule`] owns every deadline (unit-tested without a daemon), [`bus`]
//! holds the IPN bus and its presence filter, [`reload`] is SIGHUP. This file spawns the tasks,
//! runs the loop and shuts down.

pub(crate) mod bus;
pub(crate) mod reload;
pub(crate) mod schedule;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

use self::bus::{Bus, Members};
use self::schedule::{PassDone, Periods, Schedule, Wake};
use crate::app::outage::StoreOutage;
use crate::app::pass::{self, Plan};
use crate::config::{Config, SourceKind};
use crate::metrics::Counters;
use crate::model::access::NodeView;
use crate::model::guard::Enforced;
use crate::source::control::ControlSource;
use crate::source::ipnbus::{self, Signal};
use crate::source::localapi::LocalApi;
use crate::source::Source;
use crate::store::{Store, StoreError};

/// How long shutdown may spend flushing the outbox.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// The running monitor: its config, what it reads and writes, and when.
struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    store: Store,
    source: Source,
    /// The control plane's API, when configured.
    control: Option<ControlSource>,
    host: String,
    counters: Arc<Counters>,
    /// Every deadline and due flag of the loop.
    schedule: Schedule,
    /// Half of systemd's `WatchdogSec=`, kept for a reload's new periods.
    watchdog: Option<Duration>,
    /// The IPN bus streams.
    streaming: bool,
    /// What the last pass saw of each device's membership, for the bus's presence filter.
    members: Members,
    /// Set while the state database cannot be written.
    store_outage: Option<StoreOutage>,
    /// What the last pass read beside the devices, for the passes and deltas that do not.
    last: LastRead,
}

/// What the last full pass read beside the devices.
#[derive(Default)]
struct LastRead {
    /// Who may reach this node, reused by passes that need no netmap, and checked by a delta.
    view: Option<NodeView>,
    /// `/status` Self `Online`: with watches, re-read with the access check
    /// (`status?peers=false`, a few hundred bytes), since tailscaled sends no bus message when it
    /// loses the control plane.
    self_online: Option<bool>,
    /// The tailnet's name, for a delta's events.
    tailnet: String,
    /// `/status` `TUN`, for a delta's guard step.
    tun: Option<bool>,
    /// When the last full pass started reading: a bus line read before it is in that read.
    read_at: Option<Instant>,
}

impl Daemon {
    /// One pass. Only the state database can fail one.
    async fn pass(&mut self) -> Result<(), StoreError> {
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        // A pass for peers that joined or changed reads `/status` only and keeps the last view of
        // who may reach this node: that view changes with a full netmap (SelfChange, NetMap), which
        // asks for it, or silently, which `access_interval` catches. Every other pass reads both.
        let started = Instant::now();
        let netmap = self.schedule.pass_started(started);
        let control_read = self.control.is_some() && self.schedule.control_now();
        let plan = Plan {
            reuse_view: self.last.view.as_ref().filter(|_| !netmap),
            control: self.control.as_ref().filter(|_| control_read),
            digest: true,
        };
        let seen = pass::read(&self.source, &mut self.store, plan.reuse_view).await?;
        let mut view = None;
        match &seen {
            Ok(snap) => {
                crate::memory::fit(snap.devices.len(), crate::memory::LARGE_FOR_RUN);
                self.schedule.read_ok();
                self.last.read_at = Some(started);
                self.members.seen(snap);
                // Said in the log when it starts (the first pass) and when it changes; the
                // alert itself is raised once by the core.
                for u in snap.node.iter().flat_map(|v| &v.unread) {
                    if !self
                        .last
                        .view
                        .as_ref()
                        .is_some_and(|l| l.unread.contains(u))
                    {
                        warn!(part = u.part.as_str(), error = %u.error, fix = %u.fix, "not visible: {}", u.part.what());
                    }
                }
                view = Some(snap.node.clone());
            }
            Err(e) => {
                if let Some(left) = self.schedule.read_failed(Instant::now()) {
                    warn!(error = %e, grace_left = ?left, "tailscaled unreachable; alerting if it stays so");
                    return Ok(());
                }
            }
        }
        let passed = pass::commit(
            &self.source,
            &mut self.store,
            &self.cfg,
            seen,
            &plan,
            &mut self.store_outage,
        )
        .await?;
        if let Some(v) = view {
            self.last.view = v;
        }
        let report = passed.report;
        if let Ok(snap) = &report.seen {
            self.last.self_online = snap.self_online;
            self.last.tun = snap.tun;
            self.last.tailnet.clone_from(&snap.tailnet);
            self.members.watching(&report.watched);
        }
        let done = PassDone {
            control_read,
            retry_after: report.control_error.as_ref().and_then(|e| e.retry_after()),
            presence_due: report
                .presence_due
                .map(|at| (at - Utc::now()).to_std().unwrap_or_default()),
            to_send: passed.queued_more || report.events.iter().any(|e| !e.record_only),
        };
        if self.schedule.pass_done(&done, Instant::now()) {
            self.send_now().await?;
        }
        Ok(())
    }

    /// A `PeersChanged` read from the bus at `at`: nothing if a full pass has read the tailnet
    /// since, or if only presence changed; otherwise the changed peers are decided as they stand
    /// ([`pass::delta`], no `/status` read), or, where only the whole tailnet can tell, by a full
    /// pass. A watched device's presence always costs a pass.
    async fn peers_changed(&mut self, peers: Vec<crate::model::Device>, at: Instant) {
        if self.last.read_at.is_some_and(|r| at < r) {
            debug!("a bus change the last pass has read already");
            return;
        }
        if !self.members.need_pass(&peers) {
            self.counters.presence_only.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.store_outage.is_none() {
            let bus = pass::BusDelta {
                peers: &peers,
                tailnet: &self.last.tailnet,
                view: self.last.view.as_ref(),
                tun: self.last.tun,
            };
            let t = Instant::now();
            match pass::delta(&mut self.store, &self.cfg, &bus).await {
                Ok(Ok(to_send)) => {
                    info!(peers = peers.len(), took = ?t.elapsed(), since_read = ?at.elapsed(), "a change decided from the bus's node");
                    self.counters.deltas.fetch_add(1, Ordering::Relaxed);
                    self.members.changed(&peers);
                    let done = PassDone {
                        to_send,
                        ..PassDone::default()
                    };
                    if self.schedule.pass_done(&done, Instant::now()) {
                        if let Err(e) = self.send_now().await {
                            self.store_failed(e).await;
                        }
                    }
                    return;
                }
                Ok(Err(why)) => debug!(why = why.as_str(), "a full pass decides this change"),
                Err(e) => {
                    self.store_failed(e).await;
                    return;
                }
            }
        }
        self.schedule.bus_notify(Instant::now());
    }

    /// The cheap re-read of who may reach this node, between full passes: tailscaled >= 1.100
    /// applies a packet-filter-only update from the control plane without any bus message, so
    /// this is how such a change is caught within `access_interval`. Only a difference (or an
    /// error) costs a full pass.
    async fn access_check(&mut self) {
        let Some(api) = self.source.local_api().cloned() else {
            return;
        };
        if !self.cfg.policy.watches.is_empty() && self.last.self_online.is_some() {
            match api.self_online().await {
                Ok(online) if online != self.last.self_online => {
                    info!(online = ?online, "this server's connection to the control plane changed; re-reading the tailnet");
                    self.schedule.pass_by(Instant::now());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "self status re-read failed; a full pass will tell");
                    self.schedule.pass_by(Instant::now());
                }
            }
        }
        // A part that stays unreadable reads the same each time: no pass, no repeated message.
        let v = api.node_view().await;
        if !self.last.view.as_ref().is_some_and(|l| l.same_access(&v)) {
            info!("who may reach this node changed; re-reading the tailnet");
            self.schedule.access_changed(Instant::now());
        }
    }

    /// The state database could not be written: tell every channel not yet told, straight (the
    /// outbox is in that database), and retry the pass soon.
    async fn store_failed(&mut self, e: StoreError) {
        let error = crate::sanitize::error_line(&anyhow::Error::from(e));
        let retry = self.schedule.store_failed(Instant::now());
        let first = self.store_outage.is_none();
        let o = self
            .store_outage
            .get_or_insert_with(|| StoreOutage::new(Utc::now()));
        if first {
            error!(error = %error, retry_every = ?retry, "cannot write the state database; alerting directly and retrying");
        } else {
            warn!(error = %error, retry_in = ?retry, "state database still not writable");
        }
        let path = self.store.path().to_owned();
        o.tell(&self.cfg, &self.host, &path, &error).await;
    }

    /// Runs a pass; a failure becomes [`Daemon::store_failed`].
    async fn guarded_pass(&mut self) {
        if let Err(e) = self.pass().await {
            self.store_failed(e).await;
        }
    }

    /// What the guard dropped since the last look (read off the main loop, within a deadline):
    /// `guard.blocked` goes out at once.
    async fn guard_table(&mut self, read: Enforced) -> Result<(), StoreError> {
        let events =
            crate::app::guard::on_table(&mut self.store, &self.cfg, read, Utc::now()).await?;
        if !events.is_empty() {
            self.send_now().await?;
        }
        Ok(())
    }

    async fn send_now(&mut self) -> Result<(), StoreError> {
        self.schedule.sent(Instant::now());
        pass::deliver(&mut self.store, &self.cfg, &self.host, false).await?;
        Ok(())
    }

    /// The outbox's retries that fell due.
    async fn deliver_due(&mut self) -> Result<(), StoreError> {
        if self.store.next_due()?.is_some_and(|t| t <= Utc::now()) {
            pass::deliver(&mut self.store, &self.cfg, &self.host, false).await?;
        }
        Ok(())
    }

    /// What a bus report changes.
    async fn on_bus(&mut self, ev: Bus) {
        let now = Instant::now();
        match ev {
            Bus::Up { mask, version } => {
                info!(mask, version = %version, "IPN bus streaming");
                self.streaming = true;
                self.schedule
                    .bus_up(mask & ipnbus::PEER_WIREGUARD_STATE != 0, now);
            }
            Bus::Signal(Signal::Peers(peers), at) => self.peers_changed(peers, at).await,
            Bus::Signal(Signal::Connected, _) => self.schedule.bus_notify(now),
            Bus::Signal(_, _) => self.schedule.bus_netmap(now),
            Bus::Down(why) => {
                if std::mem::take(&mut self.streaming) {
                    warn!(error = %why, "IPN bus lost; reconnecting");
                }
                self.schedule.bus_down(now);
            }
        }
    }
}

/// The tasks `run` starts beside its loop, aborted at shutdown.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts `/metrics`, the web view and the webhook receiver when configured. Their keys are restart-only
/// ([`crate::config::RESTART_ONLY`]): these tasks keep the values they started with.
async fn listeners(
    cfg: &Config,
    counters: &Arc<Counters>,
    hook_tx: mpsc::Sender<()>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let tun = LocalApi::new(&cfg.source.socket, cfg.source.timeout)
        .tun()
        .await
        .ok()
        .flatten();
    let refused = cfg
        .metrics_listen
        .and_then(|a| crate::metrics::userspace_refusal(a, cfg.metrics_token.is_some(), tun));
    if let Some(why) = &refused {
        error!("not serving /metrics: {why}");
    }
    if let Some(addr) = cfg.metrics_listen.filter(|_| refused.is_none()) {
        let (listener, store) = crate::metrics::bind(addr, &cfg.state_dir).await?;
        tasks.0.push(tokio::spawn(crate::metrics::serve(
            listener,
            store,
            counters.clone(),
            cfg.metrics_token.clone(),
        )));
    }
    if let Some(w) = &cfg.web {
        let bound = crate::web::listen::bind(&w.listen).await?;
        let web = crate::web::Web::new(cfg, w, &pass::local_hostname())?;
        tasks
            .0
            .push(tokio::spawn(crate::web::listen::serve(web, bound)));
    }
    if let Some(w) = &cfg.webhooks {
        let listener = crate::source::control::webhooks::bind(w.listen).await?;
        tasks
            .0
            .push(tokio::spawn(crate::source::control::webhooks::serve(
                listener,
                w.secret.clone(),
                hook_tx,
            )));
    }
    Ok(())
}

/// Runs the daemon on `store`, opened by the caller from `cfg.state_dir`.
pub async fn run(config_path: Option<PathBuf>, cfg: Config, store: Store) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    if cfg.channels.is_empty() {
        warn!("no [[notify]] channel configured: alerts are only logged and kept in `events`");
    }
    info!(
        version = crate::VERSION,
        socket = %cfg.source.socket.display(),
        state = %store.path().display(),
        interval = ?cfg.daemon.interval,
        reconcile = ?cfg.daemon.reconcile,
        channels = cfg.channels.len(),
        "tailscale-monitor running"
    );

    crate::memory::fit(
        store.device_count().unwrap_or(0),
        crate::memory::LARGE_FOR_RUN,
    );
    let counters = Arc::new(Counters::default());
    let mut tasks = Tasks(Vec::new());
    let (hook_tx, mut hook_rx) = mpsc::channel::<()>(16);
    listeners(&cfg, &counters, hook_tx, &mut tasks).await?;
    // The exports run on a thread of their own: a collector's timeouts never hold up this loop.
    crate::app::export::spawn(&cfg, &pass::local_hostname())?;
    let (tx, mut rx) = mpsc::channel(256);
    if let SourceKind::LocalApi = cfg.source.kind {
        let api = LocalApi::new(&cfg.source.socket, cfg.source.timeout);
        tasks.0.push(tokio::spawn(bus::bus(api, tx)));
    }
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec / 2));
    let mut d = Daemon {
        source: Source::from_config(&cfg.source),
        control: cfg.control.as_ref().map(ControlSource::from_config),
        host: pass::local_hostname(),
        schedule: Schedule::new(Periods::of(&cfg, watchdog), Instant::now()),
        cfg,
        config_path,
        store,
        counters,
        watchdog,
        streaming: false,
        members: Members::default(),
        store_outage: None,
        last: LastRead::default(),
    };

    d.guarded_pass().await;
    // Whatever a previous run left queued (a crash, kill -9, a long SMTP outage) is retried now,
    // not at its backoff time.
    if let Err(e) = pass::deliver(&mut d.store, &d.cfg, &d.host, true).await {
        d.store_failed(e).await;
    }
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    let (guard_tx, mut guard_rx) = mpsc::channel::<Option<Enforced>>(1);

    loop {
        let (at, wake) = d.schedule.next(d.store_outage.is_some());
        tokio::select! {
            Some(ev) = rx.recv() => d.on_bus(ev).await,
            _ = sleep_until(at) => {
                d.schedule.fire(wake, Instant::now());
                let r = match wake {
                    Wake::Pass | Wake::Full => {
                        d.guarded_pass().await;
                        Ok(())
                    }
                    // `fire` made the control plane due and scheduled a pass now.
                    Wake::Control => Ok(()),
                    Wake::Access => {
                        d.access_check().await;
                        Ok(())
                    }
                    Wake::Deliver => d.send_now().await,
                    Wake::Poll => d.deliver_due().await,
                    Wake::Guard => match crate::app::guard::poll_due(&d.store, &d.cfg) {
                        Ok(true) => {
                            // The root side's read (nft, up to a few MB of JSON) runs on another
                            // task with its deadline; the loop keeps pinging the watchdog.
                            let (cfg, tx) = (d.cfg.clone(), guard_tx.clone());
                            tokio::spawn(async move {
                                let _ = tx.send(crate::app::guard::read_table(&cfg).await).await;
                            });
                            Ok(())
                        }
                        Ok(false) => {
                            d.schedule.guard_read();
                            Ok(())
                        }
                        Err(e) => {
                            d.schedule.guard_read();
                            Err(e)
                        }
                    },
                    Wake::Watchdog => {
                        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    d.store_failed(e).await;
                }
            }
            Some(()) = hook_rx.recv() => {
                // A verified Tailscale webhook: read the control plane now.
                d.schedule.webhook(Instant::now());
            }
            Some(read) = guard_rx.recv() => {
                d.schedule.guard_read();
                if let Some(read) = read {
                    if let Err(e) = d.guard_table(read).await {
                        d.store_failed(e).await;
                    }
                }
            }
            _ = hup.recv() => d.reload(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    drop(tasks);
    info!("shutting down: flushing the outbox");
    let deadline = Instant::now() + SHUTDOWN_FLUSH;
    match tokio::time::timeout_at(deadline, pass::deliver(&mut d.store, &d.cfg, &d.host, true))
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(error = %e, "flushing the outbox"),
        Err(_) => warn!("outbox flush timed out; pending alerts are sent at the next start"),
    }
    info!(pending = d.store.outbox_depth()?.pending, "stopped");
    Ok(())
}
