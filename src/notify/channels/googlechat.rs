//! Google Chat space webhook.

use serde_json::json;

use crate::notify::http;
use crate::sanitize;

secret_webhook!(
    /// Slack's escaping of `&`, `<` and `>`.
    GoogleChat,
    "googlechat",
    |m| json!({ "text": sanitize::slack(&http::chat(m, 30_000)) })
);
