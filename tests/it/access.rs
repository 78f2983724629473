//! Who may reach this server, against the LocalAPI emulator: the states a real daemon is hard to
//! put in — a filter-only change that arrives with no bus message at all (tailscaled >= 1.100
//! against a control plane that sends deltas), a netmap without `PacketFilterRules` (old daemons),
//! a 10,000-rule filter, malformed rules. The real-daemon story is in `tests/real.rs`.

use crate::support;

use serde_json::{json, Value};
use support::emulator::{self, Emulator};
use support::smtp::Smtp;
use support::{email_channel, posture_finding, Monitor};

const WEB01: [&str; 2] = ["100.101.1.1", "fd7a:115c:a1e0::1"];

/// A rule letting these sources reach TCP `ports` on web-01 (both address families).
fn rule(srcs: &[&str], first: u16, last: u16) -> Value {
    json!({
        "SrcIPs": srcs,
        "DstPorts": WEB01.iter().map(|ip| json!({"IP": ip, "Ports": {"First": first, "Last": last}})).collect::<Vec<_>>(),
        "IPProto": [6],
    })
}

/// alice-laptop (100.101.1.2) may reach 22; bob-desktop (100.101.1.5) is not in the filter.
fn closed() -> Value {
    json!([rule(&["100.101.1.2", "fd7a:115c:a1e0::2"], 22, 22)])
}

fn opened_to_bob() -> Value {
    json!([
        rule(&["100.101.1.2", "fd7a:115c:a1e0::2"], 22, 22),
        rule(&["100.101.1.5", "fd7a:115c:a1e0::5"], 22, 22),
    ])
}

/// The privileged relay for `mon`, as root, asking `daemon` on its socket with write permission.
fn relay(mon: &Monitor, daemon: &Emulator) -> support::PrivilegedRelay {
    support::PrivilegedRelay::start(
        &mon.privileged_socket(),
        &daemon.root_socket,
        &support::own_group(),
    )
}

fn setup(extra: &str) -> (tempfile::TempDir, Emulator, Monitor) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        closed(),
        Value::Null,
    ));
    let mon = Monitor::new(&emu.socket, extra);
    (dir, emu, mon)
}

