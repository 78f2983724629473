//! Telegram Bot API `sendMessage`: plain text (no `parse_mode`), no link previews.

use serde_json::json;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{toml_str, Keys};
use crate::config::secret::Secret;
use crate::notify::http::{self, SendError};

#[derive(Debug, Clone)]
pub struct Telegram {
    pub api_url: url::Url,
    pub token: Secret,
    pub chat_id: String,
}

impl Room for Telegram {
    const NAME: &'static str = "telegram";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let r = k.raw();
        Ok(Telegram {
            api_url: match &r.api_url {
                Some(a) => k.https(a, "api_url")?,
                None => url::Url::parse("https://api.telegram.org").expect("static URL"),
            },
            token: k.required(&r.token_file, "token_file")?,
            chat_id: k.string(&r.chat_id, "chat_id", "")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "api_url", &self.api_url, false);
        out.push_str(&format!(
            "chat_id = {}\n# token: set (redacted)\n",
            toml_str(&self.chat_id)
        ));
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let url = format!(
            "{}/bot{}/sendMessage",
            self.api_url.as_str().trim_end_matches('/'),
            self.token.expose()
        );
        let req = http::client().post(url).json(&json!({
            "chat_id": self.chat_id,
            "text": http::chat(m, 4_000),
            "disable_web_page_preview": true,
        }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
