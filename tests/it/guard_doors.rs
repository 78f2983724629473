//! The guard's coverage, door by door, on real daemons (issue 26): tailscaled 1.104.2 in kernel
//! TUN mode in namespaces this test creates, real headscale, nftables and the real relay.
//! - Tailscale SSH answers an unapproved node before the kernel: named (`guard status`, `--json`,
//!   `guard.door_open` once, `check` 2, posture), then closed by `tailscaled_doors = "close"`, and
//!   closed again (and mailed) when it is turned back on;
//! - a new user's subnet router, its route approved by the console, sending from its LAN address:
//!   dropped, and `guard.blocked` names it; approved here, its route gets in;
//! - the server's own connections to an unapproved node, and MagicDNS, keep working.

use std::time::{Duration, Instant};

use crate::support::netns::{connects_within, guarded, Bridge, KernelNode, Netns, PORT};
use crate::support::real::{cur_release, Headscale};
use crate::support::smtp::{wait_mail, Smtp};
use crate::support::{email_channel, posture_finding};

fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The device's ID in headscale.
fn hs_id(hs: &Headscale, name: &str) -> u64 {
    hs.nodes()
        .into_iter()
        .find(|n| n["given_name"] == name || n["name"] == name)
        .and_then(|n| n["id"].as_u64())
        .unwrap_or_else(|| panic!("{name} in headscale"))
}