#[test]
fn a_widened_filter_is_critical_and_a_repeated_push_is_silent() {
    let (_d, emu, mon) = setup("");
    assert_eq!(mon.check().code, 0);
    // The same rules again, reordered and duplicated: nothing for this node.
    let mut same = opened_to_bob();
    same.as_array_mut().unwrap().truncate(1);
    same.as_array_mut().unwrap().push(closed()[0].clone());
    emu.set_netmap(emulator::netmap(&emulator::tailnet(), same, Value::Null));
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");

    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        opened_to_bob(),
        Value::Null,
    ));
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "access.widened")
        .expect("access.widened");
    assert_eq!(ev["severity"], "critical");
    let summary = ev["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "bob@example.com (bob-desktop, 100.101.1.5) may now reach this server on tcp 22"
        ),
        "{summary}"
    );
    assert!(summary.contains("SSH port 22"), "{summary}");
    assert_eq!(ev["device"]["hostname"], "bob-desktop");
    assert_eq!(
        mon.count_events("access.widened"),
        1,
        "v4 and v6: one grant"
    );

    // `access` shows the model.
    let r = mon.run(&["access"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("bob@example.com (bob-desktop, 100.101.1.5)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("tcp 22"), "{}", r.stdout);
    assert!(
        r.stdout.contains("2 source(s) may reach web-01"),
        "{}",
        r.stdout
    );
    let r = mon.run(&["access", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reach"].as_array().unwrap().len(), 2, "{v}");

    // Closed again: narrowed (info), and the check is OK-level.
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        closed(),
        Value::Null,
    ));
    assert_eq!(mon.check().code, 0);
    assert_eq!(mon.count_events("access.narrowed"), 1);
}

#[test]
fn ssh_as_root_and_this_nodes_trust_signals() {
    let (_d, emu, mon) = setup("");
    emu.set_tka(Some(
        json!({"Enabled": true, "TrustedKeys": [{"Key": "tlpub:aaaa", "Votes": 1}]}),
    ));
    assert_eq!(mon.check().code, 0);
    let ssh = json!({"rules": [{
        "principals": [{"nodeIP": "100.101.1.5"}, {"nodeIP": "fd7a:115c:a1e0::5"}],
        "sshUsers": {"root": "root"},
        "action": {"accept": true, "allowAgentForwarding": true}
    }]});
    emu.set_netmap(emulator::netmap(&emulator::tailnet(), closed(), ssh));
    emu.set_tka(Some(json!({"Enabled": false, "TrustedKeys": null})));
    emu.set_prefs(Some(
        json!({"RunSSH": true, "AdvertiseRoutes": ["0.0.0.0/0", "::/0"]}),
    ));
    let mut doc = emulator::tailnet();
    doc["ClientVersion"] = json!({"RunningLatest": false, "LatestVersion": "1.104.1"});
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let kinds = mon.event_kinds();
    for k in [
        "access.ssh_widened",
        "node.tailnet_lock_disabled",
        "node.ssh_changed",
        "node.routes_changed",
        "node.update_available",
    ] {
        assert!(kinds.contains(&k.to_owned()), "{k} in {kinds:?}");
    }
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "access.ssh_widened")
        .unwrap();
    let s = ev["summary"].as_str().unwrap();
    assert!(
        s.contains("bob-desktop") && s.contains("including ROOT"),
        "{s}"
    );
}

#[test]
fn an_old_daemon_without_packet_filter_rules_uses_the_match_list() {
    let (_d, emu, mon) = setup("");
    let mut nm = emulator::netmap(&emulator::tailnet(), Value::Null, Value::Null);
    let obj = nm.as_object_mut().unwrap();
    obj.remove("PacketFilterRules");
    obj.insert(
        "PacketFilter".into(),
        json!([{"IPProto": [6], "Srcs": ["100.101.1.2/32"], "Dsts": [{"Net": "100.101.1.1/32", "Ports": {"First": 22, "Last": 22}}], "Caps": []}]),
    );
    emu.set_netmap(nm.clone());
    assert_eq!(mon.check().code, 0);
    let base = &mon.events()[0];
    let rows = base["access"].as_array().expect("access in the baseline");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["who"].as_str().unwrap().contains("alice-laptop"));

    // A netmap with no filter at all: unknown, reported by `access`, never "narrowed".
    nm.as_object_mut().unwrap().remove("PacketFilter");
    emu.set_netmap(nm);
    assert_eq!(mon.check().code, 0);
    assert_eq!(mon.count_events("access.narrowed"), 0);
    let r = mon.run(&["access"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("no packet filter"), "{r:?}");
}

#[test]
fn malformed_rules_are_a_clear_warning_and_no_false_narrowed() {
    let (_d, emu, mon) = setup("");
    assert_eq!(mon.check().code, 0);
    emu.set_netmap(json!({"PacketFilterRules": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": "twenty-two", "Last": 22}}]}]}));
    let r = mon.check();
    // Membership was read: a warning naming the part, never UNKNOWN, never "nobody".
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 1, "{r:?}");
    assert!(
        r.stdout
            .contains("malformed packet filter or SSH policy in the netmap"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("not visible: who can reach this server"),
        "{r:?}"
    );
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        closed(),
        Value::Null,
    ));
    assert_eq!(mon.check().code, 0);
    let kinds = mon.event_kinds();
    assert!(!kinds.iter().any(|k| k.starts_with("access.")), "{kinds:?}");
    assert_eq!(
        kinds,
        [
            "monitor.part_recovered",
            "monitor.part_unavailable",
            "monitor.baseline"
        ],
        "{kinds:?}"
    );
}

#[test]
fn a_ten_thousand_rule_filter() {
    let (_d, emu, mon) = setup("");
    let many = |extra: Option<u16>| {
        let mut rules: Vec<Value> = (0..10_000u32)
            .map(|i| {
                let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
                rule(&[&ip], 8000, 8000)
            })
            .collect();
        if let Some(p) = extra {
            rules.push(rule(&["10.0.0.7"], p, p));
        }
        emulator::netmap(&emulator::tailnet(), Value::Array(rules), Value::Null)
    };
    emu.set_netmap(many(None));
    let t = std::time::Instant::now();
    assert_eq!(mon.check().code, 0);
    let first = t.elapsed();
    assert_eq!(mon.check().code, 0, "the same 10,000 rules: nothing");
    emu.set_netmap(many(Some(3389)));
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let widened: Vec<Value> = mon
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "access.widened")
        .collect();
    assert_eq!(widened.len(), 1);
    let s = widened[0]["summary"].as_str().unwrap();
    assert!(s.contains("10.0.0.7") && s.contains("RDP port 3389"), "{s}");
    eprintln!("10,000-rule baseline check took {first:?}");
}

/// tailscaled >= 1.100 applies a filter-only update with no bus message: `run` must still mail
/// it, from its access re-read.
#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn a_filter_change_without_any_notify_is_mailed() {
    let smtp = Smtp::start();
    let (_d, emu, mon) = setup(
        &(email_channel(smtp.port)
            + "\n[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\naccess_interval = \"2s\"\n"),
    );
    let _daemon = mon.spawn_run();
    let mails = smtp.wait_for(1, 60);
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].text.contains("Who can reach this server (1):"),
        "{}",
        mails[0].text
    );
    assert!(
        mails[0]
            .text
            .contains("alice@example.com (alice-laptop, 100.101.1.2) — ports: tcp 22"),
        "{}",
        mails[0].text
    );
    assert!(emu.wait_opened(1, 60));
    let opened = emu.opened();
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        opened_to_bob(),
        Value::Null,
    ));
    let mails = smtp.wait_for(2, 60);
    assert_eq!(mails.len(), 2, "mailed without any bus message");
    let m = &mails[1];
    assert!(m.subject.contains("CRITICAL"), "{}", m.subject);
    assert!(
        m.text.contains(
            "bob@example.com (bob-desktop, 100.101.1.5) may now reach this server on tcp 22"
        ),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("tcp on this server: nothing → 22"),
        "{}",
        m.text
    );
    assert_eq!(emu.opened(), opened, "no reconnect was needed");
}

