//! The TOML configuration: schema, defaults, validation with `file:line` errors, secret loading.
//!
//! Parsing happens in two steps. serde reads the file into `Raw*` structs that mirror it
//! (unknown keys are refused there, and toml reports where); [`Config::from_toml`] then checks
//! every value and builds the typed [`Config`], naming file, line and key on any error. Secrets
//! (SMTP passwords) are read from files or the environment, never from the main file, and are
//! never printed: [`Secret`] redacts itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diff::{ConnectAlert, Policy};
use crate::model::route::Route;
use crate::model::Severity;

pub(crate) mod channels;
mod control;
pub(crate) mod ctx;
mod export;
mod guard;
pub(crate) mod keys;
pub(crate) mod raw;
pub(crate) mod secret;
mod show;
mod socket;
#[cfg(test)]
mod tests;
mod web;

pub use channels::Channel;
pub use control::{ControlApi, ControlConfig, TailscaleAuth, WebhooksConfig};
pub use ctx::ConfigError;

use crate::config::channels::channel;
use crate::config::control::control;
use crate::config::ctx::Ctx;
use crate::config::raw::RawConfig;
use crate::config::secret::{read_secret, writable_only_by_owner};

pub use export::{ExportConfig, ExportSink, FileFormat, TlsClient, Transport};
pub use guard::{Doors, GuardConfig, GuardMode};
pub use web::{WebConfig, WebListen};

pub use secret::Secret;
pub use socket::default_socket;

pub const DEFAULT_PATH: &str = "/etc/tailscale-monitor/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tailscale-monitor";

/// The keys a SIGHUP cannot apply (they hold a listener, the database or the IPN bus): `run`
/// says so in its log and keeps their running values until a restart; `config check` lists them.
pub const RESTART_ONLY: [RestartOnly; 7] = [
    RestartOnly {
        key: "[state] dir",
        differs: |a, b| a.state_dir != b.state_dir,
        keep: |new, running| new.state_dir.clone_from(&running.state_dir),
    },
    RestartOnly {
        key: "[metrics] listen",
        differs: |a, b| a.metrics_listen != b.metrics_listen,
        keep: |new, running| new.metrics_listen = running.metrics_listen,
    },
    RestartOnly {
        key: "[metrics] token_file",
        differs: |a, b| a.metrics_token != b.metrics_token,
        keep: |new, running| new.metrics_token.clone_from(&running.metrics_token),
    },
    RestartOnly {
        key: "[webhooks] listen",
        differs: |a, b| {
            a.webhooks.as_ref().map(|w| w.listen) != b.webhooks.as_ref().map(|w| w.listen)
        },
        keep: |new, running| keep_webhooks(new, running),
    },
    RestartOnly {
        key: "[webhooks] secret_file",
        differs: |a, b| {
            a.webhooks.as_ref().map(|w| &w.secret) != b.webhooks.as_ref().map(|w| &w.secret)
        },
        keep: |new, running| keep_webhooks(new, running),
    },
    RestartOnly {
        key: "[web]",
        differs: |a, b| a.web != b.web,
        keep: |new, running| new.web.clone_from(&running.web),
    },
    RestartOnly {
        key: "[tailscale] socket (for the IPN bus)",
        differs: |a, b| a.source.socket != b.source.socket,
        keep: |new, running| new.source.socket.clone_from(&running.source.socket),
    },
];

