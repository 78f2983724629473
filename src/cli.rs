//! Command-line interface: clap definitions, and each subcommand's output.
//!
//! Output meant for terminals passes through the sanitizer: device names in `devices`, `events`
//! and `check` come from whoever registered the device.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::model::{EventKind, Severity};
use crate::monitor::{self, PassReport};
use crate::notify::{render, DeliveryReport};
use crate::sanitize;
use crate::source::{sim, Source};
use crate::store::{OutboxDepth, Store};

#[derive(Parser, Debug)]
#[command(
    name = "tailscale-monitor",
    version = VERSION,
    about = "Alerts when devices join, change or connect in your Tailscale or Headscale tailnet",
    long_about = None
)]
pub struct Cli {
    /// Config file [default: /etc/tailscale-monitor/config.toml]
    #[arg(
        long,
        global = true,
        env = "TAILSCALE_MONITOR_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::VERSION;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One pass for cron or Nagios: read the tailnet, record and mail changes, print one status line.
    /// Exit 0 nothing new, 1 warning-level changes (or undelivered alerts), 2 a new device or user,
    /// wider access to this server or Tailnet Lock disabled, 3 the tailnet could not be read or the
    /// config is bad.
    Check,
    /// The daemon: follows tailscaled's IPN bus in real time (full re-reads every `reconcile`, or
    /// every `interval` without the bus), retries deliveries with backoff, SIGHUP reloads the config.
    Run,
    /// Known devices: name, user, IPs, OS, first and last seen.
    Devices {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Include devices that have left the tailnet.
        #[arg(long)]
        all: bool,
    },
    /// Who may reach this server now, as tailscaled was told (its packet filter and SSH policy):
    /// one row per source with who it is, the ports and protocols, and the SSH users; then this
    /// node's Tailnet Lock, Tailscale SSH, routes and update state. Only rules that target this
    /// node are visible here, nothing about other servers.
    Access {
        /// Machine-readable JSON (the canonical model).
        #[arg(long)]
        json: bool,
    },
    /// The hardening audit: each check with its severity, pass / fail / unknown, the evidence
    /// (the value read and where from) and the fix. Reads the control plane ([control]), this
    /// node (LocalAPI) and this server's files. Exit codes as Nagios: 0 nothing fails, 1 a
    /// warning or info check fails, 2 a critical one, 3 nothing could be read.
    Posture {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// The event log, newest first.
    Events {
        /// Only events since this time: RFC 3339 (2026-11-24T08:00:00Z) or an age (90m, 2d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Machine-readable JSON (one array).
        #[arg(long)]
        json: bool,
        /// At most this many events.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Sends a clearly marked test message through every configured channel (or one) and reports,
    /// per channel, success or the exact error. Exit 1 if any channel failed.
    TestNotify {
        /// Only this channel (its `name`, or its kind when unnamed).
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Verifies the event log: its hash chain, and that each anchor (printed at the foot of every
    /// alert) still matches, which proves the log was not rewritten since that alert went out.
    /// Exit 0 intact, 2 altered.
    Audit {
        /// `ID:HASH` as printed at the foot of an alert ("Log anchor: …"); repeatable.
        #[arg(long = "anchor", value_name = "ID:HASH")]
        anchors: Vec<String>,
    },
    /// Prints the man page, tailscale-monitor(1), in roff (`… man | man -l -`).
    Man,
    /// Prints a shell completion script (bash, zsh or fish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Runs the whole pipeline against a built-in simulated tailnet and prints the alerts
    /// (and mails them too when --config names a file with e-mail channels).
    Demo,
    /// The privileged relay (run as root): reads this node's packet filter and SSH policy from
    /// tailscaled for the unprivileged monitor, which tailscaled 1.104 and later serve only to
    /// root. Started per connection by tailscale-monitor-privileged.socket (`--stdio`), or as a
    /// foreground server where there is no systemd (`--listen`).
    Privileged {
        /// Serve the one connection on standard input (systemd socket activation, Accept=yes).
        #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
        stdio: bool,
        /// Create the socket at PATH (mode 0660, group --group) and serve until killed.
        #[arg(long, value_name = "PATH")]
        listen: Option<PathBuf>,
        /// The group whose members may ask (besides root): the monitor's.
        #[arg(long, value_name = "NAME", default_value = "tailscale-monitor")]
        group: String,
        /// tailscaled's LocalAPI socket.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/var/run/tailscale/tailscaled.sock"
        )]
        socket: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validates the config and prints the effective configuration, secrets redacted.
    Check,
}

/// Loads the config: an explicit path must exist; the default path may be missing when
/// `optional` (then defaults apply).
fn load(explicit: Option<&Path>, optional: bool) -> anyhow::Result<Config> {
    match explicit {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let p = Path::new(config::DEFAULT_PATH);
            if optional && !p.exists() {
                Ok(Config::defaults())
            } else {
                Ok(Config::load(p)?)
            }
        }
    }
}

pub async fn main(cli: Cli) -> ExitCode {
    let explicit = cli.config.as_deref();
    let result = match cli.command {
        Command::Check => return check(explicit).await,
        Command::Run => match load(explicit, false) {
            // A store that cannot even be opened ends `run` (systemd restarts it): alert it first,
            // at most hourly, so that a restart loop is not silent.
            Ok(cfg) => {
                let opened = Store::open(&cfg.state_dir).and_then(|mut s| {
                    store_recovered(&cfg, &mut s)?;
                    Ok(s)
                });
                match opened {
                    Err(e) => Err(anyhow::anyhow!(
                        store_unusable(&cfg, &monitor::local_hostname(), &e, "run").await
                    )),
                    // The recovery, if any, is queued: `run` delivers it at startup.
                    Ok(store) => crate::daemon::run(explicit.map(Path::to_owned), cfg, store).await,
                }
            }
            Err(e) => Err(e),
        },
        Command::Devices { json, all } => devices(explicit, json, all),
        Command::Access { json } => access(explicit, json).await,
        Command::Posture { json } => match posture(explicit, json).await {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Events { since, json, limit } => events(explicit, since.as_deref(), json, limit),
        Command::Config {
            command: ConfigCommand::Check,
        } => load(explicit, false).map(|c| {
            print!("{}", c.render());
            if c.channels.is_empty() {
                eprintln!("warning: no [[notify]] channel: alerts are only logged");
            }
            // A watch that matches no known device is most likely a typo.
            if !c.policy.watches.is_empty() && c.state_dir.join("state.db").exists() {
                if let Ok(known) = Store::open(&c.state_dir).and_then(|s| s.known()) {
                    for w in &c.policy.watches {
                        if !known
                            .devices
                            .values()
                            .any(|k| !k.removed && w.matches(&k.device))
                        {
                            eprintln!(
                                "warning: [[watch]] \"{}\" matches no device this server knows ({})",
                                sanitize::line(&w.name, 60),
                                sanitize::line(&w.devices.join(", "), 200)
                            );
                        }
                    }
                }
            }
            eprintln!(
                "config OK: {}",
                c.path
                    .as_deref()
                    .unwrap_or(Path::new("(defaults)"))
                    .display()
            );
        }),
        Command::Demo => demo(explicit).await,
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map(|()| {
                    let _ = std::io::stdout().write_all(&out);
                })
                .map_err(anyhow::Error::from)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tailscale-monitor", &mut out);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(&out);
            Ok(())
        }
        Command::Audit { anchors } => match audit(explicit, &anchors) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Command::TestNotify { channel } => test_notify(explicit, channel.as_deref()).await,
        Command::Privileged {
            stdio,
            listen,
            group,
            socket,
        } => privileged(stdio, listen.as_deref(), &group, socket).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailscale-monitor: {}", sanitize::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A hash read from the database, as it may reach a terminal: 64 hex digits, or what it is not
/// (a stored value with escape sequences must not repaint `audit`'s verdict).
fn shown_hash(h: &str) -> String {
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        h.to_owned()
    } else {
        format!("(not a hash: {} bytes)", h.len())
    }
}

/// Nagios-style status line and exit code for one `check`.
pub fn status_line(
    report: &PassReport,
    delivery: &DeliveryReport,
    outbox: &OutboxDepth,
) -> (String, u8) {
    let s = |v: &str| sanitize::line(v, 60);
    let (devices, users) = match &report.seen {
        Ok(snap) => (snap.devices.len(), snap.users.len()),
        Err(_) => (0, 0),
    };
    let perf = format!(
        "| devices={devices} users={users} events={} outbox={}",
        report.events.len(),
        outbox.pending
    );
    if let Err(e) = &report.seen {
        return (
            format!(
                "TAILSCALE UNKNOWN - {} {perf}",
                sanitize::line(&e.0, 300).replace('|', "¦")
            ),
            3,
        );
    }
    let new_member = report.events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::DeviceNew
                | EventKind::UserNew
                | EventKind::AccessWidened
                | EventKind::AccessSshWidened
                | EventKind::NodeTailnetLockDisabled
                | EventKind::NodeTailnetChanged
        )
    });
    let mut code = if new_member {
        2
    } else if report.max_severity() >= Some(Severity::Warning) {
        1
    } else {
        0
    };
    let mut text = if report.events.is_empty() {
        format!("{devices} devices, {users} users, nothing new")
    } else if report
        .events
        .iter()
        .any(|e| e.kind == EventKind::MonitorBaseline)
    {
        format!("baseline recorded: {devices} devices, {users} users (sent for review)")
    } else {
        let items: Vec<String> = report
            .events
            .iter()
            .take(5)
            .map(|e| match &e.device {
                Some(d) => format!("{} {}", e.kind, s(d.display_name())),
                None => match &e.user {
                    Some(u) => format!("{} {}", e.kind, s(&u.login)),
                    None => e.kind.to_string(),
                },
            })
            .collect();
        let more = report.events.len().saturating_sub(5);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("{}{more}", items.join(", "))
    };
    // A part of the node view that cannot be read is a warning, never UNKNOWN: membership was
    // read and diffed; what is not visible is said, with the fix.
    if let Some(view) = report.seen.as_ref().ok().and_then(|s| s.node.as_ref()) {
        for u in &view.unread {
            code = code.max(1);
            text += &format!(
                "; not visible: {} ({}). Fix: {}",
                u.part.what(),
                sanitize::line(&u.error, 700),
                sanitize::line(&u.fix, 500)
            );
        }
    }
    if let Some(e) = &report.control_error {
        code = code.max(1);
        text += &format!(
            " (control plane unreadable: {})",
            sanitize::line(&e.message, 200)
        );
    }
    if outbox.failing > 0 {
        code = code.max(1);
        let why = delivery
            .failed
            .first()
            .map(|(c, e)| format!("{c}: {e}"))
            .or_else(|| outbox.last_error.clone())
            .map(|e| format!(" ({})", sanitize::line(&e, 200)))
            .unwrap_or_default();
        text += &format!(
            "; {} alert(s) not delivered yet, will retry{why}",
            outbox.failing
        );
    }
    let label = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][code as usize];
    // `|` starts the perfdata: one in a device name must not end the text early.
    let text = text.replace('|', "¦");
    (format!("TAILSCALE {label} - {text} {perf}"), code)
}