#[test]
fn a_daemon_that_refuses_the_netmap_read_is_one_warning_not_nobody() {
    let (_d, emu, mon) = setup("");
    assert_eq!(mon.check().code, 0);
    emu.like_1_104();
    for _ in 0..3 {
        let r = mon.check();
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stdout.contains("watch-ipn-bus?mask=8: HTTP 400"), "{r:?}");
        assert!(r.stdout.contains("no privileged relay at"), "{r:?}");
        assert!(
            r.stdout
                .contains("systemctl enable --now tailscale-monitor-privileged.socket"),
            "the exact fix: {r:?}"
        );
    }
    // Said once, not once per pass; the filter last recorded is kept, not emptied.
    assert_eq!(
        mon.event_kinds(),
        ["monitor.part_unavailable", "monitor.baseline"]
    );
    let r = mon.run(&["access"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("who can reach this server is not visible")
            && r.stderr.contains("tailscale-monitor-privileged.socket"),
        "{r:?}"
    );
    let r = mon.run(&["posture", "--json"]);
    let f = support::posture_finding(&r.stdout, "SV-07");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("tailscale-monitor privileged --listen"),
        "{f}"
    );
}

/// tailscaled 1.104 with the privileged relay: the filter is read through it (from the socket
/// with write permission), a widening is found, and a push that changes nothing is silent.
#[test]
fn on_1_104_the_filter_is_read_through_the_privileged_relay() {
    let (_d, emu, mon) = setup("");
    emu.like_1_104();
    let _relay = relay(&mon, &emu);
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(emu.current_netmap_reads() >= 1);
    let r = mon.run(&["access"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("alice@example.com"), "{r:?}");

    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        closed(),
        Value::Null,
    ));
    assert_eq!(mon.check().code, 0, "the same filter again");
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        opened_to_bob(),
        Value::Null,
    ));
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(mon.event_kinds(), ["access.widened", "monitor.baseline"]);
    let r = mon.run(&["posture", "--json"]);
    assert_eq!(
        support::posture_finding(&r.stdout, "SV-07")["status"],
        "pass"
    );
}

