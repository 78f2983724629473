//! Slack incoming webhook: Slack's escaping of `&`, `<` and `>`, so that no mention or link
//! can be formed by a name.

use serde_json::json;

use super::{Message, Room};
use crate::config::{ConfigError, Keys, UrlUse};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Slack {
    pub url: url::Url,
}

impl Room for Slack {
    const NAME: &'static str = "slack";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Slack {
            url: k.url(UrlUse::Secret)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, true);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let req = http::client().post(self.url.clone()).json(&json!({
            "text": sanitize::slack(&http::chat(m, 35_000)),
            "unfurl_links": false,
            "unfurl_media": false,
        }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
