//! Generic webhook: a POST of the documented JSON, signed with HMAC-SHA256 when a secret is set.

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::config::secret::Secret;
use crate::notify::http::{self, SendError, SIGNATURE_HEADER};

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: url::Url,
    pub secret: Option<Secret>,
}

impl Room for Webhook {
    const NAME: &'static str = "webhook";
    const BATCH: usize = 500;

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Webhook {
            url: k.url(UrlUse::Plain)?,
            secret: k.secret(&k.raw().secret_file, "secret_file")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
        if self.secret.is_some() {
            out.push_str("# secret: set (redacted)\n");
        }
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let body = serde_json::to_vec(&http::payload(m)).expect("payload serializes");
        let mut req = http::client()
            .post(self.url.clone())
            .header("Content-Type", "application/json");
        if let Some(s) = &self.secret {
            req = req.header(
                SIGNATURE_HEADER,
                http::signature(s, chrono::Utc::now().timestamp(), &body),
            );
        }
        http::finish(Self::NAME, req.body(body), m.timeout).await
    }
}
