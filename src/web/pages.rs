//! The pages. Each is a GET of a stable URL, server-rendered, readable without JavaScript (there
//! is none). maud escapes every value it inserts; URLs built from the tailnet's values are
//! percent-encoded first. Names are shown as the tailnet sent them, minus control and bidi
//! characters (`sanitize::line`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::viewer::{authorize, Viewer};
use super::Web;
use crate::model::event_kind::EventKind;
use crate::model::StableNodeId;
use crate::posture::catalog::CHECKS;
use crate::sanitize;
use crate::store::{EventFilter, Store, StoreError};

/// Events on a timeline page.
const PAGE: usize = 100;

/// Sent with every answer: no script, no inline style, no framing, no sniffing, no referrer.
pub(crate) const HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}\
nav{background:#1f2937;padding:8px 16px}nav a{color:#e5e7eb;margin-right:16px;text-decoration:none}\
main{padding:12px 16px}table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}\
th{background:#f3f4f6}.critical{color:#b00020;font-weight:bold}.warning{color:#b26a00}\
.info{color:#555}.fail{color:#b00020}.pass{color:#0a7a0a}.only{background:#fff4e5}\
form{margin:8px 0}input,select{margin-right:8px}footer{padding:8px 16px;color:#666;font-size:12px}\
code{font-size:12px}";

pub(crate) fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/timeline") }))
        .route("/timeline", get(timeline))
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
        .route("/events/{id}", get(event))
        .route("/access", get(access))
        .route("/posture", get(posture))
        .route("/guard", get(guard))
        .route("/health", get(health))
        .route("/style.css", get(style))
        .layer(middleware::from_fn_with_state(web.clone(), authorize))
        .with_state(web)
}

/// A tailnet value for the page: one line, control and bidi characters out.
fn t(v: &str, max: usize) -> String {
    sanitize::line(v, max)
}

/// The path of a device's page.
pub(crate) fn device_path(id: &str) -> String {
    format!("/devices/{}", utf8_percent_encode(id, NON_ALPHANUMERIC))
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn page(web: &Web, viewer: &Viewer, title: &str, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tailscale-monitor on " (t(&web.host, 60)) }
                link rel="stylesheet" href="/style.css";
            }
            body {
                nav {
                    a href="/timeline" { "Timeline" }
                    a href="/devices" { "Devices" }
                    a href="/access" { "Who can reach this server" }
                    a href="/posture" { "Posture" }
                    a href="/guard" { "Guard" }
                    a href="/health" { "Health" }
                }
                main { h1 { (title) } (body) }
                footer {
                    "Read-only view of " (t(&web.host, 60)) ". You are "
                    (t(&viewer.0.hostname, 60)) " (" (t(&viewer.0.login, 80)) ")."
                }
            }
        }
    };
    (HEADERS, axum::response::Html(doc.into_string())).into_response()
}

fn failed(e: StoreError) -> Response {
    tracing::warn!(error = %e, "web: cannot read the state database");
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        HEADERS,
        "503: the state database cannot be read; see the monitor's log\n",
    )
        .into_response()
}

