//! What strangers put in names reaches no channel as markup, and no secret reaches anything the
//! monitor prints.

use crate::support;

use support::emulator::{self, Emulator};
use support::receiver::Receiver;
use support::{webhook, Monitor};

/// What whoever registers a device can put in its name: mentions, masked links, CR/LF, bidi and
/// zero-width characters, terminal escapes, and 10 kB of it.
const HOSTILE: &str = "@everyone @here <!channel> <@U024BE7LH> <https://evil.example|login-page> [click](https://evil.example/login) **bold** `code` \r\nBcc: x@y \u{202E}gpj.exe \u{200B}zero\u{200B}width \u{1b}[31mred\u{1b}[0m";

fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

#[test]
fn a_hostile_corpus_reaches_no_channel_as_markup() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let token = dir.path().join("token");
    std::fs::write(&token, "123:ABC\n").unwrap();
    support::private(&token);
    let exec_out = dir.path().join("exec.json");
    let u = &rx.url;
    let config = format!(
        "{}[[notify]]\nkind = \"ntfy\"\nurl = \"{u}/alerts\"\n\
         [[notify]]\nkind = \"slack\"\nurl = \"{u}/slack\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"{u}/discord\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"{u}/\"\ntoken_file = \"{tok}\"\nchat_id = \"-10042\"\n\
         [[notify]]\nkind = \"gotify\"\nurl = \"{u}/gotify/\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"alertmanager\"\nurl = \"{u}/am/\"\n\
         [[notify]]\nkind = \"teams\"\nurl = \"{u}/teams\"\n\
         [[notify]]\nkind = \"mattermost\"\nurl = \"{u}/mattermost\"\n\
         [[notify]]\nkind = \"googlechat\"\nurl = \"{u}/gchat\"\n\
         [[notify]]\nkind = \"pagerduty\"\nurl = \"{u}/pd\"\nrouting_key_file = \"{tok}\"\n\
         [[notify]]\nkind = \"pushover\"\nurl = \"{u}/po\"\ntoken_file = \"{tok}\"\nuser_key_file = \"{tok}\"\n\
         [[notify]]\nkind = \"matrix\"\nhomeserver = \"{u}/\"\nroom = \"!room:test\"\ntoken_file = \"{tok}\"\n\
         [[notify]]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"cat > {out}\"]\n",
        webhook("hook", &format!("{u}/hook")),
        tok = token.display(),
        out = exec_out.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    assert_eq!(mon.check().code, 0);
    let long = format!("{HOSTILE} {}", "A".repeat(10_000));
    let mut doc = emulator::tailnet();
    emulator::add_user(&mut doc, 7003, "mallory@evil.example", &long);
    emulator::add_peer(&mut doc, "nHOSTILECNTRL", &long, 7003, "100.101.1.88");
    emu.set_status(doc);
    assert_eq!(mon.check().code, 2);

    // Slack: exactly Slack's escaping of the three characters; no mention or link can form.
    let slack = rx.at("/slack")[1].json();
    let text = slack["text"].as_str().unwrap();
    for raw in [
        "<!channel>",
        "<@U024BE7LH>",
        "<https://evil.example|login-page>",
    ] {
        assert!(!text.contains(raw), "{raw} reached Slack");
    }
    assert!(text.contains("@everyone @here &lt;!channel&gt; &lt;@U024BE7LH&gt; &lt;https\u{A789}//evil\u{2024}example|login-page&gt; [click](https\u{A789}//evil\u{2024}example/login)"), "{text}");
    assert_eq!(slack["unfurl_links"], false);
    // F17: no chat gets the hostile URL as a word it would link on its own.
    for path in [
        "/slack",
        "/discord",
        "/bot123:ABC/sendMessage",
        "/gotify/message",
        "/teams",
        "/mattermost",
        "/gchat",
        "/po",
    ] {
        let body = rx.at(path)[1].text();
        assert!(
            !body.contains("https://evil.example"),
            "a link in {path}: {body}"
        );
        assert!(
            !body.contains("https:\\/\\/evil.example"),
            "a link in {path}: {body}"
        );
    }

    // Discord: no mention is parsed, every Markdown character escaped (no masked link).
    let discord = rx.at("/discord")[1].json();
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({"parse": []})
    );
    let content = discord["content"].as_str().unwrap();
    assert!(content.contains("\\@everyone \\@here \\<!channel\\> \\<\\@U024BE7LH\\> \\<https\u{A789}//evil\u{2024}example\\|login\\-page\\> \\[click\\]\\(https\u{A789}//evil\u{2024}example/login\\) \\*\\*bold\\*\\* \\`code\\`"), "{content}");
    assert!(content.chars().count() <= 2000);

    // Telegram: plain text (no parse_mode), Gotify and ntfy without Markdown.
    let tg = rx.at("/bot123:ABC/sendMessage")[1].json();
    assert!(tg.get("parse_mode").is_none(), "{tg}");
    assert!(tg["text"].as_str().unwrap().chars().count() <= 4096);
    let gotify = rx.at("/gotify/message")[1].json();
    assert!(gotify.get("extras").is_none(), "{gotify}");
    let ntfy = &rx.at("/alerts")[1];
    assert!(!ntfy.headers.contains_key("markdown"), "{:?}", ntfy.headers);
    assert!(!ntfy.headers["title"].contains('\n'));

    // Teams: an Adaptive Card whose text is Markdown-escaped.
    let teams = rx.at("/teams")[1].json();
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let body_text = card["content"]["body"][1]["text"].as_str().unwrap();
    assert!(
        body_text.contains("\\[click\\]\\(https\u{A789}//evil\u{2024}example/login\\)"),
        "{body_text}"
    );
    // Mattermost: Slack's escaping, Markdown escaped, and no @ left to mention with.
    let mm = rx.at("/mattermost")[1].json();
    let mm_text = mm["text"].as_str().unwrap();
    assert!(!mm_text.contains('@'), "{mm_text}");
    assert!(
        mm_text.contains("\u{FF20}everyone \u{FF20}here &lt;!channel&gt;"),
        "{mm_text}"
    );
    let gchat = rx.at("/gchat")[1].json();
    assert!(gchat["text"]
        .as_str()
        .unwrap()
        .contains("&lt;!channel&gt; &lt;\u{40}U024BE7LH&gt;"));
    // PagerDuty: one trigger per event, deduplicated per host, kind and device.
    let pd: Vec<serde_json::Value> = rx.at("/pd").iter().map(|r| r.json()).collect();
    let dev = pd
        .iter()
        .find(|v| v["payload"]["class"] == "device.new")
        .expect("a trigger for device.new");
    assert_eq!(dev["event_action"], "trigger");
    assert_eq!(dev["payload"]["severity"], "critical");
    assert!(dev["dedup_key"]
        .as_str()
        .unwrap()
        .ends_with("/device.new/nHOSTILECNTRL"));
    // Pushover: a form, priority by severity.
    let po = rx.at("/po").last().unwrap().text();
    assert!(po.contains("priority=1"), "{po}");
    // Matrix: HTML-escaped formatted body and no mentions at all.
    let mx = rx
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .starts_with("/_matrix/client/v3/rooms/%21room%3Atest/send/m.room.message/tsm-")
        })
        .collect::<Vec<_>>();
    assert_eq!(
        mx.len(),
        2,
        "baseline and alert: {:?}",
        rx.requests()
            .iter()
            .map(|r| r.path.clone())
            .filter(|p| p.contains("matrix"))
            .collect::<Vec<_>>()
    );
    assert_eq!(mx[1].method, "PUT");
    let m = mx[1].json();
    assert_eq!(m["m.mentions"], serde_json::json!({}));
    assert!(m["formatted_body"]
        .as_str()
        .unwrap()
        .contains("@everyone @here &lt;!channel&gt;"));

    // No channel gets a control, bidi or zero-width character, in any string.
    let exec = std::fs::read_to_string(&exec_out).unwrap();
    for (name, body) in [
        ("slack", slack.to_string()),
        ("discord", discord.to_string()),
        ("telegram", tg.to_string()),
        ("gotify", gotify.to_string()),
        ("ntfy", ntfy.text()),
        (
            "alertmanager",
            rx.at("/am/api/v2/alerts").last().unwrap().text(),
        ),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
        let mut strings = vec![];
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(m) => m.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(&v, &mut strings);
        for s in strings {
            assert!(!s.chars().any(forbidden), "{name}: {s:?}");
            assert!(!s.contains("\nBcc:"), "{name}: a line break from the name");
        }
    }
    // The webhook and exec carry the raw name as JSON data (escaped by JSON itself): consumers
    // get the facts; nothing there is markup.
    let raw_name = |v: serde_json::Value| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["device"]["hostname"] == long.as_str())
    };
    assert!(
        raw_name(rx.at("/hook")[1].json()),
        "webhook: the name as data"
    );
    assert!(
        raw_name(serde_json::from_str(&exec).unwrap()),
        "exec: the name as data"
    );

    // test-notify reaches every kind.
    let before = rx.requests().len();
    let r = mon.run(&["test-notify"]);
    assert_eq!(r.code, 0, "{r:?}");
    for kind in [
        "teams",
        "mattermost",
        "googlechat",
        "pagerduty",
        "pushover",
        "matrix",
    ] {
        assert!(r.stdout.contains(&format!("({kind}): ok")), "{kind}: {r:?}");
    }
    assert!(rx.requests().len() >= before + 12);
}

