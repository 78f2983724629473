//! The web view (`[web]`): read-only pages that `run` serves from its own store, meant to be
//! reached through `tailscale serve` to a unix socket that only root (tailscaled) may use.
//!
//! - [`listen`]: the socket (0600 in a 0700 directory) or a loopback TCP address with a token,
//!   and each connection's peer, checked before a request is read;
//! - [`viewer`]: who is looking — the node behind tailscaled's `X-Forwarded-For`, named by
//!   `whois` and let in only if the guard approved it with its node key (or, with the guard off,
//!   `[web] viewers` lists it). The identity headers (`Tailscale-User-Login`) are the control
//!   plane's word and are never read;
//! - [`event`]: one event as its alert showed it (a writer of `notify::render::blocks`);
//! - [`pages`]: the pages, GET only, rendered with maud (every value escaped by the template
//!   language itself), under a Content-Security-Policy that allows no script and no inline style.

pub(crate) mod event;
pub(crate) mod listen;
pub(crate) mod pages;
pub(crate) mod viewer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::{Config, WebConfig};
use crate::model::route::Route;
use crate::source::localapi::LocalApi;
use crate::store::Store;

/// What every request of the web view shares.
pub(crate) struct Web {
    pub cfg: WebConfig,
    /// `[guard] mode = "enforce"`: the guard's approvals decide who may look.
    pub guard: bool,
    /// Where refusals and new viewers are queued, as every event is.
    pub routes: Vec<Route>,
    /// This server's name, for the pages' titles.
    pub host: String,
    pub api: LocalApi,
    /// The view's own connection to the state database (WAL: it reads beside `run`'s writer).
    pub store: Mutex<Store>,
    /// When each refused party was last alerted (`web.refused` at most once an hour each).
    pub refused: Mutex<HashMap<String, std::time::Instant>>,
}

impl Web {
    pub fn new(
        cfg: &Config,
        web: &WebConfig,
        host: &str,
    ) -> Result<Arc<Web>, crate::store::StoreError> {
        Ok(Arc::new(Web {
            cfg: web.clone(),
            guard: cfg.guard.enforcing(),
            routes: cfg.routes(),
            host: host.to_owned(),
            api: LocalApi::new(&cfg.source.socket, cfg.source.timeout),
            store: Mutex::new(Store::open(&cfg.state_dir)?),
            refused: Mutex::default(),
        }))
    }
}
