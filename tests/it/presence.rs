//! Presence watches against the LocalAPI emulator: `run` alerts a watched device that stays
//! offline past `offline_after` (with no further notify: the threshold itself triggers the pass),
//! its return, nothing for a bounce, and one message when this server itself is offline. Real
//! daemons: `tests/real.rs`.

use crate::support;

use serde_json::Value;
use support::emulator::{self, flip, set_online, Emulator};
use support::Monitor;

const WATCH: &str = "[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\nbatch_window = \"1ms\"\n\n\
    [[watch]]\nname = \"laptops\"\ndevices = [\"alice-laptop\", \"bob-desktop\"]\noffline_after = \"2s\"\n";

#[test]
fn offline_past_the_threshold_is_alerted_once_and_so_is_the_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = emulator::tailnet();
    let emu = Emulator::start(dir.path(), doc.clone());
    let mon = Monitor::new(&emu.socket, WATCH);
    let (_daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));

    // A bounce shorter than offline_after: nothing.
    flip(&emu, &mut doc, "bob-desktop", false);
    flip(&emu, &mut doc, "bob-desktop", true);

    flip(&emu, &mut doc, "alice-laptop", false);
    assert!(
        mon.wait_for_event("device.offline", 60),
        "offline after 2 s"
    );
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "device.offline")
        .unwrap();
    let s = ev["summary"].as_str().unwrap();
    assert!(s.starts_with("alice-laptop has been offline for"), "{s}");
    assert!(s.contains("(watch \"laptops\")"), "{s}");
    let (_, metrics) = support::http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "tailscale_monitor_device_online{device=\"alice-laptop\",watch=\"laptops\"} 0"
        ),
        "{metrics}"
    );
    let r = mon.run(&["devices"]);
    let first = r.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        first.starts_with("alice-laptop") && first.contains("offline since"),
        "watched devices first: {}",
        r.stdout
    );

    flip(&emu, &mut doc, "alice-laptop", true);
    assert!(mon.wait_for_event("device.online", 60));
    let kinds = mon.event_kinds();
    assert_eq!(
        kinds.iter().filter(|k| k.starts_with("device.o")).count(),
        2,
        "one offline, one online, nothing for bob's bounce: {kinds:?}"
    );
}

#[test]
fn this_server_offline_is_one_message_not_one_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = emulator::tailnet();
    let emu = Emulator::start(dir.path(), doc.clone());
    let mon = Monitor::new(&emu.socket, WATCH);
    let _daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));
    // This server loses the control plane; every peer looks offline.
    doc["Self"]["Online"] = false.into();
    set_online(&mut doc, "alice-laptop", false);
    set_online(&mut doc, "bob-desktop", false);
    emu.set_status(doc.clone());
    emu.push("{\"SelfChange\":{}}\n");
    assert!(mon.wait_for_event("device.offline", 60));
    let offline: Vec<Value> = mon
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "device.offline")
        .collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert!(
        offline[0]["summary"]
            .as_str()
            .unwrap()
            .contains("2 watched device(s) unreachable — is this server offline?"),
        "{}",
        offline[0]
    );
    doc["Self"]["Online"] = true.into();
    set_online(&mut doc, "alice-laptop", true);
    set_online(&mut doc, "bob-desktop", true);
    emu.set_status(doc);
    emu.push("{\"SelfChange\":{}}\n");
    assert!(mon.wait_for_event("device.online", 60));
    assert_eq!(mon.count_events("device.online"), 1, "one message back too");
}

#[test]
fn a_watch_that_matches_no_device_is_a_config_check_warning() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(
        &emu.socket,
        "[[watch]]\nname = \"typo\"\ndevices = [\"db-O1\"]\n\n[[watch]]\nname = \"ok\"\ndevices = [\"tag:server\"]\nschedule = \"Mon-Fri 08:00-18:00 Europe/Berlin\"\n",
    );
    assert_eq!(mon.check().code, 0);
    let r = mon.run(&["config", "check"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("warning: [[watch]] \"typo\" matches no device this server knows (db-O1)"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("\"ok\""), "{r:?}");
    let bad = Monitor::new(
        &emu.socket,
        "[[watch]]\ndevices = [\"x\"]\nschedule = \"Mon-Fri 8-18\"\n",
    );
    let r = bad.run(&["config", "check"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("config.toml:"), "{r:?}");
}
