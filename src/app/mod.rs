//! The application: what a pass does with the pure core, the store, the sources and the channels.
//!
//! Start at [`pass`]: one pass, the same for `check`, `run` and `demo`.
//! - [`pass`]: read (the sources, side by side), commit (the core's outcome, one transaction),
//!   deliver (the outbox to the channels).
//! - [`outage`]: the state database failing and recovering, told straight to every channel.
//! - [`digest`]: the periodic summary.
//! - [`export`]: `[[export]]`, the event log handed to collectors as it is written.
//! - [`guard`]: the guard's I/O side (the relay to the root side, its poll of what was dropped).
//! - [`daemon`]: `run`, the long-lived loop: its [`daemon::schedule`], the IPN bus
//!   ([`daemon::bus`]) and SIGHUP ([`daemon::reload`]).

pub(crate) mod daemon;
pub(crate) mod digest;
pub(crate) mod export;
pub(crate) mod guard;
pub(crate) mod outage;
pub(crate) mod pass;
