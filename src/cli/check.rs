//! `check`: one pass, the status line and the Nagios exit code; the store-outage mark.

use super::*;

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
    let new_member = report.events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::DeviceNew
                | EventKind::UserNew
                | EventKind::AccessWidened
                | EventKind::AccessSshWidened
                | EventKind::NodeTailnetLockDisabled
                | EventKind::NodeTailnetChanged
        )
    });
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
            sanitize::line(&e.message, 200)
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

/// Marks, in the state directory, that `check` (or `run` at startup) has alerted a store failure:
/// at most one such alert per [`STORE_ALERT_EVERY`] however often cron or systemd retries, and a
/// `monitor.store_recovered` once it works again.
pub(super) const STORE_FAILED_MARK: &str = "store-failed";
pub(super) const STORE_ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

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
    let host = monitor::local_hostname();
    let store_failed = |e: crate::store::StoreError| {
        let (cfg, host) = (&cfg, &host);
        async move { unknown(store_unusable(cfg, host, &e, "check").await) }
    };
    let mut store = match Store::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return store_failed(e).await,
    };
    let source = Source::from_config(&cfg.source);
    let control = cfg
        .control
        .as_ref()
        .map(|c| crate::source::control::ControlSource::new(c, crate::source::control::TIMEOUT));
    let report = match monitor::observe(
        &source,
        control.as_ref(),
        control
            .is_some()
            .then(|| crate::source::server::facts(&cfg)),
        &mut store,
        &cfg.routes(),
        &cfg.policy,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return store_failed(e).await,
    };
    if let Err(e) = store_recovered(&cfg, &mut store) {
        return store_failed(e).await;
    }
    if let Err(e) =
        crate::digest::record_if_due(&mut store, &cfg.routes(), cfg.digest_every, Utc::now())
    {
        return store_failed(e).await;
    }
    let delivery = match monitor::deliver(&mut store, &cfg, &host, true).await {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    let outbox = match store.outbox_depth() {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    let (line, code) = status_line(&report, &delivery, &outbox);
    println!("{line}");
    ExitCode::from(code)
}

/// A state database that `cmd` (`check`, or `run` at startup) cannot use: alerts it straight to
/// the channels at most once per [`STORE_ALERT_EVERY`] (remembered by an empty file in the state
/// directory, since the database cannot), unless the invoking user merely may not open it. Returns
/// the one-line message for the terminal.
pub(super) async fn store_unusable(
    cfg: &Config,
    host: &str,
    e: &crate::store::StoreError,
    cmd: &str,
) -> String {
    let error = e.to_string();
    if e.is_access_denied() {
        return format!(
            "{error} (run `{cmd}` as the user that owns the state, e.g. `runuser -u tailscale-monitor -- tailscale-monitor {cmd}`)"
        );
    }
    let mark = cfg.state_dir.join(STORE_FAILED_MARK);
    // Never through a link the service user may have planted (F7): lstat, and O_NOFOLLOW.
    let recent = std::fs::symlink_metadata(&mark)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < STORE_ALERT_EVERY));
    if !recent {
        let mut told = Vec::new();
        let db = cfg.state_dir.join("state.db");
        monitor::alert_store_failed(cfg, host, &db, Utc::now(), &error, &mut told).await;
        if !told.is_empty() {
            // An empty file: creating it needs no free blocks. If even that fails, the next
            // attempt alerts again, which is the safe side.
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&mark);
        }
    }
    error
}

/// Once the store works: if an earlier `check` or `run` start alerted a store failure, log
/// `monitor.store_recovered` (delivered with the rest) and clear the mark.
pub(super) fn store_recovered(
    cfg: &Config,
    store: &mut Store,
) -> Result<(), crate::store::StoreError> {
    let mark = cfg.state_dir.join(STORE_FAILED_MARK);
    let Ok(meta) = std::fs::symlink_metadata(&mark) else {
        return Ok(());
    };
    let since = meta
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    monitor::record_store_recovered(store, &cfg.routes(), since, None)?;
    let _ = std::fs::remove_file(&mark);
    Ok(())
}
