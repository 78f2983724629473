//! Mattermost incoming webhook: Slack's escaping, Markdown escaped, no `@` left.

use serde_json::json;

use super::{Message, Room};
use crate::config::{ConfigError, Keys, UrlUse};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Mattermost {
    pub url: url::Url,
}

impl Room for Mattermost {
    const NAME: &'static str = "mattermost";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Mattermost {
            url: k.url(UrlUse::Secret)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, true);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let req = http::client()
            .post(self.url.clone())
            .json(&json!({ "text": sanitize::mattermost(&http::chat(m, 15_000)) }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
