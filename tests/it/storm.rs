//! Many changes at once: a device renaming in a loop, 1,000 joins, and `run`'s first alert sent
//! at once with the burst after it batched.

use crate::support;

use support::emulator::{self, join, Emulator};
use support::receiver::{with_hook, Receiver};
use support::{webhook, Monitor};

/// F2/design rule: a device that renames itself in a loop is not hundreds of alerts. The first
/// rename goes out at once; the ones within `coalesce_window` after it are held and go out as
/// one event with a count when the window ends. The log keeps every one of them.
#[test]
fn a_device_renaming_in_a_loop_is_one_alert_with_a_count() {
    // A window far longer than 30 checks take on any machine; its end is then brought forward
    // in the outbox (this test is the clock), so nothing depends on how fast the checks run.
    let (_dir, emu, rx, mon) = with_hook(|_| "\n[alerts]\ncoalesce_window = \"10m\"\n".to_owned());
    let mut doc = emulator::tailnet();
    let key = emulator::add_peer(&mut doc, "nLOOPCNTRL", "loop-0", 1, "100.101.9.9");
    emu.set_status(doc.clone());
    assert_eq!(mon.check().code, 0);
    for i in 1..=30 {
        doc["Peer"][&key]["HostName"] = format!("loop-{i}").into();
        emu.set_status(doc.clone());
        let r = mon.check();
        assert_eq!(r.code, 1, "a warning, rename {i}: {r:?}");
    }
    let renamed = |rx: &Receiver| -> Vec<serde_json::Value> {
        rx.at("/hook")
            .iter()
            .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
            .filter(|e| e["kind"] == "device.renamed")
            .collect()
    };
    assert_eq!(
        renamed(&rx).len(),
        1,
        "the first rename at once, the others held"
    );
    assert_eq!(mon.check().code, 0);
    assert_eq!(renamed(&rx).len(), 1, "still held inside the window");

    // The 29 held rows wait for the end of the window the first one opened.
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    let rows: Vec<(i64, i64, bool)> = db
        .prepare(
            "SELECT o.created_ms, o.next_try_ms, o.coalesced FROM outbox o
               JOIN events e ON e.id = o.event_id WHERE e.kind = 'device.renamed' ORDER BY o.id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 30);
    let (opened, _, first_held) = rows[0];
    assert!(!first_held);
    for (created, next_try, held) in &rows[1..] {
        assert!(*held && *created >= opened, "{rows:?}");
        assert_eq!(*next_try, opened + 600_000, "held to the window's end");
    }
    // The window ends: the next check sends the held ones, as one event.
    db.execute(
        "UPDATE outbox SET next_try_ms = 0 WHERE coalesced = 1 AND delivered_ms IS NULL",
        [],
    )
    .unwrap();
    drop(db);
    mon.check();
    let all = renamed(&rx);
    assert_eq!(all.len(), 2, "{all:?}");
    let merged = all[1]["summary"].as_str().unwrap();
    assert!(
        merged.contains("loop-30") && merged.contains("(29 times since"),
        "{merged}"
    );
    let r = mon.run(&["events"]);
    assert_eq!(r.stdout.matches("device.renamed").count(), 30, "{r:?}");
}

#[test]
fn a_storm_of_1000_joins_is_a_few_bounded_messages_naming_every_device() {
    let (_dir, emu, rx, mon) =
        with_hook(|url| format!("[[notify]]\nkind = \"slack\"\nurl = \"{url}/slack\"\n"));
    assert_eq!(mon.check().code, 0);
    join(&emu, 1000);
    assert_eq!(mon.check().code, 2);
    // Bounded batches (F2): the webhook takes 500 events per message, a chat message is capped
    // to its provider's length anyway.
    assert_eq!(rx.at("/hook").len(), 3, "baseline + two messages");
    assert_eq!(rx.at("/slack").len(), 2, "baseline + one message");
    let events: usize = rx.at("/hook")[1..]
        .iter()
        .map(|r| r.json()["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(events, 1000, "every device in the payloads");
    assert_eq!(mon.count_events("device.new"), 1000);
}

#[test]
fn run_sends_the_first_alert_at_once_and_batches_a_burst_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let config = webhook("hook", &format!("{}/hook", rx.url))
        + "\n[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\nbatch_window = \"6s\"\n";
    let mon = Monitor::new(&emu.socket, &config);
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    assert!(emu.wait_opened(1, 60));
    // A quiet period longer than the window (a wall-clock wait, not a guess about speed); the
    // window is wide enough that the burst below lands inside it even on a loaded machine.
    std::thread::sleep(std::time::Duration::from_millis(6500));
    let mut doc = emulator::tailnet();
    let add = |doc: &mut serde_json::Value, i: usize| {
        emulator::add_peer(
            doc,
            &format!("nBURST{i}CNTRL"),
            &format!("burst-{i}"),
            6201,
            &format!("100.103.0.{}", i + 1),
        );
    };
    add(&mut doc, 0);
    emu.change(doc.clone());
    let first = rx.wait("/hook", 2, 60);
    assert!(
        first[1].text().contains("burst-0"),
        "the first alert goes out at once"
    );
    for i in 1..4 {
        add(&mut doc, i);
        emu.change(doc.clone());
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    let all = rx.wait("/hook", 3, 60);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let all = if rx.at("/hook").len() > all.len() {
        rx.at("/hook")
    } else {
        all
    };
    assert_eq!(all.len(), 3, "the burst after it is one message");
    for i in 1..4 {
        assert!(
            all[2].text().contains(&format!("burst-{i}")),
            "burst-{i} in the batch"
        );
    }
}
