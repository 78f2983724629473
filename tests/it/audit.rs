//! The tamper-evident record: the log anchor every alert carries, checked by `audit` against a
//! rewritten log, a deleted tail and a device planted in the known state.

use crate::support;

use support::emulator::join;
use support::receiver::with_hook;

#[test]
fn alerts_carry_a_log_anchor_that_audit_checks_against_a_rewritten_log() {
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0);
    join(&emu, 1);
    assert_eq!(mon.check().code, 2);
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 2);
    let a = &sent[1].json()["log_anchor"];
    let anchor = format!("{}:{}", a["event_id"], a["hash"].as_str().unwrap());
    let r = mon.run(&["audit", "--anchor", &anchor]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("chain intact: 2 events") && r.stdout.contains("matches"),
        "{r:?}"
    );

    // Someone with root on the server hides the join: drops the guards, rewrites the event and
    // recomputes the whole chain so that it verifies on its own (the columns kept consistent with
    // the rewritten records, which audit checks too).
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_append_only_update;
         UPDATE events SET summary = replace(summary, 'joiner-0', 'printer'), data = replace(data, 'joiner-0', 'printer') WHERE kind = 'device.new';",
    )
    .unwrap();
    support::rechain(&db);
    drop(db);
    let r = mon.run(&["audit"]);
    assert_eq!(
        r.code, 2,
        "a consistent rewrite passes the chain alone, not the record of the anchor sent: {r:?}"
    );
    assert!(
        r.stdout.contains("event log chain intact")
            && r.stdout
                .contains("ALTERED: event #2 no longer hashes as in the alert sent through hook"),
        "{r:?}"
    );
    let r = mon.run(&["audit", "--anchor", &anchor]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("ALTERED: event #2"), "{r:?}");
    let r = mon.run(&["audit", "--anchor", "2:xyz"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("expected ID:HASH"), "{r:?}");
}

/// F8: a tail deleted after the newest anchor the administrator kept is found against the
/// newest anchor that left in a delivered alert; a device written into the known state by hand
/// (so that it never alerts as new) is found because no logged event names it.
#[test]
fn audit_finds_a_deleted_tail_and_a_device_planted_in_the_known_state() {
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0);
    let first = &rx.at("/hook")[0].json()["log_anchor"];
    let older = format!("{}:{}", first["event_id"], first["hash"].as_str().unwrap());
    join(&emu, 1);
    assert_eq!(mon.check().code, 2);
    assert_eq!(rx.at("/hook").len(), 2);
    let r = mon.run(&["audit", "--anchor", &older]);
    assert_eq!(r.code, 0, "{r:?}");

    let path = mon.dir.path().join("state/state.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_append_only_delete;
         DELETE FROM outbox WHERE event_id = (SELECT MAX(id) FROM events);
         DELETE FROM events WHERE id = (SELECT MAX(id) FROM events);
         DELETE FROM devices WHERE id = 'nJOIN0CNTRL';",
    )
    .unwrap();
    drop(db);
    let r = mon.run(&["audit", "--anchor", &older]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("anchor 1:")
            && r.stdout.contains("the log holds 1 events and ends at #1")
            && r.stdout.contains("carried anchor #2: events were deleted"),
        "{r:?}"
    );

    // A fresh log, and a device planted beside the baseline.
    let (_dir, _emu, _rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0);
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute_batch(
        "INSERT INTO devices (id, data, first_seen, last_seen)
         SELECT 'nPLANTEDCNTRL', replace(data, id, 'nPLANTEDCNTRL'), first_seen, last_seen FROM devices LIMIT 1;",
    )
    .unwrap();
    drop(db);
    let r = mon.run(&["audit"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout
            .contains("1 known device(s) that no logged event names")
            && r.stdout.contains("nPLANTEDCNTRL"),
        "{r:?}"
    );
}
