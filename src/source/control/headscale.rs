//! The Headscale REST API (v0.29): `GET /api/v1/node`, `/api/v1/user`, `/api/v1/policy`, with
//! `Authorization: Bearer <API key>`. Headscale has no device approval, no settings, no Tailnet
//! Lock and no audit log; pending interactive registrations live only in its memory
//! (juanfont/headscale#2736). No policy at all means allow-all: that is a policy of `None`,
//! reported by the core, not an error.

use std::time::Duration;

use serde::Deserialize;

use super::{client, http_error, time, ControlError};
use crate::config::Secret;
use crate::model::control::{ControlDevice, ControlSnapshot, ControlUser, PolicyDoc};
use crate::model::posture::{DeviceFacts, KeyFacts};
use crate::model::StableNodeId;

pub struct Headscale {
    url: url::Url,
    key: Secret,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Nodes {
    #[serde(default)]
    nodes: Vec<Node>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Node {
    id: String,
    name: String,
    given_name: String,
    user: Option<User>,
    ip_addresses: Vec<String>,
    tags: Vec<String>,
    // Before 0.28: three tag lists instead of `tags`.
    forced_tags: Vec<String>,
    valid_tags: Vec<String>,
    approved_routes: Vec<String>,
    expiry: Option<String>,
    created_at: Option<String>,
    online: Option<bool>,
    last_seen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PreAuthKeys {
    pre_auth_keys: Vec<PreAuthKey>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PreAuthKey {
    id: String,
    reusable: bool,
    ephemeral: bool,
    used: bool,
    expiration: Option<String>,
    created_at: Option<String>,
    acl_tags: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ApiKeys {
    api_keys: Vec<ApiKey>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ApiKey {
    id: String,
    prefix: String,
    expiration: Option<String>,
    created_at: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct User {
    id: String,
    name: String,
    display_name: String,
    email: String,
}

#[derive(Deserialize)]
struct Users {
    #[serde(default)]
    users: Vec<User>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Policy {
    policy: String,
    updated_at: Option<String>,
}

impl Headscale {
    pub fn new(url: url::Url, key: Secret, timeout: Duration) -> Self {
        Headscale {
            url,
            key,
            http: client(timeout),
        }
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    fn err(&self, what: impl std::fmt::Display) -> ControlError {
        ControlError::new(format!(
            "headscale API {}: {what}",
            crate::sanitize::redact_url(&self.url)
        ))
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ControlError> {
        let u = self.url.join(path).map_err(|e| self.err(e))?;
        self.http
            .get(u)
            .bearer_auth(self.key.expose())
            .send()
            .await
            .map_err(|e| self.err(format!("GET {path}: {}", e.without_url())))
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ControlError> {
        super::json_body("headscale API", path, self.get(path).await?).await
    }

    /// A part the key may not be allowed to read: an error status leaves it `None`.
    async fn optional_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ControlError> {
        let resp = self.get(path).await?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        super::json_body("headscale API", path, resp)
            .await
            .map(Some)
    }

    pub async fn snapshot(&self) -> Result<ControlSnapshot, ControlError> {
        let nodes: Nodes = self.json("/api/v1/node").await?;
        let users: Users = self.json("/api/v1/user").await?;
        // A missing policy (file mode without a file, or none set in database mode) is answered
        // with an error status: that is allow-all, not a failure. A refused key is a failure.
        let resp = self.get("/api/v1/policy").await?;
        let policy = match resp.status().as_u16() {
            200..=299 => {
                let p: Policy = super::json_bounded_to(resp, super::MAX_POLICY)
                    .await
                    .map_err(|e| self.err(format!("GET /api/v1/policy: {e}")))?;
                (!p.policy.trim().is_empty()).then(|| PolicyDoc {
                    text: p.policy,
                    etag: p.updated_at.unwrap_or_default(),
                })
            }
            401 | 403 => return Err(http_error("headscale API GET /api/v1/policy", resp).await),
            _ => None,
        };
        let mut snap = ControlSnapshot {
            kind: "headscale".into(),
            policy,
            ..ControlSnapshot::default()
        };
        // Keys: a 403 (a key without the right) leaves them unknown.
        if let Some(keys) = self
            .optional_json::<PreAuthKeys>("/api/v1/preauthkey")
            .await?
        {
            snap.posture.auth_keys = Some(
                keys.pre_auth_keys
                    .into_iter()
                    .map(|k| KeyFacts {
                        description: if k.acl_tags.is_empty() {
                            String::new()
                        } else {
                            k.acl_tags.join(", ")
                        },
                        id: k.id,
                        kind: "preauth".into(),
                        reusable: k.reusable,
                        preauthorized: !k.ephemeral,
                        created: time(k.created_at.as_deref()),
                        expires: time(k.expiration.as_deref()),
                        spent: k.used && !k.reusable,
                    })
                    .collect(),
            );
        }
        if let Some(keys) = self.optional_json::<ApiKeys>("/api/v1/apikey").await? {
            snap.posture.api_keys = Some(
                keys.api_keys
                    .into_iter()
                    .map(|k| KeyFacts {
                        id: k.id,
                        kind: "api".into(),
                        description: k.prefix,
                        created: time(k.created_at.as_deref()),
                        expires: time(k.expiration.as_deref()),
                        ..KeyFacts::default()
                    })
                    .collect(),
            );
        }
        for u in users.users {
            snap.users.insert(
                u.name.clone(),
                ControlUser {
                    id: u.id,
                    login: u.name,
                    display_name: if u.display_name.is_empty() {
                        u.email
                    } else {
                        u.display_name
                    },
                    role: String::new(),
                    status: String::new(),
                },
            );
        }
        for n in nodes.nodes {
            let mut tags = n.tags;
            tags.extend(n.forced_tags);
            tags.extend(n.valid_tags);
            let tags = crate::model::as_set(tags);
            let expiry = time(n.expiry.as_deref());
            snap.posture.devices.insert(
                StableNodeId(n.id.clone()),
                DeviceFacts {
                    last_seen: time(n.last_seen.as_deref()),
                    ..DeviceFacts::default()
                },
            );
            let routes = crate::model::as_set(n.approved_routes);
            let user = if tags.is_empty() {
                n.user.map(|u| u.name).unwrap_or_default()
            } else {
                tags.join(", ")
            };
            snap.devices.insert(
                StableNodeId(n.id.clone()),
                ControlDevice {
                    id: StableNodeId(n.id),
                    hostname: n.name,
                    name: n.given_name,
                    user,
                    os: String::new(),
                    addresses: n.ip_addresses,
                    tags,
                    routes,
                    // Headscale has no device approval.
                    authorized: true,
                    key_expiry: expiry,
                    key_expiry_disabled: expiry.is_none(),
                    created: time(n.created_at.as_deref()),
                    online: n.online,
                },
            );
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    /// Issue 20: the control plane's JSON, mutated: no panic, bounded time.
    #[test]
    fn fuzz_api_answers() {
        crate::fuzz::check(
            "api answers",
            &[br#"{"nodes":[{"id":"1","name":"web-01","givenName":"web-01","user":{"id":"1","name":"ops"},"ipAddresses":["100.64.0.1","fd7a:115c:a1e0::1"],"tags":["tag:server"],"approvedRoutes":["10.0.0.0/8"],"expiry":"2027-01-01T00:00:00Z","createdAt":"2026-01-01T00:00:00Z","online":true,"lastSeen":"2026-12-01T00:00:00Z"}]}"#, br#"{"users":[{"id":"1","name":"ops","email":"ops@example.com"}]}"#, br#"{"preAuthKeys":[{"id":"1","reusable":true,"ephemeral":false,"used":false,"expiration":"2026-12-02T00:00:00Z","aclTags":["tag:x"]}]}"#],
            |b| {
                let _ = serde_json::from_slice::<Nodes>(b);
                let _ = serde_json::from_slice::<Users>(b);
                let _ = serde_json::from_slice::<PreAuthKeys>(b);
            },
        );
    }
}
