//! Sources: where snapshots come from.
//!
//! A source either returns a complete [`Snapshot`] of a `Running` daemon or a [`SourceError`]
//! with a one-line cause. It never returns an empty or partial tailnet for a broken daemon: an
//! empty tailnet and a broken daemon must not look alike (that is how the old script wiped its
//! state).

pub(crate) mod cli;
pub(crate) mod control;
pub mod cut;
pub(crate) mod ipnbus;
pub(crate) mod localapi;
pub(crate) mod netmap;
pub(crate) mod server;
pub(crate) mod sim;
pub mod status_json;
pub(crate) mod wire;

use crate::config::{SourceConfig, SourceKind};
use crate::model::Snapshot;

/// Why no snapshot could be taken, as one line naming the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

pub enum Source {
    LocalApi(localapi::LocalApi),
    Cli(cli::Cli),
    Sim(sim::Sim),
}

impl Source {
    pub fn from_config(c: &SourceConfig) -> Source {
        match c.kind {
            SourceKind::LocalApi => Source::LocalApi(
                localapi::LocalApi::new(&c.socket, c.timeout).with_relay(&c.privileged_socket),
            ),
            SourceKind::Cli => Source::Cli(cli::Cli::new(&c.cli, Some(&c.socket), c.timeout)),
        }
    }

    /// tailscaled's LocalAPI, when that is the source: the reads only it answers (the node view,
    /// `whois`, this server's own status) are `None` for the CLI and the demo.
    pub fn local_api(&self) -> Option<&localapi::LocalApi> {
        match self {
            Source::LocalApi(api) => Some(api),
            Source::Cli(_) | Source::Sim(_) => None,
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        match self {
            Source::LocalApi(s) => s.snapshot().await,
            Source::Cli(s) => s.status().await,
            Source::Sim(s) => s.status(),
        }
    }
}
