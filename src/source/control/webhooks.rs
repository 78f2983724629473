//! `[webhooks]`: a receiver for Tailscale's outgoing webhooks (`nodeCreated`,
//! `nodeNeedsApproval`, `policyUpdate`, `userCreated`, …), used only as a trigger: a verified
//! request makes `run` read the control plane at once, so an approval request is mailed within
//! seconds instead of at the next poll. The facts still come from the API, never from the body.
//!
//! Verification follows tailscale's `docs/webhooks/example.go`: the `Tailscale-Webhook-Signature`
//! header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; each `v1` is HMAC-SHA256 with the secret
//! (as is, `tskey-webhook-` prefix included) over `t + "." + body`; any matching `v1` accepts,
//! compared in constant time. Older than five minutes (or more than five ahead) is refused, and
//! so is a signature already accepted once (a replay). Every refusal is a 401 and a log line.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Secret;

/// Bodies larger than this are refused (Tailscale sends small JSON arrays).
pub const MAX_BODY: usize = 256 * 1024;
/// How far `t` may be from now.
const WINDOW_SECS: i64 = 300;

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    NoSignature,
    Malformed,
    Expired,
    BadSignature,
    Replayed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::NoSignature => "no Tailscale-Webhook-Signature header",
            Refused::Malformed => "malformed signature header",
            Refused::Expired => "timestamp outside the 5-minute window",
            Refused::BadSignature => "signature does not match the secret",
            Refused::Replayed => "signature already used (replay)",
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks one request's signature header against the body; returns the timestamp and the
/// matching `v1` (for replay detection).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: i64,
) -> Result<(i64, String), Refused> {
    let header = header
        .filter(|h| !h.is_empty())
        .ok_or(Refused::NoSignature)?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(Refused::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| Refused::Malformed)?),
            "v1" => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or(Refused::Malformed)?;
    if sigs.is_empty() {
        return Err(Refused::Malformed);
    }
    if (now - t).abs() > WINDOW_SECS {
        return Err(Refused::Expired);
    }
    for s in sigs {
        let Some(raw) = unhex(&s) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&raw).is_ok() {
            return Ok((t, s));
        }
    }
    Err(Refused::BadSignature)
}

/// Signatures accepted in the last window, to refuse replays.
#[derive(Default)]
struct Seen(VecDeque<(i64, String)>);

impl Seen {
    fn check_and_add(&mut self, t: i64, sig: String, now: i64) -> bool {
        self.0.retain(|(at, _)| now - at <= 2 * WINDOW_SECS);
        if self.0.iter().any(|(_, s)| *s == sig) {
            return false;
        }
        self.0.push_back((t, sig));
        true
    }
}

/// Binds `addr` (a taken port is a startup error) and logs the address bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("[webhooks] listen {addr}: {e}"))?;
    let addr = l.local_addr().unwrap_or(addr);
    info!(%addr, "webhooks listening");
    Ok(l)
}

/// Serves until the task is dropped; sends `()` on `trigger` for each verified request.
pub async fn serve(listener: tokio::net::TcpListener, secret: Secret, trigger: mpsc::Sender<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let secret = Arc::new(secret);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        let (seen, secret, trigger) = (seen.clone(), secret.clone(), trigger.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(req, peer, seen.clone(), secret.clone(), trigger.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(code: u16, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("Content-Type", "text/plain")
        .body(Full::new(Bytes::from(format!("{text}\n"))))
        .expect("static response")
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    secret: Arc<Secret>,
    trigger: mpsc::Sender<()>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != hyper::Method::POST {
        return Ok(reply(405, "POST only"));
    }
    let header = req
        .headers()
        .get("Tailscale-Webhook-Signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            warn!(%peer, "webhook refused: body larger than {MAX_BODY} bytes");
            return Ok(reply(413, "body too large"));
        }
    };
    let now = chrono::Utc::now().timestamp();
    let verdict =
        verify(header.as_deref(), &body, secret.expose().as_bytes(), now).and_then(|(t, sig)| {
            if seen.lock().expect("seen lock").check_and_add(t, sig, now) {
                Ok(())
            } else {
                Err(Refused::Replayed)
            }
        });
    if let Err(why) = verdict {
        warn!(%peer, reason = %why, "webhook refused");
        return Ok(reply(401, "unauthorized"));
    }
    // Only for the log: the facts come from the API.
    let kinds: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
        .map(|v| {
            v.iter()
                .filter_map(|e| e["type"].as_str().map(|s| crate::sanitize::line(s, 40)))
                .collect()
        })
        .unwrap_or_default();
    info!(%peer, events = %kinds.join(","), "webhook verified: reading the control plane");
    let _ = trigger.try_send(());
    Ok(reply(200, "ok"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn signatures() {
        let secret = b"tskey-webhook-abc";
        let body = br#"[{"type":"nodeNeedsApproval"}]"#;
        let now = 1_800_000_000;
        let good = sign(secret, now, body);
        let h = format!("t={now},v1={good}");
        assert!(verify(Some(&h), body, secret, now).is_ok());
        // Several v1 (a rotation): any may match; unknown keys are ignored.
        let h2 = format!("t={now},v1=00ff,v0=zz,v1={good}");
        assert!(verify(Some(&h2), body, secret, now + 10).is_ok());
        assert_eq!(verify(None, body, secret, now), Err(Refused::NoSignature));
        assert_eq!(
            verify(Some(&h), body, b"other", now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(Some(&h), b"[]", secret, now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(Some(&h), body, secret, now + 301),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(Some(&h), body, secret, now - 301),
            Err(Refused::Expired)
        );
        for bad in ["garbage", "t=x,v1=00", &format!("t={now}"), "v1=00"] {
            assert_eq!(
                verify(Some(bad), body, secret, now),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
        let mut seen = Seen::default();
        assert!(seen.check_and_add(now, good.clone(), now));
        assert!(!seen.check_and_add(now, good, now + 1), "replay");
    }
}
