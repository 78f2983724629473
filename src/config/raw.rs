//! The file as serde reads it: every table and key, unknown ones refused (`deny_unknown_fields`).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) tailscale: RawTailscale,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) alerts: RawAlerts,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<RawNotify>>,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) digest: RawDigest,
    pub(super) control: Option<Spanned<RawControl>>,
    pub(super) webhooks: Option<Spanned<RawWebhooks>>,
    #[serde(default)]
    pub(super) watch: Vec<Spanned<RawWatch>>,
    #[serde(default)]
    pub(super) guard: RawGuard,
    #[serde(default)]
    pub(super) web: RawWeb,
    #[serde(default)]
    pub(super) export: Vec<Spanned<RawExport>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    pub(super) kind: Spanned<String>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) pen: Option<Spanned<u32>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) socket: Option<Spanned<String>>,
    pub(super) max_lag: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) viewers: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) interface: Option<Spanned<String>>,
    pub(super) approve_new: Option<Spanned<RawApproveNew>>,
    pub(super) tailscaled_doors: Option<Spanned<String>>,
}

/// `"never"`, or a list of stable IDs, tags and logins.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawApproveNew {
    Word(String),
    List(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) devices: Vec<String>,
    pub(super) offline_after: Option<Spanned<String>>,
    pub(super) back_after: Option<Spanned<String>>,
    pub(super) severity: Option<Spanned<String>>,
    pub(super) schedule: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) secret_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) api_key_file: Option<Spanned<PathBuf>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) tailnet: Option<String>,
    pub(super) oauth_client_id: Option<String>,
    pub(super) oauth_secret_file: Option<Spanned<PathBuf>>,
    pub(super) api_url: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDigest {
    pub(super) every: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTailscale {
    pub(super) socket: Option<PathBuf>,
    pub(super) privileged_socket: Option<PathBuf>,
    pub(super) source: Option<Spanned<String>>,
    pub(super) cli: Option<PathBuf>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) reconcile: Option<Spanned<String>>,
    pub(super) grace: Option<Spanned<String>>,
    pub(super) batch_window: Option<Spanned<String>>,
    pub(super) access_interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    pub(super) key_expiry_warning: Option<Spanned<String>>,
    pub(super) peer_connected: Option<Spanned<String>>,
    pub(super) peer_connected_quiet: Option<Spanned<String>>,
    pub(super) delivery_max_age: Option<Spanned<String>>,
    pub(super) coalesce_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub(crate) kind: Spanned<String>,
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) min_severity: Option<Spanned<String>>,
    pub(crate) events: Option<Spanned<Vec<String>>>,
    // email
    pub(crate) to: Option<Spanned<OneOrMany>>,
    pub(crate) from: Option<Spanned<String>>,
    pub(crate) smtp: Option<Spanned<String>>,
    pub(crate) sendmail: Option<Spanned<PathBuf>>,
    pub(crate) password_file: Option<Spanned<PathBuf>>,
    pub(crate) password_env: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    // HTTP channels
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) secret_file: Option<Spanned<PathBuf>>,
    pub(crate) token_file: Option<Spanned<PathBuf>>,
    pub(crate) chat_id: Option<Spanned<String>>,
    pub(crate) api_url: Option<Spanned<String>>,
    // exec
    pub(crate) command: Option<Spanned<Vec<String>>>,
    // pushover, pagerduty, matrix, apprise
    pub(crate) user_key_file: Option<Spanned<PathBuf>>,
    pub(crate) routing_key_file: Option<Spanned<PathBuf>>,
    pub(crate) homeserver: Option<Spanned<String>>,
    pub(crate) room: Option<Spanned<String>>,
    pub(crate) urls_file: Option<Spanned<PathBuf>>,
    pub(crate) program: Option<Spanned<PathBuf>>,
}
