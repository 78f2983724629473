//! The TOML configuration: schema, defaults, validation with `file:line` errors, secret loading.
//!
//! Parsing happens in two steps. serde reads the file into `Raw*` structs that mirror it
//! (unknown keys are refused there, and toml reports where); [`Config::from_toml`] then checks
//! every value and builds the typed [`Config`], naming file, line and key on any error. Secrets
//! (SMTP passwords) are read from files or the environment, never from the main file, and are
//! never printed: [`Secret`] redacts itself.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;
use toml::Spanned;

use crate::diff::{ConnectAlert, Policy};
use crate::model::route::Route;
use crate::model::{EventKind, Severity};

pub const DEFAULT_PATH: &str = "/etc/tailscale-monitor/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tailscale-monitor";
/// The local MTA's program for `smtp = "sendmail"` unless `sendmail` names another.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// Environment variable read for the SMTP password when no `password_file`/`password_env` is set.
pub const PASSWORD_ENV: &str = "TAILSCALE_MONITOR_SMTP_PASSWORD";

/// A config error, already rendered as one line: `path:line: what (key \`k\`)`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The keys a SIGHUP cannot apply (they hold a listener, the database or the IPN bus): `run`
/// says so in its log and keeps their running values until a restart; `config check` lists them.
pub const RESTART_ONLY: [&str; 6] = [
    "[state] dir",
    "[metrics] listen",
    "[metrics] token_file",
    "[webhooks] listen",
    "[webhooks] secret_file",
    "[tailscale] socket (for the IPN bus)",
];

