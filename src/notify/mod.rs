//! Notifiers: drain the outbox, one message per channel per batch, retry with backoff.
//!
//! A delivery row leaves the outbox only when its channel accepted it. A failed send keeps the
//! row, records the error and schedules the next try (exponential backoff with jitter for `run`;
//! `check` tries everything pending, since cron is its own backoff). Nothing here can lose an
//! event: the worst case is a duplicate when the process dies between a send and its commit.

pub mod channels;
pub mod http;
pub mod render;

pub use http::SendError;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tracing::{error, info, warn};

use crate::config::channels::Channel;
use crate::model::{Event, EventKind};
use crate::store::{Store, StoreError};

/// How long a claimed batch is reserved for the claiming process.
const LEASE: Duration = Duration::from_secs(120);

/// Outcome of one drain.
#[derive(Debug, Default, Clone)]
pub struct DeliveryReport {
    /// Events delivered, summed over channels.
    pub delivered: usize,
    /// Channel name and error, for each channel whose send failed.
    pub failed: Vec<(String, String)>,
}

/// The delay before retry number `attempts` (1-based): 15 s doubling to at most 15 min, ±20 %.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let base = 15_i64
        .saturating_mul(1 << attempts.clamp(1, 7).saturating_sub(1))
        .min(900);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    chrono::Duration::milliseconds((base as f64 * 1000.0 * jitter) as i64)
}

/// How many batches one drain sends through a channel at most (the rest waits for the next).
const MAX_BATCHES: usize = 20;

/// Sends a batch of events through one channel, as one message. `test` marks a `test-notify`.
pub async fn send(
    ch: &Channel,
    cx: &render::Context,
    events: &[&Event],
    test: bool,
) -> Result<(), SendError> {
    let rendered = render::render(cx, events);
    ch.kind
        .send(&channels::Message {
            cx,
            events,
            rendered: &rendered,
            timeout: ch.timeout,
            test,
        })
        .await
}

/// A stable id for a set of outbox rows (sorted): `tsm-` and 24 hex digits of their SHA-256.
pub fn batch_id(ids: &[i64]) -> String {
    use sha2::{Digest, Sha256};
    let mut v = ids.to_vec();
    v.sort_unstable();
    let text: Vec<String> = v.iter().map(i64::to_string).collect();
    let h = Sha256::digest(text.join(",").as_bytes());
    format!("tsm-{}", hex::encode(&h[..12]))
}

/// Sends everything due, one message per channel. A channel that has failed for longer than
/// `max_age` is reported once, as `monitor.delivery_failed`, on the other channels (and in the
/// log); its alerts stay queued and keep being retried.
pub async fn deliver(
    store: &mut Store,
    channels: &[Channel],
    cx: &render::Context,
    now: DateTime<Utc>,
    ignore_backoff: bool,
    max_age: Duration,
) -> Result<DeliveryReport, StoreError> {
    let mut report = DeliveryReport::default();
    let routes: Vec<_> = channels.iter().map(|c| c.route.clone()).collect();
    for r in store.reroute_orphans(&routes, now)? {
        if r.moved > 0 {
            warn!(from = %r.from, to = %r.to.join(", "), alerts = r.moved, "channel no longer configured: its undelivered alerts move to the configured channels");
        }
        if r.dropped > 0 {
            warn!(from = %r.from, alerts = r.dropped, "channel no longer configured: no configured channel's filter takes these undelivered alerts; they stay in the event log only");
        }
    }
    // A second round sends the failure reports queued by the first.
    for _round in 0..2 {
        let mut escalated = false;
        for ch in channels {
            // Every channel makes progress under a rate or size limit: bounded batches, each
            // kept once accepted; a message refused for good is sent event by event, and an
            // event refused alone goes to the dead letters instead of blocking the queue.
            let mut limit = ch.kind.batch_limit();
            for _batch in 0..MAX_BATCHES {
                let pending = store.claim(Some(&ch.name), now, LEASE, ignore_backoff, limit)?;
                if pending.is_empty() {
                    break;
                }
                // Repeated changes of one device are one event with a count; `ids` in the order
                // of the merged events, so that a channel's progress (`accepted`) maps to rows.
                let groups = coalesce(&pending);
                let ids: Vec<i64> = groups
                    .iter()
                    .flat_map(|(_, rows)| rows.iter().map(|&i| pending[i].outbox_id))
                    .collect();
                let merged: Vec<Event> = groups.iter().map(|(e, _)| e.clone()).collect();
                let events: Vec<&Event> = merged.iter().collect();
                let newest = pending
                    .iter()
                    .max_by_key(|p| p.event.id)
                    .expect("not empty");
                let cx = render::Context {
                    anchor: Some(render::Anchor {
                        event_id: newest.event.id,
                        hash: newest.hash.clone(),
                    }),
                    batch: Some(batch_id(&ids)),
                    ..cx.clone()
                };
                let e = match send(ch, &cx, &events, false).await {
                    Ok(()) => {
                        store.mark_delivered(&ids, Utc::now())?;
                        store.note_checkpoint(&crate::store::Checkpoint {
                            id: newest.event.id,
                            hash: newest.hash.clone(),
                            at: Utc::now(),
                            channel: ch.name.clone(),
                        })?;
                        info!(channel = %ch.name, events = ids.len(), "delivered");
                        report.delivered += ids.len();
                        continue;
                    }
                    Err(e) => e,
                };
                let accepted = groups.iter().take(e.accepted).map(|(_, r)| r.len()).sum();
                let (done, rest) = ids.split_at(accepted);
                if !done.is_empty() {
                    store.mark_delivered(done, Utc::now())?;
                    report.delivered += done.len();
                }
                if e.permanent && rest.len() > 1 {
                    warn!(channel = %ch.name, events = rest.len(), error = %e, "the channel refused the message; sending its events one by one");
                    store.mark_failed(rest, &e.message, now)?;
                    limit = 1;
                    continue;
                }
                if e.permanent {
                    store.mark_dead(rest, &e.message, Utc::now())?;
                    error!(channel = %ch.name, error = %e, "the channel refused an alert for good; it is kept in the log and reported on the other channels");
                    dead_letter(
                        store,
                        channels,
                        ch,
                        &e.message,
                        &merged[e.accepted.min(merged.len() - 1)],
                    )?;
                    escalated = true;
                    report.failed.push((ch.name.clone(), e.message));
                    continue;
                }
                let attempts = pending.iter().map(|p| p.attempts).max().unwrap_or(0) + 1;
                let next = Utc::now() + backoff(attempts);
                store.mark_failed(rest, &e.message, next)?;
                warn!(channel = %ch.name, events = rest.len(), delivered = done.len(), attempts, error = %e, next_try = %next.to_rfc3339(), "delivery failed, will retry");
                let limit = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
                let stale = store.take_stale(
                    &ch.name,
                    now.checked_sub_signed(limit)
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                )?;
                if !stale.is_empty() {
                    escalate(store, channels, ch, &e.message, stale.len(), max_age)?;
                    escalated = true;
                }
                report.failed.push((ch.name.clone(), e.message));
                break;
            }
        }
        if !escalated {
            break;
        }
    }
    Ok(report)
}

