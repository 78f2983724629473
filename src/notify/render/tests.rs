//! Rendering against hostile names, storms and anchors.

use super::*;
use crate::model::{NodeKey, StableNodeId, UserId};

fn hostile() -> Event {
    let d = Device {
        id: StableNodeId("nEVIL".into()),
        node_id: Some(7),
        node_key: NodeKey("nodekey:ee".into()),
        hostname: "evil\r\nBcc: x@y <script>alert(1)</script>".into(),
        dns_name: "evil.ts.net.".into(),
        os: "linux\u{1b}[2J".into(),
        user_id: UserId(9),
        addresses: vec!["100.64.0.66".into()],
        tags: vec![],
        routes: vec![],
        exit_node: false,
        key_expiry: None,
        expired: false,
        created: None,
        is_self: false,
        shared: false,
    };
    let mut e = Event::new(
        EventKind::DeviceNew,
        Utc::now(),
        format!("New device {} joined", d.hostname),
    );
    e.user = Some(User {
        id: UserId(9),
        login: "m@x".into(),
        display_name: "Mallory <img src=x onerror=alert(1)>\u{202E}".into(),
    });
    e.device = Some(d);
    e
}

/// F17: a control plane's device ID and addresses are sanitized in the text body too.
#[test]
fn a_hostile_device_id_cannot_break_the_text_body() {
    let cx = Context::new("web-01");
    let mut e = hostile();
    let d = e.device.as_mut().unwrap();
    d.id = StableNodeId("nX\n\u{1b}[31mFAKE LINE".into());
    d.addresses = vec!["100.64.0.1\n\u{1b}[2Jinjected".into()];
    let base = Event::new(EventKind::MonitorBaseline, Utc::now(), "baseline");
    let mut base = base;
    base.devices = vec![e.device.clone().unwrap()];
    for ev in [&e, &base] {
        let r = render(&cx, &[ev]);
        assert!(!r.text.contains('\u{1b}'), "{}", r.text);
        assert!(!r.text.contains("\nFAKE LINE"), "{}", r.text);
        assert!(!r.text.contains("\ninjected"), "{}", r.text);
    }
}

/// F17: a device named like a login page is no link in its own alert (mail clients and
/// chats link bare domains and URLs on their own); the tailnet's own names stay as they are.
#[test]
fn a_url_shaped_name_is_no_link() {
    let cx = Context::new("web-01");
    for name in [
        "www.login-bank.com",
        "https://evil.example/login",
        "login.evil.example",
    ] {
        let mut e = hostile();
        let d = e.device.as_mut().unwrap();
        d.hostname = name.into();
        d.dns_name = "login-bank.example.ts.net.".into();
        e.summary = format!("New device {name} joined");
        let r = render(&cx, &[&e]);
        for part in [&r.subject, &r.text, &r.html] {
            assert!(!part.contains(name), "{name} in {part}");
        }
        assert!(r.text.contains("login-bank.example.ts.net"), "{}", r.text);
        assert!(r
            .text
            .contains("https://login.tailscale.com/admin/machines/100.64.0.66"));
        let mut one = String::new();
        event_text_unlinked(&mut one, &e);
        assert!(!one.contains(name), "{one}");
    }
    // What the monitor writes itself stays copyable.
    let mut e = hostile();
    e.fix =
        "run `systemctl enable --now tailscale-monitor-privileged.socket` (see install.sh)".into();
    let r = render(&cx, &[&e]);
    assert!(
        r.text
            .contains("tailscale-monitor-privileged.socket` (see install.sh)"),
        "{}",
        r.text
    );
}

#[test]
fn hostile_names_cannot_inject() {
    let cx = Context::new("web-01");
    let e = hostile();
    let r = render(&cx, &[&e]);
    assert!(!r.subject.contains('\r') && !r.subject.contains('\n'));
    assert!(r.subject.chars().count() <= SUBJECT_MAX + 1);
    assert!(!r.html.contains("<script>"), "{}", r.html);
    assert!(!r.html.contains("<img"), "{}", r.html);
    assert!(r.html.contains("&lt;script&gt;"));
    assert!(!r.text.contains('\u{1b}'));
    assert!(!r.text.contains('\u{202E}'));
    assert!(!r.text.contains("\r\nBcc"));
    assert!(r.text.contains("headscale nodes delete --identifier 7"));
    assert!(r
        .text
        .contains("https://login.tailscale.com/admin/machines/100.64.0.66"));
}