#[test]
#[ignore = "needs root, real tailscaled/headscale and nftables: run tests/run-all.sh"]
fn every_door_into_the_server_is_closed_or_named() {
    let rel = cur_release();
    let hs = Headscale::start();
    let bridge = Bridge::start(&hs);
    let ops = hs.user("ops");
    let key = hs.preauth_key(ops);
    let mut srv = KernelNode::join(
        &rel,
        &bridge,
        "dsrv",
        21,
        &key,
        &["--ssh", "--accept-routes"],
    );
    let laptop = KernelNode::join(&rel, &bridge, "dlap", 22, &key, &[]);
    let srv_ip = srv.ip();
    srv.ns.listen(PORT);
    assert!(
        connects_within(&laptop.ns, &srv_ip, 90).is_some(),
        "the laptop never reached the server over the tailnet"
    );
    let dns_before = srv.ns.dns_answers("100.100.100.100", "dlap.tailnet.test");
    assert!(dns_before, "MagicDNS answers before the guard");

    let smtp = Smtp::start();
    let g = guarded(
        &mut srv.ns,
        &srv.socket.clone(),
        &(email_channel(smtp.port)
            + "\n[daemon]\nbatch_window = \"1ms\"\n\n[guard]\nmode = \"enforce\"\n"),
    );
    let (mon, _relay, _dir) = (g.mon, g.relay, g.dir);
    mon.check();
    assert_eq!(mon.run(&["guard", "init"]).code, 0);

    // The first pass with the guard in force names every door tailscaled answers itself.
    let r = mon.check();
    assert_eq!(r.code, 2, "an open door is critical: {r:?}");
    wait_mail(&smtp, "guard.door_open (Tailscale SSH)", 30, |m| {
        m.text.contains("guard.door_open") && m.text.contains("Tailscale SSH (port 22)")
    });
    assert_eq!(
        mon.count_events("guard.door_open"),
        2,
        "SSH and the PeerAPI"
    );
    let r = mon.check();
    assert_ne!(r.code, 2, "said once per opening: {r:?}");
    assert_eq!(
        mon.count_events("guard.door_open"),
        2,
        "said once per opening"
    );
    let r = mon.run(&["guard", "status"]);
    assert!(
        r.stdout.contains("ENFORCED: on the kernel path")
            && r.stdout.contains("NOT GUARDED: Tailscale SSH (port 22)")
            && r.stdout.contains("NOT GUARDED: the PeerAPI"),
        "{r:?}"
    );
    let r = mon.run(&["guard", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let doors: Vec<&str> = v["doors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(doors, ["ssh", "peerapi"], "{}", r.stdout);
    let r = mon.run(&["posture", "--json"]);
    let f = posture_finding(&r.stdout, "SV-09");
    assert_eq!(f["status"], "fail", "{f}");

    // MagicDNS keeps answering on a guarded server (its answers are replies).
    assert!(srv.ns.dns_answers("100.100.100.100", "dlap.tailnet.test"));
    assert!(srv
        .ns
        .dns_answers("fd7a:115c:a1e0::53", "dlap.tailnet.test"));

    // A new user's node: the kernel path is closed to it, Tailscale SSH answers it.
    let mallory = hs.user("mallory");
    let mkey = hs.preauth_key(mallory);
    let mut evil = KernelNode::join(&rel, &bridge, "devil", 23, &mkey, &[]);
    let evil_ip = evil.ip();
    mon.check();
    until("evil reaches Tailscale SSH", 60, || {
        evil.ns.banner(&srv_ip, 22).contains("SSH-2.0-Tailscale")
    });
    assert!(
        !evil.ns.connects(&srv_ip, PORT),
        "the kernel path is closed"
    );
    // The server's own connection to the unapproved node gets its reply.
    evil.ns.listen(PORT);
    assert!(
        connects_within(&srv.ns, &evil_ip, 30).is_some(),
        "the server's own connection to an unapproved device is answered"
    );

    // tailscaled_doors = "close": the root side turns Tailscale SSH off, and keeps it off.
    let text = std::fs::read_to_string(&mon.config).unwrap();
    std::fs::write(
        &mon.config,
        text.replace(
            "mode = \"enforce\"\n",
            "mode = \"enforce\"\ntailscaled_doors = \"close\"\n",
        ),
    )
    .unwrap();
    mon.check();
    until("Tailscale SSH closed", 30, || {
        !evil.ns.banner(&srv_ip, 22).contains("SSH-2.0-Tailscale")
    });
    let prefs = srv.cli(&["debug", "prefs"]);
    assert!(
        String::from_utf8_lossy(&prefs.stdout).contains("\"RunSSH\": false"),
        "{prefs:?}"
    );
    let closed = mon.count_events("guard.door_open");
    let out = srv.cli(&["set", "--ssh"]);
    assert!(out.status.success(), "{out:?}");
    let r = mon.check();
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(mon.count_events("guard.door_open"), closed + 1);
    wait_mail(&smtp, "Tailscale SSH turned off again", 30, |m| {
        m.text.contains("guard turned it off again")
    });
    until("Tailscale SSH closed again", 30, || {
        !evil.ns.banner(&srv_ip, 22).contains("SSH-2.0-Tailscale")
    });
    let r = mon.run(&["guard", "status"]);
    assert!(!r.stdout.contains("NOT GUARDED: Tailscale SSH"), "{r:?}");

    // A new user's subnet router; the console approves its route; a host on its LAN sends from
    // its LAN address (no SNAT). The server accepts routes, so the packets arrive on tailscale0.
    let rtr = KernelNode::join(
        &rel,
        &bridge,
        "drtr",
        24,
        &mkey,
        &[
            "--advertise-routes=192.168.77.0/24",
            "--snat-subnet-routes=false",
        ],
    );
    let lan = Netns::new("dlan", 25);
    rtr.ns.link_to(&lan, "192.168.77.1", "192.168.77.5");
    let out = hs.cmd(&[
        "nodes",
        "approve-routes",
        "-i",
        &hs_id(&hs, "drtr").to_string(),
        "-r",
        "192.168.77.0/24",
    ]);
    assert!(out.status.success(), "{out:?}");
    until(
        "the server routes 192.168.77.0/24 to the router",
        90,
        || {
            let st = srv.cli(&["status", "--json"]);
            String::from_utf8_lossy(&st.stdout).contains("192.168.77.0/24")
        },
    );
    mon.check();
    assert!(
        connects_within(&lan, &srv_ip, 8).is_none(),
        "a LAN host behind an unapproved router got in"
    );
    mon.check();
    let m = wait_mail(&smtp, "guard.blocked drtr", 60, |m| {
        m.text.contains("guard.blocked") && m.text.contains("192.168.77.5")
    });
    assert!(
        m.text.contains("drtr") && m.text.contains("through its route 192.168.77.0/24"),
        "{}",
        m.text
    );
    // Approved here with its route: in.
    assert_eq!(mon.run(&["guard", "approve", "drtr"]).code, 0);
    assert!(
        connects_within(&lan, &srv_ip, 30).is_some(),
        "the approved router's route gets in:\n{}",
        srv.diag()
    );
    drop(evil);
}