/// Runs `f` on the view's store connection.
fn with_store<T>(
    web: &Web,
    f: impl FnOnce(&Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let store = web.store.lock().expect("not poisoned");
    f(&store)
}

async fn style() -> Response {
    (
        HEADERS,
        [("content-type", "text/css; charset=utf-8")],
        STYLE,
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct TimelineQuery {
    kind: Option<String>,
    severity: Option<String>,
    device: Option<String>,
    until: Option<String>,
    before: Option<i64>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn timeline_filter(q: &TimelineQuery) -> EventFilter {
    EventFilter {
        kind: nonempty(&q.kind).filter(|k| EventKind::parse(k).is_some()),
        severity: nonempty(&q.severity)
            .filter(|s| ["critical", "warning", "info"].contains(&s.as_str())),
        device: nonempty(&q.device),
        until: nonempty(&q.until).and_then(|u| {
            DateTime::parse_from_rfc3339(&u)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(&u, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(23, 59, 59))
                        .map(|d| d.and_utc())
                })
        }),
    }
}

async fn timeline(
    State(web): State<Arc<Web>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<TimelineQuery>,
) -> Response {
    let filter = timeline_filter(&q);
    let rows = match with_store(&web, |s| {
        let rows = s.events_page(&filter, q.before, PAGE)?;
        rows.into_iter()
            .map(|l| Ok((s.event_hash(l.id)?.unwrap_or_default(), l)))
            .collect::<Result<Vec<_>, StoreError>>()
    }) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let next = (rows.len() == PAGE)
        .then(|| rows.last().map(|(_, l)| l.id))
        .flatten();
    let more = |before: i64| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("kind", &filter.kind),
            ("severity", &filter.severity),
            ("device", &filter.device),
        ] {
            if let Some(v) = v {
                u.append_pair(k, v);
            }
        }
        u.append_pair("before", &before.to_string());
        format!("/timeline?{}", u.finish())
    };
    let body = html! {
        form method="get" action="/timeline" {
            select name="kind" {
                option value="" { "any kind" }
                @for k in EventKind::ALL {
                    option value=(k.as_str()) selected[filter.kind.as_deref() == Some(k.as_str())] { (k.as_str()) }
                }
            }
            select name="severity" {
                option value="" { "any severity" }
                @for s in ["critical", "warning", "info"] {
                    option value=(s) selected[filter.severity.as_deref() == Some(s)] { (s) }
                }
            }
            input type="text" name="device" placeholder="device stable ID" value=(filter.device.clone().unwrap_or_default());
            input type="text" name="until" placeholder="until (YYYY-MM-DD)" value=(q.until.clone().unwrap_or_default());
            button type="submit" { "Filter" }
        }
        table {
            tr { th { "When" } th { "Severity" } th { "Kind" } th { "What" } th { "Device" } th { "Anchor" } }
            @for (hash, l) in &rows {
                @let e = &l.event;
                tr id={"e" (l.id)} {
                    td { (when(e.at)) }
                    td class=(e.severity.as_str()) { (e.severity.as_str()) }
                    td { code { (e.kind.as_str()) } }
                    td { a href={"/events/" (l.id)} { (t(&e.summary, 300)) } }
                    td {
                        @if let Some(d) = &e.device {
                            a href=(device_path(&d.id.0)) { (t(d.display_name(), 60)) }
                        }
                    }
                    td { code title="audit --anchor" { (l.id) ":" (hash.get(..16).unwrap_or(hash)) } }
                }
            }
        }
        @if rows.is_empty() { p { "No event matches." } }
        @if let Some(b) = next { p { a href=(more(b)) { "Older events →" } } }
    };
    page(&web, &viewer, "Timeline", body)
}

async fn devices(State(web): State<Arc<Web>>, Extension(viewer): Extension<Viewer>) -> Response {
    let data = with_store(&web, |s| {
        Ok((
            s.devices()?,
            s.known()?,
            s.approvals_by_device()?,
            s.presence()?.unwrap_or_default(),
        ))
    });
    let (rows, known, approvals, presence) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let control = known.control.as_ref();
    let only_control = crate::store::control_only(control, &rows);
    let login = |d: &crate::model::Device| {
        known
            .users
            .get(&d.user_id)
            .map_or_else(|| d.user_id.to_string(), |u| u.user.login.clone())
    };
    let body = html! {
        p {
            (rows.iter().filter(|r| !r.known.removed).count()) " device(s) in this server's view"
            @if let Some(c) = control { ", " (c.devices.len()) " in the control plane's" }
            ". Rows marked " span class="only" { "like this" } " are in one view only."
        }
        table {
            tr {
                th { "Device" } th { "User" } th { "Addresses" } th { "OS" } th { "Node view" }
                th { "Control view" } th { "Guard" } th { "Presence" } th { "Key expiry" } th { "First seen" } th { "Last seen" }
            }
            @for r in &rows {
                @let d = &r.known.device;
                @let in_control = control.map(|c| c.devices.get(&d.id));
                tr class=[matches!(in_control, Some(None)).then_some("only")] {
                    td {
                        a href=(device_path(&d.id.0)) { (t(d.display_name(), 60)) }
                        @if d.is_self { " (this server)" }
                    }
                    td { (t(&login(d), 80)) }
                    td { (t(&d.addresses.join(", "), 120)) }
                    td { (t(&d.os, 30)) }
                    td { @if r.known.removed { "gone" } @else { "yes" } }
                    td {
                        @match in_control {
                            None => "not configured",
                            Some(None) => "not listed",
                            Some(Some(c)) => @if c.authorized { "yes" } @else { "waiting for approval" },
                        }
                    }
                    td {
                        @match approvals.get(&d.id) {
                            Some(a) => { "approved " (t(&a.at, 40)) " by " (t(&a.by, 40)) }
                            None => @if web.guard { "not approved" } @else { "-" },
                        }
                    }
                    td {
                        @if let Some(p) = presence.devices.get(&d.id) {
                            (if p.online { "online" } else { "offline" }) " since " (when(p.since))
                        } @else { "-" }
                    }
                    td { (d.key_expiry.map_or_else(|| "disabled".to_owned(), when)) }
                    td { (when(r.first_seen)) }
                    td { (when(r.last_seen)) }
                }
            }
            @for c in &only_control {
                tr class="only" {
                    td { (t(&c.hostname, 60)) }
                    td { (t(&c.user, 80)) }
                    td { (t(&c.addresses.join(", "), 120)) }
                    td { (t(&c.os, 30)) }
                    td { "not visible to this server" }
                    td { @if c.authorized { "yes" } @else { "waiting for approval" } }
                    td { "-" } td { "-" }
                    td { (c.key_expiry.map_or_else(|| "disabled".to_owned(), when)) }
                    td { (c.created.map_or_else(|| "-".to_owned(), when)) }
                    td { "-" }
                }
            }
        }
    };
    page(&web, &viewer, "Devices", body)
}

