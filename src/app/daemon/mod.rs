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

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::model::access::NodeView;
use crate::app::pass;
use crate::app::outage::StoreOutage;
use crate::source::control::ControlSource;
use crate::source::ipnbus::{self, Signal};
use crate::source::localapi::{LocalApi, WatchError};
use crate::source::Source;
use crate::store::Store;

/// Wait after a bus notify before reading `/status`, to coalesce a burst.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// The shortest time between two passes triggered by the bus.
const MIN_PASS_GAP: Duration = Duration::from_millis(250);
/// How often the outbox is checked for due deliveries when nothing else happens.
const DELIVERY_POLL: Duration = Duration::from_secs(2);
/// Retry period of passes while the state database cannot be written (at most `interval`).
const STORE_RETRY: Duration = Duration::from_secs(10);
/// How long shutdown may spend flushing the outbox.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);
/// Reconnect backoff of the bus: from 250 ms doubling to 30 s.
const BUS_BACKOFF_MIN: Duration = Duration::from_millis(250);
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the bus task reports.
#[derive(Debug)]
pub enum Bus {
    /// Streaming with this mask.
    Up {
        mask: u64,
        version: String,
    },
    Signal(Signal),
    /// The stream ended or could not be opened; the task retries by itself.
    Down(String),
}

