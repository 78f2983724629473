//! Every HTTP channel and `exec` against a loopback HTTP receiver: payloads, headers, the webhook
//! signature, retries after a 500, a permanently broken channel reported on the others, alerts of
//! a channel removed from the config moved to the configured ones, a storm
//! of 1,000 joins, and `test-notify`.

use crate::support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::emulator::{self, join, Emulator};
use support::receiver::Receiver;
use support::{webhook, Monitor};

/// The emulator's standard tailnet, a loopback receiver, and a monitor whose config is
/// `config(receiver URL)`.
fn with_receiver(
    config: impl FnOnce(&str) -> String,
) -> (tempfile::TempDir, Emulator, Receiver, Monitor) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let mon = Monitor::new(&emu.socket, &config(&rx.url));
    (dir, emu, rx, mon)
}

/// [`with_receiver`] whose first channel is the webhook `hook` at `/hook`; `extra` (given the
/// receiver's URL) is appended to the config.
fn with_hook(
    extra: impl FnOnce(&str) -> String,
) -> (tempfile::TempDir, Emulator, Receiver, Monitor) {
    with_receiver(|url| webhook("hook", &format!("{url}/hook")) + &extra(url))
}

/// The kinds of every event the receiver got at `/hook`, in order.
fn hook_kinds(rx: &Receiver) -> Vec<String> {
    rx.at("/hook")
        .iter()
        .flat_map(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn every_http_channel_and_exec_get_their_payload() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    support::private(&secret);
    let token = dir.path().join("token");
    std::fs::write(&token, "123:ABC\n").unwrap();
    support::private(&token);
    let exec_out = dir.path().join("exec.json");
    let u = &rx.url;
    let config = format!(
        "{}secret_file = \"{}\"\n\
         [[notify]]\nkind = \"ntfy\"\nurl = \"{u}/alerts\"\n\
         [[notify]]\nkind = \"slack\"\nurl = \"{u}/slack\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"{u}/discord\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"{u}/\"\ntoken_file = \"{tok}\"\nchat_id = \"-10042\"\n\
         [[notify]]\nkind = \"gotify\"\nurl = \"{u}/gotify/\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"cat > {out}\"]\n",
        webhook("hook", &format!("{u}/hook")),
        secret.display(),
        tok = token.display(),
        out = exec_out.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    assert_eq!(mon.check().code, 0);
    join(&emu, 1);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");

    // Webhook: documented schema, valid signature over the raw body.
    let hook = rx.at("/hook");
    assert_eq!(hook.len(), 2, "baseline and the alert");
    let h = &hook[1];
    let v = h.json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["test"], false);
    assert_eq!(v["events"][0]["kind"], "device.new");
    assert_eq!(v["events"][0]["device"]["hostname"], "joiner-0");
    let sig = &h.headers["x-tailscale-monitor-signature"];
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&h.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        want,
        "HMAC-SHA256 over t.body"
    );

    let ntfy = &rx.at("/alerts")[1];
    assert_eq!(ntfy.headers["priority"], "urgent");
    assert!(
        ntfy.headers["title"].contains("New device joiner-0"),
        "{:?}",
        ntfy.headers
    );
    assert!(ntfy.text().contains("joiner-0"));
    assert!(rx.at("/slack")[1].json()["text"]
        .as_str()
        .unwrap()
        .contains("New device joiner-0"));
    let discord = rx.at("/discord")[1].json();
    let content = discord["content"].as_str().unwrap();
    assert!(content.contains("joiner\\-0") && content.chars().count() <= 2000);
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({"parse": []})
    );
    let tg = &rx.at("/bot123:ABC/sendMessage")[1];
    assert_eq!(tg.json()["chat_id"], "-10042");
    assert!(tg.json()["text"].as_str().unwrap().contains("joiner-0"));
    let gotify = &rx.at("/gotify/message")[1];
    assert_eq!(gotify.headers["x-gotify-key"], "123:ABC");
    assert_eq!(gotify.json()["priority"], 8);
    let exec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exec_out).unwrap()).unwrap();
    assert_eq!(exec["events"][0]["kind"], "device.new");
}

#[test]
fn webhook_answering_500_then_200_is_delivered_once() {
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    rx.queue(&[500]);
    join(&emu, 1);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("not delivered yet") && r.stdout.contains("HTTP 500"),
        "{r:?}"
    );
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(mon.check().code, 0);
    let with_device: Vec<_> = rx
        .at("/hook")
        .into_iter()
        .filter(|r| r.text().contains("joiner-0"))
        .collect();
    assert_eq!(with_device.len(), 2, "one 500, one 200, nothing after");
}

