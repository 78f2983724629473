//! Each channel's payload as its receiver gets it: every HTTP channel and `exec` against a
//! loopback receiver (headers, the webhook signature), Apprise through its real CLI, Matrix
//! through a real Synapse, and `test-notify`.

use crate::support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::emulator::{self, join, Emulator};
use support::receiver::Receiver;
use support::{webhook, Monitor};

#[test]
fn every_http_channel_and_exec_get_their_payload() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    support::private(&secret);
    let token = dir.path().join("token");
    std::fs::write(&token, "123:ABC\n").unwrap();
    support::private(&token);
    let exec_out = dir.path().join("exec.json");
    let u = &rx.url;
    let config = format!(
        "{}secret_file = \"{}\"\n\
         [[notify]]\nkind = \"ntfy\"\nurl = \"{u}/alerts\"\n\
         [[notify]]\nkind = \"slack\"\nurl = \"{u}/slack\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"{u}/discord\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"{u}/\"\ntoken_file = \"{tok}\"\nchat_id = \"-10042\"\n\
         [[notify]]\nkind = \"gotify\"\nurl = \"{u}/gotify/\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"cat > {out}\"]\n",
        webhook("hook", &format!("{u}/hook")),
        secret.display(),
        tok = token.display(),
        out = exec_out.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    assert_eq!(mon.check().code, 0);
    join(&emu, 1);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");

    // Webhook: documented schema, valid signature over the raw body.
    let hook = rx.at("/hook");
    assert_eq!(hook.len(), 2, "baseline and the alert");
    let h = &hook[1];
    let v = h.json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["test"], false);
    assert_eq!(v["events"][0]["kind"], "device.new");
    assert_eq!(v["events"][0]["device"]["hostname"], "joiner-0");
    let sig = &h.headers["x-tailscale-monitor-signature"];
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&h.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        want,
        "HMAC-SHA256 over t.body"
    );

    let ntfy = &rx.at("/alerts")[1];
    assert_eq!(ntfy.headers["priority"], "urgent");
    assert!(
        ntfy.headers["title"].contains("New device joiner-0"),
        "{:?}",
        ntfy.headers
    );
    assert!(ntfy.text().contains("joiner-0"));
    assert!(rx.at("/slack")[1].json()["text"]
        .as_str()
        .unwrap()
        .contains("New device joiner-0"));
    let discord = rx.at("/discord")[1].json();
    let content = discord["content"].as_str().unwrap();
    assert!(content.contains("joiner\\-0") && content.chars().count() <= 2000);
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({"parse": []})
    );
    let tg = &rx.at("/bot123:ABC/sendMessage")[1];
    assert_eq!(tg.json()["chat_id"], "-10042");
    assert!(tg.json()["text"].as_str().unwrap().contains("joiner-0"));
    let gotify = &rx.at("/gotify/message")[1];
    assert_eq!(gotify.headers["x-gotify-key"], "123:ABC");
    assert_eq!(gotify.json()["priority"], 8);
    let exec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exec_out).unwrap()).unwrap();
    assert_eq!(exec["events"][0]["kind"], "device.new");
}

