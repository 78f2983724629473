//! The binary against the LocalAPI emulator, no mail: exit codes, status lines, the event log,
//! and every way a daemon can fail to give a trustworthy snapshot.

use crate::support;

use support::emulator::{self, Emulator, Mode};
use support::Monitor;

fn setup() -> (tempfile::TempDir, Emulator, Monitor) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(&emu.socket, "");
    (dir, emu, mon)
}

#[test]
fn baseline_then_nothing_new() {
    let (_d, emu, mon) = setup();
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("TAILSCALE OK - baseline recorded: 5 devices, 3 users"),
        "{r:?}"
    );
    assert_eq!(r.stdout.lines().count(), 1, "one status line");
    let r = mon.check();
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("nothing new"), "{r:?}");
    assert_eq!(mon.event_kinds(), vec!["monitor.baseline"]);
    // The official client's host header.
    assert!(emu
        .requests()
        .iter()
        .all(|r| r.contains("host=local-tailscaled.sock")));
}

#[test]
fn new_device_is_critical_and_logged_once() {
    let (_d, emu, mon) = setup();
    mon.check();
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nNEW1CNTRL", "mystery-box", 6202, "100.101.1.77");
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout
            .starts_with("TAILSCALE CRITICAL - device.new mystery-box"),
        "{r:?}"
    );
    assert_eq!(mon.check().code, 0);
    assert_eq!(mon.event_kinds(), vec!["device.new", "monitor.baseline"]);
    let ev = &mon.events()[0];
    assert_eq!(ev["device"]["hostname"], "mystery-box");
    assert_eq!(ev["user"]["login"], "bob@example.com");
}

#[test]
fn rekey_is_a_warning() {
    let (_d, emu, mon) = setup();
    mon.check();
    let mut doc = emulator::tailnet();
    emulator::rekey_peer(&mut doc, "bob-desktop", "beef");
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("device.rekeyed bob-desktop"), "{r:?}");
}

/// Every failure is exit 3 with a one-line cause, and never touches what is known.
#[test]
fn unreadable_daemon_is_unknown_and_changes_nothing() {
    let (dir, mut emu, mon) = setup();
    mon.check();
    let cases: Vec<(Mode, &str)> = vec![
        (
            Mode::Status(emulator::fixture("status-needs-login.json")),
            "NeedsLogin",
        ),
        (Mode::Status(emulator::stopped()), "Stopped"),
        (
            Mode::Raw("{\"BackendState\": \"Running\", \"Peer\": {".into()),
            "malformed status JSON",
        ),
        (
            Mode::Error(500, "internal error\nsecond line".into()),
            "HTTP 500",
        ),
        (Mode::Hang, "no answer within"),
    ];
    for (mode, want) in cases {
        emu.set(mode);
        let r = mon.check();
        assert_eq!(r.code, 3, "{want}: {r:?}");
        assert!(
            r.stdout.starts_with("TAILSCALE UNKNOWN - LocalAPI"),
            "{want}: {r:?}"
        );
        assert!(r.stdout.contains(want), "{want}: {r:?}");
        assert_eq!(r.stdout.lines().count(), 1, "{want}: one line: {r:?}");
    }
    emu.stop();
    let r = mon.check();
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains("no such socket — is tailscaled running?"),
        "{r:?}"
    );

    // One outage, one alert; nothing removed.
    assert_eq!(
        mon.event_kinds(),
        vec!["monitor.source_down", "monitor.baseline"]
    );
    let devices = mon.run(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&devices.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5, "devices survive the outage");

    // Back, with the same tailnet: recovered, and nothing reported as new.
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        mon.event_kinds(),
        vec![
            "monitor.source_recovered",
            "monitor.source_down",
            "monitor.baseline"
        ]
    );
    drop(emu);
}

