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

use crate::app::pass;
use crate::config::{self, Config};
use crate::sanitize;
use crate::store::Store;

mod access;
mod audit;
mod check;
mod demo;
mod devices;
mod events;
mod guard;
mod posture;
mod table;
mod test_notify;

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
    /// wider access to this server, Tailnet Lock disabled, or the guard blocking a device or not in
    /// force, 3 the tailnet could not be read or the config is bad.
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
        /// An exported copy of the log, kept elsewhere: a file (or URL) of `[[export]]`'s ECS or
        /// OCSF lines, or `journalctl -o json` output; repeatable. Events rewritten, deleted or
        /// truncated locally after they were exported are named.
        #[arg(long = "witness", value_name = "PATH|URL")]
        witnesses: Vec<String>,
    },
    /// The guard: only devices approved here reach this server over Tailscale, whatever the
    /// admin console says ([guard] mode = "enforce", applied with nftables by the privileged
    /// relay).
    Guard {
        #[command(subcommand)]
        command: guard::GuardCommand,
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
        #[arg(long, conflicts_with_all = ["listen", "restore"], required_unless_present_any = ["listen", "restore"])]
        stdio: bool,
        /// Create the socket at PATH (in a directory only root may write; mode 0660, group
        /// --group) and serve until killed.
        #[arg(long, value_name = "PATH", conflicts_with = "restore")]
        listen: Option<PathBuf>,
        /// At boot, before tailscaled: put the guard's last table back from the root side's own
        /// copy (or a table that lets nobody in), then exit (tailscale-monitor-guard-restore.service).
        #[arg(long)]
        restore: bool,
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
        /// Where the guard's root side keeps its records (approvals, the last table applied):
        /// a directory only root may write.
        #[arg(
            long,
            value_name = "DIR",
            default_value = crate::privileged::root::DEFAULT_STATE_DIR
        )]
        state_dir: PathBuf,
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
        Command::Check => return check::check(explicit).await,
        Command::Run => match load(explicit, false) {
            // A store that cannot even be opened ends `run` (systemd restarts it): alert it first,
            // at most hourly, so that a restart loop is not silent.
            Ok(cfg) => {
                let opened = Store::open(&cfg.state_dir).and_then(|mut s| {
                    crate::app::outage::store_recovered(&cfg, &mut s)?;
                    Ok(s)
                });
                match opened {
                    Err(e) => Err(anyhow::anyhow!(
                        crate::app::outage::store_unusable(
                            &cfg,
                            &pass::local_hostname(),
                            &e,
                            "run"
                        )
                        .await
                    )),
                    // The recovery, if any, is queued: `run` delivers it at startup.
                    Ok(store) => {
                        crate::app::daemon::run(explicit.map(Path::to_owned), cfg, store).await
                    }
                }
            }
            Err(e) => Err(e),
        },
        Command::Devices { json, all } => devices::devices(explicit, json, all),
        Command::Access { json } => access::access(explicit, json).await,
        Command::Posture { json } => match posture::posture(explicit, json).await {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Events { since, json, limit } => {
            events::events(explicit, since.as_deref(), json, limit)
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let loaded = load(explicit, false);
            let mut refused = None;
            if let Ok(c) = &loaded {
                let tun = guard::known_tun(c).await;
                if c.guard.enforcing() && tun == Some(false) {
                    eprintln!("warning: [guard] mode = \"enforce\", but tailscaled runs in userspace networking mode (`/status` TUN is false): the guard cannot filter in the kernel and does NOT protect this server");
                }
                if tun == Some(false) {
                    let listeners: Vec<String> = c
                        .metrics_listen
                        .iter()
                        .map(|a| format!("[metrics] listen {a}"))
                        .chain(
                            c.webhooks
                                .iter()
                                .map(|w| format!("[webhooks] listen {}", w.listen)),
                        )
                        .collect();
                    eprintln!(
                        "warning: tailscaled runs in userspace networking mode: it dials 127.0.0.1 for every tailnet connection to this node, so every TCP listener on loopback is reachable from the tailnet{}",
                        if listeners.is_empty() { String::new() } else { format!(" (this monitor's: {})", listeners.join(", ")) }
                    );
                }
                refused = c.metrics_listen.and_then(|a| {
                    crate::metrics::userspace_refusal(a, c.metrics_token.is_some(), tun)
                });
            }
            if let Some(why) = refused {
                eprintln!("tailscale-monitor: {why}");
                return ExitCode::from(1);
            }
            loaded.map(|c| {
            print!("{}", c.render());
            println!(
                "\n# `systemctl reload` (SIGHUP) applies every key but these, which need a restart: {}",
                config::RESTART_ONLY.map(|r| r.key).join(", ")
            );
            if c.channels.is_empty() {
                eprintln!("warning: no [[notify]] channel: alerts are only logged");
            }
            for w in c.guard.warnings() {
                eprintln!("warning: {}", sanitize::line(&w, 300));
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
        })
        }
        Command::Demo => demo::demo(explicit).await,
        Command::Guard { command } => guard::guard(explicit, command).await,
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
        Command::Audit { anchors, witnesses } => {
            match audit::audit(explicit, &anchors, &witnesses).await {
                Ok(true) => return ExitCode::SUCCESS,
                Ok(false) => return ExitCode::from(2),
                Err(e) => Err(e),
            }
        }
        Command::TestNotify { channel } => {
            test_notify::test_notify(explicit, channel.as_deref()).await
        }
        Command::Privileged {
            stdio,
            listen,
            restore,
            group,
            socket,
            state_dir,
        } => {
            let paths = crate::privileged::root::RootPaths {
                config: explicit
                    .map_or_else(|| PathBuf::from(config::DEFAULT_PATH), Path::to_owned),
                state: state_dir,
                tailscaled: socket,
            };
            privileged(stdio, listen.as_deref(), restore, &group, paths).await
        }
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

/// `privileged`: the root side. Of the config file it reads only the `[guard]` table, and only
/// from a file that root alone may write; nothing of the monitor's reaches it but the request
/// line.
async fn privileged(
    stdio: bool,
    listen: Option<&Path>,
    restore: bool,
    group: &str,
    paths: crate::privileged::root::RootPaths,
) -> anyhow::Result<()> {
    use crate::privileged::server;
    if restore {
        return crate::privileged::root::restore(&paths)
            .await
            .map_err(|e| anyhow::anyhow!("restoring the guard's table: {e}"));
    }
    let opts = server::Options {
        tailscaled: paths.tailscaled.clone(),
        gid: Some(server::group_id(group)?),
        paths,
    };
    match (stdio, listen) {
        (true, _) => server::serve_stdio(opts).await,
        (false, Some(path)) => server::listen(path, opts).await,
        (false, None) => bail!("give --stdio, --listen PATH or --restore"),
    }
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
