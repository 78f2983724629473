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
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Secret;

/// Bodies larger than this are refused (Tailscale sends small JSON arrays).
pub const MAX_BODY: usize = 256 * 1024;
/// How far `t` may be from now.
const WINDOW_SECS: i64 = 300;
/// How long a client has to send its body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// The most `v1` values a header may carry (Tailscale sends one, two while a secret rotates).
const MAX_SIGNATURES: usize = 4;
/// The longest signature header read.
const MAX_HEADER: usize = 1024;

/// A parsed `Tailscale-Webhook-Signature` header: its time and its candidate MACs.
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    pub t: i64,
    /// Each `v1` that is exactly 64 hex digits, decoded (others cannot match and are skipped).
    macs: Vec<[u8; 32]>,
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses the header, before the body is read: nothing here costs more than a scan of at most
/// [`MAX_HEADER`] bytes.
pub fn parse_header(header: Option<&str>, now: i64) -> Result<Signature, Refused> {
    let header = header
        .filter(|h| !h.is_empty())
        .ok_or(Refused::NoSignature)?;
    if header.len() > MAX_HEADER {
        return Err(Refused::Malformed);
    }
    let mut t = None;
    let mut macs = Vec::new();
    let mut count = 0;
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(Refused::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| Refused::Malformed)?),
            "v1" => {
                count += 1;
                if count > MAX_SIGNATURES {
                    return Err(Refused::Malformed);
                }
                macs.extend(unhex32(v));
            }
            _ => {}
        }
    }
    let t = t.ok_or(Refused::Malformed)?;
    if count == 0 {
        return Err(Refused::Malformed);
    }
    // Checked: a `t` near i64::MIN must not overflow the subtraction.
    if now
        .checked_sub(t)
        .is_none_or(|d| d.unsigned_abs() > WINDOW_SECS as u64)
    {
        return Err(Refused::Expired);
    }
    if macs.is_empty() {
        return Err(Refused::BadSignature);
    }
    Ok(Signature { t, macs })
}

/// Checks the body against a parsed header: one HMAC, whatever the header holds, compared in
/// constant time with each candidate. Returns the timestamp and the matching MAC in lowercase hex
/// (the replay key: `ABCD…` and `abcd…` are one signature).
pub fn verify_body(sig: &Signature, body: &[u8], secret: &[u8]) -> Result<(i64, String), Refused> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(sig.t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize();
    for m in &sig.macs {
        if hmac::digest::CtOutput::<Hmac<Sha256>>::new((*m).into()) == expected {
            return Ok((sig.t, hex::encode(m)));
        }
    }
    Err(Refused::BadSignature)
}

