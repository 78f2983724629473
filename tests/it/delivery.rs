//! The outbox when a channel misbehaves: retries after a 500 or a timeout (with the same
//! idempotency key), a channel broken for good reported on the others, alerts of a removed channel
//! moved, a rate limit, a message refused for good, a redirect, a huge error answer.

use crate::support;

use support::emulator::{self, join, Emulator};
use support::receiver::{hook_kinds, with_hook, with_receiver, Receiver};
use support::{webhook, Monitor};

#[test]
fn webhook_answering_500_then_200_is_delivered_once() {
    let (_dir, emu, rx, mon) = with_hook(|_| String::new());
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    rx.queue(&[500]);
    join(&emu, 1);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stdout.contains("not delivered yet") && r.stdout.contains("HTTP 500"),
        "{r:?}"
    );
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(mon.check().code, 0);
    let with_device: Vec<_> = rx
        .at("/hook")
        .into_iter()
        .filter(|r| r.text().contains("joiner-0"))
        .collect();
    assert_eq!(with_device.len(), 2, "one 500, one 200, nothing after");
}

#[test]
fn a_permanently_broken_channel_is_reported_on_the_others() {
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let (_dir, _emu, rx, mon) = with_receiver(|url| {
        format!(
            "{}{}\n[alerts]\ndelivery_max_age = \"1s\"\n",
            webhook("broken", &format!("http://127.0.0.1:{closed}/x")),
            webhook("ok", &format!("{url}/ok"))
        )
    });
    assert_eq!(mon.check().code, 1, "baseline not delivered on one channel");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    mon.check();
    let reports: Vec<_> = rx
        .at("/ok")
        .into_iter()
        .filter(|r| r.text().contains("monitor.delivery_failed"))
        .collect();
    assert_eq!(
        reports.len(),
        1,
        "the failure is reported on the working channel"
    );
    let v = reports[0].json();
    assert!(
        v["events"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("channel broken"),
        "{v}"
    );
    assert!(mon
        .event_kinds()
        .contains(&"monitor.delivery_failed".to_owned()));
    mon.check();
    let again = rx
        .at("/ok")
        .into_iter()
        .filter(|r| r.text().contains("monitor.delivery_failed"))
        .count();
    assert_eq!(again, 1, "reported once, not at every retry");
}

#[test]
fn alerts_stuck_on_a_channel_removed_from_the_config_go_to_the_new_one() {
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let (_dir, _emu, rx, mon) =
        with_receiver(|_| webhook("old", &format!("http://127.0.0.1:{closed}/x")));
    assert_eq!(mon.check().code, 1, "baseline stuck on the broken channel");
    // The administrator replaces the channel; the stuck baseline must not be stranded.
    let text = std::fs::read_to_string(&mon.config).unwrap();
    let text = text.replace(
        &webhook("old", &format!("http://127.0.0.1:{closed}/x")),
        &webhook("new", &format!("{}/new", rx.url)),
    );
    std::fs::write(&mon.config, text).unwrap();
    let r = mon.check();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("no longer configured"), "{r:?}");
    let got = rx.at("/new");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["events"][0]["kind"], "monitor.baseline");
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/new").len(), 1, "delivered once");
}

/// A delivery that timed out may have arrived: the retry must not post twice. Matrix gets the
/// same transaction id (the server deduplicates), PagerDuty the same `dedup_key`.
#[test]
fn a_retry_after_a_timeout_reuses_the_matrix_txn_and_the_pagerduty_dedup_key() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    support::private(&token);
    let u = &rx.url;
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"matrix\"\nhomeserver = \"{u}/\"\nroom = \"!r:test\"\ntoken_file = \"{t}\"\ntimeout = \"1s\"\n\
             [[notify]]\nkind = \"pagerduty\"\nurl = \"{u}/pd\"\nrouting_key_file = \"{t}\"\ntimeout = \"1s\"\n",
            t = token.display()
        ),
    );
    // Both first requests are taken but answered too late: the client times out.
    rx.queue(&[0, 0]);
    let r = mon.check();
    assert_eq!(r.code, 1, "not delivered yet: {r:?}");
    assert_eq!(mon.check().code, 0, "the retry goes through");
    let txns: Vec<String> = rx
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/send/m.room.message/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(txns.len(), 2, "{txns:?}");
    assert_eq!(txns[0], txns[1], "the same transaction id");
    let keys: Vec<String> = rx
        .at("/pd")
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the same dedup_key");
}

