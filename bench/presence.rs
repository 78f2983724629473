//! Messages sent for flaps, outages and a storm of watched devices (bench/presence.sh).

use crate::support;
use support::emulator::{self, flip, set_online, Emulator};
use support::Monitor;

/// Benchmark, not a test (bench/presence.sh): messages sent for 100 flaps shorter than
/// `offline_after`, for 100 outages longer than it, and for a storm of 50 watched devices with
/// this server offline, beside what one message per state change would send.
#[test]
#[ignore = "benchmark: run bench/presence.sh"]
fn bench_presence_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc = emulator::tailnet();
    for i in 0..50 {
        emulator::add_peer(
            &mut doc,
            &format!("nW{i}CNTRL"),
            &format!("watched-{i}"),
            6201,
            &format!("100.105.0.{}", i + 1),
        );
    }
    let emu = Emulator::start(dir.path(), doc.clone());
    let rx = support::receiver::Receiver::start();
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[daemon]\ninterval = \"1h\"\nreconcile = \"1h\"\nbatch_window = \"1ms\"\n\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n\
             [[watch]]\nname = \"fleet\"\ndevices = [\"tag:none\", {}]\noffline_after = \"1s\"\n",
            rx.url,
            (0..50)
                .map(|i| format!("\"watched-{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1);
    assert!(emu.wait_opened(1, 60));
    let sent = |rx: &support::receiver::Receiver| rx.at("/hook").len() - 1;
    // 100 flaps of 100 ms.
    for _ in 0..100 {
        flip(&emu, &mut doc, "watched-0", false);
        std::thread::sleep(std::time::Duration::from_millis(100));
        flip(&emu, &mut doc, "watched-0", true);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let short = sent(&rx);
    // 10 outages of 1.5 s (each past offline_after).
    for _ in 0..10 {
        flip(&emu, &mut doc, "watched-1", false);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        flip(&emu, &mut doc, "watched-1", true);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let long = sent(&rx) - short;
    // A storm: this server offline, all 50 watched devices unreachable, then back.
    doc["Self"]["Online"] = false.into();
    for i in 0..50 {
        set_online(&mut doc, &format!("watched-{i}"), false);
    }
    emu.set_status(doc.clone());
    emu.push("{\"SelfChange\":{}}\n");
    std::thread::sleep(std::time::Duration::from_secs(3));
    emu.push("{\"SelfChange\":{}}\n");
    std::thread::sleep(std::time::Duration::from_secs(1));
    doc["Self"]["Online"] = true.into();
    for i in 0..50 {
        set_online(&mut doc, &format!("watched-{i}"), true);
    }
    emu.set_status(doc.clone());
    emu.push("{\"SelfChange\":{}}\n");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let storm = sent(&rx) - short - long;
    println!(
        "BENCH presence flaps_100_short_messages={short} (one per state change: 200) outages_10_long_messages={long} (20) storm_50_devices_messages={storm} (100)"
    );
}
