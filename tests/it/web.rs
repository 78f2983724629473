//! The web view (`[web]`) served by `run` on its unix socket: who may look (the node behind
//! tailscaled's `X-Forwarded-For`, never the identity headers), what each page shows, the headers
//! every answer carries, and the events a refusal and a new viewer raise.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support;
use support::emulator::{self, Emulator};
use support::real::{self, Headscale, Node};
use support::receiver::{hook_kinds, with_receiver, Receiver};
use support::{unix_get as get, webhook, Monitor};

/// alice-laptop (alice@example.com) in the emulator's tailnet, and bob-desktop.
const ALICE_LAPTOP: (&str, &str) = ("n00005A9ACNTRL", "100.101.1.2");
const BOB_DESKTOP: &str = "100.101.1.5";

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A monitor whose `[web]` listens on a socket in its own directory, with alice-laptop as the one
/// viewer (the guard is off), and a webhook for the events.
fn with_web() -> (tempfile::TempDir, Emulator, Receiver, Monitor, PathBuf) {
    let (d, emu, rx, mon) = with_receiver(|url| {
        webhook("hook", &format!("{url}/hook"))
            + &format!(
                "\n[web]\nlisten = \"unix:{{DIR}}/web/web.sock\"\nviewers = [\"{}\"]\nurl = \"https://srv.example.ts.net\"\n",
                ALICE_LAPTOP.0
            )
    });
    let sock = mon.dir.path().join("web/web.sock");
    let text = std::fs::read_to_string(&mon.config)
        .unwrap()
        .replace("{DIR}", &mon.dir.path().display().to_string());
    std::fs::write(&mon.config, text).unwrap();
    (d, emu, rx, mon, sock)
}

