//! `audit`: the event log's chain, the anchors, the checkpoint and the known state.

use std::path::Path;

use crate::cli::{open_store, shown_hash};
use crate::sanitize;

/// `audit`: true when the log is intact and every anchor matches.
pub(super) async fn audit(
    explicit: Option<&Path>,
    anchors: &[String],
    witnesses: &[String],
) -> anyhow::Result<bool> {
    let parsed: Vec<(i64, String)> = anchors
        .iter()
        .map(|a| {
            a.split_once(':')
                .and_then(|(id, h)| {
                    let h = h.trim().to_ascii_lowercase();
                    let ok = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
                    Some((id.trim().parse::<i64>().ok()?, h)).filter(|_| ok)
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--anchor `{}`: expected ID:HASH (a number, a colon, 64 hex digits) as printed at the foot of an alert",
                        sanitize::line(a, 100)
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    let store = open_store(explicit)?;
    let (count, head) = store.log_head()?;
    let newest_anchor = parsed.iter().map(|(id, _)| *id).max();
    let mut intact = true;
    match store.verify_log()? {
        Some((bad, why)) => {
            println!("ALTERED: the event log breaks at event #{bad}: {why}");
            intact = false;
        }
        None => match &head {
            Some((id, hash)) => {
                println!(
                    "event log chain intact: {count} events, head {id}:{}",
                    shown_hash(hash)
                )
            }
            None => println!("event log empty"),
        },
    }
    for (id, want) in parsed {
        match store.event_hash(id)? {
            Some(h) if h == want => println!("anchor {id}:{want} matches"),
            Some(h) => {
                println!("ALTERED: event #{id} now hashes to {}, the anchor says {want}: the log was rewritten after that alert was sent", shown_hash(&h));
                intact = false;
            }
            None => {
                println!("ALTERED: event #{id} of anchor {id}:{want} is not in the log: it was truncated or replaced");
                intact = false;
            }
        }
    }
    // The newest anchor that left in a delivered message: a log that now ends before it, or
    // says something else there, lost its tail (F8). Whoever can write state.db can rewrite this
    // record too; the anchor in the mailbox is what they cannot reach.
    if let Some(c) = store.checkpoint()? {
        let when = c.at.format("%Y-%m-%d %H:%M UTC");
        let channel = sanitize::line(&c.channel, 60);
        match store.event_hash(c.id)? {
            Some(h) if h == c.hash => {}
            Some(_) => {
                println!("ALTERED: event #{} no longer hashes as in the alert sent through {channel} at {when}", c.id);
                intact = false;
            }
            None => {
                println!(
                    "ALTERED: the log holds {count} events and ends at #{}, but the alert sent through {channel} at {when} carried anchor #{}: events were deleted",
                    head.as_ref().map_or(0, |h| h.0),
                    c.id
                );
                intact = false;
            }
        }
    }
    for (ids, what) in [
        (
            store.unlogged_devices()?,
            "known device(s) that no logged event names (written into the known state, so never alerted)",
        ),
        (
            store.unlogged_approvals()?,
            "device(s) approved at the guard with no guard.approved event in the log (written into the approvals, so let in silently)",
        ),
    ] {
        if !ids.is_empty() {
            println!(
                "ALTERED: {} {what}: {}",
                ids.len(),
                ids.iter()
                    .take(10)
                    .map(|id| sanitize::line(id, 40))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            intact = false;
        }
    }
    for w in witnesses {
        intact &= witness(&store, w).await?;
    }
    // What no anchor given can vouch for: rows after the newest one (F8). Keep the anchor of the
    // newest alert or digest to cover them.
    if let (Some(newest), Some((head, _))) = (newest_anchor, &head) {
        if *head > newest {
            println!(
                "note: {} event(s) after your newest anchor #{newest} cannot be verified by it (the head is {head}); give the anchor of a later alert or digest",
                head - newest
            );
        }
    }
    Ok(intact)
}

/// The local chain against an exported copy (`--witness`): a file or URL of ECS or OCSF lines, or
/// `journalctl -o json` output. True when they agree.
async fn witness(store: &crate::store::Store, from: &str) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    use std::io::BufRead as _;
    // The copy is read a chunk at a time and kept as (sequence, hash) pairs: a copy of millions
    // of events costs their pairs, and a line longer than any record is skipped unread.
    let mut lines = crate::export::witness::Lines::default();
    let what = || format!("--witness {}", sanitize::line(from, 200));
    if from.starts_with("https://") || from.starts_with("http://") {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()?;
        let mut resp = client
            .get(from)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(what)?;
        while let Some(chunk) = resp.chunk().await.with_context(what)? {
            lines.push(&chunk);
        }
    } else {
        let mut f = std::io::BufReader::new(std::fs::File::open(from).with_context(what)?);
        loop {
            let buf = f.fill_buf().with_context(what)?;
            if buf.is_empty() {
                break;
            }
            lines.push(buf);
            let n = buf.len();
            f.consume(n);
        }
    }
    let copy = lines.finish();
    if copy.is_empty() {
        anyhow::bail!(
            "--witness {}: no exported event in it (expected ECS or OCSF lines of [[export]], or journalctl -o json output)",
            sanitize::line(from, 200)
        );
    }
    let local = store.chain()?;
    let d = crate::export::witness::compare(&local, &copy);
    let name = sanitize::line(from, 200);
    if d.none() {
        println!(
            "witness {name}: {} exported event(s) agree with the local log",
            copy.len()
        );
        return Ok(true);
    }
    let list = |v: &[i64]| {
        v.iter()
            .take(20)
            .map(|i| format!("#{i}"))
            .collect::<Vec<_>>()
            .join(", ")
            + if v.len() > 20 { " …" } else { "" }
    };
    if !d.rewritten.is_empty() {
        println!(
            "ALTERED: event(s) {} were rewritten locally after {name} received them",
            list(&d.rewritten)
        );
    }
    if !d.deleted.is_empty() {
        println!(
            "ALTERED: event(s) {} that {name} received are gone from the local log",
            list(&d.deleted)
        );
    }
    if let Some((head, last)) = d.truncated_after {
        println!(
            "ALTERED: the local log ends at #{head}, but {name} received events up to #{last}: its tail was truncated"
        );
    }
    if !d.missing_from_copy.is_empty() {
        println!(
            "MISSING: event(s) {} are in the local log but not in {name}",
            list(&d.missing_from_copy)
        );
    }
    Ok(false)
}
