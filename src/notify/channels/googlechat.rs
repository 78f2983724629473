//! Google Chat space webhook.

use serde_json::json;

use super::{Message, Room};
use crate::config::{ConfigError, Keys, UrlUse};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct GoogleChat {
    pub url: url::Url,
}

impl Room for GoogleChat {
    const NAME: &'static str = "googlechat";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(GoogleChat {
            url: k.url(UrlUse::Secret)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, true);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let req = http::client()
            .post(self.url.clone())
            .json(&json!({ "text": sanitize::slack(&http::chat(m, 30_000)) }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