/// Marks, in the state directory, that `check` (or `run` at startup) has alerted a store failure:
/// at most one such alert per [`STORE_ALERT_EVERY`] however often cron or systemd retries, and a
/// `monitor.store_recovered` once it works again.
const STORE_FAILED_MARK: &str = "store-failed";
const STORE_ALERT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

async fn check(explicit: Option<&Path>) -> ExitCode {
    // Also on stderr: cron discards stdout (`>/dev/null`) but mails stderr.
    let unknown = |msg: String| {
        let msg = sanitize::line(&msg, 500);
        println!("TAILSCALE UNKNOWN - {msg}");
        eprintln!("tailscale-monitor: {msg}");
        ExitCode::from(3)
    };
    let cfg = match load(explicit, false) {
        Ok(c) => c,
        Err(e) => return unknown(sanitize::error_line(&e)),
    };
    let host = monitor::local_hostname();
    let store_failed = |e: crate::store::StoreError| {
        let (cfg, host) = (&cfg, &host);
        async move { unknown(store_unusable(cfg, host, &e, "check").await) }
    };
    let mut store = match Store::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return store_failed(e).await,
    };
    let source = Source::from_config(&cfg.source);
    let control = cfg
        .control
        .as_ref()
        .map(|c| crate::source::control::ControlSource::new(c, crate::source::control::TIMEOUT));
    let report = match monitor::observe(
        &source,
        control.as_ref(),
        control
            .is_some()
            .then(|| crate::source::server::facts(&cfg)),
        &mut store,
        &cfg.routes(),
        &cfg.policy,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return store_failed(e).await,
    };
    if let Err(e) = store_recovered(&cfg, &mut store) {
        return store_failed(e).await;
    }
    if let Err(e) =
        crate::digest::record_if_due(&mut store, &cfg.routes(), cfg.digest_every, Utc::now())
    {
        return store_failed(e).await;
    }
    let delivery = match monitor::deliver(&mut store, &cfg, &host, true).await {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    let outbox = match store.outbox_depth() {
        Ok(d) => d,
        Err(e) => return store_failed(e).await,
    };
    let (line, code) = status_line(&report, &delivery, &outbox);
    println!("{line}");
    ExitCode::from(code)
}