#[test]
fn a_listed_viewer_sees_the_pages_and_anyone_else_is_refused_and_alerted() {
    let (_d, emu, rx, mon, sock) = with_web();
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    wait_for(&sock);
    let mode = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let alice = [("X-Forwarded-For", ALICE_LAPTOP.1)];
    let (code, head, body) = get(&sock, "/timeline", &alice);
    assert_eq!(code, 200, "{head}{body}");
    assert!(body.contains("monitor.baseline"), "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(!body.contains("<script"), "no script at all");
    for (page, shows) in [
        ("/devices", "bob-desktop"),
        ("/devices/n00005C23CNTRL", "bob@example.com"),
        ("/access", "source(s) may reach"),
        ("/posture", "TN-01"),
        ("/guard", "Approved (0)"),
        ("/health", "Outbox"),
        ("/timeline?kind=monitor.baseline", "monitor.baseline"),
    ] {
        let (code, _, body) = get(&sock, page, &alice);
        assert_eq!(code, 200, "{page}: {body}");
        assert!(body.contains(shows), "{page} shows {shows}: {body}");
    }
    let (code, _, _) = get(&sock, "/devices/nNOSUCH", &alice);
    assert_eq!(code, 404);
    // The baseline event on its own page, as its alert said it, with its anchor.
    let (code, _, body) = get(&sock, "/events/1", &alice);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("monitor.baseline") && body.contains("What to do"),
        "{body}"
    );
    assert!(body.contains("Log anchor: <code>1:"), "{body}");
    let (code, _, _) = get(&sock, "/events/999999", &alice);
    assert_eq!(code, 404);

    // Bob's desktop is on the tailnet but no viewer; a request without tailscaled's header, with
    // only the identity headers the control plane fills, names no one.
    let (code, _, body) = get(&sock, "/timeline", &[("X-Forwarded-For", BOB_DESKTOP)]);
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains("monitor.baseline"));
    let (code, _, _) = get(
        &sock,
        "/timeline",
        &[
            ("Tailscale-User-Login", "alice@example.com"),
            ("Tailscale-User-Name", "Alice"),
        ],
    );
    assert_eq!(code, 403);
    // Twice from Bob within the hour: one alert.
    let (code, _, _) = get(&sock, "/devices", &[("X-Forwarded-For", BOB_DESKTOP)]);
    assert_eq!(code, 403);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kinds = hook_kinds(&rx);
        let refused = kinds.iter().filter(|k| *k == "web.refused").count();
        if refused >= 2 && kinds.iter().any(|k| k == "web.new_viewer") {
            assert_eq!(
                refused, 2,
                "Bob once, the header-only request once: {kinds:?}"
            );
            assert_eq!(
                kinds.iter().filter(|k| *k == "web.new_viewer").count(),
                1,
                "{kinds:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{kinds:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = emu;
}

/// Hostile names reach the pages as text: no element, no attribute, no script of theirs.
#[test]
fn hostile_names_are_text_on_every_page() {
    let (_d, emu, rx, mon, sock) = with_web();
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    wait_for(&sock);
    let mut doc = emulator::tailnet();
    emulator::add_peer(
        &mut doc,
        "nEVIL\"><script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        6201,
        "100.102.0.9",
    );
    emu.set_status(doc);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    assert!(rx.wait("/hook", 2, 60).len() >= 2, "the join is delivered");
    let alice = [("X-Forwarded-For", ALICE_LAPTOP.1)];
    for page in ["/timeline", "/devices"] {
        let (code, _, body) = get(&sock, page, &alice);
        assert_eq!(code, 200, "{page}");
        assert!(
            body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{page}: {body}"
        );
        assert!(!body.contains("<img"), "{page}");
        assert!(!body.contains("<script"), "{page}");
    }
    let (code, _, body) = get(&sock, "/timeline", &alice);
    assert_eq!(code, 200);
    assert!(
        body.contains("/devices/nEVIL%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E"),
        "the ID is percent-encoded in the link: {body}"
    );
}

/// The monitor's own user reaching the socket (its directory is the monitor's) is not
/// tailscaled: refused, whatever headers it sends.
#[test]
#[ignore = "needs the test accounts (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn the_monitors_own_user_on_the_socket_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (d, emu, rx, mon, sock) = with_web();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&emu.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mon = mon.run_as("tmtest-mon");
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    wait_for(&sock);
    // As the monitor's user: curl over the unix socket, with the headers of an approved viewer.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "tmtest-mon",
            "--regid",
            "tmtest-mon",
            "--init-groups",
            "--",
        ])
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(&sock)
        .args([
            "-H",
            &format!("X-Forwarded-For: {}", ALICE_LAPTOP.1),
            "-H",
            "Tailscale-User-Login: alice@example.com",
            "http://localhost/timeline",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{out:?}");
    // Root (as tailscaled) gets the page.
    let (code, _, _) = get(&sock, "/timeline", &[("X-Forwarded-For", ALICE_LAPTOP.1)]);
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook_kinds(&rx).iter().any(|k| k == "web.refused") {
        assert!(Instant::now() < deadline, "{:?}", hook_kinds(&rx));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What tailscaled's `tailscale serve` does for a browser on the tailnet, on loopback: each
/// request is forwarded to the view's unix socket (as root, like tailscaled) with the viewer's
/// address in `X-Forwarded-For` and any such header or identity header of the client's removed.
/// Returns the port it listens on.
fn serve_like_tailscaled(socket: PathBuf, viewer: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
                let mut out = format!("{}\r\n", lines.next().unwrap_or_default());
                for l in lines {
                    let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                    if name == "connection"
                        || name.starts_with("x-forwarded-")
                        || name.starts_with("tailscale-")
                    {
                        continue;
                    }
                    out += &format!("{l}\r\n");
                }
                out += &format!("X-Forwarded-For: {viewer}\r\nConnection: close\r\n\r\n");
                let Ok(mut u) = UnixStream::connect(&socket) else {
                    return;
                };
                if u.write_all(out.as_bytes()).is_err() {
                    return;
                }
                let _ = std::io::copy(&mut u, &mut c);
            });
        }
    });
    port
}

