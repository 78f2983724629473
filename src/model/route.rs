//! Where an event goes: a channel's name and its filter. The config builds routes, the store
//! queues each event on the routes that accept it, the notifier drains them.

use super::{Event, EventKind, Severity};

/// Where an event is delivered: a channel name and its filter.
#[derive(Debug, Clone)]
pub struct Route {
    pub channel: String,
    pub min_severity: Severity,
    /// Only these kinds, if set.
    pub kinds: Option<Vec<EventKind>>,
    /// A change of a device of the same kind as one queued within this window is held until the
    /// window ends and goes out with the others as one message (zero: never held).
    pub coalesce: std::time::Duration,
}

impl Route {
    pub fn accepts(&self, e: &Event) -> bool {
        e.severity >= self.min_severity && self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
    }
}