/// A state database that `cmd` (`check`, or `run` at startup) cannot use: alerts it straight to
/// the channels at most once per [`STORE_ALERT_EVERY`] (remembered by an empty file in the state
/// directory, since the database cannot), unless the invoking user merely may not open it. Returns
/// the one-line message for the terminal.
async fn store_unusable(
    cfg: &Config,
    host: &str,
    e: &crate::store::StoreError,
    cmd: &str,
) -> String {
    let error = e.to_string();
    if e.is_access_denied() {
        return format!(
            "{error} (run `{cmd}` as the user that owns the state, e.g. `runuser -u tailscale-monitor -- tailscale-monitor {cmd}`)"
        );
    }
    let mark = cfg.state_dir.join(STORE_FAILED_MARK);
    // Never through a link the service user may have planted (F7): lstat, and O_NOFOLLOW.
    let recent = std::fs::symlink_metadata(&mark)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < STORE_ALERT_EVERY));
    if !recent {
        let mut told = Vec::new();
        let db = cfg.state_dir.join("state.db");
        monitor::alert_store_failed(cfg, host, &db, Utc::now(), &error, &mut told).await;
        if !told.is_empty() {
            // An empty file: creating it needs no free blocks. If even that fails, the next
            // attempt alerts again, which is the safe side.
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&mark);
        }
    }
    error
}

