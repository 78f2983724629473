//! The Tailscale Admin API v2: devices (`?fields=all`), users (`?type=all`), tailnet settings, the
//! policy file as HuJSON with its `ETag`, and the last hour of the configuration audit log (who
//! made a change). Auth is an API access token, or OAuth client credentials whose access token
//! (one hour) is fetched at `/api/v2/oauth/token` and refreshed a minute before it expires.
//! Settings, policy and audit log are optional: a credential without their scope leaves them
//! unknown (`None`), never "off".

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use super::{client, http_error, time, ControlError};
use crate::config::TailscaleAuth;
use crate::model::control::{AuditEntry, ControlDevice, ControlSnapshot, ControlUser, PolicyDoc};
use crate::model::posture::{DeviceFacts, KeyFacts, WebhookFacts};
use crate::model::StableNodeId;

pub struct TailscaleApi {
    base: url::Url,
    tailnet: String,
    auth: TailscaleAuth,
    http: reqwest::Client,
    /// The OAuth access token and when it stops being used.
    token: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct Devices {
    #[serde(default)]
    devices: Vec<Device>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Device {
    node_id: String,
    id: String,
    name: String,
    hostname: String,
    user: String,
    os: String,
    addresses: Vec<String>,
    authorized: Option<bool>,
    tags: Vec<String>,
    key_expiry_disabled: bool,
    expires: Option<String>,
    created: Option<String>,
    connected_to_control: Option<bool>,
    enabled_routes: Vec<String>,
    last_seen: Option<String>,
    is_external: Option<bool>,
    update_available: Option<bool>,
    multiple_connections: Option<bool>,
    tailnet_lock_error: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Keys {
    keys: Vec<Key>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Key {
    id: String,
    key_type: String,
    description: String,
    created: Option<String>,
    expires: Option<String>,
    revoked: Option<String>,
    invalid: bool,
    capabilities: KeyCapabilities,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyCapabilities {
    devices: KeyDevices,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyDevices {
    create: KeyCreate,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyCreate {
    reusable: bool,
    preauthorized: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Webhooks {
    webhooks: Vec<Webhook>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Webhook {
    endpoint_url: String,
    provider_type: String,
    subscriptions: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Contacts {
    security: Contact,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Contact {
    email: String,
    needs_verification: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LogStream {
    destination_type: String,
    url: String,
}

#[derive(Deserialize)]
struct Users {
    #[serde(default)]
    users: Vec<User>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct User {
    id: String,
    login_name: String,
    display_name: String,
    role: String,
    status: String,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuditLogs {
    logs: Vec<AuditLog>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AuditLog {
    event_time: Option<String>,
    action: String,
    actor: Actor,
    target: Target,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Actor {
    login_name: String,
    display_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Target {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    property: String,
}

impl TailscaleApi {
    pub fn new(base: url::Url, tailnet: String, auth: TailscaleAuth, timeout: Duration) -> Self {
        TailscaleApi {
            base,
            tailnet,
            auth,
            http: client(timeout),
            token: Mutex::new(None),
        }
    }

    pub fn url(&self) -> &url::Url {
        &self.base
    }

    fn err(&self, what: impl std::fmt::Display) -> ControlError {
        ControlError::new(format!(
            "Tailscale Admin API {}: {what}",
            crate::sanitize::redact_url(&self.base)
        ))
    }

    /// The bearer token: the API key, or a cached OAuth access token (refreshed when it has
    /// less than a minute left).
    async fn bearer(&self) -> Result<String, ControlError> {
        let (client_id, secret) = match &self.auth {
            TailscaleAuth::ApiKey(k) => return Ok(k.expose().to_owned()),
            TailscaleAuth::OAuth { client_id, secret } => (client_id, secret),
        };
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let u = self
            .base
            .join("/api/v2/oauth/token")
            .map_err(|e| self.err(e))?;
        // Like x/oauth2's auto-detection: the credentials as HTTP Basic first, then as form
        // fields for a server that wants those.
        let basic = self
            .http
            .post(u.clone())
            .basic_auth(client_id, Some(secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| self.err(format!("OAuth token: {}", e.without_url())))?;
        let resp = if matches!(basic.status().as_u16(), 400 | 401) {
            self.http
                .post(u)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.expose()),
                ])
                .send()
                .await
                .map_err(|e| self.err(format!("OAuth token: {}", e.without_url())))?
        } else {
            basic
        };
        if !resp.status().is_success() {
            return Err(http_error("Tailscale Admin API OAuth token", resp).await);
        }
        let t: Token = super::json_bounded(resp)
            .await
            .map_err(|e| self.err(format!("OAuth token: {e}")))?;
        let until = token_deadline(Instant::now(), t.expires_in);
        *cached = Some((t.access_token.clone(), until));
        Ok(t.access_token)
    }

    async fn get(&self, path: &str, accept: &str) -> Result<reqwest::Response, ControlError> {
        let u = self.base.join(path).map_err(|e| self.err(e))?;
        let token = self.bearer().await?;
        let resp = self
            .http
            .get(u)
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| self.err(format!("GET {path}: {}", e.without_url())))?;
        if resp.status().as_u16() == 401 {
            // An OAuth token revoked early: fetch a new one next time.
            *self.token.lock().await = None;
        }
        Ok(resp)
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ControlError> {
        super::json_body(
            "Tailscale Admin API",
            path,
            self.get(path, "application/json").await?,
        )
        .await
    }

    /// An optional part: 403/404 (a scope the credential lacks) is `None`; 401 and 429 fail the
    /// read like any other.
    async fn optional(
        &self,
        path: &str,
        accept: &str,
    ) -> Result<Option<reqwest::Response>, ControlError> {
        let resp = self.get(path, accept).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(Some(resp)),
            403 | 404 => Ok(None),
            _ => Err(http_error(&format!("Tailscale Admin API GET {path}"), resp).await),
        }
    }

    /// [`Self::optional`] for a JSON part, parsed.
    async fn optional_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ControlError> {
        match self.optional(path, "application/json").await? {
            Some(resp) => super::json_body("Tailscale Admin API", path, resp)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// What only the posture checks read: keys, webhooks, the security contact, log streaming.
    /// Each part the credential may not read (403/404) stays `None`.
    async fn posture(&self, snap: &mut ControlSnapshot) -> Result<(), ControlError> {
        let t = &self.tailnet;
        if let Some(keys) = self
            .optional_json::<Keys>(&format!("/api/v2/tailnet/{t}/keys?all=true"))
            .await?
        {
            let (mut auth, mut api) = (Vec::new(), Vec::new());
            for k in keys.keys {
                let facts = KeyFacts {
                    id: k.id,
                    kind: if k.key_type.is_empty() {
                        "auth".into()
                    } else {
                        k.key_type.clone()
                    },
                    description: k.description,
                    reusable: k.capabilities.devices.create.reusable,
                    preauthorized: k.capabilities.devices.create.preauthorized,
                    created: time(k.created.as_deref()),
                    expires: time(k.expires.as_deref()),
                    spent: k.invalid || time(k.revoked.as_deref()).is_some(),
                };
                match k.key_type.as_str() {
                    "api" => api.push(facts),
                    "" | "auth" => auth.push(facts),
                    _ => {} // OAuth clients and federated identities do not expire by design.
                }
            }
            snap.posture.auth_keys = Some(auth);
            snap.posture.api_keys = Some(api);
        }
        if let Some(hooks) = self
            .optional_json::<Webhooks>(&format!("/api/v2/tailnet/{t}/webhooks"))
            .await?
        {
            snap.posture.webhooks = Some(
                hooks
                    .webhooks
                    .into_iter()
                    .map(|w| WebhookFacts {
                        url: w.endpoint_url,
                        provider: w.provider_type,
                        subscriptions: w.subscriptions,
                    })
                    .collect(),
            );
        }
        if let Some(c) = self
            .optional_json::<Contacts>(&format!("/api/v2/tailnet/{t}/contacts"))
            .await?
        {
            snap.posture.security_contact = Some((c.security.email, c.security.needs_verification));
        }
        let path = format!("/api/v2/tailnet/{t}/logging/configuration/stream");
        let resp = self.get(&path, "application/json").await?;
        snap.posture.log_streaming = match resp.status().as_u16() {
            200..=299 => {
                let l: LogStream = super::json_bounded(resp).await.unwrap_or_default();
                Some(!l.destination_type.is_empty() || !l.url.is_empty())
            }
            404 => Some(false),
            403 => None,
            _ => return Err(http_error(&format!("Tailscale Admin API GET {path}"), resp).await),
        };
        Ok(())
    }

    pub async fn snapshot(&self) -> Result<ControlSnapshot, ControlError> {
        let t = &self.tailnet;
        let devices: Devices = self
            .json(&format!("/api/v2/tailnet/{t}/devices?fields=all"))
            .await?;
        let users: Users = self
            .json(&format!("/api/v2/tailnet/{t}/users?type=all"))
            .await?;
        let mut snap = ControlSnapshot {
            kind: "tailscale".into(),
            ..ControlSnapshot::default()
        };
        snap.settings = self
            .optional_json(&format!("/api/v2/tailnet/{t}/settings"))
            .await?;
        if let Some(r) = self
            .optional(&format!("/api/v2/tailnet/{t}/acl"), "application/hujson")
            .await?
        {
            let etag = r
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let text = super::body_bounded(r, super::MAX_POLICY)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| self.err(format!("acl: {e}")))?;
            snap.policy = Some(PolicyDoc { text, etag });
        }
        let end = chrono::Utc::now();
        let start = end - chrono::Duration::hours(1);
        let path = format!(
            "/api/v2/tailnet/{t}/logging/configuration?start={}&end={}",
            start.format("%Y-%m-%dT%H:%M:%SZ"),
            end.format("%Y-%m-%dT%H:%M:%SZ")
        );
        if let Some(r) = self.optional(&path, "application/json").await? {
            let logs: AuditLogs = super::json_bounded(r).await.unwrap_or_default();
            snap.audit = logs
                .logs
                .into_iter()
                .rev()
                .map(|l| AuditEntry {
                    at: time(l.event_time.as_deref()),
                    actor: if l.actor.login_name.is_empty() {
                        l.actor.display_name
                    } else {
                        l.actor.login_name
                    },
                    action: l.action,
                    target: [l.target.kind, l.target.name, l.target.property]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect();
        }
        self.posture(&mut snap).await?;
        for u in users.users {
            snap.users.insert(
                u.login_name.clone(),
                ControlUser {
                    id: u.id,
                    login: u.login_name,
                    display_name: u.display_name,
                    role: u.role,
                    status: u.status,
                },
            );
        }
        for d in devices.devices {
            let id = if d.node_id.is_empty() {
                d.id
            } else {
                d.node_id
            };
            let routes = crate::model::as_set(d.enabled_routes);
            let tags = crate::model::as_set(d.tags);
            snap.posture.devices.insert(
                StableNodeId(id.clone()),
                DeviceFacts {
                    last_seen: time(d.last_seen.as_deref()),
                    is_external: d.is_external,
                    update_available: d.update_available,
                    multiple_connections: d.multiple_connections,
                    tailnet_lock_error: d.tailnet_lock_error,
                },
            );
            snap.devices.insert(
                StableNodeId(id.clone()),
                ControlDevice {
                    id: StableNodeId(id),
                    hostname: d.hostname,
                    name: d.name,
                    user: d.user,
                    os: d.os,
                    addresses: d.addresses,
                    tags,
                    routes,
                    authorized: d.authorized.unwrap_or(true),
                    key_expiry: time(d.expires.as_deref()),
                    key_expiry_disabled: d.key_expiry_disabled,
                    created: time(d.created.as_deref()),
                    online: d.connected_to_control,
                },
            );
        }
        Ok(snap)
    }
}

/// When a token given `expires_in` seconds ago should be renewed: a minute early, and never
/// later than a day however long the server says (an `expires_in` of 2^64−1 must not overflow).
fn token_deadline(now: Instant, expires_in: Option<u64>) -> Instant {
    let life = Duration::from_secs(expires_in.unwrap_or(3600).min(86_400));
    now.checked_add(life.saturating_sub(Duration::from_secs(60)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: the control plane's JSON, mutated: no panic, bounded time.
    #[test]
    fn fuzz_api_answers() {
        crate::fuzz::check(
            "api answers",
            &[br#"{"devices":[{"nodeId":"n1CNTRL","id":"1","name":"web-01.ts.net","hostname":"web-01","user":"ops@example.com","os":"linux","addresses":["100.64.0.1"],"authorized":true,"tags":["tag:server"],"keyExpiryDisabled":false,"expires":"2027-01-01T00:00:00Z","created":"2026-01-01T00:00:00Z","enabledRoutes":["10.0.0.0/8"],"lastSeen":"2026-12-01T00:00:00Z","tailnetLockError":""}]}"#, br#"{"users":[{"id":"u1","loginName":"ops@example.com","displayName":"Ops","role":"admin","status":"active"}]}"#, br#"{"access_token":"tok","expires_in":3600}"#, br#"{"logs":[{"eventTime":"2026-12-01T00:00:00Z","action":"UPDATE","actor":{"loginName":"a@b"}}]}"#],
            |b| {
                let _ = serde_json::from_slice::<Devices>(b);
                let _ = serde_json::from_slice::<Users>(b);
                let _ = serde_json::from_slice::<Token>(b);
                let _ = serde_json::from_slice::<AuditLogs>(b);
            },
        );
    }
    /// F3: any `expires_in` is a deadline within a day.
    #[test]
    fn an_endless_token_is_renewed_within_a_day() {
        let now = std::time::Instant::now();
        let d = super::token_deadline(now, Some(u64::MAX));
        assert!(d > now && d <= now + std::time::Duration::from_secs(86_400));
        assert_eq!(super::token_deadline(now, Some(0)), now);
    }
}
