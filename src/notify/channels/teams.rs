//! Microsoft Teams Workflows webhook.

use serde_json::{json, Value};

use crate::sanitize;

secret_webhook!(
    /// One Adaptive Card whose text blocks are Markdown-escaped.
    Teams,
    "teams",
    |m| card(m.rendered)
);

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
