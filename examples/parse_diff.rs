//! Benchmark driver: parse two status documents, diff the second against the first, record the
//! outcome in a fresh store. Prints the time of each stage. Used by bench/run.sh, which measures
//! peak RSS around it.
//!
//!   cargo run --release --example parse_diff -- OLD.json NEW.json [--store]

use std::time::Instant;

use chrono::Utc;
use tailscale_monitor::Status;
use tailscale_monitor::Store;
use tailscale_monitor::{diff, Known, KnownDevice, KnownUser, Policy};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (old, new) = (&args[1], &args[2]);
    let with_store = args.iter().any(|a| a == "--store");
    let old_bytes = std::fs::read(old).unwrap();
    let new_bytes = std::fs::read(new).unwrap();

    let t = Instant::now();
    let prev = Status::parse(&old_bytes)
        .unwrap()
        .into_snapshot(Utc::now())
        .unwrap();
    let cur = Status::parse(&new_bytes)
        .unwrap()
        .into_snapshot(Utc::now())
        .unwrap();
    let parse = t.elapsed() / 2;

    let known = Known {
        baseline_done: true,
        tailnet_id: None,
        devices: prev
            .devices
            .values()
            .map(|d| {
                (
                    d.id.clone(),
                    KnownDevice {
                        device: d.clone(),
                        removed: false,
                        expiring_alerted: None,
                        // As the store keeps it from the baseline.
                        last_handshake: prev.conns.get(&d.id).and_then(|c| c.last_handshake),
                        after_baseline: false,
                    },
                )
            })
            .collect(),
        users: prev
            .users
            .values()
            .map(|u| {
                (
                    u.id,
                    KnownUser {
                        user: u.clone(),
                        removed: false,
                    },
                )
            })
            .collect(),
        access: None,
        control: None,
        presence: None,
    };
    let t = Instant::now();
    let out = diff(&known, &cur, &Policy::default(), Utc::now());
    let diff_t = t.elapsed();
    print!(
        "peers={} parse_ms={:.2} diff_ms={:.2} events={}",
        cur.devices.len() - 1,
        parse.as_secs_f64() * 1e3,
        diff_t.as_secs_f64() * 1e3,
        out.events.len()
    );
    if with_store {
        let dir = std::env::temp_dir().join(format!("tm-bench-{}", std::process::id()));
        let mut store = Store::open(&dir).unwrap();
        let t = Instant::now();
        // Baseline of the old document, then the pass with the new one: the two real transactions.
        store
            .commit_pass(&[], Utc::now(), |k, h| {
                tailscale_monitor::pass_outcome(
                    k,
                    h,
                    Ok(&prev),
                    None,
                    &Policy::default(),
                    Utc::now(),
                )
            })
            .unwrap();
        let baseline = t.elapsed();
        let t = Instant::now();
        store
            .commit_pass(&[], Utc::now(), |k, h| {
                tailscale_monitor::pass_outcome(
                    k,
                    h,
                    Ok(&cur),
                    None,
                    &Policy::default(),
                    Utc::now(),
                )
            })
            .unwrap();
        print!(
            " store_baseline_ms={:.1} store_pass_ms={:.1}",
            baseline.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!();
}
