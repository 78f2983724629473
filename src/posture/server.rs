//! This server: what it can see, its config and state files, its unit, its socket.

use crate::model::posture::{PathFacts, Status};
use crate::posture::{is_headscale, pass_if, Inputs, Out};

pub(super) fn path_problems(p: &PathFacts, owner_root: bool) -> Vec<String> {
    let mut v = Vec::new();
    if !p.error.is_empty() {
        v.push(format!("{}: {}", p.path, p.error));
        return v;
    }
    if p.mode & 0o002 != 0 {
        v.push(format!(
            "{} is writable by others (mode {:o})",
            p.path,
            p.mode & 0o7777
        ));
    }
    if owner_root && p.uid != 0 {
        v.push(format!("{} is owned by uid {}, not root", p.path, p.uid));
    }
    v
}

/// SV-07: the monitor can see who may reach this server (on tailscaled >= 1.104 only through the
/// privileged relay, or as root).
pub(super) fn visibility(o: &mut Out, i: &Inputs) {
    let (status, evidence, fix) = match i.node.map(|n| n.node.as_ref()) {
        None => (
            Status::Unknown,
            "tailscaled could not be read".to_owned(),
            String::new(),
        ),
        Some(None) => (
            Status::Unknown,
            "the CLI source reads no packet filter".to_owned(),
            "use [tailscale] source = \"localapi\"".to_owned(),
        ),
        Some(Some(v)) => match v.unread(crate::model::access::Part::Access) {
            Some(u) => (Status::Fail, u.error.clone(), u.fix.clone()),
            None => (
                Status::Pass,
                "this node's packet filter and SSH policy are read".to_owned(),
                String::new(),
            ),
        },
    };
    o.add("SV-07", status, evidence, &fix);
}

/// SV-08 (only with `[guard] mode = "enforce"`): the guard can filter in the kernel here, which
/// userspace networking rules out.
pub(super) fn guard(o: &mut Out, i: &Inputs) {
    if !i.server.is_some_and(|s| s.guard_enforce) {
        return;
    }
    let fix = o.fix("SV-08");
    let (status, evidence) = match i.node.map(|n| n.tun) {
        None | Some(None) => (Status::Unknown, "tailscaled could not be read".to_owned()),
        Some(Some(true)) => (Status::Pass, "/status TUN is true".to_owned()),
        Some(Some(false)) => (
            Status::Fail,
            "/status TUN is false: userspace networking, so the guard protects nothing".to_owned(),
        ),
    };
    o.add("SV-08", status, evidence, fix);
    doors(o, i);
}

/// SV-09 (only with `[guard] mode = "enforce"`): no way in that tailscaled answers itself, before
/// the kernel and so before the guard, is open (the PeerAPI, always there, is named in the
/// evidence); in userspace networking mode every loopback listener is one.
fn doors(o: &mut Out, i: &Inputs) {
    let fix = o.fix("SV-09");
    let tun = i.node.and_then(|n| n.tun);
    let trust = i.node.and_then(|n| n.node.as_ref()).map(|v| &v.trust);
    let (status, evidence) = match trust {
        None => (
            Status::Unknown,
            "tailscaled's prefs could not be read".to_owned(),
        ),
        Some(t) if t.ssh_server.is_none() => (
            Status::Unknown,
            "tailscaled's prefs could not be read".to_owned(),
        ),
        Some(t) => {
            let open: Vec<String> = crate::diff::guard::doors::open_doors(t, tun)
                .into_iter()
                .filter(|d| d.key != "peerapi")
                .map(|d| d.name)
                .collect();
            let peerapi = if tun == Some(true) && t.shields_up != Some(true) {
                " (the PeerAPI is always answered by tailscaled; what peers may do there is the control plane's grant)"
            } else {
                ""
            };
            if open.is_empty() {
                (Status::Pass, format!("none open{peerapi}"))
            } else {
                (
                    Status::Fail,
                    format!("NOT GUARDED: {}{peerapi}", open.join("; ")),
                )
            }
        }
    };
    o.add("SV-09", status, evidence, fix);
}

/// SV-10: `RemoteConfig` is off (tailscale 1.102+): on, the control plane may change any pref and
/// call any LocalAPI endpoint of this node.
pub(super) fn remote_config(o: &mut Out, i: &Inputs) {
    let fix = o.fix("SV-10");
    let trust = i.node.and_then(|n| n.node.as_ref()).map(|v| &v.trust);
    let (status, evidence) = match trust.map(|t| t.remote_config) {
        None => (Status::Unknown, "tailscaled's prefs could not be read".to_owned()),
        Some(None) => (
            Status::Unknown,
            "prefs have no RemoteConfig (tailscale before 1.102: not offered)".to_owned(),
        ),
        Some(Some(false)) => (Status::Pass, "prefs RemoteConfig is false".to_owned()),
        Some(Some(true)) => (
            Status::Fail,
            "prefs RemoteConfig is true: the control plane can open Tailscale SSH, serve, or undo the guard"
                .to_owned(),
        ),
    };
    o.add("SV-10", status, evidence, fix);
}