#[test]
fn a_permanently_broken_channel_is_reported_on_the_others() {
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let (_dir, _emu, rx, mon) = with_receiver(|url| {
        format!(
            "{}{}\n[alerts]\ndelivery_max_age = \"1s\"\n",
            webhook("broken", &format!("http://127.0.0.1:{closed}/x")),
            webhook("ok", &format!("{url}/ok"))
        )
    });
    assert_eq!(mon.check().code, 1, "baseline not delivered on one channel");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    mon.check();
    let reports: Vec<_> = rx
        .at("/ok")
        .into_iter()
        .filter(|r| r.text().contains("monitor.delivery_failed"))
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "the failure is reported on the working channel"
    );
    let v = reports[0].json();
    assert!(
        v["events"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("channel broken"),
        "{v}"
    );
    assert!(mon
        .event_kinds()
        .contains(&"monitor.delivery_failed".to_owned()));
    mon.check();
    let again = rx
        .at("/ok")
        .into_iter()
        .filter(|r| r.text().contains("monitor.delivery_failed"))
        .count();
    assert_eq!(again, 1, "reported once, not at every retry");
}

#[test]
fn alerts_stuck_on_a_channel_removed_from_the_config_go_to_the_new_one() {
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let (_dir, _emu, rx, mon) =
        with_receiver(|_| webhook("old", &format!("http://127.0.0.1:{closed}/x")));
    assert_eq!(mon.check().code, 1, "baseline stuck on the broken channel");
    // The administrator replaces the channel; the stuck baseline must not be stranded.
    let text = std::fs::read_to_string(&mon.config).unwrap();
    let text = text.replace(
        &webhook("old", &format!("http://127.0.0.1:{closed}/x")),
        &webhook("new", &format!("{}/new", rx.url)),
    );
    std::fs::write(&mon.config, text).unwrap();
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("no longer configured"), "{r:?}");
    let got = rx.at("/new");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["events"][0]["kind"], "monitor.baseline");
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/new").len(), 1, "delivered once");
}

#[test]
fn a_full_disk_is_alerted_directly_and_run_recovers_when_space_returns() {
    let (_dir, emu, rx, mon) =
        with_hook(|_| "[daemon]\ninterval = \"1s\"\nbatch_window = \"1ms\"\n".to_owned());
    // The disk fills up: RLIMIT_FSIZE of the running `run`, lowered and raised with prlimit(2).
    let daemon = mon.spawn_run();
    let pid = daemon.0.id() as libc::pid_t;
    let set_limit = |soft: u64| {
        let l = libc::rlimit {
            rlim_cur: soft,
            rlim_max: libc::RLIM_INFINITY,
        };
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &l, std::ptr::null_mut()) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    assert!(!rx.wait("/hook", 1, 60).is_empty(), "baseline delivered");
    // Room for a few quiet passes, not for recording 300 joins (about 600 KiB of WAL).
    let wal = std::fs::metadata(mon.dir.path().join("state/state.db-wal"))
        .unwrap()
        .len();
    set_limit(wal + 192 * 1024);
    join(&emu, 300);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    let got = rx.wait("/hook", 2, 60);
    assert_eq!(
        hook_kinds(&rx),
        vec!["monitor.baseline", "monitor.store_failed"],
        "{:?}",
        got.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert!(got[1].text().contains("state.db"), "{}", got[1].text());
    // Several retries fail meanwhile; the alert is not repeated.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(rx.at("/hook").len(), 2, "told once");

    // Space returns: the next retry records the joins and the recovery.
    set_limit(libc::RLIM_INFINITY);
    assert!(mon.wait_for_event("monitor.store_recovered", 60));
    rx.wait("/hook", 3, 60);
    let k = hook_kinds(&rx);
    assert_eq!(
        k.iter().filter(|k| *k == "device.new").count(),
        300,
        "{k:?}"
    );
    assert!(k.contains(&"monitor.store_recovered".to_owned()), "{k:?}");
    assert_eq!(mon.count_events("device.new"), 300);
    assert!(daemon.terminate().success());
}

#[test]
fn check_on_a_full_disk_alerts_once_on_stderr_and_the_channels_then_recovers() {
    use std::os::unix::process::CommandExt;
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0, "baseline");
    join(&emu, 300);
    // The disk is full for `check`: room for the database as it is, not for 300 joins' WAL.
    let db = std::fs::metadata(mon.dir.path().join("state/state.db"))
        .unwrap()
        .len();
    let full_check = || -> support::Run {
        let mut cmd = mon.cmd(&["check"]);
        let soft = db + 64 * 1024;
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap().into()
    };
    let r = full_check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.starts_with("TAILSCALE UNKNOWN"), "{r:?}");
    assert!(
        r.stderr.contains("state.db"),
        "on stderr too, for cron's mail: {r:?}"
    );
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 2, "baseline, then the failure");
    assert_eq!(sent[1].json()["events"][0]["kind"], "monitor.store_failed");
    // Cron runs it again a minute later: still failing, not alerted again.
    assert_eq!(full_check().code, 3);
    assert_eq!(rx.at("/hook").len(), 2, "one alert per hour at most");

    // Space returns: the joins and the recovery go out.
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 3);
    let text = sent[2].text();
    assert!(text.contains("monitor.store_recovered"), "{text}");
    assert_eq!(mon.count_events("device.new"), 300);
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/hook").len(), 3, "recovered once");
}

