//! Slack incoming webhook.

use serde_json::json;

use crate::notify::http;
use crate::sanitize;

secret_webhook!(
    /// Slack's escaping of `&`, `<` and `>`: no mention or link can be formed by a name.
    Slack,
    "slack",
    |m| json!({
        "text": sanitize::slack(&http::chat(m, 35_000)),
        "unfurl_links": false,
        "unfurl_media": false,
    })
);
