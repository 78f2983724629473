//! `[control]` and `[webhooks]`: the control view's API, its credentials and its interval.

use super::keys::{http_url, no_plain_http};

use std::time::Duration;

use toml::Spanned;

use crate::config::ctx::{ConfigError, Ctx};
use crate::config::raw::RawControl;
use crate::config::secret::read_secret;
use crate::config::Secret;

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

pub(super) fn control(cx: &Ctx, c: &Spanned<RawControl>) -> Result<ControlConfig, ConfigError> {
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