/// Checks one request's signature header against the body; returns the timestamp and the
/// matching `v1` (for replay detection). The receiver runs the two halves apart (the header
/// before the body is read); tests use both at once.
#[cfg(test)]
pub(crate) fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: i64,
) -> Result<(i64, String), Refused> {
    verify_body(&parse_header(header, now)?, body, secret)
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

/// Requests refused since the process started (on `/metrics`).
pub static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// At most one log line per this long about refused requests (F16: a stranger who sends
/// thousands cannot push the lines that matter out of journald's rate limit).
const REFUSED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
static REFUSED_LOG: Mutex<Option<(std::time::Instant, u64)>> = Mutex::new(None);

/// Counts a refused request, and logs it unless a line was written in the last
/// [`REFUSED_LOG_EVERY`]; the next line says how many were refused in between.
fn refused(peer: SocketAddr, why: &dyn std::fmt::Display) {
    let total = REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let mut last = REFUSED_LOG.lock().expect("refused log lock");
    let now = std::time::Instant::now();
    match *last {
        Some((at, logged)) if now.duration_since(at) < REFUSED_LOG_EVERY => {
            let _ = logged;
        }
        Some((_, logged)) => {
            warn!(%peer, reason = %why, since_last_line = total - logged, total, "webhook refused (counted on /metrics: tailscale_monitor_webhooks_refused_total)");
            *last = Some((now, total));
        }
        None => {
            warn!(%peer, reason = %why, total, "webhook refused (further refusals are logged at most once a minute, with their count)");
            *last = Some((now, total));
        }
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
    crate::listener::serve(listener, "webhooks", move |req, peer| {
        handle(req, peer, seen.clone(), secret.clone(), trigger.clone())
    })
    .await
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
    let now = chrono::Utc::now().timestamp();
    // The header is judged before the body is read: an unsigned request costs no read and no HMAC.
    let sig = req
        .headers()
        .get("Tailscale-Webhook-Signature")
        .map(|v| v.to_str().map_err(|_| Refused::Malformed))
        .transpose()
        .and_then(|h| parse_header(h, now));
    let sig = match sig {
        Ok(s) => s,
        Err(why) => {
            refused(peer, &why);
            return Ok(reply(401, "unauthorized"));
        }
    };
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            refused(peer, &format!("body larger than {MAX_BODY} bytes"));
            return Ok(reply(413, "body too large"));
        }
        Err(_) => {
            refused(peer, &format!("body not complete within {BODY_TIMEOUT:?}"));
            return Ok(reply(408, "body too slow"));
        }
    };
    let verdict = verify_body(&sig, &body, secret.expose().as_bytes()).and_then(|(t, sig)| {
        if seen.lock().expect("seen lock").check_and_add(t, sig, now) {
            Ok(())
        } else {
            Err(Refused::Replayed)
        }
    });
    if let Err(why) = verdict {
        refused(peer, &why);
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

    /// Issue 20: any signature header and body: no panic, bounded time, never accepted.
    #[test]
    fn fuzz_webhook_requests() {
        let now = 1_800_000_000;
        let good = sign(b"tskey-webhook-abc", now, b"[]");
        let header = format!("t={now},v1={good}");
        crate::fuzz::check(
            "webhook header",
            &[header.as_bytes(), b"t=1,v1=00,v1=zz"],
            |b| {
                let h = String::from_utf8_lossy(b);
                let r = verify(Some(&h), b"[{}]", b"tskey-webhook-abc", now);
                assert!(r.is_err() || h == header, "{h}");
            },
        );
    }

    /// F1: no header, however long and however many `v1=` it holds, costs more than one HMAC.
    #[test]
    fn a_header_full_of_candidates_costs_one_hmac_at_most() {
        let secret = b"tskey-webhook-abc";
        let body = vec![b' '; MAX_BODY];
        let now = 1_800_000_000;
        for header in [
            format!("t={now},") + &vec!["v1="; 10_000].join(","),
            format!("t={now},") + &vec![format!("v1={}", "0".repeat(64)); 10_000].join(","),
        ] {
            let start = std::time::Instant::now();
            assert!(verify(Some(&header), &body, secret, now).is_err());
            assert!(
                start.elapsed() < std::time::Duration::from_millis(50),
                "{:?} for a header of {} bytes",
                start.elapsed(),
                header.len()
            );
        }
        assert_eq!(
            parse_header(Some(&(format!("t={now},") + &["v1="; 5].join(","))), now),
            Err(Refused::Malformed),
            "more than {MAX_SIGNATURES} candidates"
        );
        let four = format!("t={now},") + &vec![format!("v1={}", "0".repeat(64)); 4].join(",");
        let sig = parse_header(Some(&four), now).unwrap();
        assert_eq!(sig.macs.len(), 4, "four candidates, compared with one MAC");
        assert_eq!(verify_body(&sig, &body, secret), Err(Refused::BadSignature));
    }

    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
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
        // The same MAC in capitals is the same signature: one replay key.
        let upper = format!("t={now},v1={}", good.to_uppercase());
        assert_eq!(verify(Some(&upper), body, secret, now).unwrap().1, good);
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
        // No v1 that could match: refused without a MAC; a `t` at the edge of i64 is no panic.
        assert_eq!(
            verify(Some(&format!("t={now},v1=")), body, secret, now),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(
                Some(&format!("t={},v1={good}", i64::MIN)),
                body,
                secret,
                now
            ),
            Err(Refused::Expired)
        );
        let mut seen = Seen::default();
        assert!(seen.check_and_add(now, good.clone(), now));
        assert!(!seen.check_and_add(now, good, now + 1), "replay");
    }
}
