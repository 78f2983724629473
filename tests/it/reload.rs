//! SIGHUP: the config reloaded, a bad one refused and the old one kept, the keys that need a
//! restart named.

use crate::support;

use support::emulator::{self, Emulator};
use support::receiver::Receiver;
use support::{webhook, Monitor};

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let mon = Monitor::new(&emu.socket, "[daemon]\nbatch_window = \"1ms\"\n");
    let daemon = mon.spawn_run_logged();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));

    // A channel added to the file takes effect on SIGHUP.
    let good = std::fs::read_to_string(&mon.config).unwrap()
        + &webhook("hook", &format!("{}/hook", rx.url));
    std::fs::write(&mon.config, &good).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config reloaded", 1, 60);
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nHUP1CNTRL", "after-reload", 6201, "100.104.0.1");
    emu.change(doc.clone());
    let got = rx.wait("/hook", 1, 60);
    assert!(
        got.iter().any(|r| r.text().contains("after-reload")),
        "the reloaded channel delivers"
    );

    // `config check` names the keys a reload cannot apply.
    let r = mon.run(&["config", "check"]);
    for key in tailscale_monitor::RESTART_ONLY.map(|r| r.key) {
        assert!(r.stdout.contains(key), "{key} in {r:?}");
    }
    // A key that needs a restart is said in the log, not silently ignored (issue 21).
    let moved = good.replace(
        "[daemon]\nbatch_window",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n\n[daemon]\nbatch_window",
    );
    assert_ne!(moved, good);
    std::fs::write(&mon.config, &moved).unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_log("take effect only after a restart", 1, 60);
    assert!(line.contains("[metrics] listen"), "{line}");
    // Each of the other keys that need a restart, said by name; the running values stay, so
    // that changes keep being detected through the socket and state the daemon started with.
    let token = support::secret_file(dir.path(), "metrics-token", "t0k3n");
    let other_state = dir.path().join("other-state");
    for (key, edited) in [
        (
            "[metrics] token_file",
            moved.replace(
                "listen = \"127.0.0.1:0\"\n",
                &format!(
                    "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
                    token.display()
                ),
            ),
        ),
        (
            "[state] dir",
            good.replace(
                &mon.dir.path().join("state").display().to_string(),
                &other_state.display().to_string(),
            ),
        ),
        (
            "[tailscale] socket",
            good.replace(
                &emu.socket.display().to_string(),
                &dir.path().join("elsewhere.sock").display().to_string(),
            ),
        ),
    ] {
        // One SIGHUP at a time: each waits for the reload it causes.
        assert_ne!(edited, good, "{key}");
        let (said, reloaded) = (
            daemon.log_count("take effect only after a restart"),
            daemon.log_count("config reloaded"),
        );
        std::fs::write(&mon.config, &edited).unwrap();
        daemon.signal(libc::SIGHUP);
        let line = daemon.wait_log("take effect only after a restart", said + 1, 60);
        assert!(line.contains(key), "{key}: {line}");
        daemon.wait_log("config reloaded", reloaded + 1, 60);
        std::fs::write(&mon.config, &good).unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_log("config reloaded", reloaded + 2, 60);
    }
    assert!(!other_state.exists(), "the running state directory stays");
    std::fs::write(&mon.config, &good).unwrap();

    // A broken file is refused; the running config (with the channel) stays.
    std::fs::write(&mon.config, good.clone() + "bogus_key = 1\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_log("config not reloaded", 1, 60);
    emulator::add_peer(
        &mut doc,
        "nHUP2CNTRL",
        "after-bad-reload",
        6201,
        "100.104.0.2",
    );
    emu.change(doc);
    let got = rx.wait("/hook", 2, 60);
    assert!(
        got.iter().any(|r| r.text().contains("after-bad-reload")),
        "still delivering after a bad reload"
    );
    assert!(daemon.terminate().success(), "still running, stops cleanly");
}