/// Once the store works: if an earlier `check` or `run` start alerted a store failure, log
/// `monitor.store_recovered` (delivered with the rest) and clear the mark.
fn store_recovered(cfg: &Config, store: &mut Store) -> Result<(), crate::store::StoreError> {
    let mark = cfg.state_dir.join(STORE_FAILED_MARK);
    let Ok(meta) = std::fs::symlink_metadata(&mark) else {
        return Ok(());
    };
    let since = meta
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    monitor::record_store_recovered(store, &cfg.routes(), since, None)?;
    let _ = std::fs::remove_file(&mark);
    Ok(())
}

fn parse_since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .with_context(|| format!("--since `{s}`: further back than time goes")),
        Err(_) => bail!(
            "--since `{s}`: expected an RFC 3339 time (2026-11-24T08:00:00Z) or an age (90m, 2d)"
        ),
    }
}

fn open_store(explicit: Option<&Path>) -> anyhow::Result<Store> {
    let cfg = load(explicit, true)?;
    let db = cfg.state_dir.join("state.db");
    match db.try_exists() {
        Ok(true) => {}
        Ok(false) => bail!(
            "no state in {} yet: run `tailscale-monitor check` or `run` first",
            cfg.state_dir.display()
        ),
        // Typically a state directory of the service user, read by someone else.
        Err(e) => bail!(
            "{}: {e} (run this as the user that runs the monitor, e.g. `runuser -u tailscale-monitor -- tailscale-monitor …`)",
            db.display()
        ),
    }
    Ok(Store::open(&cfg.state_dir)?)
}