/// A relay that answers for another tailscaled is not this node's filter.
#[test]
fn a_relay_answering_for_another_node_is_refused() {
    let (_d, emu, mon) = setup("");
    emu.like_1_104();
    let other = tempfile::tempdir().unwrap();
    let mut doc = emulator::tailnet();
    doc["Self"]["ID"] = json!("nOTHERCNTRL");
    let stranger = Emulator::start(other.path(), doc);
    let _relay = relay(&mon, &stranger);
    let r = mon.check();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("the netmap read is of node nOTHERCNTRL"),
        "{r:?}"
    );
}

/// A part that cannot be read never blinds the rest: for each part of the node view, the daemon
/// refuses that one request (400 or 403) and a device that joins is still mailed; the part's own
/// outage is one message, its return another.
#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn each_part_that_fails_leaves_joins_mailed() {
    for (part, prefix, code, body) in [
        (
            "who can reach this server",
            "/localapi/v0/watch-ipn-bus?mask=8",
            400,
            "the NotifyInitialNetMap IPN bus subscription bit is no longer supported",
        ),
        (
            "Tailnet Lock",
            "/localapi/v0/tka/status",
            403,
            "access denied",
        ),
        ("prefs", "/localapi/v0/prefs", 403, "access denied"),
    ] {
        let smtp = Smtp::start();
        let (_d, emu, mon) = setup(&email_channel(smtp.port));
        assert_eq!(mon.check().code, 0, "{part}");
        assert_eq!(smtp.wait_for(1, 60).len(), 1, "{part}: the baseline");
        emu.fail(prefix, code, body);
        let mut doc = emulator::tailnet();
        emulator::add_peer(&mut doc, "nNEW1CNTRL", "mystery-box", 6202, "100.101.1.77");
        emu.set_status(doc.clone());
        let r = mon.check();
        assert_eq!(r.code, 2, "{part}: the join is critical: {r:?}");
        let mails = smtp.wait_for(2, 60);
        assert_eq!(mails.len(), 2, "{part}: one more mail");
        let m = &mails[1];
        assert!(
            m.text.contains("mystery-box"),
            "{part}: the join is mailed:\n{}",
            m.text
        );
        assert!(
            m.text.contains("monitor.part_unavailable") && m.text.contains(&format!("HTTP {code}")),
            "{part}: the part's outage is said in the same mail:\n{}",
            m.text
        );
        // Still refused: nothing more.
        emulator::add_peer(&mut doc, "nNEW2CNTRL", "second-box", 6202, "100.101.1.78");
        emu.set_status(doc);
        assert_eq!(mon.check().code, 2, "{part}");
        let mails = smtp.wait_for(3, 60);
        assert!(mails[2].text.contains("second-box"), "{part}");
        assert!(
            !mails[2].text.contains("monitor.part_unavailable"),
            "{part}: said once"
        );
        emu.heal();
        assert!(mon.check().code <= 1, "{part}");
        let mails = smtp.wait_for(4, 60);
        assert!(mails[3].text.contains("monitor.part_recovered"), "{part}");
        assert_eq!(mon.count_events("monitor.part_unavailable"), 1, "{part}");
        assert_eq!(mon.count_events("monitor.source_down"), 0, "{part}");
    }
}

