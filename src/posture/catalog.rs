//! The posture checks, one row each: ID, area, title, severity and fix (for the Tailscale Admin
//! API; Headscale's where it differs). The judgements live in the area files; a test holds this
//! table to the README's list and to what [`super::evaluate`] reports.

use crate::model::Severity;

/// One posture check.
#[derive(Debug)]
pub(crate) struct Spec {
    pub id: &'static str,
    pub area: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    /// What to do when it fails ("" where the fix depends on what was found).
    pub fix: &'static str,
    /// Headscale's fix, where it is another one.
    pub fix_headscale: Option<&'static str>,
}

const fn check(
    id: &'static str,
    area: &'static str,
    title: &'static str,
    severity: Severity,
    fix: &'static str,
) -> Spec {
    Spec {
        id,
        area,
        title,
        severity,
        fix,
        fix_headscale: None,
    }
}

const fn on_headscale(mut s: Spec, fix: &'static str) -> Spec {
    s.fix_headscale = Some(fix);
    s
}

pub(crate) const CHECKS: &[Spec] = &[
    check("TN-01", "tailnet", "Device approval is required", Severity::Critical, "admin console → Settings → Device management → Require device approval"),
    check("TN-02", "tailnet", "User approval is required", Severity::Warning, "admin console → Settings → User management → Require user approval"),
    on_headscale(check("TN-03", "tailnet", "Node keys expire within 90 days", Severity::Warning, "admin console → Settings → Device management → Key expiry: 90 days or less"), "set node.expiry in headscale's config.yaml"),
    check("TN-04", "tailnet", "Only admins (or nobody) may join external tailnets", Severity::Warning, "admin console → Settings → User management → Who can join external tailnets: Admins or None"),
    check("TN-05", "tailnet", "Network flow logs are on", Severity::Info, "admin console → Logs → Network flow logs → Enable (Premium/Enterprise)"),
    check("TN-06", "tailnet", "HTTPS certificates are off (machine names go to public CT logs)", Severity::Info, "admin console → DNS → HTTPS Certificates → Disable, unless you need them"),
    check("TN-07", "tailnet", "Configuration logs are streamed out of the tailnet", Severity::Info, "admin console → Logs → Configuration logs → Start streaming (to a SIEM the admin console cannot erase)"),
    check("TN-08", "tailnet", "A verified security contact is set", Severity::Info, "admin console → Settings → General → Contact preferences → Security issues"),
    check("TN-09", "tailnet", "A webhook is subscribed to the critical events", Severity::Warning, "admin console → Settings → Webhooks → subscribe an endpoint to categoryTailnetManagement (e.g. this monitor's [webhooks] receiver)"),
    check("PL-01", "policy", "No allow-all rule (* → *:*)", Severity::Critical, "replace the rule with grants for the sources and ports each group needs (https://tailscale.com/kb/1192/acl-samples)"),
    check("PL-02", "policy", "autogroup:danger-all is not used", Severity::Critical, "remove autogroup:danger-all; name the sources instead"),
    check("PL-03", "policy", "No SSH accept to root from broad sources", Severity::Critical, "use \"action\": \"check\" and named users, e.g. {\"action\": \"check\", \"src\": [\"group:admins\"], \"dst\": [\"tag:server\"], \"users\": [\"autogroup:nonroot\"]}"),
    check("PL-04", "policy", "Tag owners are not every member", Severity::Warning, "give tagOwners to a group of admins, e.g. \"tag:server\": [\"group:admins\"]"),
    check("PL-05", "policy", "The policy has tests", Severity::Info, "add a \"tests\" section asserting what must and must not be reachable (https://tailscale.com/kb/1337/policy-syntax#tests)"),
    check("PL-06", "policy", "autoApprovers are not broad", Severity::Warning, "auto-approve routes and exit nodes only for tags owned by admins, e.g. \"exitNode\": [\"tag:exit\"]"),
    on_headscale(check("DV-01", "devices", "Key expiry is on for user devices", Severity::Warning, "admin console → Machines → … → Enable key expiry"), "headscale nodes expire <id> and re-register with an expiring key; set node.expiry"),
    check("DV-02", "devices", "Tagged devices' keys expire", Severity::Info, "enable key expiry on tagged servers and rotate them with an OAuth client or auth key"),
    on_headscale(check("DV-03", "devices", "No device unseen for 60+ days", Severity::Info, "admin console → Machines → remove devices no longer in use"), "headscale nodes delete -i <id>"),
    check("DV-04", "devices", "No external (shared-in) devices", Severity::Info, "admin console → Machines → review shared-in devices and remove unneeded shares"),
    check("DV-05", "devices", "Devices are up to date", Severity::Info, "update those clients, or turn on Settings → Device management → Auto-updates"),
    check("DV-06", "devices", "No node key in use twice", Severity::Critical, "remove the device and re-register it; find the copy of its state"),
    check("DV-07", "devices", "No Tailnet Lock errors", Severity::Warning, "tailscale lock sign the devices you trust; remove the others"),
    on_headscale(check("KY-01", "keys", "No reusable auth keys", Severity::Warning, "admin console → Settings → Keys → revoke; create one-off keys that expire in a day"), "headscale preauthkeys expire --id <id>; create single-use keys with --expiration 1h"),
    on_headscale(check("KY-02", "keys", "No long-lived or non-expiring auth keys", Severity::Warning, "admin console → Settings → Keys → revoke; create one-off keys that expire in a day"), "headscale preauthkeys expire --id <id>; create single-use keys with --expiration 1h"),
    on_headscale(check("KY-03", "keys", "No long-lived API keys", Severity::Warning, "admin console → Settings → Keys → revoke; prefer OAuth clients"), "headscale apikeys expire --prefix <prefix>; create keys with --expiration 30d"),
    check("SV-01", "server", "Tailnet Lock is on (this node)", Severity::Warning, "tailscale lock init … on a trusted node (https://tailscale.com/kb/1226/tailnet-lock)"),
    check("SV-02", "server", "tailscaled is up to date", Severity::Warning, "tailscale update (or your package manager)"),
    check("SV-03", "server", "The monitor's files are owned right and not writable by others", Severity::Critical, "chown root:tailscale-monitor /etc/tailscale-monitor/config.toml; chmod 0640 it; chmod 0755 the binary; chmod o-w everything"),
    check("SV-04", "server", "The monitor's binary and config are immutable (chattr +i)", Severity::Info, "chattr +i /usr/bin/tailscale-monitor /etc/tailscale-monitor/config.toml (chattr -i before an upgrade or edit)"),
    check("SV-05", "server", "The systemd sandbox is in effect", Severity::Warning, "run it with the shipped unit (contrib/tailscale-monitor.service: NoNewPrivileges, SystemCallFilter, ProtectSystem=strict)"),
    check("SV-06", "server", "The socket read is tailscaled's", Severity::Critical, "point [tailscale] socket at tailscaled's socket (/run/tailscale/tailscaled.sock), owned by root"),
    check("SV-07", "server", "Who can reach this server is visible to the monitor", Severity::Warning, ""),
    check("SV-08", "server", "The guard can be enforced on this server (a kernel TUN interface)", Severity::Critical, "run tailscaled with a TUN device (not --tun=userspace-networking), or set [guard] mode = \"off\""),
    check("SV-09", "server", "No way into this server bypasses the guard (Tailscale SSH, web client, serve, funnel, services)", Severity::Critical, "close each door `tailscale-monitor guard status` lists as NOT GUARDED (Tailscale SSH: `tailscale set --ssh=false` and OpenSSH on the tailnet address, or `[guard] tailscaled_doors = \"close\"`)"),
    check("SV-10", "server", "RemoteConfig is off (the control plane cannot change this node's prefs)", Severity::Critical, "tailscale set --remote-config=false"),
    check("MN-01", "manual", "MFA is enforced at the identity provider", Severity::Warning, "require MFA for every account that can log in to the tailnet (https://tailscale.com/kb/1075/multifactor-auth)"),
];

