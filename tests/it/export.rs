//! `[[export]]`: the event log handed to collectors as it is written — a file of ECS or OCSF
//! lines (checked against the schemas' rules), after a SIGKILL nothing missing and nothing twice,
//! and `audit --witness` naming a local rewrite (re-chained, as an attacker would) and a
//! truncation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;
use support::emulator::{self, join, Emulator};
use support::receiver::{with_receiver, Receiver};
use support::webhook;

/// Recomputes the whole chain, so that the local log verifies on its own (what root would do).
fn rechain(db: &rusqlite::Connection) {
    use sha2::Digest as _;
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT id, data FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = String::new();
    for (id, data) in rows {
        let hash = hex::encode(sha2::Sha256::digest(format!("{prev}\n{data}")));
        db.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![prev, hash, id],
        )
        .unwrap();
        prev = hash;
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until the copy holds every logged event; returns the lines.
fn wait_exported(mon: &support::Monitor, path: &Path, seq: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want = mon.events().len();
        let got = lines(path);
        if want > 0 && got.len() >= want {
            let seqs: Vec<i64> = got
                .iter()
                .map(|l| l.pointer(seq).unwrap().as_i64().unwrap())
                .collect();
            let mut sorted = seqs.clone();
            sorted.dedup();
            assert_eq!(seqs, sorted, "each once, in order");
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} exported",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn with_export(
    format: &str,
) -> (
    tempfile::TempDir,
    Emulator,
    Receiver,
    support::Monitor,
    std::path::PathBuf,
) {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("events.json");
    let p = path.display().to_string();
    let (d, emu, rx, mon) = with_receiver(move |url| {
        webhook("hook", &format!("{url}/hook"))
            + &format!("\n[[export]]\nkind = \"file\"\npath = \"{p}\"\nformat = \"{format}\"\n")
    });
    std::mem::forget(out);
    (d, emu, rx, mon, path)
}

/// ECS's allowed values for the categorization fields (ECS 8.11 `event.kind`, `event.category`,
/// `event.type`).
const ECS_KIND: [&str; 8] = [
    "alert",
    "asset",
    "enrichment",
    "event",
    "metric",
    "state",
    "pipeline_error",
    "signal",
];
const ECS_CATEGORY: [&str; 20] = [
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];
const ECS_TYPE: [&str; 17] = [
    "access",
    "admin",
    "allowed",
    "change",
    "connection",
    "creation",
    "deletion",
    "denied",
    "end",
    "error",
    "group",
    "indicator",
    "info",
    "installation",
    "protocol",
    "start",
    "user",
];

#[test]
fn every_event_reaches_the_file_once_as_ecs_and_the_witness_catches_a_rewrite_and_a_truncation() {
    let (_d, emu, rx, mon, path) = with_export("ecs");
    let daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    join(&emu, 30);
    assert!(rx.wait("/hook", 2, 60).len() >= 2);
    let got = wait_exported(&mon, &path, "/event/sequence");
    for l in &got {
        let e = &l["event"];
        assert!(ECS_KIND.contains(&e["kind"].as_str().unwrap()), "{l}");
        for c in e["category"].as_array().unwrap() {
            assert!(ECS_CATEGORY.contains(&c.as_str().unwrap()), "{l}");
        }
        for t in e["type"].as_array().unwrap() {
            assert!(ECS_TYPE.contains(&t.as_str().unwrap()), "{l}");
        }
        assert_eq!(l["ecs"]["version"], "8.11.0");
        assert!(l["@timestamp"].as_str().unwrap().contains('T'));
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{l}");
    }
    assert!(got
        .iter()
        .any(|l| l["event"]["action"] == "device.new" && l["device"]["id"] == "nJOIN3CNTRL"));

    // Crash in the middle of a burst: SIGKILL, more events, a new start.
    join(&emu, 80);
    daemon.signal(libc::SIGKILL);
    let mut daemon = daemon;
    let _ = daemon.0.wait();
    let daemon = mon.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(60);
    while mon.count_events("device.new") < 80 {
        assert!(Instant::now() < deadline, "the joins are logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = wait_exported(&mon, &path, "/event/sequence");
    daemon.terminate();
    let seqs: Vec<i64> = got
        .iter()
        .map(|l| l["event"]["sequence"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, want, "nothing missing, nothing twice");

    let r = mon.run(&["audit", "--witness", &path.display().to_string()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("agree with the local log"), "{r:?}");

    // An attacker rewrites event 3 and re-chains everything after it.
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_append_only_update; DROP TRIGGER events_append_only_delete;
         UPDATE events SET summary = replace(summary, 'joiner-', 'printer-'), data = replace(data, 'joiner-', 'printer-') WHERE id = 3;",
    )
    .unwrap();
    rechain(&db);
    let r = mon.run(&["audit", "--witness", &path.display().to_string()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("event(s) #3, #4, #5"),
        "event 3 and every one re-chained after it: {r:?}"
    );
    // …and cuts the tail.
    let last = seqs.len() as i64;
    db.execute("DELETE FROM outbox WHERE event_id > ?1", [last - 5])
        .unwrap();
    db.execute("DELETE FROM events WHERE id > ?1", [last - 5])
        .unwrap();
    rechain(&db);
    let r = mon.run(&["audit", "--witness", &path.display().to_string()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("the local log ends at #{}, but", last - 5)),
        "{r:?}"
    );
}

/// OCSF: each kind in its class, with the attributes the class requires.
#[test]
fn ocsf_lines_carry_their_class_and_its_required_attributes() {
    let (_d, emu, rx, mon, path) = with_export("ocsf");
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    join(&emu, 2);
    let got = wait_exported(&mon, &path, "/metadata/sequence");
    let mut classes = BTreeMap::new();
    for l in &got {
        for k in [
            "class_uid",
            "category_uid",
            "activity_id",
            "type_uid",
            "severity_id",
            "time",
            "metadata",
        ] {
            assert!(!l[k].is_null(), "{k} in {l}");
        }
        let class = l["class_uid"].as_u64().unwrap();
        assert_eq!(
            l["type_uid"].as_u64().unwrap(),
            class * 100 + l["activity_id"].as_u64().unwrap()
        );
        assert_eq!(l["category_uid"].as_u64().unwrap(), class / 1000);
        assert!(
            l["metadata"]["product"]["name"].is_string() && l["metadata"]["version"].is_string()
        );
        match class {
            5001 => assert!(l["device"].is_object(), "{l}"),
            3004 => assert!(l["entity"].is_object(), "{l}"),
            2004 => assert!(l["finding_info"]["uid"].is_string(), "{l}"),
            4001 => assert!(
                l["src_endpoint"].is_object() && l["dst_endpoint"].is_object(),
                "{l}"
            ),
            _ => {}
        }
        *classes
            .entry(l["unmapped"]["tsmon_kind"].as_str().unwrap().to_owned())
            .or_insert(0) += 0;
        classes.insert(
            l["unmapped"]["tsmon_kind"].as_str().unwrap().to_owned(),
            class,
        );
    }
    assert_eq!(classes.get("device.new"), Some(&5001), "{classes:?}");
    assert_eq!(classes.get("monitor.baseline"), Some(&5001), "{classes:?}");
    let r = mon.run(&["audit", "--witness", &path.display().to_string()]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A collector that is down never holds up an alert; what it missed goes when it is back.
#[test]
fn a_collector_down_holds_up_no_alert_and_gets_the_backlog_when_back() {
    let (_d, emu, rx, mon, path) = with_export("ecs");
    // The file's directory is not there yet: every write fails.
    let dir = path.parent().unwrap().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let _daemon = mon.spawn_run();
    assert_eq!(
        rx.wait("/hook", 1, 60).len(),
        1,
        "the baseline alert goes out anyway"
    );
    join(&emu, 3);
    assert!(rx.wait("/hook", 2, 60).len() >= 2, "and the joins");
    std::fs::create_dir_all(&dir).unwrap();
    let got = wait_exported(&mon, &path, "/event/sequence");
    assert!(got.len() >= 4, "{got:?}");
    let _ = emulator::tailnet();
}
