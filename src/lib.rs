//! tailscale-monitor: a security monitor for Tailscale and Headscale tailnets.
//!
//! One pass, the same for `check`, `run` and `demo` ([`monitor::read`] then [`monitor::commit`]):
//!
//! ```text
//!  source ──Snapshot──▶ diff + posture (pure) ──Outcome──▶ store (one transaction) ──▶ notify (outbox)
//! ```
//!
//! Where things live:
//! - [`model`]: plain data, no I/O. The snapshot and its devices, the events ([`model::EventKind`]
//!   is one table), the known state and the outcome ([`model::state`]), routes, policy text.
//! - [`source`]: the reads. tailscaled's LocalAPI (status, the IPN bus, the netmap), the CLI, the
//!   control plane (`source::control`: Headscale API, Tailscale Admin API and its webhooks).
//!   An error is an error, never an empty tailnet.
//! - [`diff`]: the pure core, known × snapshot → events, by concern: `membership`,
//!   `device_changes`, `connections`, `lookalikes`, `health`, `parts`, [`diff::access`],
//!   [`diff::control`], [`diff::presence`].
//! - [`posture`]: the hardening audit (pure), by area, evaluated once per control read.
//! - [`store`]: SQLite. The schema, the pass's transaction, the known state, the hash-chained log,
//!   the outbox, meta and the metrics counters.
//! - [`notify`]: rendering (text, HTML, defanged names) and the channels; a row leaves the outbox
//!   only when its channel took it.
//! - [`monitor`]: the pass. [`outage`]: the store failing and recovering. [`digest`]: the digest.
//! - [`cli`]: one file per command; [`daemon`]: `run` (the bus, the schedule, SIGHUP).
//! - [`config`]: the file, by section, with `file:line` errors and secrets that never print.
//! - [`privileged`]: the small root side that reads the packet filter for tailscaled >= 1.104.
//! - [`listener`], [`metrics`], [`sanitize`]: the HTTP listeners, `/metrics`, the one sanitizer.

/// The version and the git commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TM_GIT_COMMIT"), ")");

pub(crate) mod app;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod diff;
#[cfg(test)]
mod fuzz;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod notify;
pub(crate) mod posture;
pub(crate) mod privileged;
pub(crate) mod sanitize;
pub(crate) mod source;
pub(crate) mod store;

// What the binary, the integration tests and `examples/parse_diff.rs` use; everything else is
// crate-private, so that the compiler reports what nothing uses.
pub use cli::{main, Cli, Command};
pub use config::{Secret, RESTART_ONLY};
pub use diff::{diff, pass_outcome, Policy};
pub use model::state::{Known, KnownDevice, KnownUser};
pub use notify::http::signature;
pub use source::status_json::Status;
pub use store::Store;