#[test]
fn a_storm_lists_every_device_and_details_only_the_first() {
    let cx = Context::new("web-01");
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            let mut e = hostile();
            e.summary = format!("New device dev-{i} joined");
            e
        })
        .collect();
    let refs: Vec<&Event> = events.iter().collect();
    let r = render(&cx, &refs);
    assert!(
        r.text.contains("Summary: 1000 × device.new"),
        "{}",
        &r.text[..300]
    );
    for i in [0, 500, 999] {
        assert!(r.text.contains(&format!("New device dev-{i} joined")));
        assert!(r.html.contains(&format!("New device dev-{i} joined")));
    }
    assert_eq!(
        r.text.matches("What to do:").count(),
        STORM,
        "details for the first {STORM} only"
    );
}

#[test]
fn the_log_anchor_ends_every_message_that_has_one() {
    let e = Event::new(EventKind::DeviceRemoved, Utc::now(), "Device x left");
    let mut cx = Context::new("web-01");
    assert!(!render(&cx, &[&e]).text.contains("Log anchor"));
    cx.anchor = Some(Anchor {
        event_id: 7,
        hash: "ab".repeat(32),
    });
    let r = render(&cx, &[&e]);
    let want = format!("Log anchor: 7:{}", "ab".repeat(32));
    assert!(
        r.text.contains(&want) && r.html.contains("Log anchor: <code>7:"),
        "{}",
        r.text
    );
}

#[test]
fn subject_names_the_worst_event_and_counts_the_rest() {
    let cx = Context::new("web-01");
    let a = Event::new(EventKind::DeviceRemoved, Utc::now(), "Device x left");
    let b = hostile();
    let s = subject(&cx, &[&a, &b]);
    assert!(
        s.starts_with("[tailscale-monitor] web-01 CRITICAL: New device evil"),
        "{s}"
    );
    assert!(s.ends_with("(+1 more)"), "{s}");
}

/// One walk: every section the blocks hold is in both the text and the HTML, each value escaped
/// for its syntax (the writers never look at the event itself).
#[test]
fn text_and_html_write_the_same_blocks() {
    let mut e = hostile();
    e.changes = vec![crate::model::Change {
        field: "tags".into(),
        old: "(none)".into(),
        new: "tag:<b>".into(),
    }];
    e.detail = "a note & more".into();
    e.users = vec![e.user.clone().unwrap()];
    e.devices = vec![e.device.clone().unwrap()];
    e.diff = vec!["+ added".into(), "- removed".into()];
    e.access = Some(vec![]);
    let r = render(&Context::new("web-01"), &[&e]);
    for b in blocks::blocks(&e) {
        let (title, value) = match &b {
            blocks::Block::Row { label, value } => (label.to_string(), value.clone()),
            blocks::Block::List { title, items } => (title.clone(), items[0].clone()),
            blocks::Block::Table {
                title, rows, empty, ..
            } => match rows.first() {
                Some(row) => (title.clone(), row[0].clone()),
                None => (
                    title.clone(),
                    vec![blocks::Piece::Fixed(empty.unwrap().into())],
                ),
            },
            _ => continue,
        };
        assert!(r.text.contains(&title), "{title} in the text");
        assert!(r.html.contains(&title), "{title} in the HTML");
        for p in value {
            if let blocks::Piece::Value(v, max) = p {
                assert!(r.text.contains(&sanitize::line(&v, max)), "{v} in the text");
                assert!(r.html.contains(&sanitize::html(&v, max)), "{v} in the HTML");
            }
        }
    }
    assert!(!r.html.contains("<b>\""), "{}", r.html);
    assert!(r
        .text
        .contains("Nobody: the policy lets no other device in."));
}

/// `[web] url`: each event links to its device's page of the web view, the stable ID
/// percent-encoded (a hostile ID cannot shape the URL), and an event without a device to the
/// timeline.
#[test]
fn alerts_link_to_the_web_view() {
    let mut cx = Context::new("web-01");
    cx.web = Some("https://srv.example.ts.net".into());
    let mut e = hostile();
    e.device.as_mut().unwrap().id = StableNodeId("nE\"><a href=x>".into());
    let r = render(&cx, &[&e]);
    let link = "https://srv.example.ts.net/devices/nE%22%3E%3Ca%20href%3Dx%3E";
    assert!(
        r.text.contains(&format!("Web view:   {link}")),
        "{}",
        r.text
    );
    assert!(
        r.html.contains(&format!("<a href=\"{link}\">")),
        "{}",
        r.html
    );
    let base = Event::new(EventKind::MonitorBaseline, Utc::now(), "baseline");
    let r = render(&cx, &[&base]);
    assert!(r.text.contains("https://srv.example.ts.net/timeline"));
    let r = render(&Context::new("web-01"), &[&base]);
    assert!(!r.text.contains("Web view"), "no [web] url, no link");
}
