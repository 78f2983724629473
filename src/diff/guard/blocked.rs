//! Which dropped packets become `guard.blocked`: grouped by the device whose address or route
//! holds the source (else one group for every source no device claims, however many), and
//! said at most once per group and window.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;

use crate::model::guard::{Blocked, BlockedRecord};
use crate::model::state::Known;
use crate::model::{Device, Event, EventKind};

/// The key of the group of sources no device claims.
pub const UNCLAIMED: &str = "unclaimed";
/// How many unclaimed sources an event names.
const EXAMPLES: usize = 5;

/// The device that may send from `ip`, and how: a present device's own address first, then a
/// removed one's, then the narrowest route that holds it.
pub fn holder(known: &Known, ip: IpAddr) -> Option<(&Device, Option<&str>)> {
    let text = ip.to_string();
    let mut best: Option<(&Device, Option<&str>, u8)> = None;
    for k in known.devices.values() {
        let d = &k.device;
        if d.addresses.contains(&text) {
            let rank = if k.removed { 1 } else { 2 };
            if best.is_none_or(|b| b.2 < 200 + rank) {
                best = Some((d, None, 200 + rank));
            }
            continue;
        }
        if k.removed {
            continue;
        }
        for r in &d.routes {
            let Ok(n) = r.parse::<IpNet>() else { continue };
            if n.contains(&ip) && best.is_none_or(|b| b.2 < n.prefix_len()) {
                best = Some((d, Some(r.as_str()), n.prefix_len()));
            }
        }
    }
    best.map(|(d, r, _)| (d, r))
}

/// The events due for what the kernel counted (`seen`), and the records to write. `records`
/// are the groups recorded so far, by key.
pub fn blocked_events(
    known: &Known,
    seen: &[Blocked],
    records: &BTreeMap<String, BlockedRecord>,
    window: Duration,
    now: DateTime<Utc>,
) -> (Vec<Event>, Vec<BlockedRecord>) {
    struct Group<'a> {
        device: Option<&'a Device>,
        route: Option<&'a str>,
        hits: Vec<&'a Blocked>,
    }
    let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for b in seen {
        let h = holder(known, b.addr);
        let key = h.map_or_else(|| UNCLAIMED.to_owned(), |(d, _)| d.id.0.clone());
        let g = groups.entry(key).or_insert(Group {
            device: h.map(|(d, _)| d),
            route: h.and_then(|(_, r)| r),
            hits: Vec::new(),
        });
        g.hits.push(b);
    }
    let mut events = Vec::new();
    let mut changed = Vec::new();
    for (key, g) in groups {
        let packets = g.hits.iter().fold(0u64, |n, b| n.saturating_add(b.packets));
        let mut row = records.get(&key).cloned().unwrap_or(BlockedRecord {
            key: key.clone(),
            device_id: None,
            first: now,
            alerted: None,
            packets: 0,
        });
        // Elements expire after an hour of silence: fewer packets than recorded is a new run.
        let base = if packets < row.packets {
            0
        } else {
            row.packets
        };
        if packets == base {
            continue;
        }
        row.device_id = g.device.map(|d| d.id.0.clone());
        if row.alerted.is_none_or(|t| now - t >= window) {
            events.push(event(
                known, &g.hits, g.device, g.route, packets, row.first, now,
            ));
            row.alerted = Some(now);
        }
        row.packets = packets;
        changed.push(row);
    }
    (events, changed)
}

