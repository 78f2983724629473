//! Every kind of event, in one table: its variant, its stable name, its default severity and,
//! marked `check_critical`, whether it makes `check` exit 2 (Nagios CRITICAL). The enum, its serde
//! names, [`EventKind::ALL`], [`EventKind::as_str`], [`EventKind::severity`] and
//! [`EventKind::check_critical`] are generated from it; the README's event table is checked against it
//! (`every_kind_is_in_the_readme_table`).

use serde::{Deserialize, Serialize};

use super::Severity;

macro_rules! event_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal, $severity:ident $(, $critical:ident)?;)*) => {
        /// Every kind of event the monitor can report. The string form (`device.new`, …) is
        /// stable: it is stored, printed, sent in webhooks and used in config filters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum EventKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl EventKind {
            pub const ALL: [EventKind; [$(EventKind::$variant),*].len()] = [$(EventKind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }

            /// The default severity of this kind.
            pub fn severity(self) -> Severity {
                match self { $(EventKind::$variant => Severity::$severity,)* }
            }

            /// This kind makes `check` exit 2 (Nagios CRITICAL): someone or something new may
            /// now reach this server, or the guard is not keeping them out.
            pub fn check_critical(self) -> bool {
                match self { $(EventKind::$variant => event_kinds!(@critical $($critical)?),)* }
            }
        }
    };
    (@critical check_critical) => { true };
    (@critical) => { false };
}