/// The socket unit's way: systemd hands each connection to `privileged --stdio` (here Debian's
/// `systemd-socket-activate --accept --inetd`, which does what `Accept=yes` does). A member of
/// the relay's group is answered; anyone else gets no answer at all, even where the socket file
/// would let them connect.
#[test]
#[ignore = "needs systemd-socket-activate and the test accounts: run tests/run-all.sh"]
fn under_socket_activation_the_relay_answers_its_group_only() {
    use std::os::unix::fs::PermissionsExt;
    let (d, emu, mon) = setup("");
    emu.like_1_104();
    // The unprivileged accounts reach the daemon as they would tailscaled's own 0666 socket.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&emu.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let relay_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(relay_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = relay_dir.path().join("privileged.sock");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _activator = Killed(
        std::process::Command::new("systemd-socket-activate")
            .args(["--accept", "--inetd", "--listen"])
            .arg(&sock)
            .arg("--")
            .arg(support::bin())
            .args([
                "privileged",
                "--stdio",
                "--group",
                "tmtest-relay",
                "--socket",
            ])
            .arg(&emu.root_socket)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("systemd-socket-activate (Debian's systemd package)"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sock.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Wider than the unit's 0660: the relay's own peer check is what refuses the outsider.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    drop(mon);

    let member = Monitor::new(&emu.socket, "").run_as("tmtest-mon");
    member.set_privileged_socket(&sock);
    let r = member.check();
    assert_eq!(r.code, 0, "{r:?}");
    let r = member.run(&["access"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("alice@example.com"), "{r:?}");

    let outsider = Monitor::new(&emu.socket, "").run_as("tmtest-other");
    outsider.set_privileged_socket(&sock);
    let r = outsider.check();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("closed without an answer"), "{r:?}");
}

/// The units the package and install.sh ship are valid systemd units.
#[test]
#[ignore = "needs systemd-analyze: run tests/run-all.sh"]
fn the_relay_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    for unit in [
        "tailscale-monitor-privileged.socket",
        "tailscale-monitor-privileged@.service",
        "tailscale-monitor.service",
        "tailscale-monitor-guard-restore.service",
    ] {
        let text = std::fs::read_to_string(format!("{root}/contrib/{unit}"))
            .unwrap()
            .replace(
                "/usr/local/bin/tailscale-monitor",
                &support::bin().display().to_string(),
            );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("tailscale-monitor-privileged.socket"))
        .arg(dir.path().join("tailscale-monitor-privileged@.service"))
        .arg(dir.path().join("tailscale-monitor.service"))
        .arg(dir.path().join("tailscale-monitor-guard-restore.service"))
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

/// On a daemon like 1.104, through the privileged relay: a filter-only change (no bus message at
/// all) is found by the `access_interval` re-read and mailed; the daemon's own re-read is what
/// asks the relay.
#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn on_1_104_a_filter_change_without_any_notify_is_mailed_through_the_relay() {
    let smtp = Smtp::start();
    let (_d, emu, mon) = setup(
        &(email_channel(smtp.port)
            + "\n[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\naccess_interval = \"2s\"\n"),
    );
    emu.like_1_104();
    let _relay = relay(&mon, &emu);
    let daemon = mon.spawn_run_logged();
    let mails = smtp.wait_for(1, 60);
    assert!(
        mails[0].text.contains("Who can reach this server (1):"),
        "{}",
        mails[0].text
    );
    assert!(emu.wait_opened(1, 60));
    // The pass the bus's coming up starts has read the filter (through the relay) once more:
    // from now on only the `access_interval` re-read can find a change.
    let r0 = emu.current_netmap_reads();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while emu.current_netmap_reads() <= r0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no read after the bus came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.wait_log("event", 1, 60);
    emu.set_netmap(emulator::netmap(
        &emulator::tailnet(),
        opened_to_bob(),
        Value::Null,
    ));
    let mails = smtp.wait_for(2, 60);
    assert_eq!(mails.len(), 2, "mailed without any bus message");
    assert!(
        mails[1].text.contains(
            "bob@example.com (bob-desktop, 100.101.1.5) may now reach this server on tcp 22"
        ),
        "{}",
        mails[1].text
    );
    daemon.wait_log(
        "who may reach this node changed; re-reading the tailnet",
        1,
        60,
    );
}

/// Through the relay (which passes on no peer), a peer that arrives together with the filter
/// that lets it in is named: the filter is read before `/status`, so `/status` already lists it.
#[test]
fn through_the_relay_a_peer_that_arrives_with_its_filter_is_named() {
    let (_d, emu, mon) = setup("");
    emu.like_1_104();
    let _relay = relay(&mon, &emu);
    let daemon = mon.spawn_run_logged();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));
    daemon.wait_log("IPN bus streaming", 1, 60);
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nEVECNTRL", "eve-pc", 6202, "100.101.1.66");
    emu.set_netmap(emulator::netmap(
        &doc,
        json!([rule(&["100.101.1.66", "fd7a:115c:a1e0::66"], 22, 22)]),
        Value::Null,
    ));
    emu.set_status_after_netmap(doc);
    emu.push("{\"PeersChanged\":[{\"ID\":66}]}\n");
    assert!(mon.wait_for_event("access.widened", 60));
    let ev = mon
        .events()
        .into_iter()
        .find(|e| e["kind"] == "access.widened")
        .unwrap();
    let summary = ev["summary"].as_str().unwrap();
    assert!(summary.contains("(eve-pc, 100.101.1.66)"), "{summary}");
    assert!(
        !summary.contains("no device this server knows"),
        "{summary}"
    );
}

