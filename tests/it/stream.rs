//! `run` on the IPN bus, against the LocalAPI emulator: real-time detection, the version matrix,
//! and the stream failures a real daemon is hard to produce (cut mid-line, garbage, a 400 for a
//! mask bit, a daemon that never answers). Timers are set to an hour so that only the bus can
//! trigger a pass.

use crate::support;

use std::time::Duration;

use support::emulator::{self, Bus, Emulator, Mode};
use support::Monitor;

const BUS_ONLY: &str = "[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\ngrace = \"3s\"\n";

fn setup(doc: serde_json::Value) -> (tempfile::TempDir, Emulator, Monitor, support::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), doc);
    let mon = Monitor::new(&emu.socket, BUS_ONLY);
    let daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60), "baseline");
    assert!(emu.wait_opened(1, 60), "run opened the IPN bus");
    (dir, emu, mon, daemon)
}

fn joined(id: &str, host: &str) -> serde_json::Value {
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, id, host, 6201, "100.101.1.99");
    doc
}

#[test]
fn a_join_is_detected_through_the_bus() {
    // Both timers are an hour: only the bus can trigger this pass.
    let (_d, emu, mon, daemon) = setup(emulator::tailnet());
    emu.change(joined("nBUS1CNTRL", "bus-joiner"));
    assert!(mon.wait_for_event("device.new", 60), "device.new");
    assert!(daemon.terminate().success());
}

#[test]
fn mask_follows_the_daemon_version() {
    let (_d, emu, _mon, daemon) = setup(emulator::tailnet());
    assert_eq!(
        emu.masks()[0],
        (1 << 1) | (1 << 12) | (1 << 18),
        "1.102: PeerChanges + WireGuard state"
    );
    drop(daemon);

    let mut old = emulator::fixture("status-old-1.36.json");
    old["Version"] = "1.96.5-tabc".into();
    let (_d, emu, _mon, _daemon) = setup(old);
    assert_eq!(
        emu.masks()[0],
        (1 << 1) | (1 << 12),
        "before 1.102: no bit 18"
    );
}

#[test]
fn a_rejected_mask_bit_is_dropped_and_streaming_continues() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    emu.set_bus(Bus::Reject(1 << 18));
    let mon = Monitor::new(&emu.socket, BUS_ONLY);
    let _daemon = mon.spawn_run();
    assert!(emu.wait_opened(1, 60));
    let masks = emu.masks();
    assert_eq!(masks[0] & (1 << 18), 1 << 18);
    assert_eq!(masks[1], (1 << 1) | (1 << 12), "{masks:?}");
    assert!(mon.wait_for_event("monitor.baseline", 60));
    emu.change(joined("nREJ1CNTRL", "after-400"));
    assert!(mon.wait_for_event("device.new", 60));
}

#[test]
fn stream_cut_mid_line_reconnects_without_duplicates() {
    let (_d, emu, mon, _daemon) = setup(emulator::tailnet());
    emu.push("{\"PeersChanged\":[{\"ID\":5,\"Name\":\"half");
    emu.cut();
    assert!(emu.wait_opened(2, 60), "reconnected");
    emu.change(joined("nCUT1CNTRL", "after-cut"));
    assert!(mon.wait_for_event("device.new", 60));
    std::thread::sleep(Duration::from_millis(300));
    let kinds = mon.event_kinds();
    assert_eq!(
        kinds,
        vec!["device.new", "monitor.baseline"],
        "nothing re-alerted, no false down"
    );
}

#[test]
fn garbage_lines_trigger_a_re_read() {
    let (_d, emu, mon, _daemon) = setup(emulator::tailnet());
    emu.set_status(joined("nGRB1CNTRL", "seen-after-garbage"));
    emu.push("this is not json\n");
    assert!(mon.wait_for_event("device.new", 60));
    emu.push("{\"Engine\":{\"RBytes\":1}}\n{also garbage}\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mon.event_kinds().len(), 2);
}

#[test]
fn daemon_that_never_answers_is_down_after_grace_then_recovers() {
    let (_d, emu, mon, _daemon) = setup(emulator::tailnet());
    emu.set(Mode::Hang);
    emu.set_bus(Bus::Hang);
    emu.cut();
    // timeout 10 s + grace 3 s, plus a wide margin.
    assert!(
        mon.wait_for_event("monitor.source_down", 90),
        "source_down after grace"
    );
    emu.set_bus(Bus::Stream);
    emu.set_status(emulator::tailnet());
    assert!(
        mon.wait_for_event("monitor.source_recovered", 90),
        "recovered"
    );
    let kinds = mon.event_kinds();
    assert_eq!(
        kinds.iter().filter(|k| *k == "monitor.source_down").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k == "device.new" || k == "device.removed"),
        "{kinds:?}"
    );
}

#[test]
fn restart_within_grace_is_silent_and_reports_what_joined_meanwhile() {
    // A grace far longer than the restart, however slow the machine is.
    let dir = tempfile::tempdir().unwrap();
    let mut emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(
        &emu.socket,
        &BUS_ONLY.replace("grace = \"3s\"", "grace = \"120s\""),
    );
    let _daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60), "baseline");
    assert!(emu.wait_opened(1, 60), "run opened the IPN bus");
    let d = dir;
    emu.stop();
    std::thread::sleep(Duration::from_millis(1000));
    let emu2 = Emulator::start(d.path(), joined("nMEANCNTRL", "joined-meanwhile"));
    assert!(
        mon.wait_for_event("device.new", 60),
        "the join during the restart is reported"
    );
    // The join was read after the restart: the outage is over, within its grace.
    let kinds = mon.event_kinds();
    assert_eq!(
        kinds,
        vec!["device.new", "monitor.baseline"],
        "no source_down for a restart"
    );
    drop(emu2);
}