#[test]
fn run_that_cannot_open_its_store_alerts_once_before_exiting() {
    let (dir, _emu, rx, mon) = with_hook(|_| String::new());
    let state = mon.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.db"), b"not a database ".repeat(300)).unwrap();
    // systemd would restart it every few seconds: one alert, not one per restart.
    for _ in 0..3 {
        let r = mon.run(&["run"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("not a database"), "{r:?}");
    }
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 1, "alerted once");
    assert_eq!(sent[0].json()["events"][0]["kind"], "monitor.store_failed");

    // The administrator moves the broken file away: `run` starts, records a new baseline and
    // reports the recovery.
    std::fs::rename(state.join("state.db"), dir.path().join("broken.db")).unwrap();
    let daemon = mon.spawn_run();
    rx.wait("/hook", 2, 60);
    let kinds = hook_kinds(&rx);
    assert!(
        kinds.contains(&"monitor.store_recovered".to_owned())
            && kinds.contains(&"monitor.baseline".to_owned()),
        "{kinds:?}"
    );
    assert!(daemon.terminate().success());
}

#[test]
fn a_state_the_user_may_not_open_is_a_terminal_hint_not_a_team_alert() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (_dir, _emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0, "baseline, as the service user");
    assert_eq!(rx.at("/hook").len(), 1);
    let state = mon.dir.path().join("state");
    // Someone else runs it by hand: as root, `nobody` runs a copy of the binary that it may
    // execute; otherwise the state directory is made unreadable.
    let root = unsafe { libc::geteuid() } == 0;
    let bin = mon.dir.path().join("tailscale-monitor");
    if root {
        std::fs::copy(support::bin(), &bin).unwrap();
        for p in [mon.dir.path(), &mon.config] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    } else {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let other = |args: &[&str]| -> support::Run {
        let mut c = std::process::Command::new(if root { bin.clone() } else { support::bin() });
        c.arg("--config").arg(&mon.config).args(args);
        if root {
            unsafe {
                c.pre_exec(|| {
                    if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c.output().unwrap().into()
    };
    let r = other(&["check"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.contains("Permission denied") && r.stdout.contains("run `check` as the user"),
        "{r:?}"
    );
    let r = other(&["events"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !r.stderr.contains("no state") && r.stderr.contains("Permission denied"),
        "{r:?}"
    );
    assert_eq!(rx.at("/hook").len(), 1, "nothing sent to the team");
    if !root {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn alerts_carry_a_log_anchor_that_audit_checks_against_a_rewritten_log() {
    use sha2::Digest;
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
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT id, data FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = String::new();
    for (id, data) in rows {
        let mut h = sha2::Sha256::new();
        h.update(format!("{prev}\n{data}"));
        let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        db.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![prev, hash, id],
        )
        .unwrap();
        prev = hash;
    }
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

#[test]
fn test_notify_reports_each_channel() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let config = format!(
        "{}{}",
        webhook("ok", &format!("{}/ok", rx.url)),
        webhook("broken", &format!("http://127.0.0.1:{closed}/x"))
    );
    let mon = Monitor::new(&emu.socket, &config);
    let r = mon.run(&["test-notify"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("ok (webhook): ok"), "{r:?}");
    assert!(
        r.stdout.contains("broken (webhook): FAILED — webhook:"),
        "{r:?}"
    );
    let v = rx.at("/ok")[0].json();
    assert_eq!(v["test"], true);
    assert_eq!(v["events"][0]["kind"], "monitor.test");
    assert!(
        v["subject"].as_str().unwrap().contains("TEST notification"),
        "{v}"
    );
    let r = mon.run(&["test-notify", "--channel", "ok"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = mon.run(&["test-notify", "--channel", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("no channel named `nope` (configured: ok, broken)"),
        "{r:?}"
    );
    assert!(
        !mon.dir.path().join("state/state.db").exists() || mon.event_kinds().is_empty(),
        "tests are not logged"
    );
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

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let mon = Monitor::new(&emu.socket, "[daemon]\nbatch_window = \"1ms\"\n");
    let daemon = mon.spawn_run_logged();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));

    // A channel added to the file takes effect on SIGHUP.
    let good = std::fs::read_to_string(&mon.config).unwrap()
        + &webhook("hook", &format!("{}/hook", rx.url));
    std::fs::write(&mon.config, &good).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config reloaded", 1, 60);
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nHUP1CNTRL", "after-reload", 6201, "100.104.0.1");
    emu.change(doc.clone());
    let got = rx.wait("/hook", 1, 60);
    assert!(
        got.iter().any(|r| r.text().contains("after-reload")),
        "the reloaded channel delivers"
    );

    // `config check` names the keys a reload cannot apply.
    let r = mon.run(&["config", "check"]);
    for key in tailscale_monitor::RESTART_ONLY.map(|r| r.key) {
        assert!(r.stdout.contains(key), "{key} in {r:?}");
    }
    // A key that needs a restart is said in the log, not silently ignored (issue 21).
    let moved = good.replace(
        "[daemon]\nbatch_window",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[daemon]\nbatch_window",
    );
    assert_ne!(moved, good);
    std::fs::write(&mon.config, &moved).unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_log("take effect only after a restart", 1, 60);
    assert!(line.contains("[metrics] listen"), "{line}");
    // Each of the other keys that need a restart, said by name; the running values stay, so
    // that changes keep being detected through the socket and state the daemon started with.
    let token = support::secret_file(dir.path(), "metrics-token", "t0k3n");
    let other_state = dir.path().join("other-state");
    for (key, edited) in [
        (
            "[metrics] token_file",
            moved.replace(
                "listen = \"127.0.0.1:0\"\n",
                &format!(
                    "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
                    token.display()
                ),
            ),
        ),
        (
            "[state] dir",
            good.replace(
                &mon.dir.path().join("state").display().to_string(),
                &other_state.display().to_string(),
            ),
        ),
        (
            "[tailscale] socket",
            good.replace(
                &emu.socket.display().to_string(),
                &dir.path().join("elsewhere.sock").display().to_string(),
            ),
        ),
    ] {
        // One SIGHUP at a time: each waits for the reload it causes.
        assert_ne!(edited, good, "{key}");
        let (said, reloaded) = (
            daemon.log_count("take effect only after a restart"),
            daemon.log_count("config reloaded"),
        );
        std::fs::write(&mon.config, &edited).unwrap();
        daemon.signal(libc::SIGHUP);
        let line = daemon.wait_log("take effect only after a restart", said + 1, 60);
        assert!(line.contains(key), "{key}: {line}");
        daemon.wait_log("config reloaded", reloaded + 1, 60);
        std::fs::write(&mon.config, &good).unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_log("config reloaded", reloaded + 2, 60);
    }
    assert!(!other_state.exists(), "the running state directory stays");
    std::fs::write(&mon.config, &good).unwrap();

    // A broken file is refused; the running config (with the channel) stays.
    std::fs::write(&mon.config, good.clone() + "bogus_key = 1\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config not reloaded", 1, 60);
    emulator::add_peer(
        &mut doc,
        "nHUP2CNTRL",
        "after-bad-reload",
        6201,
        "100.104.0.2",
    );
    emu.change(doc);
    let got = rx.wait("/hook", 2, 60);
    assert!(
        got.iter().any(|r| r.text().contains("after-bad-reload")),
        "still delivering after a bad reload"
    );
    assert!(daemon.terminate().success(), "still running, stops cleanly");
}

/// What whoever registers a device can put in its name: mentions, masked links, CR/LF, bidi and
/// zero-width characters, terminal escapes, and 10 kB of it.
const HOSTILE: &str = "@everyone @here <!channel> <@U024BE7LH> <https://evil.example|login-page> [click](https://evil.example/login) **bold** `code` \r\nBcc: x@y \u{202E}gpj.exe \u{200B}zero\u{200B}width \u{1b}[31mred\u{1b}[0m";

fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[test]
fn a_hostile_corpus_reaches_no_channel_as_markup() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let token = dir.path().join("token");
    std::fs::write(&token, "123:ABC\n").unwrap();
    support::private(&token);
    let exec_out = dir.path().join("exec.json");
    let u = &rx.url;
    let config = format!(
        "{}[[notify]]\nkind = \"ntfy\"\nurl = \"{u}/alerts\"\n\
         [[notify]]\nkind = \"slack\"\nurl = \"{u}/slack\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"{u}/discord\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"{u}/\"\ntoken_file = \"{tok}\"\nchat_id = \"-10042\"\n\
         [[notify]]\nkind = \"gotify\"\nurl = \"{u}/gotify/\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"alertmanager\"\nurl = \"{u}/am/\"\n\
         [[notify]]\nkind = \"teams\"\nurl = \"{u}/teams\"\n\
         [[notify]]\nkind = \"mattermost\"\nurl = \"{u}/mattermost\"\n\
         [[notify]]\nkind = \"googlechat\"\nurl = \"{u}/gchat\"\n\
         [[notify]]\nkind = \"pagerduty\"\nurl = \"{u}/pd\"\nrouting_key_file = \"{tok}\"\n\
         [[notify]]\nkind = \"pushover\"\nurl = \"{u}/po\"\ntoken_file = \"{tok}\"\nuser_key_file = \"{tok}\"\n\
         [[notify]]\nkind = \"matrix\"\nhomeserver = \"{u}/\"\nroom = \"!room:test\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"cat > {out}\"]\n",
        webhook("hook", &format!("{u}/hook")),
        tok = token.display(),
        out = exec_out.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    assert_eq!(mon.check().code, 0);
    let long = format!("{HOSTILE} {}", "A".repeat(10_000));
    let mut doc = emulator::tailnet();
    emulator::add_user(&mut doc, 7003, "mallory@evil.example", &long);
    emulator::add_peer(&mut doc, "nHOSTILECNTRL", &long, 7003, "100.101.1.88");
    emu.set_status(doc);
    assert_eq!(mon.check().code, 2);

    // Slack: exactly Slack's escaping of the three characters; no mention or link can form.
    let slack = rx.at("/slack")[1].json();
    let text = slack["text"].as_str().unwrap();
    for raw in [
        "<!channel>",
        "<@U024BE7LH>",
        "<https://evil.example|login-page>",
    ] {
        assert!(!text.contains(raw), "{raw} reached Slack");
    }
    assert!(text.contains("@everyone @here &lt;!channel&gt; &lt;@U024BE7LH&gt; &lt;https\u{A789}//evil\u{2024}example|login-page&gt; [click](https\u{A789}//evil\u{2024}example/login)"), "{text}");
    assert_eq!(slack["unfurl_links"], false);
    // F17: no chat gets the hostile URL as a word it would link on its own.
    for path in [
        "/slack",
        "/discord",
        "/bot123:ABC/sendMessage",
        "/gotify/message",
        "/teams",
        "/mattermost",
        "/gchat",
        "/po",
    ] {
        let body = rx.at(path)[1].text();
        assert!(
            !body.contains("https://evil.example"),
            "a link in {path}: {body}"
        );
        assert!(
            !body.contains("https:\\/\\/evil.example"),
            "a link in {path}: {body}"
        );
    }

    // Discord: no mention is parsed, every Markdown character escaped (no masked link).
    let discord = rx.at("/discord")[1].json();
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({"parse": []})
    );
    let content = discord["content"].as_str().unwrap();
    assert!(content.contains("\\@everyone \\@here \\<!channel\\> \\<\\@U024BE7LH\\> \\<https\u{A789}//evil\u{2024}example\\|login\\-page\\> \\[click\\]\\(https\u{A789}//evil\u{2024}example/login\\) \\*\\*bold\\*\\* \\`code\\`"), "{content}");
    assert!(content.chars().count() <= 2000);

    // Telegram: plain text (no parse_mode), Gotify and ntfy without Markdown.
    let tg = rx.at("/bot123:ABC/sendMessage")[1].json();
    assert!(tg.get("parse_mode").is_none(), "{tg}");
    assert!(tg["text"].as_str().unwrap().chars().count() <= 4096);
    let gotify = rx.at("/gotify/message")[1].json();
    assert!(gotify.get("extras").is_none(), "{gotify}");
    let ntfy = &rx.at("/alerts")[1];
    assert!(!ntfy.headers.contains_key("markdown"), "{:?}", ntfy.headers);
    assert!(!ntfy.headers["title"].contains('\n'));

    // Teams: an Adaptive Card whose text is Markdown-escaped.
    let teams = rx.at("/teams")[1].json();
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let body_text = card["content"]["body"][1]["text"].as_str().unwrap();
    assert!(
        body_text.contains("\\[click\\]\\(https\u{A789}//evil\u{2024}example/login\\)"),
        "{body_text}"
    );
    // Mattermost: Slack's escaping, Markdown escaped, and no @ left to mention with.
    let mm = rx.at("/mattermost")[1].json();
    let mm_text = mm["text"].as_str().unwrap();
    assert!(!mm_text.contains('@'), "{mm_text}");
    assert!(
        mm_text.contains("\u{FF20}everyone \u{FF20}here &lt;!channel&gt;"),
        "{mm_text}"
    );
    let gchat = rx.at("/gchat")[1].json();
    assert!(gchat["text"]
        .as_str()
        .unwrap()
        .contains("&lt;!channel&gt; &lt;\u{40}U024BE7LH&gt;"));
    // PagerDuty: one trigger per event, deduplicated per host, kind and device.
    let pd: Vec<serde_json::Value> = rx.at("/pd").iter().map(|r| r.json()).collect();
    let dev = pd
        .iter()
        .find(|v| v["payload"]["class"] == "device.new")
        .expect("a trigger for device.new");
    assert_eq!(dev["event_action"], "trigger");
    assert_eq!(dev["payload"]["severity"], "critical");
    assert!(dev["dedup_key"]
        .as_str()
        .unwrap()
        .ends_with("/device.new/nHOSTILECNTRL"));
    // Pushover: a form, priority by severity.
    let po = rx.at("/po").last().unwrap().text();
    assert!(po.contains("priority=1"), "{po}");
    // Matrix: HTML-escaped formatted body and no mentions at all.
    let mx = rx
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .starts_with("/_matrix/client/v3/rooms/%21room%3Atest/send/m.room.message/tsm-")
        })
        .collect::<Vec<_>>();
    assert_eq!(
        mx.len(),
        2,
        "baseline and alert: {:?}",
        rx.requests()
            .iter()
            .map(|r| r.path.clone())
            .filter(|p| p.contains("matrix"))
            .collect::<Vec<_>>()
    );
    assert_eq!(mx[1].method, "PUT");
    let m = mx[1].json();
    assert_eq!(m["m.mentions"], serde_json::json!({}));
    assert!(m["formatted_body"]
        .as_str()
        .unwrap()
        .contains("@everyone @here &lt;!channel&gt;"));

    // No channel gets a control, bidi or zero-width character, in any string.
    let exec = std::fs::read_to_string(&exec_out).unwrap();
    for (name, body) in [
        ("slack", slack.to_string()),
        ("discord", discord.to_string()),
        ("telegram", tg.to_string()),
        ("gotify", gotify.to_string()),
        ("ntfy", ntfy.text()),
        (
            "alertmanager",
            rx.at("/am/api/v2/alerts").last().unwrap().text(),
        ),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
        let mut strings = vec![];
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&v, &mut strings);
        for s in strings {
            assert!(!s.chars().any(forbidden), "{name}: {s:?}");
            assert!(!s.contains("\nBcc:"), "{name}: a line break from the name");
        }
    }
    // The webhook and exec carry the raw name as JSON data (escaped by JSON itself): consumers
    // get the facts; nothing there is markup.
    let raw_name = |v: serde_json::Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["device"]["hostname"] == long.as_str())
    };
    assert!(
        raw_name(rx.at("/hook")[1].json()),
        "webhook: the name as data"
    );
    assert!(
        raw_name(serde_json::from_str(&exec).unwrap()),
        "exec: the name as data"
    );

    // test-notify reaches every kind.
    let before = rx.requests().len();
    let r = mon.run(&["test-notify"]);
    assert_eq!(r.code, 0, "{r:?}");
    for kind in [
        "teams",
        "mattermost",
        "googlechat",
        "pagerduty",
        "pushover",
        "matrix",
    ] {
        assert!(r.stdout.contains(&format!("({kind}): ok")), "{kind}: {r:?}");
    }
    assert!(rx.requests().len() >= before + 12);
}

/// One secret of each kind in the config; none of them may appear in anything the monitor prints:
/// `config check`, `test-notify`, its logs (a failed POST included), `/metrics`.
#[test]
fn secrets_never_appear_in_what_the_monitor_prints() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = support::smtp::closed_port();
    let p = hold.port;
    let token = dir.path().join("token");
    std::fs::write(&token, "TOKENFILESECRET4\n").unwrap();
    support::private(&token);
    let secrets = [
        "SLACKSECRET1",
        "DISCORDSECRET2",
        "hunter2",
        "QUERYSECRET3",
        "TOKENFILESECRET4",
        "SMTPSECRET5",
    ];
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, "SMTPSECRET5\n").unwrap();
    support::private(&pw);
    let config = format!(
        "[[notify]]\nkind = \"slack\"\nurl = \"http://127.0.0.1:{p}/services/T000/B000/SLACKSECRET1\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"http://127.0.0.1:{p}/api/webhooks/123/DISCORDSECRET2\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"http://alice:hunter2@127.0.0.1:{p}/x?token=QUERYSECRET3&team=ops\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"http://127.0.0.1:{p}/\"\ntoken_file = \"{t}\"\nchat_id = \"1\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"email\"\nto = [\"a@example.com\"]\nfrom = \"m@example.com\"\nsmtp = \"smtp://mon@127.0.0.1:{p}\"\npassword_file = \"{pw}\"\ntimeout = \"2s\"\n",
        t = token.display(),
        pw = pw.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    let mut printed = String::new();
    for args in [
        &["config", "check"][..],
        &["test-notify"][..],
        &["check"][..],
    ] {
        let r: support::Run = mon
            .cmd(args)
            .env("TAILSCALE_MONITOR_LOG", "debug")
            .output()
            .unwrap()
            .into();
        printed += &r.stdout;
        printed += &r.stderr;
    }
    assert!(printed.contains("REDACTED"), "{printed}");
    assert!(printed.contains("FAILED"), "test-notify ran: {printed}");
    let (daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    let (_, metrics) = support::http_get(port, "/metrics").unwrap();
    printed += &metrics;
    drop(daemon);
    for s in secrets {
        assert!(!printed.contains(s), "{s} printed in:\n{printed}");
    }
}

/// A delivery that timed out may have arrived: the retry must not post twice. Matrix gets the
/// same transaction id (the server deduplicates), PagerDuty the same `dedup_key`.
#[test]
fn a_retry_after_a_timeout_reuses_the_matrix_txn_and_the_pagerduty_dedup_key() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    support::private(&token);
    let u = &rx.url;
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"matrix\"\nhomeserver = \"{u}/\"\nroom = \"!r:test\"\ntoken_file = \"{t}\"\ntimeout = \"1s\"\n\
             [[notify]]\nkind = \"pagerduty\"\nurl = \"{u}/pd\"\nrouting_key_file = \"{t}\"\ntimeout = \"1s\"\n",
            t = token.display()
        ),
    );
    // Both first requests are taken but answered too late: the client times out.
    rx.queue(&[0, 0]);
    let r = mon.check();
    assert_eq!(r.code, 1, "not delivered yet: {r:?}");
    assert_eq!(mon.check().code, 0, "the retry goes through");
    let txns: Vec<String> = rx
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/send/m.room.message/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(txns.len(), 2, "{txns:?}");
    assert_eq!(txns[0], txns[1], "the same transaction id");
    let keys: Vec<String> = rx
        .at("/pd")
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the same dedup_key");
}

