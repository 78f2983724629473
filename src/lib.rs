//! tailscale-monitor: a security monitor for Tailscale and Headscale tailnets.
//!
//! Start reading at [`monitor`], which walks one pass end to end:
//!
//! ```text
//!  source ──Snapshot──▶ diff (pure) ──events──▶ store (one transaction) ──▶ notify (outbox)
//! ```
//!
//! - [`source`] turns tailscaled's LocalAPI (or `tailscale status --json`) into a [`model::Snapshot`],
//!   or an error — never an empty tailnet for a broken daemon.
//! - [`diff`] is the pure core: what is known × the snapshot → events. No I/O.
//! - [`store`] records state, the append-only event log and the delivery outbox atomically.
//! - [`notify`] renders and delivers, retrying until a channel accepts.
//! - [`cli`] and [`daemon`] are the `check`/`run` front ends.

/// The version and the git commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TM_GIT_COMMIT"), ")");

pub mod cli;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod digest;
#[cfg(test)]
mod fuzz;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod outage;
pub mod posture;
pub mod privileged;
pub mod sanitize;
pub mod source;
pub mod store;
