//! What a page of the web view costs (bench/web.sh): `/devices` and `/timeline` at 1,000 and
//! 10,000 devices, timed at the socket (one request each, best of 5; nothing else runs in the
//! daemon then), beside `tailscale-monitor devices`, the terminal's table of the same devices read
//! from the same store, as the baseline.

use std::time::Instant;

use crate::support;
use support::emulator::Emulator;
use support::receiver::Receiver;
use support::{unix_get, Monitor};

fn sizes() -> Vec<usize> {
    std::env::var("TM_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

#[test]
#[ignore = "benchmark: run bench/web.sh"]
fn bench_web_pages() {
    for n in sizes() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/gen-status.py"))
            .arg(n.to_string())
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // The viewer: the first peer of the generated tailnet.
        let first = doc["Peer"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        let (id, ip) = (
            first["ID"].as_str().unwrap().to_owned(),
            first["TailscaleIPs"][0].as_str().unwrap().to_owned(),
        );
        let emu = Emulator::start(dir.path(), doc);
        let rx = Receiver::start();
        let mon = Monitor::new(
            &emu.socket,
            &format!(
                "[[notify]]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n[web]\nlisten = \"unix:{}/web/web.sock\"\nviewers = [\"{id}\"]\n",
                rx.url,
                dir.path().display()
            ),
        );
        let sock = dir.path().join("web/web.sock");
        let _daemon = mon.spawn_run();
        assert_eq!(rx.wait("/hook", 1, 300).len(), 1, "baseline");
        while !sock.exists() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let h = [("X-Forwarded-For", ip.as_str())];
        let best = |f: &dyn Fn()| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min)
        };
        let page = |path: &str| {
            let (code, _, body) = unix_get(&sock, path, &h);
            assert_eq!(code, 200, "{path}");
            body.len()
        };
        let devices_bytes = page("/devices");
        let devices_ms = best(&|| {
            page("/devices");
        });
        let timeline_ms = best(&|| {
            page("/timeline");
        });
        let cli_ms = best(&|| {
            let r = mon.run(&["devices"]);
            assert_eq!(r.code, 0);
        });
        println!(
            "BENCH web devices={n} devices_page_ms={devices_ms:.1} devices_page_kib={} timeline_page_ms={timeline_ms:.1} cli_devices_ms={cli_ms:.1}",
            devices_bytes / 1024
        );
        if n != sizes()[0] {
            continue;
        }
        // The timeline at a million events: a page walks its index, not the log.
        let (events, _) = {
            let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
            db.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
                 INSERT INTO events (pass, at, kind, severity, device_id, summary, data, prev_hash, hash)
                 SELECT 1, '2026-12-01T00:00:00+00:00', 'device.renamed', 'warning', 'nX' || (i % 5000),
                   'renamed', '{\"kind\":\"device.renamed\",\"severity\":\"warning\",\"at\":\"2026-12-01T00:00:00Z\",\"summary\":\"Device renamed\"}',
                   '', '' FROM n;",
            )
            .unwrap();
            let c: i64 = db
                .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                .unwrap();
            (c, ())
        };
        let timeline_1m_ms = best(&|| {
            page("/timeline");
        });
        let filtered_1m_ms = best(&|| {
            page("/timeline?kind=monitor.baseline");
        });
        let device_1m_ms = best(&|| {
            page("/timeline?device=nX42");
        });
        println!(
            "BENCH web_timeline events={events} timeline_page_ms={timeline_1m_ms:.1} kind_filter_ms={filtered_1m_ms:.1} device_filter_ms={device_1m_ms:.1} (before, at the baseline's few events: {timeline_ms:.1})"
        );
    }
}
