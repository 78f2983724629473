//! `guard status|init|approve|revoke|off|on`: the approvals of devices at this server.

use crate::app::guard;
use crate::diff::guard::approvable_routes;
use crate::diff::guard::blocked::holder;
use crate::diff::guard::doors::open_doors;
use crate::model::guard::{Decision, Door};
use crate::model::state::KnownDevice;

use std::path::Path;

use anyhow::{bail, Context as _};
use chrono::Utc;
use clap::Subcommand;

use crate::cli::{load, open_store, pass};
use crate::config::Config;
use crate::sanitize;
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum GuardCommand {
    /// Mode, whether the guard is in force and why not, the approved devices, and the blocked
    /// ones with their attempts.
    Status {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approves every device known now (run it after reviewing the baseline) and puts the guard
    /// in force.
    Init,
    /// Lets devices in, by stable ID, hostname or address.
    Approve {
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
    },
    /// Shuts devices out again, by stable ID, hostname or address.
    Revoke {
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
    },
    /// Emergency: removes the enforcement (every device the tailnet policy lets in can connect)
    /// until `guard on`.
    Off,
    /// Puts the guard back in force after `guard off`.
    On,
}

/// The known devices `arg` names: a stable ID, an address, or a hostname (or MagicDNS name)
/// that exactly one present device has.
fn resolve<'a>(known: &'a [KnownDevice], arg: &str) -> anyhow::Result<&'a KnownDevice> {
    let present = || known.iter().filter(|k| !k.removed);
    if let Some(k) = known.iter().find(|k| k.device.id.0 == arg) {
        return Ok(k);
    }
    let holders: Vec<&KnownDevice> = present()
        .filter(|k| k.device.addresses.iter().any(|a| a == arg))
        .collect();
    let several = |many: &[&KnownDevice], what: &str| {
        anyhow::anyhow!(
            "{:?} {what} {} devices ({}): give the stable ID",
            sanitize::line(arg, 80),
            many.len(),
            many.iter()
                .map(|k| k.device.id.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match holders.as_slice() {
        [one] => return Ok(one),
        [] => {}
        many => return Err(several(many, "is an address held by")),
    }
    let by_name: Vec<&KnownDevice> = present()
        .filter(|k| {
            k.device.hostname.eq_ignore_ascii_case(arg)
                || k.device
                    .dns_name
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(arg.trim_end_matches('.'))
                || k.device
                    .dns_name
                    .split('.')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case(arg))
        })
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no device this server knows is {:?} (give a stable ID, a hostname or an address; `tailscale-monitor devices` lists them)",
            sanitize::line(arg, 80)
        ),
        many => Err(several(many, "names")),
    }
}

/// The owner's commands run as root: approvals live where only root writes. The connection to
/// the root side is made now, as root (it checks these credentials); then this process becomes
/// the state directory's owner, so that what it writes to the monitor's store stays the
/// monitor's.
fn connect_as_owner(cfg: &Config) -> anyhow::Result<std::os::unix::net::UnixStream> {
    let stream = crate::privileged::connect_now(&cfg.source.privileged_socket)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop_to_state_owner(&cfg.state_dir)?;
    Ok(stream)
}