/// `monitor.delivery_failed` for one alert the channel refused for good, on the other channels.
fn dead_letter(
    store: &mut Store,
    channels: &[Channel],
    failing: &Channel,
    error: &str,
    refused: &Event,
) -> Result<(), StoreError> {
    let mut e = Event::new(
        EventKind::MonitorDeliveryFailed,
        Utc::now(),
        format!(
            "Channel {} refused an alert for good ({}): {}",
            failing.name, refused.kind, refused.summary
        ),
    );
    e.detail = error.to_owned();
    report_elsewhere(store, channels, failing, e)
}

/// Logs `e` and queues it on every channel but `failing`.
fn report_elsewhere(
    store: &mut Store,
    channels: &[Channel],
    failing: &Channel,
    e: Event,
) -> Result<(), StoreError> {
    let routes: Vec<_> = channels
        .iter()
        .filter(|c| c.name != failing.name)
        .map(|c| c.route.clone())
        .collect();
    store.record_event(&routes, e)
}

/// Logs `monitor.delivery_failed` and queues it on every channel but the failing one.
fn escalate(
    store: &mut Store,
    channels: &[Channel],
    failing: &Channel,
    error: &str,
    stuck: usize,
    max_age: Duration,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let mut e = Event::new(
        EventKind::MonitorDeliveryFailed,
        now,
        format!(
            "Alerts through channel {} have failed for over {}: {stuck} undelivered",
            failing.name,
            humantime::format_duration(max_age)
        ),
    );
    e.detail = error.to_owned();
    error!(channel = %failing.name, stuck, error, "delivery failing past the age limit; reporting on the other channels");
    report_elsewhere(store, channels, failing, e)
}

/// The events of a batch with repeated changes merged: several rows of one kind for one device
/// become the newest of them, its summary saying how many and since when, its detail listing
/// the earlier ones. Each merged event comes with the indexes of its rows in `pending`.
fn coalesce(pending: &[crate::store::Pending]) -> Vec<(Event, Vec<usize>)> {
    let mut groups: Vec<(Event, Vec<usize>)> = Vec::new();
    let mut at: std::collections::HashMap<(crate::model::EventKind, String), usize> =
        std::collections::HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        let e = &p.event.event;
        let key = e.device.as_ref().map(|d| (e.kind, d.id.0.clone()));
        match key.as_ref().and_then(|k| at.get(k)) {
            Some(&g) => groups[g].1.push(i),
            None => {
                if let Some(k) = key {
                    at.insert(k, groups.len());
                }
                groups.push((e.clone(), vec![i]));
            }
        }
    }
    for (merged, rows) in &mut groups {
        if rows.len() < 2 {
            continue;
        }
        let all: Vec<&Event> = rows.iter().map(|&i| &pending[i].event.event).collect();
        let newest = *all.iter().max_by_key(|e| e.at).expect("two or more");
        let first = all.iter().map(|e| e.at).min().expect("two or more");
        let mut e = newest.clone();
        e.severity = all.iter().map(|e| e.severity).max().unwrap_or(e.severity);
        e.summary = format!(
            "{} ({} times since {})",
            newest.summary,
            all.len(),
            first.format("%H:%M:%S UTC")
        );
        // One line (the Note: of the message): the count first, so no cap cuts it.
        let earlier: Vec<String> = all
            .iter()
            .filter(|x| !std::ptr::eq(**x, newest))
            .take(3)
            .map(|x| format!("{} {}", x.at.format("%H:%M:%S"), x.summary))
            .collect();
        let mut detail = format!(
            "{} changes of this kind to this device, the newest above; earlier: {}{} (all of them: `tailscale-monitor events`)",
            all.len(),
            earlier.join("; "),
            if all.len() > 4 { "; …" } else { "" }
        );
        if !newest.detail.is_empty() {
            detail = format!("{detail}. {}", newest.detail);
        }
        e.detail = detail;
        *merged = e;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = |a| backoff(a).num_milliseconds();
        assert!((12_000..=18_000).contains(&s(1)));
        assert!((24_000..=36_000).contains(&s(2)));
        assert!(s(50) <= 1_080_000);
        assert!(s(50) >= 720_000);
    }
}
