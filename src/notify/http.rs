//! Every channel that is an HTTP request (webhook, ntfy, Slack, Discord, Telegram, Gotify,
//! Alertmanager), and `exec`. One HTTP client for all of them.
//!
//! The webhook schema (also the `exec` stdin) is documented in the README:
//! `{"version": 1, "source": "tailscale-monitor", "host", "test", "subject", "events": [Event]}`.
//! With a `secret_file`, the request carries
//! `X-Tailscale-Monitor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! the same scheme Tailscale signs its own webhooks with.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use super::render::{Context, Rendered};
use super::SendError;
use crate::config::{ChannelKind, Secret};
use crate::model::{Event, Severity};
use crate::sanitize;

pub const SIGNATURE_HEADER: &str = "X-Tailscale-Monitor-Signature";

/// A URL path segment: everything but the unreserved characters percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn client() -> &'static reqwest::Client {
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
pub fn payload(cx: &Context, events: &[&Event], r: &Rendered, test: bool) -> Value {
    json!({
        "version": 1,
        "source": "tailscale-monitor",
        "host": cx.host,
        "test": test,
        "subject": r.subject,
        "events": events,
        "log_anchor": cx.anchor.as_ref().map(|a| json!({"event_id": a.event_id, "hash": a.hash})),
    })
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &Secret, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// At most `max` characters of `text`, cut on a character boundary, marked when cut.
fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(30)).collect();
    s.push_str("\n… (truncated; see `events`)");
    s
}

/// One Alertmanager alert per event. The labels are what a cluster deduplicates on, so several
/// monitors reporting the same device produce one alert group; the monitor's own health events
/// carry `instance` so they stay apart.
pub fn alertmanager_alerts(cx: &Context, events: &[&Event]) -> Value {
    let alerts: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), "TailscaleMonitor".into());
            labels.insert("event".into(), e.kind.as_str().into());
            labels.insert("severity".into(), e.severity.as_str().into());
            if !e.tailnet.is_empty() {
                labels.insert("tailnet".into(), sanitize::line(&e.tailnet, 200).into());
            }
            if let Some(d) = &e.device {
                labels.insert("device_id".into(), sanitize::line(&d.id.0, 100).into());
                labels.insert(
                    "device".into(),
                    sanitize::line(d.display_name(), 100).into(),
                );
            }
            if let Some(u) = &e.user {
                labels.insert("user".into(), sanitize::line(&u.login, 100).into());
            }
            if e.kind.as_str().starts_with("monitor.") {
                labels.insert("instance".into(), sanitize::line(&cx.host, 100).into());
            }
            let mut text = String::new();
            super::render::event_text_unlinked(&mut text, e);
            json!({
                "labels": labels,
                "annotations": {
                    "summary": sanitize::line(&e.summary, 300),
                    "description": cap(text.trim(), 4000),
                },
                "startsAt": e.at.to_rfc3339(),
            })
        })
        .collect();
    Value::Array(alerts)
}

fn ntfy_priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "urgent",
        Severity::Warning => "high",
        Severity::Info => "default",
    }
}