/// Issue 26: `RemoteConfig` turned on hands the control plane this node's prefs and LocalAPI:
/// critical (`node.remote_config`, `check` exits 2), and posture SV-10 fails.
#[test]
fn remote_config_turned_on_is_critical() {
    let (_d, emu, mon) = setup("");
    emu.set_prefs(Some(json!({"RunSSH": false, "RemoteConfig": false})));
    assert_eq!(mon.check().code, 0);
    let r = mon.run(&["posture", "--json"]);
    assert_eq!(posture_finding(&r.stdout, "SV-10")["status"], "pass");
    emu.set_prefs(Some(json!({"RunSSH": false, "RemoteConfig": true})));
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(mon.count_events("node.remote_config"), 1);
    let r = mon.run(&["posture", "--json"]);
    assert_eq!(posture_finding(&r.stdout, "SV-10")["status"], "fail");
    // Before 1.102 there is no such pref: unknown, never "off".
    emu.set_prefs(Some(json!({"RunSSH": false})));
    let r = mon.run(&["posture", "--json"]);
    assert_eq!(posture_finding(&r.stdout, "SV-10")["status"], "unknown");
}

/// Issue 26: in userspace networking mode tailscaled dials 127.0.0.1 for every tailnet
/// connection, so a token-less `/metrics` on loopback is open to the tailnet: `config check`
/// fails on it and `run` does not serve it, each saying why.
#[test]
fn in_userspace_mode_a_tokenless_metrics_on_loopback_is_refused() {
    let (_d, emu, mon) = setup("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut doc = emulator::tailnet();
    doc["TUN"] = json!(false);
    emu.set_status(doc.clone());
    let r = mon.run(&["config", "check"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("every device of the tailnet could read /metrics")
            && r.stderr.contains("[metrics] listen 127.0.0.1:0"),
        "{r:?}"
    );
    let daemon = mon.spawn_run_logged();
    daemon.wait_log("not serving /metrics", 1, 30);
    assert_eq!(daemon.log_count("metrics listening"), 0);
    // With a TUN device: served.
    doc["TUN"] = json!(true);
    emu.set_status(doc);
    assert_eq!(mon.run(&["config", "check"]).code, 0);
}

/// Review G12: `privileged --listen` refuses a socket directory that anyone but root may write
/// (whoever could would swap the socket for a link between the bind and the chown), and serves
/// from one that only root may.
#[test]
#[ignore = "needs root (the relay checks the directory's owner): run tests/run-all.sh"]
fn the_relay_listens_only_in_a_directory_only_root_may_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["privileged", "--listen"])
        .arg(dir.path().join("privileged.sock"))
        .args(["--group", "root", "--socket", "/nonexistent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("that only root may write"),
        "{err}"
    );
    assert!(!dir.path().join("privileged.sock").exists());
}

/// Review G13: members of the relay's group that connect and never read (or never send) cannot
/// keep root out: each user has two connections at most, root has slots of its own, and every
/// answer has a deadline.
#[test]
#[ignore = "needs root and setpriv: run tests/run-all.sh"]
fn members_that_do_not_read_cannot_keep_root_out() {
    use std::io::{BufRead, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("privileged.sock");
    let _relay =
        support::PrivilegedRelay::start(&socket, std::path::Path::new("/nonexistent"), "root");
    // Twenty connections of uid 65534 (in group root): requests sent, answers never read, and
    // connections that never send at all.
    let mut held = Vec::new();
    for i in 0..20 {
        let mut c = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=0", "--clear-groups", "--"])
            .args(["socat", "-u", "-"])
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if i % 2 == 0 {
            writeln!(c.stdin.as_mut().unwrap(), r#"{{"v":3,"op":"guard_read"}}"#).unwrap();
        }
        held.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Root is answered.
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    writeln!(s, r#"{{"v":3,"op":"guard_read"}}"#).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"guard\""), "root's answer: {line:?}");
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
}
