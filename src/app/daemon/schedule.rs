//! When `run` does what: every deadline and due flag of the loop, and the rules that move them.
//!
//! Nothing here sleeps or reads a clock: every method takes `now`, so the rules are unit-tested
//! with made-up instants. The loop asks [`Schedule::next`] what wakes it next, sleeps until then
//! and hands the [`Wake`] back to [`Schedule::fire`].

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// Wait after a bus notify before reading `/status`, to coalesce a burst.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(25);
/// The shortest time between two passes triggered by the bus.
pub(crate) const MIN_PASS_GAP: Duration = Duration::from_millis(250);
/// How often the outbox is checked for due deliveries.
pub(crate) const DELIVERY_POLL: Duration = Duration::from_secs(2);
/// Retry period of passes while the state database cannot be written (at most `interval`).
pub(crate) const STORE_RETRY: Duration = Duration::from_secs(10);
/// A watched device's offline threshold is looked at this long after it falls due.
const PRESENCE_SLACK: Duration = Duration::from_millis(50);
/// How often the control plane is read when `[control]` sets no interval of its own.
const CONTROL_DEFAULT: Duration = Duration::from_secs(60);

/// The periods the schedule runs on, taken from the config (again at each SIGHUP).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Periods {
    /// Poll period while the IPN bus does not stream WireGuard state (and for the CLI source).
    pub interval: Duration,
    /// Full re-read period while it does (the safety net).
    pub reconcile: Duration,
    pub access_interval: Duration,
    pub grace: Duration,
    pub batch_window: Duration,
    /// `None`: no control plane configured.
    pub control: Option<Duration>,
    /// `[guard] mode = "enforce"`: what the guard dropped is read every `guard::POLL`.
    pub guard: bool,
    /// Half of systemd's `WatchdogSec=`, when set.
    pub watchdog: Option<Duration>,
}

impl Periods {
    pub fn of(cfg: &Config, watchdog: Option<Duration>) -> Periods {
        Periods {
            interval: cfg.daemon.interval,
            reconcile: cfg.daemon.reconcile,
            access_interval: cfg.daemon.access_interval,
            grace: cfg.daemon.grace,
            batch_window: cfg.daemon.batch_window,
            control: cfg.control.as_ref().map(|c| c.interval),
            guard: cfg.guard.enforcing(),
            watchdog,
        }
    }
}

/// What woke the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A scheduled (debounced, retried or presence) pass.
    Pass,
    /// The timed full pass (`reconcile` or `interval`): the netmap is read too.
    Full,
    /// The cheap re-read of who may reach this node.
    Access,
    /// The control plane is due: a pass now reads it.
    Control,
    /// Held events go out (the batch window closed).
    Deliver,
    /// The outbox is looked at for retries that fell due.
    Poll,
    /// What the guard dropped is read.
    Guard,
    /// systemd's watchdog is pinged.
    Watchdog,
}

/// What a pass tells the schedule when it is done.
#[derive(Debug, Default)]
pub(crate) struct PassDone {
    /// The control plane was read (whether or not it answered).
    pub control_read: bool,
    /// The control plane answered 429 with a `Retry-After`.
    pub retry_after: Option<Duration>,
    /// A watched device's offline threshold falls due in this long.
    pub presence_due: Option<Duration>,
    /// The pass queued something to send.
    pub to_send: bool,
}

/// The loop's deadlines and due flags.
#[derive(Debug)]
pub(crate) struct Schedule {
    periods: Periods,
    /// The IPN bus streams WireGuard state (>= 1.102): full passes every `reconcile`.
    wireguard_bus: bool,
    /// The next scheduled pass, if any.
    pass_at: Option<Instant>,
    /// When the last pass started: passes are at least `MIN_PASS_GAP` apart under a storm.
    last_pass_at: Option<Instant>,
    /// The next timed full pass.
    full_at: Instant,
    /// The next access re-read.
    access_at: Instant,
    /// When the control plane is due again, and whether the next pass reads it.
    control_at: Instant,
    control_due: bool,
    /// The next pass reads the netmap too.
    netmap_due: bool,
    /// When the last batch of events was sent, and when the held ones go out.
    last_sent: Option<Instant>,
    deliver_at: Option<Instant>,
    /// The next look at the outbox.
    poll_at: Instant,
    /// The next read of what the guard dropped, and whether one is under way.
    guard_at: Instant,
    guard_reading: bool,
    /// The next watchdog ping.
    watchdog_at: Option<Instant>,
    /// When reads started failing (reset by a successful read).
    failing_since: Option<Instant>,
}

