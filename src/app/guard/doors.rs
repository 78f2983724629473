//! The doors tailscaled answers itself, as a pass sees them: said once per opening, closed by
//! the root side where `[guard] tailscaled_doors = "close"` asks for it, and the exit node this
//! server uses noted for the set (its default route claims every address).

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Step, RELAY_TIMEOUT};
use crate::config::{Config, Doors};
use crate::diff::guard::doors::{door_events, open_doors};
use crate::model::{Event, Snapshot};
use crate::privileged;
use crate::store::{Store, StoreError};

pub async fn observe(
    store: &mut Store,
    cfg: &Config,
    snap: &Snapshot,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let Some(trust) = snap.node.as_ref().map(|v| &v.trust) else {
        return Ok(Vec::new());
    };
    let mut step = Step::load(store)?;
    if let Some(exit) = &trust.exit_node_id {
        step.state.exit_node = (!exit.is_empty()).then(|| exit.clone());
    }
    let guarding = cfg.guard.enforcing()
        && step.state.off.is_none()
        && step.state.initialized.is_some()
        && snap.tun == Some(true);
    if !guarding {
        step.state.doors.clear();
        return step.commit(store, cfg, now);
    }
    let open = open_doors(trust, snap.tun);
    let mut closed_again = Vec::new();
    let closable: Vec<&str> = open
        .iter()
        .filter(|d| d.closable)
        .map(|d| d.key.as_str())
        .collect();
    if cfg.guard.tailscaled_doors == Doors::Close && !closable.is_empty() {
        match privileged::doors_close(&cfg.source.privileged_socket, RELAY_TIMEOUT).await {
            Ok(()) => {
                info!(doors = ?closable, "guard: closed tailscaled's own doors");
                closed_again = closable.iter().map(|s| s.to_string()).collect();
            }
            Err(e) => {
                warn!(error = %e, doors = ?closable, "guard: cannot close tailscaled's own doors")
            }
        }
    }
    let (events, keys) = door_events(&open, &step.state.doors, &closed_again, now);
    step.state.doors = keys;
    step.events = events;
    step.commit(store, cfg, now)
}