/// Sends one batch through an HTTP or exec channel. The error is one line.
pub async fn send(
    kind: &ChannelKind,
    timeout: Duration,
    cx: &Context,
    events: &[&Event],
    r: &Rendered,
    test: bool,
) -> Result<(), SendError> {
    let worst = events.iter().map(|e| e.severity).max().unwrap_or_default();
    let chat = |max: usize| cap(&format!("{}\n\n{}", r.subject, r.text.trim()), max);
    let c = client();
    let req = match kind {
        ChannelKind::Email(_) => unreachable!("email is sent by notify::email"),
        ChannelKind::Exec { command } => {
            return Ok(exec(command, timeout, &payload(cx, events, r, test)).await?)
        }
        ChannelKind::Webhook { url, secret } => {
            let body =
                serde_json::to_vec(&payload(cx, events, r, test)).expect("payload serializes");
            let mut req = c
                .post(url.clone())
                .header("Content-Type", "application/json");
            if let Some(s) = secret {
                req = req.header(
                    SIGNATURE_HEADER,
                    signature(s, chrono::Utc::now().timestamp(), &body),
                );
            }
            req.body(body)
        }
        ChannelKind::Ntfy { url, token } => {
            let mut req = c
                .post(url.clone())
                .header("Title", sanitize::line(&r.subject, 250))
                .header("Priority", ntfy_priority(worst))
                .header("Tags", "rotating_light")
                .body(cap(r.text.trim(), 3800));
            if let Some(t) = token {
                req = req.bearer_auth(t.expose());
            }
            req
        }
        // Untrusted names pass through the escaping of each chat's own markup (sanitize): no
        // mention, masked link or markup can be formed by a hostname or a login.
        ChannelKind::Slack { url } => c.post(url.clone()).json(&json!({
            "text": sanitize::slack(&chat(35_000)),
            "unfurl_links": false,
            "unfurl_media": false,
        })),
        ChannelKind::Discord { url } => c.post(url.clone()).json(&json!({
            "content": sanitize::cap_escaped(&sanitize::discord(&chat(4_000)), 1_900),
            "allowed_mentions": { "parse": [] },
        })),
        ChannelKind::Telegram {
            api_url,
            token,
            chat_id,
        } => {
            let url = format!(
                "{}/bot{}/sendMessage",
                api_url.as_str().trim_end_matches('/'),
                token.expose()
            );
            c.post(url).json(&json!({ "chat_id": chat_id, "text": chat(4_000), "disable_web_page_preview": true }))
        }
        ChannelKind::Gotify { url, token } => {
            let url = format!("{}/message", url.as_str().trim_end_matches('/'));
            let priority = match worst {
                Severity::Critical => 8,
                Severity::Warning => 5,
                Severity::Info => 2,
            };
            c.post(url)
                .header("X-Gotify-Key", token.expose())
                .json(&json!({ "title": r.subject, "message": cap(r.text.trim(), 8_000), "priority": priority }))
        }
        ChannelKind::Alertmanager { url } => {
            let url = url
                .join("api/v2/alerts")
                .map_err(|e| format!("alertmanager: {e}"))?;
            c.post(url).json(&alertmanager_alerts(cx, events))
        }
        ChannelKind::Teams { url } => c.post(url.clone()).json(&teams_card(r)),
        ChannelKind::Mattermost { url } => c
            .post(url.clone())
            .json(&json!({ "text": sanitize::mattermost(&chat(15_000)) })),
        ChannelKind::GoogleChat { url } => c
            .post(url.clone())
            .json(&json!({ "text": sanitize::slack(&chat(30_000)) })),
        ChannelKind::Pushover {
            url,
            token,
            user_key,
        } => {
            let priority = match worst {
                Severity::Critical => "1",
                Severity::Warning => "0",
                Severity::Info => "-1",
            };
            c.post(url.clone()).form(&[
                ("token", token.expose()),
                ("user", user_key.expose()),
                ("title", &sanitize::line(&r.subject, 250)),
                ("message", &cap(r.text.trim(), 1_000)),
                ("priority", priority),
            ])
        }
        ChannelKind::Matrix {
            homeserver,
            room,
            token,
        } => {
            let txn = cx
                .batch
                .clone()
                .unwrap_or_else(|| format!("tsm-test-{}", chrono::Utc::now().timestamp_millis()));
            let path = format!(
                "_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                percent_encoding::utf8_percent_encode(room, SEGMENT),
                percent_encoding::utf8_percent_encode(&txn, SEGMENT),
            );
            let url = homeserver.join(&path).map_err(|e| format!("matrix: {e}"))?;
            let body = chat(30_000);
            c.put(url).bearer_auth(token.expose()).json(&json!({
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": html_escape::encode_text(&body).replace('\n', "<br>"),
                // An empty m.mentions: intentional mentions only, so `@room` in a name pings nobody.
                "m.mentions": {},
            }))
        }
        ChannelKind::PagerDuty { url, routing_key } => {
            return pagerduty(c, url, routing_key, timeout, cx, events).await;
        }
        ChannelKind::Apprise { program, urls_file } => {
            return Ok(apprise(program, urls_file, timeout, r).await?);
        }
    };
    let resp = req.timeout(timeout).send().await.map_err(|e| {
        // reqwest's errors can carry the URL, which for Telegram holds the token.
        sanitize::line(&format!("{}: {}", kind.as_str(), e.without_url()), 300)
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = error_body(resp).await;
    Err(SendError::http(
        status,
        sanitize::line(&format!("{}: HTTP {status}: {body}", kind.as_str()), 300),
        0,
    ))
}

/// The start of an error answer, for the one-line message (F11: a channel that answers an error
/// with a gigabyte costs 4 KiB and no more; the rest is never read).
async fn error_body(mut resp: reqwest::Response) -> String {
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

/// A Teams Workflows message: one Adaptive Card whose text blocks are Markdown-escaped.
pub fn teams_card(r: &Rendered) -> Value {
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

/// PagerDuty Events API v2: one `trigger` per event; the `dedup_key` names the host, the kind and
/// the device, so a retry (or another monitor) never opens a second incident for the same thing.
async fn pagerduty(
    c: &reqwest::Client,
    url: &url::Url,
    key: &Secret,
    timeout: Duration,
    cx: &Context,
    events: &[&Event],
) -> Result<(), SendError> {
    // One request per event, in order: the events accepted before a failure are reported as
    // accepted, so a rate limit never makes the same events go out again and again.
    for (i, e) in events.iter().enumerate() {
        let severity = match e.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let subject = e
            .device
            .as_ref()
            .map(|d| d.id.0.clone())
            .or_else(|| e.user.as_ref().map(|u| u.login.clone()))
            .unwrap_or_default();
        let mut text = String::new();
        super::render::event_text_unlinked(&mut text, e);
        let body = json!({
            "routing_key": key.expose(),
            "event_action": "trigger",
            "dedup_key": sanitize::line(&format!("tailscale-monitor/{}/{}/{subject}", cx.host, e.kind), 255),
            "payload": {
                "summary": sanitize::line(&e.summary, 1024),
                "source": sanitize::line(&cx.host, 255),
                "severity": severity,
                "component": e.device.as_ref().map(|d| sanitize::line(d.display_name(), 255)),
                "class": e.kind.as_str(),
                "custom_details": {"text": cap(text.trim(), 8_000)},
            },
        });
        let resp = c
            .post(url.clone())
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError {
                accepted: i,
                ..SendError::from(sanitize::line(
                    &format!("pagerduty: {}", e.without_url()),
                    300,
                ))
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = error_body(resp).await;
            return Err(SendError::http(
                status,
                sanitize::line(&format!("pagerduty: HTTP {status}: {body}"), 300),
                i,
            ));
        }
    }
    Ok(())
}

/// The Apprise CLI (no shell): `apprise -t TITLE -b BODY URL…` with the URLs read from the file
/// now, so they never appear in the config or our logs.
async fn apprise(
    program: &std::path::Path,
    urls_file: &std::path::Path,
    timeout: Duration,
    r: &Rendered,
) -> Result<(), String> {
    let urls: Vec<String> = std::fs::read_to_string(urls_file)
        .map_err(|e| format!("apprise: {}: {e}", urls_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(format!("apprise: {} lists no URL", urls_file.display()));
    }
    // The URLs hold the services' credentials: Apprise reads them from the file itself
    // (`--config`, its TEXT format: one URL per line), so they never appear in a command line
    // every local user can read in /proc. Read here only to check the file and to redact.
    let child = child_command(program)
        .arg("-t")
        .arg(sanitize::line(&r.subject, 250))
        .arg("-b")
        .arg(cap(r.text.trim(), 30_000))
        .arg("--config")
        .arg(urls_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("apprise {}: {e}", program.display()))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("apprise: no exit within {timeout:?} (killed)"))?
        .map_err(|e| format!("apprise: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    // Apprise's messages may quote a URL: keep them out of our logs.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned();
    let redacted = urls.iter().fold(first, |acc, u| acc.replace(u, "(url)"));
    Err(sanitize::line(
        &format!("apprise: {}: {redacted}", out.status),
        300,
    ))
}

/// A child process that inherits none of the monitor's environment (which may hold
/// `TAILSCALE_MONITOR_SMTP_PASSWORD` and the like): a fixed `PATH` and `LANG` only.
fn child_command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LANG", "C.UTF-8");
    c
}

/// Runs the program (no shell) with the payload on stdin; success is exit status 0.
async fn exec(command: &[String], timeout: Duration, payload: &Value) -> Result<(), String> {
    let mut child = child_command(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("exec {}: {e}", command[0]))?;
    let body = serde_json::to_vec(payload).expect("payload serializes");
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its stdin is not an error.
            let _ = stdin.write_all(&body).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("exec {}: no exit within {timeout:?} (killed)", command[0]))?
        .map_err(|e| format!("exec {}: {e}", command[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(sanitize::line(
            &format!(
                "exec {}: {}: {}",
                command[0],
                out.status,
                stderr.lines().next().unwrap_or("")
            ),
            300,
        ))
    }
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