/// A secret value that never shows up in Debug output or printed config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[doc(hidden)]
    pub fn for_tests(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The longest duration a config key takes (F20: `"1000000y"` must be an error, not a panic).
const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP; only allowed to a loopback relay.
    None,
    /// STARTTLS, required (the connection fails rather than send in clear).
    StartTls,
    /// Implicit TLS (smtps://).
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// The local MTA's `sendmail` program (`-i -f FROM -- TO…`, message on stdin).
    Sendmail { program: PathBuf },
    Smtp {
        host: String,
        port: u16,
        tls: SmtpTls,
        user: Option<String>,
        password: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub to: Vec<Mailbox>,
    pub from: Mailbox,
    pub transport: MailTransport,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Email(EmailConfig),
    /// POST of the documented JSON schema, optionally HMAC-SHA256 signed.
    Webhook {
        url: url::Url,
        secret: Option<Secret>,
    },
    /// ntfy: POST of the text to the topic URL.
    Ntfy {
        url: url::Url,
        token: Option<Secret>,
    },
    /// Slack incoming webhook.
    Slack {
        url: url::Url,
    },
    /// Discord webhook.
    Discord {
        url: url::Url,
    },
    /// Telegram Bot API `sendMessage`.
    Telegram {
        api_url: url::Url,
        token: Secret,
        chat_id: String,
    },
    /// Gotify `POST /message`.
    Gotify {
        url: url::Url,
        token: Secret,
    },
    /// Prometheus Alertmanager API v2, one alert per event.
    Alertmanager {
        url: url::Url,
    },
    /// A program run without a shell, the JSON payload on stdin.
    Exec {
        command: Vec<String>,
    },
    /// Microsoft Teams Workflows webhook: an Adaptive Card.
    Teams {
        url: url::Url,
    },
    /// Mattermost incoming webhook.
    Mattermost {
        url: url::Url,
    },
    /// Google Chat space webhook.
    GoogleChat {
        url: url::Url,
    },
    /// PagerDuty Events API v2: one `trigger` per event, deduplicated per device and kind.
    PagerDuty {
        url: url::Url,
        routing_key: Secret,
    },
    /// Pushover: priority by severity.
    Pushover {
        url: url::Url,
        token: Secret,
        user_key: Secret,
    },
    /// Matrix client-server API: `m.room.message` with a transaction id per outbox batch.
    Matrix {
        homeserver: url::Url,
        room: String,
        token: Secret,
    },
    /// The Apprise CLI, with the service URLs from a file only the service can read.
    Apprise {
        program: PathBuf,
        urls_file: PathBuf,
    },
}

impl ChannelKind {
    /// The most events one delivery attempt takes from the outbox. Per-event channels
    /// (PagerDuty) take a few requests of their provider's rate limit, so a 429 costs little and
    /// what went through is kept; mail stays well under a relay's message-size limit; a chat
    /// message is capped to its provider's length anyway (and a refused one is resent event by
    /// event). A larger backlog goes out in several batches.
    pub fn batch_limit(&self) -> usize {
        match self {
            ChannelKind::PagerDuty { .. } => 10,
            ChannelKind::Email(_) => 200,
            ChannelKind::Webhook { .. }
            | ChannelKind::Alertmanager { .. }
            | ChannelKind::Exec { .. } => 500,
            _ => 1000,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Gotify { .. } => "gotify",
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Mattermost { .. } => "mattermost",
            ChannelKind::GoogleChat { .. } => "googlechat",
            ChannelKind::PagerDuty { .. } => "pagerduty",
            ChannelKind::Pushover { .. } => "pushover",
            ChannelKind::Matrix { .. } => "matrix",
            ChannelKind::Apprise { .. } => "apprise",
            ChannelKind::Alertmanager { .. } => "alertmanager",
            ChannelKind::Exec { .. } => "exec",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub route: Route,
    pub kind: ChannelKind,
    /// Per send.
    pub timeout: Duration,
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
}

#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub listen: std::net::SocketAddr,
    pub secret: Secret,
}

/// `[control]`: where the control view comes from, and how often `run` polls it.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub api: ControlApi,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub enum ControlApi {
    /// The Headscale REST API (`/api/v1`), Bearer API key.
    Headscale { url: url::Url, api_key: Secret },
    /// The Tailscale Admin API v2.
    Tailscale {
        api_url: url::Url,
        tailnet: String,
        auth: TailscaleAuth,
    },
}

#[derive(Debug, Clone)]
pub enum TailscaleAuth {
    /// A `tskey-api-` access token.
    ApiKey(Secret),
    /// OAuth client credentials (read scopes); tokens are fetched and refreshed as needed.
    OAuth { client_id: String, secret: Secret },
}

impl ControlConfig {
    /// How messages name this source: "headscale API https://hs.example.com".
    pub fn describe(&self) -> String {
        match &self.api {
            ControlApi::Headscale { url, .. } => format!("headscale API {url}"),
            ControlApi::Tailscale { api_url, .. } => format!("Tailscale Admin API {api_url}"),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tailscale: RawTailscale,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    digest: RawDigest,
    control: Option<Spanned<RawControl>>,
    webhooks: Option<Spanned<RawWebhooks>>,
    #[serde(default)]
    watch: Vec<Spanned<RawWatch>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    name: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    offline_after: Option<Spanned<String>>,
    back_after: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    listen: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    kind: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    api_key_file: Option<Spanned<PathBuf>>,
    interval: Option<Spanned<String>>,
    tailnet: Option<String>,
    oauth_client_id: Option<String>,
    oauth_secret_file: Option<Spanned<PathBuf>>,
    api_url: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    every: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTailscale {
    socket: Option<PathBuf>,
    privileged_socket: Option<PathBuf>,
    source: Option<Spanned<String>>,
    cli: Option<PathBuf>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interval: Option<Spanned<String>>,
    reconcile: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    batch_window: Option<Spanned<String>>,
    access_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    key_expiry_warning: Option<Spanned<String>>,
    peer_connected: Option<Spanned<String>>,
    peer_connected_quiet: Option<Spanned<String>>,
    delivery_max_age: Option<Spanned<String>>,
    coalesce_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    min_severity: Option<Spanned<String>>,
    events: Option<Spanned<Vec<String>>>,
    // email
    to: Option<Spanned<OneOrMany>>,
    from: Option<Spanned<String>>,
    smtp: Option<Spanned<String>>,
    sendmail: Option<Spanned<PathBuf>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    // HTTP channels
    url: Option<Spanned<String>>,
    secret_file: Option<Spanned<PathBuf>>,
    token_file: Option<Spanned<PathBuf>>,
    chat_id: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    // exec
    command: Option<Spanned<Vec<String>>>,
    // pushover, pagerduty, matrix, apprise
    user_key_file: Option<Spanned<PathBuf>>,
    routing_key_file: Option<Spanned<PathBuf>>,
    homeserver: Option<Spanned<String>>,
    room: Option<Spanned<String>>,
    urls_file: Option<Spanned<PathBuf>>,
    program: Option<Spanned<PathBuf>>,
}

/// Default LocalAPI socket for this OS, preferring one that exists (Synology, QNAP, Gokrazy).
pub fn default_socket() -> PathBuf {
    if cfg!(target_os = "macos") {
        return PathBuf::from("/var/run/tailscaled.socket");
    }
    const CANDIDATES: [&str; 5] = [
        "/var/run/tailscale/tailscaled.sock",
        "/var/packages/Tailscale/var/tailscaled.sock",
        "/var/packages/Tailscale/etc/tailscaled.sock",
        "/tmp/tailscale/tailscaled.sock",
        "/perm/tailscaled/tailscaled.sock",
    ];
    let candidates: Vec<PathBuf> = CANDIDATES.iter().map(PathBuf::from).collect();
    first_trusted(&candidates).unwrap_or_else(|| {
        if Path::new("/var/run").is_dir() {
            PathBuf::from(CANDIDATES[0])
        } else {
            PathBuf::from("tailscaled.sock")
        }
    })
}

/// The first candidate that is tailscaled's: a socket (not a link to one) owned by root, in a
/// directory owned by root that nobody else may write. A socket any local user made in `/tmp`
/// (QNAP's path) is never chosen by default (F9); name it with `[tailscale] socket` if it must be.
fn first_trusted(candidates: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    candidates
        .iter()
        .find(|p| {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return false;
            };
            let Some(dir) = p.parent().and_then(|d| std::fs::symlink_metadata(d).ok()) else {
                return false;
            };
            m.file_type().is_socket()
                && m.uid() == 0
                && dir.is_dir()
                && dir.uid() == 0
                && dir.mode() & 0o022 == 0
        })
        .cloned()
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Every local user can read the file: it must not hold a secret.
    public: bool,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&self, s: &Spanned<T>, key: &str, msg: impl fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{}:{}: {msg} (key `{key}`)",
            self.file,
            self.line(s.span().start)
        ))
    }

    /// One of a fixed set of words, or `default` when the key is absent.
    fn choice<T: Copy>(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = s else { return Ok(default) };
        options
            .iter()
            .find(|(w, _)| w == v.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
                self.at(
                    v,
                    key,
                    format!("`{}` is not one of {}", v.get_ref(), words.join(", ")),
                )
            })
    }

    fn duration(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match s {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                // Bounded, so that every deadline computed from it stays representable.
                Ok(d) if d > MAX_DURATION => Err(self.at(
                    v,
                    key,
                    format!("`{}` is longer than 100 years", v.get_ref()),
                )),
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(self.at(v, key, "must be greater than zero")),
                Err(e) => Err(self.at(
                    v,
                    key,
                    format!(
                        "`{}` is not a duration like \"30s\" or \"5m\": {e}",
                        v.get_ref()
                    ),
                )),
            },
        }
    }
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
                .unwrap_or_else(|| PathBuf::from(crate::privileged::DEFAULT_SOCKET)),
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
            let back = match &r.back_after {
                None => Duration::ZERO,
                Some(b) => humantime::parse_duration(b.get_ref()).map_err(|e| {
                    cx.at(
                        b,
                        "back_after",
                        format!(
                            "`{}` is not a duration like \"0s\" or \"5m\": {e}",
                            b.get_ref()
                        ),
                    )
                })?,
            };
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
        };

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
        let coalesce = cx.duration(
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
        let listen = |c: &Config| c.webhooks.as_ref().map(|w| w.listen);
        let secret = |c: &Config| c.webhooks.as_ref().map(|w| w.secret.clone());
        let changed = [
            self.state_dir != running.state_dir,
            self.metrics_listen != running.metrics_listen,
            self.metrics_token != running.metrics_token,
            listen(self) != listen(running),
            secret(self) != secret(running),
            self.source.socket != running.source.socket,
        ];
        RESTART_ONLY
            .iter()
            .zip(changed)
            .filter_map(|(k, c)| c.then_some(*k))
            .collect()
    }

    /// This config, with the values of [`RESTART_ONLY`] taken from `running` (a SIGHUP applies
    /// everything else).
    pub fn keeping_restart_only(self, running: &Config) -> Config {
        let mut source = self.source.clone();
        source.socket.clone_from(&running.source.socket);
        Config {
            state_dir: running.state_dir.clone(),
            metrics_listen: running.metrics_listen,
            metrics_token: running.metrics_token.clone(),
            webhooks: running.webhooks.clone(),
            source,
            ..self
        }
    }

    pub fn routes(&self) -> Vec<Route> {
        self.channels.iter().map(|c| c.route.clone()).collect()
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn render(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let d = |d: Duration| q(&humantime::format_duration(d).to_string());
        let mut out = String::new();
        out += &format!(
            "[tailscale]\nsource = {}\nsocket = {}\nprivileged_socket = {}\ncli = {}\ntimeout = {}\n\n",
            q(match self.source.kind {
                SourceKind::LocalApi => "localapi",
                SourceKind::Cli => "cli",
            }),
            q(&self.source.socket.display().to_string()),
            q(&self.source.privileged_socket.display().to_string()),
            q(&self.source.cli.display().to_string()),
            d(self.source.timeout)
        );
        out += &format!(
            "[state]\ndir = {}\n\n",
            q(&self.state_dir.display().to_string())
        );
        if let Some(l) = self.metrics_listen {
            out += &format!("[metrics]\nlisten = {}\n", q(&l.to_string()));
            if self.metrics_token.is_some() {
                out += "token_file = \"(set)\"\n";
            }
            out += "\n";
        }
        if let Some(e) = self.digest_every {
            out += &format!("[digest]\nevery = {}\n\n", d(e));
        }
        out += &format!(
            "[daemon]\ninterval = {}\nreconcile = {}\ngrace = {}\nbatch_window = {}\naccess_interval = {}\n\n",
            d(self.daemon.interval),
            d(self.daemon.reconcile),
            d(self.daemon.grace),
            d(self.daemon.batch_window),
            d(self.daemon.access_interval)
        );
        out += &format!(
            "[alerts]\nkey_expiry_warning = {}\npeer_connected = {}\npeer_connected_quiet = {}\ndelivery_max_age = {}\ncoalesce_window = {}\n",
            d(self.policy.key_expiry_warn.to_std().unwrap_or_default()),
            q(match self.policy.connect_alert {
                ConnectAlert::New => "new",
                ConnectAlert::All => "all",
                ConnectAlert::None => "none",
            }),
            d(self.policy.connect_quiet.to_std().unwrap_or_default()),
            d(self.delivery_max_age),
            d(self.coalesce_window)
        );
        for c in &self.channels {
            out += &format!(
                "\n[[notify]]\nname = {}\nmin_severity = {}\n",
                q(&c.name),
                q(c.route.min_severity.as_str())
            );
            if let Some(k) = &c.route.kinds {
                let v: Vec<String> = k.iter().map(|k| q(k.as_str())).collect();
                out += &format!("events = [{}]\n", v.join(", "));
            }
            out += &format!(
                "kind = {}\ntimeout = {}\n",
                q(c.kind.as_str()),
                d(c.timeout)
            );
            match &c.kind {
                ChannelKind::Email(e) => {
                    let to: Vec<String> = e.to.iter().map(|m| q(&m.to_string())).collect();
                    let smtp = match &e.transport {
                        MailTransport::Sendmail { program } => format!(
                            "\"sendmail\"\nsendmail = {}",
                            q(&program.display().to_string())
                        ),
                        t => q(&t.to_string()),
                    };
                    out += &format!(
                        "to = [{}]\nfrom = {}\nsmtp = {smtp}\n",
                        to.join(", "),
                        q(&e.from.to_string()),
                    );
                    if let MailTransport::Smtp {
                        password: Some(_), ..
                    } = e.transport
                    {
                        out += "# password: set (redacted)\n";
                    }
                }
                ChannelKind::Webhook { url, secret } => {
                    out += &format!("url = {}\n", q(&crate::sanitize::redact_url(url)));
                    if secret.is_some() {
                        out += "# secret: set (redacted)\n";
                    }
                }
                ChannelKind::Slack { url }
                | ChannelKind::Discord { url }
                | ChannelKind::Teams { url }
                | ChannelKind::Mattermost { url }
                | ChannelKind::GoogleChat { url } => {
                    out += &format!("url = {}\n", q(&crate::sanitize::redact_secret_url(url)))
                }
                ChannelKind::Ntfy { url, .. }
                | ChannelKind::Gotify { url, .. }
                | ChannelKind::Alertmanager { url } => {
                    out += &format!("url = {}\n", q(&crate::sanitize::redact_url(url)))
                }
                ChannelKind::Telegram {
                    api_url, chat_id, ..
                } => {
                    out += &format!(
                        "api_url = {}\nchat_id = {}\n# token: set (redacted)\n",
                        q(&crate::sanitize::redact_url(api_url)),
                        q(chat_id)
                    )
                }
                ChannelKind::Exec { command } => {
                    let v: Vec<String> = command.iter().map(|a| q(a)).collect();
                    out += &format!("command = [{}]\n", v.join(", "));
                }
                ChannelKind::PagerDuty { url, .. } => {
                    out += &format!(
                        "url = {}\n# routing_key: set (redacted)\n",
                        q(&crate::sanitize::redact_url(url))
                    )
                }
                ChannelKind::Pushover { url, .. } => {
                    out += &format!(
                        "url = {}\n# token, user_key: set (redacted)\n",
                        q(&crate::sanitize::redact_url(url))
                    )
                }
                ChannelKind::Matrix {
                    homeserver, room, ..
                } => {
                    out += &format!(
                        "homeserver = {}\nroom = {}\n# token: set (redacted)\n",
                        q(&crate::sanitize::redact_url(homeserver)),
                        q(room)
                    )
                }
                ChannelKind::Apprise { program, urls_file } => {
                    out += &format!(
                        "program = {}\nurls_file = {}\n",
                        q(&program.display().to_string()),
                        q(&urls_file.display().to_string())
                    )
                }
            }
        }
        if let Some(c) = &self.control {
            out += "\n[control]\n";
            match &c.api {
                ControlApi::Headscale { url, .. } => {
                    out += &format!(
                        "kind = \"headscale\"\nurl = {}\napi_key_file = \"(redacted)\"\n",
                        q(&crate::sanitize::redact_url(url))
                    );
                }
                ControlApi::Tailscale {
                    api_url,
                    tailnet,
                    auth,
                } => {
                    out += &format!(
                        "kind = \"tailscale\"\napi_url = {}\ntailnet = {}\n",
                        q(&crate::sanitize::redact_url(api_url)),
                        q(tailnet)
                    );
                    match auth {
                        TailscaleAuth::ApiKey(_) => out += "api_key_file = \"(redacted)\"\n",
                        TailscaleAuth::OAuth { client_id, .. } => {
                            out += &format!(
                                "oauth_client_id = {}\noauth_secret_file = \"(redacted)\"\n",
                                q(client_id)
                            )
                        }
                    }
                }
            }
            out += &format!("interval = {}\n", d(c.interval));
        }
        for w in &self.policy.watches {
            let devs: Vec<String> = w.devices.iter().map(|d| q(d)).collect();
            out += &format!(
                "\n[[watch]]\nname = {}\ndevices = [{}]\noffline_after = {}\nback_after = {}\nseverity = {}\n",
                q(&w.name),
                devs.join(", "),
                d(w.offline_after.to_std().unwrap_or_default()),
                d(w.back_after.to_std().unwrap_or_default()),
                q(w.severity.as_str())
            );
            if w.schedule.is_some() {
                out += "# schedule: set (outside it nothing is alerted)\n";
            }
        }
        if let Some(w) = &self.webhooks {
            out += &format!(
                "\n[webhooks]\nlisten = {}\nsecret_file = \"(redacted)\"\n",
                q(&w.listen.to_string())
            );
        }
        out
    }
}