fn devices(explicit: Option<&Path>, json: bool, all: bool) -> anyhow::Result<()> {
    let store = open_store(explicit)?;
    let mut rows = store.devices()?;
    rows.retain(|r| all || !r.known.removed);
    let known = store.known()?;
    let users = known.users;
    // The control view, when `[control]` is configured: which devices this node cannot see.
    let control = known.control;
    let hidden: Vec<&crate::model::control::ControlDevice> = control
        .as_ref()
        .map(|c| {
            c.devices
                .values()
                .filter(|d| {
                    !rows
                        .iter()
                        .any(|r| r.known.device.id == d.id && !r.known.removed)
                })
                .collect()
        })
        .unwrap_or_default();
    // Watched devices first ([[watch]]), each with its presence.
    let presence = store.presence()?.unwrap_or_default();
    rows.sort_by(|a, b| {
        let w = |r: &crate::store::DeviceRow| !presence.devices.contains_key(&r.known.device.id);
        (w(a), a.known.device.display_name()).cmp(&(w(b), b.known.device.display_name()))
    });
    let state = |d: &crate::model::Device| {
        presence.devices.get(&d.id).map(|t| {
            format!(
                "{} since {} (watch {})",
                if t.online { "online" } else { "offline" },
                t.since.format("%Y-%m-%d %H:%M"),
                sanitize::line(&t.watch, 30)
            )
        })
    };
    let login = |d: &crate::model::Device| {
        users
            .get(&d.user_id)
            .map_or_else(|| d.user_id.to_string(), |u| u.user.login.clone())
    };
    let view = |d: &crate::model::Device| match &control {
        None => "node",
        Some(c) if c.devices.contains_key(&d.id) => "both",
        Some(_) if d.shared => "node (shared in)",
        Some(_) => "node only",
    };
    let mut out = std::io::stdout().lock();
    if json {
        let mut v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "device": r.known.device,
                    "user": login(&r.known.device),
                    "removed": r.known.removed,
                    "first_seen": r.first_seen,
                    "last_seen": r.last_seen,
                    "view": view(&r.known.device),
                    "presence": presence.devices.get(&r.known.device.id),
                })
            })
            .collect();
        v.extend(hidden.iter().map(|d| {
            serde_json::json!({
                "device": crate::diff::control::as_device(d),
                "user": d.user,
                "removed": false,
                "view": "control only",
                "authorized": d.authorized,
            })
        }));
        writeln!(
            out,
            "{}",
            sanitize::json_text(&serde_json::to_string_pretty(&v)?)
        )?;
        return Ok(());
    }
    let s = |v: &str, n| sanitize::line(v, n);
    writeln!(
        out,
        "{:<24} {:<28} {:<34} {:<10} {:<20} {:<20} VIEW",
        "NAME", "USER", "ADDRESSES", "OS", "FIRST SEEN", "LAST SEEN"
    )?;
    for r in &rows {
        let d = &r.known.device;
        let mut name = s(d.display_name(), 22);
        if d.is_self {
            name += "*";
        }
        if r.known.removed {
            name += " (gone)";
        }
        writeln!(
            out,
            "{:<24} {:<28} {:<34} {:<10} {:<20} {:<20} {}{}",
            name,
            s(&login(d), 28),
            s(&d.addresses.join(","), 34),
            s(&d.os, 10),
            r.first_seen.format("%Y-%m-%d %H:%M"),
            r.last_seen.format("%Y-%m-%d %H:%M"),
            view(d),
            state(d).map_or(String::new(), |x| format!("; {x}")),
        )?;
    }
    for d in &hidden {
        writeln!(
            out,
            "{:<24} {:<28} {:<34} {:<10} {:<20} {:<20} control only{}",
            s(&d.hostname, 22),
            s(&d.user, 28),
            s(&d.addresses.join(","), 34),
            s(&d.os, 10),
            d.created
                .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            "-",
            if d.authorized {
                ""
            } else {
                ", waiting for approval"
            },
        )?;
    }
    let mut summary = format!("{} device(s)", rows.len() + hidden.len());
    if control.is_some() {
        summary += &format!(
            ", {} not visible to this server (see README: What one node can see)",
            hidden.len()
        );
    }
    writeln!(out, "{summary}; * = this server")?;
    Ok(())
}

