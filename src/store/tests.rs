//! The store against real SQLite files in temporary directories.

use super::metrics::METRICS_SQL;

use super::*;

use crate::model::route::Route;
use crate::model::state::Outcome;
use crate::model::StableNodeId;

use crate::model::{EventKind, Severity};

fn route() -> Vec<Route> {
    vec![Route {
        channel: "mail".into(),
        min_severity: Severity::Info,
        kinds: None,
        coalesce: std::time::Duration::ZERO,
    }]
}

fn outcome(n: usize) -> Outcome {
    Outcome {
        events: (0..n)
            .map(|i| Event::new(EventKind::DeviceNew, Utc::now(), format!("e{i}")))
            .collect(),
        ..Outcome::default()
    }
}

#[test]
fn concurrent_first_opens_all_succeed() {
    // Several processes (here: connections) opening a fresh store at once all switch it to
    // WAL; SQLite answers the losers with an immediate SQLITE_BUSY that skips the busy
    // handler, which must be waited out, not reported.
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (state, barrier) = (state.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&state).map(|_| ()).map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
}

fn known_device(id: &str) -> KnownDevice {
    KnownDevice {
        device: crate::model::Device::for_tests(id),
        removed: false,
        expiring_alerted: None,
        last_handshake: None,
        after_baseline: false,
    }
}

#[test]
fn a_pass_that_changes_nothing_rewrites_no_device_and_last_seen_follows_the_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let devices: Vec<KnownDevice> = (0..500).map(|i| known_device(&format!("n{i}"))).collect();
    let t0 = Utc::now() - chrono::Duration::hours(1);
    s.commit_pass(&route(), t0, |_, h| {
        let out = Outcome {
            devices: devices.clone(),
            ..Outcome::default()
        };
        (out, h.clone(), true)
    })
    .unwrap();
    let before = s.conn.total_changes();
    let t1 = Utc::now();
    s.commit_pass(&route(), t1, |_, h| (Outcome::default(), h.clone(), true))
        .unwrap();
    // health and last_pass only: a few meta rows, no device row.
    assert!(
        s.conn.total_changes() - before <= 4,
        "{}",
        s.conn.total_changes() - before
    );
    let rows = s.devices().unwrap();
    assert_eq!(rows.len(), 500);
    assert!(rows
        .iter()
        .all(|r| r.last_seen.timestamp() == t1.timestamp()));
    // A removal keeps its own last_seen.
    let t2 = Utc::now() + chrono::Duration::minutes(1);
    let mut gone = devices[0].clone();
    gone.removed = true;
    s.commit_pass(&route(), t2, |_, h| {
        let out = Outcome {
            devices: vec![gone.clone()],
            ..Outcome::default()
        };
        (out, h.clone(), true)
    })
    .unwrap();
    let t3 = t2 + chrono::Duration::minutes(5);
    s.commit_pass(&route(), t3, |_, h| (Outcome::default(), h.clone(), true))
        .unwrap();
    let rows = s.devices().unwrap();
    let r0 = rows.iter().find(|r| r.known.device.id.0 == "n0").unwrap();
    assert_eq!(r0.last_seen.timestamp(), t2.timestamp());
    assert!(rows
        .iter()
        .filter(|r| r.known.device.id.0 != "n0")
        .all(|r| r.last_seen.timestamp() == t3.timestamp()));
}

#[test]
fn the_cached_known_state_is_reloaded_after_another_process_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Store::open(dir.path()).unwrap();
    let mut b = Store::open(dir.path()).unwrap();
    let add = |s: &mut Store, id: &str| {
        let d = known_device(id);
        s.commit_pass(&route(), Utc::now(), move |_, h| {
            let out = Outcome {
                devices: vec![d.clone()],
                ..Outcome::default()
            };
            (out, h.clone(), true)
        })
        .unwrap();
    };
    add(&mut a, "nA");
    add(&mut b, "nB");
    let mut seen = Vec::new();
    a.commit_pass(&route(), Utc::now(), |k, h| {
        seen = k.devices.keys().map(|id| id.0.clone()).collect();
        (Outcome::default(), h.clone(), true)
    })
    .unwrap();
    assert_eq!(seen, ["nA", "nB"], "a sees what b committed");
    add(&mut a, "nC");
    a.commit_pass(&route(), Utc::now(), |k, h| {
        seen = k.devices.keys().map(|id| id.0.clone()).collect();
        (Outcome::default(), h.clone(), true)
    })
    .unwrap();
    assert_eq!(seen, ["nA", "nB", "nC"], "its own commits are in the cache");
}