/// The `apprise` channel through the real Apprise CLI (PyPI), delivering with its `json://`
/// notifier to the loopback receiver: the route to every service we do not ship.
#[test]
#[ignore = "needs the Apprise CLI: run tests/run-all.sh"]
fn apprise_delivers_through_the_real_cli() {
    let apprise = std::env::var("TM_APPRISE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tailscale-monitor/venv/bin/apprise",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&apprise).exists(),
        "Apprise is not installed ({apprise}): run tests/setup/install-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let urls = dir.path().join("apprise-urls");
    let target = rx.url.replace("http://", "json://") + "/apprise";
    std::fs::write(&urls, format!("# one URL per line\n{target}\n")).unwrap();
    support::private(&urls);
    // F5: what every local user can read of the child (its command line): recorded by a wrapper
    // in front of the real CLI.
    let argv = dir.path().join("argv");
    let wrapper = support::script(
        dir.path(),
        "apprise-wrapper",
        &format!(
            "printf '%s\\n' \"$@\" >> '{}'\nexec '{apprise}' \"$@\"\n",
            argv.display()
        ),
    );
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"apprise\"\nprogram = \"{}\"\nurls_file = \"{}\"\ntimeout = \"60s\"\n",
            wrapper.display(),
            urls.display()
        ),
    );
    assert_eq!(mon.check().code, 0);
    join(&emu, 1);
    assert_eq!(mon.check().code, 2);
    let got = rx.wait("/apprise", 2, 60);
    assert_eq!(got.len(), 2, "baseline and the alert");
    let v = got[1].json();
    assert!(
        v["title"].as_str().unwrap().contains("New device joiner-0"),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("joiner-0"), "{v}");
    let r = mon.run(&["config", "check"]);
    assert!(!r.stdout.contains(&target), "the URLs stay in their file");
    let argv = std::fs::read_to_string(&argv).unwrap();
    assert!(
        !argv.contains("json://") && argv.contains("--config"),
        "no service URL on the command line: {argv}"
    );
}