impl fmt::Display for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailTransport::Sendmail { program } => write!(f, "sendmail ({})", program.display()),
            MailTransport::Smtp {
                host,
                port,
                tls,
                user,
                ..
            } => {
                let scheme = if *tls == SmtpTls::Tls {
                    "smtps"
                } else {
                    "smtp"
                };
                let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                write!(f, "{scheme}://{user}{host}:{port}")
            }
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn channel(cx: &Ctx, n: &Spanned<RawNotify>) -> Result<Channel, ConfigError> {
    let r = n.get_ref();
    let kind = r.kind.get_ref().as_str();
    let name = r
        .name
        .as_ref()
        .map_or_else(|| kind.to_owned(), |s| s.get_ref().clone());
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(cx.at(
            n,
            "name",
            "channel names must be non-empty and without spaces",
        ));
    }
    let min_severity = cx.choice(
        &r.min_severity,
        "min_severity",
        &[
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("critical", Severity::Critical),
        ],
        Severity::Info,
    )?;
    let kinds = match &r.events {
        None => None,
        Some(s) => Some(
            s.get_ref()
                .iter()
                .map(|k| {
                    EventKind::parse(k).ok_or_else(|| {
                        cx.at(
                            s,
                            "events",
                            format!("unknown event kind `{k}` (see README: Events)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let route = Route {
        channel: name.clone(),
        min_severity,
        kinds,
        // Set from `[alerts] coalesce_window` once the whole file is read.
        coalesce: Duration::ZERO,
    };
    let url = |key: &str| -> Result<url::Url, ConfigError> {
        let raw = r
            .url
            .as_ref()
            .ok_or_else(|| cx.at(n, key, format!("[[notify]] kind = \"{kind}\" needs `url`")))?;
        let u = http_url(cx, raw, "url")?;
        // A URL that is itself a credential, or that carries one (a token, a routing key, a
        // password): never in clear over the network.
        let carries = matches!(
            kind,
            "slack"
                | "discord"
                | "teams"
                | "mattermost"
                | "googlechat"
                | "gotify"
                | "pagerduty"
                | "pushover"
        ) || u.password().is_some()
            || (kind == "ntfy" && r.token_file.is_some());
        if carries {
            no_plain_http(cx, raw, "url", &u)?;
        }
        // Whoever has a Slack or Discord webhook URL can post to the channel.
        let secret = match kind {
            "slack" | "discord" | "teams" | "mattermost" | "googlechat" => {
                Some(format!("a {kind} webhook URL is a secret"))
            }
            _ if u.password().is_some() => Some("this URL holds a password".to_owned()),
            _ => None,
        };
        if let (Some(what), true) = (secret, cx.public) {
            return Err(cx.at(
                raw,
                key,
                format!(
                    "{what}, and every local user can read {f}: chmod o-rwx {f}",
                    f = cx.file
                ),
            ));
        }
        Ok(u)
    };
    let secret = |f: &Option<Spanned<PathBuf>>, key: &str| -> Result<Option<Secret>, ConfigError> {
        f.as_ref().map(|f| read_secret(cx, f, key)).transpose()
    };
    let required = |f: &Option<Spanned<PathBuf>>, key: &str| -> Result<Secret, ConfigError> {
        secret(f, key)?.ok_or_else(|| {
            cx.at(
                n,
                key,
                format!("[[notify]] kind = \"{kind}\" needs `{key}`"),
            )
        })
    };
    let channel_kind = match kind {
        "email" => ChannelKind::Email(email(cx, n)?),
        "webhook" => ChannelKind::Webhook { url: url("url")?, secret: secret(&r.secret_file, "secret_file")? },
        "ntfy" => ChannelKind::Ntfy { url: url("url")?, token: secret(&r.token_file, "token_file")? },
        "slack" => ChannelKind::Slack { url: url("url")? },
        "discord" => ChannelKind::Discord { url: url("url")? },
        "telegram" => ChannelKind::Telegram {
            api_url: match &r.api_url {
                Some(a) => no_plain_http(cx, a, "api_url", &http_url(cx, a, "api_url")?)?,
                None => url::Url::parse("https://api.telegram.org").expect("static URL"),
            },
            token: required(&r.token_file, "token_file")?,
            chat_id: r
                .chat_id
                .as_ref()
                .map(|c| c.get_ref().clone())
                .ok_or_else(|| cx.at(n, "chat_id", "[[notify]] kind = \"telegram\" needs `chat_id`"))?,
        },
        "gotify" => ChannelKind::Gotify { url: url("url")?, token: required(&r.token_file, "token_file")? },
        "alertmanager" => ChannelKind::Alertmanager { url: url("url")? },
        "teams" => ChannelKind::Teams { url: url("url")? },
        "mattermost" => ChannelKind::Mattermost { url: url("url")? },
        "googlechat" => ChannelKind::GoogleChat { url: url("url")? },
        "pagerduty" => ChannelKind::PagerDuty {
            url: match &r.url {
                Some(_) => url("url")?,
                None => url::Url::parse("https://events.pagerduty.com/v2/enqueue").expect("static URL"),
            },
            routing_key: required(&r.routing_key_file, "routing_key_file")?,
        },
        "pushover" => ChannelKind::Pushover {
            url: match &r.url {
                Some(_) => url("url")?,
                None => url::Url::parse("https://api.pushover.net/1/messages.json").expect("static URL"),
            },
            token: required(&r.token_file, "token_file")?,
            user_key: required(&r.user_key_file, "user_key_file")?,
        },
        "matrix" => ChannelKind::Matrix {
            homeserver: match &r.homeserver {
                Some(h) => no_plain_http(cx, h, "homeserver", &http_url(cx, h, "homeserver")?)?,
                None => return Err(cx.at(n, "homeserver", "[[notify]] kind = \"matrix\" needs `homeserver`")),
            },
            room: r
                .room
                .as_ref()
                .map(|c| c.get_ref().clone())
                .ok_or_else(|| cx.at(n, "room", "[[notify]] kind = \"matrix\" needs `room` (a room ID like !abc:example.org)"))?,
            token: required(&r.token_file, "token_file")?,
        },
        "apprise" => {
            let f = r.urls_file.as_ref().ok_or_else(|| {
                cx.at(n, "urls_file", "[[notify]] kind = \"apprise\" needs `urls_file` (Apprise URLs, one per line)")
            })?;
            // The URLs carry the services' credentials: the file is a secret like any other.
            read_secret(cx, f, "urls_file")?;
            if let Some(p) = r.program.as_ref().filter(|p| p.get_ref().is_absolute()) {
                writable_only_by_owner(p.get_ref()).map_err(|m| cx.at(p, "program", m))?;
            }
            ChannelKind::Apprise {
                program: r
                    .program
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_else(|| PathBuf::from("apprise")),
                urls_file: f.get_ref().clone(),
            }
        }
        "exec" => {
            let c = r
                .command
                .as_ref()
                .ok_or_else(|| cx.at(n, "command", "[[notify]] kind = \"exec\" needs `command`"))?;
            if c.get_ref().is_empty() || !Path::new(&c.get_ref()[0]).is_absolute() {
                return Err(cx.at(c, "command", "must be a list starting with an absolute program path"));
            }
            writable_only_by_owner(Path::new(&c.get_ref()[0])).map_err(|m| cx.at(c, "command", m))?;
            ChannelKind::Exec { command: c.get_ref().clone() }
        }
        other => {
            return Err(cx.at(
                &r.kind,
                "kind",
                format!(
                    "unknown notify kind `{other}` (supported: email, webhook, ntfy, slack, discord, telegram, gotify, alertmanager, teams, mattermost, googlechat, pagerduty, pushover, matrix, apprise, exec)"
                ),
            ))
        }
    };
    let timeout = cx.duration(&r.timeout, "timeout", Duration::from_secs(30))?;
    Ok(Channel {
        name,
        route,
        kind: channel_kind,
        timeout,
    })
}

/// A URL from the config as an error may repeat it: scheme and host only. A webhook URL's path
/// and a URL's user and password are credentials (Slack, Discord, Teams), and an error ends up in
/// the journal (F18).
fn shown_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return format!("({} characters, not a URL)", text.chars().count());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let more = if rest.len() > authority.len() {
        "/…"
    } else {
        ""
    };
    crate::sanitize::line(&format!("{scheme}://{host}{more}"), 120)
}

fn http_url(cx: &Ctx, raw: &Spanned<String>, key: &str) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(raw.get_ref()).map_err(|e| {
        cx.at(
            raw,
            key,
            format!("`{}` is not a URL: {e}", shown_url(raw.get_ref())),
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(cx.at(
            raw,
            key,
            format!("`{}` must be http:// or https://", shown_url(raw.get_ref())),
        ));
    }
    Ok(u)
}

/// `u` unchanged, unless it would send a credential in clear: plain `http://` is for loopback
/// only (a local proxy, a local Headscale), as for SMTP (F10).
fn no_plain_http(
    cx: &Ctx,
    raw: &Spanned<String>,
    key: &str,
    u: &url::Url,
) -> Result<url::Url, ConfigError> {
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if u.scheme() == "http" && !loopback {
        return Err(cx.at(
            raw,
            key,
            format!(
                "`{}` would send a credential in clear over http:// to another host: use https:// (plain http:// only to a loopback address)",
                shown_url(raw.get_ref())
            ),
        ));
    }
    Ok(u.clone())
}

fn control(cx: &Ctx, c: &Spanned<RawControl>) -> Result<ControlConfig, ConfigError> {
    let r = c.get_ref();
    let kind = r.kind.as_ref().ok_or_else(|| {
        cx.at(
            c,
            "control.kind",
            "[control] needs `kind` (\"headscale\" or \"tailscale\")",
        )
    })?;
    let interval = cx.duration(&r.interval, "control.interval", Duration::from_secs(60))?;
    let api = match kind.get_ref().as_str() {
        "headscale" => {
            let url = r
                .url
                .as_ref()
                .ok_or_else(|| cx.at(c, "control.url", "kind = \"headscale\" needs `url`"))?;
            let key = r.api_key_file.as_ref().ok_or_else(|| {
                cx.at(
                    c,
                    "control.api_key_file",
                    "kind = \"headscale\" needs `api_key_file` (from `headscale apikeys create`)",
                )
            })?;
            ControlApi::Headscale {
                url: no_plain_http(cx, url, "control.url", &http_url(cx, url, "control.url")?)?,
                api_key: read_secret(cx, key, "control.api_key_file")?,
            }
        }
        "tailscale" => {
            let auth = match (&r.oauth_client_id, &r.oauth_secret_file, &r.api_key_file) {
                (Some(id), Some(f), None) => TailscaleAuth::OAuth {
                    client_id: id.clone(),
                    secret: read_secret(cx, f, "control.oauth_secret_file")?,
                },
                (None, None, Some(f)) => {
                    TailscaleAuth::ApiKey(read_secret(cx, f, "control.api_key_file")?)
                }
                _ => {
                    return Err(cx.at(
                        c,
                        "control",
                        "kind = \"tailscale\" needs either `oauth_client_id` and `oauth_secret_file`, or `api_key_file`",
                    ))
                }
            };
            let api_url = match &r.api_url {
                Some(u) => no_plain_http(
                    cx,
                    u,
                    "control.api_url",
                    &http_url(cx, u, "control.api_url")?,
                )?,
                None => url::Url::parse("https://api.tailscale.com").expect("static URL"),
            };
            ControlApi::Tailscale {
                api_url,
                tailnet: r.tailnet.clone().unwrap_or_else(|| "-".into()),
                auth,
            }
        }
        other => {
            return Err(cx.at(
                kind,
                "control.kind",
                format!("`{other}` is not one of \"headscale\", \"tailscale\""),
            ))
        }
    };
    Ok(ControlConfig { api, interval })
}

/// Whoever can write a config, secret or program file runs code as the service user (or
/// redirects its alerts): refused when others may write it, warned of when its group may.
fn writable_only_by_owner(p: &Path) -> Result<(), String> {
    let Ok(m) = std::fs::metadata(p) else {
        return Ok(());
    };
    let mode = m.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "every local user can write {p}: chmod o-w {p}",
            p = p.display()
        ));
    }
    if mode & 0o020 != 0 {
        tracing::warn!(
            path = %p.display(),
            "its group can write this file; chmod g-w it unless the whole group is trusted"
        );
    }
    Ok(())
}

fn read_secret(cx: &Ctx, f: &Spanned<PathBuf>, key: &str) -> Result<Secret, ConfigError> {
    let p = f.get_ref();
    let text =
        std::fs::read_to_string(p).map_err(|e| cx.at(f, key, format!("{}: {e}", p.display())))?;
    writable_only_by_owner(p).map_err(|m| cx.at(f, key, m))?;
    if std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
        return Err(cx.at(
            f,
            key,
            format!(
                "every local user can read {p}: chmod o-rwx {p}",
                p = p.display()
            ),
        ));
    }
    let v = text.trim_end_matches(['\r', '\n']).to_owned();
    if v.is_empty() {
        return Err(cx.at(f, key, format!("{} is empty", p.display())));
    }
    Ok(Secret(v))
}

fn email(cx: &Ctx, n: &Spanned<RawNotify>) -> Result<EmailConfig, ConfigError> {
    let r = n.get_ref();
    let missing = |key: &str| cx.at(n, key, format!("[[notify]] kind = \"email\" needs `{key}`"));
    let to_raw = r.to.as_ref().ok_or_else(|| missing("to"))?;
    let list = match to_raw.get_ref() {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if list.is_empty() {
        return Err(cx.at(to_raw, "to", "needs at least one address"));
    }
    let to = list
        .iter()
        .map(|a| {
            Mailbox::from_str(a)
                .map_err(|e| cx.at(to_raw, "to", format!("`{a}` is not a mail address: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let from_raw = r.from.as_ref().ok_or_else(|| missing("from"))?;
    let from = Mailbox::from_str(from_raw.get_ref()).map_err(|e| {
        cx.at(
            from_raw,
            "from",
            format!("`{}` is not a mail address: {e}", from_raw.get_ref()),
        )
    })?;
    let smtp_raw = r.smtp.as_ref().ok_or_else(|| missing("smtp"))?;
    let transport = smtp_target(cx, smtp_raw, r)?;
    Ok(EmailConfig {
        to,
        from,
        transport,
    })
}

fn smtp_target(cx: &Ctx, s: &Spanned<String>, r: &RawNotify) -> Result<MailTransport, ConfigError> {
    let text = s.get_ref();
    if text == "sendmail" {
        let program = match &r.sendmail {
            None => PathBuf::from(DEFAULT_SENDMAIL),
            Some(p) if p.get_ref().is_absolute() => p.get_ref().clone(),
            Some(p) => {
                return Err(cx.at(
                    p,
                    "sendmail",
                    format!("`{}` must be an absolute path", p.get_ref().display()),
                ))
            }
        };
        return Ok(MailTransport::Sendmail { program });
    }
    if let Some(p) = &r.sendmail {
        return Err(cx.at(p, "sendmail", "only applies with smtp = \"sendmail\""));
    }
    let bad = |why: &str| {
        cx.at(
            s,
            "smtp",
            format!("`{}` {why}; expected \"smtp://host:port\", \"smtp://user@host:587\", \"smtps://user@host:465\" or \"sendmail\"", shown_url(text)),
        )
    };
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?
        .to_owned();
    if url.password().is_some() {
        return Err(cx.at(
            s,
            "smtp",
            "do not put the password in the URL: use password_file or the environment",
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(bad("has a path or query"));
    }
    let user = Some(url.username()).filter(|u| !u.is_empty()).map(|u| {
        percent_encoding::percent_decode_str(u)
            .decode_utf8_lossy()
            .into_owned()
    });
    let (tls, default_port) = match url.scheme() {
        "smtps" => (SmtpTls::Tls, 465),
        "smtp" if is_loopback(&host) => (SmtpTls::None, 25),
        "smtp" => (SmtpTls::StartTls, if user.is_some() { 587 } else { 25 }),
        _ => return Err(bad("has an unsupported scheme")),
    };
    let password = match (&r.password_file, &r.password_env) {
        (Some(_), Some(env)) => {
            return Err(cx.at(
                env,
                "password_env",
                "set either password_file or password_env, not both",
            ))
        }
        (Some(f), None) => Some(read_secret(cx, f, "password_file")?),
        (None, Some(env)) => Some(Secret(std::env::var(env.get_ref()).map_err(|_| {
            cx.at(
                env,
                "password_env",
                format!("environment variable {} is not set", env.get_ref()),
            )
        })?)),
        // The default variable only matters when there is a user to authenticate as.
        (None, None) if user.is_some() => std::env::var(PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret),
        (None, None) => None,
    };
    if user.is_some() && password.is_none() {
        return Err(cx.at(
            s,
            "smtp",
            format!(
                "a user is set but no password: set password_file, password_env or {PASSWORD_ENV}"
            ),
        ));
    }
    Ok(MailTransport::Smtp {
        host: host.trim_matches(['[', ']']).to_owned(),
        port: url.port().unwrap_or(default_port),
        tls,
        user,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "config.toml")
            .unwrap_err()
            .to_string()
    }

    const MINIMAL: &str = r#"
[tailscale]
socket = "/var/run/tailscale/tailscaled.sock"

[state]
dir = "/var/lib/tailscale-monitor"

[[notify]]
kind = "email"
to = ["admin@example.com"]
from = "tailscale-monitor@web-01.example.com"
smtp = "smtp://127.0.0.1:25"
"#;

    #[test]
    fn minimal_contract_file_is_valid() {
        let c = Config::from_toml(MINIMAL, "config.toml").unwrap();
        assert_eq!(c.channels.len(), 1);
        assert_eq!(c.daemon.interval, Duration::from_secs(30));
        let ChannelKind::Email(e) = &c.channels[0].kind else {
            panic!("email channel")
        };
        assert_eq!(
            e.transport,
            MailTransport::Smtp {
                host: "127.0.0.1".into(),
                port: 25,
                tls: SmtpTls::None,
                user: None,
                password: None
            }
        );
        assert!(c.render().contains("smtp = \"smtp://127.0.0.1:25\""));
    }

    /// F9: a socket a local user made at a candidate path is never the default.
    #[test]
    fn a_socket_planted_by_a_user_is_never_the_default() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("tailscale");
        std::fs::create_dir(&planted).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = planted.join("tailscaled.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // World-writable directory (as /tmp is): refused whoever owns the socket.
        assert_eq!(first_trusted(std::slice::from_ref(&sock)), None);
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // The same socket handed to another user: refused.
            std::os::unix::fs::lchown(&sock, Some(65534), Some(65534)).unwrap();
            assert_eq!(first_trusted(std::slice::from_ref(&sock)), None);
            std::os::unix::fs::lchown(&sock, Some(0), Some(0)).unwrap();
            let _ = std::os::unix::fs::lchown(dir.path(), Some(0), Some(0));
            assert_eq!(first_trusted(std::slice::from_ref(&sock)), Some(sock));
        } else {
            assert_eq!(first_trusted(&[sock]), None, "not owned by root");
        }
    }

    /// F10: a credential never crosses the network in clear; loopback is fine.
    #[test]
    fn credentials_over_plain_http_are_refused_except_to_loopback() {
        let e = err("[control]\nkind = \"headscale\"\nurl = \"http://hs.example.com:8080\"\napi_key_file = \"/k\"\n");
        assert!(e.contains("control.url") && e.contains("in clear"), "{e}");
        let e = err("[[notify]]\nkind = \"gotify\"\nurl = \"http://gotify.example.com\"\ntoken_file = \"/t\"\n");
        assert!(e.contains("`url`") || e.contains("url"), "{e}");
        assert!(e.contains("in clear"), "{e}");
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://localhost",
            "https://hs.example.com",
        ] {
            let text =
                format!("[control]\nkind = \"headscale\"\nurl = \"{ok}\"\napi_key_file = \"/k\"\n");
            match Config::from_toml(&text, "config.toml") {
                Ok(_) => {}
                Err(e) => assert!(!e.to_string().contains("in clear"), "{ok}: {e}"),
            }
        }
    }

    /// F18: a config error never repeats a webhook URL's secret path or a password.
    #[test]
    fn config_errors_do_not_repeat_secret_urls() {
        let e = err("[[notify]]\nkind = \"slack\"\nurl = \"htps://hooks.slack.com/services/T000/B000/XXXXsecretXXXX\"\n");
        assert!(e.contains("htps://hooks.slack.com/…"), "{e}");
        assert!(!e.contains("XXXXsecretXXXX") && !e.contains("B000"), "{e}");
        let e = err(&MINIMAL.replace(
            "smtp://127.0.0.1:25",
            "smtx://alerts:hunter2@mail.example.com:587",
        ));
        assert!(!e.contains("hunter2"), "{e}");
    }

    /// F20: a duration too long to add to a time is a config error naming the key, not a panic
    /// at the first failed delivery.
    #[test]
    fn endless_durations_are_refused_with_the_key() {
        let e = err(&format!(
            "{MINIMAL}\n[alerts]\ndelivery_max_age = \"1000000y\"\n"
        ));
        assert!(
            e.contains("alerts.delivery_max_age") && e.contains("longer than 100 years"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\n[digest]\nevery = \"1000000y\"\n"));
        assert!(e.contains("longer than 100 years"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err(&MINIMAL.replace("smtp = ", "smpt = "));
        assert!(e.starts_with("config.toml:12:"), "{e}");
        assert!(e.contains("smpt"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = err("[tailscale]\nsocket = \"/x\"\nsokcet = 1\n");
        assert!(
            e.starts_with("config.toml:3:") && e.contains("sokcet"),
            "{e}"
        );
        let e = err("[stat]\ndir = \"/x\"\n");
        assert!(e.starts_with("config.toml:1:") && e.contains("stat"), "{e}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let e = err("[digest]\nevery = \"weekly\"\n");
        assert!(
            e.starts_with("config.toml:2:") && e.contains("digest.every"),
            "{e}"
        );
        let c = Config::from_toml("[digest]\nevery = \"7d\"\n", "config.toml").unwrap();
        assert_eq!(c.digest_every, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(Config::defaults().digest_every, None, "off by default");
        let e = err("[daemon]\ninterval = \"soon\"\n");
        assert!(
            e.starts_with("config.toml:2:") && e.contains("daemon.interval"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("smtp://127.0.0.1:25", "ftp://x"));
        assert!(
            e.starts_with("config.toml:12:") && e.contains("`smtp`"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("admin@example.com", "not an address"));
        assert!(
            e.starts_with("config.toml:10:") && e.contains("`to`"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("kind = \"email\"", "kind = \"pager\""));
        assert!(
            e.starts_with("config.toml:9:") && e.contains("pager"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("to = [\"admin@example.com\"]\n", ""));
        assert!(e.contains("needs `to`"), "{e}");
        let e = err("[tailscale]\nsource = \"magic\"\n");
        assert!(e.starts_with("config.toml:2:"), "{e}");
    }

    #[test]
    fn smtp_forms() {
        let t = |url: &str| {
            let c = Config::from_toml(&MINIMAL.replace("smtp://127.0.0.1:25", url), "c").unwrap();
            let ChannelKind::Email(e) = &c.channels[0].kind else {
                panic!("email channel")
            };
            e.transport.clone()
        };
        assert_eq!(
            t("sendmail"),
            MailTransport::Sendmail {
                program: DEFAULT_SENDMAIL.into()
            }
        );
        std::env::set_var(PASSWORD_ENV, "hunter2");
        let MailTransport::Smtp {
            tls,
            port,
            user,
            password,
            ..
        } = t("smtp://me%40x.org@mail.example.com:587")
        else {
            panic!()
        };
        assert_eq!(
            (tls, port, user.as_deref()),
            (SmtpTls::StartTls, 587, Some("me@x.org"))
        );
        assert_eq!(password.unwrap().expose(), "hunter2");
        let MailTransport::Smtp { tls, port, .. } = t("smtps://me@mail.example.com") else {
            panic!()
        };
        assert_eq!((tls, port), (SmtpTls::Tls, 465));
        let MailTransport::Smtp { tls, .. } = t("smtp://mail.example.com") else {
            panic!()
        };
        assert_eq!(
            tls,
            SmtpTls::StartTls,
            "non-loopback plain smtp:// still requires STARTTLS"
        );
        assert!(err(&MINIMAL.replace("smtp://127.0.0.1:25", "smtp://u:pw@h")).contains("password"));
    }

    #[test]
    fn secrets_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = MINIMAL.replace(
            "smtp = \"smtp://127.0.0.1:25\"",
            &format!(
                "smtp = \"smtps://u@h\"\npassword_file = \"{}\"",
                pw.display()
            ),
        );
        let c = Config::from_toml(&text, "c").unwrap();
        assert!(!c.render().contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let ChannelKind::Email(e) = &c.channels[0].kind else {
            panic!("email channel")
        };
        let MailTransport::Smtp { password, .. } = &e.transport else {
            panic!()
        };
        assert_eq!(password.as_ref().unwrap().expose(), "s3cret");
    }

    #[test]
    fn secrets_readable_by_every_user_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let slack =
            "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/X\"\n";
        let open = write("open.toml", slack, 0o644);
        let e = Config::load(&open).unwrap_err().to_string();
        assert!(
            e.contains("open.toml:3:")
                && e.contains("slack webhook URL is a secret")
                && e.contains("chmod o-rwx"),
            "{e}"
        );
        assert!(Config::load(&write("private.toml", slack, 0o640)).is_ok());
        // A password in a URL is a secret too; a plain URL is not.
        let hook = |u: &str| format!("[[notify]]\nkind = \"webhook\"\nurl = \"{u}\"\n");
        let e = Config::load(&write("pw.toml", &hook("https://u:pw@h/x"), 0o644)).unwrap_err();
        assert!(e.to_string().contains("holds a password"), "{e}");
        assert!(Config::load(&write("plain.toml", &hook("https://h/x"), 0o644)).is_ok());
        // Secret files must be private as well.
        let tok = write("token", "123:ABC\n", 0o644);
        let text = format!(
            "[[notify]]\nkind = \"gotify\"\nurl = \"https://g/\"\ntoken_file = \"{}\"\n",
            tok.display()
        );
        let e = Config::from_toml(&text, "c").unwrap_err().to_string();
        assert!(
            e.contains("c:4:") && e.contains("every local user can read"),
            "{e}"
        );
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::from_toml(&text, "c").is_ok());
    }

    /// F21: whoever can write the config, a secret file or an exec program runs code as the
    /// service user; others' write permission is refused, with where and how to fix it.
    #[test]
    fn files_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let conf = write("open.toml", "", 0o646);
        let e = Config::load(&conf).unwrap_err().to_string();
        assert!(e.contains("open.toml") && e.contains("chmod o-w"), "{e}");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Config::load(&conf).is_ok());

        let tok = write("token", "123:ABC\n", 0o602);
        let text = format!(
            "[[notify]]\nkind = \"gotify\"\nurl = \"https://g/\"\ntoken_file = \"{}\"\n",
            tok.display()
        );
        let e = Config::from_toml(&text, "c").unwrap_err().to_string();
        assert!(e.contains("c:4:") && e.contains("can write"), "{e}");

        let prog = write("notify.sh", "#!/bin/sh\n", 0o757);
        let text = format!(
            "[[notify]]\nkind = \"exec\"\ncommand = [\"{}\"]\n",
            prog.display()
        );
        let e = Config::from_toml(&text, "c").unwrap_err().to_string();
        assert!(e.contains("c:3:") && e.contains("chmod o-w"), "{e}");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(Config::from_toml(&text, "c").is_ok());
    }

    #[test]
    fn filters_and_duplicate_names() {
        let text = format!("{MINIMAL}min_severity = \"warning\"\nevents = [\"device.new\"]\n");
        let c = Config::from_toml(&text, "c").unwrap();
        assert_eq!(c.channels[0].route.min_severity, Severity::Warning);
        let e = err(&format!("{MINIMAL}events = [\"device.nwe\"]\n"));
        assert!(e.contains("device.nwe"), "{e}");
        let e = err(&format!(
            "{MINIMAL}{}",
            &MINIMAL[MINIMAL.find("[[notify]]").unwrap()..]
        ));
        assert!(e.contains("distinct `name`"), "{e}");
    }
}