/// `posture`: the report, and its Nagios exit code.
async fn posture(explicit: Option<&Path>, json: bool) -> anyhow::Result<u8> {
    use crate::model::posture::Status;
    let cfg = load(explicit, true)?;
    let source = crate::source::Source::from_config(&cfg.source);
    let node = source.snapshot().await;
    let control = cfg
        .control
        .as_ref()
        .map(|c| crate::source::control::ControlSource::new(c, crate::source::control::TIMEOUT));
    let control_read = match &control {
        Some(c) => Some(c.snapshot().await),
        None => None,
    };
    let note = match &control_read {
        None => "no [control] configured".to_owned(),
        Some(Err(e)) => e.to_string(),
        Some(Ok(_)) => String::new(),
    };
    let server = crate::source::server::facts(&cfg);
    let report = crate::posture::evaluate(&crate::posture::Inputs {
        control: control_read.as_ref().and_then(|r| r.as_ref().ok()),
        control_note: &note,
        node: node.as_ref().ok(),
        server: Some(&server),
        now: Utc::now(),
    });
    let code = match (report.worst_failure(), &node, &control_read) {
        (_, Err(_), None | Some(Err(_))) => 3,
        (Some(crate::model::Severity::Critical), _, _) => 2,
        (Some(_), _, _) => 1,
        (None, _, _) => 0,
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            sanitize::json_text(&serde_json::to_string_pretty(&report)?)
        )?;
        return Ok(code);
    }
    let s = |v: &str, n| sanitize::line(v, n);
    if let Err(e) = &node {
        writeln!(out, "tailscaled: {}", s(&e.to_string(), 300))?;
    }
    if !note.is_empty() {
        writeln!(out, "control plane: {}", s(&note, 300))?;
    }
    writeln!(out, "{:<6} {:<9} {:<8} CHECK", "ID", "SEVERITY", "STATUS")?;
    for f in &report.findings {
        writeln!(
            out,
            "{:<6} {:<9} {:<8} {}",
            f.id,
            f.severity.as_str(),
            f.status.as_str(),
            s(&f.title, 100)
        )?;
    }
    writeln!(out, "\nposture: {}", report.summary())?;
    for f in report
        .findings
        .iter()
        .filter(|f| matches!(f.status, Status::Fail | Status::Unknown | Status::Manual))
    {
        writeln!(
            out,
            "\n{} {} — {}",
            f.id,
            f.status.as_str(),
            s(&f.title, 100)
        )?;
        writeln!(out, "  evidence: {}", s(&f.evidence, 600))?;
        if !f.fix.is_empty() {
            writeln!(out, "  fix: {}", s(&f.fix, 600))?;
        }
    }
    Ok(code)
}

async fn access(explicit: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let cfg = load(explicit, true)?;
    let source = crate::source::Source::from_config(&cfg.source);
    let mut snap = source.snapshot().await?;
    let Some(view) = snap.node.as_ref() else {
        anyhow::bail!(
            "who may reach this node is not available from [tailscale] source = \"cli\"; use the LocalAPI source"
        );
    };
    if let Some(u) = view.unread(crate::model::access::Part::Access) {
        // Never an empty table: that would read as "nobody can reach this server".
        anyhow::bail!(
            "who can reach this server is not visible: {}. Fix: {}",
            u.error,
            u.fix
        );
    }
    if view.rules.is_none() {
        anyhow::bail!("this tailscaled's netmap carries no packet filter the monitor can read");
    }
    if let crate::source::Source::LocalApi(api) = &source {
        monitor::whois_sources(api, &mut snap).await;
    }
    let view = snap.node.clone().expect("checked above");
    let model = crate::diff::access::canonical(&view, &snap);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            sanitize::json_text(&serde_json::to_string_pretty(&model)?)
        )?;
        return Ok(());
    }
    let s = |v: &str, n| sanitize::line(v, n);
    let rows = model.rows();
    writeln!(out, "{:<26} {:<46} {:<30} SSH AS", "SOURCE", "WHO", "PORTS")?;
    for r in &rows {
        writeln!(
            out,
            "{:<26} {:<46} {:<30} {}",
            s(&r.source, 26),
            s(&r.who, 46),
            s(&r.ports, 60),
            s(&r.ssh, 60)
        )?;
    }
    writeln!(
        out,
        "{} source(s) may reach {} (only rules that target this node are visible here)",
        rows.len(),
        s(snap.self_name(), 40)
    )?;
    let t = &model.trust;
    let unknown = || "unknown".to_owned();
    writeln!(
        out,
        "Tailnet Lock: {}; Tailscale SSH server: {}; advertised routes: {}; update: {}",
        t.tailnet_lock
            .as_ref()
            .map_or_else(unknown, |l| if l.enabled {
                format!("enabled ({} trusted keys)", l.trusted_keys.len())
            } else {
                "disabled".into()
            }),
        t.ssh_server
            .map_or_else(unknown, |b| if b { "on" } else { "off" }.into()),
        t.advertised_routes
            .as_ref()
            .map_or_else(unknown, |r| if r.is_empty() {
                "none".into()
            } else {
                s(&r.join(", "), 200)
            }),
        t.update_available.as_ref().map_or_else(
            || "up to date".into(),
            |v| format!("{} available", s(v, 40))
        ),
    )?;
    Ok(())
}

