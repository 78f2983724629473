//! The config contract: every key, its errors and its defaults.

use super::socket::first_trusted;
use crate::notify::channels::email::{MailTransport, SmtpTls, DEFAULT_SENDMAIL, PASSWORD_ENV};
use crate::notify::channels::ChannelKind;

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text, "config.toml")
        .unwrap_err()
        .to_string()
}

const MINIMAL: &str = r#"
[tailscale]
socket = "/var/run/tailscale/tailscaled.sock"

[state]
dir = "/var/lib/tailscale-monitor"

[[notify]]
kind = "email"
to = ["admin@example.com"]
from = "tailscale-monitor@web-01.example.com"
smtp = "smtp://127.0.0.1:25"
"#;

#[test]
fn minimal_contract_file_is_valid() {
    let c = Config::from_toml(MINIMAL, "config.toml").unwrap();
    assert_eq!(c.channels.len(), 1);
    assert_eq!(c.daemon.interval, Duration::from_secs(30));
    let ChannelKind::Email(e) = &c.channels[0].kind else {
        panic!("email channel")
    };
    assert_eq!(
        e.transport,
        MailTransport::Smtp {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            user: None,
            password: None
        }
    );
    assert!(c.render().contains("smtp = \"smtp://127.0.0.1:25\""));
}

/// F9: a socket a local user made at a candidate path is never the default.
#[test]
fn a_socket_planted_by_a_user_is_never_the_default() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("tailscale");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = planted.join("tailscaled.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // World-writable directory (as /tmp is): refused whoever owns the socket.
    assert_eq!(first_trusted(std::slice::from_ref(&sock)), None);
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // The same socket handed to another user: refused.
        std::os::unix::fs::lchown(&sock, Some(65534), Some(65534)).unwrap();
        assert_eq!(first_trusted(std::slice::from_ref(&sock)), None);
        std::os::unix::fs::lchown(&sock, Some(0), Some(0)).unwrap();
        let _ = std::os::unix::fs::lchown(dir.path(), Some(0), Some(0));
        assert_eq!(first_trusted(std::slice::from_ref(&sock)), Some(sock));
    } else {
        assert_eq!(first_trusted(&[sock]), None, "not owned by root");
    }
}

/// F10: a credential never crosses the network in clear; loopback is fine.
#[test]
fn credentials_over_plain_http_are_refused_except_to_loopback() {
    let e = err("[control]\nkind = \"headscale\"\nurl = \"http://hs.example.com:8080\"\napi_key_file = \"/k\"\n");
    assert!(e.contains("control.url") && e.contains("in clear"), "{e}");
    let e = err(
        "[[notify]]\nkind = \"gotify\"\nurl = \"http://gotify.example.com\"\ntoken_file = \"/t\"\n",
    );
    assert!(e.contains("`url`") || e.contains("url"), "{e}");
    assert!(e.contains("in clear"), "{e}");
    for ok in [
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "http://localhost",
        "https://hs.example.com",
    ] {
        let text =
            format!("[control]\nkind = \"headscale\"\nurl = \"{ok}\"\napi_key_file = \"/k\"\n");
        match Config::from_toml(&text, "config.toml") {
            Ok(_) => {}
            Err(e) => assert!(!e.to_string().contains("in clear"), "{ok}: {e}"),
        }
    }
}

/// Issue 28 (F10, one step further): a URL whose query carries a secret-looking parameter is a
/// credential: refused over plain http:// except to loopback, whatever the channel, and the error
/// says why without repeating the secret.
#[test]
fn a_secret_in_a_url_query_is_a_credential() {
    for q in [
        "token=abc123",
        "key=abc123",
        "API_KEY=abc123",
        "x=1&sig=abc123",
    ] {
        let e = err(&format!(
            "[[notify]]\nkind = \"webhook\"\nurl = \"http://hooks.example.com/in?{q}\"\n"
        ));
        assert!(
            e.contains("carries a credential in its query") && e.contains("in clear"),
            "{q}: {e}"
        );
        assert!(!e.contains("abc123"), "{q}: {e}");
    }
    for ok in [
        "http://127.0.0.1:9/in?token=abc",
        "https://hooks.example.com/in?token=abc",
        "http://hooks.example.com/in?page=2",
    ] {
        let text = format!("[[notify]]\nkind = \"webhook\"\nurl = \"{ok}\"\n");
        if let Err(e) = Config::from_toml(&text, "config.toml") {
            assert!(!e.to_string().contains("in clear"), "{ok}: {e}");
        }
    }
}

