//! tailscale-monitor: a security monitor for Tailscale and Headscale tailnets.
//!
//! Start at [`app::pass`]: one pass, the same for `check`, `run` and `demo` ([`app::pass::read`]
//! then [`app::pass::commit`]):
//!
//! ```text
//!  source ──Snapshot──▶ diff + posture (pure) ──Outcome──▶ store (one transaction) ──▶ notify (outbox)
//! ```
//!
//! Where things live (no room imports one above it but for the notes at the import):
//! - [`model`]: plain data, no I/O. The snapshot and its devices ([`model::Device::membership`]
//!   is what makes a device the same member), the events ([`model::EventKind`] is one table),
//!   the known state and the outcome ([`model::state`]), the guard's state ([`model::guard`]).
//! - [`source`]: the reads. tailscaled's LocalAPI (status, the IPN bus, the netmap), the CLI, the
//!   control plane (`source::control`: Headscale API, Tailscale Admin API and its webhooks).
//!   An error is an error, never an empty tailnet.
//! - [`diff`]: the pure core, known × snapshot → events, by concern: `membership`,
//!   `device_changes`, `connections`, `lookalikes`, `health`, `parts`, [`diff::access`],
//!   [`diff::control`], [`diff::presence`], [`diff::guard`] (which addresses the guard lets in,
//!   which doors are open, what it blocked).
//! - [`posture`]: the hardening audit (pure), by area, evaluated once per control read.
//! - [`store`]: SQLite. The schema, the pass's transaction, the known state, the hash-chained log,
//!   the outbox, meta, the guard's state and the metrics counters.
//! - [`notify`]: rendering ([`notify::render::blocks`] is the one walk over an event; the text
//!   and HTML writers format its blocks) and the channels; a row leaves the outbox only when its
//!   channel took it.
//! - [`app`]: the application. [`app::pass`], [`app::outage`] (the store failing and recovering),
//!   [`app::digest`], [`app::guard`] (the guard's I/O: the relay, its poll) and [`app::daemon`]
//!   (`run`: [`app::daemon::schedule`] owns every deadline, `bus`, `reload`).
//! - [`cli`]: one file per command. [`config`]: the file, by section, with `file:line` errors and
//!   secrets that never print.
//! - [`privileged`]: the root side (`tailscale-monitor privileged`): it reads tailscaled's netmap
//!   for the monitor, owns the guard's approvals and decision, and applies the nftables table
//!   (`privileged::nft`); the monitor's client of it.
//! - [`export`]: the export formats (ECS, OCSF, RFC 5424, journald), pure, and the witness check;
//!   `app::export` hands the log to the collectors.
//! - [`web`]: the read-only web view `run` serves (`[web]`): who may look, the pages, one event
//!   as its alert said it (a third writer of the blocks).
//! - [`listener`], [`metrics`], [`sanitize`]: the HTTP listeners, `/metrics`, the one sanitizer;
//!   [`memory`]: huge pages by the tailnet's size.
//!
//! Adding …
//! - **a channel**: a file in `notify/channels/` (its keys, their check, its redacted display, its
//!   payload, its send, behind the `Room` trait) and one line in that folder's `registry!`; keys
//!   no channel had before also go into `config/raw.rs` (`RawNotify`). Its test starts the real
//!   server in `tests/it/channels.rs`; the README's channel table gets a row.
//! - **an event kind**: one row in `model/event_kind.rs` (a test wants its README row, the
//!   compiler its advice in `notify/render/advice.rs`), its detector in `diff/<concern>.rs`
//!   with a unit test in `diff/tests.rs`; `check_critical` on its row if it makes `check` exit 2.
//! - **a posture check**: a row in `posture/catalog.rs` (id, area, title, severity, fix; a test
//!   wants it in the README's list) and its judgement in `posture/<area>.rs`.
//! - **a guard rule**: which addresses get in is `diff/guard/set.rs` (pure, shared by the
//!   monitor and the root side); a door tailscaled answers itself is `diff/guard/doors.rs`; what
//!   the kernel does is `privileged/nft.rs::rules`; what root decides and keeps is
//!   `privileged/root.rs`; when the monitor asks is `app/guard/`. Unit tests beside each; the
//!   kernel story is `tests/it/guard.rs`.
//! - **a web page**: a handler and a route in `web/pages.rs` (behind `web::viewer::authorize`,
//!   like every page), reading the store through the view's connection; an event's content is
//!   written from `notify::render::blocks` (`web/event.rs`), never walked again. Its test is in
//!   `tests/it/web.rs`, in a real browser where it shows tailnet names.
//! - **an export format**: a pure function from a logged event with its chain (`store::Chained`)
//!   to its record in `export/`, its sink in `app/export.rs` (`Sink`), its key in
//!   `config/export.rs`, and a line reader in `export/witness.rs` if `audit --witness` should
//!   read its copies. The real collector's test is in `tests/it/export.rs`.

/// The version and the git commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TM_GIT_COMMIT"), ")");

pub(crate) mod app;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod diff;
pub(crate) mod export;
#[cfg(test)]
mod fuzz;
pub(crate) mod listener;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod notify;
pub(crate) mod posture;
pub(crate) mod privileged;
pub(crate) mod sanitize;
pub(crate) mod source;
pub(crate) mod store;
pub(crate) mod web;

// What the binary, the integration tests and `examples/parse_diff.rs` use; everything else is
// crate-private, so that the compiler reports what nothing uses.
pub use cli::{main, Cli, Command};
pub use config::{Secret, RESTART_ONLY};
pub use diff::{diff, pass_outcome, Policy};
pub use model::state::{Known, KnownDevice, KnownUser};
pub use notify::http::signature;
pub use source::ipnbus::bus_peers;
pub use source::status_json::Status;
pub use store::Store;
