//! The export formats (`[[export]]`): pure functions from an event of the log, with its place in
//! the chain, to the record a collector reads. The sinks and the cursor are `app::export`'s.
//!
//! - [`ecs`] and [`ocsf`]: one JSON line each (Elastic Common Schema, OCSF);
//! - [`syslog`]: one RFC 5424 message, its structured data escaped as §6.3.3 requires;
//! - [`journal`]: one entry of journald's native protocol.
//!
//! Every record carries the event's sequence number (its ID in the log), its hash and the hash
//! before it: `audit --witness` checks the local chain against a copy by them ([`witness`]).

pub(crate) mod ecs;
pub(crate) mod journal;
pub(crate) mod ocsf;
pub(crate) mod relp;
pub(crate) mod syslog;
pub(crate) mod witness;

use crate::store::Chained;

/// The longest value a record carries; longer ones are cut with [`CUT`] (never dropped).
pub(crate) const MAX_VALUE: usize = 4096;
/// What ends a value that was cut.
pub(crate) const CUT: &str = "…[cut]";

/// `v` cut to [`MAX_VALUE`] characters, marked when cut.
pub(crate) fn bounded(v: &str) -> String {
    if v.chars().count() <= MAX_VALUE {
        return v.to_owned();
    }
    let mut s: String = v.chars().take(MAX_VALUE).collect();
    s.push_str(CUT);
    s
}

/// The product, as every format names it.
pub(crate) const PRODUCT: &str = "tailscale-monitor";

/// What every format needs of one event.
pub(crate) struct Record<'a> {
    pub c: &'a Chained,
    /// This server's name (the observer).
    pub host: &'a str,
    /// Sent again after a stop in the middle of its batch: the collector may have it already
    /// (the same sequence number and hash).
    pub replay: bool,
}

impl Record<'_> {
    pub fn seq(&self) -> i64 {
        self.c.logged.id
    }
    pub fn event(&self) -> &crate::model::Event {
        &self.c.logged.event
    }
}
