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
use support::receiver::{hook_kinds, with_receiver, Receiver};
use support::webhook;

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

/// A monitor exporting to a file in a directory of its own, in `format`, with `extra` keys.
struct WithExport {
    _out: tempfile::TempDir,
    _d: tempfile::TempDir,
    emu: Emulator,
    rx: Receiver,
    mon: support::Monitor,
    path: std::path::PathBuf,
}

fn with_export(format: &str, extra: &str) -> WithExport {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("events.json");
    let p = path.display().to_string();
    let (d, emu, rx, mon) = with_receiver(move |url| {
        webhook("hook", &format!("{url}/hook"))
            + &format!(
                "\n[[export]]\nkind = \"file\"\npath = \"{p}\"\nformat = \"{format}\"\n{extra}"
            )
    });
    WithExport {
        _out: out,
        _d: d,
        emu,
        rx,
        mon,
        path,
    }
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
    let x = with_export("ecs", "");
    let WithExport {
        emu, rx, mon, path, ..
    } = &x;
    let daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    join(emu, 30);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    assert!(rx.wait("/hook", 2, 60).len() >= 2);
    let got = wait_exported(mon, path, "/event/sequence");
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
    join(emu, 80);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    daemon.signal(libc::SIGKILL);
    let mut daemon = daemon;
    let _ = daemon.0.wait();
    let daemon = mon.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(60);
    while mon.count_events("device.new") < 80 {
        assert!(Instant::now() < deadline, "the joins are logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = wait_exported(mon, path, "/event/sequence");
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
    support::rechain(&db);
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
    support::rechain(&db);
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
    let x = with_export("ocsf", "");
    let WithExport {
        emu, rx, mon, path, ..
    } = &x;
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    join(emu, 2);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    let got = wait_exported(mon, path, "/metadata/sequence");
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
    let x = with_export("ecs", "max_lag = \"1s\"\n");
    let WithExport {
        emu, rx, mon, path, ..
    } = &x;
    // The file's directory is not there yet: every write fails.
    let dir = path.parent().unwrap().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let _daemon = mon.spawn_run();
    assert_eq!(
        rx.wait("/hook", 1, 60).len(),
        1,
        "the baseline alert goes out anyway"
    );
    join(emu, 3);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    assert!(rx.wait("/hook", 2, 60).len() >= 2, "and the joins");
    // Behind for longer than max_lag: said once, on the alert channels.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook_kinds(rx).iter().any(|k| k == "monitor.export_lagging") {
        assert!(Instant::now() < deadline, "{:?}", hook_kinds(rx));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        mon.count_events("monitor.export_lagging"),
        1,
        "once per backlog"
    );
    std::fs::create_dir_all(&dir).unwrap();
    let got = wait_exported(mon, path, "/event/sequence");
    assert!(
        got.iter()
            .any(|l| l["event"]["action"] == "monitor.export_lagging"),
        "the backlog drains, the lag's own event included"
    );
}

/// journald, for real: Debian's `systemd-journald` in a private mount namespace (systemd is not
/// PID 1 here), the monitor's `check` exporting to its socket there, read back with
/// `journalctl -o json`; the fields journald filters on, and the copy as a witness.
#[test]
#[ignore = "needs root and systemd-journald (Debian's systemd): run tests/run-all.sh"]
fn every_event_reaches_a_real_journald_with_fields_it_can_filter_on() {
    let d = tempfile::tempdir().unwrap();
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let mon = support::Monitor::new(&emu.socket, "[[export]]\nkind = \"journald\"\n");
    let out = d.path().join("journal.json");
    // The joins come after the baseline: a second check sees them.
    let script = format!(
        "set -e
         wait_for() {{ for i in $(seq 1200); do [ -e \"$1\" ] && return; sleep 0.05; done; }}
         check() {{ {bin} --config {cfg} check >/dev/null || true; }}
         journal() {{
           for i in $(seq 1200); do
             journalctl --no-pager -o json SYSLOG_IDENTIFIER=tailscale-monitor > \"$1\"
             [ $(wc -l < \"$1\") -ge $(cat {want}) ] && return
             sleep 0.05
           done
         }}
         mount -t tmpfs tmpfs /run/systemd; mkdir -p /run/systemd/journal
         mount -t tmpfs tmpfs /run/log
         /lib/systemd/systemd-journald & j=$!
         wait_for /run/systemd/journal/socket
         check
         echo joined > {flag}
         wait_for {go}
         check
         journal {out}
         echo read > {read}
         wait_for {go2}
         check
         journal {out2}
         kill $j",
        bin = support::bin().display(),
        cfg = mon.config.display(),
        flag = d.path().join("joined").display(),
        go = d.path().join("go").display(),
        out = out.display(),
        want = d.path().join("want").display(),
        read = d.path().join("read").display(),
        go2 = d.path().join("go2").display(),
        out2 = d.path().join("journal2.json").display(),
    );
    std::fs::write(d.path().join("want"), "1000000").unwrap();
    let child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.path().join("joined").exists() {
        assert!(Instant::now() < deadline, "the first check");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nJRNLCNTRL",
        "evil\nTSMON_KIND=forged",
        6201,
        "100.102.0.9",
    );
    emu.set_status(doc);
    std::fs::write(d.path().join("want"), "1000000").unwrap();
    std::fs::write(d.path().join("go"), "").unwrap();
    // The log's size once the second check is done is what the journal must hold.
    let deadline = Instant::now() + Duration::from_secs(60);
    while mon.count_events("device.new") < 1 {
        assert!(Instant::now() < deadline, "the second check");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = mon.events().len();
    std::fs::write(d.path().join("want"), total.to_string()).unwrap();
    // Then a stop in the middle of a batch, as the syslog test has it: the cursor at event 1, the
    // batch up to the last event marked in flight. The next check sends events 2 to the last
    // again, each marked TSMON_REPLAY=1, and nothing else twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.path().join("read").exists() {
        assert!(Instant::now() < deadline, "the journal read");
        std::thread::sleep(Duration::from_millis(20));
    }
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    let n = db
        .execute(
            "UPDATE export_cursor SET last_id = 1, inflight = ?1",
            [total as i64],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    std::fs::write(d.path().join("want"), (2 * total - 1).to_string()).unwrap();
    std::fs::write(d.path().join("go2"), "").unwrap();
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "{status:?}");
    let entries: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), mon.events().len(), "{entries:?}");
    for e in &entries {
        for f in [
            "MESSAGE",
            "PRIORITY",
            "MESSAGE_ID",
            "TSMON_KIND",
            "TSMON_SEQ",
            "TSMON_HASH",
            "TSMON_PREV",
        ] {
            assert!(e[f].is_string(), "{f} in {e}");
        }
        assert_eq!(e["MESSAGE_ID"].as_str().unwrap().len(), 32);
    }
    let new = entries
        .iter()
        .find(|e| e["TSMON_KIND"] == "device.new")
        .unwrap();
    assert_eq!(new["PRIORITY"], "2", "critical");
    assert_eq!(new["TSMON_DEVICE_ID"], "nJRNLCNTRL");
    assert!(
        !new["MESSAGE"].as_str().unwrap().contains('\n'),
        "one line for the terminal: {new}"
    );
    assert!(
        !entries.iter().any(|e| e["TSMON_KIND"] == "forged"),
        "a newline in a name cannot add a field"
    );
    assert!(
        !entries.iter().any(|e| e.get("TSMON_REPLAY").is_some()),
        "a first hand-over is not a replay"
    );
    let r = mon.run(&["audit", "--witness", &out.display().to_string()]);
    assert_eq!(r.code, 0, "{r:?}");
    let again: Vec<Value> = std::fs::read_to_string(d.path().join("journal2.json"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(again.len(), 2 * total - 1, "{again:?}");
    let replayed: Vec<i64> = again[total..]
        .iter()
        .map(|e| {
            assert_eq!(e["TSMON_REPLAY"], "1", "{e}");
            e["TSMON_SEQ"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(replayed, (2..=total as i64).collect::<Vec<_>>());
    // Same sequence numbers and hashes as the first hand-over: the witness still agrees.
    let r = mon.run(&[
        "audit",
        "--witness",
        &d.path().join("journal2.json").display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// An SD-ELEMENT: its SD-ID and its parameters.
type Element = (String, Vec<(String, String)>);

/// The structured data of an RFC 5424 line: `(SD-ID, [(name, value)])` in order, values
/// unescaped (§6.3.3), and the message after it. `None` if the line does not parse.
fn parse_5424(line: &str) -> Option<(Vec<Element>, String)> {
    // <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
    let mut rest = line;
    for _ in 0..6 {
        rest = rest.split_once(' ')?.1;
    }
    let mut sd = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some(&(_, '[')) = chars.peek() {
        chars.next();
        let mut id = String::new();
        for (_, c) in chars.by_ref() {
            if c == ' ' || c == ']' {
                if c == ']' {
                    sd.push((id.clone(), Vec::new()));
                    id.clear();
                }
                break;
            }
            id.push(c);
        }
        if id.is_empty() {
            continue;
        }
        let mut params = Vec::new();
        loop {
            let mut name = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                name.push(c);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let mut esc = false;
            for (_, c) in chars.by_ref() {
                if esc {
                    value.push(c);
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else if c == '"' {
                    break;
                } else {
                    value.push(c);
                }
            }
            params.push((name.trim().to_owned(), value));
            match chars.next()?.1 {
                ' ' => continue,
                ']' => break,
                _ => return None,
            }
        }
        sd.push((id, params));
    }
    let msg = chars.map(|(_, c)| c).collect::<String>();
    Some((sd, msg.trim_start().to_owned()))
}

/// syslog, for real: Debian's `rsyslogd` receiving RFC 5424 over TCP (octet counting) into a
/// file; the meta sequenceId, the project's own element and its values, and a hostile name that
/// tries to close the structured data early or start a new frame.
#[test]
#[ignore = "needs rsyslog (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn every_event_reaches_a_real_rsyslog_over_tcp_with_its_structured_data() {
    let d = tempfile::tempdir().unwrap();
    let (_rsyslog, port, out) = rsyslog(d.path(), None);
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let mon = support::Monitor::new(
        &emu.socket,
        &format!(
            "[[export]]\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\npen = 32473\n"
        ),
    );
    assert_eq!(mon.check().code, 0);
    let hostile = "evil\"] [tsmon@32473 kind=\"forged\"]\n42 <13>1 - forged";
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nSYSLOG\"]CNTRL", hostile, 6201, "100.102.0.9");
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let want = mon.events().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_owned).collect();
        if got.len() >= want {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} lines: {text}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got.len(), want, "one line per event, none forged: {got:#?}");
    let mut seqs = Vec::new();
    for line in &got {
        let (sd, msg) = parse_5424(line).unwrap_or_else(|| panic!("not RFC 5424: {line}"));
        let meta = sd
            .iter()
            .find(|(id, _)| id == "meta")
            .unwrap_or_else(|| panic!("{line}"));
        let own = sd
            .iter()
            .find(|(id, _)| id == "tsmon@32473")
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(sd.len(), 2, "no element of a name's making: {line}");
        let get = |k: &str| {
            own.1
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(meta.1[0].1, get("seq"), "{line}");
        seqs.push(get("seq").parse::<i64>().unwrap());
        assert_eq!(get("hash").len(), 64);
        if get("kind") == "device.new" {
            assert_eq!(
                get("device"),
                "nSYSLOG\"]CNTRL",
                "the value is exactly the ID: {line}"
            );
            assert!(line.starts_with("<106>1 "), "log audit, critical: {line}");
            assert!(msg.contains("evil"), "{msg}");
        }
    }
    let want_seqs: Vec<i64> = (1..=want as i64).collect();
    assert_eq!(seqs, want_seqs);
    assert!(!got.iter().any(|l| l.contains("replay=")), "{got:#?}");

    // A stop in the middle of a batch: the batch was marked in flight (events 2 to the last) and
    // the cursor had not moved past event 1. Those events go again, each marked as a replay (the
    // collector may have them), and nothing else is sent twice.
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    let n = db
        .execute(
            "UPDATE export_cursor SET last_id = 1, inflight = ?1",
            [want as i64],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    assert_eq!(mon.check().code, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<String> = text.lines().skip(want).map(str::to_owned).collect();
        if lines.len() >= want - 1 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let replayed: Vec<i64> = again
        .iter()
        .map(|l| {
            let (sd, _) = parse_5424(l).unwrap_or_else(|| panic!("not RFC 5424: {l}"));
            let own = &sd.iter().find(|(id, _)| id == "tsmon@32473").unwrap().1;
            let get = |k: &str| own.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get("replay").as_deref(), Some("1"), "{l}");
            get("seq").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(replayed, (2..=want as i64).collect::<Vec<_>>());
    // The cursor is past them: the next event is the next line, unmarked, and nothing else.
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nSYSLOG\"]CNTRL", hostile, 6201, "100.102.0.9");
    emulator::add_peer(
        &mut doc,
        "nAFTERCNTRL",
        "after-replay",
        6201,
        "100.102.0.10",
    );
    emu.set_status(doc);
    assert_eq!(mon.check().code, 2);
    let total = mon.events().len();
    assert_eq!(total, want + 1, "one new event");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains(&format!("seq=\"{total}\"")) {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), want + (want - 1) + 1, "{text}");
    assert!(!lines[lines.len() - 1].contains("replay="), "{text}");
}

/// Debian's `rsyslogd` in the foreground, receiving RFC 5424 over TCP (over TLS with `tls`: the
/// CA, certificate and key files) into a file; it reports the port it bound. Killed when dropped.
fn rsyslog(dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> (Killed, u16, std::path::PathBuf) {
    let conf = dir.join("rsyslog.conf");
    let (port_file, out) = (dir.join("port"), dir.join("out"));
    let (global, module) = match tls {
        None => (String::new(), "module(load=\"imtcp\")".to_owned()),
        Some((ca, cert, key)) => (
            format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                ca.display(),
                cert.display(),
                key.display()
            ),
            "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")".to_owned(),
        ),
    };
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\"{global})\n{module}\ninput(type=\"imtcp\" port=\"0\" listenPortFileName=\"{port}\" ruleset=\"t\")\nruleset(name=\"t\") {{ action(type=\"omfile\" file=\"{out}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
            dir = dir.display(),
            port = port_file.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let child = rsyslogd(dir, &conf);
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not report its port"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, port, out)
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a certificate for `localhost` signed by it, with openssl; returns (ca, cert, key).
fn certificates(
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl {args:?}: {o:?}");
    };
    let s = |p: &std::path::PathBuf| p.display().to_string();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &s(&p("ca.key")),
        "-out",
        &s(&p("ca.pem")),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &s(&p("key.pem")),
        "-out",
        &s(&p("req.pem")),
    ]);
    std::fs::write(p("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&p("req.pem")),
        "-CA",
        &s(&p("ca.pem")),
        "-CAkey",
        &s(&p("ca.key")),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&p("ext")),
        "-out",
        &s(&p("cert.pem")),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

/// syslog over TLS (RFC 5425) to a real rsyslogd with gtls: delivered when the collector's
/// certificate is signed by `ca_file`; nothing sent, and the lag said, when it is not.
#[test]
#[ignore = "needs rsyslog, rsyslog-gnutls and openssl (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn syslog_over_tls_reaches_a_collector_whose_certificate_checks_out() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(d.path(), "good");
    let (other_ca, _, _) = certificates(d.path(), "other");
    let (_rsyslog, port, out) = rsyslog(d.path(), Some((&ca, &cert, &key)));
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let export = |ca: &Path| {
        format!(
            "[[export]]\nkind = \"syslog\"\naddress = \"tls://localhost:{port}\"\npen = 32473\nca_file = \"{}\"\n",
            ca.display()
        )
    };
    // A CA that did not sign the collector's certificate: refused, nothing sent, the lag shown.
    let wrong = support::Monitor::new(&emu.socket, &export(&other_ca));
    let r = wrong.check();
    assert!(r.stdout.contains("export_lag=1"), "{r:?}");
    let right = support::Monitor::new(&emu.socket, &export(&ca));
    let r = right.check();
    assert!(r.stdout.contains("export_lag=0"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 1 {
            assert_eq!(
                text.lines().count(),
                1,
                "one event, from the right monitor only: {text}"
            );
            assert!(
                text.contains("[tsmon@32473 kind=\"monitor.baseline\""),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived over TLS");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rotation as logrotate does it by default: the file is renamed away (and a new one may be
/// created); the next events go to a new file at the path, none lost, none in both.
#[test]
fn a_rotated_file_is_followed_by_a_new_one_at_the_path() {
    let x = with_export("ecs", "");
    let WithExport {
        emu, rx, mon, path, ..
    } = &x;
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    let before = wait_exported(mon, path, "/event/sequence");
    let rotated = path.with_extension("json.1");
    std::fs::rename(path, &rotated).unwrap();
    join(emu, 3);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let after = lines(path);
        let total = mon.events().len();
        if before.len() + after.len() >= total && !after.is_empty() {
            let seqs: Vec<i64> = lines(&rotated)
                .iter()
                .chain(after.iter())
                .map(|l| l["event"]["sequence"].as_i64().unwrap())
                .collect();
            let want: Vec<i64> = (1..=total as i64).collect();
            assert_eq!(seqs, want, "the old file and the new one: each event once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} + {} of {total}",
            before.len(),
            after.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The UDP port a process bound, as the kernel lists its sockets (rsyslogd's imudp takes port 0
/// but, unlike imtcp, writes no port file).
fn bound_port(pid: u32, proto: &str) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.display().to_string();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/{proto}")).ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let inode = f.get(9)?;
        // A TCP socket must be listening (state 0A), not a connection.
        if !inodes.iter().any(|i| i == inode) || (proto == "tcp" && f.get(3) != Some(&"0A")) {
            return None;
        }
        u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()
    })
}

/// Debian's `rsyslogd` in the foreground with the config at `conf`. Killed when dropped.
fn rsyslogd(dir: &Path, conf: &Path) -> Killed {
    Killed(
        std::process::Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(conf)
            .arg("-i")
            .arg(dir.join("pid"))
            .spawn()
            .expect("rsyslogd (Debian's rsyslog)"),
    )
}

/// `rsyslogd` receiving RELP (imrelp, from Debian's rsyslog-relp) on a port of its choosing into
/// `dir/out`: the daemon, its port and the file.
fn rsyslog_relp(dir: &Path) -> (Killed, u16, std::path::PathBuf) {
    rsyslog_relp_over(dir, None)
}

/// [`rsyslog_relp`], over TLS with `tls` (the CA, certificate and key files): librelp's own TLS
/// (`tls="on"`), which asks the client for a certificate signed by the CA and, here, named
/// `localhost` (`tls.authMode="name"`).
fn rsyslog_relp_over(
    dir: &Path,
    tls: Option<(&Path, &Path, &Path)>,
) -> (Killed, u16, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (conf, out) = (dir.join("rsyslog.conf"), dir.join("out"));
    let tls = tls.map_or(String::new(), |(ca, cert, key)| {
        format!(
            " tls=\"on\" tls.caCert=\"{}\" tls.myCert=\"{}\" tls.myPrivKey=\"{}\" tls.authMode=\"name\" tls.permittedPeer=[\"localhost\"]",
            ca.display(),
            cert.display(),
            key.display()
        )
    });
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\nmodule(load=\"imrelp\")\ninput(type=\"imrelp\" address=\"127.0.0.1\" port=\"0\" ruleset=\"t\"{tls})\nruleset(name=\"t\") {{ action(type=\"omfile\" file=\"{out}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
            dir = dir.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let rsyslog = rsyslogd(dir, &conf);
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Some(p) = bound_port(rsyslog.0.id(), "tcp") {
            break p;
        }
        assert!(Instant::now() < deadline, "rsyslogd bound no RELP port");
        std::thread::sleep(Duration::from_millis(20));
    };
    (rsyslog, port, out)
}

/// The lines of `out` once there are at least `n` of them.
fn lines_at_least(out: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if text.lines().count() >= n {
            return text.lines().map(str::to_owned).collect();
        }
        assert!(Instant::now() < deadline, "{n} lines: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `tsmon@32473` parameters of an RFC 5424 line.
fn own_params(line: &str) -> Vec<(String, String)> {
    let (sd, _) = parse_5424(line).unwrap_or_else(|| panic!("not RFC 5424: {line}"));
    sd.into_iter()
        .find(|(id, _)| id == "tsmon@32473")
        .unwrap_or_else(|| panic!("no tsmon@32473: {line}"))
        .1
}

/// The `tsmon@32473` parameters of each line, whose `seq` runs from 1 in line order.
fn own_params_from_one(lines: &[String]) -> Vec<Vec<(String, String)>> {
    let params: Vec<_> = lines.iter().map(|l| own_params(l)).collect();
    for (i, (l, p)) in lines.iter().zip(&params).enumerate() {
        assert!(
            p.iter()
                .any(|(k, v)| k == "seq" && *v == (i + 1).to_string()),
            "{l}"
        );
    }
    params
}

/// syslog over RELP to a real rsyslogd (imrelp): the cursor moves only past what the collector
/// acknowledged. A collector that takes the bytes but answers nothing (rsyslogd stopped with
/// SIGSTOP: the kernel still accepts the connection and the writes, which is all plain TCP can
/// see) leaves the events unexported and `check` says so; killed there, it loses nothing: the
/// next collector gets them, marked replay.
#[test]
#[ignore = "needs rsyslog-relp (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn syslog_over_relp_moves_the_cursor_only_past_what_rsyslog_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let (first, port, out) = rsyslog_relp(&d.path().join("a"));
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let config = |port: u16| {
        format!(
            "[[export]]\nkind = \"syslog\"\naddress = \"relp://127.0.0.1:{port}\"\npen = 32473\n"
        )
    };
    let mon = support::Monitor::new(&emu.socket, &config(port));
    let r = mon.check();
    assert!(r.stdout.contains("export_lag=0"), "{r:?}");
    let baseline = mon.events().len();
    let got = lines_at_least(&out, baseline);
    assert_eq!(got.len(), baseline, "{got:#?}");
    for (l, p) in got.iter().zip(own_params_from_one(&got)) {
        assert!(!p.iter().any(|(k, _)| k == "replay"), "{l}");
    }

    // Frozen: connects, takes the bytes, acknowledges nothing.
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(first.0.id() as i32, libc::SIGSTOP) }, 0);
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nRELPCNTRL", "relp-peer", 6201, "100.102.0.9");
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let total = mon.events().len();
    assert!(total > baseline);
    assert!(
        r.stdout
            .contains(&format!("export_lag={}", total - baseline)),
        "nothing counted as exported without an acknowledgement: {r:?}"
    );
    drop(first);

    // Another collector: what the frozen one never acknowledged arrives there, marked replay.
    let (_second, port, out) = rsyslog_relp(&d.path().join("b"));
    let text = std::fs::read_to_string(&mon.config).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("address = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &mon.config,
        text.replace(&old, &format!("address = \"relp://127.0.0.1:{port}\"")),
    )
    .unwrap();
    let r = mon.check();
    assert!(r.stdout.contains("export_lag=0"), "{r:?}");
    let got = lines_at_least(&out, total - baseline);
    assert_eq!(got.len(), total - baseline, "{got:#?}");
    let seqs: Vec<usize> = got
        .iter()
        .map(|l| {
            let p = own_params(l);
            assert!(p.iter().any(|(k, v)| k == "replay" && v == "1"), "{l}");
            p.iter()
                .find(|(k, _)| k == "seq")
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (baseline + 1..=total).collect::<Vec<_>>());
}

/// syslog over RELP over TLS to a real rsyslogd (imrelp with `tls="on"`, mutual TLS): every event
/// arrives, acknowledged, when the collector's certificate is signed by `ca_file` and the monitor
/// shows its own (`cert_file`, `key_file`). With a CA that did not sign the collector's, or
/// without a certificate of its own, nothing is sent and the lag says so.
#[test]
#[ignore = "needs rsyslog-relp and openssl (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn syslog_over_relp_over_tls_reaches_a_collector_whose_certificate_checks_out() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(d.path(), "good");
    let (other_ca, _, _) = certificates(d.path(), "other");
    let (_rsyslog, port, out) = rsyslog_relp_over(&d.path().join("c"), Some((&ca, &cert, &key)));
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let export = |ca: &Path, identity: bool| {
        let mut s = format!(
            "[[export]]\nkind = \"syslog\"\naddress = \"relp+tls://localhost:{port}\"\npen = 32473\nca_file = \"{}\"\n",
            ca.display()
        );
        if identity {
            s += &format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                key.display()
            );
        }
        s
    };
    for (ca, identity) in [(&other_ca, true), (&ca, false)] {
        let refused = support::Monitor::new(&emu.socket, &export(ca, identity));
        let r = refused.check();
        let lag = refused.events().len();
        assert!(r.stdout.contains(&format!("export_lag={lag}")), "{r:?}");
        assert!(
            r.stderr.contains("the collector does not take the events"),
            "{r:?}"
        );
    }
    let right = support::Monitor::new(&emu.socket, &export(&ca, true));
    let r = right.check();
    assert!(r.stdout.contains("export_lag=0"), "{r:?}");
    let n = right.events().len();
    let got = lines_at_least(&out, n);
    assert_eq!(got.len(), n, "from the right monitor only: {got:#?}");
    own_params_from_one(&got);
    assert!(
        got[0].contains("[tsmon@32473 kind=\"monitor.baseline\""),
        "{}",
        got[0]
    );
}

/// syslog over UDP to a real rsyslogd (imudp on a port of its choosing): each event one datagram,
/// one line.
#[test]
#[ignore = "needs rsyslog (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn syslog_over_udp_reaches_a_real_rsyslog() {
    let d = tempfile::tempdir().unwrap();
    let (conf, out) = (d.path().join("rsyslog.conf"), d.path().join("out"));
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\nmodule(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"0\" ruleset=\"t\")\nruleset(name=\"t\") {{ action(type=\"omfile\" file=\"{out}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
            dir = d.path().display(),
            out = out.display()
        ),
    )
    .unwrap();
    let rsyslog = rsyslogd(d.path(), &conf);
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Some(p) = bound_port(rsyslog.0.id(), "udp") {
            break p;
        }
        assert!(Instant::now() < deadline, "rsyslogd bound no UDP port");
        std::thread::sleep(Duration::from_millis(20));
    };
    let emu = Emulator::start(d.path(), emulator::tailnet());
    let mon = support::Monitor::new(
        &emu.socket,
        &format!(
            "[[export]]\nkind = \"syslog\"\naddress = \"udp://127.0.0.1:{port}\"\npen = 32473\n"
        ),
    );
    let r = mon.check();
    assert!(r.stdout.contains("export_lag=0"), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 1 {
            assert_eq!(text.lines().count(), 1, "{text}");
            let (sd, _) = parse_5424(text.lines().next().unwrap()).unwrap();
            assert!(sd.iter().any(|(id, _)| id == "tsmon@32473"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived over UDP");
        std::thread::sleep(Duration::from_millis(50));
    }
}
