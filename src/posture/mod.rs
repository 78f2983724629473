//! Posture checks: the hardening advice, evaluated from the control view, this node's view and
//! this server's facts. Pure: values in, a [`Report`] out; [`drift`] turns two reports into
//! `posture.degraded` / `posture.improved` events.
//!
//! A check whose data could not be read is `unknown` with the reason (a missing scope, no
//! `[control]`), never `pass`; a feature the control plane lacks (Headscale) is `n/a`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::control::ControlSnapshot;
use crate::model::posture::{Finding, KnownPosture, Report, ServerFacts, Status};
use crate::model::{Event, EventKind, Snapshot};

pub(crate) mod catalog;
mod devices;
mod keys;
mod policy;
mod server;
mod tailnet;
#[cfg(test)]
mod tests;

/// Everything the checks read.
pub struct Inputs<'a> {
    /// The control view (`None`: not configured or not readable; `control_note` says which).
    pub control: Option<&'a ControlSnapshot>,
    pub control_note: &'a str,
    /// This node's view from the LocalAPI (`None`: tailscaled could not be read).
    pub node: Option<&'a Snapshot>,
    pub server: Option<&'a ServerFacts>,
    pub now: DateTime<Utc>,
}

/// Auth and API keys living longer than this are flagged.
const LONG_LIVED_DAYS: i64 = 90;
/// Devices not seen for this long are flagged.
const STALE_DAYS: i64 = 60;
/// `devicesKeyDurationDays` above this is flagged.
const KEY_DURATION_DAYS: i64 = 90;
/// The webhook events whose absence is flagged (all in `categoryTailnetManagement`).
const CRITICAL_WEBHOOK_EVENTS: [&str; 5] = [
    "nodeCreated",
    "nodeNeedsApproval",
    "policyUpdate",
    "userCreated",
    "userNeedsApproval",
];

/// The findings so far, and the area the checks being added belong to.
struct Out {
    findings: Vec<Finding>,
    area: &'static str,
    /// The control plane is Headscale: its fixes where they differ.
    headscale: bool,
}

/// Pass when the condition holds, else fail.
fn pass_if(ok: bool) -> Status {
    if ok {
        Status::Pass
    } else {
        Status::Fail
    }
}

impl Out {
    /// The fix of check `id` for this control plane, from the catalog.
    fn fix(&self, id: &str) -> &'static str {
        let s = catalog::spec(id);
        match s.fix_headscale {
            Some(f) if self.headscale => f,
            _ => s.fix,
        }
    }

    /// A pass/fail finding of check `id`, with its fix: `pass` is the evidence when `ok` holds,
    /// `fail` when not.
    fn judge(&mut self, id: &str, ok: bool, pass: impl Into<String>, fail: impl Into<String>) {
        let evidence = if ok { pass.into() } else { fail.into() };
        let fix = self.fix(id);
        self.add(id, pass_if(ok), evidence, fix);
    }

    /// A check Headscale has no equivalent of.
    fn not_on_headscale(&mut self, id: &str) {
        self.add(id, Status::NotAvailable, "not available on Headscale", "");
    }

    /// A finding of check `id`: its title, area and severity come from the catalog.
    fn add(&mut self, id: &str, status: Status, evidence: impl Into<String>, fix: &str) {
        let s = catalog::spec(id);
        debug_assert!(
            s.area == self.area || s.area == "manual",
            "{id} is a {} check, added in {}",
            s.area,
            self.area
        );
        self.findings.push(Finding {
            id: s.id.into(),
            area: s.area.into(),
            title: s.title.into(),
            severity: s.severity,
            status,
            evidence: evidence.into(),
            fix: fix.into(),
        });
    }
}

fn list(names: &[String]) -> String {
    const MAX: usize = 10;
    let mut s = names
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX {
        s += &format!(" and {} more", names.len() - MAX);
    }
    s
}

/// Runs every check.
pub fn evaluate(i: &Inputs) -> Report {
    let mut o = Out {
        findings: Vec::new(),
        area: "tailnet",
        headscale: is_headscale(i),
    };
    tailnet::tailnet(&mut o, i);
    o.findings.sort_by(|a, b| a.id.cmp(&b.id));
    for (area, checks) in [
        ("policy", policy::policy as fn(&mut Out, &Inputs)),
        ("devices", devices::devices),
        ("keys", keys::keys),
        ("server", server::server),
        ("server", server::visibility),
        ("server", server::guard),
        ("server", server::remote_config),
    ] {
        o.area = area;
        checks(&mut o, i);
    }
    o.area = "manual";
    let fix = o.fix("MN-01");
    o.add(
        "MN-01",
        Status::Manual,
        "no API exposes it: check your identity provider",
        fix,
    );
    Report {
        findings: o.findings,
    }
}

fn is_headscale(i: &Inputs) -> bool {
    i.control.is_some_and(|c| c.kind == "headscale")
}

fn unreadable(i: &Inputs) -> String {
    format!("control view not read: {}", i.control_note)
}

/// A part of the control view check `id` reads: `Some(data)`, or `None` once the finding that
/// says why there is none is added (n/a on Headscale, the control view unread, `missing` refused).
fn readable<'a, T>(
    o: &mut Out,
    i: &Inputs,
    (id, fix): (&str, &str),
    not_on_headscale: bool,
    part: Option<&'a Option<T>>,
    missing: &str,
) -> Option<&'a T> {
    let (status, evidence) = match part {
        _ if not_on_headscale && is_headscale(i) => (
            Status::NotAvailable,
            "not available on Headscale".to_owned(),
        ),
        None => (Status::Unknown, unreadable(i)),
        Some(None) => (Status::Unknown, format!("unknown ({missing})")),
        Some(Some(data)) => return Some(data),
    };
    o.add(id, status, evidence, fix);
    None
}

/// A boolean or string setting: `Some(value)` if the settings could be read and carry it.
fn setting<'a>(i: &'a Inputs, key: &str) -> Result<&'a Value, String> {
    let Some(c) = i.control else {
        return Err(unreadable(i));
    };
    let Some(s) = &c.settings else {
        return Err("unknown (missing scope feature_settings:read: /settings was refused)".into());
    };
    match s.get(key) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(format!(
            "unknown (settings.{key} is null or absent: missing scope)"
        )),
    }
}

/// `posture.degraded` for each check that went from pass to fail, `posture.improved` for fail to
/// pass. The first evaluation (nothing known) says nothing: the baseline carries the summary.
pub fn drift(prev: Option<&KnownPosture>, cur: &Report, now: DateTime<Utc>) -> Vec<Event> {
    let Some(prev) = prev.filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in &cur.findings {
        let (kind, verb) = match (prev.get(&f.id), f.status) {
            (Some(Status::Pass), Status::Fail) => (EventKind::PostureDegraded, "now fails"),
            (Some(Status::Fail), Status::Pass) => (EventKind::PostureImproved, "passes again"),
            _ => continue,
        };
        let mut e = Event::new(kind, now, format!("Posture {} {verb}: {}", f.id, f.title));
        if kind == EventKind::PostureDegraded {
            e.severity = f.severity;
        }
        e.detail = format!("{} Fix: {}", f.evidence, f.fix);
        out.push(e);
    }
    out
}

/// What to store of a report.
pub fn known(r: &Report) -> KnownPosture {
    r.findings
        .iter()
        .map(|f| (f.id.clone(), f.status))
        .collect()
}
