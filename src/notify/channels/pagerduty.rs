//! PagerDuty Events API v2: one `trigger` per event, deduplicated per host, kind and device.

use serde_json::json;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::config::secret::Secret;
use crate::model::Severity;
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct PagerDuty {
    pub url: url::Url,
    pub routing_key: Secret,
}

impl Room for PagerDuty {
    const NAME: &'static str = "pagerduty";
    const BATCH: usize = 10;

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(PagerDuty {
            url: k.url_or(
                "https://events.pagerduty.com/v2/enqueue",
                UrlUse::Credential,
            )?,
            routing_key: k.required(&k.raw().routing_key_file, "routing_key_file")?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
        out.push_str("# routing_key: set (redacted)\n");
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        trigger_each(self, m).await
    }
}

/// PagerDuty Events API v2: one `trigger` per event; the `dedup_key` names the host, the kind and
/// the device, so a retry (or another monitor) never opens a second incident for the same thing.
async fn trigger_each(p: &PagerDuty, m: &Message<'_>) -> Result<(), SendError> {
    let (c, url, key, timeout, cx, events) = (
        http::client(),
        &p.url,
        &p.routing_key,
        m.timeout,
        m.cx,
        m.events,
    );
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
        crate::notify::render::event_text_unlinked(&mut text, e);
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
                "custom_details": {"text": http::cap(text.trim(), 8_000)},
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
            let body = http::error_body(resp).await;
            return Err(SendError::http(
                status,
                sanitize::line(&format!("pagerduty: HTTP {status}: {body}"), 300),
                i,
            ));
        }
    }
    Ok(())
}
