//! The state database failing: a full disk alerted straight to the channels and recovered from,
//! a store `run` cannot open, a state the invoking user may not open.

use crate::support;

use support::emulator::join;
use support::receiver::{hook_kinds, with_hook};

#[test]
fn a_full_disk_is_alerted_directly_and_run_recovers_when_space_returns() {
    let (_dir, emu, rx, mon) =
        with_hook(|_| "[daemon]\ninterval = \"1s\"\nbatch_window = \"1ms\"\n".to_owned());
    // The disk fills up: RLIMIT_FSIZE of the running `run`, lowered and raised with prlimit(2).
    let daemon = mon.spawn_run();
    let pid = daemon.0.id() as libc::pid_t;
    let set_limit = |soft: u64| {
        let l = libc::rlimit {
            rlim_cur: soft,
            rlim_max: libc::RLIM_INFINITY,
        };
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &l, std::ptr::null_mut()) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    assert!(!rx.wait("/hook", 1, 60).is_empty(), "baseline delivered");
    // Room for a few quiet passes, not for recording 300 joins (about 600 KiB of WAL).
    let wal = std::fs::metadata(mon.dir.path().join("state/state.db-wal"))
        .unwrap()
        .len();
    set_limit(wal + 192 * 1024);
    join(&emu, 300);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    let got = rx.wait("/hook", 2, 60);
    assert_eq!(
        hook_kinds(&rx),
        vec!["monitor.baseline", "monitor.store_failed"],
        "{:?}",
        got.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert!(got[1].text().contains("state.db"), "{}", got[1].text());
    // Several retries fail meanwhile; the alert is not repeated.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(rx.at("/hook").len(), 2, "told once");

    // Space returns: the next retry records the joins and the recovery.
    set_limit(libc::RLIM_INFINITY);
    assert!(mon.wait_for_event("monitor.store_recovered", 60));
    rx.wait("/hook", 3, 60);
    let k = hook_kinds(&rx);
    assert_eq!(
        k.iter().filter(|k| *k == "device.new").count(),
        300,
        "{k:?}"
    );
    assert!(k.contains(&"monitor.store_recovered".to_owned()), "{k:?}");
    assert_eq!(mon.count_events("device.new"), 300);
    assert!(daemon.terminate().success());
}

#[test]
fn check_on_a_full_disk_alerts_once_on_stderr_and_the_channels_then_recovers() {
    use std::os::unix::process::CommandExt;
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0, "baseline");
    join(&emu, 300);
    // The disk is full for `check`: room for the database as it is, not for 300 joins' WAL.
    let db = std::fs::metadata(mon.dir.path().join("state/state.db"))
        .unwrap()
        .len();
    let full_check = || -> support::Run {
        let mut cmd = mon.cmd(&["check"]);
        let soft = db + 64 * 1024;
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap().into()
    };
    let r = full_check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.starts_with("TAILSCALE UNKNOWN"), "{r:?}");
    assert!(
        r.stderr.contains("state.db"),
        "on stderr too, for cron's mail: {r:?}"
    );
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 2, "baseline, then the failure");
    assert_eq!(sent[1].json()["events"][0]["kind"], "monitor.store_failed");
    // Cron runs it again a minute later: still failing, not alerted again.
    assert_eq!(full_check().code, 3);
    assert_eq!(rx.at("/hook").len(), 2, "one alert per hour at most");

    // Space returns: the joins and the recovery go out.
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 3);
    let text = sent[2].text();
    assert!(text.contains("monitor.store_recovered"), "{text}");
    assert_eq!(mon.count_events("device.new"), 300);
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/hook").len(), 3, "recovered once");
}

#[test]
fn run_that_cannot_open_its_store_alerts_once_before_exiting() {
    let (dir, _emu, rx, mon) = with_hook(|_| String::new());
    let state = mon.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.db"), b"not a database ".repeat(300)).unwrap();
    // systemd would restart it every few seconds: one alert, not one per restart.
    for _ in 0..3 {
        let r = mon.run(&["run"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains("not a database"), "{r:?}");
    }
    let sent = rx.at("/hook");
    assert_eq!(sent.len(), 1, "alerted once");
    assert_eq!(sent[0].json()["events"][0]["kind"], "monitor.store_failed");

    // The administrator moves the broken file away: `run` starts, records a new baseline and
    // reports the recovery.
    std::fs::rename(state.join("state.db"), dir.path().join("broken.db")).unwrap();
    let daemon = mon.spawn_run();
    rx.wait("/hook", 2, 60);
    let kinds = hook_kinds(&rx);
    assert!(
        kinds.contains(&"monitor.store_recovered".to_owned())
            && kinds.contains(&"monitor.baseline".to_owned()),
        "{kinds:?}"
    );
    assert!(daemon.terminate().success());
}

#[test]
fn a_state_the_user_may_not_open_is_a_terminal_hint_not_a_team_alert() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (_dir, _emu, rx, mon) = with_hook(|_| String::new());
    assert_eq!(mon.check().code, 0, "baseline, as the service user");
    assert_eq!(rx.at("/hook").len(), 1);
    let state = mon.dir.path().join("state");
    // Someone else runs it by hand: as root, `nobody` runs a copy of the binary that it may
    // execute; otherwise the state directory is made unreadable.
    let root = unsafe { libc::geteuid() } == 0;
    let bin = mon.dir.path().join("tailscale-monitor");
    if root {
        std::fs::copy(support::bin(), &bin).unwrap();
        for p in [mon.dir.path(), &mon.config] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    } else {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let other = |args: &[&str]| -> support::Run {
        let mut c = std::process::Command::new(if root { bin.clone() } else { support::bin() });
        c.arg("--config").arg(&mon.config).args(args);
        if root {
            unsafe {
                c.pre_exec(|| {
                    if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c.output().unwrap().into()
    };
    let r = other(&["check"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.contains("Permission denied") && r.stdout.contains("run `check` as the user"),
        "{r:?}"
    );
    let r = other(&["events"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        !r.stderr.contains("no state") && r.stderr.contains("Permission denied"),
        "{r:?}"
    );
    assert_eq!(rx.at("/hook").len(), 1, "nothing sent to the team");
    if !root {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}
