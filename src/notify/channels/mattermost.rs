//! Mattermost incoming webhook.

use serde_json::json;

use crate::notify::http;
use crate::sanitize;

secret_webhook!(
    /// Slack's escaping, Markdown escaped, and no `@` left to mention with.
    Mattermost,
    "mattermost",
    |m| json!({ "text": sanitize::mattermost(&http::chat(m, 15_000)) })
);