/// Holds the IPN bus open for as long as the receiver lives, reconnecting with backoff.
pub async fn bus(api: LocalApi, tx: mpsc::Sender<Bus>) {
    let mut backoff = BUS_BACKOFF_MIN;
    let mut forced_mask: Option<u64> = None;
    loop {
        let version = match api.status().await {
            Ok(s) => s.version,
            // A daemon that is not Running still streams; learn its version from the bus later.
            Err(_) => String::new(),
        };
        let mask = forced_mask.unwrap_or_else(|| ipnbus::mask_for(&version));
        match api.watch(mask).await {
            Ok(mut w) => {
                backoff = BUS_BACKOFF_MIN;
                if tx.send(Bus::Up { mask, version }).await.is_err() {
                    return;
                }
                let why = loop {
                    match w.next_line().await {
                        Ok(Some(line)) => {
                            let s = ipnbus::classify(&line);
                            if s == Signal::Garbage {
                                warn!(line = %crate::sanitize::line(&String::from_utf8_lossy(&line), 120), "IPN bus: not a Notify; re-reading status");
                            }
                            if s != Signal::Quiet && tx.send(Bus::Signal(s)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "stream ended".to_owned(),
                        Err(e) => break e.0,
                    }
                };
                forced_mask = None;
                if tx.send(Bus::Down(why)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(WatchError::Rejected { status: 400, error }) => {
                if let Some(m) = ipnbus::fallback_mask(mask) {
                    warn!(mask, fallback = m, error = %error, "IPN bus refused the mask; retrying with fewer bits");
                    forced_mask = Some(m);
                    continue;
                }
                if tx.send(Bus::Down(error.0)).await.is_err() {
                    return;
                }
            }
            Err(WatchError::Rejected { error, .. }) | Err(WatchError::Source(error)) => {
                if tx.send(Bus::Down(error.0)).await.is_err() {
                    return;
                }
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(BUS_BACKOFF_MAX);
    }
}

struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    store: Store,
    source: Source,
    host: String,
    /// The mask the IPN bus streams with; `None` while it is not streaming.
    bus_mask: Option<u64>,
    /// When reads started failing (reset by a successful read).
    failing_since: Option<Instant>,
    /// The next debounced pass, if one is scheduled.
    pass_at: Option<Instant>,
    /// The next timed full pass.
    full_at: Instant,
    /// When the last batch of new events was sent, and when the held ones go out.
    last_sent: Option<Instant>,
    deliver_at: Option<Instant>,
    /// Set while the state database cannot be written.
    store_outage: Option<StoreOutage>,
    /// What the last pass read of who may reach this node (`update_available` left out: it comes
    /// from `/status`), and when it is read again on its own.
    last_view: Option<NodeView>,
    access_at: Instant,
    /// `/status` Self `Online` at the last pass: with watches, re-read with the access check
    /// (`status?peers=false`, a few hundred bytes), since tailscaled sends no bus message when it
    /// loses the control plane.
    last_self_online: Option<bool>,
    /// The control plane's API, and when it is polled next (a pass reads it when due).
    control: Option<ControlSource>,
    control_at: Instant,
    /// The next pass reads the control plane too.
    control_due: bool,
    counters: std::sync::Arc<crate::metrics::Counters>,
    /// The membership facts of every device at the last pass, to tell a presence-only
    /// `PeersChanged` (no pass) from a real change.
    facts: std::collections::HashMap<String, ipnbus::PeerFacts>,
    /// When the last pass started: passes are at least `MIN_PASS_GAP` apart under a storm.
    last_pass_at: Option<Instant>,
    /// The next pass reads the netmap too (see [`Daemon::pass`]).
    netmap_due: bool,
    /// Stable IDs of the devices `[[watch]]` covers: their presence notifies cost a pass.
    watched: std::collections::HashSet<String>,
    /// When the guard's counters are read next (`[guard] mode = "enforce"`).
    guard_at: Instant,
}

impl Daemon {
    /// The full-pass period: `reconcile` while the bus streams everything we need; `interval`
    /// otherwise — including daemons before 1.102, whose bus has no WireGuard state, so that
    /// `peer.connected` still comes from `/status` within `interval`.
    fn period(&self) -> Duration {
        if self
            .bus_mask
            .is_some_and(|m| m & ipnbus::PEER_WIREGUARD_STATE != 0)
        {
            self.cfg.daemon.reconcile
        } else {
            self.cfg.daemon.interval
        }
    }

    fn control_interval(&self) -> Duration {
        self.cfg
            .control
            .as_ref()
            .map_or(Duration::from_secs(60), |c| c.interval)
    }

    fn schedule(&mut self, at: Instant) {
        self.pass_at = Some(self.pass_at.map_or(at, |p| p.min(at)));
    }

    /// Schedules a pass for a bus notify: at once after a quiet period (`DEBOUNCE`), but never
    /// sooner than `MIN_PASS_GAP` after the last one, so a storm of notifies is a few passes a
    /// second at most and the first change is still handled at once.
    fn schedule_for_bus(&mut self) {
        let at = Instant::now() + DEBOUNCE;
        let at = self.last_pass_at.map_or(at, |l| at.max(l + MIN_PASS_GAP));
        self.schedule(at);
    }

    /// A `PeersChanged`: a pass only if some peer's membership facts differ from the last pass,
    /// or a watched device's presence may have changed.
    fn peers_changed(&mut self, facts: Vec<ipnbus::PeerFacts>) {
        let watched = facts.iter().any(|f| self.watched.contains(&f.id));
        if !watched && facts.iter().all(|f| self.facts.get(&f.id) == Some(f)) {
            self.counters
                .presence_only
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.schedule_for_bus();
        }
    }

    async fn pass(&mut self) -> anyhow::Result<()> {
        self.pass_at = None;
        self.last_pass_at = Some(Instant::now());
        self.counters
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.full_at = Instant::now() + self.period();
        self.access_at = Instant::now() + self.cfg.daemon.access_interval;
        // A pass for peers that joined or changed reads `/status` only and keeps the last view of
        // who may reach this node: that view changes with a full netmap (SelfChange, NetMap), which
        // asks for it, or silently, which `access_interval` catches. Every other pass reads both.
        let reuse = if self.netmap_due {
            None
        } else {
            self.last_view.as_ref()
        };
        let seen = pass::read(&self.source, &mut self.store, reuse).await?;
        self.netmap_due = false;
        match &seen {
            Ok(snap) => {
                self.failing_since = None;
                self.facts = snap
                    .devices
                    .values()
                    .map(|d| (d.id.0.clone(), ipnbus::PeerFacts::of(d)))
                    .collect();
                // Said in the log when it starts (the first pass) and when it changes; the
                // alert itself is raised once by the core.
                for u in snap.node.iter().flat_map(|v| &v.unread) {
                    if !self
                        .last_view
                        .as_ref()
                        .is_some_and(|l| l.unread.contains(u))
                    {
                        warn!(part = u.part.as_str(), error = %u.error, fix = %u.fix, "not visible: {}", u.part.what());
                    }
                }
                self.last_view = snap.node.clone().map(|mut v| {
                    v.trust.update_available = None;
                    v
                });
            }
            Err(e) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                let deadline = since + self.cfg.daemon.grace;
                if Instant::now() < deadline {
                    warn!(error = %e, grace_left = ?deadline - Instant::now(), "tailscaled unreachable; alerting if it stays so");
                    self.schedule(deadline);
                    return Ok(());
                }
            }
        }
        let read_control = self.control.is_some() && self.control_due;
        let plan = pass::Plan {
            reuse_view: None,
            control: self.control.as_ref().filter(|_| read_control),
            digest: true,
        };
        let passed = pass::commit(
            &self.source,
            &mut self.store,
            &self.cfg,
            seen,
            &plan,
            &mut self.store_outage,
        )
        .await?;
        let report = passed.report;
        if read_control {
            // A 429 says when to come back; otherwise the configured interval.
            let wait = report
                .control_error
                .as_ref()
                .and_then(|e| e.retry_after())
                .unwrap_or(self.control_interval());
            self.control_due = false;
            self.control_at = Instant::now() + wait;
        }
        if let Some(at) = report.presence_due {
            // A watched device crosses its offline threshold then: look again at that moment.
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            self.schedule(Instant::now() + wait + Duration::from_millis(50));
        }
        if let Ok(snap) = &report.seen {
            self.last_self_online = snap.self_online;
            self.watched = report.watched.iter().map(|id| id.0.clone()).collect();
        }
        if passed.queued_more || report.events.iter().any(|e| !e.record_only) {
            // Leading edge: after a quiet period, send at once; within the window after a send,
            // hold the events so that a burst becomes one more message, not many.
            let now = Instant::now();
            match self.last_sent {
                Some(t) if now < t + self.cfg.daemon.batch_window => {
                    let at = t + self.cfg.daemon.batch_window;
                    self.deliver_at = Some(self.deliver_at.map_or(at, |d| d.min(at)));
                }
                _ => self.send_now().await?,
            }
        }
        Ok(())
    }

    /// The cheap re-read of who may reach this node, between full passes: tailscaled >= 1.100
    /// applies a packet-filter-only update from the control plane without any bus message, so
    /// this is how such a change is caught within `access_interval`. Only a difference (or an
    /// error) costs a full pass.
    async fn access_check(&mut self) {
        self.access_at = Instant::now() + self.cfg.daemon.access_interval;
        let Source::LocalApi(api) = &self.source else {
            return;
        };
        let api = api.clone();
        if !self.cfg.policy.watches.is_empty() && self.last_self_online.is_some() {
            match api.self_online().await {
                Ok(online) if online != self.last_self_online => {
                    info!(online = ?online, "this server's connection to the control plane changed; re-reading the tailnet");
                    self.schedule(Instant::now());
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "self status re-read failed; a full pass will tell");
                    self.schedule(Instant::now());
                }
            }
        }
        // A part that stays unreadable reads the same each time: no pass, no repeated message.
        let v = api.node_view().await;
        if !self.last_view.as_ref().is_some_and(|l| l.same_access(&v)) {
            info!("who may reach this node changed; re-reading the tailnet");
            self.netmap_due = true;
            self.schedule(Instant::now());
        }
    }

    /// The state database could not be written: tell every channel not yet told, straight (the
    /// outbox is in that database), and retry the pass soon.
    async fn store_failed(&mut self, e: anyhow::Error) {
        let error = crate::sanitize::error_line(&e);
        let retry = self.cfg.daemon.interval.min(STORE_RETRY);
        self.schedule(Instant::now() + retry);
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

    /// Runs a pass; a failure (only the store can fail one) becomes [`Daemon::store_failed`].
    async fn guarded_pass(&mut self) {
        if let Err(e) = self.pass().await {
            self.store_failed(e).await;
        }
    }

    /// What the guard dropped since the last look (read off the main loop, within a deadline):
    /// `guard.blocked` goes out at once.
    async fn guard_table(&mut self, read: crate::model::guard::Enforced) -> anyhow::Result<()> {
        let events = crate::app::guard::on_table(&mut self.store, &self.cfg, read, Utc::now()).await?;
        if !events.is_empty() {
            self.send_now().await?;
        }
        Ok(())
    }

    async fn send_now(&mut self) -> anyhow::Result<()> {
        self.deliver_at = None;
        self.last_sent = Some(Instant::now());
        pass::deliver(&mut self.store, &self.cfg, &self.host, false).await?;
        Ok(())
    }

    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: started without --config; nothing to reload");
            return;
        };
        let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
        match Config::load(&path) {
            Ok(new) => {
                // Keys that set up tasks started once (the listeners, the IPN bus) or the store:
                // said, not silently ignored.
                let restart = new.restart_only_changes(&self.cfg);
                if !restart.is_empty() {
                    warn!(keys = %restart.join(", "), "SIGHUP: these keys take effect only after a restart (systemctl restart tailscale-monitor); the running values stay until then");
                }
                // The restart-only keys keep their running values, so that the next SIGHUP
                // compares with what actually runs.
                self.cfg = new.keeping_restart_only(&self.cfg);
                self.source = Source::from_config(&self.cfg.source);
                self.full_at = Instant::now() + self.period();
                self.control = self
                    .cfg
                    .control
                    .as_ref()
                    .map(|c| ControlSource::new(c, crate::source::control::TIMEOUT));
                self.control_due = true;
                // `[guard]` takes effect (or its table goes) at this pass.
                self.schedule(Instant::now());
                info!(channels = self.cfg.channels.len(), "config reloaded");
            }
            Err(e) => error!(error = %e, "SIGHUP: config not reloaded, keeping the old one"),
        }
        let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    }
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

    let counters = std::sync::Arc::new(crate::metrics::Counters::default());
    let tun = crate::source::localapi::LocalApi::new(&cfg.source.socket, cfg.source.timeout)
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
    let metrics_task = match cfg.metrics_listen.filter(|_| refused.is_none()) {
        Some(addr) => {
            let (listener, store) = crate::metrics::bind(addr, &cfg.state_dir).await?;
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                store,
                counters.clone(),
                cfg.metrics_token.clone(),
            )))
        }
        None => None,
    };
    let (hook_tx, mut hook_rx) = mpsc::channel::<()>(16);
    let hooks_task = match &cfg.webhooks {
        Some(w) => {
            let listener = crate::source::control::webhooks::bind(w.listen).await?;
            Some(tokio::spawn(crate::source::control::webhooks::serve(
                listener,
                w.secret.clone(),
                hook_tx,
            )))
        }
        None => None,
    };
    let (tx, mut rx) = mpsc::channel(256);
    let bus_task = match &cfg.source.kind {
        crate::config::SourceKind::LocalApi => Some(tokio::spawn(bus(
            LocalApi::new(&cfg.source.socket, cfg.source.timeout),
            tx,
        ))),
        crate::config::SourceKind::Cli => None,
    };
    let mut d = Daemon {
        source: Source::from_config(&cfg.source),
        host: pass::local_hostname(),
        cfg,
        config_path,
        store,
        bus_mask: None,
        failing_since: None,
        pass_at: None,
        full_at: Instant::now(),
        last_sent: None,
        deliver_at: None,
        store_outage: None,
        last_view: None,
        access_at: Instant::now(),
        last_self_online: None,
        control: None,
        control_at: Instant::now(),
        control_due: true,
        counters,
        facts: std::collections::HashMap::new(),
        last_pass_at: None,
        netmap_due: true,
        watched: std::collections::HashSet::new(),
        guard_at: Instant::now() + crate::app::guard::POLL,
    };
    d.control = d
        .cfg
        .control
        .as_ref()
        .map(|c| ControlSource::new(c, crate::source::control::TIMEOUT));

    d.guarded_pass().await;
    // Whatever a previous run left queued (a crash, kill -9, a long SMTP outage) is retried now,
    // not at its backoff time.
    if let Err(e) = pass::deliver(&mut d.store, &d.cfg, &d.host, true).await {
        d.store_failed(e.into()).await;
    }
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    let mut watchdog_usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec / 2));
    let far = Duration::from_secs(86400 * 365);
    let (guard_tx, mut guard_rx) = mpsc::channel::<Option<crate::model::guard::Enforced>>(1);
    let mut guard_reading = false;

    loop {
        let pass_at = d.pass_at.unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Bus::Up { mask, version } => {
                    info!(mask, version = %version, "IPN bus streaming");
                    d.bus_mask = Some(mask);
                    d.netmap_due = true;
                    d.full_at = Instant::now() + d.period();
                    d.schedule(Instant::now() + DEBOUNCE);
                }
                Bus::Signal(Signal::Peers(facts)) => d.peers_changed(facts),
                Bus::Signal(Signal::Connected) => d.schedule_for_bus(),
                Bus::Signal(_) => {
                    d.netmap_due = true;
                    d.schedule_for_bus();
                }
                Bus::Down(why) => {
                    if d.bus_mask.take().is_some() {
                        warn!(error = %why, "IPN bus lost; reconnecting");
                    }
                    d.netmap_due = true;
                    d.full_at = d.full_at.min(Instant::now() + d.period());
                    d.schedule(Instant::now() + DEBOUNCE);
                }
            },
            _ = sleep_until(pass_at) => d.guarded_pass().await,
            _ = sleep_until(d.full_at) => {
                d.netmap_due = true;
                d.guarded_pass().await
            }
            _ = sleep_until(d.access_at), if d.failing_since.is_none() => d.access_check().await,
            Some(()) = hook_rx.recv() => {
                // A verified Tailscale webhook: read the control plane now.
                d.control_due = true;
                d.schedule(Instant::now());
            }
            _ = sleep_until(d.control_at), if d.control.is_some() && !d.control_due => {
                d.control_due = true;
                d.schedule(Instant::now());
            }
            _ = sleep_until(d.deliver_at.unwrap_or_else(|| Instant::now() + far)), if d.deliver_at.is_some() => {
                if let Err(e) = d.send_now().await {
                    d.store_failed(e).await;
                }
            }
            _ = sleep(DELIVERY_POLL) => {
                let due = d.store.next_due().map(|t| t.is_some_and(|t| t <= Utc::now()));
                let r = match due {
                    Ok(true) => pass::deliver(&mut d.store, &d.cfg, &d.host, false).await.map(|_| ()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    d.store_failed(e.into()).await;
                }
            }
            _ = sleep_until(d.guard_at), if d.cfg.guard.enforcing() && d.store_outage.is_none() && !guard_reading => {
                d.guard_at = Instant::now() + crate::app::guard::POLL;
                match crate::app::guard::poll_due(&d.store, &d.cfg) {
                    Ok(true) => {
                        // The root side's read (nft, up to a few MB of JSON) runs on another task
                        // with its deadline; the loop keeps pinging the watchdog meanwhile.
                        guard_reading = true;
                        let (cfg, tx) = (d.cfg.clone(), guard_tx.clone());
                        tokio::spawn(async move {
                            let _ = tx.send(crate::app::guard::read_table(&cfg).await).await;
                        });
                    }
                    Ok(false) => {}
                    Err(e) => d.store_failed(e.into()).await,
                }
            }
            Some(read) = guard_rx.recv() => {
                guard_reading = false;
                if let Some(read) = read {
                    if let Err(e) = d.guard_table(read).await {
                        d.store_failed(e).await;
                    }
                }
            }
            _ = sleep(watchdog.unwrap_or(far)), if watchdog.is_some() => {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
            _ = hup.recv() => d.reload(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    if let Some(t) = bus_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = hooks_task {
        t.abort();
    }
    info!("shutting down: flushing the outbox");
    let deadline = Instant::now() + SHUTDOWN_FLUSH;
    match tokio::time::timeout_at(
        deadline,
        pass::deliver(&mut d.store, &d.cfg, &d.host, true),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => error!(error = %e, "flushing the outbox"),
        Err(_) => warn!("outbox flush timed out; pending alerts are sent at the next start"),
    }
    info!(pending = d.store.outbox_depth()?.pending, "stopped");
    Ok(())
}