#[test]
fn file_is_private_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = Store::open(&state).unwrap();
    let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(s);
    Store::open(&state).unwrap(); // re-open is a no-op migration
}

/// F6, F7: a `state.db` that is a link, a directory others may write, and (for root) a
/// directory of another user are refused, and nothing is created through them.
#[test]
fn an_unsafe_state_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("pwned");
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&target, state.join("state.db")).unwrap();
    let e = Store::open(&state).err().expect("a link is refused");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!target.exists(), "nothing created through the link");
    fs::remove_file(state.join("state.db")).unwrap();

    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let e = Store::open(&state)
        .err()
        .expect("a world-writable directory is refused");
    assert!(e.to_string().contains("writable by others"), "{e}");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(Store::open(&state).is_ok());

    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
        let e = Store::open(&state)
            .err()
            .expect("root refuses another user's state");
        assert!(e.to_string().contains("runuser"), "{e}");
    }
}

/// F2: a claim never returns more rows than the batch limit, oldest first; a dead row is out
/// of the queue for good.
#[test]
fn claims_are_bounded_and_dead_rows_leave_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    s.commit_pass(&route(), now, |_, h| (outcome(25), h.clone(), true))
        .unwrap();
    let lease = Duration::from_secs(60);
    let first = s.claim(None, now, lease, true, 10).unwrap();
    assert_eq!(first.len(), 10);
    let ids: Vec<i64> = first.iter().map(|p| p.outbox_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
    s.mark_dead(&ids[..1], "HTTP 400", now).unwrap();
    s.mark_failed(&ids[1..], "HTTP 429", now).unwrap();
    // 24 left in the queue: two full claims and the rest (claimed rows are leased).
    assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 10);
    assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 10);
    assert_eq!(s.claim(None, now, lease, true, 10).unwrap().len(), 4);
    assert_eq!(
        s.outbox_depth().unwrap().pending,
        24,
        "the dead one is not pending"
    );
}

#[test]
fn pass_queues_deliveries_and_outbox_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let c = s
        .commit_pass(&route(), now, |_, h| (outcome(2), h.clone(), true))
        .unwrap();
    assert_eq!(c.queued, 2);
    let lease = Duration::from_secs(60);
    let got = s.claim(None, now, lease, false, usize::MAX).unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        s.claim(None, now, lease, false, usize::MAX)
            .unwrap()
            .is_empty(),
        "leased"
    );
    s.mark_failed(
        &[got[0].outbox_id],
        "boom",
        now + chrono::Duration::seconds(30),
    )
    .unwrap();
    s.mark_delivered(&[got[1].outbox_id], now).unwrap();
    assert!(
        s.claim(None, now, lease, false, usize::MAX)
            .unwrap()
            .is_empty(),
        "backoff"
    );
    assert_eq!(
        s.claim(None, now, lease, true, usize::MAX).unwrap().len(),
        1,
        "check ignores backoff"
    );
    assert_eq!(
        s.outbox_depth().unwrap(),
        OutboxDepth {
            pending: 1,
            failing: 1,
            last_error: Some("boom".into())
        }
    );
}

/// F16: a scrape reads counters, never the log or the outbox, and the counters say what a
/// scan of them would (after deliveries, failures, dead letters and a reroute).
#[test]
fn metrics_read_counters_that_match_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    s.commit_pass(&route(), now, |_, h| (outcome(12), h.clone(), true))
        .unwrap();
    let lease = Duration::from_secs(60);
    let got = s.claim(None, now, lease, true, usize::MAX).unwrap();
    let ids: Vec<i64> = got.iter().map(|p| p.outbox_id).collect();
    s.mark_delivered(&ids[..5], now).unwrap();
    s.mark_failed(&ids[5..9], "HTTP 503", now).unwrap();
    s.mark_failed(&ids[5..7], "HTTP 503", now).unwrap();
    s.mark_dead(&ids[9..10], "HTTP 400", now).unwrap();
    let other = [Route {
        channel: "chat".into(),
        ..route()[0].clone()
    }];
    s.reroute_orphans(&other, now).unwrap();
    s.commit_pass(&route(), now, |_, h| (outcome(3), h.clone(), true))
        .unwrap();
    let scan = |sql: &str| -> Vec<(String, i64)> {
        let mut st = s.conn.prepare(sql).unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let m = s.metrics().unwrap();
    assert_eq!(
        m.events_by_kind,
        scan("SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind")
    );
    assert_eq!(m.delivered, scan("SELECT channel, COUNT(*) FROM outbox WHERE delivered_ms IS NOT NULL GROUP BY channel ORDER BY channel"));
    assert_eq!(m.failed_attempts, scan("SELECT channel, SUM(attempts - (delivered_ms IS NOT NULL)) FROM outbox GROUP BY channel ORDER BY channel"));
    assert_eq!(m.pending, scan("SELECT channel, COUNT(*) FROM outbox WHERE delivered_ms IS NULL AND dead_ms IS NULL GROUP BY channel ORDER BY channel"));
    assert!(
        m.delivered.iter().any(|(c, n)| c == "mail" && *n == 5),
        "{:?}",
        m.delivered
    );
    assert!(
        m.pending.iter().any(|(c, _)| c == "chat"),
        "{:?}",
        m.pending
    );
    for sql in METRICS_SQL {
        let mut st = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let detail: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            detail
                .iter()
                .all(|d| !d.contains("events") && !d.contains("outbox")),
            "{sql}: {detail:?}"
        );
    }
}