#[test]
fn test_notify_reports_each_channel() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let hold = support::smtp::closed_port();
    let closed = hold.port;
    let config = format!(
        "{}{}",
        webhook("ok", &format!("{}/ok", rx.url)),
        webhook("broken", &format!("http://127.0.0.1:{closed}/x"))
    );
    let mon = Monitor::new(&emu.socket, &config);
    let r = mon.run(&["test-notify"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("ok (webhook): ok"), "{r:?}");
    assert!(
        r.stdout.contains("broken (webhook): FAILED — webhook:"),
        "{r:?}"
    );
    let v = rx.at("/ok")[0].json();
    assert_eq!(v["test"], true);
    assert_eq!(v["events"][0]["kind"], "monitor.test");
    assert!(
        v["subject"].as_str().unwrap().contains("TEST notification"),
        "{v}"
    );
    let r = mon.run(&["test-notify", "--channel", "ok"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = mon.run(&["test-notify", "--channel", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("no channel named `nope` (configured: ok, broken)"),
        "{r:?}"
    );
    assert!(
        !mon.dir.path().join("state/state.db").exists() || mon.event_kinds().is_empty(),
        "tests are not logged"
    );
}

/// The `apprise` channel through the real Apprise CLI (PyPI), delivering with its `json://`
/// notifier to the loopback receiver: the route to every service we do not ship.
#[test]
#[ignore = "needs the Apprise CLI: run tests/run-all.sh"]
fn apprise_delivers_through_the_real_cli() {
    let apprise = std::env::var("TM_APPRISE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tailscale-monitor/venv/bin/apprise",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&apprise).exists(),
        "Apprise is not installed ({apprise}): run tests/setup/install-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let urls = dir.path().join("apprise-urls");
    let target = rx.url.replace("http://", "json://") + "/apprise";
    std::fs::write(&urls, format!("# one URL per line\n{target}\n")).unwrap();
    support::private(&urls);
    // F5: what every local user can read of the child (its command line): recorded by a wrapper
    // in front of the real CLI.
    let argv = dir.path().join("argv");
    let wrapper = support::script(
        dir.path(),
        "apprise-wrapper",
        &format!(
            "printf '%s\\n' \"$@\" >> '{}'\nexec '{apprise}' \"$@\"\n",
            argv.display()
        ),
    );
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"apprise\"\nprogram = \"{}\"\nurls_file = \"{}\"\ntimeout = \"60s\"\n",
            wrapper.display(),
            urls.display()
        ),
    );
    assert_eq!(mon.check().code, 0);
    join(&emu, 1);
    assert_eq!(mon.check().code, 2);
    let got = rx.wait("/apprise", 2, 60);
    assert_eq!(got.len(), 2, "baseline and the alert");
    let v = got[1].json();
    assert!(
        v["title"].as_str().unwrap().contains("New device joiner-0"),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("joiner-0"), "{v}");
    let r = mon.run(&["config", "check"]);
    assert!(!r.stdout.contains(&target), "the URLs stay in their file");
    let argv = std::fs::read_to_string(&argv).unwrap();
    assert!(
        !argv.contains("json://") && argv.contains("--config"),
        "no service URL on the command line: {argv}"
    );
}

/// F12: a child (here `exec`) inherits none of the monitor's environment: a password given to
/// the monitor in its environment never reaches the program.
#[test]
fn an_exec_child_does_not_inherit_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let env_file = dir.path().join("env");
    let script = support::script(
        dir.path(),
        "dump-env",
        &format!("cat >/dev/null\nenv > '{}'\n", env_file.display()),
    );
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"exec\"\ncommand = [\"{}\"]\n",
            script.display()
        ),
    );
    let r: support::Run = mon
        .cmd(&["check"])
        .env("TAILSCALE_MONITOR_SMTP_PASSWORD", "s3cret-in-env")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("s3cret-in-env"), "{env}");
    assert!(env.contains("PATH="), "{env}");
}

/// The `matrix` channel against a real homeserver (Synapse from PyPI): the alert arrives in the
/// room with its body, and a device named `@room` mentions nobody.
#[test]
#[ignore = "needs Synapse: run tests/run-all.sh"]
fn matrix_alerts_arrive_in_a_synapse_room_and_mention_nobody() {
    let syn = support::synapse::Synapse::start();
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let token = dir.path().join("matrix-token");
    std::fs::write(&token, &syn.token).unwrap();
    support::private(&token);
    let mon = Monitor::new(
        &emu.socket,
        &format!(
            "[[notify]]\nkind = \"matrix\"\nhomeserver = \"http://127.0.0.1:{}\"\nroom = \"{}\"\ntoken_file = \"{}\"\n",
            syn.port,
            syn.room,
            token.display()
        ),
    );
    assert_eq!(mon.check().code, 0);
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nROOMCNTRL",
        "@room <b>pwned</b>",
        6201,
        "100.101.1.89",
    );
    emu.set_status(doc);
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    let msgs = syn.messages();
    assert_eq!(msgs.len(), 2, "baseline and the alert: {msgs:?}");
    let m = &msgs[1];
    let body = m["body"].as_str().unwrap();
    assert!(body.contains("New device @room <b>pwned</b>"), "{body}");
    assert_eq!(m["m.mentions"], serde_json::json!({}), "no mention: {m}");
    let html = m["formatted_body"].as_str().unwrap();
    assert!(html.contains("@room &lt;b&gt;pwned&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
    assert_eq!(mon.check().code, 0);
    assert_eq!(syn.messages().len(), 2, "posted once");
}
