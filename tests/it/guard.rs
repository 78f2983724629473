//! The guard on real daemons: tailscaled 1.104.2 in kernel TUN mode in namespaces this test
//! creates, real headscale, real nftables, the real privileged relay (as root, inside the
//! server's namespace, where its `nft` runs), and a real SMTP server.

use std::time::{Duration, Instant};

use crate::support::netns::{
    connects_within, guarded, table_exists, Bridge, KernelNode, Netns, BEHIND, PORT,
};
use crate::support::real::{cur_release, Headscale, Node};
use crate::support::smtp::{count, wait_mail, Smtp};
use crate::support::{email_channel, Monitor};

#[test]
#[ignore = "needs root, real tailscaled/headscale and nftables: run tests/run-all.sh"]
fn only_approved_devices_reach_the_server_whatever_the_control_plane_says() {
    let rel = cur_release();
    let hs = Headscale::start();
    let bridge = Bridge::start(&hs);
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let mut srv = KernelNode::join(&rel, &bridge, "srv", 1, &key, &[]);
    let laptop = KernelNode::join(&rel, &bridge, "laptop", 2, &key, &[]);
    let srv_ip = srv.ip();
    srv.ns.listen(PORT);

    // Before the guard: the tailnet (headscale's allow-all default) lets the laptop in.
    assert!(
        connects_within(&laptop.ns, &srv_ip, 90).is_some(),
        "the laptop never reached the server over the tailnet"
    );

    let smtp = Smtp::start();
    let g = guarded(
        &mut srv.ns,
        &srv.socket.clone(),
        &(email_channel(smtp.port)
            + "\n[daemon]\nbatch_window = \"1ms\"\n\n[guard]\nmode = \"enforce\"\n"),
    );
    let (mon, _relay, _dir) = (g.mon, g.relay, g.dir);
    // Enforce before `guard init`: nobody is locked out, and the owner is told why.
    let r = mon.check();
    assert_eq!(r.code, 2, "not in force is critical: {r:?}");
    wait_mail(&smtp, "guard.unenforced (not initialized)", 30, |m| {
        m.text.contains("guard.unenforced") && m.text.contains("guard init")
    });
    assert!(!table_exists(&srv.ns), "no table before guard init");
    let r = mon.run(&["guard", "init"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(table_exists(&srv.ns));
    assert!(
        connects_within(&laptop.ns, &srv_ip, 30).is_some(),
        "an approved device reaches the server"
    );
    let r = mon.run(&["guard", "status"]);
    assert!(
        r.stdout
            .contains("ENFORCED: on the kernel path, only approved devices and their approved routes reach this server on tailscale0")
            && r.stdout.contains("approved (1):")
            && r.stdout.contains("laptop"),
        "{r:?}"
    );

    let daemon = mon.spawn_run();
    // A node of a new user joins; headscale's policy lets it reach the server.
    let mallory = hs.user("mallory");
    let mkey = hs.preauth_key(mallory);
    let evil = KernelNode::join(&rel, &bridge, "evil", 3, &mkey, &[]);
    let evil_ip = evil.ip();
    let m = wait_mail(&smtp, "device.new evil", 90, |m| {
        m.text.contains("New device evil")
    });
    assert!(
        m.text.contains(
            "Blocked at this server by the guard until you run `sudo tailscale-monitor guard approve"
        ),
        "{}",
        m.text
    );
    assert!(connects_within(&evil.ns, &srv_ip, 5).is_none(), "blocked");
    let m = wait_mail(&smtp, "guard.blocked evil", 60, |m| {
        m.text.contains("guard.blocked") && m.text.contains("evil")
    });
    assert!(m.text.contains(&format!("tcp/{PORT}")), "{}", m.text);
    assert!(m.text.contains("mallory"), "{}", m.text);
    // More attempts: counted, not mailed again.
    let packets = |mon: &Monitor| -> u64 {
        let r = mon.run(&["guard", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["packets"].as_u64().unwrap())
            .sum()
    };
    let before = packets(&mon);
    assert!(connects_within(&evil.ns, &srv_ip, 5).is_none());
    let deadline = Instant::now() + Duration::from_secs(30);
    while packets(&mon) <= before {
        assert!(
            Instant::now() < deadline,
            "the new attempts were never counted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        count(&smtp, "guard.blocked"),
        1,
        "once per device and window"
    );

    // Approved here: in at once.
    let r = mon.run(&["guard", "approve", "evil"]);
    assert_eq!(r.code, 0, "{r:?}");
    let took = connects_within(&evil.ns, &srv_ip, 10).expect("approved, it connects");
    eprintln!("guard approve → connected in {took:?}");
    wait_mail(&smtp, "guard.approved evil", 30, |m| {
        m.text.contains("guard.approved") && m.text.contains("evil")
    });
    // Revoked: out again.
    let r = mon.run(&["guard", "revoke", &evil_ip]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!evil.ns.connects(&srv_ip, PORT), "revoked, it is dropped");

    // Someone with root removes the table behind the monitor's back: `run` puts it back and
    // says so.
    let out = srv
        .ns
        .nft(&["delete", "table", "inet", "tailscale_monitor_guard"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !table_exists(&srv.ns) {
        assert!(Instant::now() < deadline, "run did not put the table back");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_mail(&smtp, "guard.unenforced (table removed)", 30, |m| {
        m.text.contains("removed outside the monitor")
    });
    assert!(
        !evil.ns.connects(&srv_ip, PORT),
        "dropped again once it is back"
    );

    // The approved laptop gets a new node key (as a console swapping its identity to another
    // machine would give it): not approved any more until its owner says so again.
    let out = laptop.cli(&[
        "up",
        "--force-reauth",
        &format!("--login-server=http://127.0.0.1:{}", bridge.port),
        &format!("--authkey={key}"),
        "--hostname=laptop",
        "--accept-dns=false",
        "--timeout=60s",
    ]);
    assert!(out.status.success(), "{out:?}");
    wait_mail(&smtp, "device.rekeyed laptop", 90, |m| {
        m.text.contains("device.rekeyed") && m.text.contains("laptop")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while laptop.ns.connects(&srv_ip, PORT) {
        assert!(
            Instant::now() < deadline,
            "a new node key kept its approval"
        );
    }
    let r = mon.run(&["guard", "status"]);
    assert!(r.stdout.contains("NEW NODE KEY"), "{r:?}");
    assert_eq!(mon.run(&["guard", "approve", "laptop"]).code, 0);
    assert!(connects_within(&laptop.ns, &srv_ip, 30).is_some());

    // The monitor dies: enforcement stays.
    let mut daemon = daemon;
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGKILL) };
    let _ = daemon.0.wait();
    assert!(table_exists(&srv.ns));
    assert!(
        !evil.ns.connects(&srv_ip, PORT),
        "still dropped after kill -9"
    );
    assert!(
        laptop.ns.connects(&srv_ip, PORT),
        "the approved one still gets in"
    );

    // guard off: the table goes, and the policy alone decides.
    let r = mon.run(&["guard", "off"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!table_exists(&srv.ns));
    assert!(connects_within(&evil.ns, &srv_ip, 10).is_some());
    wait_mail(&smtp, "guard.disabled", 30, |m| {
        m.text.contains("guard.disabled")
    });
    // A pass after `guard off` does not put it back.
    mon.check();
    assert!(!table_exists(&srv.ns));
    let r = mon.run(&["guard", "on"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(table_exists(&srv.ns));
    assert!(!evil.ns.connects(&srv_ip, PORT));

    // `mode = "off"` and a reload of the running daemon remove the table too.
    let daemon = mon.spawn_run_logged();
    daemon.wait_log("tailscale-monitor running", 1, 60);
    let text = std::fs::read_to_string(&mon.config).unwrap();
    std::fs::write(
        &mon.config,
        text.replace("mode = \"enforce\"", "mode = \"off\""),
    )
    .unwrap();
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGHUP) };
    daemon.wait_log("config reloaded", 1, 60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while table_exists(&srv.ns) {
        assert!(
            Instant::now() < deadline,
            "mode = off and SIGHUP left the table"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connects_within(&evil.ns, &srv_ip, 10).is_some());
}

/// `tailscale set --exit-node`, retried until the control plane has told the client that the
/// server offers one.
fn use_exit_node(node: &KernelNode, ip: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = node.cli(&["set", &format!("--exit-node={ip}")]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tailscale set --exit-node: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs root, real tailscaled/headscale and nftables: run tests/run-all.sh"]
fn an_unapproved_device_cannot_route_through_the_server_as_an_exit_node() {
    let rel = cur_release();
    let hs = Headscale::start();
    let bridge = Bridge::start(&hs);
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let mut srv = KernelNode::join(&rel, &bridge, "xsrv", 11, &key, &["--advertise-exit-node"]);
    let id = hs
        .nodes()
        .into_iter()
        .find(|n| n["given_name"] == "xsrv" || n["name"] == "xsrv")
        .and_then(|n| n["id"].as_u64())
        .expect("xsrv in headscale");
    let out = hs.cmd(&[
        "nodes",
        "approve-routes",
        "-i",
        &id.to_string(),
        "-r",
        "0.0.0.0/0,::/0",
    ]);
    assert!(out.status.success(), "{out:?}");
    // Behind the server, a host the exit node forwards to.
    let mut dst = Netns::new("xdst", 12);
    srv.ns.link_to(&dst, "198.51.100.1", "198.51.100.2");
    dst.listen(PORT);
    let laptop = KernelNode::join(&rel, &bridge, "xlaptop", 13, &key, &[]);
    let srv_ip = srv.ip();
    use_exit_node(&laptop, &srv_ip);
    assert!(
        connects_within(&laptop.ns, BEHIND, 90).is_some(),
        "the laptop never reached the host behind the exit node:\n{}\n{}",
        srv.diag(),
        laptop.diag()
    );

    let smtp = Smtp::start();
    let g = guarded(
        &mut srv.ns,
        &srv.socket.clone(),
        &(email_channel(smtp.port) + "\n[guard]\nmode = \"enforce\"\n"),
    );
    let (mon, _relay, _dir) = (g.mon, g.relay, g.dir);
    mon.check();
    let r = mon.run(&["guard", "init"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(table_exists(&srv.ns));
    assert!(
        connects_within(&laptop.ns, BEHIND, 30).is_some(),
        "an approved device still routes through the server"
    );

    let mallory = hs.user("mallory");
    let evil = KernelNode::join(&rel, &bridge, "xevil", 14, &hs.preauth_key(mallory), &[]);
    use_exit_node(&evil, &srv_ip);
    mon.check();
    assert!(
        connects_within(&evil.ns, BEHIND, 8).is_none(),
        "an unapproved device routed through the server"
    );
    // Its packets reached the server and the guard's forward hook dropped them.
    let evil_ip = evil.ip();
    let r = mon.run(&["guard", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["table"]["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["addr"] == evil_ip.as_str()
                && b["port"] == PORT
                && b["packets"].as_u64().unwrap() > 0),
        "{}",
        r.stdout
    );
    let r = mon.run(&["guard", "approve", "xevil"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        connects_within(&evil.ns, BEHIND, 30).is_some(),
        "once approved, it routes (so the guard was what refused it)"
    );
}

#[test]
#[ignore = "needs root, real tailscaled/headscale and nftables: run tests/run-all.sh"]
fn in_userspace_mode_enforce_says_once_that_it_cannot_and_creates_no_table() {
    let rel = cur_release();
    let hs = Headscale::start();
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let web = Node::join(&rel, &hs, "web", &key);
    // The relay in a namespace of its own, to see that it is asked for no table.
    let mut ns = Netns::new("us", 9);
    let smtp = Smtp::start();
    let g = guarded(
        &mut ns,
        web.socket(),
        &(email_channel(smtp.port) + "\n[guard]\nmode = \"enforce\"\n"),
    );
    let (mon, _relay, _dir) = (g.mon, g.relay, g.dir);
    let r = mon.check();
    assert_eq!(r.code, 2, "not in force is critical: {r:?}");
    let r = mon.run(&["guard", "init"]);
    assert_eq!(r.code, 0, "{r:?}");
    mon.check();
    mon.check();
    wait_mail(&smtp, "guard.unenforced (userspace)", 30, |m| {
        m.text.contains("guard.unenforced") && m.text.contains("userspace")
    });
    assert_eq!(count(&smtp, "userspace networking mode"), 1, "one message");
    let r = mon.run(&["config", "check"]);
    assert!(r.stderr.contains("userspace networking mode"), "{r:?}");
    let r = mon.run(&["guard", "status"]);
    assert!(
        r.stdout.contains("NOT ENFORCED") && r.stdout.contains("userspace"),
        "{r:?}"
    );
    let r = mon.run(&["posture"]);
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("SV-08"))
        .unwrap_or_else(|| panic!("no SV-08 in {r:?}"));
    assert!(line.to_lowercase().contains("fail"), "{line}");
    let tables = ns.nft(&["list", "tables"]);
    assert!(tables.status.success());
    assert_eq!(
        String::from_utf8_lossy(&tables.stdout).trim(),
        "",
        "no table"
    );
}

/// Sends one request line to the relay at `socket` as uid 65534 in group root (the relay's group
/// here): what a compromised monitor user can do.
fn as_member(socket: &std::path::Path, line: &str) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=0", "--clear-groups", "--"])
        .args(["socat", "-T5", "-"])
        .arg(format!("UNIX-CONNECT:{}", socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{line}").unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 27 (review G7, G9, G11): the root side owns the decision. The monitor's user can ask it
/// to sync and read, never to admit anyone, turn it off, or filter another interface; `sudo
/// guard approve` works; a rule inserted by hand is tampering, found and put back; the table is
/// restored from root's own copy at boot, before tailscaled, and holds from the first packet.
#[test]
#[ignore = "needs root, real tailscaled/headscale and nftables: run tests/run-all.sh"]
fn the_root_side_owns_the_decision() {
    let rel = cur_release();
    let hs = Headscale::start();
    let bridge = Bridge::start(&hs);
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let mut srv = KernelNode::join(&rel, &bridge, "rsrv", 31, &key, &[]);
    let laptop = KernelNode::join(&rel, &bridge, "rlap", 32, &key, &[]);
    let mallory = hs.user("mallory");
    let evil = KernelNode::join(&rel, &bridge, "revil", 33, &hs.preauth_key(mallory), &[]);
    let srv_ip = srv.ip();
    srv.ns.listen(PORT);
    assert!(
        connects_within(&evil.ns, &srv_ip, 90).is_some(),
        "the tailnet lets evil in"
    );
    let smtp = Smtp::start();
    let g = guarded(
        &mut srv.ns,
        &srv.socket.clone(),
        &(email_channel(smtp.port)
            + "\n[daemon]\nbatch_window = \"1ms\"\n\n[guard]\nmode = \"enforce\"\n"),
    );
    let (mon, relay, relay_dir) = (g.mon, g.relay, g.dir);
    mon.check();
    // Everything known at the baseline is approved, evil included: revoke it, as root.
    assert_eq!(mon.run(&["guard", "init"]).code, 0);
    let r = mon.run(&["guard", "revoke", "revil"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("stable ID") && r.stdout.contains("node key nodekey:"),
        "{r:?}"
    );
    assert!(!evil.ns.connects(&srv_ip, PORT));
    assert!(connects_within(&laptop.ns, &srv_ip, 30).is_some());
    // The table's rules and sets, and what the approved sets hold (not the records' timers).
    let table = || {
        let t = "tailscale_monitor_guard";
        let mut out = srv.ns.nft(&["-t", "list", "table", "inet", t]).stdout;
        for s in ["approved4", "approved6"] {
            out.extend(srv.ns.nft(&["list", "set", "inet", t, s]).stdout);
        }
        String::from_utf8(out).unwrap()
    };
    let before = table();

    // The monitor's user: no owner's operation, no set, no interface of its own choosing.
    let st: serde_json::Value =
        serde_json::from_slice(&srv.cli(&["status", "--json"]).stdout).unwrap();
    let peer = st["Peer"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["HostName"] == "revil")
        .expect("evil in the server's /status");
    let (id, nk) = (
        peer["ID"].as_str().unwrap().to_owned(),
        peer["PublicKey"].as_str().unwrap().to_owned(),
    );
    for line in [
        format!(r#"{{"v":3,"op":"guard_approve","approve":[{{"id":"{id}","node_key":"{nk}"}}]}}"#),
        format!(r#"{{"v":3,"op":"guard_init","approve":[{{"id":"{id}","node_key":"{nk}"}}]}}"#),
        r#"{"v":3,"op":"guard_off"}"#.to_owned(),
        r#"{"v":3,"op":"guard_revoke","revoke":["1"]}"#.to_owned(),
    ] {
        let a = as_member(&relay, &line);
        assert!(a.contains("the owner's"), "{line} -> {a}");
    }
    for line in [
        r#"{"v":2,"op":"guard_apply","guard":{"interface":"lo","set":{"v4":["100.64.0.0/10"],"v6":[]}}}"#,
        r#"{"v":3,"op":"guard_apply","guard":{"interface":"lo","set":{"v4":["100.64.0.0/10"],"v6":[]}}}"#,
        r#"{"v":3,"op":"guard_sync","guard":{"interface":"lo"}}"#,
        r#"{"v":3,"op":"guard_remove"}"#,
    ] {
        let a = as_member(&relay, line);
        assert!(a.contains("\"error\""), "{line} -> {a}");
    }
    let a = as_member(&relay, r#"{"v":3,"op":"guard_sync"}"#);
    assert!(
        a.contains("\"decision\""),
        "a member may ask root to sync: {a}"
    );
    assert_eq!(
        table(),
        before,
        "nothing the monitor's user sent changed the table"
    );
    assert!(!evil.ns.connects(&srv_ip, PORT), "and evil is still out");
    // The CLI says so too, before anything else.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(crate::support::bin())
        .args(["--config", "/nonexistent", "guard", "approve", "revil"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("sudo"),
        "{out:?}"
    );
    // sudo (uid 0) may.
    assert_eq!(mon.run(&["guard", "approve", "revil"]).code, 0);
    assert!(connects_within(&evil.ns, &srv_ip, 30).is_some());
    wait_mail(&smtp, "guard.approved revil", 60, |m| {
        m.text.contains("guard.approved") && m.text.contains("revil")
    });
    assert_eq!(mon.run(&["guard", "revoke", "revil"]).code, 0);
    assert!(!evil.ns.connects(&srv_ip, PORT));

    // G7: an accept inserted by hand is tampering: named, and put back.
    let out = srv.ns.nft(&[
        "insert",
        "rule",
        "inet",
        "tailscale_monitor_guard",
        "input",
        "iifname",
        "tailscale0",
        "accept",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        connects_within(&evil.ns, &srv_ip, 10).is_some(),
        "the inserted accept works"
    );
    let r = mon.run(&["guard", "status"]);
    assert!(
        r.stdout.contains("NOT ENFORCED") && r.stdout.contains("not what the root side applied"),
        "{r:?}"
    );
    mon.check();
    wait_mail(&smtp, "guard.unenforced (changed)", 30, |m| {
        m.text.contains("changed outside the monitor")
    });
    assert!(!evil.ns.connects(&srv_ip, PORT), "put back");

    // G9: a reboot: tailscaled stopped (tailscale0 gone), the kernel's ruleset gone, the
    // restore unit's command before tailscaled starts again: in force from root's own copy,
    // from the first packet tailscaled lets through.
    srv.stop_daemon();
    let out = srv
        .ns
        .nft(&["delete", "table", "inet", "tailscale_monitor_guard"]);
    assert!(out.status.success(), "{out:?}");
    let mut restore = crate::support::netns::relay_cmd(
        &srv.ns,
        relay_dir.path(),
        &srv.socket.clone(),
        &mon.config,
    );
    let out = restore.arg("--restore").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    srv.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !srv.cli(&["status"]).status.success() {
        assert!(Instant::now() < deadline, "tailscaled came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The table was there before tailscale0 was: no packet ever met the server without it.
    assert!(
        connects_within(&laptop.ns, &srv_ip, 90).is_some(),
        "the approved laptop gets in once the tunnel is back"
    );
    let evil_ip = evil.ip();
    assert!(!evil.ns.connects(&srv_ip, PORT), "evil is dropped");
    let r = mon.run(&["guard", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["table"]["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["addr"] == evil_ip.as_str() && b["packets"].as_u64().unwrap() > 0),
        "evil's packets reached the restored table and were dropped: {}",
        r.stdout
    );
    let r = mon.check();
    assert_ne!(r.code, 2, "a restored table is no tampering: {r:?}");
    assert_eq!(
        mon.count_events("guard.unenforced"),
        2,
        "uninitialized, then the inserted rule"
    );
}
