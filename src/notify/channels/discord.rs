//! Discord webhook: every Markdown character escaped, and no mention parsed.

use serde_json::json;

use super::{Message, Room};
use crate::config::{ConfigError, Keys, UrlUse};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Discord {
    pub url: url::Url,
}

impl Room for Discord {
    const NAME: &'static str = "discord";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Discord {
            url: k.url(UrlUse::Secret)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, true);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let req = http::client().post(self.url.clone()).json(&json!({
            "content": sanitize::cap_escaped(&sanitize::discord(&http::chat(m, 4_000)), 1_900),
            "allowed_mentions": { "parse": [] },
        }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
