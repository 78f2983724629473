//! The IPN bus, as `run` holds it: a task that keeps `watch-ipn-bus` open and reports what it
//! streams, and the filter that tells a presence-only `PeersChanged` (no pass) from a change.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tracing::warn;

use crate::model::{Device, Snapshot, StableNodeId};
use crate::source::ipnbus::{self, Signal};
use crate::source::localapi::{LocalApi, WatchError};

/// Reconnect backoff of the bus: from 250 ms doubling to 30 s.
const BUS_BACKOFF_MIN: Duration = Duration::from_millis(250);
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the bus task reports.
#[derive(Debug)]
pub(crate) enum Bus {
    /// Streaming with this mask.
    Up { mask: u64, version: String },
    /// A line of the stream, and when it was read: a full pass whose read started later has
    /// seen what it says already.
    Signal(Signal, Instant),
    /// The stream ended or could not be opened; the task retries by itself.
    Down(String),
}

/// Holds the IPN bus open for as long as the receiver lives, reconnecting with backoff.
pub(crate) async fn bus(api: LocalApi, tx: mpsc::Sender<Bus>) {
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
                            if s != Signal::Quiet
                                && tx.send(Bus::Signal(s, Instant::now())).await.is_err()
                            {
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

/// What the last pass saw of each device's membership, to compare the bus's `PeersChanged` with.
#[derive(Debug, Default)]
pub(crate) struct Members {
    /// [`Device::membership`]'s fingerprint, by stable ID.
    known: HashMap<String, u64>,
    /// Stable IDs of the devices `[[watch]]` covers: their presence notifies cost a pass.
    watched: HashSet<String>,
}

impl Members {
    /// After a pass that read `/status`.
    pub fn seen(&mut self, snap: &Snapshot) {
        self.known = snap
            .devices
            .values()
            .map(|d| (d.id.0.clone(), d.membership().fingerprint()))
            .collect();
    }

    /// After a bus delta committed these peers.
    pub fn changed(&mut self, peers: &[Device]) {
        for d in peers {
            self.known
                .insert(d.id.0.clone(), d.membership().fingerprint());
        }
    }

    /// After a pass that resolved the `[[watch]]` entries.
    pub fn watching(&mut self, ids: &[StableNodeId]) {
        self.watched = ids.iter().map(|id| id.0.clone()).collect();
    }

    /// Whether a `PeersChanged` needs a pass: some peer's membership differs from the last pass,
    /// or a watched device's presence may have changed.
    pub fn need_pass(&self, peers: &[Device]) -> bool {
        peers.iter().any(|d| {
            self.watched.contains(&d.id.0)
                || self.known.get(&d.id.0) != Some(&d.membership().fingerprint())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_only_needs_no_pass_and_a_membership_change_does() {
        let mut snap = Snapshot::default();
        let mut d = Device::for_tests("n1");
        d.addresses = vec!["100.64.0.1".into()];
        snap.devices.insert(d.id.clone(), d.clone());
        let mut m = Members::default();
        m.seen(&snap);
        assert!(
            !m.need_pass(std::slice::from_ref(&d)),
            "the same facts: presence only"
        );
        // Fields outside membership (not on the bus) do not count.
        let mut same = d.clone();
        same.created = Some(chrono::Utc::now());
        same.shared = true;
        assert!(!m.need_pass(&[same]));
        for change in [
            |d: &mut Device| d.node_key.0.push('x'),
            |d: &mut Device| d.user_id.0 += 1,
            |d: &mut Device| d.hostname.push('x'),
            |d: &mut Device| d.dns_name.push('x'),
            |d: &mut Device| d.os.push('x'),
            |d: &mut Device| d.addresses.push("100.64.0.2".into()),
            |d: &mut Device| d.tags.push("tag:x".into()),
            |d: &mut Device| d.routes.push("10.0.0.0/8".into()),
            |d: &mut Device| d.key_expiry = Some(chrono::Utc::now()),
            |d: &mut Device| d.expired = true,
        ] {
            let mut c = d.clone();
            change(&mut c);
            assert!(m.need_pass(&[c.clone()]), "{c:?}");
        }
        assert!(m.need_pass(&[Device::for_tests("new")]), "an unknown peer");
        m.watching(&[d.id.clone()]);
        assert!(
            m.need_pass(std::slice::from_ref(&d)),
            "a watched device's presence"
        );
    }
}
