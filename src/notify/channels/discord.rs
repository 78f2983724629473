//! Discord webhook.

use serde_json::json;

use crate::notify::http;
use crate::sanitize;

secret_webhook!(
    /// Every Markdown character escaped, and no mention parsed.
    Discord,
    "discord",
    |m| json!({
        "content": sanitize::cap_escaped(&sanitize::discord(&http::chat(m, 4_000)), 1_900),
        "allowed_mentions": { "parse": [] },
    })
);
