//! Gotify `POST /message`, priority by severity.

use serde_json::json;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::config::secret::Secret;
use crate::model::Severity;
use crate::notify::http::{self, SendError};

#[derive(Debug, Clone)]
pub struct Gotify {
    pub url: url::Url,
    pub token: Secret,
}

impl Room for Gotify {
    const NAME: &'static str = "gotify";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Gotify {
            url: k.url(UrlUse::Credential)?,
            token: k.required(&k.raw().token_file, "token_file")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let url = format!("{}/message", self.url.as_str().trim_end_matches('/'));
        let priority = match http::worst(m) {
            Severity::Critical => 8,
            Severity::Warning => 5,
            Severity::Info => 2,
        };
        let req = http::client()
            .post(url)
            .header("X-Gotify-Key", self.token.expose())
            .json(&json!({
                "title": m.rendered.subject,
                "message": http::cap(m.rendered.text.trim(), 8_000),
                "priority": priority,
            }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
