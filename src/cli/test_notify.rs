//! `test-notify`: a test message through each channel.

use std::path::Path;

use anyhow::bail;
use chrono::Utc;

use crate::cli::{load, pass};
use crate::model::event_kind::EventKind;
use crate::notify::render;
use crate::sanitize;

pub(super) async fn test_notify(explicit: Option<&Path>, only: Option<&str>) -> anyhow::Result<()> {
    let cfg = load(explicit, false)?;
    let names: Vec<&str> = cfg.channels.iter().map(|c| c.name.as_str()).collect();
    let chosen: Vec<_> = cfg
        .channels
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
        .collect();
    if chosen.is_empty() {
        match only {
            Some(n) => bail!("no channel named `{n}` (configured: {})", names.join(", ")),
            None => bail!("no [[notify]] channel configured"),
        }
    }
    let host = pass::local_hostname();
    let cx = render::Context::new(&host);
    let mut failed = 0;
    for ch in chosen {
        let e = crate::model::Event::new(
            EventKind::MonitorTest,
            Utc::now(),
            format!(
                "TEST notification from tailscale-monitor on {host} through channel {}",
                ch.name
            ),
        );
        match crate::notify::send(ch, &cx, &[&e], true).await {
            Ok(()) => println!("{} ({}): ok", ch.name, ch.kind.as_str()),
            Err(err) => {
                failed += 1;
                println!(
                    "{} ({}): FAILED — {}",
                    ch.name,
                    ch.kind.as_str(),
                    sanitize::line(&err.message, 500)
                );
            }
        }
    }
    if failed > 0 {
        bail!("{failed} channel(s) failed");
    }
    Ok(())
}
