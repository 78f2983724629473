//! Every channel that is an HTTP request (webhook, ntfy, Slack, Discord, Telegram, Gotify,
//! Alertmanager), and `exec`. One HTTP client for all of them.
//!
//! The webhook schema (also the `exec` stdin) is documented in the README:
//! `{"version": 1, "source": "tailscale-monitor", "host", "test", "subject", "events": [Event]}`.
//! With a `secret_file`, the request carries
//! `X-Tailscale-Monitor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! the same scheme Tailscale signs its own webhooks with.

use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::render::{Context, Rendered};
use crate::config::secret::Secret;
use crate::model::Event;
use crate::model::Severity;
use crate::sanitize;

/// One message for a channel: the batch, rendered once, and how long the send may take.
pub struct Message<'a> {
    pub cx: &'a Context,
    pub events: &'a [&'a Event],
    pub rendered: &'a Rendered,
    pub timeout: Duration,
    /// A `test-notify` message.
    pub test: bool,
}

pub const SIGNATURE_HEADER: &str = "X-Tailscale-Monitor-Signature";

/// A URL path segment: everything but the unreserved characters percent-encoded.
pub(crate) const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The one HTTP client of the channels: no redirect followed.
pub(crate) fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("tailscale-monitor/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry custom credential headers (X-Gotify-Key) and, on a 307 or
            // 308, the body (a PagerDuty routing key) to wherever it points: never followed (F10).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client")
    })
}

/// The webhook / exec payload.
pub fn payload(m: &Message) -> Value {
    json!({
        "version": 1,
        "source": "tailscale-monitor",
        "host": m.cx.host,
        "test": m.test,
        "subject": m.rendered.subject,
        "events": m.events,
        "log_anchor": m.cx.anchor.as_ref().map(|a| json!({"event_id": a.event_id, "hash": a.hash})),
    })
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &Secret, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// At most `max` characters of `text`, cut on a character boundary, marked when cut.
pub(crate) fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(30)).collect();
    s.push_str("\n… (truncated; see `events`)");
    s
}

/// Why a channel did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// One line, without secrets.
    pub message: String,
    /// How many events of the batch, in order, the channel accepted before it failed (channels
    /// that send one request per event; 0 for the others).
    pub accepted: usize,
    /// The provider refused this message for good (an HTTP 4xx other than 408 and 429): sending
    /// the same message again cannot succeed.
    pub permanent: bool,
}

impl From<String> for SendError {
    fn from(message: String) -> Self {
        SendError {
            message,
            accepted: 0,
            permanent: false,
        }
    }
}

impl SendError {
    /// The error for an HTTP answer `status`, after `accepted` events went through.
    pub fn http(status: reqwest::StatusCode, message: String, accepted: usize) -> Self {
        SendError {
            message,
            accepted,
            permanent: status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A chat message: the subject, a blank line and the text, at most `max` characters.
pub(crate) fn chat(m: &Message, max: usize) -> String {
    cap(
        &format!("{}\n\n{}", m.rendered.subject, m.rendered.text.trim()),
        max,
    )
}

/// The highest severity of the batch.
pub(crate) fn worst(m: &Message) -> Severity {
    m.events
        .iter()
        .map(|e| e.severity)
        .max()
        .unwrap_or_default()
}

/// Sends `req` and turns the answer into the channel's result: a 2xx, or one line with the
/// status and the start of the answer (a 4xx other than 408 and 429 is permanent).
pub(crate) async fn finish(
    name: &str,
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(), SendError> {
    let resp = req.timeout(timeout).send().await.map_err(|e| {
        // reqwest's errors can carry the URL, which for Telegram holds the token.
        sanitize::line(&format!("{name}: {}", e.without_url()), 300)
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = error_body(resp).await;
    Err(SendError::http(
        status,
        sanitize::line(&format!("{name}: HTTP {status}: {body}"), 300),
        0,
    ))
}

/// `key = "…"` for a URL in the redacted display; `secret`: the URL is itself a credential.
pub(crate) fn show_url(out: &mut String, key: &str, url: &url::Url, secret: bool) {
    let shown = if secret {
        sanitize::redact_secret_url(url)
    } else {
        sanitize::redact_url(url)
    };
    out.push_str(&format!(
        "{key} = {}\n",
        crate::config::keys::toml_str(&shown)
    ));
}

/// The start of an error answer, for the one-line message (F11: a channel that answers an error
/// with a gigabyte costs 4 KiB and no more; the rest is never read).
pub(crate) async fn error_body(mut resp: reqwest::Response) -> String {
    const MAX: usize = 4 << 10;
    let mut buf = Vec::new();
    while buf.len() < MAX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(MAX - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The only variables a child may get from the monitor's environment (which may hold
/// `TAILSCALE_MONITOR_SMTP_PASSWORD` and the like): who and where it runs, for a local MTA's own
/// config (`~/.msmtprc`) and its dates. Nothing else, whatever its name (F12).
const CHILD_ENV: [&str; 4] = ["HOME", "USER", "LOGNAME", "TZ"];

/// Every child process the monitor starts (exec, apprise, sendmail, the `tailscale` CLI): an
/// environment built from an allowlist, a fixed `PATH` and `LANG`, and [`CHILD_ENV`] as the
/// monitor has them.
pub(crate) fn child_command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8");
    for k in CHILD_ENV {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_scheme() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently (Python hmac).
        let s = signature(&Secret::for_tests("secret"), 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
