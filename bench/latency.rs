//! Latency and idle cost against real daemons (run by `bench/latency.sh`): a join to its mail,
//! a policy edit that opens this server to its mail (tailscaled 1.104.2 through the privileged
//! relay, 1.102.5 and 1.96.5 side by side), and the guard's approval to the device's first
//! connection (kernel mode, in network namespaces, as root) against the bare `nft add element`.

use std::time::{Duration, Instant};

use crate::measure::{mail_time, proc_cpu_s, proc_cpu_with_children_s, proc_field, stats};
use crate::support::netns::{connects_within, relay_with_pid, Bridge, KernelNode, PORT};
use crate::support::real::{self, cur_release, policy, Headscale, Node, P0};
use crate::support::smtp::{wait_mail, Smtp};
use crate::support::{email_channel, Monitor};

/// Benchmark, not a test: run by bench/latency.sh. Detection latency from the moment headscale
/// has registered a joining node to the moment the SMTP server accepted the alert, over
/// TM_BENCH_JOINS joins (default 20); then the idle cost of `run` over TM_BENCH_IDLE_SECS.
#[test]
#[ignore = "benchmark: run bench/latency.sh"]
fn bench_detection_latency() {
    let joins: usize = std::env::var("TM_BENCH_JOINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let idle: u64 = std::env::var("TM_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let rel = real::new_release();
    let hs = Headscale::start();
    let user = hs.user("ops");
    let key = hs.preauth_key(user);
    let web = Node::join(&rel, &hs, "web-01", &key);
    let smtp = Smtp::start();
    // Production defaults for the timers: the bus does the work.
    let mon = Monitor::new(web.socket(), &email_channel(smtp.port));
    let daemon = mon.spawn_run();
    wait_mail(&smtp, "the baseline", 90, |m| {
        m.subject.contains("baseline")
    });

    let mut latencies = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..joins {
        // Let the batching window (`batch_window`, 3 s) after the previous mail close, so that
        // each join is measured on its own: a join within the window of the previous alert (or of
        // the baseline) is held until the window ends, by design (a burst becomes one message).
        std::thread::sleep(Duration::from_millis(3500));
        let name = format!("joiner-{i}");
        let before = hs.nodes().len();
        let (tx, rx) = std::sync::mpsc::channel();
        let (rel2, key2, name2) = (rel.clone(), key.clone(), name.clone());
        // Join in a thread; watch headscale for the moment the node is registered.
        let hs_ref: &Headscale = &hs;
        std::thread::scope(|s| {
            s.spawn(|| {
                let n = Node::join(&rel2, hs_ref, &name2, &key2);
                tx.send(n).unwrap();
            });
            let registered = loop {
                if hs.nodes().len() > before {
                    break std::time::SystemTime::now();
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let needle = format!("New device {name}");
            let accepted = loop {
                if let Some(t) = mail_time(&smtp, &needle) {
                    break t;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let ms = accepted
                .duration_since(registered)
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(0.0);
            latencies.push(ms);
            nodes.push(rx.recv().unwrap());
        });
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "BENCH joins={} p50_ms={:.0} p99_ms={:.0} min_ms={:.0} max_ms={:.0}",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies[0],
        latencies[latencies.len() - 1]
    );

    // Idle cost: CPU time and RSS of `run` with nothing changing.
    let pid = daemon.0.id();
    let cpu = || proc_cpu_s(pid);
    let rss = || proc_field(pid, "status", "VmRSS:") as f64 / 1024.0;
    let c0 = cpu();
    std::thread::sleep(Duration::from_secs(idle));
    let c1 = cpu();
    println!(
        "BENCH idle_secs={idle} cpu_s_per_hour={:.2} rss_mib={:.1} peers={}",
        (c1 - c0) * 3600.0 / idle as f64,
        rss(),
        nodes.len() + 1
    );
}

/// Benchmark, not a test: run by bench/latency.sh. The time from `headscale policy set` (an edit
/// that opens one more TCP port of the server to mallory) to the SMTP server accepting the
/// `access.widened` mail, over TM_BENCH_EDITS edits (default 12), on both tailscaled releases, with
/// the production timers (and no coalescing of one device's repeated changes: each edit is timed).
#[test]
#[ignore = "benchmark: run bench/latency.sh"]
fn bench_access_latency() {
    let edits: u16 = std::env::var("TM_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for rel in [
        real::cur_release(),
        real::new_release(),
        real::old_release(),
    ] {
        let hs = Headscale::start();
        let ops = hs.user("ops");
        let mallory = hs.user("mallory");
        hs.set_policy(P0);
        let web = Node::join(&rel, &hs, "web-01", &hs.tagged_key(ops, "tag:server"));
        let _mpc = Node::join(&rel, &hs, "mallory-pc", &hs.preauth_key(mallory));
        hs.set_policy(P0);
        let smtp = Smtp::start();
        // On 1.104 the monitor is unprivileged and reads the filter through the relay. Each edit
        // widens mallory's access again: without `coalesce_window = "0s"` every edit after the
        // first within 5 minutes would be held and sent as one (by design), not timed alone.
        let channel = email_channel(smtp.port) + "\n[alerts]\ncoalesce_window = \"0s\"\n";
        let (mon, _relay) = real::monitor_for(&rel, &web, &channel);
        let _daemon = mon.spawn_run();
        wait_mail(&smtp, "the baseline", 90, |m| {
            m.subject.contains("baseline")
        });
        let mut latencies = Vec::new();
        let mut acls = String::new();
        for i in 0..edits {
            // Past the batching window of the previous mail, so each edit is measured alone.
            std::thread::sleep(Duration::from_millis(3500));
            let port = 1000 + i;
            acls += &format!(
                ",\n    {{\"action\": \"accept\", \"src\": [\"mallory@\"], \"dst\": [\"tag:server:{port}\"]}}"
            );
            let start = std::time::SystemTime::now();
            hs.set_policy(&policy(&acls, ""));
            let needle = format!("this server on tcp {port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let accepted = loop {
                if let Some(t) = mail_time(&smtp, &needle) {
                    break t;
                }
                assert!(std::time::Instant::now() < deadline, "no mail for {needle}");
                std::thread::sleep(Duration::from_millis(5));
            };
            latencies.push(
                accepted
                    .duration_since(start)
                    .map(|d| d.as_secs_f64() * 1e3)
                    .unwrap_or(0.0),
            );
        }
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "BENCH access tailscale={} edits={} p50_ms={:.0} p99_ms={:.0} min_ms={:.0} max_ms={:.0}",
            rel.label,
            latencies.len(),
            pct(0.5),
            pct(0.99),
            latencies[0],
            latencies[latencies.len() - 1]
        );
    }
}

/// From the start of `guard approve` to the first TCP connection of the approved device that
/// succeeds, against the same with the address added to the kernel's set by hand
/// (`nft add element`, the floor); TM_BENCH_ROUNDS rounds (default 10), each after a revoke.
#[test]
#[ignore = "benchmark: run bench/latency.sh"]
fn bench_guard_approve_to_connect() {
    let rounds: usize = std::env::var("TM_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rel = cur_release();
    let hs = Headscale::start();
    let bridge = Bridge::start(&hs);
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let mut srv = KernelNode::join(&rel, &bridge, "bsrv", 21, &key, &[]);
    let evil = KernelNode::join(&rel, &bridge, "bevil", 22, &key, &[]);
    let srv_ip = srv.ip();
    let evil_ip = evil.ip();
    srv.ns.listen(PORT);
    assert!(connects_within(&evil.ns, &srv_ip, 90).is_some());
    let mon = Monitor::new(&srv.socket, "[guard]\nmode = \"enforce\"\n");
    let relay_dir = tempfile::tempdir().unwrap();
    let (relay, relay_pid) = relay_with_pid(
        &mut srv.ns,
        relay_dir.path(),
        &srv.socket.clone(),
        &mon.config,
    );
    mon.set_privileged_socket(&relay);
    mon.check();
    assert_eq!(mon.run(&["guard", "init"]).code, 0);
    let (mut guard, mut floor, mut command) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        assert_eq!(mon.run(&["guard", "revoke", "bevil"]).code, 0);
        assert!(!evil.ns.connects(&srv_ip, PORT));
        let start = Instant::now();
        assert_eq!(mon.run(&["guard", "approve", "bevil"]).code, 0);
        command.push(start.elapsed());
        while !evil.ns.connects(&srv_ip, PORT) {
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        guard.push(start.elapsed());

        assert_eq!(mon.run(&["guard", "revoke", "bevil"]).code, 0);
        assert!(!evil.ns.connects(&srv_ip, PORT));
        let start = Instant::now();
        let out = srv.ns.nft(&[
            "add",
            "element",
            "inet",
            "tailscale_monitor_guard",
            "approved4",
            &format!("{{ {evil_ip} }}"),
        ]);
        assert!(out.status.success(), "{out:?}");
        while !evil.ns.connects(&srv_ip, PORT) {
            assert!(start.elapsed() < Duration::from_secs(30));
        }
        floor.push(start.elapsed());
        // Back to what the monitor applied (the next revoke then starts from its own set).
        let _ = srv.ns.nft(&[
            "delete",
            "element",
            "inet",
            "tailscale_monitor_guard",
            "approved4",
            &format!("{{ {evil_ip} }}"),
        ]);
        assert_eq!(mon.run(&["guard", "approve", "bevil"]).code, 0);
    }
    stats("`guard approve` → connected", guard);
    stats("`guard approve` command alone", command);
    stats("baseline `nft add element` → connected", floor);

    // The idle cost of `run`: CPU of the monitor and the relay, and bytes the monitor writes,
    // over TM_BENCH_IDLE_SECS (default 60) with the guard enforcing, against `mode = "off"`.
    let secs: u64 = std::env::var("TM_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for mode in ["enforce", "off"] {
        let text = std::fs::read_to_string(&mon.config).unwrap();
        let text = text
            .replace("mode = \"enforce\"", &format!("mode = \"{mode}\""))
            .replace("mode = \"off\"", &format!("mode = \"{mode}\""));
        std::fs::write(&mon.config, text).unwrap();
        let daemon = mon.spawn_run_logged();
        daemon.wait_log("tailscale-monitor running", 1, 60);
        std::thread::sleep(Duration::from_secs(5));
        let pid = daemon.0.id();
        let written = |pid| proc_field(pid, "io", "write_bytes:");
        let (m0, r0, w0) = (
            proc_cpu_s(pid),
            proc_cpu_with_children_s(relay_pid),
            written(pid),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let (m1, r1, w1) = (
            proc_cpu_s(pid),
            proc_cpu_with_children_s(relay_pid),
            written(pid),
        );
        println!(
            "BENCH guard idle mode={mode}: {secs} s, monitor CPU {:.2} %, relay CPU {:.2} %, monitor wrote {} bytes",
            (m1 - m0) / secs as f64 * 100.0,
            (r1 - r0) / secs as f64 * 100.0,
            w1 - w0
        );
        drop(daemon);
    }
}