/// F12: a child (here `exec`) inherits none of the monitor's environment: a password given to
/// the monitor in its environment never reaches the program.
#[test]
fn an_exec_child_does_not_inherit_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let env_file = dir.path().join("env");
    let script = support::script(
        dir.path(),
        "dump-env",
        &format!("cat >/dev/null\nenv > '{}'\n", env_file.display()),
    );
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"exec\"\ncommand = [\"{}\"]\n",
            script.display()
        ),
    );
    let r: support::Run = mon
        .cmd(&["check"])
        .env("TAILSCALE_MONITOR_SMTP_PASSWORD", "s3cret-in-env")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("s3cret-in-env"), "{env}");
    assert!(env.contains("PATH="), "{env}");
}

/// The `matrix` channel against a real homeserver (Synapse from PyPI): the alert arrives in the
/// room with its body, and a device named `@room` mentions nobody.
#[test]
#[ignore = "needs Synapse: run tests/run-all.sh"]
fn matrix_alerts_arrive_in_a_synapse_room_and_mention_nobody() {
    let syn = support::synapse::Synapse::start();
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let token = dir.path().join("matrix-token");
    std::fs::write(&token, &syn.token).unwrap();
    support::private(&token);
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"matrix\"\nhomeserver = \"http://127.0.0.1:{}\"\nroom = \"{}\"\ntoken_file = \"{}\"\n",
            syn.port,
            syn.room,
            token.display()
        ),
    );
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nROOMCNTRL",
        "@room <b>pwned</b>",
        6201,
        "100.101.1.89",
    );
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let msgs = syn.messages();
    assert_eq!(msgs.len(), 2, "baseline and the alert: {msgs:?}");
    let m = &msgs[1];
    let body = m["body"].as_str().unwrap();
    assert!(body.contains("New device @room <b>pwned</b>"), "{body}");
    assert_eq!(m["m.mentions"], serde_json::json!({}), "no mention: {m}");
    let html = m["formatted_body"].as_str().unwrap();
    assert!(html.contains("@room &lt;b&gt;pwned&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert_eq!(mon.check().code, 0);
    assert_eq!(syn.messages().len(), 2, "posted once");
}

/// F2: a rate-limited per-event channel makes progress. PagerDuty takes 20 events, then answers
/// 429: the 20 it took are kept, and the next `check` sends only the 10 left, each event once.
#[test]
fn a_rate_limited_pagerduty_keeps_what_it_accepted() {
    let keys = tempfile::tempdir().unwrap();
    let key = support::secret_file(keys.path(), "routing-key", "R0UT1NG");
    let (_d, emu, rx, mon) = with_receiver(|url| {
        format!(
            "[[notify]]\nkind = \"pagerduty\"\nurl = \"{url}/pd\"\nrouting_key_file = \"{}\"\n",
            key.display()
        )
    });
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    for i in 0..30 {
        emulator::add_peer(
            &mut doc,
            &format!("nJOIN{i:02}CNTRL"),
            &format!("joiner-{i:02}"),
            6202,
            &format!("100.101.2.{}", i + 10),
        );
    }
    emu.set_status(doc);
    rx.queue(&[200; 20]);
    rx.queue(&[429]);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("10 alert(s) not delivered yet"), "{r:?}");
    let r = mon.check();
    assert!(!r.stdout.contains("not delivered"), "{r:?}");
    let keys: Vec<String> = rx
        .at("/pd")
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    // The baseline, 20 accepted, the one refused, then the 10 left: nothing sent twice that
    // was accepted.
    assert_eq!(keys.len(), 1 + 20 + 1 + 10, "{keys:?}");
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 31, "every device once, and the baseline");
}

