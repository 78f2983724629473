//! Pushover: a form, priority by severity.

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::config::secret::Secret;
use crate::model::Severity;
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Pushover {
    pub url: url::Url,
    pub token: Secret,
    pub user_key: Secret,
}

impl Room for Pushover {
    const NAME: &'static str = "pushover";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let r = k.raw();
        Ok(Pushover {
            url: k.url_or(
                "https://api.pushover.net/1/messages.json",
                UrlUse::Credential,
            )?,
            token: k.required(&r.token_file, "token_file")?,
            user_key: k.required(&r.user_key_file, "user_key_file")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
        out.push_str("# token, user_key: set (redacted)\n");
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let priority = match http::worst(m) {
            Severity::Critical => "1",
            Severity::Warning => "0",
            Severity::Info => "-1",
        };
        let req = http::client().post(self.url.clone()).form(&[
            ("token", self.token.expose()),
            ("user", self.user_key.expose()),
            ("title", &sanitize::line(&m.rendered.subject, 250)),
            ("message", &http::cap(m.rendered.text.trim(), 1_000)),
            ("priority", priority),
        ]);
        http::finish(Self::NAME, req, m.timeout).await
    }
}
