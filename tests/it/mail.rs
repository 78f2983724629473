//! The binary against the LocalAPI emulator and a real SMTP server (aiosmtpd): what the
//! administrator actually receives. Needs aiosmtpd (tests/setup/install-deps.sh); run with
//! `tests/run-all.sh` or `cargo test -- --include-ignored`.

use crate::support;

use support::emulator::{self, Emulator};
use support::smtp::{closed_port, Smtp};
use support::{email_channel, Monitor};

fn setup() -> (tempfile::TempDir, Emulator, Smtp, Monitor) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let smtp = Smtp::start();
    let mon = Monitor::new(&emu.socket, &email_channel(smtp.port));
    (dir, emu, smtp, mon)
}

/// Records the baseline, applies `change` to the tailnet, runs `check`; returns its exit code and
/// the alert mail it sent (the second mail).
fn alert_after(change: impl FnOnce(&mut serde_json::Value)) -> (i32, support::smtp::Mail) {
    let (_d, emu, smtp, mon) = setup();
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    change(&mut doc);
    emu.set_status(doc);
    let code = mon.check().code;
    let mails = smtp.wait_for(2, 60);
    assert_eq!(mails.len(), 2, "baseline and one alert mail");
    (code, mails[1].clone())
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn baseline_is_one_review_mail_listing_everything() {
    let (_d, _emu, smtp, mon) = setup();
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    let mails = smtp.wait_for(1, 60);
    assert_eq!(mails.len(), 1, "exactly one baseline mail");
    let m = &mails[0];
    assert!(
        m.subject.contains("baseline of 5 devices and 3 users"),
        "{}",
        m.subject
    );
    for want in [
        "web-01",
        "alice-laptop",
        "alice-phone",
        "nas",
        "bob-desktop",
        "alice@example.com",
        "bob@example.com",
        "n00005A9ACNTRL",
        "100.101.1.3",
    ] {
        assert!(m.text.contains(want), "{want} in text");
        assert!(m.html.contains(want), "{want} in html");
    }
    assert!(
        !m.text.contains("device.new"),
        "no per-device alerts at baseline"
    );
    // The mail ends with the log anchor, and `audit` accepts it.
    let anchor = m
        .text
        .lines()
        .find_map(|l| l.strip_prefix("Log anchor: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("a log anchor in {}", m.text));
    assert!(anchor.starts_with("1:"), "{anchor}");
    let r = mon.run(&["audit", "--anchor", anchor]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(mon.check().code, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(smtp.mails().len(), 1, "nothing more when nothing changed");
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn new_device_of_existing_user() {
    let (code, m) = alert_after(|doc| {
        emulator::add_peer(doc, "nNEWDEVCNTRL", "alice-tablet", 6201, "100.101.1.20");
    });
    assert_eq!(code, 2);
    assert!(
        m.subject
            .contains("CRITICAL: New device alice-tablet (linux) of alice@example.com"),
        "{}",
        m.subject
    );
    for want in [
        "alice-tablet.tail1a2b3c.ts.net.",
        "alice@example.com (Alice Example)",
        "100.101.1.20",
        "linux",
        "2026-11-24 10:00:00 UTC",
        "nNEWDEVCNTRL",
        "https://login.tailscale.com/admin/machines/100.101.1.20",
        "headscale nodes delete --identifier",
    ] {
        assert!(m.text.contains(want), "{want} in {}", m.text);
    }
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn new_user_and_their_device_in_one_message() {
    let (code, m) = alert_after(|doc| {
        emulator::add_user(doc, 7001, "mallory@evil.example", "Mallory");
        emulator::add_peer(doc, "nMALLORYCNTRL", "mallory-pc", 7001, "100.101.1.30");
    });
    assert_eq!(code, 2);
    assert!(
        m.text.contains("user.new") && m.text.contains("device.new"),
        "one message: {}",
        m.text
    );
    assert!(m.text.contains("mallory@evil.example (Mallory)"));
    assert!(m.subject.contains("(+1 more)"), "{}", m.subject);
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn device_readded_under_same_hostname_and_ip_is_new() {
    // bob-desktop is deleted and registered again: new stable ID and key, same name and IP.
    let (code, m) = alert_after(|doc| {
        let (_, old) = emulator::remove_peer(doc, "bob-desktop");
        let key = emulator::add_peer(doc, "nBOBAGAINCNTRL", "bob-desktop", 6202, "100.101.1.5");
        doc["Peer"][&key]["TailscaleIPs"] = old["TailscaleIPs"].clone();
    });
    assert_eq!(code, 2);
    assert!(
        m.subject.contains("New device bob-desktop"),
        "{}",
        m.subject
    );
    assert!(m.text.contains("re-registration"), "{}", m.text);
    assert!(
        m.text.contains("n00005C23CNTRL"),
        "names the old device: {}",
        m.text
    );
    assert!(m.text.contains("device.removed"), "{}", m.text);
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn rekey_mail_shows_old_and_new_key() {
    let (code, m) = alert_after(|doc| emulator::rekey_peer(doc, "alice-laptop", "cafe"));
    assert_eq!(code, 1);
    assert!(
        m.subject
            .contains("WARNING: Device alice-laptop re-authenticated"),
        "{}",
        m.subject
    );
    let old_key = "nodekey:00000000000000000000000000000000000000000000000000009f3a00001eef →";
    assert!(m.text.contains(old_key), "{}", m.text);
    assert!(m.text.contains("000000cafe"), "{}", m.text);
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn daemon_stopped_then_running_again_is_no_false_new() {
    let (_d, emu, smtp, mon) = setup();
    mon.check();
    emu.set_status(emulator::stopped());
    assert_eq!(mon.check().code, 3);
    assert_eq!(mon.check().code, 3);
    let mails = smtp.wait_for(2, 60);
    assert_eq!(mails.len(), 2, "source_down mailed once");
    assert!(
        mails[1].subject.contains("cannot be read"),
        "{}",
        mails[1].subject
    );
    assert!(mails[1].text.contains("Stopped"), "{}", mails[1].text);

    emu.set_status(emulator::tailnet());
    assert_eq!(mon.check().code, 0);
    let mails = smtp.wait_for(3, 60);
    assert_eq!(mails.len(), 3);
    assert!(mails[2].text.contains("monitor.source_recovered"));
    assert!(
        !mails[2].text.contains("device.new") && !mails[2].text.contains("device.removed"),
        "{}",
        mails[2].text
    );
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn smtp_down_at_detection_is_delivered_once_later() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = closed_port();
    let port = hold.port;
    let mon = Monitor::new(&emu.socket, &email_channel(port));
    let r = mon.check();
    assert_eq!(r.code, 1, "baseline not delivered is a warning: {r:?}");
    assert!(r.stdout.contains("not delivered yet, will retry"), "{r:?}");
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nWHILEDOWNCNTRL",
        "while-smtp-down",
        6201,
        "100.101.1.40",
    );
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("2 alert(s) not delivered yet"), "{r:?}");

    let smtp = Smtp::start_on(&hold);
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    let mails = smtp.wait_for(1, 60);
    assert_eq!(mails.len(), 1, "the backlog goes out as one message");
    assert!(
        mails[0].text.contains("monitor.baseline") && mails[0].text.contains("while-smtp-down")
    );
    assert_eq!(mon.check().code, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(smtp.mails().len(), 1, "delivered once");
    // The state advanced exactly once: one device.new in the log.
    assert_eq!(mon.count_events("device.new"), 1);
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn hostile_hostname_and_display_name_inject_nothing() {
    let (code, m) = alert_after(|doc| {
        let display = "Eve\r\nBcc: victim@example.net <img src=x onerror=alert(1)>";
        emulator::add_user(doc, 7002, "eve@example.com", display);
        emulator::add_peer(
            doc,
            "nEVILCNTRL",
            "evil\r\nBcc: x@y <script>alert(1)</script>",
            7002,
            "100.101.1.66",
        );
    });
    assert_eq!(code, 2);
    assert!(
        !m.header_names.iter().any(|h| h == "bcc"),
        "no injected header: {:?}",
        m.header_names
    );
    assert_eq!(m.header_names.iter().filter(|h| *h == "to").count(), 1);
    assert!(
        !m.rcpt_to.contains("x@y") && !m.rcpt_to.contains("victim"),
        "envelope: {}",
        m.rcpt_to
    );
    assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
    assert!(
        !m.html.contains("<script>") && !m.html.contains("<img"),
        "{}",
        m.html
    );
    assert!(m.html.contains("&lt;script&gt;"), "{}", m.html);
    for line in m.raw.lines() {
        assert!(
            !line.to_lowercase().starts_with("bcc:"),
            "raw header line: {line}"
        );
    }
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn two_checks_at_once_alert_once() {
    let (_d, emu, smtp, mon) = setup();
    mon.check();
    smtp.wait_for(1, 60);
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nRACECNTRL", "race-device", 6201, "100.101.1.50");
    emu.set_status(doc);
    let spawn = || {
        mon.cmd(&["check"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let ra: support::Run = a.wait_with_output().unwrap().into();
    let rb: support::Run = b.wait_with_output().unwrap().into();
    let mut codes = [ra.code, rb.code];
    codes.sort();
    assert_eq!(
        codes,
        [0, 2],
        "one finds the device, the other finds it known: {ra:?} {rb:?}"
    );
    let mails = smtp.wait_for(2, 60);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        smtp.mails().len(),
        2,
        "one alert mail: {:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert_eq!(mon.count_events("device.new"), 1);
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn run_daemon_retries_until_smtp_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = closed_port();
    let port = hold.port;
    let mon = Monitor::new(
        &emu.socket,
        &(email_channel(port) + "\n[daemon]\ninterval = \"300ms\"\n"),
    );
    let daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nRUNMAILCNTRL", "run-mail", 6201, "100.101.1.60");
    assert!(emu.wait_opened(1, 60));
    emu.change(doc);
    assert!(mon.wait_for_event("device.new", 60));
    // SMTP comes up only now; the first retry is due 15 s (±20 %) after the first failure.
    let smtp = Smtp::start_on(&hold);
    let mails = smtp.wait_for(1, 90);
    assert!(
        !mails.is_empty(),
        "run delivered the backlog after SMTP came up"
    );
    assert!(mails.iter().any(|m| m.text.contains("run-mail")));
    assert!(daemon.terminate().success());
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn kill_9_between_detection_and_delivery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = closed_port(); // SMTP is down while the device is detected
    let port = hold.port;
    let mon = Monitor::new(&emu.socket, &email_channel(port));
    let daemon = mon.spawn_run();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    assert!(emu.wait_opened(1, 60));
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nKILLCNTRL",
        "killed-before-mail",
        6201,
        "100.101.1.70",
    );
    emu.change(doc);
    assert!(mon.wait_for_event("device.new", 60));
    daemon.signal(libc::SIGKILL);
    drop(daemon);

    let smtp = Smtp::start_on(&hold);
    let daemon = mon.spawn_run();
    let mails = smtp.wait_for(1, 90);
    assert!(
        mails.iter().any(|m| m.text.contains("killed-before-mail")),
        "delivered after the restart"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let n = smtp
        .mails()
        .iter()
        .filter(|m| m.text.contains("killed-before-mail"))
        .count();
    assert_eq!(n, 1, "delivered once");
    assert_eq!(mon.count_events("device.new"), 1, "not re-detected");
    assert!(daemon.terminate().success());
}

#[test]
#[ignore = "needs the real SMTP server: run tests/run-all.sh"]
fn demo_with_an_email_config_mails_each_step() {
    let (_d, _emu, smtp, mon) = setup();
    let r = mon.run(&["demo"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("sent through 1 channel"), "{r:?}");
    let mails = smtp.wait_for(4, 60);
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(mails.len(), 4, "{subjects:?}");
    for (m, want) in mails
        .iter()
        .zip(["baseline", "CRITICAL: New device", "WARNING", "exit node"])
    {
        assert!(
            m.subject.contains("(demo)") && m.subject.contains(want),
            "{want} in {subjects:?}"
        );
    }
    assert!(
        !mon.dir.path().join("state/state.db").exists(),
        "the demo keeps nothing in the real state"
    );
}

/// The `sendmail` transport through a real MTA client: Debian's msmtp, relaying to aiosmtpd.
#[test]
#[ignore = "needs the real SMTP server and msmtp: run tests/run-all.sh"]
fn sendmail_transport_through_msmtp_retries_until_the_relay_is_up() {
    let msmtp = ["/usr/bin/msmtp", "/usr/local/bin/msmtp"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("msmtp is not installed: tests/setup/install-deps.sh installs it (apt msmtp)");
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = closed_port();
    let port = hold.port;
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"email\"\nto = [\"admin@example.com\"]\n\
             from = \"tailscale-monitor@web-01.example.com\"\nsmtp = \"sendmail\"\n\
             sendmail = \"{msmtp}\"\ntimeout = \"10s\"\n"
        ),
    );
    // msmtp reads ~/.msmtprc (which it wants private).
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let rc = home.join(".msmtprc");
    std::fs::write(
        &rc,
        format!("defaults\nauth off\ntls off\naccount default\nhost 127.0.0.1\nport {port}\n"),
    )
    .unwrap();
    support::private(&rc);
    let check = || -> support::Run {
        mon.cmd(&["check"])
            .env("HOME", &home)
            .output()
            .unwrap()
            .into()
    };

    // The relay is down: msmtp fails, the alert stays queued.
    let r = check();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("not delivered yet"), "{r:?}");

    let smtp = Smtp::start_on(&hold);
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nSENDMAILCNTRL",
        "via-sendmail",
        6201,
        "100.101.1.41",
    );
    emu.set_status(doc);
    let r = check();
    assert_eq!(r.code, 2, "{r:?}");
    let mails = smtp.wait_for(1, 60);
    assert_eq!(mails.len(), 1, "baseline and join in one message");
    let m = &mails[0];
    assert!(
        m.text.contains("monitor.baseline") && m.text.contains("via-sendmail"),
        "{}",
        m.text
    );
    assert!(m.rcpt_to.contains("admin@example.com"), "{}", m.rcpt_to);
    assert_eq!(check().code, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(smtp.mails().len(), 1, "delivered once");
}

/// Issue 28 (F12, one step further): every child's environment is built from an allowlist, the
/// `sendmail` transport's and the `tailscale` CLI source's included: a secret the monitor has in
/// its environment (`TAILSCALE_MONITOR_SMTP_PASSWORD`, anything else) reaches none of them.
#[test]
fn no_child_gets_the_monitors_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("status.json"),
        serde_json::to_string(&emulator::tailnet()).unwrap(),
    )
    .unwrap();
    let cli = support::script(
        d,
        "tailscale",
        &format!("env > {0}/cli.env\ncat {0}/status.json\n", d.display()),
    );
    let sendmail = support::script(
        d,
        "sendmail",
        &format!("env > {0}/sendmail.env\ncat > {0}/mail.txt\n", d.display()),
    );
    let mon = Monitor::new(
        std::path::Path::new("/nonexistent"),
        &format!(
            "[[notify]]\nkind = \"email\"\nto = [\"admin@example.com\"]\n\
             from = \"tailscale-monitor@web-01.example.com\"\nsmtp = \"sendmail\"\n\
             sendmail = \"{}\"\n",
            sendmail.display()
        ),
    );
    let text = std::fs::read_to_string(&mon.config).unwrap().replace(
        "[tailscale]\n",
        &format!(
            "[tailscale]\nsource = \"cli\"\ncli = \"{}\"\n",
            cli.display()
        ),
    );
    std::fs::write(&mon.config, text).unwrap();
    let r: support::Run = mon
        .cmd(&["check"])
        .env("TAILSCALE_MONITOR_SMTP_PASSWORD", "hunter2-secret")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
        .env("HOME", d)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    let mail = std::fs::read_to_string(d.join("mail.txt")).expect("sendmail got the baseline");
    assert!(mail.contains("monitor.baseline"), "{mail}");
    // The shell adds PWD, SHLVL and `_` itself.
    let allowed = [
        "PATH", "LANG", "HOME", "USER", "LOGNAME", "TZ", "PWD", "SHLVL", "_",
    ];
    for f in ["cli.env", "sendmail.env"] {
        let env = std::fs::read_to_string(d.join(f)).unwrap();
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(
            names.iter().all(|n| allowed.contains(n)),
            "{f} lists {names:?}"
        );
        assert!(!env.contains("secret"), "{f}: {env}");
        assert!(env.contains(&format!("HOME={}", d.display())), "{f}: {env}");
    }
}