async fn device(
    State(web): State<Arc<Web>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let filter = EventFilter {
        device: Some(id.clone()),
        ..EventFilter::default()
    };
    let data = with_store(&web, |s| {
        let known = s.known()?;
        let approval = s.approvals_by_device()?.remove(&StableNodeId(id.clone()));
        let blocked: Vec<_> = s
            .blocked()?
            .into_iter()
            .filter(|b| b.device_id.as_deref() == Some(id.as_str()))
            .collect();
        Ok((
            known,
            approval,
            blocked,
            s.events_page(&filter, None, PAGE)?,
        ))
    });
    let (known, approval, blocked, events) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let kd = known.devices.get(&StableNodeId(id.clone()));
    let cd = known
        .control
        .as_ref()
        .and_then(|c| c.devices.get(&StableNodeId(id.clone())));
    if kd.is_none() && cd.is_none() && events.is_empty() {
        return (
            axum::http::StatusCode::NOT_FOUND,
            HEADERS,
            "404: no such device\n",
        )
            .into_response();
    }
    let title = kd
        .map(|k| t(k.device.display_name(), 60))
        .or_else(|| cd.map(|c| t(&c.hostname, 60)))
        .unwrap_or_else(|| t(&id, 60));
    let body = html! {
        h2 { "In this server's view" }
        @if let Some(k) = kd {
            @let d = &k.device;
            table {
                tr { th { "Stable ID" } td { code { (t(&d.id.0, 60)) } } }
                tr { th { "DNS name" } td { (t(&d.dns_name, 120)) } }
                tr { th { "Owner" } td { (t(&known.users.get(&d.user_id).map_or_else(|| d.user_id.to_string(), |u| u.user.login.clone()), 80)) } }
                tr { th { "Addresses" } td { (t(&d.addresses.join(", "), 200)) } }
                tr { th { "Routes" } td { (t(&d.routes.join(", "), 300)) } }
                tr { th { "Tags" } td { (t(&d.tags.join(", "), 200)) } }
                tr { th { "OS" } td { (t(&d.os, 40)) } }
                tr { th { "Node key" } td { code { (t(&d.node_key.0, 90)) } } }
                tr { th { "Key expiry" } td { (d.key_expiry.map_or_else(|| "disabled".to_owned(), when)) } }
                tr { th { "State" } td { @if k.removed { "gone from the tailnet" } @else { "present" } } }
            }
        } @else { p { "Not in this server's view." } }
        h2 { "In the control plane's view" }
        @if let Some(c) = cd {
            p { (t(&c.name, 120)) ", " (t(&c.user, 80)) ", "
                @if c.authorized { "authorized" } @else { "waiting for approval" } }
        } @else { p { "Not listed (or no [control] configured)." } }
        h2 { "Guard" }
        @if let Some(a) = &approval {
            p { "Approved " (t(&a.at, 40)) " by " (t(&a.by, 60)) " with node key " code { (t(&a.node_key, 90)) } "." }
        } @else { p { @if web.guard { "Not approved: the guard drops it." } @else { "The guard is off." } } }
        @if !blocked.is_empty() {
            table {
                tr { th { "Source" } th { "Since" } th { "Packets" } }
                @for b in &blocked {
                    tr { td { (t(&b.key, 60)) } td { (when(b.first)) } td { (b.packets) } }
                }
            }
        }
        h2 { "Its events" }
        table {
            tr { th { "When" } th { "Kind" } th { "What" } }
            @for l in &events {
                tr { td { a href={"/timeline?before=" (l.id + 1) "#e" (l.id)} { (when(l.event.at)) } }
                     td { code { (l.event.kind.as_str()) } } td { (t(&l.event.summary, 300)) } }
            }
        }
    };
    page(&web, &viewer, &title, body)
}

