//! A storm of joins through one `check` (bench/storm.sh).

use crate::support;
use support::emulator::{self, join, Emulator};
use support::receiver::Receiver;
use support::{webhook, Monitor};

/// Benchmark, not a test: run by bench/storm.sh. 1,000 devices join at once; one `check` detects,
/// records and delivers through a webhook, Slack and e-mail-free channels. Prints messages sent,
/// the time of the whole pass and the peak RSS of the `check` process.
#[test]
#[ignore = "benchmark: run bench/storm.sh"]
fn bench_storm() {
    let n: usize = std::env::var("TM_BENCH_STORM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let config = format!(
        "{}[[notify]]\nkind = \"slack\"\nurl = \"{u}/slack\"\n[[notify]]\nkind = \"ntfy\"\nurl = \"{u}/ntfy\"\n",
        webhook("hook", &format!("{}/hook", rx.url)),
        u = rx.url
    );
    let mon = Monitor::new(&emu.socket, &config);
    assert_eq!(mon.check().code, 0);
    let before = rx.requests().len();
    join(&emu, n);
    let t = std::time::Instant::now();
    let (_, rss_mib) = crate::measure::peak_rss_mib(&mon.config, &["check"]);
    let elapsed = t.elapsed();
    let sent = rx.requests().len() - before;
    let logged = mon.count_events("device.new");
    println!(
        "BENCH storm_devices={n} channels=3 messages_sent={sent} events_logged={logged} check_seconds={:.2} peak_rss_mib={:.1}",
        elapsed.as_secs_f64(),
        rss_mib
    );
}
