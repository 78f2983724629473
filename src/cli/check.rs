//! `check`: one pass, the status line and the Nagios exit code; the store's outage told.

use std::path::Path;
use std::process::ExitCode;

use crate::app::pass::{self, PassReport};
use crate::cli::load;
use crate::model::event_kind::EventKind;
use crate::model::Severity;
use crate::notify::DeliveryReport;
use crate::sanitize;
use crate::source::Source;
use crate::store::OutboxDepth;
use crate::store::Store;

use crate::app::outage::StoreOutage;

/// Nagios-style status line and exit code for one `check`.
pub fn status_line(
    report: &PassReport,
    delivery: &DeliveryReport,
    outbox: &OutboxDepth,
) -> (String, u8) {
    let s = |v: &str| sanitize::line(v, 60);
    let (devices, users) = match &report.seen {
        Ok(snap) => (snap.devices.len(), snap.users.len()),
        Err(_) => (0, 0),
    };
    let perf = format!(
        "| devices={devices} users={users} events={} outbox={}",
        report.events.len(),
        outbox.pending
    );
    if let Err(e) = &report.seen {
        return (
            format!(
                "TAILSCALE UNKNOWN - {} {perf}",
                sanitize::line(&e.0, 300).replace('|', "¦")
            ),
            3,
        );
    }
    let new_member = report.events.iter().any(|e| e.kind.check_critical());
    let mut code = if new_member {
        2
    } else if report.max_severity() >= Some(Severity::Warning) {
        1
    } else {
        0
    };
    let mut text = if report.events.is_empty() {
        format!("{devices} devices, {users} users, nothing new")
    } else if report
        .events
        .iter()
        .any(|e| e.kind == EventKind::MonitorBaseline)
    {
        format!("baseline recorded: {devices} devices, {users} users (sent for review)")
    } else {
        let items: Vec<String> = report
            .events
            .iter()
            .take(5)
            .map(|e| match &e.device {
                Some(d) => format!("{} {}", e.kind, s(d.display_name())),
                None => match &e.user {
                    Some(u) => format!("{} {}", e.kind, s(&u.login)),
                    None => e.kind.to_string(),
                },
            })
            .collect();
        let more = report.events.len().saturating_sub(5);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", items.join(", "))
    };
    // A part of the node view that cannot be read is a warning, never UNKNOWN: membership was
    // read and diffed; what is not visible is said, with the fix.
    if let Some(view) = report.seen.as_ref().ok().and_then(|s| s.node.as_ref()) {
        for u in &view.unread {
            code = code.max(1);
            text += &format!(
                "; not visible: {} ({}). Fix: {}",
                u.part.what(),
                sanitize::line(&u.error, 700),
                sanitize::line(&u.fix, 500)
            );
        }
    }
    if let Some(e) = &report.control_error {
        code = code.max(1);
        text += &format!(
            " (control plane unreadable: {})",
            sanitize::line(e.message(), 200)
        );
    }
    if outbox.failing > 0 {
        code = code.max(1);
        let why = delivery
            .failed
            .first()
            .map(|(c, e)| format!("{c}: {e}"))
            .or_else(|| outbox.last_error.clone())
            .map(|e| format!(" ({})", sanitize::line(&e, 200)))
            .unwrap_or_default();
        text += &format!(
            "; {} alert(s) not delivered yet, will retry{why}",
            outbox.failing
        );
    }
    let label = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    // `|` starts the perfdata: one in a device name must not end the text early.
    let text = text.replace('|', "¦");
    (format!("TAILSCALE {label} - {text} {perf}"), code)
}

pub(super) async fn check(explicit: Option<&Path>) -> ExitCode {
    // Also on stderr: cron discards stdout (`>/dev/null`) but mails stderr.
    let unknown = |msg: String| {
        let msg = sanitize::line(&msg, 500);
        println!("TAILSCALE UNKNOWN - {msg}");
        eprintln!("tailscale-monitor: {msg}");
        ExitCode::from(3)
    };
    let cfg = match load(explicit, false) {
        Ok(c) => c,
        Err(e) => return unknown(sanitize::error_line(&e)),
    };
    let host = pass::local_hostname();
    let store_failed = |e: crate::store::StoreError| {
        let (cfg, host) = (&cfg, &host);
        async move { unknown(crate::app::outage::store_unusable(cfg, host, &e, "check").await) }
    };
    let mut store = match Store::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return store_failed(e).await,
    };
    crate::memory::fit(
        store.device_count().unwrap_or(0),
        crate::memory::LARGE_FOR_CHECK,
    );
    let source = Source::from_config(&cfg.source);
    let control = cfg
        .control
        .as_ref()
        .map(crate::source::control::ControlSource::from_config);
    let plan = pass::Plan {
        reuse_view: None,
        control: control.as_ref(),
        digest: true,
    };
    // An outage an earlier run told is recorded as recovered by this pass.
    let mut outage = StoreOutage::from_mark(&cfg.state_dir);
    let report = match pass::pass(&source, &mut store, &cfg, &plan, &mut outage).await {
        Ok(p) => p.report,
        Err(e) => return store_failed(e).await,
    };
    let delivery = match pass::deliver(&mut store, &cfg, &host, true).await {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    // The exports catch up (a collector that is down only leaves them behind: the lag says so).
    if let Err(e) = crate::app::export::catch_up(&cfg, &mut store, &host) {
        return store_failed(e).await;
    }
    let outbox = match store.outbox_depth() {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    let (mut line, code) = status_line(&report, &delivery, &outbox);
    if !cfg.exports.is_empty() {
        let lag = store
            .export_lags()
            .map(|l| l.iter().map(|(_, n)| *n).max().unwrap_or(0))
            .unwrap_or(0);
        line += &format!(" export_lag={lag}");
    }
    println!("{line}");
    // The process ends here: the tailnet read and the known state are left to the exit instead of
    // being freed piece by piece.
    std::mem::forget(report);
    store.leave_known_to_exit();
    ExitCode::from(code)
}