/// F2: a message the channel refuses for good (a 400) is split into its events; the one refused
/// alone goes to the dead letters, is reported once on the other channel as
/// `monitor.delivery_failed`, and does not block the events after it.
#[test]
fn an_alert_refused_for_good_does_not_block_the_queue() {
    let (_d, emu, rx, mon) = with_hook(|url| webhook("other", &format!("{url}/other")));
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    for (i, host) in ["too-long", "second", "third"].iter().enumerate() {
        emulator::add_peer(
            &mut doc,
            &format!("nDEAD{i}CNTRL"),
            host,
            6202,
            &format!("100.101.3.{}", i + 10),
        );
    }
    emu.set_status(doc);
    // The baseline went to both. Now: the batch of three to `hook` (400), its first event
    // alone (400), the second and third alone (200); `other` takes everything.
    rx.queue(&[400, 400]);
    let r = mon.check();
    assert!(
        !r.stdout.contains("not delivered"),
        "nothing left queued: {r:?}"
    );
    let kinds = hook_kinds(&rx);
    assert_eq!(
        kinds.iter().filter(|k| *k == "device.new").count(),
        3 + 1 + 2,
        "the batch, the refused one alone, then the two after it: {kinds:?}"
    );
    let other: Vec<String> = rx
        .at("/other")
        .iter()
        .flat_map(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["kind"].as_str().unwrap(),
                        e["summary"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let failed: Vec<&String> = other
        .iter()
        .filter(|k| k.starts_with("monitor.delivery_failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{other:?}");
    assert!(
        failed[0].contains("refused an alert for good"),
        "{failed:?}"
    );
    // Nothing is retried: the next check sends nothing more to `hook`.
    let before = rx.at("/hook").len();
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/hook").len(), before);
}

/// F10: a redirect is never followed: the Gotify key (a custom header) and the body never reach
/// the host it points to.
#[test]
fn a_redirect_does_not_carry_the_credentials_elsewhere() {
    let keys = tempfile::tempdir().unwrap();
    let token = support::secret_file(keys.path(), "gotify-token", "G0T1FYKEY");
    let elsewhere = Receiver::start();
    let (_d, _emu, rx, mon) = with_receiver(|url| {
        format!(
            "[[notify]]\nkind = \"gotify\"\nurl = \"{url}/g\"\ntoken_file = \"{}\"\n",
            token.display()
        )
    });
    rx.redirect_to(&format!("{}/stolen", elsewhere.url));
    rx.queue(&[307]);
    let r = mon.check();
    assert!(r.stdout.contains("not delivered yet"), "{r:?}");
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other host"
    );
    assert_eq!(
        mon.check().code,
        0,
        "delivered to the configured URL on retry"
    );
    assert_eq!(
        rx.requests().len(),
        2,
        "the refused redirect, then the delivery"
    );
}

/// F11: a channel that answers an error with 256 MiB costs the monitor a few KiB of it: the
/// delivery fails with a one-line message and the `check` process stays small.
#[test]
fn a_huge_error_answer_from_a_channel_is_not_read_whole() {
    // Zeros: untouched pages of the shared zero page, so this process stays small serving them.
    let body = bytes::Bytes::from(vec![0u8; 256 << 20]);
    let (url, _rt) = support::serve_http(body, |body, _req| async move {
        Ok::<_, std::convert::Infallible>(
            hyper::Response::builder()
                .status(500)
                .body(http_body_util::Full::new(body))
                .unwrap(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(&emu.socket, &webhook("hook", &format!("{url}/hook")));
    // 96 MiB: several times what `check` needs, and far less than the answer.
    let (stdout, status) = support::run_bounded(
        std::process::Command::new(support::bin())
            .arg("--config")
            .arg(&mon.config)
            .arg("check"),
        96 << 20,
    );
    assert!(
        stdout.contains("HTTP 500"),
        "check did not finish within 96 MiB ({status}): {stdout}"
    );
}