#[test]
fn from_cron_stderr_speaks_once_per_outage() {
    // As cron runs it: no log level set, stdout discarded, stderr mailed.
    let (_d, emu, mon) = setup();
    let cron = || -> support::Run {
        mon.cmd(&["check"])
            .env_remove("TAILSCALE_MONITOR_LOG")
            .output()
            .unwrap()
            .into()
    };
    let r = cron();
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "baseline: {r:?}");
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nCRONNEWCNTRL",
        "cron-joiner",
        6201,
        "100.101.1.60",
    );
    emu.set_status(doc.clone());
    let r = cron();
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (2, ""),
        "a change is alerted, not mailed by cron: {r:?}"
    );

    emu.set(Mode::Status(emulator::stopped()));
    let r = cron();
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("cannot read the tailnet"),
        "the outage, once: {r:?}"
    );
    for _ in 0..2 {
        let r = cron();
        assert_eq!(
            (r.code, r.stderr.as_str()),
            (3, ""),
            "not every minute: {r:?}"
        );
    }
    emu.set_status(doc);
    let r = cron();
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "recovered: {r:?}");
}

#[test]
fn hostile_names_are_inert_on_the_terminal() {
    let (_d, emu, mon) = setup();
    mon.check();
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nEVILCNTRL",
        "evil\u{1b}]0;pwned\u{7}\r\nx\u{202e}gpj.exe",
        6202,
        "100.101.1.66",
    );
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2);
    for out in [
        r.stdout.clone(),
        mon.run(&["devices"]).stdout,
        mon.run(&["events"]).stdout,
    ] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(!out.contains('\r'), "{out:?}");
    }
}

