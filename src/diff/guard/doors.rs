//! The ways into this server that tailscaled answers itself, after its own packet filter (which
//! the control plane writes) and before the kernel, so that no nftables hook sees them
//! (tailscale.com `wgengine/netstack/netstack.go` `shouldProcessInbound`, and
//! `ipn/ipnlocal/local.go` `setTCPPortsInterceptedFromNetmapAndPrefsLocked`): Tailscale SSH,
//! the web client, serve and funnel ports, VIP services, and the PeerAPI. In userspace
//! networking mode tailscaled dials 127.0.0.1 for every tailnet connection, so every loopback
//! listener is one.

use chrono::{DateTime, Utc};

use crate::model::access::NodeTrust;
use crate::model::guard::Door;
use crate::model::{Event, EventKind};

/// The port tailscaled's web client listens on (`ipn/ipnlocal/web_client.go` `webClientPort`).
pub const WEB_CLIENT_PORT: u16 = 5252;

fn door(key: String, name: String, port: Option<u16>, closable: bool, fix: &str) -> Door {
    Door {
        key,
        name,
        port,
        closable,
        fix: fix.to_owned(),
    }
}

/// The doors open now, from this node's prefs and serve config (`trust`) and `/status` `TUN`.
/// A part that could not be read opens nothing here: it is said as unread elsewhere.
pub fn open_doors(trust: &NodeTrust, tun: Option<bool>) -> Vec<Door> {
    let mut out = Vec::new();
    if trust.remote_config == Some(true) {
        out.push(door(
            "remote_config".into(),
            "RemoteConfig: the control plane may change any pref of this node and call any of its LocalAPI endpoints, so it can open any door and undo the guard".into(),
            None,
            false,
            "`tailscale set --remote-config=false`",
        ));
    }
    if trust.shields_up == Some(true) {
        // tailscaled refuses every inbound connection, its own doors included.
        return out;
    }
    if tun == Some(false) {
        out.push(door(
            "loopback".into(),
            "every TCP listener on 127.0.0.1 and ::1 (userspace networking: tailscaled dials loopback for each tailnet connection to this node), this monitor's own [metrics] and [webhooks] listeners included".into(),
            None,
            false,
            "run tailscaled with a TUN device (not --tun=userspace-networking)",
        ));
    }
    if trust.ssh_server == Some(true) {
        out.push(door(
            "ssh".into(),
            "Tailscale SSH (port 22), whose SSH policy the control plane writes".into(),
            Some(22),
            true,
            "`tailscale set --ssh=false` and use OpenSSH on the tailnet address (guarded), or `[guard] tailscaled_doors = \"close\"`",
        ));
    }
    if trust.web_client == Some(true) {
        out.push(door(
            "web_client".into(),
            format!("the Tailscale web client (port {WEB_CLIENT_PORT})"),
            Some(WEB_CLIENT_PORT),
            true,
            "`tailscale set --webclient=false`, or `[guard] tailscaled_doors = \"close\"`",
        ));
    }
    if let Some(s) = &trust.serve {
        for p in &s.tcp {
            out.push(door(
                format!("serve:{p}"),
                format!("`tailscale serve` on port {p}"),
                Some(*p),
                false,
                "`tailscale serve reset` (or serve only what every device the policy admits may reach)",
            ));
        }
        for f in &s.funnel {
            out.push(door(
                format!("funnel:{f}"),
                format!("`tailscale funnel` on {f}: open to the internet"),
                f.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
                false,
                "`tailscale funnel reset`",
            ));
        }
        for v in &s.services {
            out.push(door(
                format!("service:{v}"),
                format!("the VIP service {v}"),
                None,
                false,
                "remove the service from `tailscale serve` (`tailscale serve drain`, then `clear`)",
            ));
        }
    }
    if tun == Some(true) {
        out.push(door(
            "peerapi".into(),
            "the PeerAPI (Taildrop, Taildrive, DNS-over-HTTPS for exit-node users), on a port tailscaled picks; what a peer may do there is granted by the control plane's capabilities".into(),
            None,
            false,
            "nothing on this node closes it but `tailscale set --shields-up` (which refuses every connection); Tailnet Lock (Tailscale SaaS) keeps the control plane from adding devices",
        ));
    }
    out
}

