//! `guard status|init|approve|revoke|off|on`: the approvals of devices at this server.

use crate::diff::guard::approvable_routes;
use crate::diff::guard::blocked::holder;
use crate::diff::guard::doors::open_doors;
use crate::guard;
use crate::model::guard::{ApprovalChange, Door};
use crate::model::state::KnownDevice;
use crate::model::Event;

use super::*;

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

fn context(explicit: Option<&Path>) -> anyhow::Result<(Config, Store)> {
    let cfg = load(explicit, true)?;
    let store = open_store(explicit)?;
    Ok((cfg, store))
}

/// The known devices `arg` names: a stable ID, an address, or a hostname (or MagicDNS name)
/// that exactly one present device has.
fn resolve<'a>(known: &'a [KnownDevice], arg: &str) -> anyhow::Result<&'a KnownDevice> {
    let present = || known.iter().filter(|k| !k.removed);
    if let Some(k) = known.iter().find(|k| k.device.id.0 == arg) {
        return Ok(k);
    }
    if let Some(k) = present().find(|k| k.device.addresses.iter().any(|a| a == arg)) {
        return Ok(k);
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
        many => bail!(
            "{:?} names {} devices ({}): give the stable ID",
            sanitize::line(arg, 80),
            many.len(),
            many.iter()
                .map(|k| k.device.id.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn change_event(k: &KnownDevice, approved: bool, by: &str) -> Event {
    let name = k.device.display_name();
    let (kind, summary) = if approved {
        (
            EventKind::GuardApproved,
            format!("The guard lets {name} in at this server (approved by {by})"),
        )
    } else {
        (
            EventKind::GuardRevoked,
            format!("The guard shuts {name} out at this server again (revoked by {by})"),
        )
    };
    let mut e = Event::new(kind, Utc::now(), summary);
    e.device = Some(k.device.clone());
    e.detail = format!("by {by}");
    e
}

/// Records `changes` with their events, puts the new set in force at once, and delivers.
async fn commit(
    cfg: &Config,
    store: &mut Store,
    changes: Vec<(KnownDevice, bool)>,
    by: &str,
) -> anyhow::Result<()> {
    let events = changes
        .iter()
        .map(|(k, a)| change_event(k, *a, by))
        .collect();
    let changes = changes
        .into_iter()
        .map(|(k, approved)| ApprovalChange {
            node_key: k.device.node_key.0.clone(),
            routes: approvable_routes(&k.device),
            device: k.device.id,
            approved,
            by: by.to_owned(),
        })
        .collect();
    store.record_approvals(&cfg.routes(), changes, events, Utc::now())?;
    apply_now(cfg, store).await
}

/// Applies the set now (not at the daemon's next pass), says what is in force, and delivers
/// what was queued.
async fn apply_now(cfg: &Config, store: &mut Store) -> anyhow::Result<()> {
    let tun = known_tun(cfg).await;
    let events = guard::enforce(store, cfg, tun, Utc::now()).await?;
    for e in &events {
        eprintln!("{}: {}", e.kind, sanitize::line(&e.summary, 300));
    }
    if !cfg.guard.enforcing() {
        eprintln!("note: [guard] mode is \"off\": recorded, but nothing is enforced until mode = \"enforce\"");
    }
    let _ = monitor::deliver(store, cfg, &monitor::local_hostname(), false).await?;
    Ok(())
}

pub(super) async fn guard(explicit: Option<&Path>, cmd: GuardCommand) -> anyhow::Result<()> {
    let (cfg, mut store) = context(explicit)?;
    let by = guard::local_user();
    let approve = matches!(cmd, GuardCommand::Approve { .. });
    match cmd {
        GuardCommand::Status { json } => status(&cfg, &mut store, json).await,
        GuardCommand::Init | GuardCommand::On => {
            if let GuardCommand::Init = cmd {
                let approved = store.approvals_by_device()?;
                let known: Vec<KnownDevice> = store
                    .known_now()?
                    .devices
                    .values()
                    .filter(|k| {
                        !k.removed
                            && !k.device.is_self
                            && !approved.get(&k.device.id).is_some_and(|a| current(a, k))
                    })
                    .cloned()
                    .collect();
                println!("approving {} device(s) known now", known.len());
                let changes = known.into_iter().map(|k| (k, true)).collect();
                let e = (!store.known_now()?.baseline_done).then_some(());
                if e.is_some() {
                    bail!("no baseline yet: run `tailscale-monitor check` first, review what it reports, then `guard init`");
                }
                guard::turn_on(&mut store, &cfg, true)?;
                commit(&cfg, &mut store, changes, &by).await
            } else {
                guard::turn_on(&mut store, &cfg, false)?;
                println!("the guard is back in force");
                apply_now(&cfg, &mut store).await
            }
        }
        GuardCommand::Approve { devices } | GuardCommand::Revoke { devices } => {
            let approved = store.approvals_by_device()?;
            let known: Vec<KnownDevice> = store.known_now()?.devices.values().cloned().collect();
            let mut changes = Vec::new();
            for d in &devices {
                let k = resolve(&known, d)?;
                let current = approved.get(&k.device.id).is_some_and(|a| current(a, k));
                let listed = approved.contains_key(&k.device.id);
                if (approve && current) || (!approve && !listed) {
                    println!(
                        "{} ({}) is already {}",
                        sanitize::line(k.device.display_name(), 80),
                        k.device.id.0,
                        if approve { "approved" } else { "not approved" }
                    );
                    continue;
                }
                if !changes
                    .iter()
                    .any(|(c, _): &(KnownDevice, bool)| c.device.id == k.device.id)
                {
                    println!(
                        "{} {} ({})",
                        if approve { "approving" } else { "revoking" },
                        sanitize::line(k.device.display_name(), 80),
                        k.device.id.0
                    );
                    changes.push((k.clone(), approve));
                }
            }
            if changes.is_empty() {
                return Ok(());
            }
            commit(&cfg, &mut store, changes, &by).await
        }
        GuardCommand::Off => {
            let mut e = Event::new(
                EventKind::GuardDisabled,
                Utc::now(),
                format!("The guard was turned off by {by}: every device the tailnet policy lets in can reach this server"),
            );
            e.detail = format!("by {by}");
            crate::privileged::guard_remove(&cfg.source.privileged_socket, guard::RELAY_TIMEOUT)
                .await
                .context("removing the guard's table")?;
            guard::turned_off(&mut store, &cfg, &by, e)?;
            println!(
                "the guard is off: its table is removed. `tailscale-monitor guard on` puts it back"
            );
            let _ = monitor::deliver(&mut store, &cfg, &monitor::local_hostname(), false).await?;
            Ok(())
        }
    }
}

/// Whether approval `a` still covers `k`: the same node key, and no route since.
fn current(a: &crate::model::guard::Approval, k: &KnownDevice) -> bool {
    a.node_key == k.device.node_key.0
        && approvable_routes(&k.device)
            .iter()
            .all(|r| a.routes.contains(r))
}

async fn status(cfg: &Config, store: &mut Store, json: bool) -> anyhow::Result<()> {
    let approvals = store.approvals()?;
    let state = store.guard_state()?;
    let (wanted, left_out) = guard::wanted(store)?;
    let known = store.known_now()?.clone();
    let read =
        crate::privileged::guard_read(&cfg.source.privileged_socket, guard::RELAY_TIMEOUT).await;
    let api = crate::source::localapi::LocalApi::new(&cfg.source.socket, cfg.source.timeout);
    let tun = api.tun().await.ok().flatten();
    let trust = api.doors_view().await;
    let doors: Vec<Door> = match &trust {
        Ok(t) => open_doors(t, tun),
        Err(_) => Vec::new(),
    };
    let remote = trust.as_ref().is_ok_and(|t| t.remote_config == Some(true));
    let (enforced, why) = match (&read, cfg.guard.enforcing(), &state.off) {
        (_, false, _) => (false, "[guard] mode is \"off\"".to_owned()),
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
        (Ok(t), true, None) if !t.present => (
            false,
            "the table is not in place (the monitor puts it there at its next pass)".to_owned(),
        ),
        (Ok(t), true, None) if t.set != wanted || t.foreign => (
            false,
            "the table differs from the approvals (the monitor applies them at its next pass)"
                .to_owned(),
        ),
        (Ok(_), true, None) if remote => (
            false,
            "RemoteConfig is on: the control plane may change this node's prefs and call its LocalAPI, so it can undo the guard (`tailscale set --remote-config=false`)".to_owned(),
        ),
        (Ok(_), true, None) => (
            true,
            format!(
                "on the kernel path, only approved devices and their approved routes reach this server on {} (replies to its own connections excepted)",
                cfg.guard.interface
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
            "approved": approvals.iter().map(|a| serde_json::json!({
                "id": a.device.0, "name": name(&a.device.0).map(|n| n.0), "at": a.at, "by": a.by, "routes": a.routes,
            })).collect::<Vec<_>>(),
            "blocked": blocked.iter().map(|b| serde_json::json!({
                "key": b.key, "device": b.device_id, "name": b.device_id.as_deref().and_then(name).map(|n| n.0),
                "first": b.first.to_rfc3339(), "alerted": b.alerted.map(|t| t.to_rfc3339()), "packets": b.packets,
            })).collect::<Vec<_>>(),
            "table": read.as_ref().ok(),
        });
        println!(
            "{}",
            sanitize::json_text(&serde_json::to_string_pretty(&v)?)
        );
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
            let n = name(&l.device.0).map_or_else(|| l.device.0.clone(), |n| n.0);
            let by = name(&l.by.0).map_or_else(|| l.by.0.clone(), |n| n.0);
            out += &format!(
                "  {} of {}: the unapproved {} may send from it too ({})\n",
                l.net,
                sanitize::line(&n, 40),
                sanitize::line(&by, 40),
                sanitize::line(&l.claim, 60)
            );
        }
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