/// The pages in Debian's Chromium (chromium-driver, Selenium from PyPI), against a history that
/// holds the hostile-name corpus: each shows what it should, no injected script ran, and the
/// console shows no Content-Security-Policy violation (an injected inline script or handler the
/// policy had to block would be one).
#[test]
#[ignore = "needs Chromium, chromium-driver and Selenium (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn the_pages_in_a_real_browser_show_hostile_names_as_text() {
    let (_d, emu, rx, mon, sock) = with_web();
    let _daemon = mon.spawn_run();
    assert_eq!(rx.wait("/hook", 1, 60).len(), 1, "baseline");
    wait_for(&sock);
    let mut doc = emulator::tailnet();
    let hostile = [
        ("nXSS1CNTRL", "<script>window.__pwned=1</script>"),
        ("nXSS2CNTRL", "\"><img src=x onerror=\"window.__pwned=2\">"),
        (
            "nXSS3CNTRL",
            "javascript:window.__pwned=3//@everyone <!channel>",
        ),
    ];
    for (n, (id, name)) in hostile.iter().enumerate() {
        emulator::add_peer(&mut doc, id, name, 6201, &format!("100.102.0.{}", n + 10));
    }
    emu.set_status(doc);
    emu.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    assert!(
        rx.wait("/hook", 2, 60).len() >= 2,
        "the joins are delivered"
    );

    let port = serve_like_tailscaled(sock.clone(), ALICE_LAPTOP.1);
    let base = format!("http://127.0.0.1:{port}");
    let pages = [
        ("/timeline", "device.new"),
        ("/devices", "bob-desktop"),
        ("/devices/nXSS2CNTRL", "In this server's view"),
        ("/access", "Who can reach this server"),
        ("/posture", "TN-01"),
        ("/guard", "Approved"),
        ("/health", "Outbox"),
    ];
    let urls: Vec<String> = pages.iter().map(|(p, _)| format!("{base}{p}")).collect();
    let shown = browse("", &urls);
    assert_eq!(shown.len(), pages.len(), "{shown:?}");
    for ((page, shows), s) in pages.iter().zip(&shown) {
        let text = s["text"].as_str().unwrap();
        assert!(text.contains(shows), "{page} shows {shows}: {text}");
        assert!(s["pwned"].is_null(), "{page}: an injected script ran: {s}");
        let console: Vec<&str> = s["console"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m.as_str())
            .collect();
        assert!(
            !console
                .iter()
                .any(|m| m.contains("Content Security Policy") || m.contains("Refused to")),
            "{page}: {console:?}"
        );
        for link in s["links"].as_array().unwrap() {
            let l = link.as_str().unwrap_or_default();
            assert!(l.starts_with(&base), "{page}: a link off the view: {l}");
        }
    }
    // The names are there, as text.
    let devices = shown[1]["text"].as_str().unwrap();
    for (_, name) in hostile {
        assert!(devices.contains(name.trim()), "{name} in {devices}");
    }
}