fn event(
    known: &Known,
    hits: &[&Blocked],
    device: Option<&Device>,
    route: Option<&str>,
    packets: u64,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Event {
    let mut sources: Vec<String> = hits.iter().map(|b| b.addr.to_string()).collect();
    sources.dedup();
    let who = match device {
        Some(d) => {
            let login = known
                .users
                .get(&d.user_id)
                .map_or("an unknown user", |u| u.user.login.as_str());
            let via = route.map_or_else(String::new, |r| format!(" through its route {r}"));
            format!("{} ({}) of {login}{via}", d.display_name(), sources[0])
        }
        None => {
            let shown: Vec<&str> = sources.iter().take(EXAMPLES).map(String::as_str).collect();
            let more = sources.len().saturating_sub(EXAMPLES);
            format!(
                "{} source address(es) that no device of the tailnet claims ({}{})",
                sources.len(),
                shown.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            )
        }
    };
    let mut ports: Vec<String> = hits
        .iter()
        .map(|b| {
            let port = if b.port == 0 {
                String::new()
            } else {
                format!("/{}", b.port)
            };
            format!("{}{port}", b.proto)
        })
        .collect();
    ports.sort();
    ports.dedup();
    let shown = ports.len().min(10);
    let mut e = Event::new(
        EventKind::GuardBlocked,
        now,
        format!(
            "The guard dropped {who} trying to reach this server or route through it: {}{}",
            ports[..shown].join(", "),
            if ports.len() > shown { ", …" } else { "" }
        ),
    );
    e.device = device.cloned();
    e.detail = format!(
        "{packets} packet(s) dropped since {}; {}",
        first.format("%Y-%m-%d %H:%M:%S UTC"),
        if device.is_some() {
            "the device (or this route of it) is not approved at this server."
        } else {
            "no device this server knows may send from these addresses."
        }
    );
    if let Some(d) = device {
        e.fix = format!(
            "If you know this device: `tailscale-monitor guard approve {}`",
            d.id.0
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::state::KnownDevice;

    fn known() -> Known {
        let mut k = Known::default();
        for (id, addr, routes) in [
            ("nE", "100.64.0.9", vec!["192.168.77.0/24"]),
            ("nA", "100.64.0.2", vec![]),
        ] {
            let mut d = Device::for_tests(id);
            d.addresses = vec![addr.into()];
            d.routes = routes.into_iter().map(String::from).collect();
            k.devices.insert(
                d.id.clone(),
                KnownDevice {
                    device: d,
                    removed: false,
                    expiring_alerted: None,
                    last_handshake: None,
                    after_baseline: false,
                },
            );
        }
        k
    }

    fn hit(addr: &str, port: u16, packets: u64) -> Blocked {
        Blocked {
            addr: addr.parse().unwrap(),
            proto: "tcp".into(),
            port,
            packets,
        }
    }

    #[test]
    fn grouped_by_the_device_whose_address_or_route_holds_the_source() {
        let k = known();
        let now = Utc::now();
        let seen = [
            hit("100.64.0.9", 8080, 2),
            hit("192.168.77.5", 8080, 3),
            hit("10.1.0.1", 22, 1),
            hit("10.1.0.2", 22, 1),
        ];
        let (events, rows) = blocked_events(&k, &seen, &BTreeMap::new(), Duration::hours(1), now);
        assert_eq!(events.len(), 2, "{events:#?}");
        assert!(events[0].summary.contains("nE"), "{}", events[0].summary);
        assert!(events[0].detail.starts_with("5 packet(s)"));
        assert!(
            events[1]
                .summary
                .contains("2 source address(es) that no device")
                && events[1].summary.contains("10.1.0.1, 10.1.0.2"),
            "{}",
            events[1].summary
        );
        assert_eq!(rows.len(), 2);
        // The same counters again: nothing new. More packets within the window: recorded, not said.
        let records: BTreeMap<_, _> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
        let (e, r) = blocked_events(&k, &seen, &records, Duration::hours(1), now);
        assert!(e.is_empty() && r.is_empty());
        let more = [hit("100.64.0.9", 8080, 9)];
        let (e, r) = blocked_events(&k, &more, &records, Duration::hours(1), now);
        assert!(e.is_empty());
        assert_eq!(r[0].packets, 9);
        let (e, _) = blocked_events(
            &k,
            &more,
            &records,
            Duration::hours(1),
            now + Duration::hours(2),
        );
        assert_eq!(e.len(), 1);
    }

    /// Review G10: thousands of sources no device holds are one event, not one each.
    #[test]
    fn many_unclaimed_sources_are_one_event() {
        let seen: Vec<Blocked> = (0..2000u32)
            .map(|i| {
                hit(
                    &std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                    80,
                    1,
                )
            })
            .collect();
        let (events, rows) = blocked_events(
            &known(),
            &seen,
            &BTreeMap::new(),
            Duration::hours(1),
            Utc::now(),
        );
        assert_eq!(events.len(), 1);
        assert!(events[0].summary.contains("2000 source address(es)"));
        assert!(events[0].summary.contains("and 1995 more"));
        assert_eq!(rows.len(), 1);
    }
}
