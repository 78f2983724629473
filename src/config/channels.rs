//! `[[notify]]`: what every channel has (a name, a filter, a timeout); the rest of a channel's
//! keys are read by its own room (`notify::channels`).

use std::time::Duration;

use toml::Spanned;

use crate::config::ctx::{ConfigError, Ctx};
use crate::config::keys::Keys;
use crate::config::raw::RawNotify;
use crate::model::event_kind::EventKind;
use crate::model::route::Route;
use crate::model::Severity;

// Two-way with `notify`: each channel parses its own keys (`notify::channels`) with the
// config's key readers (`config::keys`), so adding a channel touches one room.
use crate::notify::channels::ChannelKind;

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub route: Route,
    pub kind: ChannelKind,
    /// Per send.
    pub timeout: Duration,
}

pub(super) fn channel(cx: &Ctx, n: &Spanned<RawNotify>) -> Result<Channel, ConfigError> {
    let r = n.get_ref();
    let kind = r.kind.get_ref().as_str();
    let name = r
        .name
        .as_ref()
        .map_or_else(|| kind.to_owned(), |s| s.get_ref().clone());
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(cx.at(
            n,
            "name",
            "channel names must be non-empty and without spaces",
        ));
    }
    let min_severity = cx.choice(
        &r.min_severity,
        "min_severity",
        &[
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("critical", Severity::Critical),
        ],
        Severity::Info,
    )?;
    let kinds = match &r.events {
        None => None,
        Some(s) => Some(
            s.get_ref()
                .iter()
                .map(|k| {
                    EventKind::parse(k).ok_or_else(|| {
                        cx.at(
                            s,
                            "events",
                            format!("unknown event kind `{k}` (see README: Events)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let route = Route {
        channel: name.clone(),
        min_severity,
        kinds,
        // Set from `[alerts] coalesce_window` once the whole file is read.
        coalesce: Duration::ZERO,
    };
    let kind = ChannelKind::parse(&Keys { cx, n })?;
    let timeout = cx.duration(&r.timeout, "timeout", Duration::from_secs(30))?;
    Ok(Channel {
        name,
        route,
        kind,
        timeout,
    })
}
