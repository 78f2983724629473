//! The periodic digest (`[digest] every`, off by default): one message with what happened since
//! the last one — devices added and removed, devices this server cannot see, who can reach this
//! server, failing posture checks, failed deliveries, and the event log's audit with its head
//! anchor. A summary table first, details after. It is an event like any other (`monitor.digest`),
//! so it is logged in the hash chain and delivered through the outbox.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::route::Route;
use crate::model::{Event, EventKind};
use crate::store::{Store, StoreError};

/// Records the digest if one is due: `every` after the last one, or after the baseline for the
/// first. Returns whether it did.
pub fn record_if_due(
    store: &mut Store,
    routes: &[Route],
    every: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(every) = every else {
        return Ok(false);
    };
    let Some(since) = store.digest_at()?.or(store.baseline_at()?) else {
        return Ok(false);
    };
    let due = chrono::Duration::from_std(every)
        .ok()
        .and_then(|every| since.checked_add_signed(every));
    if due.is_none_or(|due| now < due) {
        return Ok(false);
    }
    let ev = build(store, since, now)?;
    store.record_digest(routes, ev)?;
    Ok(true)
}

fn names(events: &[&Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e.device
                .as_ref()
                .map_or_else(|| e.summary.clone(), |d| d.display_name().to_owned())
        })
        .collect()
}

/// The digest of what happened between `since` and `now`.
pub fn build(store: &Store, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Event, StoreError> {
    let logged = store.events(Some(since), 100_000)?;
    let of = |k: EventKind| -> Vec<&Event> {
        logged
            .iter()
            .map(|l| &l.event)
            .filter(|e| e.kind == k)
            .collect()
    };
    let added = names(&of(EventKind::DeviceNew));
    let removed = names(&of(EventKind::DeviceRemoved));
    let failed = of(EventKind::MonitorDeliveryFailed);
    let known = store.known()?;
    let hidden: Vec<String> = known
        .control
        .as_ref()
        .map(|c| {
            c.devices
                .values()
                .filter(|d| known.devices.get(&d.id).is_none_or(|k| k.removed))
                .map(|d| format!("{} ({})", d.hostname, d.user))
                .collect()
        })
        .unwrap_or_default();
    let access = known.access.as_ref().map(|a| a.rows()).unwrap_or_default();
    let failing = known
        .control
        .as_ref()
        .map(|c| c.posture_failing.clone())
        .unwrap_or_default();
    let outbox = store.outbox_depth()?;
    let broken = store.verify_log()?;
    let (count, head) = store.log_head()?;
    let audit = match (broken, &head) {
        (Some((bad, why)), _) => format!("ALTERED at event #{bad}: {why}"),
        (None, Some((id, hash))) => format!("intact, {count} events, head anchor {id}:{hash}"),
        (None, None) => "empty".to_owned(),
    };
    let period = humantime::format_duration(Duration::from_secs(
        (now - since).num_seconds().max(0) as u64,
    ));
    let summary = format!(
        "Digest of the last {period}: {} added, {} removed, {} not visible to this server, {} source(s) can reach it, {} posture check(s) failing, {} failed deliveries; event log {}",
        added.len(),
        removed.len(),
        hidden.len(),
        access.len(),
        failing.len(),
        failed.len(),
        if broken.is_some() { "ALTERED" } else { "intact" }
    );
    let mut d = String::new();
    let row = |d: &mut String, k: &str, v: String| d.push_str(&format!("{k}: {v}\n"));
    row(
        &mut d,
        "Period",
        format!("{} → {}", since.to_rfc3339(), now.to_rfc3339()),
    );
    row(&mut d, "Devices added", added.len().to_string());
    row(&mut d, "Devices removed", removed.len().to_string());
    row(
        &mut d,
        "Not visible to this server",
        hidden.len().to_string(),
    );
    row(
        &mut d,
        "Sources that can reach this server",
        access.len().to_string(),
    );
    row(&mut d, "Posture checks failing", failing.len().to_string());
    row(
        &mut d,
        "Failed deliveries",
        format!(
            "{} (pending now: {}, failing: {})",
            failed.len(),
            outbox.pending,
            outbox.failing
        ),
    );
    row(&mut d, "Event log", audit.clone());
    let section = |d: &mut String, title: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        d.push_str(&format!("\n{title}:\n"));
        for l in lines {
            d.push_str(&format!("• {l}\n"));
        }
    };
    section(&mut d, "Added", added);
    section(&mut d, "Removed", removed);
    section(
        &mut d,
        "Not visible to this server (control plane only)",
        hidden,
    );
    section(
        &mut d,
        "Who can reach this server",
        access
            .iter()
            .map(|r| {
                let ssh = if r.ssh.is_empty() {
                    String::new()
                } else {
                    format!("; SSH as {}", r.ssh)
                };
                format!("{} {}: {}{ssh}", r.source, r.who, r.ports)
            })
            .collect(),
    );
    section(
        &mut d,
        "Failing posture checks",
        failing
            .iter()
            .map(|f| {
                format!(
                    "{} [{}] {}: {} Fix: {}",
                    f.id,
                    f.severity.as_str(),
                    f.title,
                    f.evidence,
                    f.fix
                )
            })
            .collect(),
    );
    section(
        &mut d,
        "Failed deliveries",
        failed.iter().map(|e| e.summary.clone()).collect(),
    );
    let mut ev = Event::new(EventKind::MonitorDigest, now, summary);
    if broken.is_some() {
        ev.severity = crate::model::Severity::Critical;
    }
    // Preformatted lines (the table must keep its columns), as a policy diff is.
    ev.diff = d.lines().map(str::to_owned).collect();
    Ok(ev)
}