#[test]
fn rows_of_a_removed_channel_move_to_the_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    // Two alerts queued for "mail" under the old config.
    s.commit_pass(&route(), now, |_, h| (outcome(2), h.clone(), true))
        .unwrap();
    let new_routes = vec![
        Route {
            channel: "email".into(),
            min_severity: Severity::Info,
            kinds: None,
            coalesce: std::time::Duration::ZERO,
        },
        Route {
            channel: "pager".into(),
            min_severity: Severity::Info,
            kinds: Some(vec![EventKind::DeviceRekeyed]),
            coalesce: std::time::Duration::ZERO,
        },
    ];
    let r = s.reroute_orphans(&new_routes, now).unwrap();
    assert_eq!(
        r,
        vec![Rerouted {
            from: "mail".into(),
            to: vec!["email".into()],
            moved: 2,
            dropped: 0
        }]
    );
    let got = s
        .claim(None, now, Duration::from_secs(60), true, usize::MAX)
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| p.channel == "email"));
    assert!(s.reroute_orphans(&new_routes, now).unwrap().is_empty());

    // No configured channel takes it: dropped from the outbox, still in the log.
    s.commit_pass(&route(), now, |_, h| (outcome(1), h.clone(), true))
        .unwrap();
    let r = s.reroute_orphans(&new_routes[1..], now).unwrap();
    assert_eq!((r[0].moved, r[0].dropped), (0, 1));
    assert_eq!(s.outbox_depth().unwrap().pending, 2, "the two leased");
    assert_eq!(s.events(None, 100).unwrap().len(), 3);
    // No channel at all: nothing moves.
    s.commit_pass(&route(), now, |_, h| (outcome(1), h.clone(), true))
        .unwrap();
    assert!(s.reroute_orphans(&[], now).unwrap().is_empty());
}

#[test]
fn log_is_append_only_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    for _ in 0..3 {
        s.commit_pass(&route(), Utc::now(), |_, h| (outcome(2), h.clone(), true))
            .unwrap();
    }
    assert_eq!(s.verify_log().unwrap(), None);
    assert!(s.conn.execute("DELETE FROM events", []).is_err());
    assert!(s
        .conn
        .execute("UPDATE events SET summary = 'x'", [])
        .is_err());
    // Tampering behind the triggers' back is detected by the chain.
    s.conn.execute_batch("DROP TRIGGER events_append_only_update; UPDATE events SET data = replace(data, 'e1', 'zz') WHERE id = 2").unwrap();
    assert_eq!(s.verify_log().unwrap().map(|b| b.0), Some(2));
    // F8: a column outside the hash that no longer says what the hashed data says.
    let dir2 = tempfile::tempdir().unwrap();
    let mut t = Store::open(dir2.path()).unwrap();
    t.commit_pass(&route(), Utc::now(), |_, h| (outcome(3), h.clone(), true))
        .unwrap();
    t.conn.execute_batch("DROP TRIGGER events_append_only_update; UPDATE events SET at = '2001-01-01T00:00:00+00:00' WHERE id = 3").unwrap();
    let (bad, why) = t.verify_log().unwrap().expect("detected");
    assert_eq!(bad, 3);
    assert!(why.contains("time, kind"), "{why}");
    let events = s.events(None, 100).unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(events[0].pass, 3, "newest first");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let c = Connection::open(dir.path().join("state.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = Store::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn garbage_file_is_a_clear_error_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    fs::write(
        &db,
        b"this is not a database, and it is long enough to have a header....",
    )
    .unwrap();
    let err = Store::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("state.db"), "{err}");
    assert!(fs::read(&db)
        .unwrap()
        .starts_with(b"this is not a database"));
}