/// One key that a SIGHUP does not apply: its name, how a new config differs in it, and how the
/// running value is kept.
pub struct RestartOnly {
    pub key: &'static str,
    differs: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

/// The webhook receiver is one task: its listen address and secret are kept together.
fn keep_webhooks(new: &mut Config, running: &Config) {
    new.webhooks.clone_from(&running.webhooks);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// tailscaled's LocalAPI over its unix socket (default).
    LocalApi,
    /// `tailscale status --json`.
    Cli,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub socket: PathBuf,
    /// The privileged relay's socket (`tailscale-monitor privileged`): the live netmap on
    /// tailscaled >= 1.104, which serves it only to root or its operator.
    pub privileged_socket: PathBuf,
    /// The `tailscale` binary for the CLI source.
    pub cli: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Poll period while the IPN bus is not streaming (and for the CLI source).
    pub interval: Duration,
    /// Full re-read period while the IPN bus is streaming (the safety net).
    pub reconcile: Duration,
    /// How long tailscaled may stay unreachable before `run` raises `monitor.source_down`.
    pub grace: Duration,
    /// After a message goes out, `run` holds further events this long so a burst is one message.
    pub batch_window: Duration,
    /// How often `run` re-reads who may reach this node (the netmap's packet filter and SSH
    /// policy): tailscaled >= 1.100 applies a filter-only update without any bus message.
    pub access_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (`None` when built from defaults).
    pub path: Option<PathBuf>,
    pub source: SourceConfig,
    pub state_dir: PathBuf,
    pub daemon: DaemonConfig,
    pub policy: Policy,
    pub channels: Vec<Channel>,
    /// After a channel has failed for this long, the failure is alerted on the other channels.
    pub delivery_max_age: Duration,
    /// `[alerts] coalesce_window`: repeated changes of one device within it are one message.
    pub coalesce_window: Duration,
    /// `[metrics] listen`: where `run` serves `/metrics` and `/healthz`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[metrics] token_file`: when set, `/metrics` and `/healthz` want `Authorization: Bearer`.
    pub metrics_token: Option<Secret>,
    /// `[digest] every`: how often the summary message goes out (`None`: never, the default).
    pub digest_every: Option<Duration>,
    /// `[control]`: the control plane's API (the whole tailnet), if configured.
    pub control: Option<ControlConfig>,
    /// `[webhooks]`: the Tailscale webhook receiver of `run`, if configured.
    pub webhooks: Option<WebhooksConfig>,
    /// `[guard]`: the approval of devices at this server, enforced with nftables.
    pub guard: GuardConfig,
    /// `[web]`: the read-only web view `run` serves, if configured.
    pub web: Option<WebConfig>,
    /// `[[export]]`: where the event log is copied as it is written.
    pub exports: Vec<ExportConfig>,
}

impl Config {
    /// Defaults, as if the config file were empty.
    pub fn defaults() -> Config {
        Config::from_toml("", "(defaults)").expect("empty config is valid")
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " — create it (see README: Configure) or pass --config PATH"
            } else {
                ""
            };
            ConfigError(format!("{}: {e}{hint}", path.display()))
        })?;
        writable_only_by_owner(path)
            .map_err(|m| ConfigError(format!("{}: {m}", path.display())))?;
        // Mode bits alone: a file others can read is public whatever its ACLs add.
        let public = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        let mut c = Config::parse(&text, &path.display().to_string(), public)?;
        c.path = Some(path.to_owned());
        Ok(c)
    }

    /// Parses config text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse(text, file, false)
    }

    fn parse(text: &str, file: &str, public: bool) -> Result<Config, ConfigError> {
        let cx = Ctx { file, text, public };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| cx.line(s.start)).unwrap_or(1);
            ConfigError(format!("{file}:{line}: {}", e.message().trim()))
        })?;

        let kind = cx.choice(
            &raw.tailscale.source,
            "tailscale.source",
            &[("localapi", SourceKind::LocalApi), ("cli", SourceKind::Cli)],
            SourceKind::LocalApi,
        )?;
        let source = SourceConfig {
            kind,
            socket: raw.tailscale.socket.unwrap_or_else(default_socket),
            privileged_socket: raw
                .tailscale
                .privileged_socket
                .unwrap_or_else(|| PathBuf::from(socket::DEFAULT_PRIVILEGED_SOCKET)),
            cli: raw
                .tailscale
                .cli
                .unwrap_or_else(|| PathBuf::from("tailscale")),
            timeout: cx.duration(
                &raw.tailscale.timeout,
                "tailscale.timeout",
                Duration::from_secs(10),
            )?,
        };
        let daemon = DaemonConfig {
            interval: cx.duration(
                &raw.daemon.interval,
                "daemon.interval",
                Duration::from_secs(30),
            )?,
            reconcile: cx.duration(
                &raw.daemon.reconcile,
                "daemon.reconcile",
                Duration::from_secs(300),
            )?,
            grace: cx.duration(&raw.daemon.grace, "daemon.grace", Duration::from_secs(60))?,
            batch_window: cx.duration(
                &raw.daemon.batch_window,
                "daemon.batch_window",
                Duration::from_secs(3),
            )?,
            access_interval: cx.duration(
                &raw.daemon.access_interval,
                "daemon.access_interval",
                Duration::from_secs(30),
            )?,
        };
        let warn = cx.duration(
            &raw.alerts.key_expiry_warning,
            "alerts.key_expiry_warning",
            Duration::from_secs(14 * 86400),
        )?;
        let connect_alert = cx.choice(
            &raw.alerts.peer_connected,
            "alerts.peer_connected",
            &[
                ("new", ConnectAlert::New),
                ("all", ConnectAlert::All),
                ("none", ConnectAlert::None),
            ],
            ConnectAlert::New,
        )?;
        let quiet = cx.duration(
            &raw.alerts.peer_connected_quiet,
            "alerts.peer_connected_quiet",
            Duration::from_secs(3600),
        )?;
        let chrono_d = |d: Duration, key: &str| {
            chrono::Duration::from_std(d).map_err(|e| ConfigError(format!("{file}: {key}: {e}")))
        };
        let mut watches = Vec::new();
        for w in &raw.watch {
            let r = w.get_ref();
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| format!("watch {}", watches.len() + 1));
            if r.devices.is_empty() {
                return Err(cx.at(
                    w,
                    "devices",
                    "[[watch]] needs `devices` (tags, hostnames or stable IDs)",
                ));
            }
            let offline =
                cx.duration(&r.offline_after, "offline_after", Duration::from_secs(300))?;
            // Zero is allowed here: "back online" at once.
            let back = cx.duration_or_zero(&r.back_after, "back_after", Duration::ZERO)?;
            let severity = cx.choice(
                &r.severity,
                "severity",
                &[
                    ("warning", Severity::Warning),
                    ("critical", Severity::Critical),
                ],
                Severity::Warning,
            )?;
            let schedule = match &r.schedule {
                None => None,
                Some(s) => Some(
                    crate::model::presence::Schedule::parse(s.get_ref())
                        .map_err(|e| cx.at(s, "schedule", e))?,
                ),
            };
            watches.push(crate::model::presence::Watch {
                name,
                devices: r.devices.clone(),
                offline_after: chrono_d(offline, "offline_after")?,
                back_after: chrono_d(back, "back_after")?,
                severity,
                schedule,
            });
        }
        let policy = Policy {
            key_expiry_warn: chrono_d(warn, "alerts.key_expiry_warning")?,
            connect_quiet: chrono_d(quiet, "alerts.peer_connected_quiet")?,
            connect_alert,
            watches,
            guard: None,
        };
        let mut policy = policy;
        let guard = guard::parse(&cx, &raw.guard)?;
        if guard.enforcing() {
            policy.guard = Some(guard.approve_new.clone());
        }
        let web = web::parse(&cx, &raw.web)?;
        let mut exports: Vec<ExportConfig> = Vec::new();
        for e in &raw.export {
            let x = export::parse(&cx, e)?;
            if exports.iter().any(|o| o.name == x.name) {
                return Err(cx.at(
                    e,
                    "name",
                    format!(
                        "two [[export]] tables are named `{}`: give each a distinct `name`",
                        x.name
                    ),
                ));
            }
            exports.push(x);
        }
        if let Some(w) = &web {
            if !guard.enforcing() && w.viewers.is_empty() {
                let at = raw.web.listen.as_ref().expect("parsed");
                return Err(cx.at(
                    at,
                    "web.viewers",
                    "with the guard off, name the devices that may look (`viewers = [stable IDs]`): the control plane's word on who a viewer is is not enough",
                ));
            }
        }

        let mut channels: Vec<Channel> = Vec::new();
        for n in &raw.notify {
            let ch = channel(&cx, n)?;
            if channels.iter().any(|c| c.name == ch.name) {
                return Err(cx.at(
                    n,
                    "name",
                    format!(
                        "two [[notify]] channels are named `{}`: give each a distinct `name`",
                        ch.name
                    ),
                ));
            }
            channels.push(ch);
        }
        // Zero: every change goes out at once.
        let coalesce = cx.duration_or_zero(
            &raw.alerts.coalesce_window,
            "alerts.coalesce_window",
            Duration::from_secs(300),
        )?;
        for ch in &mut channels {
            ch.route.coalesce = coalesce;
        }
        let control = match &raw.control {
            None => None,
            Some(c) => Some(control(&cx, c)?),
        };
        let webhooks = match &raw.webhooks {
            None => None,
            Some(w) => {
                let r = w.get_ref();
                let listen = r
                    .listen
                    .as_ref()
                    .ok_or_else(|| cx.at(w, "webhooks.listen", "[webhooks] needs `listen`"))?;
                let secret = r.secret_file.as_ref().ok_or_else(|| {
                    cx.at(
                        w,
                        "webhooks.secret_file",
                        "[webhooks] needs `secret_file` (the webhook's signing secret)",
                    )
                })?;
                Some(WebhooksConfig {
                    listen: listen.get_ref().parse().map_err(|e| {
                        cx.at(
                            listen,
                            "webhooks.listen",
                            format!(
                                "`{}` is not an address like \"127.0.0.1:9280\": {e}",
                                listen.get_ref()
                            ),
                        )
                    })?,
                    secret: read_secret(&cx, secret, "webhooks.secret_file")?,
                })
            }
        };
        if webhooks.is_some() && control.is_none() {
            return Err(ConfigError(format!(
                "{file}: [webhooks] only triggers reads of the control plane: configure [control] too"
            )));
        }
        Ok(Config {
            path: None,
            guard,
            web,
            exports,
            control,
            webhooks,
            source,
            state_dir: raw
                .state
                .dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            daemon,
            policy,
            channels,
            metrics_listen: match &raw.metrics.listen {
                None => None,
                Some(l) => Some(l.get_ref().parse().map_err(|e| {
                    cx.at(
                        l,
                        "metrics.listen",
                        format!(
                            "`{}` is not an address like \"127.0.0.1:9273\": {e}",
                            l.get_ref()
                        ),
                    )
                })?),
            },
            metrics_token: match &raw.metrics.token_file {
                None => None,
                Some(f) => Some(read_secret(&cx, f, "metrics.token_file")?),
            },
            coalesce_window: coalesce,
            delivery_max_age: cx.duration(
                &raw.alerts.delivery_max_age,
                "alerts.delivery_max_age",
                Duration::from_secs(3600),
            )?,
            digest_every: match &raw.digest.every {
                None => None,
                Some(_) => Some(cx.duration(&raw.digest.every, "digest.every", Duration::ZERO)?),
            },
        })
    }

    /// The keys of [`RESTART_ONLY`] whose values differ from `running`'s.
    pub fn restart_only_changes(&self, running: &Config) -> Vec<&'static str> {
        RESTART_ONLY
            .iter()
            .filter(|r| (r.differs)(self, running))
            .map(|r| r.key)
            .collect()
    }

    /// This config, with the values of [`RESTART_ONLY`] taken from `running` (a SIGHUP applies
    /// everything else).
    pub fn keeping_restart_only(mut self, running: &Config) -> Config {
        for r in &RESTART_ONLY {
            (r.keep)(&mut self, running);
        }
        self
    }

    pub fn routes(&self) -> Vec<Route> {
        self.channels.iter().map(|c| c.route.clone()).collect()
    }
}