/// One secret of each kind in the config; none of them may appear in anything the monitor prints:
/// `config check`, `test-notify`, its logs (a failed POST included), `/metrics`.
#[test]
fn secrets_never_appear_in_what_the_monitor_prints() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let hold = support::smtp::closed_port();
    let p = hold.port;
    let token = dir.path().join("token");
    std::fs::write(&token, "TOKENFILESECRET4\n").unwrap();
    support::private(&token);
    let secrets = [
        "SLACKSECRET1",
        "DISCORDSECRET2",
        "hunter2",
        "QUERYSECRET3",
        "TOKENFILESECRET4",
        "SMTPSECRET5",
    ];
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, "SMTPSECRET5\n").unwrap();
    support::private(&pw);
    let config = format!(
        "[[notify]]\nkind = \"slack\"\nurl = \"http://127.0.0.1:{p}/services/T000/B000/SLACKSECRET1\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"discord\"\nurl = \"http://127.0.0.1:{p}/api/webhooks/123/DISCORDSECRET2\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"http://alice:hunter2@127.0.0.1:{p}/x?token=QUERYSECRET3&team=ops\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"telegram\"\napi_url = \"http://127.0.0.1:{p}/\"\ntoken_file = \"{t}\"\nchat_id = \"1\"\ntimeout = \"2s\"\n\
         [[notify]]\nkind = \"email\"\nto = [\"a@example.com\"]\nfrom = \"m@example.com\"\nsmtp = \"smtp://mon@127.0.0.1:{p}\"\npassword_file = \"{pw}\"\ntimeout = \"2s\"\n",
        t = token.display(),
        pw = pw.display()
    );
    let mon = Monitor::new(&emu.socket, &config);
    let mut printed = String::new();
    for args in [
        &["config", "check"][..],
        &["test-notify"][..],
        &["check"][..],
    ] {
        let r: support::Run = mon
            .cmd(args)
            .env("TAILSCALE_MONITOR_LOG", "debug")
            .output()
            .unwrap()
            .into();
        printed += &r.stdout;
        printed += &r.stderr;
    }
    assert!(printed.contains("REDACTED"), "{printed}");
    assert!(printed.contains("FAILED"), "test-notify ran: {printed}");
    let (daemon, port) = mon.spawn_run_with_metrics();
    assert!(mon.wait_for_event("monitor.baseline", 60));
    let (_, metrics) = support::http_get(port, "/metrics").unwrap();
    printed += &metrics;
    drop(daemon);
    for s in secrets {
        assert!(!printed.contains(s), "{s} printed in:\n{printed}");
    }
}
