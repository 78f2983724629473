//! What the benchmarks measure with: `/proc` figures of a process, when a mail arrived,
//! percentiles.

use std::time::Duration;

use crate::support::smtp::Smtp;

/// Clock ticks `fields` of `/proc/<pid>/stat` (after the command name) add up to, in seconds.
fn stat_cpu_s(pid: u32, fields: std::ops::Range<usize>) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    f[fields]
        .iter()
        .map(|x| x.parse::<f64>().unwrap())
        .sum::<f64>()
        / 100.0
}

/// CPU seconds (user + system) a process has used so far.
pub fn proc_cpu_s(pid: u32) -> f64 {
    stat_cpu_s(pid, 11..13)
}

/// CPU seconds of a process and of the children it has reaped (the relay's `nft` runs).
pub fn proc_cpu_with_children_s(pid: u32) -> f64 {
    stat_cpu_s(pid, 11..15)
}

/// Runs the monitor with `args` under GNU time: its exit status, and its peak RSS in MiB.
pub fn peak_rss_mib(config: &std::path::Path, args: &[&str]) -> (i32, f64) {
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("MAXRSS %M")
        .arg(crate::support::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TAILSCALE_MONITOR_LOG", "error")
        .output()
        .unwrap();
    let kib: f64 = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (out.status.code().unwrap_or(-1), kib / 1024.0)
}

/// The first number after `key` in `/proc/<pid>/<file>` (`status` `VmRSS:`, `io` `write_bytes:`).
pub fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// When the SMTP server accepted the first mail whose text contains `needle` (Maildir mtime).
pub fn mail_time(smtp: &Smtp, needle: &str) -> Option<std::time::SystemTime> {
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(smtp.maildir.join(sub)).ok()?.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains(needle) {
                return e.metadata().ok()?.modified().ok();
            }
        }
    }
    None
}

/// Prints `BENCH <label>: n p50 p99 min max` in milliseconds.
pub fn stats(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "BENCH guard {label}: n={} p50={:.1} ms p99={:.1} ms min={:.1} ms max={:.1} ms",
        v.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}
