//! Prometheus Alertmanager API v2: one alert per event, labelled so that a cluster deduplicates
//! the same device reported by several monitors.

use serde_json::{json, Value};

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{Keys, UrlUse};
use crate::model::Event;
use crate::notify::http::{self, SendError};
use crate::notify::render::Context;
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Alertmanager {
    pub url: url::Url,
}

impl Room for Alertmanager {
    const NAME: &'static str = "alertmanager";
    const BATCH: usize = 500;

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        Ok(Alertmanager {
            url: k.url(UrlUse::Plain)?,
        })
    }

    fn show(&self, out: &mut String) {
        http::show_url(out, "url", &self.url, false);
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        let url = self
            .url
            .join("api/v2/alerts")
            .map_err(|e| format!("alertmanager: {e}"))?;
        let req = http::client().post(url).json(&alerts(m.cx, m.events));
        http::finish(Self::NAME, req, m.timeout).await
    }
}

/// One Alertmanager alert per event. The labels are what a cluster deduplicates on, so several
/// monitors reporting the same device produce one alert group; the monitor's own health events
/// carry `instance` so they stay apart.
pub fn alerts(cx: &Context, events: &[&Event]) -> Value {
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
            crate::notify::render::event_text_unlinked(&mut text, e);
            json!({
                "labels": labels,
                "annotations": {
                    "summary": sanitize::line(&e.summary, 300),
                    "description": http::cap(text.trim(), 4000),
                },
                "startsAt": e.at.to_rfc3339(),
            })
        })
        .collect();
    Value::Array(alerts)
}