/// Becomes the owner of `dir` (the monitor's user), for good.
fn drop_to_state_owner(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).with_context(|| {
        format!(
            "the state directory {} (run `tailscale-monitor check` as the monitor's user first)",
            dir.display()
        )
    })?;
    let (uid, gid) = (m.uid(), m.gid());
    if uid == 0 {
        return Ok(());
    }
    // SAFETY: plain system calls with valid arguments; the process gives up root for good.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
    };
    if !ok {
        bail!(
            "becoming uid {uid} (the owner of {}): {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// What the owner confirms: the device's name, stable ID, node key, addresses and routes.
fn confirm(k: &KnownDevice, verb: &str) {
    println!(
        "{verb} {}: stable ID {}, node key {}, addresses {}{}",
        sanitize::line(k.device.display_name(), 60),
        sanitize::line(&k.device.id.0, 60),
        sanitize::line(&k.device.node_key.0, 90),
        sanitize::line(&k.device.addresses.join(", "), 80),
        if k.device.routes.is_empty() {
            String::new()
        } else {
            format!(
                ", routes {}",
                sanitize::line(&k.device.routes.join(", "), 120)
            )
        }
    );
}

/// After an owner's command: the root side's decision mirrored (with its events), said, and
/// delivered.
async fn after(cfg: &Config, store: &mut Store, d: &Decision) -> anyhow::Result<()> {
    let tun = known_tun(cfg).await;
    let events = guard::enforce(store, cfg, tun, Utc::now()).await?;
    for e in &events {
        eprintln!("{}: {}", e.kind, sanitize::line(&e.summary, 300));
    }
    println!(
        "the root side lets {} prefix(es) in on {}{}",
        d.set.len(),
        d.interface,
        if d.mode != "enforce" {
            " (its config says mode = \"off\": nothing is enforced)"
        } else if d.off.is_some() {
            " (the guard is off)"
        } else {
            ""
        }
    );
    for l in &d.left_out {
        println!(
            "  left out: {} of {} (the unapproved {} may send from it: {})",
            l.net,
            sanitize::line(&l.device, 40),
            sanitize::line(&l.by, 90),
            sanitize::line(&l.claim, 60)
        );
    }
    let _ = pass::deliver(store, cfg, &pass::local_hostname(), false).await?;
    Ok(())
}

pub(super) async fn guard(explicit: Option<&Path>, cmd: GuardCommand) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if !matches!(cmd, GuardCommand::Status { .. }) && unsafe { libc::geteuid() } != 0 {
        bail!("this is the owner's: approvals live where only root writes. Run it with sudo (`sudo tailscale-monitor guard …`)");
    }
    let cfg = load(explicit, true)?;
    if let GuardCommand::Status { json } = cmd {
        let mut store = open_store(explicit)?;
        return status(&cfg, &mut store, json).await;
    }
    let stream = connect_as_owner(&cfg)?;
    let mut store = open_store(explicit)?;
    let socket = cfg.source.privileged_socket.clone();
    let ask = |op, approve, revoke| {
        crate::privileged::guard_admin_on(
            stream,
            &socket,
            op,
            approve,
            revoke,
            guard::RELAY_TIMEOUT,
        )
    };
    let d = match cmd {
        GuardCommand::Status { .. } => unreachable!("handled above"),
        GuardCommand::Init => {
            let known = store.known_now()?.clone();
            if !known.baseline_done {
                bail!("no baseline yet: run `tailscale-monitor check` first, review what it reports, then `guard init`");
            }
            let mut reviewed = Vec::new();
            for k in known.devices.values().filter(|k| !k.removed && !k.device.is_self) {
                if k.after_baseline {
                    println!(
                        "NOT approving {} ({}): it joined after the baseline you reviewed; `sudo tailscale-monitor guard approve {}` once you know it",
                        sanitize::line(k.device.display_name(), 60),
                        k.device.id.0,
                        k.device.id.0
                    );
                } else {
                    confirm(k, "approving");
                    reviewed.push(crate::privileged::Confirmed {
                        id: k.device.id.0.clone(),
                        node_key: k.device.node_key.0.clone(),
                    });
                }
            }
            println!("approving {} device(s) of the baseline", reviewed.len());
            ask(crate::privileged::Op::GuardInit, Some(reviewed), None).await
        }
        GuardCommand::Approve { devices } => {
            let known: Vec<KnownDevice> = store.known_now()?.devices.values().cloned().collect();
            let mut list = Vec::new();
            for d in &devices {
                let k = resolve(&known, d)?;
                if k.removed {
                    bail!("{} has left the tailnet: nothing to approve", k.device.id.0);
                }
                if !list.iter().any(|c: &crate::privileged::Confirmed| c.id == k.device.id.0) {
                    confirm(k, "approving");
                    list.push(crate::privileged::Confirmed {
                        id: k.device.id.0.clone(),
                        node_key: k.device.node_key.0.clone(),
                    });
                }
            }
            ask(crate::privileged::Op::GuardApprove, Some(list), None).await
        }
        GuardCommand::Revoke { devices } => {
            let known: Vec<KnownDevice> = store.known_now()?.devices.values().cloned().collect();
            let mut ids: Vec<String> = Vec::new();
            for d in &devices {
                let k = resolve(&known, d)?;
                confirm(k, "revoking");
                ids.push(k.device.id.0.clone());
            }
            ask(crate::privileged::Op::GuardRevoke, None, Some(ids)).await
        }
        GuardCommand::Off => {
            println!("turning the guard off: every device the tailnet policy lets in can reach this server until `sudo tailscale-monitor guard on`");
            ask(crate::privileged::Op::GuardOff, None, None).await
        }
        GuardCommand::On => ask(crate::privileged::Op::GuardOn, None, None).await,
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    after(&cfg, &mut store, &d).await
}

/// Whether approval `a` still covers `k`: the same node key, and no route since.
fn current(a: &crate::model::guard::Approval, k: &KnownDevice) -> bool {
    a.node_key == k.device.node_key.0
        && approvable_routes(&k.device)
            .iter()
            .all(|r| a.routes.contains(r))
}

async fn status(cfg: &Config, store: &mut Store, json: bool) -> anyhow::Result<()> {
    let state = store.guard_state()?;
    let (expected, _) = guard::expected(store)?;
    let known = store.known_now()?.clone();
    // The root side's decision (changing nothing) and its table.
    let decision =
        crate::privileged::guard_plan(&cfg.source.privileged_socket, guard::RELAY_TIMEOUT).await;
    let read =
        crate::privileged::guard_read(&cfg.source.privileged_socket, guard::RELAY_TIMEOUT).await;
    let d = decision.as_ref().ok().cloned().unwrap_or_default();
    let approvals = d.approvals.clone();
    let left_out = d.left_out.clone();
    let api = crate::source::localapi::LocalApi::new(&cfg.source.socket, cfg.source.timeout);
    let tun = api.tun().await.ok().flatten();
    let trust = api.doors_view().await;
    let doors: Vec<Door> = match &trust {
        Ok(t) => open_doors(t, tun),
        Err(_) => Vec::new(),
    };
    let remote = trust.as_ref().is_ok_and(|t| t.remote_config == Some(true));
    let (enforced, why) = match (&read, cfg.guard.enforcing(), &d.off) {
        (_, false, _) => (false, "[guard] mode is \"off\"".to_owned()),
        (_, true, _) if decision.is_err() => (
            false,
            format!(
                "cannot ask the root side: {}",
                decision.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
            ),
        ),
        (_, true, _) if d.mode != "enforce" => (
            false,
            "the root side's config says mode = \"off\" (it reads the config file, which must be root's and writable by no one else)".to_owned(),
        ),
        (_, true, None) if !d.initialized => (
            false,
            "no device approved yet: `sudo tailscale-monitor guard init` after reviewing the baseline".to_owned(),
        ),
        (_, true, Some(by)) => (
            false,
            format!("turned off with `guard off` by {by}; `guard on` puts it back"),
        ),
        (_, true, None) if tun == Some(false) => (
            false,
            "tailscaled runs in userspace networking mode: there is no kernel interface to filter, and every loopback listener on this host is reachable from the tailnet"
                .to_owned(),
        ),
        (Err(e), true, None) => (
            false,
            format!("cannot read the table through the privileged relay: {e}"),
        ),
        (_, true, None) if d.no_interface => (
            false,
            format!("the interface {} does not exist", d.interface),
        ),
        (Ok(t), true, None) if !t.present => (
            false,
            "the table is not in place (the monitor puts it there at its next pass)".to_owned(),
        ),
        (Ok(t), true, None) if t.differs.is_some() || t.set != d.set => (
            false,
            format!(
                "the table is not what the root side applied: {}",
                t.differs.clone().unwrap_or_else(|| "its approved sets differ".into())
            ),
        ),
        (Ok(_), true, None) if remote => (
            false,
            "RemoteConfig is on: the control plane may change this node's prefs and call its LocalAPI, so it can undo the guard (`tailscale set --remote-config=false`)".to_owned(),
        ),
        (Ok(_), true, None) => (
            true,
            format!(
                "on the kernel path, only approved devices and their approved routes reach this server on {} (replies to its own connections excepted)",
                d.interface
            ),
        ),
    };
    let doors_unread = trust.as_ref().err().map(|e| e.to_string());
    let name = |id: &str| {
        known
            .devices
            .get(&crate::model::StableNodeId(id.to_owned()))
            .map(|k| {
                (
                    k.device.display_name().to_owned(),
                    k.device.addresses.join(", "),
                    k.removed,
                )
            })
    };
    let blocked = store.blocked()?;
    if json {
        let v = serde_json::json!({
            "mode": if cfg.guard.enforcing() { "enforce" } else { "off" },
            "interface": cfg.guard.interface,
            "enforced": enforced,
            "why": why,
            "unenforced_reason": state.unenforced,
            "tailscaled_doors": match cfg.guard.tailscaled_doors { crate::config::Doors::Report => "report", crate::config::Doors::Close => "close" },
            "doors": doors,
            "doors_unread": doors_unread,
            "left_out": left_out,
            "set": d.set,
            "expected": expected,
            "anomalies": d.anomalies,
            "approved": approvals.iter().map(|a| serde_json::json!({
                "id": a.device.0, "name": name(&a.device.0).map(|n| n.0), "at": a.at, "by": a.by, "routes": a.routes,
            })).collect::<Vec<_>>(),
            "blocked": blocked.iter().map(|b| serde_json::json!({
                "key": b.key, "device": b.device_id, "name": b.device_id.as_deref().and_then(name).map(|n| n.0),
                "first": b.first.to_rfc3339(), "alerted": b.alerted.map(|t| t.to_rfc3339()), "packets": b.packets,
            })).collect::<Vec<_>>(),
            "table": read.as_ref().ok(),
        });
        super::table::print_json(&v)?;
        return Ok(());
    }
    let mut out = String::new();
    out += &format!(
        "mode: {}   interface: {}   tailscaled_doors: {}\n{}: {}\n",
        if cfg.guard.enforcing() {
            "enforce"
        } else {
            "off"
        },
        cfg.guard.interface,
        match cfg.guard.tailscaled_doors {
            crate::config::Doors::Report => "report",
            crate::config::Doors::Close => "close",
        },
        if enforced { "ENFORCED" } else { "NOT ENFORCED" },
        sanitize::line(&why, 300)
    );
    if cfg.guard.enforcing() {
        if let Some(e) = &doors_unread {
            out += &format!(
                "UNKNOWN: the doors tailscaled answers itself could not be read: {}\n",
                sanitize::line(e, 200)
            );
        }
        for d in &doors {
            out += &format!(
                "NOT GUARDED: {}\n    closes it: {}\n",
                sanitize::line(&d.name, 300),
                sanitize::line(&d.fix, 300)
            );
        }
    }
    let rekeyed = |a: &crate::model::guard::Approval| {
        known
            .devices
            .get(&a.device)
            .is_some_and(|k| !k.removed && k.device.node_key.0 != a.node_key)
    };
    out += &format!("\napproved ({}):\n", approvals.len());
    for a in &approvals {
        let (n, addrs, removed) =
            name(&a.device.0).unwrap_or_else(|| ("?".into(), String::new(), true));
        let routes = if a.routes.is_empty() {
            String::new()
        } else {
            format!(" routes {}", a.routes.join(", "))
        };
        out += &format!(
            "  {:<24} {:<16} {:<32} {}{}\n",
            sanitize::line(&n, 24),
            a.device.0,
            sanitize::line(&format!("{addrs}{routes}"), 60),
            sanitize::line(&format!("{} by {}", a.at, a.by), 80),
            if removed {
                " (left the tailnet)"
            } else if rekeyed(a) {
                " (NEW NODE KEY since: blocked until approved again)"
            } else {
                ""
            }
        );
    }
    if !left_out.is_empty() {
        out += &format!("\nleft out, though approved ({}):\n", left_out.len());
        for l in &left_out {
            let n = name(&l.device).map_or_else(|| l.device.clone(), |n| n.0);
            let by = name(&l.by).map_or_else(|| l.by.clone(), |n| n.0);
            out += &format!(
                "  {} of {}: the unapproved {} may send from it too ({})\n",
                l.net,
                sanitize::line(&n, 40),
                sanitize::line(&by, 40),
                sanitize::line(&l.claim, 60)
            );
        }
    }
    if !d.anomalies.is_empty() {
        out += &format!(
            "\npeers without an identity of their own ({}), never approved:\n",
            d.anomalies.len()
        );
        for a in &d.anomalies {
            out += &format!(
                "  {} {}\n",
                sanitize::line(&a.node_key, 90),
                if a.what == "no_stable_id" {
                    "has no stable ID".to_owned()
                } else {
                    format!("shares the stable ID {}", sanitize::line(&a.id, 40))
                }
            );
        }
    }
    if decision.is_ok() && expected != d.set {
        out += "\nthe root side's set is not what the monitor computes from /status (see `--json`: set, expected)\n";
    }
    let approvals_by: std::collections::BTreeMap<_, _> =
        approvals.iter().map(|a| (&a.device, a)).collect();
    let waiting: Vec<&KnownDevice> = known
        .devices
        .values()
        .filter(|k| {
            !k.removed
                && !k.device.is_self
                && !approvals_by
                    .get(&k.device.id)
                    .is_some_and(|a| current(a, k))
        })
        .collect();
    out += &format!("\nnot approved ({}):\n", waiting.len());
    for k in waiting {
        let why = match approvals_by.get(&k.device.id) {
            Some(a) if a.node_key == k.device.node_key.0 => " (routes added since its approval)",
            Some(_) => " (new node key)",
            None => "",
        };
        out += &format!(
            "  {:<24} {:<16} {}{why}   (`tailscale-monitor guard approve {}`)\n",
            sanitize::line(k.device.display_name(), 24),
            k.device.id.0,
            sanitize::line(
                &k.device
                    .addresses
                    .iter()
                    .chain(&k.device.routes)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                60
            ),
            k.device.id.0
        );
    }
    // What the table counted, each source with the device it belongs to; else what was recorded.
    match &read {
        Ok(t) if t.present => {
            out += &format!("\nblocked attempts ({} source(s)):\n", t.blocked.len());
            for b in &t.blocked {
                let who = holder(&known, b.addr).map_or_else(
                    || "no device claims it".to_owned(),
                    |(d, r)| {
                        format!(
                            "{}{}",
                            sanitize::line(d.display_name(), 24),
                            r.map_or_else(String::new, |r| format!(" (route {r})"))
                        )
                    },
                );
                out += &format!(
                    "  {:<40} {}/{}: {} packet(s)   {}\n",
                    b.addr,
                    sanitize::line(&b.proto, 8),
                    b.port,
                    b.packets,
                    who
                );
            }
        }
        _ => {
            out += &format!("\nblocked attempts recorded ({}):\n", blocked.len());
            for b in &blocked {
                let n = b
                    .device_id
                    .as_deref()
                    .and_then(name)
                    .map_or_else(|| b.key.clone(), |n| n.0);
                out += &format!(
                    "  {:<24} {} packet(s) since {}\n",
                    sanitize::line(&n, 24),
                    b.packets,
                    b.first.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// `/status` `TUN`, when tailscaled can be asked (`?peers=false`: a few hundred bytes, not the
/// whole tailnet and netmap).
pub(super) async fn known_tun(cfg: &Config) -> Option<bool> {
    let api = crate::source::localapi::LocalApi::new(&cfg.source.socket, cfg.source.timeout);
    api.tun().await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Device;

    fn known(id: &str, host: &str, addrs: &[&str]) -> KnownDevice {
        let mut device = Device::for_tests(id);
        device.hostname = host.into();
        device.addresses = addrs.iter().map(|s| s.to_string()).collect();
        KnownDevice {
            device,
            removed: false,
            expiring_alerted: None,
            last_handshake: None,
            after_baseline: false,
        }
    }

    /// Review G8: a name must match exactly one present device, and an address two devices hold
    /// is refused, never the first of them.
    #[test]
    fn a_device_is_named_exactly_or_not_at_all() {
        let all = vec![
            known("n1", "laptop", &["100.64.0.2"]),
            known("n2", "evil", &["100.64.0.9"]),
            known("n3", "twin", &["100.64.0.9"]),
            known("n4", "laptop", &["100.64.0.4"]),
        ];
        assert_eq!(resolve(&all, "n2").unwrap().device.id.0, "n2");
        assert_eq!(resolve(&all, "100.64.0.2").unwrap().device.id.0, "n1");
        let e = resolve(&all, "100.64.0.9").unwrap_err().to_string();
        assert!(
            e.contains("held by 2 devices") && e.contains("n2, n3"),
            "{e}"
        );
        let e = resolve(&all, "laptop").unwrap_err().to_string();
        assert!(e.contains("names 2 devices"), "{e}");
        assert!(resolve(&all, "nobody").is_err());
    }
}