pub(super) fn server(o: &mut Out, i: &Inputs) {
    let hs = is_headscale(i);
    let trust = i.node.and_then(|n| n.node.as_ref()).map(|v| &v.trust);
    let fix = o.fix("SV-01");
    match (hs, trust.map(|t| &t.tailnet_lock)) {
        (true, _) => o.not_on_headscale("SV-01"),
        (_, None) => o.add(
            "SV-01",
            Status::Unknown,
            "tailscaled could not be read",
            fix,
        ),
        (_, Some(None)) => o.add(
            "SV-01",
            Status::Unknown,
            "tka/status not available on this tailscaled",
            fix,
        ),
        (_, Some(Some(l))) => o.add(
            "SV-01",
            pass_if(l.enabled),
            format!(
                "LocalAPI tka/status: Enabled = {}, {} trusted key(s)",
                l.enabled,
                l.trusted_keys.len()
            ),
            fix,
        ),
    }
    match i.node {
        None => o.add(
            "SV-02",
            Status::Unknown,
            "tailscaled could not be read",
            "tailscale update",
        ),
        Some(n) => {
            let newer = n.update_available.clone();
            o.add(
                "SV-02",
                if newer.is_some() {
                    Status::Fail
                } else {
                    Status::Pass
                },
                match newer {
                    Some(v) => format!(
                        "running {}, {v} is available (/status ClientVersion)",
                        n.version
                    ),
                    None => format!(
                        "running {}; no newer version announced (/status ClientVersion)",
                        n.version
                    ),
                },
                o.fix("SV-02"),
            );
        }
    }
    let Some(s) = i.server else {
        for id in ["SV-03", "SV-04", "SV-05", "SV-06"] {
            o.add(
                id,
                Status::Unknown,
                "this server's facts were not collected",
                "",
            );
        }
        return;
    };
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (p, root) in [(&s.binary, true), (&s.config, true), (&s.state, false)] {
        if let Some(p) = p {
            seen.push(p.path.clone());
            problems.extend(path_problems(p, root));
        }
    }
    // The state holds the event log: nobody but its owner may touch it. (Not compared with the
    // uid running this: an administrator's `check` as root must not look like drift.)
    if let Some(st) = &s.state {
        if st.error.is_empty() && st.mode & 0o007 != 0 {
            problems.push(format!(
                "{} is open to others (mode {:o})",
                st.path,
                st.mode & 0o7777
            ));
        }
    }
    o.add(
        "SV-03",
        pass_if(problems.is_empty()),
        if problems.is_empty() {
            format!("checked {}", seen.join(", "))
        } else {
            problems.join("; ")
        },
        o.fix("SV-03"),
    );
    let files: Vec<&PathFacts> = [&s.binary, &s.config].into_iter().flatten().collect();
    let unsupported: Vec<String> = files
        .iter()
        .filter(|p| p.immutable.is_none())
        .map(|p| p.path.clone())
        .collect();
    let mutable: Vec<String> = files
        .iter()
        .filter(|p| p.immutable == Some(false))
        .map(|p| p.path.clone())
        .collect();
    o.add(
        "SV-04",
        if !mutable.is_empty() {
            Status::Fail
        } else if !unsupported.is_empty() || files.is_empty() {
            Status::Unknown
        } else {
            Status::Pass
        },
        if !mutable.is_empty() {
            format!("lsattr shows no i on {}", mutable.join(", "))
        } else if !unsupported.is_empty() {
            format!(
                "the filesystem does not report attributes for {}",
                unsupported.join(", ")
            )
        } else {
            format!(
                "immutable: {}",
                files
                    .iter()
                    .map(|p| p.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        o.fix("SV-04"),
    );
    let fix = o.fix("SV-05");
    match s.sandbox {
        None => o.add("SV-05", Status::Unknown, "not running under systemd (no INVOCATION_ID); `run` under the unit reports this itself", fix),
        Some((nnp, seccomp)) => o.add("SV-05", pass_if(nnp && seccomp == 2), format!("/proc/self/status: NoNewPrivs = {}, Seccomp = {seccomp}", u8::from(nnp)), fix),
    }
    let fix = o.fix("SV-06");
    match &s.socket {
        None => o.add(
            "SV-06",
            Status::Unknown,
            "no LocalAPI socket configured",
            fix,
        ),
        Some(p) if !p.error.is_empty() => o.add(
            "SV-06",
            Status::Unknown,
            format!("{}: {}", p.path, p.error),
            fix,
        ),
        Some(p) => {
            let is_socket = p.mode & 0o170000 == 0o140000;
            let ok = is_socket && p.uid == 0;
            o.add(
                "SV-06",
                pass_if(ok),
                format!(
                    "{}: {}, owned by uid {}",
                    p.path,
                    if is_socket {
                        "a unix socket"
                    } else {
                        "not a socket"
                    },
                    p.uid
                ),
                fix,
            );
        }
    }
}
