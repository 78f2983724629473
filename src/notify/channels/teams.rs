//! Microsoft Teams Workflows webhook: one Adaptive Card whose text blocks are Markdown-escaped.

use serde_json::{json, Value};

use super::{Message, Room};
use crate::config::{ConfigError, Keys, UrlUse};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Teams {
    pub url: url::Url,
}

impl Room for Teams {
    const NAME: &'static str = "teams";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Teams {
            url: k.url(UrlUse::Secret)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, true);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let req = http::client()
            .post(self.url.clone())
            .json(&card(m.rendered));
        http::finish(Self::NAME, req, m.timeout).await
    }
}

/// A Teams Workflows message: one Adaptive Card whose text blocks are Markdown-escaped.
pub fn card(r: &crate::notify::render::Rendered) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": sanitize::markdown(&sanitize::line(&r.subject, 250)), "weight": "Bolder", "wrap": true},
                    {"type": "TextBlock", "text": sanitize::cap_escaped(&sanitize::markdown(r.text.trim()), 20_000), "wrap": true},
                ],
            },
        }],
    })
}