event_kinds! {
    UserNew => "user.new", Critical, check_critical;
    UserRemoved => "user.removed", Info;
    DeviceNew => "device.new", Critical, check_critical;
    DeviceRekeyed => "device.rekeyed", Warning;
    DeviceRenamed => "device.renamed", Warning;
    DeviceOwnerChanged => "device.owner_changed", Critical;
    DeviceAddressesChanged => "device.addresses_changed", Warning;
    DeviceTagsChanged => "device.tags_changed", Warning;
    DeviceRoutesChanged => "device.routes_changed", Warning;
    DeviceExitNodeOffered => "device.exit_node_offered", Warning;
    DeviceKeyExpiryDisabled => "device.key_expiry_disabled", Warning;
    DeviceKeyExpiring => "device.key_expiring", Warning;
    DeviceExpired => "device.expired", Warning;
    DeviceRemoved => "device.removed", Info;
    PeerConnected => "peer.connected", Info;
    DeviceOffline => "device.offline", Warning;
    DeviceOnline => "device.online", Info;
    DevicePendingApproval => "device.pending_approval", Critical;
    DeviceApproved => "device.approved", Info;
    DeviceUnlisted => "device.unlisted", Critical;
    PolicyChanged => "policy.changed", Critical;
    SettingsChanged => "settings.changed", Warning;
    PostureDegraded => "posture.degraded", Warning;
    PostureImproved => "posture.improved", Info;
    AccessWidened => "access.widened", Critical, check_critical;
    AccessSshWidened => "access.ssh_widened", Critical, check_critical;
    AccessNarrowed => "access.narrowed", Info;
    AccessCapabilityGranted => "access.capability_granted", Warning;
    NodeTailnetLockDisabled => "node.tailnet_lock_disabled", Critical, check_critical;
    NodeTailnetLockChanged => "node.tailnet_lock_changed", Warning;
    NodeSshChanged => "node.ssh_changed", Warning;
    NodeRoutesChanged => "node.routes_changed", Warning;
    NodeUpdateAvailable => "node.update_available", Warning;
    /// `RemoteConfig` was turned on: the control plane may change any pref of this node and
    /// call any of its LocalAPI endpoints.
    NodeRemoteConfig => "node.remote_config", Critical, check_critical;
    /// This node now belongs to another tailnet (`CurrentTailnet.StableID` changed).
    NodeTailnetChanged => "node.tailnet_changed", Critical, check_critical;
    MonitorBaseline => "monitor.baseline", Info;
    MonitorSourceDown => "monitor.source_down", Critical;
    MonitorSourceRecovered => "monitor.source_recovered", Info;
    /// One part of the node view (access, Tailnet Lock, prefs) cannot be read; the rest is
    /// watched as before. Raised once per outage of that part.
    MonitorPartUnavailable => "monitor.part_unavailable", Warning;
    MonitorPartRecovered => "monitor.part_recovered", Info;
    MonitorDeliveryFailed => "monitor.delivery_failed", Critical;
    /// The periodic summary (`[digest] every`).
    MonitorDigest => "monitor.digest", Info;
    /// An `[[export]]` has not handed its collector the events of the last `max_lag` (once per
    /// backlog; it catches up by itself when the collector is back).
    MonitorExportLagging => "monitor.export_lagging", Warning;
    /// `run` cannot write its state database (disk full, I/O error); sent directly, not queued.
    MonitorStoreFailed => "monitor.store_failed", Critical;
    MonitorStoreRecovered => "monitor.store_recovered", Info;
    /// A `test-notify` message; never logged.
    MonitorTest => "monitor.test", Info;
    /// `guard approve`, `guard init` or `approve_new` let a device in at this server.
    GuardApproved => "guard.approved", Info;
    /// `guard revoke`: a device is shut out again.
    GuardRevoked => "guard.revoked", Warning;
    /// A device this server never approved tried to reach it (or route through it).
    GuardBlocked => "guard.blocked", Critical, check_critical;
    /// `[guard] mode = "enforce"`, and the guard is not in force (userspace networking, no
    /// privileged relay, nftables refused): raised once per reason.
    GuardUnenforced => "guard.unenforced", Critical, check_critical;
    /// The guard is in force again after `guard.unenforced`.
    GuardEnforced => "guard.enforced", Info;
    /// `guard off`: the enforcement was removed by hand.
    GuardDisabled => "guard.disabled", Critical, check_critical;
    /// With the guard enforcing, a way in that tailscaled answers itself (Tailscale SSH, the web
    /// client, serve, the PeerAPI) is open, or was turned on and closed again: once per opening.
    GuardDoorOpen => "guard.door_open", Critical, check_critical;
    /// Such a door is closed again.
    GuardDoorClosed => "guard.door_closed", Info;
    /// A peer without a stable ID of its own, or sharing one with another peer: never approved,
    /// and a claim on what it may send from (review G4).
    GuardSuspiciousPeer => "guard.suspicious_peer", Critical;
    /// The root side's set is not what the monitor computes from what it sees, for more than one
    /// sync.
    GuardMismatch => "guard.mismatch", Warning;
    /// Someone was refused the web view: a device neither approved in the guard nor a listed
    /// viewer, a local user who is not root on its socket, or a wrong token.
    WebRefused => "web.refused", Critical;
    /// A device looked at the web view for the first time.
    WebNewViewer => "web.new_viewer", Warning;
}

impl EventKind {
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventKind {
    /// Whether a repeat of this kind for one device may be held by `[alerts] coalesce_window`.
    /// Not for the kinds that make `check` CRITICAL: a second widening of who reaches this server
    /// (a harmless port, then SSH two minutes later) is news, not noise, and goes out at once.
    /// `guard.blocked` is the exception: a refused device knocking again and again is what the
    /// window is for, and it stays refused.
    pub fn coalesces(self) -> bool {
        !self.check_critical() || self == EventKind::GuardBlocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of events names every kind once, with its default severity, and no
    /// kind that does not exist.
    #[test]
    fn every_kind_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        for k in EventKind::ALL {
            let row = format!("| `{}` | {}", k.as_str(), k.severity().as_str());
            assert_eq!(readme.matches(&row).count(), 1, "README row {row}");
        }
        for line in readme.lines() {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let (Some(kind), Some(sev)) = (cells.next(), cells.next()) else {
                continue;
            };
            let listed = kind.strip_prefix('`').and_then(|k| k.strip_suffix('`'));
            if let (Some(k), true) = (
                listed,
                ["critical", "warning", "info"]
                    .iter()
                    .any(|s| sev.starts_with(s)),
            ) {
                assert!(
                    EventKind::parse(k).is_some(),
                    "README lists `{k}`, which is no kind"
                );
            }
        }
    }
}
