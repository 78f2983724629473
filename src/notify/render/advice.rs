//! "What to do": the advice per event kind, after the event's own fix.

use crate::model::event_kind::EventKind;
use crate::model::Event;
use crate::sanitize;

/// What the administrator should do about an event.
pub(crate) fn action(e: &Event) -> String {
    let generic = kind_action(e);
    if e.fix.is_empty() {
        generic
    } else {
        format!("{} — {generic}", sanitize::line(&e.fix, 600))
    }
}

pub(super) fn kind_action(e: &Event) -> String {
    let d = e.device.as_ref();
    let console = d.and_then(|d| d.addresses.first()).map_or_else(
        || "https://login.tailscale.com/admin/machines".to_owned(),
        |ip| format!("https://login.tailscale.com/admin/machines/{ip}"),
    );
    let hs_id = d.and_then(|d| d.node_id).map_or_else(
        || "<ID from `headscale nodes list`>".to_owned(),
        |n| n.to_string(),
    );
    match e.kind {
        EventKind::DeviceNew | EventKind::DeviceRekeyed | EventKind::DeviceOwnerChanged => format!(
            "If you do not recognize this, remove the device now — Tailscale admin console: {console} \
             (… menu → Remove); Headscale: `headscale nodes delete --identifier {hs_id}`. Then find out \
             who could add it: review auth keys, consider device approval and Tailnet Lock."
        ),
        EventKind::GuardBlocked => format!(
            "The guard dropped it: nothing got through. If you know this device and want it in, run \
             `tailscale-monitor guard approve {}` on this server. If not, remove it from the tailnet \
             (admin console: {console}; Headscale: `headscale nodes delete --identifier {hs_id}`) and find \
             out who added it.",
            d.map_or("<device>", |d| d.id.0.as_str())
        ),
        EventKind::GuardApproved => "For your records: this device can now reach this server (as far as the \
             tailnet policy lets it). `tailscale-monitor guard revoke <device>` shuts it out again."
            .to_owned(),
        EventKind::GuardRevoked => "For your records: this device is dropped at this server again. \
             `tailscale-monitor guard status` lists what is approved."
            .to_owned(),
        EventKind::GuardUnenforced => "Until this is fixed, the guard does not protect this server: devices \
             the tailnet policy lets in can connect, approved or not. `tailscale-monitor guard status` says why."
            .to_owned(),
        EventKind::GuardDoorOpen => "tailscaled answers this door itself, before the kernel: the guard cannot \
             drop an unapproved device there, and the tailnet policy (which the admin console writes) decides \
             alone. Close it (the fix above), or set `[guard] tailscaled_doors = \"close\"` for Tailscale SSH \
             and the web client; `tailscale-monitor guard status` lists every open door."
            .to_owned(),
        EventKind::GuardSuspiciousPeer => "A control plane that hands this server a peer without an identity of its \
             own is hiding it from the console's device list: find out who added it (Headscale: `headscale nodes \
             list`). The guard lets nothing it may send from in."
            .to_owned(),
        EventKind::GuardMismatch => "The guard applies the root side's decision. If this persists, compare \
             `tailscale-monitor guard status --json` (root's set) with `tailscale status --json`."
            .to_owned(),
        EventKind::MonitorExportLagging => "Nothing is lost: the events wait in the log and go out when the \
             collector takes them again. Check the collector (the error above), and `tailscale-monitor check`'s \
             export lag."
            .to_owned(),
        EventKind::WebRefused => "Nothing was shown. If this was not you from a device you have not approved, \
             someone on the tailnet (or on this server) is looking for a way in: find the device in the admin \
             console and remove it."
            .to_owned(),
        EventKind::WebNewViewer => "For your records. If you do not recognise the device, revoke its approval \
             (`sudo tailscale-monitor guard revoke <device>`) or take it off `[web] viewers`."
            .to_owned(),
        EventKind::GuardDoorClosed => "For your records: this door is closed again; `tailscale-monitor guard \
             status` lists those still open."
            .to_owned(),
        EventKind::NodeRemoteConfig => "If you did not turn it on, someone with tailscaled's write permission on \
             this server, or the control plane itself, did: turn it off (`tailscale set --remote-config=false`) \
             and find out who."
            .to_owned(),
        EventKind::GuardEnforced => "For your records: only approved devices can reach this server again.".to_owned(),
        EventKind::GuardDisabled => "Every device the tailnet policy lets in can reach this server now. If you \
             did not run `guard off` yourself, someone with root on this server did. \
             `tailscale-monitor guard on` puts the guard back in force."
            .to_owned(),
        EventKind::UserNew => "If you did not invite this user, suspend or remove them in the admin console \
             (https://login.tailscale.com/admin/users) or with `headscale users destroy`, and review their devices."
            .to_owned(),
        EventKind::DeviceRoutesChanged | EventKind::DeviceExitNodeOffered => format!(
            "Routes let a device carry other devices' traffic. If this was not approved on purpose, \
             disable them — admin console: {console} (Edit route settings); Headscale: \
             `headscale nodes approve-routes --identifier {hs_id} --routes ''`."
        ),
        EventKind::DeviceKeyExpiryDisabled => format!(
            "A key that never expires stays valid if the device is stolen. Re-enable key expiry unless \
             this is a server — admin console: {console} (… menu → Enable key expiry)."
        ),
        EventKind::DeviceKeyExpiring | EventKind::DeviceExpired => {
            "Re-authenticate the device (`tailscale up --force-reauth` on it) or remove it if it is no longer used."
                .to_owned()
        }
        EventKind::DeviceTagsChanged | EventKind::DeviceAddressesChanged | EventKind::DeviceRenamed => format!(
            "Tags and names decide which ACL rules apply. Confirm the change was intended: {console}"
        ),
        EventKind::DeviceRemoved | EventKind::UserRemoved => {
            "For your records. If nobody in your team removed it, someone else has admin access.".to_owned()
        }
        EventKind::PeerConnected => "For your records: a peer opened a WireGuard session with this server.".to_owned(),
        EventKind::AccessWidened | EventKind::AccessSshWidened | EventKind::AccessCapabilityGranted => {
            "The tailnet policy now lets these sources reach this server. If nobody on your team changed the \
             policy on purpose, someone with admin access did: restore the ACL (Tailscale: Access controls \
             in the admin console, https://login.tailscale.com/admin/acls; Headscale: `headscale policy get` / \
             `headscale policy set --file`), then review who holds admin rights. \
             `tailscale-monitor access` shows the whole current model."
                .to_owned()
        }
        EventKind::DeviceOffline => "Check the device (power, network, tailscaled). If this server itself is \
             offline, fix its connectivity first."
            .to_owned(),
        EventKind::DeviceOnline => "Nothing to do: it is reachable again.".to_owned(),
        EventKind::DevicePendingApproval => format!(
            "Approve it only if you know it: Tailscale admin console {console} (… menu → Approve), or remove \
             it there. Until approved it cannot reach anything."
        ),
        EventKind::DeviceApproved => "For your records: the device can now join the tailnet.".to_owned(),
        EventKind::DeviceUnlisted => "Treat this server's tailnet as compromised until explained: compare `tailscale \
             status` here with the admin console or `headscale nodes list`, and check who holds admin rights."
            .to_owned(),
        EventKind::PolicyChanged => "Review the diff. If nobody on your team made this change, restore the previous \
             policy (Tailscale: https://login.tailscale.com/admin/acls; Headscale: `headscale policy set --file`) \
             and review who holds admin rights."
            .to_owned(),
        EventKind::PostureDegraded => "Check the evidence above; if the change was not intended, apply the fix shown. \
             `tailscale-monitor posture` prints the whole report."
            .to_owned(),
        EventKind::MonitorDigest => "For your records. `tailscale-monitor events`, `devices`, `access`, `posture` and `audit` show each part in full.".to_owned(),
        EventKind::PostureImproved => "For your records: a hardening check passes again.".to_owned(),
        EventKind::SettingsChanged => "Confirm the change in the admin console (https://login.tailscale.com/admin/settings) \
             and revert it if it was not intended."
            .to_owned(),
        EventKind::AccessNarrowed => "For your records: fewer sources can reach this server. If this breaks \
             something, review the recent policy change."
            .to_owned(),
        EventKind::NodeTailnetLockDisabled => "Tailnet Lock protects you against a compromised control plane adding \
             nodes. Find out who disabled it (`tailscale lock status`, the admin console's configuration log) \
             and re-enable it with `tailscale lock init` if it was not on purpose."
            .to_owned(),
        EventKind::NodeTailnetLockChanged => "Check the trusted keys with `tailscale lock status`: every key should \
             belong to a device you control."
            .to_owned(),
        EventKind::NodeSshChanged => "Tailscale SSH on this server was turned on or off (`tailscale set --ssh`). \
             Whoever can write to tailscaled's socket did this; confirm it was you."
            .to_owned(),
        EventKind::NodeRoutesChanged => "This server now advertises different routes (or an exit node), so more \
             traffic can flow through it. Confirm with `tailscale debug prefs`; undo with \
             `tailscale set --advertise-routes= --advertise-exit-node=false`."
            .to_owned(),
        EventKind::NodeUpdateAvailable => "Update tailscaled on this server (your package manager, or `tailscale update`)."
            .to_owned(),
        EventKind::NodeTailnetChanged => "This server was moved to another tailnet: the devices it now trusts are \
             another organisation's. If you did not do this, log it out at once (`tailscale logout`) \
             and find out who had its key or the admin console."
            .to_owned(),
        EventKind::MonitorBaseline => "Review the list: every device and user should be one you recognize. \
             From now on you will be alerted about every change."
            .to_owned(),
        EventKind::MonitorSourceDown => "Until this is fixed the monitor cannot see changes. Check `systemctl status \
             tailscaled` and `tailscale status` on this server."
            .to_owned(),
        EventKind::MonitorSourceRecovered => "Nothing to do; changes made during the outage are reported separately."
            .to_owned(),
        EventKind::MonitorPartUnavailable => "Everything else is still watched and alerted. Apply the fix above; the \
             monitor keeps what it last recorded of this part and says so once it can read it again."
            .to_owned(),
        EventKind::MonitorPartRecovered => "Nothing to do; a change made meanwhile is reported separately."
            .to_owned(),
        EventKind::MonitorDeliveryFailed => "Fix the failing channel (see the error); the alerts stay queued and are \
             retried."
            .to_owned(),
        EventKind::MonitorStoreFailed => "Until the state database can be written the monitor records nothing: free \
             disk space or fix the error above. It retries on its own; changes made meanwhile are reported then."
            .to_owned(),
        EventKind::MonitorStoreRecovered => "Nothing to do; changes made meanwhile are reported separately.".to_owned(),
        EventKind::MonitorTest => "Nothing: this is a test. If you can read it, this channel works.".to_owned(),
    }
}
