//! Who may look. Every request passes here before any page is built:
//!
//! 1. the connection: root on the unix socket (tailscaled), or the bearer token on loopback TCP;
//! 2. the viewer: the one address tailscaled puts in `X-Forwarded-For`, named by LocalAPI
//!    `whois` (stable ID and node key), never by `Tailscale-User-Login` or any header the control
//!    plane fills;
//! 3. the decision: with the guard enforcing, its approval of that stable ID *with that node key*;
//!    with the guard off, `[web] viewers`.
//!
//! A refusal is a 403 and a critical `web.refused` (once per party and hour); a viewer's first
//! page is a `web.new_viewer`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tracing::{info, warn};

use super::listen::Peer;
use super::Web;
use crate::config::WebListen;
use crate::model::{Event, EventKind, WhoIs};
use crate::sanitize;

/// How often one refused party is alerted again.
const REFUSED_EVERY: Duration = Duration::from_secs(3600);

/// The device looking, as tailscaled named it.
#[derive(Debug, Clone)]
pub(crate) struct Viewer(pub WhoIs);

/// Why a request is refused: `party` keys the rate limit, `why` goes into the event.
struct Refusal {
    party: String,
    why: String,
    who: Option<WhoIs>,
}

/// The viewer's address: the one value of `X-Forwarded-For` (tailscaled replaces any the client
/// sent), an IP address.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let mut values = headers.get_all("x-forwarded-for").iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = v.to_str().ok()?.trim();
    if text.contains(',') {
        return None;
    }
    text.parse().ok()
}

fn token_ok(web: &Web, headers: &HeaderMap) -> bool {
    let WebListen::Tcp(_, token) = &web.cfg.listen else {
        return true;
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let want = token.expose().trim();
    // Constant time in the token's content.
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn decide(web: &Web, peer: &Peer, headers: &HeaderMap) -> Result<Viewer, Refusal> {
    match peer {
        Peer::Unix { uid } if *uid != 0 => {
            return Err(Refusal {
                party: format!("uid:{uid}"),
                why: format!(
                    "local user uid {uid} connected to the web view's socket (only tailscaled, as root, may)"
                ),
                who: None,
            })
        }
        Peer::Tcp(a) if !token_ok(web, headers) => {
            return Err(Refusal {
                party: format!("tcp:{}", a.ip()),
                why: format!("a request to the web view on {a} without the right token"),
                who: None,
            })
        }
        _ => {}
    }
    let Some(ip) = forwarded_for(headers) else {
        return Err(Refusal {
            party: "no-viewer".into(),
            why: "a request to the web view without tailscaled's X-Forwarded-For: not through `tailscale serve`".into(),
            who: None,
        });
    };
    let who = web.api.whois(&ip.to_string()).await.map_err(|e| Refusal {
        party: format!("ip:{ip}"),
        why: format!(
            "tailscaled does not know {ip}: {}",
            sanitize::line(&e.0, 200)
        ),
        who: None,
    })?;
    let allowed = if web.guard {
        let store = web.store.lock().expect("not poisoned");
        store
            .approvals_by_device()
            .map(|a| {
                a.get(&crate::model::StableNodeId(who.stable_id.clone()))
                    .is_some_and(|a| !who.node_key.is_empty() && a.node_key == who.node_key)
            })
            .unwrap_or(false)
    } else {
        web.cfg.viewers.contains(&who.stable_id)
    };
    if allowed {
        Ok(Viewer(who))
    } else {
        Err(Refusal {
            party: format!("node:{}", who.stable_id),
            why: if web.guard {
                format!(
                    "{} is not approved in the guard with this node key",
                    who.label()
                )
            } else {
                format!("{} is not in [web] viewers", who.label())
            },
            who: Some(who),
        })
    }
}

fn record(web: &Web, kind: EventKind, summary: String, who: Option<&WhoIs>, detail: String) {
    let mut e = Event::new(kind, Utc::now(), summary);
    e.detail = detail;
    if let Some(w) = who {
        e.user = Some(crate::model::User {
            id: crate::model::UserId(0),
            login: w.login.clone(),
            display_name: w.display_name.clone(),
        });
    }
    let mut store = web.store.lock().expect("not poisoned");
    if let Err(err) = store.record_event(&web.routes, e) {
        warn!(error = %err, "web: cannot record the event");
    }
}

/// The middleware every page sits behind.
pub(crate) async fn authorize(
    State(web): State<Arc<Web>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or(Peer::Unix { uid: u32::MAX });
    match decide(&web, &peer, req.headers()).await {
        Ok(viewer) => {
            let key = format!("{} {}", viewer.0.stable_id, viewer.0.node_key);
            let new = web
                .store
                .lock()
                .expect("not poisoned")
                .note_web_viewer(&key)
                .unwrap_or(false);
            if new {
                info!(viewer = %sanitize::line(&viewer.0.label(), 200), "web: a new viewer");
                record(
                    &web,
                    EventKind::WebNewViewer,
                    format!(
                        "{} looked at the web view for the first time",
                        sanitize::line(&viewer.0.hostname, 60)
                    ),
                    Some(&viewer.0),
                    viewer.0.to_string(),
                );
            }
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        Err(r) => {
            let now = Instant::now();
            let alert = {
                let mut m = web.refused.lock().expect("not poisoned");
                m.retain(|_, t| now.duration_since(*t) < REFUSED_EVERY);
                m.insert(r.party.clone(), now).is_none()
            };
            warn!(why = %sanitize::line(&r.why, 300), "web: refused");
            if alert {
                record(
                    &web,
                    EventKind::WebRefused,
                    "Someone was refused the web view".into(),
                    r.who.as_ref(),
                    r.why.clone(),
                );
            }
            (
                StatusCode::FORBIDDEN,
                super::pages::HEADERS,
                "403 forbidden: this device may not look here\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_forwarded_address_counts() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(&h), None);
        h.insert("x-forwarded-for", "100.64.0.2".parse().unwrap());
        assert_eq!(forwarded_for(&h), Some("100.64.0.2".parse().unwrap()));
        h.insert("x-forwarded-for", "100.64.0.2, 1.2.3.4".parse().unwrap());
        assert_eq!(forwarded_for(&h), None, "a list: not what tailscaled sends");
        h.insert("x-forwarded-for", "owner@example.com".parse().unwrap());
        assert_eq!(forwarded_for(&h), None);
    }
}
