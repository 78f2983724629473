//! The control view's sources: the Headscale REST API and the Tailscale Admin API v2. Each read
//! returns a whole [`ControlSnapshot`] or a one-line [`ControlError`] naming the API and what to
//! do — a refused key is an error, never an empty tailnet. A 429 carries the `Retry-After` the
//! daemon waits before polling again.
//!
//! Field names follow spec/control-plane.md: Headscale's protojson (lowerCamelCase, `uint64` ids
//! as strings), the Admin API's `devices?fields=all`, `users?type=all`, `settings`, the HuJSON
//! policy with its `ETag`, and the configuration audit log.

pub mod headscale;
pub mod tailscale;
pub mod webhooks;

use std::time::Duration;

use crate::config::{ControlApi, ControlConfig};
use crate::model::control::ControlSnapshot;

/// Per request to the control plane's API.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why the control plane could not be read. Callers branch on the kind: a rate limit is the
/// control plane asking to come back later, not an outage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A 429: come back after `retry_after` (its `Retry-After`, clamped; 60 s when absent).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// Anything else: unreachable, refused, an HTTP error, an answer too large or malformed.
    #[error("{0}")]
    Unreadable(String),
}

impl ControlError {
    fn new(message: impl Into<String>) -> Self {
        ControlError::Unreadable(message.into())
    }

    /// The one-line cause, naming the API.
    pub fn message(&self) -> &str {
        match self {
            ControlError::RateLimited { message, .. } | ControlError::Unreadable(message) => {
                message
            }
        }
    }

    /// When a rate-limited read may be tried again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ControlError::RateLimited { retry_after, .. } => Some(*retry_after),
            ControlError::Unreadable(_) => None,
        }
    }
}

pub enum ControlSource {
    Headscale(headscale::Headscale),
    Tailscale(tailscale::TailscaleApi),
}

impl ControlSource {
    /// The configured control plane, with the default [`TIMEOUT`].
    pub fn from_config(c: &ControlConfig) -> ControlSource {
        ControlSource::new(c, TIMEOUT)
    }

    pub fn new(c: &ControlConfig, timeout: Duration) -> ControlSource {
        match &c.api {
            ControlApi::Headscale { url, api_key } => ControlSource::Headscale(
                headscale::Headscale::new(url.clone(), api_key.clone(), timeout),
            ),
            ControlApi::Tailscale {
                api_url,
                tailnet,
                auth,
            } => ControlSource::Tailscale(tailscale::TailscaleApi::new(
                api_url.clone(),
                tailnet.clone(),
                auth.clone(),
                timeout,
            )),
        }
    }

    /// How messages name this source: "headscale API https://hs.example.com/".
    pub fn name(&self) -> String {
        match self {
            ControlSource::Headscale(h) => {
                format!("headscale API {}", crate::sanitize::redact_url(h.url()))
            }
            ControlSource::Tailscale(t) => {
                format!(
                    "Tailscale Admin API {}",
                    crate::sanitize::redact_url(t.url())
                )
            }
        }
    }

    pub async fn snapshot(&self) -> Result<ControlSnapshot, ControlError> {
        match self {
            ControlSource::Headscale(h) => h.snapshot().await,
            ControlSource::Tailscale(t) => t.snapshot().await,
        }
    }
}

/// The one HTTP client of the control sources (rustls, no redirects to other hosts' secrets).
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("static client config")
}

/// The longest a `Retry-After` is honoured: past it the control plane is read again (a hostile
/// or broken answer must not park polling for ever, nor overflow a deadline).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds or as an HTTP date, clamped to 1 s – [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            u64::try_from((at.with_timezone(&chrono::Utc) - now).num_seconds()).unwrap_or(0)
        }
    };
    Some(Duration::from_secs(secs).clamp(Duration::from_secs(1), MAX_RETRY_AFTER))
}

/// The largest answer read from the control plane: a 50,000-device list is about 40 MB. A larger
/// one is an error, never a read into memory without end (F11). Sized so that the largest answer
/// accepted, parsed, fits the unit's `MemoryMax=512M` with room to spare (BENCHMARKS.md: "The
/// control plane's largest answers").
pub const MAX_ANSWER: usize = 48 << 20;
/// The largest tailnet policy read (real ones are kilobytes; a policy is held as text and as a
/// parsed tree, twice when it is replaced): 4 MiB.
pub const MAX_POLICY: usize = 4 << 20;

/// The whole body, at most `max` bytes (a longer one is an error naming the limit).
pub(crate) async fn body_bounded(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("an answer longer than {max} bytes"));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if buf.len().saturating_add(chunk.len()) > max {
            return Err(format!("an answer longer than {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A 2xx answer, bounded, as JSON of type `T`.
pub(crate) async fn json_bounded<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, String> {
    json_bounded_to(resp, MAX_ANSWER).await
}

/// [`json_bounded`] with a limit of its own.
pub(crate) async fn json_bounded_to<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    max: usize,
) -> Result<T, String> {
    let body = body_bounded(resp, max).await?;
    serde_json::from_slice(&body).map_err(|e| format!("malformed JSON: {e}"))
}

/// A non-2xx answer as one line: the status, the API's message, and a hint for 401/403.
pub(crate) async fn http_error(what: &str, resp: reqwest::Response) -> ControlError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
    let body = body_bounded(resp, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(body);
    let hint = match status.as_u16() {
        401 => " — the key was refused: expired, revoked or mistyped?",
        403 => " — the credential lacks a scope or role for this",
        429 => " — rate limited",
        _ => "",
    };
    let message = format!(
        "{what}: HTTP {status}: {}{hint}",
        crate::sanitize::line(&msg, 200)
    );
    if status.as_u16() == 429 {
        ControlError::RateLimited {
            message,
            retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
        }
    } else {
        ControlError::Unreadable(message)
    }
}

/// A 2xx answer's body as JSON, or the one-line error (`api`: how errors name the API).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    api: &str,
    path: &str,
    resp: reqwest::Response,
) -> Result<T, ControlError> {
    if !resp.status().is_success() {
        return Err(http_error(&format!("{api} GET {path}"), resp).await);
    }
    json_bounded(resp)
        .await
        .map_err(|e| ControlError::new(format!("{api} GET {path}: {e}")))
}

/// Parses an RFC 3339 time; the zero time and empty strings are `None`.
pub(crate) fn time(s: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
    (t.timestamp() > 0).then(|| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F3: a `Retry-After` of any size is a bounded wait, in seconds or as an HTTP date.
    #[test]
    fn retry_after_is_clamped() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("0"), Some(Duration::from_secs(1)));
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            p("Tue, 01 Dec 2026 10:02:00 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            p("Tue, 01 Dec 2026 09:00:00 GMT"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(p("soon"), None);
    }
}