#[test]
fn devices_and_events_commands() {
    let (_d, _emu, mon) = setup();
    mon.check();
    let r = mon.run(&["devices"]);
    assert_eq!(r.code, 0, "{r:?}");
    for name in [
        "web-01*",
        "alice-laptop",
        "alice-phone",
        "nas",
        "bob-desktop",
        "bob@example.com",
        "100.101.1.2",
    ] {
        assert!(r.stdout.contains(name), "{name} in {}", r.stdout);
    }
    let r = mon.run(&["events", "--since", "1h"]);
    assert!(r.stdout.contains("monitor.baseline"), "{r:?}");
    let r = mon.run(&["events", "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!(r.stdout.trim(), "");
    let r = mon.run(&["events", "--since", "whenever"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--since `whenever`"), "{r:?}");
}

#[test]
fn bad_config_is_one_line_with_file_and_line() {
    let (_d, _emu, mon) = setup();
    let text = std::fs::read_to_string(&mon.config).unwrap() + "[daemon]\nintervall = \"30s\"\n";
    std::fs::write(&mon.config, text).unwrap();
    let r = mon.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout
            .contains("config.toml:10: unknown field `intervall`"),
        "{r:?}"
    );
    let r = mon.run(&["config", "check"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("config.toml:10"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(
        !mon.dir.path().join("state/state.db").exists(),
        "nothing written on a bad config"
    );
}

#[test]
fn corrupt_database_is_one_line_and_left_untouched() {
    let (_d, _emu, mon) = setup();
    let db = mon.dir.path().join("state/state.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let garbage = b"this is not a SQLite database, and it must not be overwritten\n".repeat(100);
    std::fs::write(&db, &garbage).unwrap();
    let r = mon.check();
    assert_eq!(r.code, 3, "{r:?}");
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("TAILSCALE UNKNOWN")
            && first.contains("state.db")
            && first.contains("not a database"),
        "{r:?}"
    );
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage, "left as it was");
    let r = mon.run(&["events"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("state.db") && r.stderr.lines().count() == 1,
        "{r:?}"
    );
}

#[test]
fn config_check_prints_effective_config() {
    let (_d, _emu, mon) = setup();
    let r = mon.run(&["config", "check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("interval = \"30s\""), "{r:?}");
    assert!(r.stdout.contains("reconcile = \"5m\""), "{r:?}");
    assert!(r.stderr.contains("config OK"), "{r:?}");
}

#[test]
fn demo_runs_without_config() {
    let r: support::Run = std::process::Command::new(support::bin())
        .arg("demo")
        .env("TAILSCALE_MONITOR_LOG", "warn")
        .env_remove("TAILSCALE_MONITOR_CONFIG")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    for want in [
        "monitor.baseline",
        "device.new",
        "device.rekeyed",
        "device.exit_node_offered",
    ] {
        assert!(r.stdout.contains(want), "{want}: {}", r.stdout);
    }
}

/// `demo` with a config that enforces the guard neither asks the relay for anything nor reports
/// on this server's guard: a simulated tailnet must not decide what this server's kernel lets in.
#[test]
fn demo_never_touches_the_guard() {
    let (_d, _emu, mon) = setup();
    let relay_dir = tempfile::tempdir().unwrap();
    let socket = relay_dir.path().join("privileged.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    mon.set_privileged_socket(&socket);
    let text = std::fs::read_to_string(&mon.config).unwrap() + "\n[guard]\nmode = \"enforce\"\n";
    std::fs::write(&mon.config, text).unwrap();
    let r = mon.run(&["demo"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("device.new"), "{r:?}");
    assert!(
        !r.stdout.contains("guard.") && !r.stderr.contains("guard"),
        "the demo says nothing of this server's guard: {r:?}"
    );
    assert!(
        listener.accept().is_err(),
        "demo connected to the privileged relay"
    );
}

#[test]
fn run_daemon_detects_and_stops_cleanly_on_sigterm() {
    let (_d, emu, mon) = setup();
    let text = std::fs::read_to_string(&mon.config).unwrap() + "[daemon]\ninterval = \"200ms\"\n";
    std::fs::write(&mon.config, text).unwrap();
    let daemon = mon.spawn_run();
    assert!(
        mon.wait_for_event("monitor.baseline", 60),
        "baseline not logged by run"
    );
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nRUN1CNTRL", "late-joiner", 6201, "100.101.1.90");
    assert!(emu.wait_opened(1, 60), "run opened the IPN bus");
    emu.change(doc);
    assert!(
        mon.wait_for_event("device.new", 60),
        "device.new not logged by run"
    );
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn run_polls_every_interval_when_the_bus_is_unavailable() {
    let (_d, emu, mon) = setup();
    emu.set_bus(emulator::Bus::Absent);
    let text = std::fs::read_to_string(&mon.config).unwrap() + "[daemon]\ninterval = \"200ms\"\n";
    std::fs::write(&mon.config, text).unwrap();
    let _daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nPOLLCNTRL", "polled", 6201, "100.101.1.91");
    emu.set_status(doc);
    assert!(mon.wait_for_event("device.new", 60), "found by polling");
}

/// `run` holds two handles on state.db (the passes and `[metrics]`). Other processes opening and
/// closing the database (`events`, `check`) must never make its later writes invisible.
#[test]
fn writes_of_run_stay_visible_to_other_processes() {
    let (_d, emu, mon) = setup();
    let (_daemon, _port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));
    for _ in 0..3 {
        assert_eq!(mon.run(&["events"]).code, 0); // open and close from another process
    }
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nVISCNTRL", "visible", 6201, "100.101.1.95");
    emu.change(doc);
    assert!(
        mon.wait_for_event("device.new", 60),
        "the daemon's write is visible"
    );
    assert!(
        mon.dir.path().join("state/state.db-wal").exists(),
        "the live WAL was not deleted"
    );
}

/// `--version` names the build's commit; the man page and the completions come from the clap
/// definitions, so every subcommand is in them; `run` logs its version at startup.
#[test]
fn version_man_page_and_completions() {
    let (_d, _emu, mon) = setup();
    let v = mon.run(&["--version"]);
    assert_eq!(v.code, 0);
    let line = v.stdout.trim();
    assert!(
        line.starts_with(&format!(
            "tailscale-monitor {} (",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    assert!(
        line.ends_with(')') && line.len() > 25,
        "a commit in parentheses: {line}"
    );
    let man = mon.run(&["man"]);
    assert_eq!(man.code, 0);
    assert!(
        man.stdout.contains(".TH tailscale-monitor 1"),
        "{}",
        &man.stdout[..200]
    );
    for sub in [
        "check",
        "run",
        "access",
        "devices",
        "events",
        "audit",
        "test\\-notify",
        "completions",
    ] {
        assert!(man.stdout.contains(sub), "{sub} in the man page");
    }
    for (shell, marker) in [
        ("bash", "complete -F _tailscale__monitor"),
        ("zsh", "#compdef tailscale-monitor"),
        ("fish", "complete -c tailscale-monitor"),
    ] {
        let c = mon.run(&["completions", shell]);
        assert_eq!(c.code, 0, "{shell}");
        assert!(
            c.stdout.contains(marker),
            "{shell}: {}",
            &c.stdout[..c.stdout.len().min(200)]
        );
        assert!(
            c.stdout.contains("access"),
            "{shell} completes the subcommands"
        );
    }
    let (daemon, port) = mon.spawn_run_with_metrics();
    daemon.wait_log(
        &format!("version=\"{}", &line["tailscale-monitor ".len()..]),
        1,
        60,
    );
    let (_, metrics) = support::http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("tailscale_monitor_build_info{version=\""),
        "{metrics}"
    );
}

/// F15: a device name cannot inject Nagios perfdata: the status line has exactly one `|`.
#[test]
fn a_device_name_cannot_inject_perfdata() {
    let (_d, emu, mon) = setup();
    mon.check();
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nPIPECNTRL",
        "db | devices=0;1;1",
        6202,
        "100.101.1.88",
    );
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.stdout.matches('|').count(), 1, "{r:?}");
    assert!(
        r.stdout.contains("| devices=6 "),
        "the real perfdata: {r:?}"
    );
}

/// F13: `audit` never prints a stored hash that is not 64 hex digits: escape sequences planted in
/// the database cannot repaint its verdict.
#[test]
fn audit_does_not_print_a_planted_escape_sequence() {
    let (_d, _emu, mon) = setup();
    mon.check();
    let before = mon.run(&["audit"]);
    let anchor = before
        .stdout
        .split("head ")
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap();
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_append_only_update;
         UPDATE events SET hash = char(27) || '[2A' || char(27) || '[2K' || char(13) || 'event log chain intact' || char(10) || 'anchor matches' WHERE id = 1;",
    )
    .unwrap();
    drop(db);
    let r = mon.run(&["audit", "--anchor", &anchor]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        !r.stdout.contains('\x1b') && !r.stdout.contains('\r'),
        "{r:?}"
    );
    assert!(r.stdout.contains("not a hash"), "{r:?}");
}

/// F7: with the store corrupt and the `store-failed` mark replaced by a link, `check` leaves the
/// link's target intact.
#[test]
fn a_planted_store_failed_link_is_not_followed() {
    let (d, _emu, mon) = setup();
    let text = std::fs::read_to_string(&mon.config).unwrap()
        + "\n[[notify]]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n";
    std::fs::write(&mon.config, text).unwrap();
    let state = mon.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(state.join("state.db"), vec![0x5a; 4096]).unwrap();
    let target = d.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, state.join("store-failed")).unwrap();
    // Both older than the hourly alert limit, so that the mark is written again.
    for (args, p) in [
        (&["-d", "3 hours ago"][..], &target),
        (
            &["-h", "-d", "3 hours ago"][..],
            &state.join("store-failed"),
        ),
    ] {
        let ok = std::process::Command::new("touch")
            .args(args)
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let r = mon.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
}

/// F8: `audit` says how many events come after the newest anchor it was given (no anchor vouches
/// for them), and an event moved in time behind the triggers' back breaks the log.
#[test]
fn audit_reports_what_its_anchors_cannot_cover_and_an_unhashed_edit() {
    let (_d, emu, mon) = setup();
    mon.check();
    let first = mon.run(&["audit"]);
    let anchor = first
        .stdout
        .split("head ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nLATERCNTRL", "later", 6202, "100.101.1.99");
    emu.set_status(doc);
    mon.check();
    let r = mon.run(&["audit", "--anchor", &anchor]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("1 event(s) after your newest anchor #1 cannot be verified by it"),
        "{r:?}"
    );
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute_batch(
        "DROP TRIGGER events_append_only_update;
         UPDATE events SET at = '2001-01-01T00:00:00+00:00' WHERE id = 2;",
    )
    .unwrap();
    drop(db);
    let r = mon.run(&["audit", "--anchor", &anchor]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout
            .contains("ALTERED: the event log breaks at event #2"),
        "{r:?}"
    );
}