/// F2: a rate-limited per-event channel makes progress. PagerDuty takes 20 events, then answers
/// 429: the 20 it took are kept, and the next `check` sends only the 10 left, each event once.
#[test]
fn a_rate_limited_pagerduty_keeps_what_it_accepted() {
    let keys = tempfile::tempdir().unwrap();
    let key = support::secret_file(keys.path(), "routing-key", "R0UT1NG");
    let (_d, emu, rx, mon) = with_receiver(|url| {
        format!(
            "[[notify]]\nkind = \"pagerduty\"\nurl = \"{url}/pd\"\nrouting_key_file = \"{}\"\n",
            key.display()
        )
    });
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    for i in 0..30 {
        emulator::add_peer(
            &mut doc,
            &format!("nJOIN{i:02}CNTRL"),
            &format!("joiner-{i:02}"),
            6202,
            &format!("100.101.2.{}", i + 10),
        );
    }
    emu.set_status(doc);
    rx.queue(&[200; 20]);
    rx.queue(&[429]);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.contains("10 alert(s) not delivered yet"), "{r:?}");
    let r = mon.check();
    assert!(!r.stdout.contains("not delivered"), "{r:?}");
    let keys: Vec<String> = rx
        .at("/pd")
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    // The baseline, 20 accepted, the one refused, then the 10 left: nothing sent twice that
    // was accepted.
    assert_eq!(keys.len(), 1 + 20 + 1 + 10, "{keys:?}");
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 31, "every device once, and the baseline");
}

/// F2: a message the channel refuses for good (a 400) is split into its events; the one refused
/// alone goes to the dead letters, is reported once on the other channel as
/// `monitor.delivery_failed`, and does not block the events after it.
#[test]
fn an_alert_refused_for_good_does_not_block_the_queue() {
    let (_d, emu, rx, mon) = with_hook(|url| webhook("other", &format!("{url}/other")));
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    for (i, host) in ["too-long", "second", "third"].iter().enumerate() {
        emulator::add_peer(
            &mut doc,
            &format!("nDEAD{i}CNTRL"),
            host,
            6202,
            &format!("100.101.3.{}", i + 10),
        );
    }
    emu.set_status(doc);
    // The baseline went to both. Now: the batch of three to `hook` (400), its first event
    // alone (400), the second and third alone (200); `other` takes everything.
    rx.queue(&[400, 400]);
    let r = mon.check();
    assert!(
        !r.stdout.contains("not delivered"),
        "nothing left queued: {r:?}"
    );
    let kinds = hook_kinds(&rx);
    assert_eq!(
        kinds.iter().filter(|k| *k == "device.new").count(),
        3 + 1 + 2,
        "the batch, the refused one alone, then the two after it: {kinds:?}"
    );
    let other: Vec<String> = rx
        .at("/other")
        .iter()
        .flat_map(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["kind"].as_str().unwrap(),
                        e["summary"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let failed: Vec<&String> = other
        .iter()
        .filter(|k| k.starts_with("monitor.delivery_failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{other:?}");
    assert!(
        failed[0].contains("refused an alert for good"),
        "{failed:?}"
    );
    // Nothing is retried: the next check sends nothing more to `hook`.
    let before = rx.at("/hook").len();
    assert_eq!(mon.check().code, 0);
    assert_eq!(rx.at("/hook").len(), before);
}

/// F10: a redirect is never followed: the Gotify key (a custom header) and the body never reach
/// the host it points to.
#[test]
fn a_redirect_does_not_carry_the_credentials_elsewhere() {
    let keys = tempfile::tempdir().unwrap();
    let token = support::secret_file(keys.path(), "gotify-token", "G0T1FYKEY");
    let elsewhere = Receiver::start();
    let (_d, _emu, rx, mon) = with_receiver(|url| {
        format!(
            "[[notify]]\nkind = \"gotify\"\nurl = \"{url}/g\"\ntoken_file = \"{}\"\n",
            token.display()
        )
    });
    rx.redirect_to(&format!("{}/stolen", elsewhere.url));
    rx.queue(&[307]);
    let r = mon.check();
    assert!(r.stdout.contains("not delivered yet"), "{r:?}");
    assert!(
        elsewhere.requests().is_empty(),
        "nothing reached the other host"
    );
    assert_eq!(
        mon.check().code,
        0,
        "delivered to the configured URL on retry"
    );
    assert_eq!(
        rx.requests().len(),
        2,
        "the refused redirect, then the delivery"
    );
}

/// F11: a channel that answers an error with 256 MiB costs the monitor a few KiB of it: the
/// delivery fails with a one-line message and the `check` process stays small.
#[test]
fn a_huge_error_answer_from_a_channel_is_not_read_whole() {
    // Zeros: untouched pages of the shared zero page, so this process stays small serving them.
    let body = bytes::Bytes::from(vec![0u8; 256 << 20]);
    let (url, _rt) = support::serve_http(body, |body, _req| async move {
        Ok::<_, std::convert::Infallible>(
            hyper::Response::builder()
                .status(500)
                .body(http_body_util::Full::new(body))
                .unwrap(),
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let mon = Monitor::new(&emu.socket, &webhook("hook", &format!("{url}/hook")));
    // 96 MiB: several times what `check` needs, and far less than the answer.
    let (stdout, status) = support::run_bounded(
        std::process::Command::new(support::bin())
            .arg("--config")
            .arg(&mon.config)
            .arg("check"),
        96 << 20,
    );
    assert!(
        stdout.contains("HTTP 500"),
        "check did not finish within 96 MiB ({status}): {stdout}"
    );
}
