//! Matrix client-server API: an `m.room.message` with a transaction id per outbox batch (so a
//! retry is the same event), HTML-escaped, and no mention at all.

use serde_json::json;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{toml_str, Keys};
use crate::config::secret::Secret;
use crate::notify::http::{self, SendError, SEGMENT};

#[derive(Debug, Clone)]
pub struct Matrix {
    pub homeserver: url::Url,
    pub room: String,
    pub token: Secret,
}

impl Room for Matrix {
    const NAME: &'static str = "matrix";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let r = k.raw();
        Ok(Matrix {
            homeserver: match &r.homeserver {
                Some(h) => k.https(h, "homeserver")?,
                None => return Err(k.missing("homeserver", "")),
            },
            room: k.string(&r.room, "room", " (a room ID like !abc:example.org)")?,
            token: k.required(&r.token_file, "token_file")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "homeserver", &self.homeserver, false);
        out.push_str(&format!(
            "room = {}\n# token: set (redacted)\n",
            toml_str(&self.room)
        ));
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let txn =
            m.cx.batch
                .clone()
                .unwrap_or_else(|| format!("tsm-test-{}", chrono::Utc::now().timestamp_millis()));
        let path = format!(
            "_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            percent_encoding::utf8_percent_encode(&self.room, SEGMENT),
            percent_encoding::utf8_percent_encode(&txn, SEGMENT),
        );
        let url = self
            .homeserver
            .join(&path)
            .map_err(|e| format!("matrix: {e}"))?;
        let body = http::chat(m, 30_000);
        let req = http::client()
            .put(url)
            .bearer_auth(self.token.expose())
            .json(&json!({
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": html_escape::encode_text(&body).replace('\n', "<br>"),
                // An empty m.mentions: intentional mentions only, so `@room` in a name pings nobody.
                "m.mentions": {},
            }));
        http::finish(Self::NAME, req, m.timeout).await
    }
}