/// The events for the doors open now against those said before (`said`, their keys): a
/// critical `guard.door_open` once per opening, a `guard.door_closed` when it closes. Returns the
/// keys to remember.
pub fn door_events(
    open: &[Door],
    said: &[String],
    closed_again: &[String],
    now: DateTime<Utc>,
) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    for d in open {
        if said.contains(&d.key) && !closed_again.contains(&d.key) {
            continue;
        }
        let mut e = if closed_again.contains(&d.key) {
            Event::new(
                EventKind::GuardDoorOpen,
                now,
                format!(
                    "{} was turned on, and the guard turned it off again (`[guard] tailscaled_doors = \"close\"`)",
                    d.name
                ),
            )
        } else {
            Event::new(
                EventKind::GuardDoorOpen,
                now,
                format!(
                    "NOT GUARDED: {} is answered by tailscaled itself, before the guard: a device this server never approved can use it if the tailnet policy lets it",
                    d.name
                ),
            )
        };
        e.fix = d.fix.clone();
        e.detail = format!("door: {}", d.key);
        events.push(e);
    }
    let keys: Vec<String> = open
        .iter()
        .filter(|d| !closed_again.contains(&d.key))
        .map(|d| d.key.clone())
        .collect();
    for k in said {
        if !keys.contains(k) && !closed_again.contains(k) {
            let mut e = Event::new(
                EventKind::GuardDoorClosed,
                now,
                format!("A way into this server that the guard cannot filter is closed again: {k}"),
            );
            e.detail = format!("door: {k}");
            events.push(e);
        }
    }
    (events, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::access::ServeDoors;

    #[test]
    fn each_door_from_prefs_and_serve_config() {
        let mut t = NodeTrust {
            ssh_server: Some(true),
            web_client: Some(true),
            serve: Some(ServeDoors {
                tcp: vec![443, 8443],
                funnel: vec!["srv.ts.net:443".into()],
                services: vec!["svc:db".into()],
            }),
            ..NodeTrust::default()
        };
        let keys = |d: Vec<Door>| d.into_iter().map(|d| d.key).collect::<Vec<_>>();
        assert_eq!(
            keys(open_doors(&t, Some(true))),
            [
                "ssh",
                "web_client",
                "serve:443",
                "serve:8443",
                "funnel:srv.ts.net:443",
                "service:svc:db",
                "peerapi"
            ]
        );
        // Unknown is not open, and shields-up closes every one.
        assert_eq!(
            keys(open_doors(&NodeTrust::default(), None)),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(open_doors(&NodeTrust::default(), Some(false))),
            ["loopback"]
        );
        t.shields_up = Some(true);
        assert!(open_doors(&t, Some(true)).is_empty());
    }

    #[test]
    fn a_door_is_said_once_when_it_opens_and_once_when_it_closes() {
        let t = NodeTrust {
            ssh_server: Some(true),
            ..NodeTrust::default()
        };
        let now = Utc::now();
        let open = open_doors(&t, Some(true));
        let (e, said) = door_events(&open, &[], &[], now);
        assert_eq!(e.len(), 2);
        assert!(e.iter().all(|e| e.kind == EventKind::GuardDoorOpen));
        assert!(e[0].summary.contains("Tailscale SSH"), "{}", e[0].summary);
        let (e, said) = door_events(&open, &said, &[], now);
        assert!(e.is_empty());
        let open = open_doors(&NodeTrust::default(), Some(true));
        let (e, said) = door_events(&open, &said, &[], now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, EventKind::GuardDoorClosed);
        assert_eq!(said, ["peerapi"]);
        // Closed again by the guard: said (each time), and not remembered as open.
        let open = open_doors(&t, Some(true));
        let (e, said) = door_events(&open, &said, &["ssh".into()], now);
        assert_eq!(e.len(), 1);
        assert!(e[0].summary.contains("turned it off again"));
        assert_eq!(said, ["peerapi"]);
    }
}