/// The check `id`. Panics on an ID that is not in the table: a typo is a bug the tests find.
pub(crate) fn spec(id: &str) -> &'static Spec {
    CHECKS
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("posture check {id} is not in the catalog"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for s in CHECKS {
            assert!(seen.insert(s.id), "{} twice", s.id);
            let (prefix, n) = s.id.split_once('-').unwrap();
            assert!(
                ["TN", "PL", "DV", "KY", "SV", "MN"].contains(&prefix),
                "{}",
                s.id
            );
            assert!(
                n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                s.id
            );
        }
    }

    /// Like the event-kind table: every check is in the README's list, in its area's item.
    #[test]
    fn every_check_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### Posture and the weekly digest")
            .expect("the README's posture section");
        let list = &readme[start..];
        let list = &list[..list
            .find("A check whose data")
            .expect("the end of the list")];
        for s in CHECKS {
            let area = format!(
                "- **{}**",
                if s.area == "server" {
                    "this server"
                } else {
                    s.area
                }
            );
            let item = list
                .split("\n- ")
                .find(|i| format!("- {i}").starts_with(&area))
                .unwrap_or_else(|| panic!("no README item for the area {}", s.area));
            let id = regex_lite_word(item, s.id);
            assert!(
                id,
                "{} ({}) is not in README.md's {} item",
                s.id, s.title, s.area
            );
        }
    }

    /// `id` as a word of `text` (not a prefix of a longer ID).
    fn regex_lite_word(text: &str, id: &str) -> bool {
        text.match_indices(id).any(|(i, _)| {
            let after = text[i + id.len()..].chars().next();
            !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
    }
}