#[test]
fn peer_connected_is_logged_with_whois() {
    let (_d, emu, mon, _daemon) = setup(emulator::tailnet());
    let mut doc = joined("nCONNCNTRL", "connector");
    emu.change(doc.clone());
    assert!(mon.wait_for_event("device.new", 60));
    let key = doc["Peer"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, p)| p["HostName"] == "connector")
        .unwrap()
        .0
        .clone();
    doc["Peer"][&key]["LastHandshake"] = chrono::Utc::now().to_rfc3339().into();
    doc["Peer"][&key]["Active"] = true.into();
    emu.set_status(doc);
    emu.push("{\"PeerState\":{\"nCONNCNTRL\":{\"PeerWireGuardState\":\"established\"}}}\n");
    assert!(mon.wait_for_event("peer.connected", 60));
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "peer.connected")
        .unwrap();
    let detail = ev["detail"].as_str().unwrap();
    assert!(
        detail.contains("whois 100.101.1.99: node connector.tail1a2b3c.ts.net."),
        "{detail}"
    );
    assert!(detail.contains("alice@example.com"), "{detail}");
    assert!(
        ev.get("record_only").is_none(),
        "a device joined after the baseline is alerted: {ev}"
    );
}

/// `PeersChanged` that carries only presence (online/offline, last seen, endpoints) costs no
/// pass; a join inside a storm of them is still found at once.
#[test]
fn presence_notifies_cost_no_pass_and_a_join_in_a_storm_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(&emu.socket, BUS_ONLY);
    let (_daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60), "baseline");
    assert!(emu.wait_opened(1, 60));
    let metric = |name: &str| -> u64 {
        let (_, body) = support::http_get(port, "/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    // Let the startup passes finish: the first, and the one for the bus coming up (its initial
    // state notify), then nothing for a second (the timers are an hour).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric("tailscale_monitor_passes_total") < 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut passes = metric("tailscale_monitor_passes_total");
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = metric("tailscale_monitor_passes_total");
        if now == passes {
            break;
        }
        passes = now;
        assert!(std::time::Instant::now() < deadline);
    }
    let doc = emulator::tailnet();
    for i in 0..40 {
        let node = emulator::peer_node(&doc, "alice-phone", i % 2 == 0);
        emu.push(&format!(
            "{}\n",
            serde_json::json!({"PeersChanged": [node]})
        ));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric("tailscale_monitor_presence_notifies_total") < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "presence notifies not seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metric("tailscale_monitor_passes_total"),
        passes,
        "presence costs no pass"
    );

    // A join in the middle of the storm.
    let joined = joined("nSTORMCNTRL", "storm-joiner");
    emu.set_status(joined.clone());
    for i in 0..20 {
        let node = emulator::peer_node(&doc, "alice-phone", i % 2 == 0);
        emu.push(&format!(
            "{}\n",
            serde_json::json!({"PeersChanged": [node]})
        ));
        if i == 10 {
            let n = emulator::peer_node(&joined, "storm-joiner", true);
            emu.push(&format!("{}\n", serde_json::json!({"PeersChanged": [n]})));
        }
    }
    assert!(mon.wait_for_event("device.new", 60), "the join is found");
    // Decided from the bus's node: no pass, no `/status` read.
    assert_eq!(metric("tailscale_monitor_bus_deltas_total"), 1);
    assert_eq!(
        metric("tailscale_monitor_passes_total"),
        passes,
        "the join cost no pass"
    );
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "device.new")
        .unwrap();
    assert_eq!(ev["device"]["hostname"], "storm-joiner");
    // The reconcile reads the whole tailnet and finds nothing the delta left.
    mon.check();
    assert_eq!(mon.event_kinds(), ["device.new", "monitor.baseline"]);
}

/// `run` gives freed memory back whoever starts it: started without the allocator's settings, it
/// executes itself again with them, as the same process; an administrator's own value wins.
#[test]
fn run_sets_the_allocators_settings_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(&emu.socket, BUS_ONLY);
    let environ = |d: &support::Daemon| {
        let pid = d.0.id();
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        raw.split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| v.starts_with("MIMALLOC_"))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60), "baseline");
    let set = environ(&daemon);
    assert!(set.contains("MIMALLOC_PURGE_DELAY=0"), "{set:?}");
    assert!(set.contains("MIMALLOC_ARENA_EAGER_COMMIT=0"), "{set:?}");
    assert!(daemon.terminate().success(), "the same process ends as run");

    let daemon = mon.spawn_run_env(&[("MIMALLOC_PURGE_DELAY", "25")]);
    emu.change(joined("nENV1CNTRL", "env-joiner"));
    assert!(mon.wait_for_event("device.new", 60), "device.new");
    let set = environ(&daemon);
    assert!(set.contains("MIMALLOC_PURGE_DELAY=25"), "{set:?}");
    assert!(set.contains("MIMALLOC_ARENA_EAGER_COMMIT=0"), "{set:?}");
    assert!(daemon.terminate().success());
}