/// An approval is committed with its event, and one written into the table by hand is found.
#[test]
fn approvals_come_with_their_event_and_a_planted_one_is_found() {
    use crate::model::guard::ApprovalChange;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state")).unwrap();
    let mut d = crate::model::Device::for_tests("nOK");
    d.node_key = crate::model::NodeKey("nodekey:1".into());
    d.addresses = vec!["100.64.0.2".into()];
    let mut e = Event::new(EventKind::GuardApproved, Utc::now(), "approved");
    e.device = Some(d.clone());
    let change = |id: &str, approved| ApprovalChange {
        device: StableNodeId(id.into()),
        node_key: "nodekey:1".into(),
        routes: vec!["10.5.0.0/16".into()],
        approved,
        by: "alice".into(),
    };
    s.record_approvals(&route(), vec![change("nOK", true)], vec![e], Utc::now())
        .unwrap();
    assert_eq!(s.approvals().unwrap()[0].by, "alice");
    assert!(s.unlogged_approvals().unwrap().is_empty());
    s.conn
        .execute(
            "INSERT INTO guard_approved (device_id, at, by) VALUES ('nPLANTED', 'x', 'nobody')",
            [],
        )
        .unwrap();
    assert_eq!(s.unlogged_approvals().unwrap(), ["nPLANTED"]);
    d.id = StableNodeId("nPLANTED".into());
    let mut e = Event::new(EventKind::GuardRevoked, Utc::now(), "revoked");
    e.device = Some(d);
    s.record_approvals(
        &route(),
        vec![change("nPLANTED", false)],
        vec![e],
        Utc::now(),
    )
    .unwrap();
    let ids: Vec<String> = s
        .approvals()
        .unwrap()
        .into_iter()
        .map(|a| a.device.0)
        .collect();
    assert_eq!(ids, ["nOK"]);
    assert!(s.unlogged_approvals().unwrap().is_empty());
}

/// `[alerts] coalesce_window` holds a repeated change of one device, but never a second widening
/// of who reaches this server: that goes out at once (only `guard.blocked` among the CRITICAL
/// kinds may be held).
#[test]
fn a_second_widening_of_one_device_is_never_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let routes = vec![Route {
        channel: "mail".into(),
        min_severity: Severity::Info,
        kinds: None,
        coalesce: Duration::from_secs(300),
    }];
    let device = crate::model::Device::for_tests("nWIDECNTRL");
    let kinds = [
        EventKind::AccessWidened,
        EventKind::AccessSshWidened,
        EventKind::DeviceRenamed,
        EventKind::GuardBlocked,
    ];
    let start = Utc::now();
    for minute in 0..2 {
        let at = start + chrono::Duration::minutes(minute);
        let events = kinds
            .iter()
            .map(|k| {
                let mut e = Event::new(*k, at, format!("{k} {minute}"));
                e.device = Some(device.clone());
                e
            })
            .collect();
        let o = Outcome {
            events,
            ..Outcome::default()
        };
        s.commit_pass(&routes, at, |_, h| (o, h.clone(), true))
            .unwrap();
    }
    let held = |kind: EventKind| -> Vec<bool> {
        let mut stmt = s
            .conn
            .prepare(
                "SELECT o.coalesced FROM outbox o JOIN events e ON e.id = o.event_id
                 WHERE e.kind = ?1 ORDER BY o.id",
            )
            .unwrap();
        let rows = stmt
            .query_map([kind.as_str()], |r| r.get::<_, bool>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows
    };
    assert_eq!(held(EventKind::AccessWidened), [false, false]);
    assert_eq!(held(EventKind::AccessSshWidened), [false, false]);
    assert_eq!(
        held(EventKind::DeviceRenamed),
        [false, true],
        "still coalesced"
    );
    assert_eq!(
        held(EventKind::GuardBlocked),
        [false, true],
        "still coalesced"
    );
    for k in EventKind::ALL {
        assert_eq!(
            k.coalesces(),
            !k.check_critical() || k == EventKind::GuardBlocked
        );
    }
}
