//! Presence watches: which devices someone cares about being online, and what the monitor
//! remembers of them between passes. Built from `[[watch]]` tables by the config, evaluated by the
//! pure core (`diff::presence`).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Device, Severity, StableNodeId};

/// One `[[watch]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub name: String,
    /// Tags (`tag:prod`), hostnames or stable node IDs.
    pub devices: Vec<String>,
    /// Alert when offline at least this long.
    pub offline_after: Duration,
    /// Alert "back online" only after being offline at least this long.
    pub back_after: Duration,
    pub severity: Severity,
    /// Outside it, nothing is alerted (a device that goes offline then is alerted when the
    /// schedule opens, if it is still offline).
    pub schedule: Option<Schedule>,
}

impl Watch {
    /// Whether `d` is named by this watch on its own: a tag it carries, its stable ID, or its
    /// hostname or MagicDNS label. Anyone can name a device `web-01`, so a name is resolved
    /// against the whole tailnet by [`assign`], which is what decides.
    pub fn matches(&self, d: &Device) -> bool {
        self.devices.iter().any(|s| self.names(s, d))
    }

    fn names(&self, s: &str, d: &Device) -> bool {
        if s.starts_with("tag:") {
            d.tags.iter().any(|t| t == s)
        } else {
            s == d.id.0 || name_matches(s, d)
        }
    }

    fn carries_a_tag(&self, d: &Device) -> bool {
        self.devices
            .iter()
            .any(|s| s.starts_with("tag:") && d.tags.iter().any(|t| t == s))
    }
}

fn name_matches(s: &str, d: &Device) -> bool {
    let label = d.dns_name.split('.').next().unwrap_or("");
    s.eq_ignore_ascii_case(&d.hostname) || (!label.is_empty() && s.eq_ignore_ascii_case(label))
}

/// Which watch covers each device (the first watch that names it). A tag or a stable ID names a
/// device outright. A hostname that several devices share names only some of them: those that
/// carry one of the watch's tags, else those the watch already tracked (so a newcomer who
/// names a device `web-01` is not watched, nor alerted, as the real `web-01`), else all.
pub fn assign<'w>(
    watches: &'w [Watch],
    devices: &[&Device],
    tracked: Option<&KnownPresence>,
) -> BTreeMap<StableNodeId, &'w Watch> {
    let mut out: BTreeMap<StableNodeId, &Watch> = BTreeMap::new();
    for w in watches {
        let mut chosen: Vec<&Device> = Vec::new();
        for s in &w.devices {
            chosen.extend(
                devices
                    .iter()
                    .copied()
                    .filter(|d| (s.starts_with("tag:") || s == &d.id.0) && w.names(s, d)),
            );
            let namesakes: Vec<&Device> = devices
                .iter()
                .copied()
                .filter(|d| !s.starts_with("tag:") && s != &d.id.0 && name_matches(s, d))
                .collect();
            if namesakes.len() <= 1 {
                chosen.extend(namesakes);
                continue;
            }
            let tagged: Vec<&Device> = namesakes
                .iter()
                .copied()
                .filter(|d| w.carries_a_tag(d))
                .collect();
            let known: Vec<&Device> = namesakes
                .iter()
                .copied()
                .filter(|d| {
                    tracked
                        .and_then(|p| p.devices.get(&d.id))
                        .is_some_and(|t| t.watch == w.name)
                })
                .collect();
            chosen.extend(if !tagged.is_empty() {
                tagged
            } else if !known.is_empty() {
                known
            } else {
                namesakes
            });
        }
        for d in chosen {
            out.entry(d.id.clone()).or_insert(w);
        }
    }
    out
}

/// `Mon-Fri 08:00-18:00 Europe/Berlin`: days (a range or a comma list), a time range, a zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Monday first.
    pub days: [bool; 7],
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub tz: chrono_tz::Tz,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, times, tz] = parts.as_slice() else {
            return Err(format!(
                "`{s}` is not like \"Mon-Fri 08:00-18:00 Europe/Berlin\""
            ));
        };
        let day = |d: &str| {
            DAYS.iter()
                .position(|x| d.eq_ignore_ascii_case(x))
                .ok_or_else(|| format!("`{d}` is not a day (Mon … Sun)"))
        };
        let mut set = [false; 7];
        for item in days.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        set[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => set[day(item)?] = true,
            }
        }
        let (a, b) = times
            .split_once('-')
            .ok_or_else(|| format!("`{times}` is not a time range like 08:00-18:00"))?;
        let t = |x: &str| {
            NaiveTime::parse_from_str(x, "%H:%M")
                .map_err(|_| format!("`{x}` is not a time like 08:00"))
        };
        Ok(Schedule {
            days: set,
            start: t(a)?,
            end: t(b)?,
            tz: tz
                .parse()
                .map_err(|_| format!("`{tz}` is not a time zone like Europe/Berlin"))?,
        })
    }

    /// Whether `t` falls inside the schedule, in its own time zone (so DST moves with it).
    pub fn active(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz);
        let time = local.time();
        let day = local.weekday().num_days_from_monday() as usize;
        if self.start <= self.end {
            self.days[day] && time >= self.start && time < self.end
        } else {
            // Over midnight: the evening belongs to its day, the morning to the day before.
            (self.days[day] && time >= self.start) || (self.days[(day + 6) % 7] && time < self.end)
        }
    }
}

/// What the monitor remembers of one watched device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    pub online: bool,
    /// Since when it has been in that state (as far as the monitor saw).
    pub since: DateTime<Utc>,
    /// `device.offline` was sent for this outage.
    pub alerted: bool,
    /// The watch that covers it.
    pub watch: String,
    #[serde(default)]
    pub name: String,
}

/// Presence of every watched device as of the last pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPresence {
    pub devices: BTreeMap<StableNodeId, Tracked>,
    /// Since when this server has been off the control plane (`/status` Self `Online` false),
    /// while it is: peers' presence is then frozen where this server last saw it.
    #[serde(default)]
    pub self_offline_since: Option<DateTime<Utc>>,
    /// The one "is this server offline?" message was sent for this outage.
    #[serde(default)]
    pub self_offline_alerted: bool,
}
