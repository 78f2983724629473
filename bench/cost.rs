//! Benchmarks, not tests (run by `bench/cost.sh`): what a pass costs when nothing changed, and
//! what `run` costs on a busy tailnet, each beside a baseline measured in the same run. Figures go
//! to BENCHMARKS.md.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::measure::{proc_cpu_s, proc_field};
use serde_json::{json, Value};
use support::emulator::{self, Emulator};
use support::receiver::Receiver;
use support::Monitor;

/// `TM_BENCH_BEFORE`: an earlier build of the binary, measured beside this one in the same run
/// (`bench/compare.sh REV` builds it).
fn before() -> Option<std::path::PathBuf> {
    std::env::var_os("TM_BENCH_BEFORE").map(Into::into)
}

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

fn generated(n: usize) -> Value {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen-status.py"))
        .arg(n.to_string())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A realistic netmap for the document: every peer as a `tailcfg.Node`, and one filter rule.
fn netmap(doc: &Value) -> Value {
    let peers: Vec<Value> = doc["Peer"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| emulator::node_of(p, true))
        .collect();
    let mut nm = emulator::netmap_for(doc);
    nm["Peers"] = Value::Array(peers);
    nm
}

/// One command's wall seconds (timed here: GNU time's `%e` has a 10 ms resolution, too coarse at
/// 1,000 peers), and GNU time's peak RSS (KiB) and file-system output blocks.
fn timed(cmd: &str) -> (f64, u64, u64) {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M %O", "sh", "-c", cmd])
        .output()
        .expect("GNU time (Debian package time)");
    let wall = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("TIME "))
        .unwrap_or_else(|| panic!("{err}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (wall, f[1].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
#[ignore = "benchmark: run bench/cost.sh"]
fn bench_nothing_new_check() {
    let bin = support::bin();
    let tailscale = support::real::new_release().tailscale;
    for n in sizes("TM_BENCH_SIZES", "1000,10000,50000") {
        let dir = tempfile::tempdir().unwrap();
        let doc = generated(n);
        let emu = Emulator::start(dir.path(), doc.clone());
        emu.set_netmap(netmap(&doc));
        let mon = Monitor::new(&emu.socket, "");
        assert_eq!(mon.check().code, 0, "baseline");
        assert_eq!(mon.check().code, 0);
        let check = format!(
            "TAILSCALE_MONITOR_LOG=error {} --config {} check >/dev/null",
            bin.display(),
            mon.config.display()
        );
        let state = dir.path().join("old-script-state");
        let old = format!(
            "{} --socket={} status --json | jq -r '.Peer[] | \"\\(.TailscaleIPs[0]) \\(.HostName)\"' | sort > {s}.new; comm -13 {s} {s}.new > {s}.diff; mv {s}.new {s}",
            tailscale.display(),
            emu.socket.display(),
            s = state.display()
        );
        std::fs::write(&state, "").unwrap();
        timed(&old);
        let best = |cmd: &str| {
            (0..3)
                .map(|_| timed(cmd))
                .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
                .unwrap()
        };
        if let Some(b) = before() {
            // The earlier build on the same state, alternately with this one, best of 5 each.
            let earlier = check.replacen(&bin.display().to_string(), &b.display().to_string(), 1);
            // An earlier build that refuses this state (a newer schema) would time its error.
            let ok = Command::new("sh").args(["-c", &earlier]).status().unwrap();
            assert!(
                ok.success(),
                "the earlier build's check failed on this state: {ok}"
            );
            let (mut now_best, mut then_best) = (f64::MAX, f64::MAX);
            let (mut now_rss, mut then_rss) = (0, 0);
            for _ in 0..5 {
                let (t, r, _) = timed(&check);
                if t < now_best {
                    (now_best, now_rss) = (t, r);
                }
                let (t, r, _) = timed(&earlier);
                if t < then_best {
                    (then_best, then_rss) = (t, r);
                }
            }
            println!(
                "BENCH before_after_check peers={n} this_s={now_best:.4} this_rss_mib={:.1} before_s={then_best:.4} before_rss_mib={:.1}",
                now_rss as f64 / 1024.0,
                then_rss as f64 / 1024.0
            );
        }
        if let Some(dir) = std::env::var_os("TM_BENCH_PERF") {
            // Where the time goes: `perf report -i DIR/check-N.data --no-children`.
            let data = std::path::Path::new(&dir).join(format!("check-{n}.data"));
            let ok = Command::new("perf")
                .args(["record", "-q", "-F", "20000", "-g", "-o"])
                .arg(&data)
                .args(["--", "sh", "-c", &check])
                .status()
                .expect("perf (Debian package linux-perf)");
            assert!(ok.success(), "perf record: {ok}");
            // And the pass's own account of its phases.
            let out = Command::new("sh")
                .args(["-c", &check.replacen("LOG=error", "LOG=debug", 1)])
                .output()
                .unwrap();
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let (t, rss, blocks) = best(&check);
        let (ot, orss, oblocks) = best(&old);
        println!(
            "BENCH nothing_new peers={n} check_s={t:.4} check_rss_mib={:.1} check_written_kib={} old_pipeline_s={ot:.4} old_rss_mib={:.1} old_written_kib={} speedup={:.1}",
            rss as f64 / 1024.0,
            blocks / 2,
            orss as f64 / 1024.0,
            oblocks / 2,
            ot / t.max(0.001)
        );
    }
}

/// `run` on a busy tailnet: one peer goes online or offline every second for TM_BENCH_SECS (60);
/// nothing joins until a join in the middle, timed from the change to the webhook's arrival. The
/// baseline is the same stream as a bare `PeersChanged` without the node (what an older monitor
/// did with every notify: a full pass).
#[test]
#[ignore = "benchmark: run bench/cost.sh"]
fn bench_busy_run() {
    let secs: u64 = std::env::var("TM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut modes = vec![
        ("presence patches", None),
        ("baseline: full pass per notify", None),
        ("idle", None),
    ];
    if let Some(b) = before() {
        modes.push(("before: presence patches", Some(b.clone())));
        modes.push(("before: idle", Some(b)));
    }
    for n in sizes("TM_BENCH_BUSY_SIZES", "1000,10000") {
        for (mode, build) in &modes {
            let dir = tempfile::tempdir().unwrap();
            let doc = generated(n);
            let emu = Emulator::start(dir.path(), doc.clone());
            emu.set_netmap(netmap(&doc));
            let rx = Receiver::start();
            let mut mon = Monitor::new(
                &emu.socket,
                &format!(
                    "[daemon]\nbatch_window = \"1ms\"\n\n[[notify]]\nkind = \"webhook\"\nurl = \"{}/hook\"\n",
                    rx.url
                ),
            );
            mon.bin.clone_from(build);
            let daemon = mon.spawn_run();
            assert_eq!(rx.wait("/hook", 1, 300).len(), 1, "baseline");
            assert!(emu.wait_opened(1, 60));
            std::thread::sleep(Duration::from_secs(3));
            let pid = daemon.0.id();
            let (c0, w0) = (proc_cpu_s(pid), proc_field(pid, "io", "write_bytes:"));
            let peers: Vec<Value> = doc["Peer"]
                .as_object()
                .unwrap()
                .values()
                .take(64)
                .cloned()
                .collect();
            let start = Instant::now();
            let mut join_ms = Vec::new();
            let mut joined = doc.clone();
            let mut hooks = 1;
            for i in 0..secs {
                if mode.ends_with("idle") {
                    // Nothing happens: what `run` costs by itself.
                    let next = start + Duration::from_secs(i + 1);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    continue;
                }
                let peer = &peers[i as usize % peers.len()];
                let line = if mode.ends_with("presence patches") {
                    json!({"PeersChanged": [emulator::node_of(peer, i % 2 == 1)]})
                } else {
                    json!({"PeersChanged": [{"ID": 1}]})
                };
                emu.push(&format!("{line}\n"));
                // A join every 10 s, the first 5 s in (each its own message: the batch window
                // is 1 ms).
                if i % 10 == 5 {
                    let host = format!("busy-joiner-{i}");
                    emulator::add_peer(
                        &mut joined,
                        &format!("nBUSYJOIN{i}CNTRL"),
                        &host,
                        1000,
                        &format!("100.99.0.{i}"),
                    );
                    emu.set_status(joined.clone());
                    // Timed from the moment the line is handed to the bus (finding the peer in a
                    // 10,000-peer `serde_json::Value` takes the benchmark itself ~30 ms).
                    let line = format!(
                        "{}\n",
                        json!({"PeersChanged": [emulator::peer_node(&joined, &host, true)]})
                    );
                    let t = Instant::now();
                    emu.push(&line);
                    hooks += 1;
                    let got = rx.wait("/hook", hooks, 60);
                    assert!(got.len() >= hooks, "the join is delivered");
                    join_ms.push((got[hooks - 1].received - t).as_secs_f64() * 1e3);
                }
                let next = start + Duration::from_secs(i + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            let elapsed = start.elapsed().as_secs_f64();
            let (c1, w1) = (proc_cpu_s(pid), proc_field(pid, "io", "write_bytes:"));
            join_ms.sort_by(f64::total_cmp);
            let median = join_ms.get(join_ms.len() / 2).copied().unwrap_or(f64::NAN);
            let max = join_ms.last().copied().unwrap_or(f64::NAN);
            println!(
                "BENCH busy_run peers={n} mode=\"{mode}\" secs={secs} cpu_pct={:.2} written_kib_per_min={:.0} rss_mib={:.1} joins={} join_to_delivery_ms_median={median:.1} max={max:.1}",
                (c1 - c0) * 100.0 / elapsed,
                (w1 - w0) as f64 / 1024.0 * 60.0 / elapsed,
                proc_field(pid, "status", "VmRSS:") as f64 / 1024.0,
                join_ms.len()
            );
        }
    }
}