fn events(
    explicit: Option<&Path>,
    since: Option<&str>,
    json: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let store = open_store(explicit)?;
    let since = since.map(|s| parse_since(s, Utc::now())).transpose()?;
    let events = store.events(since, limit)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<serde_json::Value> = events
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(&l.event).expect("event serializes");
                v["id"] = l.id.into();
                v["pass"] = l.pass.into();
                v
            })
            .collect();
        writeln!(
            out,
            "{}",
            sanitize::json_text(&serde_json::to_string_pretty(&v)?)
        )?;
        return Ok(());
    }
    for l in &events {
        let e = &l.event;
        writeln!(
            out,
            "{}  {:<8} {:<26} {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.severity,
            e.kind,
            sanitize::line(&e.summary, 200)
        )?;
    }
    if let Some((bad, why)) = store.verify_log()? {
        writeln!(
            out,
            "WARNING: the event log was altered at or after event #{bad} ({why})"
        )?;
    }
    Ok(())
}

/// `audit`: true when the log is intact and every anchor matches.
fn audit(explicit: Option<&Path>, anchors: &[String]) -> anyhow::Result<bool> {
    let parsed: Vec<(i64, String)> = anchors
        .iter()
        .map(|a| {
            a.split_once(':')
                .and_then(|(id, h)| {
                    let h = h.trim().to_ascii_lowercase();
                    let ok = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
                    Some((id.trim().parse::<i64>().ok()?, h)).filter(|_| ok)
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--anchor `{}`: expected ID:HASH (a number, a colon, 64 hex digits) as printed at the foot of an alert",
                        sanitize::line(a, 100)
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    let store = open_store(explicit)?;
    let (count, head) = store.log_head()?;
    let newest_anchor = parsed.iter().map(|(id, _)| *id).max();
    let mut intact = true;
    match store.verify_log()? {
        Some((bad, why)) => {
            println!("ALTERED: the event log breaks at event #{bad}: {why}");
            intact = false;
        }
        None => match &head {
            Some((id, hash)) => {
                println!(
                    "event log chain intact: {count} events, head {id}:{}",
                    shown_hash(hash)
                )
            }
            None => println!("event log empty"),
        },
    }
    for (id, want) in parsed {
        match store.event_hash(id)? {
            Some(h) if h == want => println!("anchor {id}:{want} matches"),
            Some(h) => {
                println!("ALTERED: event #{id} now hashes to {}, the anchor says {want}: the log was rewritten after that alert was sent", shown_hash(&h));
                intact = false;
            }
            None => {
                println!("ALTERED: event #{id} of anchor {id}:{want} is not in the log: it was truncated or replaced");
                intact = false;
            }
        }
    }
    // The newest anchor that left in a delivered message: a log that now ends before it, or
    // says something else there, lost its tail (F8). Whoever can write state.db can rewrite this
    // record too; the anchor in the mailbox is what they cannot reach.
    if let Some(c) = store.checkpoint()? {
        let when = c.at.format("%Y-%m-%d %H:%M UTC");
        let channel = sanitize::line(&c.channel, 60);
        match store.event_hash(c.id)? {
            Some(h) if h == c.hash => {}
            Some(_) => {
                println!("ALTERED: event #{} no longer hashes as in the alert sent through {channel} at {when}", c.id);
                intact = false;
            }
            None => {
                println!(
                    "ALTERED: the log holds {count} events and ends at #{}, but the alert sent through {channel} at {when} carried anchor #{}: events were deleted",
                    head.as_ref().map_or(0, |h| h.0),
                    c.id
                );
                intact = false;
            }
        }
    }
    let unlogged = store.unlogged_devices()?;
    if !unlogged.is_empty() {
        println!(
            "ALTERED: {} known device(s) that no logged event names (written into the known state, so never alerted): {}",
            unlogged.len(),
            unlogged
                .iter()
                .take(10)
                .map(|id| sanitize::line(id, 40))
                .collect::<Vec<_>>()
                .join(", ")
        );
        intact = false;
    }
    // What no anchor given can vouch for: rows after the newest one (F8). Keep the anchor of the
    // newest alert or digest to cover them.
    if let (Some(newest), Some((head, _))) = (newest_anchor, &head) {
        if *head > newest {
            println!(
                "note: {} event(s) after your newest anchor #{newest} cannot be verified by it (the head is {head}); give the anchor of a later alert or digest",
                head - newest
            );
        }
    }
    Ok(intact)
}

async fn test_notify(explicit: Option<&Path>, only: Option<&str>) -> anyhow::Result<()> {
    let cfg = load(explicit, false)?;
    let names: Vec<&str> = cfg.channels.iter().map(|c| c.name.as_str()).collect();
    let chosen: Vec<_> = cfg
        .channels
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
        .collect();
    if chosen.is_empty() {
        match only {
            Some(n) => bail!("no channel named `{n}` (configured: {})", names.join(", ")),
            None => bail!("no [[notify]] channel configured"),
        }
    }
    let host = monitor::local_hostname();
    let cx = render::Context::new(&host);
    let mut failed = 0;
    for ch in chosen {
        let e = crate::model::Event::new(
            EventKind::MonitorTest,
            Utc::now(),
            format!(
                "TEST notification from tailscale-monitor on {host} through channel {}",
                ch.name
            ),
        );
        match crate::notify::send(ch, &cx, &[&e], true).await {
            Ok(()) => println!("{} ({}): ok", ch.name, ch.kind.as_str()),
            Err(err) => {
                failed += 1;
                println!(
                    "{} ({}): FAILED — {}",
                    ch.name,
                    ch.kind.as_str(),
                    sanitize::line(&err.message, 500)
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} channel(s) failed");
    }
    Ok(())
}

/// `privileged`: the root side. It reads no config file (the monitor's user can influence what
/// the monitor reads; nothing of the monitor's reaches this side but the request line).
async fn privileged(
    stdio: bool,
    listen: Option<&Path>,
    group: &str,
    socket: PathBuf,
) -> anyhow::Result<()> {
    use crate::privileged::server;
    let opts = server::Options {
        tailscaled: socket,
        gid: Some(server::group_id(group)?),
    };
    match (stdio, listen) {
        (true, _) => server::serve_stdio(opts).await,
        (false, Some(path)) => server::listen(path, opts).await,
        (false, None) => bail!("give --stdio or --listen PATH"),
    }
}

async fn demo(explicit: Option<&Path>) -> anyhow::Result<()> {
    let cfg = match explicit {
        Some(p) => Config::load(p)?,
        None => Config::defaults(),
    };
    let channels = &cfg.channels;
    let routes = cfg.routes();
    let policy = &cfg.policy;
    // mkdtemp: an unpredictable name, created 0700 by this process (F6: never a directory another
    // user could have made first, with a `state.db` link in it).
    let tmp = tempfile::Builder::new()
        .prefix("tailscale-monitor-demo-")
        .tempdir()
        .context("demo state directory")?;
    let dir = tmp.path().join("state");
    let result = async {
        let mut store = Store::open(&dir).context("demo state")?;
        let steps = sim::demo_steps();
        let sim = sim::Sim::new(steps[0].1.clone());
        let source = Source::Sim(sim);
        let host = "web-01 (demo)";
        println!("tailscale-monitor demo: a simulated tailnet, the real pipeline.\n");
        for (i, (title, snap)) in steps.into_iter().enumerate() {
            if let Source::Sim(s) = &source {
                s.set(snap);
            }
            let report = monitor::observe(&source, None, None, &mut store, &routes, policy).await?;
            println!("=== Step {}: {title}", i + 1);
            let mut text = String::new();
            for e in &report.events {
                render::event_text(&mut text, e);
            }
            println!("{}", text.trim_start_matches('\n'));
            if !channels.is_empty() {
                let d = monitor::deliver(&mut store, &cfg, host, true).await?;
                for (c, e) in &d.failed {
                    println!("  (channel {c} failed: {e})");
                }
                if d.delivered > 0 {
                    println!("  (sent through {} channel(s))", channels.len() - d.failed.len());
                }
            }
            println!();
        }
        if channels.is_empty() {
            println!(
                "To receive these by e-mail, write a config (see README) and run:\n  tailscale-monitor --config /etc/tailscale-monitor/config.toml demo"
            );
        }
        anyhow::Ok(())
    }
    .await;
    drop(tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_and_ages() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2d", now).unwrap().to_rfc3339(),
            "2026-11-22T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-11-24T08:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-24T08:00:00+00:00"
        );
        assert!(parse_since("yesterday-ish", now).is_err());
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