async fn event(
    State(web): State<Arc<Web>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    let found = match with_store(&web, |s| {
        Ok(match s.event_by_id(id)? {
            Some(l) => Some((s.event_hash(id)?.unwrap_or_default(), l)),
            None => None,
        })
    }) {
        Ok(f) => f,
        Err(e) => return failed(e),
    };
    let Some((hash, l)) = found else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            HEADERS,
            "404: no such event\n",
        )
            .into_response();
    };
    let body = html! {
        (super::event::event(&l.event))
        p { "Log anchor: " code { (l.id) ":" (hash) } " (`tailscale-monitor audit --anchor " (l.id) ":" (hash) "`)" }
        @if let Some(d) = &l.event.device { p { a href=(device_path(&d.id.0)) { "The device's page" } } }
    };
    page(&web, &viewer, &format!("Event {id}"), body)
}

async fn access(State(web): State<Arc<Web>>, Extension(viewer): Extension<Viewer>) -> Response {
    let a = match with_store(&web, Store::access) {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let body = html! {
        @match &a {
            None => p { "Not known yet: the monitor has not read this server's packet filter." },
            Some(a) => {
                @let rows = a.rows();
                p { (rows.len()) " source(s) may reach this server (only rules that target it are visible here)." }
                table {
                    tr { th { "Source" } th { "Who" } th { "Ports" } th { "SSH as" } }
                    @for r in &rows {
                        tr { td { (t(&r.source, 60)) } td { (t(&r.who, 120)) } td { (t(&r.ports, 200)) } td { (t(&r.ssh, 200)) } }
                    }
                }
            }
        }
    };
    page(&web, &viewer, "Who can reach this server", body)
}

async fn posture(State(web): State<Arc<Web>>, Extension(viewer): Extension<Viewer>) -> Response {
    let history_filter = |k: EventKind| EventFilter {
        kind: Some(k.as_str().to_owned()),
        ..EventFilter::default()
    };
    let data = with_store(&web, |s| {
        let known = s.known()?;
        let mut h = s.events_page(&history_filter(EventKind::PostureDegraded), None, 50)?;
        h.extend(s.events_page(&history_filter(EventKind::PostureImproved), None, 50)?);
        h.sort_by_key(|l| std::cmp::Reverse(l.id));
        Ok((known, h))
    });
    let (known, history) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let status = known.control.as_ref().map(|c| &c.posture);
    let failing: BTreeMap<&str, &crate::model::posture::Finding> = known
        .control
        .as_ref()
        .map(|c| {
            c.posture_failing
                .iter()
                .map(|f| (f.id.as_str(), f))
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        @if status.is_none() { p { "The posture is evaluated with each read of the control plane ([control])." } }
        table {
            tr { th { "Check" } th { "Area" } th { "Severity" } th { "Status" } th { "Title" } th { "Evidence and fix" } }
            @for c in CHECKS {
                @let st = status.and_then(|s| s.get(c.id)).map_or("not evaluated", |s| s.as_str());
                tr {
                    td { code { (c.id) } } td { (c.area) } td class=(c.severity.as_str()) { (c.severity.as_str()) }
                    td class=(st) { (st) } td { (c.title) }
                    td { @if let Some(f) = failing.get(c.id) { (t(&f.evidence, 300)) br; "Fix: " (t(&f.fix, 300)) } }
                }
            }
        }
        h2 { "History" }
        table {
            tr { th { "When" } th { "What" } }
            @for l in &history { tr { td { (when(l.event.at)) } td { (t(&l.event.summary, 300)) } } }
        }
    };
    page(&web, &viewer, "Posture", body)
}

async fn guard(State(web): State<Arc<Web>>, Extension(viewer): Extension<Viewer>) -> Response {
    let data = with_store(&web, |s| {
        Ok((s.guard_state()?, s.approvals()?, s.blocked()?, s.known()?))
    });
    let (state, approvals, blocked, known) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let name = |id: &StableNodeId| {
        known
            .devices
            .get(id)
            .map_or_else(|| id.0.clone(), |k| k.device.display_name().to_owned())
    };
    let body = html! {
        table {
            tr { th { "Mode" } td { @if web.guard { "enforce" } @else { "off" } } }
            tr { th { "In force" } td {
                @if let Some(why) = &state.unenforced { span class="fail" { "no: " (t(why, 100)) } }
                @else if state.applied.is_some() { span class="pass" { "yes" } }
                @else { "no table applied" }
            } }
            tr { th { "Initialized" } td { (state.initialized.as_deref().map_or("no (`guard init`)".to_owned(), |i| t(i, 60))) } }
            @if let Some(by) = &state.off { tr { th { "Turned off" } td { "by " (t(by, 60)) } } }
            tr { th { "Open doors" } td {
                @if state.doors.is_empty() { "none" }
                @else { span class="fail" { "NOT GUARDED: " (t(&state.doors.join(", "), 200)) } " (see `tailscale-monitor guard status`)" }
            } }
        }
        h2 { "Approved (" (approvals.len()) ")" }
        table {
            tr { th { "Device" } th { "Node key" } th { "Routes" } th { "When" } th { "By" } }
            @for a in &approvals {
                tr {
                    td { a href=(device_path(&a.device.0)) { (t(&name(&a.device), 60)) } }
                    td { code { (t(&a.node_key, 90)) } } td { (t(&a.routes.join(", "), 200)) }
                    td { (t(&a.at, 40)) } td { (t(&a.by, 60)) }
                }
            }
        }
        h2 { "Blocked (" (blocked.len()) ")" }
        table {
            tr { th { "Source" } th { "Device" } th { "Since" } th { "Packets" } }
            @for b in &blocked {
                tr {
                    td { (t(&b.key, 60)) }
                    td { @if let Some(d) = &b.device_id { a href=(device_path(d)) { (t(&name(&StableNodeId(d.clone())), 60)) } } @else { "no device" } }
                    td { (when(b.first)) } td { (b.packets) }
                }
            }
        }
    };
    page(&web, &viewer, "Guard", body)
}

async fn health(State(web): State<Arc<Web>>, Extension(viewer): Extension<Viewer>) -> Response {
    let data = with_store(&web, |s| Ok((s.health()?, s.outbox_depth()?, s.known()?)));
    let (h, outbox, known) = match data {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let body = html! {
        table {
            tr { th { "tailscaled" } td {
                @if let Some(since) = h.down_since { span class="fail" { "unreachable since " (when(since)) ": " (t(&h.last_error, 300)) } }
                @else { span class="pass" { "read" } @if let Some(ok) = h.last_ok { " at " (when(ok)) } }
            } }
            @for part in crate::model::access::Part::ALL {
                tr { th { (part.what()) } td {
                    @if let Some(p) = h.parts.get(&part) { span class="fail" { "not visible since " (when(p.since)) ": " (t(&p.error, 300)) } br; "Fix: " (t(&p.fix, 300)) }
                    @else { span class="pass" { "visible" } }
                } }
            }
            tr { th { "Control plane" } td {
                @match &known.control {
                    None => "not configured or never read",
                    Some(c) => @if let Some(since) = c.down_since { span class="fail" { "unreadable since " (when(since)) ": " (t(&c.last_error, 300)) } } @else { span class="pass" { "read" } },
                }
            } }
            tr { th { "Outbox" } td {
                (outbox.pending) " pending, " (outbox.failing) " failing"
                @if let Some(e) = &outbox.last_error { br; "last error: " (t(e, 300)) }
            } }
        }
    };
    page(&web, &viewer, "Health", body)
}