/// Runs `browser.py` on `urls` through `proxy` ("" for none); one JSON object per page.
fn browse(proxy: &str, urls: &[String]) -> Vec<serde_json::Value> {
    let cache = std::env::var("TM_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tailscale-monitor",
            std::env::var("HOME").unwrap()
        )
    });
    let out = std::process::Command::new(format!("{cache}/venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/browser.py"
        ))
        .arg(std::env::var("TM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()))
        .arg(std::env::var("TM_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into()))
        .arg(proxy)
        .args(urls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole way on real daemons (each tailscaled release the suite names, headscale): the server's `tailscale serve`
/// proxies to the view's unix socket; a viewer node of the owner reaches it through its own
/// tailscaled (SOCKS5, by MagicDNS name) with curl and with Chromium and sees the timeline; a
/// node of another user gets 403 and `web.refused`; the monitor's own user sending the owner's
/// identity header straight to the socket is refused.
#[test]
#[ignore = "needs real tailscaled, headscale and Chromium (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn through_tailscale_serve_tailscale_1_104() {
    serve_story(real::cur_release());
}

#[test]
#[ignore = "needs real tailscaled, headscale and Chromium (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn through_tailscale_serve_tailscale_1_102() {
    serve_story(real::new_release());
}

#[test]
#[ignore = "needs real tailscaled, headscale and Chromium (tests/setup/install-deps.sh): run tests/run-all.sh"]
fn through_tailscale_serve_tailscale_1_96() {
    serve_story(real::old_release());
}

fn serve_story(rel: real::Release) {
    let hs = Headscale::start();
    let owner = hs.user("owner");
    let other = hs.user("other");
    let srv = Node::join(&rel, &hs, "srv", &hs.preauth_key(owner));
    let socks = ["--socks5-server=127.0.0.1:0"];
    let viewer = Node::join_with(&rel, &hs.url, "viewer", &hs.preauth_key(owner), &socks);
    let stranger = Node::join_with(&rel, &hs.url, "stranger", &hs.preauth_key(other), &socks);
    let (viewer_id, _) = viewer.identity();
    let (_, srv_name) = srv.identity();

    let (mon, _relay) = real::monitor_for(
        &rel,
        &srv,
        &format!("[web]\nlisten = \"unix:{{DIR}}/web/web.sock\"\nviewers = [\"{viewer_id}\"]\n"),
    );
    let sock = mon.dir.path().join("web/web.sock");
    let text = std::fs::read_to_string(&mon.config)
        .unwrap()
        .replace("{DIR}", &mon.dir.path().display().to_string());
    std::fs::write(&mon.config, text).unwrap();
    let _daemon = mon.spawn_run();
    wait_for(&sock);
    let served = srv.cli(&[
        "serve",
        "--bg",
        "--http=80",
        &format!("unix:{}", sock.display()),
    ]);
    assert!(served.status.success(), "{served:?}");

    let url = format!("http://{srv_name}/timeline");
    let curl = |node: &Node| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-m",
                    "20",
                    "-w",
                    "\n%{http_code}",
                    "--socks5-hostname",
                ])
                .arg(format!("127.0.0.1:{}", node.socks5_port()))
                .arg(&url)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
            // Until the peers have each other in their netmaps, the proxy cannot connect.
            if code != "000" && code != "502" || Instant::now() > deadline {
                return (code.to_owned(), body.to_owned());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let (code, body) = curl(&viewer);
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains("Timeline") && body.contains("monitor.baseline"),
        "{body}"
    );
    let (code, body) = curl(&stranger);
    assert_eq!(code, "403", "{body}");
    assert!(!body.contains("monitor.baseline"));

    // Chromium, through the viewer's tailscaled, by name.
    let shown = browse(
        &format!("socks5://127.0.0.1:{}", viewer.socks5_port()),
        &[url.clone(), format!("http://{srv_name}/devices")],
    );
    assert!(
        shown[0]["text"]
            .as_str()
            .unwrap()
            .contains("monitor.baseline"),
        "{shown:?}"
    );
    assert!(
        shown[1]["text"].as_str().unwrap().contains("stranger"),
        "{shown:?}"
    );
    assert!(shown.iter().all(|s| s["pwned"].is_null()));

    // The monitor's own user, straight to the socket, with the owner's identity headers.
    if rel.netmap_off_the_bus() {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "tmtest-mon",
                "--regid",
                "tmtest-mon",
                "--init-groups",
                "--",
            ])
            .args([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&sock)
            .args([
                "-H",
                "Tailscale-User-Login: owner",
                "-H",
                &format!("X-Forwarded-For: {}", viewer.ip()),
                "http://localhost/timeline",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{out:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while mon.count_events("web.refused") < 1 || mon.count_events("web.new_viewer") < 1 {
        assert!(Instant::now() < deadline, "{:?}", mon.events());
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = srv.cli(&["serve", "--http=80", "off"]);
}

/// With the guard enforcing, its approvals decide: a device approved with its node key may look,
/// the same stable ID with another key (a key swapped in) may not, and `[web] viewers` is not
/// needed. (The approvals are what the root side mirrored into the store; here they are written
/// there as the mirror does.)
#[test]
fn with_the_guard_on_an_approval_with_the_node_key_decides() {
    let (_d, emu, rx, mon) = with_receiver(|url| {
        webhook("hook", &format!("{url}/hook"))
            + "\n[guard]\nmode = \"enforce\"\n\n[web]\nlisten = \"unix:{DIR}/web/web.sock\"\n"
    });
    let sock = mon.dir.path().join("web/web.sock");
    let text = std::fs::read_to_string(&mon.config)
        .unwrap()
        .replace("{DIR}", &mon.dir.path().display().to_string());
    std::fs::write(&mon.config, text).unwrap();
    let _daemon = mon.spawn_run();
    assert!(!rx.wait("/hook", 1, 60).is_empty(), "baseline");
    wait_for(&sock);
    let alice = [("X-Forwarded-For", ALICE_LAPTOP.1)];
    let (code, _, _) = get(&sock, "/timeline", &alice);
    assert_eq!(code, 403, "not approved yet");
    let db = rusqlite::Connection::open(mon.dir.path().join("state/state.db")).unwrap();
    db.execute(
        "INSERT INTO guard_approved (device_id, at, by, node_key, routes) VALUES (?1, '2026-12-07T00:00:00Z', 'root', ?2, '[]')",
        [ALICE_LAPTOP.0, "nodekey:00000000000000000000000000000000000000000000000000009f3a00001eef"],
    )
    .unwrap();
    let (code, _, body) = get(&sock, "/guard", &alice);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("Approved (1)"), "{body}");
    db.execute(
        "UPDATE guard_approved SET node_key = 'nodekey:ffff' WHERE device_id = ?1",
        [ALICE_LAPTOP.0],
    )
    .unwrap();
    let (code, _, _) = get(&sock, "/timeline", &alice);
    assert_eq!(code, 403, "another node key is another device");
    let _ = emu;
}
