//! SIGHUP: the config is read again and applied, but for the keys that hold what `run` set up
//! once ([`crate::config::RESTART_ONLY`]), which are said in the log and keep their running values. A file that
//! does not load is logged and the running config kept.

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::schedule::Periods;
use super::Daemon;
use crate::config::Config;
use crate::source::control::ControlSource;
use crate::source::Source;

impl Daemon {
    pub(super) fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: started without --config; nothing to reload");
            return;
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        match Config::load(&path) {
            Ok(new) => {
                let restart = new.restart_only_changes(&self.cfg);
                if !restart.is_empty() {
                    warn!(keys = %restart.join(", "), "SIGHUP: these keys take effect only after a restart (systemctl restart tailscale-monitor); the running values stay until then");
                }
                // The restart-only keys keep their running values, so that the next SIGHUP
                // compares with what actually runs.
                self.cfg = new.keeping_restart_only(&self.cfg);
                self.source = Source::from_config(&self.cfg.source);
                self.control = self.cfg.control.as_ref().map(ControlSource::from_config);
                // A pass now: the control plane read again, `[guard]` in effect (or its table
                // gone).
                self.schedule
                    .reloaded(Periods::of(&self.cfg, self.watchdog), Instant::now());
                info!(channels = self.cfg.channels.len(), "config reloaded");
            }
            Err(e) => error!(error = %e, "SIGHUP: config not reloaded, keeping the old one"),
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::RESTART_ONLY;

    #[test]
    fn restart_only_keys_are_named_once() {
        let keys: std::collections::BTreeSet<_> = RESTART_ONLY.iter().map(|r| r.key).collect();
        assert_eq!(keys.len(), RESTART_ONLY.len());
    }
}
