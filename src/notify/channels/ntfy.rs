//! ntfy: a POST of the text to the topic URL, priority by severity.

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::config::secret::Secret;
use crate::model::Severity;
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Ntfy {
    pub url: url::Url,
    pub token: Option<Secret>,
}

impl Room for Ntfy {
    const NAME: &'static str = "ntfy";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let token = k.secret(&k.raw().token_file, "token_file")?;
        let use_ = if token.is_some() {
            UrlUse::Credential
        } else {
            UrlUse::Plain
        };
        Ok(Ntfy {
            url: k.url(use_)?,
            token,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let priority = match http::worst(m) {
            Severity::Critical => "urgent",
            Severity::Warning => "high",
            Severity::Info => "default",
        };
        let mut req = http::client()
            .post(self.url.clone())
            .header("Title", sanitize::line(&m.rendered.subject, 250))
            .header("Priority", priority)
            .header("Tags", "rotating_light")
            .body(http::cap(m.rendered.text.trim(), 3800));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        http::finish(Self::NAME, req, m.timeout).await
    }
}