impl Schedule {
    /// At start: the first pass reads everything, the control plane included.
    pub fn new(periods: Periods, now: Instant) -> Schedule {
        Schedule {
            wireguard_bus: false,
            pass_at: None,
            last_pass_at: None,
            full_at: now,
            access_at: now,
            control_at: now,
            control_due: true,
            netmap_due: true,
            last_sent: None,
            deliver_at: None,
            poll_at: now + DELIVERY_POLL,
            guard_at: now + crate::app::guard::POLL,
            guard_reading: false,
            watchdog_at: periods.watchdog.map(|w| now + w),
            failing_since: None,
            periods,
        }
    }

    /// The full-pass period: `reconcile` while the bus streams everything needed; `interval`
    /// otherwise, including daemons before 1.102, whose bus has no WireGuard state, so that
    /// `peer.connected` still comes from `/status` within `interval`.
    pub fn period(&self) -> Duration {
        if self.wireguard_bus {
            self.periods.reconcile
        } else {
            self.periods.interval
        }
    }

    /// A pass no later than `at`.
    pub fn pass_by(&mut self, at: Instant) {
        self.pass_at = Some(self.pass_at.map_or(at, |p| p.min(at)));
    }

    /// A bus notify: at once after a quiet period (`DEBOUNCE`), but never sooner than
    /// `MIN_PASS_GAP` after the last pass, so a storm of notifies is a few passes a second at
    /// most and the first change is still handled at once.
    pub fn bus_notify(&mut self, now: Instant) {
        let at = now + DEBOUNCE;
        let at = self.last_pass_at.map_or(at, |l| at.max(l + MIN_PASS_GAP));
        self.pass_by(at);
    }

    /// A bus notify that may change who may reach this node: the netmap is read too.
    pub fn bus_netmap(&mut self, now: Instant) {
        self.netmap_due = true;
        self.bus_notify(now);
    }

    /// The bus streams (again), with or without WireGuard state.
    pub fn bus_up(&mut self, wireguard: bool, now: Instant) {
        self.wireguard_bus = wireguard;
        self.netmap_due = true;
        self.full_at = now + self.period();
        self.pass_by(now + DEBOUNCE);
    }

    /// The bus went down: look at once whether tailscaled is still there, and poll meanwhile.
    pub fn bus_down(&mut self, now: Instant) {
        self.wireguard_bus = false;
        self.netmap_due = true;
        self.full_at = self.full_at.min(now + self.period());
        self.pass_by(now + DEBOUNCE);
    }

    /// A pass starts. Returns whether it reads the netmap (otherwise it reuses the last view of
    /// who may reach this node).
    pub fn pass_started(&mut self, now: Instant) -> bool {
        self.pass_at = None;
        self.last_pass_at = Some(now);
        self.full_at = now + self.period();
        self.access_at = now + self.periods.access_interval;
        std::mem::take(&mut self.netmap_due)
    }

    /// The pass read tailscaled.
    pub fn read_ok(&mut self) {
        self.failing_since = None;
    }