/// F18: a config error never repeats a webhook URL's secret path or a password.
#[test]
fn config_errors_do_not_repeat_secret_urls() {
    let e = err("[[notify]]\nkind = \"slack\"\nurl = \"htps://hooks.slack.com/services/T000/B000/XXXXsecretXXXX\"\n");
    assert!(e.contains("htps://hooks.slack.com/…"), "{e}");
    assert!(!e.contains("XXXXsecretXXXX") && !e.contains("B000"), "{e}");
    let e = err(&MINIMAL.replace(
        "smtp://127.0.0.1:25",
        "smtx://alerts:hunter2@mail.example.com:587",
    ));
    assert!(!e.contains("hunter2"), "{e}");
}

/// F20: a duration too long to add to a time is a config error naming the key, not a panic
/// at the first failed delivery.
#[test]
fn endless_durations_are_refused_with_the_key() {
    let e = err(&format!(
        "{MINIMAL}\n[alerts]\ndelivery_max_age = \"1000000y\"\n"
    ));
    assert!(
        e.contains("alerts.delivery_max_age") && e.contains("longer than 100 years"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\n[digest]\nevery = \"1000000y\"\n"));
    assert!(e.contains("longer than 100 years"), "{e}");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err(&MINIMAL.replace("smtp = ", "smpt = "));
    assert!(e.starts_with("config.toml:12:"), "{e}");
    assert!(e.contains("smpt"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let e = err("[tailscale]\nsocket = \"/x\"\nsokcet = 1\n");
    assert!(
        e.starts_with("config.toml:3:") && e.contains("sokcet"),
        "{e}"
    );
    let e = err("[stat]\ndir = \"/x\"\n");
    assert!(e.starts_with("config.toml:1:") && e.contains("stat"), "{e}");
}

#[test]
fn bad_values_name_line_and_key() {
    let e = err("[digest]\nevery = \"weekly\"\n");
    assert!(
        e.starts_with("config.toml:2:") && e.contains("digest.every"),
        "{e}"
    );
    let c = Config::from_toml("[digest]\nevery = \"7d\"\n", "config.toml").unwrap();
    assert_eq!(c.digest_every, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(Config::defaults().digest_every, None, "off by default");
    let e = err("[daemon]\ninterval = \"soon\"\n");
    assert!(
        e.starts_with("config.toml:2:") && e.contains("daemon.interval"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("smtp://127.0.0.1:25", "ftp://x"));
    assert!(
        e.starts_with("config.toml:12:") && e.contains("`smtp`"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("admin@example.com", "not an address"));
    assert!(
        e.starts_with("config.toml:10:") && e.contains("`to`"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("kind = \"email\"", "kind = \"pager\""));
    assert!(
        e.starts_with("config.toml:9:") && e.contains("pager"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("to = [\"admin@example.com\"]\n", ""));
    assert!(e.contains("needs `to`"), "{e}");
    let e = err("[tailscale]\nsource = \"magic\"\n");
    assert!(e.starts_with("config.toml:2:"), "{e}");
}

#[test]
fn smtp_forms() {
    let t = |url: &str| {
        let c = Config::from_toml(&MINIMAL.replace("smtp://127.0.0.1:25", url), "c").unwrap();
        let ChannelKind::Email(e) = &c.channels[0].kind else {
            panic!("email channel")
        };
        e.transport.clone()
    };
    assert_eq!(
        t("sendmail"),
        MailTransport::Sendmail {
            program: DEFAULT_SENDMAIL.into()
        }
    );
    std::env::set_var(PASSWORD_ENV, "hunter2");
    let MailTransport::Smtp {
        tls,
        port,
        user,
        password,
        ..
    } = t("smtp://me%40x.org@mail.example.com:587")
    else {
        panic!()
    };
    assert_eq!(
        (tls, port, user.as_deref()),
        (SmtpTls::StartTls, 587, Some("me@x.org"))
    );
    assert_eq!(password.unwrap().expose(), "hunter2");
    let MailTransport::Smtp { tls, port, .. } = t("smtps://me@mail.example.com") else {
        panic!()
    };
    assert_eq!((tls, port), (SmtpTls::Tls, 465));
    let MailTransport::Smtp { tls, .. } = t("smtp://mail.example.com") else {
        panic!()
    };
    assert_eq!(
        tls,
        SmtpTls::StartTls,
        "non-loopback plain smtp:// still requires STARTTLS"
    );
    assert!(err(&MINIMAL.replace("smtp://127.0.0.1:25", "smtp://u:pw@h")).contains("password"));
}

#[test]
fn secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = MINIMAL.replace(
        "smtp = \"smtp://127.0.0.1:25\"",
        &format!(
            "smtp = \"smtps://u@h\"\npassword_file = \"{}\"",
            pw.display()
        ),
    );
    let c = Config::from_toml(&text, "c").unwrap();
    assert!(!c.render().contains("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
    let ChannelKind::Email(e) = &c.channels[0].kind else {
        panic!("email channel")
    };
    let MailTransport::Smtp { password, .. } = &e.transport else {
        panic!()
    };
    assert_eq!(password.as_ref().unwrap().expose(), "s3cret");
}

#[test]
fn secrets_readable_by_every_user_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let slack =
        "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/X\"\n";
    let open = write("open.toml", slack, 0o644);
    let e = Config::load(&open).unwrap_err().to_string();
    assert!(
        e.contains("open.toml:3:")
            && e.contains("slack webhook URL is a secret")
            && e.contains("chmod o-rwx"),
        "{e}"
    );
    assert!(Config::load(&write("private.toml", slack, 0o640)).is_ok());
    // A password in a URL is a secret too; a plain URL is not.
    let hook = |u: &str| format!("[[notify]]\nkind = \"webhook\"\nurl = \"{u}\"\n");
    let e = Config::load(&write("pw.toml", &hook("https://u:pw@h/x"), 0o644)).unwrap_err();
    assert!(e.to_string().contains("holds a password"), "{e}");
    assert!(Config::load(&write("plain.toml", &hook("https://h/x"), 0o644)).is_ok());
    // Secret files must be private as well.
    let tok = write("token", "123:ABC\n", 0o644);
    let text = format!(
        "[[notify]]\nkind = \"gotify\"\nurl = \"https://g/\"\ntoken_file = \"{}\"\n",
        tok.display()
    );
    let e = Config::from_toml(&text, "c").unwrap_err().to_string();
    assert!(
        e.contains("c:4:") && e.contains("every local user can read"),
        "{e}"
    );
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Config::from_toml(&text, "c").is_ok());
}

/// F21: whoever can write the config, a secret file or an exec program runs code as the
/// service user; others' write permission is refused, with where and how to fix it.
#[test]
fn files_others_can_write_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let conf = write("open.toml", "", 0o646);
    let e = Config::load(&conf).unwrap_err().to_string();
    assert!(e.contains("open.toml") && e.contains("chmod o-w"), "{e}");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(Config::load(&conf).is_ok());

    let tok = write("token", "123:ABC\n", 0o602);
    let text = format!(
        "[[notify]]\nkind = \"gotify\"\nurl = \"https://g/\"\ntoken_file = \"{}\"\n",
        tok.display()
    );
    let e = Config::from_toml(&text, "c").unwrap_err().to_string();
    assert!(e.contains("c:4:") && e.contains("can write"), "{e}");

    let prog = write("notify.sh", "#!/bin/sh\n", 0o757);
    let text = format!(
        "[[notify]]\nkind = \"exec\"\ncommand = [\"{}\"]\n",
        prog.display()
    );
    let e = Config::from_toml(&text, "c").unwrap_err().to_string();
    assert!(e.contains("c:3:") && e.contains("chmod o-w"), "{e}");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Config::from_toml(&text, "c").is_ok());
}

#[test]
fn filters_and_duplicate_names() {
    let text = format!("{MINIMAL}min_severity = \"warning\"\nevents = [\"device.new\"]\n");
    let c = Config::from_toml(&text, "c").unwrap();
    assert_eq!(c.channels[0].route.min_severity, Severity::Warning);
    let e = err(&format!("{MINIMAL}events = [\"device.nwe\"]\n"));
    assert!(e.contains("device.nwe"), "{e}");
    let e = err(&format!(
        "{MINIMAL}{}",
        &MINIMAL[MINIMAL.find("[[notify]]").unwrap()..]
    ));
    assert!(e.contains("distinct `name`"), "{e}");
}

/// `[guard]`: the contract's three keys, their defaults, and one-line errors naming the key.
#[test]
fn guard_keys() {
    use crate::model::guard::{ApproveNew, Selector};
    let c = Config::from_toml("", "config.toml").unwrap();
    assert_eq!(c.guard, GuardConfig::default());
    assert!(!c.guard.enforcing() && c.policy.guard.is_none());
    assert_eq!(c.guard.interface, "tailscale0");
    let c = Config::from_toml(
        "[guard]\nmode = \"enforce\"\ninterface = \"ts1\"\napprove_new = [\"nABC123CNTRL\", \"tag:ci\", \"alice@example.com\"]\n",
        "config.toml",
    )
    .unwrap();
    assert!(c.guard.enforcing());
    assert_eq!(c.guard.interface, "ts1");
    assert_eq!(
        c.guard.approve_new,
        ApproveNew::Matching(vec![
            Selector::Id("nABC123CNTRL".into()),
            Selector::Tag("tag:ci".into()),
            Selector::Login("alice@example.com".into()),
        ])
    );
    assert_eq!(c.policy.guard, Some(c.guard.approve_new.clone()));
    let w = c.guard.warnings();
    // Review G15: a stable ID is the control plane's word too.
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].contains("stable ID") && w[1].contains("tag:ci") && w[2].contains("alice@example.com")
    );
    assert!(c
        .render()
        .contains("[guard]\nmode = \"enforce\"\ninterface = \"ts1\""));
    let c = Config::from_toml("[guard]\napprove_new = \"never\"\n", "config.toml").unwrap();
    assert_eq!(c.guard.approve_new, ApproveNew::Never);
    for (text, needle) in [
        (
            "[guard]\nmode = \"on\"\n",
            "config.toml:2: `on` is not one of \"off\", \"enforce\" (key `guard.mode`)",
        ),
        (
            "[guard]\ninterface = \"eth0; flush ruleset\"\n",
            "(key `guard.interface`)",
        ),
        (
            "[guard]\ninterface = \"0123456789abcdef\"\n",
            "is not an interface name",
        ),
        (
            "[guard]\napprove_new = \"always\"\n",
            "neither \"never\" nor a list",
        ),
        (
            "[guard]\napprove_new = [\"a b\"]\n",
            "(key `guard.approve_new`)",
        ),
        ("[guard]\nmodes = \"off\"\n", "unknown field `modes`"),
    ] {
        let e = err(text);
        assert!(e.contains(needle), "{text:?}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

/// `[web]`: a unix socket of the monitor's own, or loopback TCP with a token; with the guard off,
/// the viewers named; each mistake a one-line error at its line.
#[test]
fn web_section_errors_name_the_key_and_the_line() {
    let ok = Config::from_toml(
        "[web]\nlisten = \"unix:/run/tailscale-monitor-web/web.sock\"\nviewers = [\"nABC123CNTRL\"]\nurl = \"https://srv.example.ts.net/\"\n",
        "t.toml",
    )
    .unwrap();
    let w = ok.web.unwrap();
    assert_eq!(
        w.listen,
        crate::config::WebListen::Unix("/run/tailscale-monitor-web/web.sock".into())
    );
    assert_eq!(w.url.as_deref(), Some("https://srv.example.ts.net"));
    for (text, says) in [
        ("[web]\nlisten = \"unix:/run/x.sock\"\n", "t.toml:2: with the guard off, name the devices"),
        ("[web]\nlisten = \"unix:web.sock\"\nviewers = [\"n1\"]\n", "t.toml:2: a unix socket path must be absolute"),
        ("[web]\nlisten = \"0.0.0.0:8080\"\nviewers = [\"n1\"]\n", "t.toml:2: a TCP address must be on loopback"),
        ("[web]\nlisten = \"127.0.0.1:8080\"\nviewers = [\"n1\"]\n", "t.toml:2: a TCP listen address needs token_file"),
        ("[web]\nurl = \"https://x\"\n", "t.toml:2: needs [web] listen"),
        ("[web]\nlisten = \"unix:/run/x.sock\"\nviewers = [\"a b\"]\n", "t.toml:3: `a b` is not a stable ID"),
        ("[web]\nlisten = \"unix:/run/x.sock\"\nviewers = [\"n1\"]\nurl = \"javascript:alert(1)\"\n", "t.toml:4: an http(s) URL with a host"),
    ] {
        let e = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with(says), "{text:?}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

/// `[alerts] coalesce_window = "0s"` sends each change at once, as the README has it (it was
/// refused as "must be greater than zero"); `[[watch]] back_after` keeps its zero too.
#[test]
fn a_zero_coalesce_window_is_no_coalescing() {
    let zero = Config::from_toml("[alerts]\ncoalesce_window = \"0s\"\n", "t.toml").unwrap();
    assert_eq!(zero.coalesce_window, Duration::ZERO);
    let e = Config::from_toml("[alerts]\ncoalesce_window = \"soon\"\n", "t.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("t.toml:2: `soon` is not a duration"),
        "{e}"
    );
}

/// `[[export]]`: each mistake a one-line error at its line; the PEN is the owner's to give.
#[test]
fn export_tables_errors_name_the_key_and_the_line() {
    let c = Config::from_toml(
        "[[export]]\nkind = \"file\"\npath = \"/var/log/tsmon.json\"\nformat = \"ocsf\"\n\n[[export]]\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:514\"\npen = 12345\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.exports.len(), 2);
    assert_eq!(c.exports[1].name, "syslog");
    let relp = Config::from_toml(
        "[[export]]\nkind = \"syslog\"\naddress = \"relp://logs.example:2514\"\npen = 12345\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        relp.exports[0].sink,
        crate::config::ExportSink::Syslog {
            address: "logs.example:2514".into(),
            transport: crate::config::Transport::Relp,
            pen: 12345,
        }
    );
    let relp_tls = Config::from_toml(
        "[[export]]\nkind = \"syslog\"\naddress = \"relp+tls://logs.example:2514\"\npen = 12345\nca_file = \"/etc/ssl/logs-ca.pem\"\ncert_file = \"/etc/tailscale-monitor/client.pem\"\nkey_file = \"/etc/tailscale-monitor/client.key\"\n",
        "t.toml",
    )
    .unwrap();
    let sink = &relp_tls.exports[0].sink;
    assert_eq!(
        sink,
        &crate::config::ExportSink::Syslog {
            address: "logs.example:2514".into(),
            transport: crate::config::Transport::RelpTls(crate::config::TlsClient {
                ca_file: Some("/etc/ssl/logs-ca.pem".into()),
                identity: Some((
                    "/etc/tailscale-monitor/client.pem".into(),
                    "/etc/tailscale-monitor/client.key".into()
                )),
            }),
            pen: 12345,
        }
    );
    let crate::config::ExportSink::Syslog { transport, .. } = sink else {
        unreachable!()
    };
    assert!(transport.relp());
    assert!(transport.tls().is_some());
    // `config show` writes it back as it was given.
    let shown = relp_tls.render();
    assert!(
        shown.contains("address = \"relp+tls://logs.example:2514\"\npen = 12345\nca_file = \"/etc/ssl/logs-ca.pem\"\ncert_file = \"/etc/tailscale-monitor/client.pem\"\nkey_file = \"/etc/tailscale-monitor/client.key\"\n"),
        "{shown}"
    );
    for (text, says) in [
        (
            "[[export]]\nkind = \"file\"\n",
            "t.toml:1: an export of kind \"file\" needs `path`",
        ),
        (
            "[[export]]\nkind = \"file\"\npath = \"x.json\"\n",
            "t.toml:3: must be absolute",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:514\"\n",
            "t.toml:1: a syslog export needs `pen`",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"syslog://h:514\"\npen = 1\n",
            "t.toml:3: `syslog://h:514`: expected tcp://HOST:PORT",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"tcp://h:514\"\npen = 1\nca_file = \"/x\"\n",
            "t.toml:5: only a tls:// or relp+tls:// address uses ca_file",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"relp://h:2514\"\npen = 1\nca_file = \"/x\"\n",
            "t.toml:5: only a tls:// or relp+tls:// address uses ca_file",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"udp://h:514\"\npen = 1\ncert_file = \"/c\"\nkey_file = \"/k\"\n",
            "t.toml:5: only a tls:// or relp+tls:// address uses cert_file",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"tls://h:6514\"\npen = 1\ncert_file = \"/c\"\n",
            "t.toml:5: needs `key_file` beside it",
        ),
        (
            "[[export]]\nkind = \"syslog\"\naddress = \"relp+tls://h:2514\"\npen = 1\nkey_file = \"/k\"\n",
            "t.toml:5: needs `cert_file` beside it",
        ),
        (
            "[[export]]\nkind = \"kafka\"\n",
            "t.toml:2: `kafka` is not an export kind",
        ),
        (
            "[[export]]\nkind = \"journald\"\n\n[[export]]\nkind = \"journald\"\n",
            "t.toml:4: two [[export]] tables are named `journald`",
        ),
    ] {
        let e = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with(says), "{text:?}: {e}");
    }
}