    /// The pass could not read tailscaled. Within `grace` of the first failure, the failure is
    /// not recorded: a pass is scheduled for when it runs out, and the time left is returned.
    pub fn read_failed(&mut self, now: Instant) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert(now);
        let deadline = since + self.periods.grace;
        if now < deadline {
            self.pass_by(deadline);
            return Some(deadline - now);
        }
        None
    }

    /// Whether this pass reads the control plane.
    pub fn control_now(&self) -> bool {
        self.periods.control.is_some() && self.control_due
    }

    /// The tail of a pass. Returns whether to send at once; otherwise what it queued is held
    /// until the batch window closes ([`Wake::Deliver`]).
    pub fn pass_done(&mut self, done: &PassDone, now: Instant) -> bool {
        if done.control_read {
            // A 429 says when to come back; otherwise the configured interval.
            let wait = done
                .retry_after
                .or(self.periods.control)
                .unwrap_or(CONTROL_DEFAULT);
            self.control_due = false;
            self.control_at = now + wait;
        }
        if let Some(wait) = done.presence_due {
            // A watched device crosses its offline threshold then: look again at that moment.
            self.pass_by(now + wait + PRESENCE_SLACK);
        }
        if !done.to_send {
            return false;
        }
        // Leading edge: after a quiet period, send at once; within the window after a send,
        // hold the events so that a burst becomes one more message, not many.
        match self.last_sent {
            Some(t) if now < t + self.periods.batch_window => {
                let at = t + self.periods.batch_window;
                self.deliver_at = Some(self.deliver_at.map_or(at, |d| d.min(at)));
                false
            }
            _ => true,
        }
    }

    /// What was queued went out (or was tried).
    pub fn sent(&mut self, now: Instant) {
        self.deliver_at = None;
        self.last_sent = Some(now);
    }

    /// The access re-read found a difference: a full pass, now.
    pub fn access_changed(&mut self, now: Instant) {
        self.netmap_due = true;
        self.pass_by(now);
    }

    /// A verified webhook: read the control plane now.
    pub fn webhook(&mut self, now: Instant) {
        self.control_due = true;
        self.pass_by(now);
    }

    /// The state database could not be written: retry the pass soon. Returns the retry period.
    pub fn store_failed(&mut self, now: Instant) -> Duration {
        let retry = self.periods.interval.min(STORE_RETRY);
        self.pass_by(now + retry);
        retry
    }

    /// The guard's read came back, or was not started after all.
    pub fn guard_read(&mut self) {
        self.guard_reading = false;
    }

    /// A new config (SIGHUP): new periods, the control plane read again, and a pass now (the
    /// `[guard]` section takes effect, or its table goes, at that pass).
    pub fn reloaded(&mut self, periods: Periods, now: Instant) {
        self.periods = periods;
        self.full_at = now + self.period();
        self.control_due = true;
        self.pass_by(now);
    }

    /// What wakes the loop next, and when. `store_down`: the state database cannot be written
    /// (the guard's counters wait for it).
    pub fn next(&self, store_down: bool) -> (Instant, Wake) {
        let mut best = (self.full_at, Wake::Full);
        let mut consider = |at: Option<Instant>, w: Wake| {
            if let Some(at) = at {
                if at < best.0 {
                    best = (at, w);
                }
            }
        };
        consider(self.pass_at, Wake::Pass);
        consider(
            Some(self.access_at).filter(|_| self.failing_since.is_none()),
            Wake::Access,
        );
        consider(
            Some(self.control_at).filter(|_| self.periods.control.is_some() && !self.control_due),
            Wake::Control,
        );
        consider(self.deliver_at, Wake::Deliver);
        consider(Some(self.poll_at), Wake::Poll);
        consider(
            Some(self.guard_at)
                .filter(|_| self.periods.guard && !store_down && !self.guard_reading),
            Wake::Guard,
        );
        consider(self.watchdog_at, Wake::Watchdog);
        best
    }

    /// The loop woke for `w`: move that deadline on, and say what it asks of the loop.
    pub fn fire(&mut self, w: Wake, now: Instant) {
        match w {
            // A scheduled pass clears `pass_at` itself when it starts.
            Wake::Pass => {}
            Wake::Full => self.netmap_due = true,
            Wake::Access => self.access_at = now + self.periods.access_interval,
            Wake::Control => {
                self.control_due = true;
                self.pass_by(now);
            }
            Wake::Deliver => {}
            Wake::Poll => self.poll_at = now + DELIVERY_POLL,
            Wake::Guard => {
                self.guard_at = now + crate::app::guard::POLL;
                self.guard_reading = true;
            }
            Wake::Watchdog => self.watchdog_at = self.periods.watchdog.map(|w| now + w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periods() -> Periods {
        Periods {
            interval: Duration::from_secs(30),
            reconcile: Duration::from_secs(300),
            access_interval: Duration::from_secs(10),
            grace: Duration::from_secs(60),
            batch_window: Duration::from_secs(5),
            control: Some(Duration::from_secs(60)),
            guard: false,
            watchdog: None,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The next wake that is not the outbox's poll (which comes every 2 s).
    fn next_but_poll(sc: &mut Schedule) -> (Instant, Wake) {
        loop {
            match sc.next(false) {
                (at, Wake::Poll) => sc.fire(Wake::Poll, at),
                other => return other,
            }
        }
    }

    /// A started daemon whose first pass is done at `t0`.
    fn started(t0: Instant) -> Schedule {
        let mut sc = Schedule::new(periods(), t0);
        assert!(sc.pass_started(t0), "the first pass reads the netmap");
        assert!(sc.control_now(), "and the control plane");
        let send = sc.pass_done(
            &PassDone {
                control_read: true,
                ..PassDone::default()
            },
            t0,
        );
        assert!(!send);
        sc
    }

    #[test]
    fn the_first_wake_after_start_is_the_access_reread() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        assert_eq!(sc.next(false), (t0 + DELIVERY_POLL, Wake::Poll));
        sc.fire(Wake::Poll, t0 + DELIVERY_POLL);
        assert_eq!(
            sc.next(false),
            (t0 + 2 * DELIVERY_POLL, Wake::Poll),
            "every 2 s"
        );
        assert_eq!(next_but_poll(&mut sc), (t0 + s(10), Wake::Access));
    }

    #[test]
    fn full_passes_follow_the_bus() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        assert_eq!(sc.period(), s(30), "polling until the bus streams");
        sc.bus_up(true, t0);
        assert_eq!(
            sc.period(),
            s(300),
            "reconcile while it streams WireGuard state"
        );
        assert_eq!(sc.next(false), (t0 + DEBOUNCE, Wake::Pass));
        assert!(
            sc.pass_started(t0 + DEBOUNCE),
            "a bus (re)start reads the netmap"
        );
        assert_eq!(sc.full_at, t0 + DEBOUNCE + s(300));
        sc.bus_down(t0 + s(1));
        assert_eq!(sc.period(), s(30));
        assert_eq!(sc.full_at, t0 + s(1) + s(30), "the bus lost: polling again");
        sc.bus_up(false, t0 + s(2));
        assert_eq!(
            sc.period(),
            s(30),
            "no WireGuard state on the bus (< 1.102)"
        );
    }

    #[test]
    fn a_storm_of_notifies_is_a_few_passes_a_second() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        sc.bus_notify(t0 + s(1));
        assert_eq!(sc.next(false), (t0 + s(1) + DEBOUNCE, Wake::Pass));
        assert!(
            !sc.pass_started(t0 + s(1) + DEBOUNCE),
            "a PeersChanged pass reuses the view"
        );
        // More notifies right after: no sooner than MIN_PASS_GAP after that pass.
        let t1 = t0 + s(1) + DEBOUNCE;
        sc.bus_notify(t1 + ms(1));
        assert_eq!(sc.pass_at, Some(t1 + MIN_PASS_GAP));
        sc.bus_notify(t1 + ms(2));
        assert_eq!(
            sc.pass_at,
            Some(t1 + MIN_PASS_GAP),
            "one pass for the burst"
        );
        // A netmap notify asks for the netmap at that pass.
        sc.bus_netmap(t1 + ms(3));
        assert!(sc.pass_started(t1 + MIN_PASS_GAP));
    }

    #[test]
    fn a_scheduled_pass_keeps_the_earlier_time() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        sc.pass_by(t0 + s(5));
        sc.pass_by(t0 + s(9));
        assert_eq!(sc.pass_at, Some(t0 + s(5)));
        sc.pass_by(t0 + s(1));
        assert_eq!(sc.pass_at, Some(t0 + s(1)));
    }

    #[test]
    fn a_failing_read_is_held_for_grace_then_recorded() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        assert_eq!(sc.read_failed(t0 + s(1)), Some(s(60)));
        assert_eq!(sc.pass_at, Some(t0 + s(61)), "a pass when grace runs out");
        assert_eq!(
            next_but_poll(&mut sc),
            (t0 + s(30), Wake::Full),
            "the access re-read (t0 + 10 s) waits while tailscaled is unreachable; polling goes on"
        );
        assert_eq!(
            sc.read_failed(t0 + s(30)),
            Some(s(31)),
            "grace counts from the first failure"
        );
        assert_eq!(sc.read_failed(t0 + s(61)), None, "past grace: recorded");
        sc.read_ok();
        assert_eq!(
            sc.read_failed(t0 + s(100)),
            Some(s(60)),
            "a new outage, a new grace"
        );
    }

    #[test]
    fn the_batch_window_holds_a_burst() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        let to_send = PassDone {
            to_send: true,
            ..PassDone::default()
        };
        assert!(
            sc.pass_done(&to_send, t0 + s(1)),
            "after a quiet period: at once"
        );
        sc.sent(t0 + s(1));
        assert!(
            !sc.pass_done(&to_send, t0 + s(2)),
            "within the window: held"
        );
        assert_eq!(sc.deliver_at, Some(t0 + s(6)));
        assert!(!sc.pass_done(&to_send, t0 + s(3)));
        assert_eq!(
            sc.deliver_at,
            Some(t0 + s(6)),
            "one more message for the burst"
        );
        assert_eq!(next_but_poll(&mut sc), (t0 + s(6), Wake::Deliver));
        sc.sent(t0 + s(6));
        assert_eq!(sc.deliver_at, None);
        assert!(sc.pass_done(&to_send, t0 + s(12)), "the window is over");
        assert!(
            !sc.pass_done(&PassDone::default(), t0 + s(13)),
            "nothing to send"
        );
    }

    #[test]
    fn the_control_plane_is_read_on_its_interval_or_when_told() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        assert!(!sc.control_now());
        assert!(sc.next(false).0 <= t0 + s(60));
        sc.fire(Wake::Control, t0 + s(60));
        assert!(sc.control_now());
        assert_eq!(sc.pass_at, Some(t0 + s(60)));
        // A 429 with Retry-After: come back then, not at the interval.
        sc.pass_started(t0 + s(60));
        let done = PassDone {
            control_read: true,
            retry_after: Some(s(600)),
            ..PassDone::default()
        };
        sc.pass_done(&done, t0 + s(60));
        assert!(!sc.control_now());
        assert_eq!(sc.control_at, t0 + s(660));
        // A webhook reads it now.
        sc.webhook(t0 + s(61));
        assert!(sc.control_now());
        assert_eq!(sc.pass_at, Some(t0 + s(61)));
        // No control plane configured: never due, never a wake.
        let mut p = periods();
        p.control = None;
        let sc = Schedule::new(p, t0);
        assert!(!sc.control_now());
    }

    #[test]
    fn presence_looks_again_when_the_threshold_falls_due() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        let done = PassDone {
            presence_due: Some(s(120)),
            ..PassDone::default()
        };
        sc.pass_done(&done, t0);
        assert_eq!(sc.pass_at, Some(t0 + s(120) + PRESENCE_SLACK));
    }

    #[test]
    fn the_guard_is_read_when_enforcing_one_read_at_a_time() {
        let t0 = Instant::now();
        let mut p = periods();
        p.guard = true;
        let mut sc = Schedule::new(p, t0);
        sc.pass_started(t0);
        sc.fire(Wake::Poll, t0 + DELIVERY_POLL);
        let (at, w) = sc.next(false);
        assert_eq!(w, Wake::Guard);
        assert_eq!(at, t0 + crate::app::guard::POLL);
        assert_ne!(sc.next(true).1, Wake::Guard, "not while the store is down");
        sc.fire(Wake::Guard, at);
        assert!(sc.guard_reading);
        sc.fire(Wake::Poll, at + DELIVERY_POLL);
        assert_ne!(
            sc.next(false).1,
            Wake::Guard,
            "not while a read is under way"
        );
        sc.guard_read();
        assert!(!sc.guard_reading);
    }

    #[test]
    fn the_watchdog_is_pinged_even_under_a_storm() {
        let t0 = Instant::now();
        let mut p = periods();
        p.watchdog = Some(s(1));
        let mut sc = Schedule::new(p, t0);
        sc.pass_started(t0);
        // A notify every 100 ms does not push the ping back.
        for i in 1..10 {
            sc.bus_notify(t0 + ms(100 * i));
        }
        let mut t = t0;
        let mut pinged = false;
        for _ in 0..20 {
            let (at, w) = sc.next(false);
            if w == Wake::Watchdog {
                assert_eq!(at, t0 + s(1));
                pinged = true;
                break;
            }
            assert!(at >= t);
            t = at;
            if w == Wake::Pass {
                sc.pass_started(at);
            } else {
                sc.fire(w, at);
            }
        }
        assert!(pinged);
    }

    #[test]
    fn the_store_failing_retries_within_interval() {
        let t0 = Instant::now();
        let mut sc = started(t0);
        assert_eq!(sc.store_failed(t0), STORE_RETRY);
        assert_eq!(sc.pass_at, Some(t0 + STORE_RETRY));
        let mut p = periods();
        p.interval = s(3);
        sc.reloaded(p, t0);
        assert_eq!(sc.store_failed(t0), s(3));
        assert!(sc.control_now(), "a reload reads the control plane again");
    }
}
