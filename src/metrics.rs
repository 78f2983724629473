//! `[metrics] listen`: Prometheus text on `/metrics` and a health check on `/healthz`, served by
//! `run` from its own read handle on the store (so a scrape never waits on a pass).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tracing::info;

use crate::store::{Metrics, Store};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counters `run` keeps in memory (not in the store: counting must not cost a write).
#[derive(Debug, Default)]
pub struct Counters {
    /// Full passes (a `/status` read, a diff and a transaction).
    pub passes: std::sync::atomic::AtomicU64,
    /// Bus notifies that carried only presence (online, last seen, endpoints): no pass.
    pub presence_only: std::sync::atomic::AtomicU64,
    /// Bus changes decided from the bus's node alone, without a pass.
    pub deltas: std::sync::atomic::AtomicU64,
}

/// Renders the Prometheus text exposition format.
pub fn render(m: &Metrics, c: &Counters) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, i64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let labelled = |key: &str, rows: &[(String, i64)]| -> Vec<(String, i64)> {
        rows.iter()
            .map(|(k, v)| (format!("{{{key}=\"{}\"}}", esc(k)), *v))
            .collect()
    };
    family(
        "tailscale_monitor_devices",
        "gauge",
        "Devices in the tailnet as last seen.",
        vec![(String::new(), m.devices)],
    );
    family(
        "tailscale_monitor_export_lag_events",
        "gauge",
        "Logged events an [[export]] has not yet handed to its collector.",
        labelled("export", &m.export_lag),
    );
    family(
        "tailscale_monitor_users",
        "gauge",
        "Users in the tailnet as last seen.",
        vec![(String::new(), m.users)],
    );
    family(
        "tailscale_monitor_events_total",
        "counter",
        "Events logged, by kind.",
        labelled("kind", &m.events_by_kind),
    );
    let mut deliveries = Vec::new();
    for (outcome, rows) in [("delivered", &m.delivered), ("failed", &m.failed_attempts)] {
        for (ch, v) in rows.iter() {
            deliveries.push((
                format!("{{channel=\"{}\",outcome=\"{outcome}\"}}", esc(ch)),
                *v,
            ));
        }
    }
    family(
        "tailscale_monitor_deliveries_total",
        "counter",
        "Delivery attempts by channel and outcome (per event).",
        deliveries,
    );
    family(
        "tailscale_monitor_outbox_depth",
        "gauge",
        "Undelivered alerts, by channel.",
        labelled("channel", &m.pending),
    );
    family(
        "tailscale_monitor_last_snapshot_timestamp_seconds",
        "gauge",
        "Unix time of the last successful read of the tailnet.",
        vec![(String::new(), m.health.last_ok.map_or(0, |t| t.timestamp()))],
    );
    family(
        "tailscale_monitor_device_online",
        "gauge",
        "Watched devices ([[watch]]): 1 online, 0 offline, as of the last pass.",
        m.presence
            .iter()
            .map(|(d, w, v)| {
                (
                    format!(
                        "{{device=\"{}\",watch=\"{}\"}}",
                        esc(&crate::sanitize::line(d, 100)),
                        esc(w)
                    ),
                    *v,
                )
            })
            .collect(),
    );
    family(
        "tailscale_monitor_build_info",
        "gauge",
        "The running build: version and git commit.",
        vec![(
            format!(
                "{{version=\"{}\",commit=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                env!("TM_GIT_COMMIT")
            ),
            1,
        )],
    );
    family(
        "tailscale_monitor_passes_total",
        "counter",
        "Full passes run by this process (read, diff, transaction).",
        vec![(String::new(), c.passes.load(Relaxed) as i64)],
    );
    family(
        "tailscale_monitor_webhooks_refused_total",
        "counter",
        "Requests to [webhooks] listen refused (unsigned, bad signature, replayed, too large, too slow).",
        vec![(
            String::new(),
            crate::source::control::webhooks::REFUSED.load(Relaxed) as i64,
        )],
    );
    family(
        "tailscale_monitor_presence_notifies_total",
        "counter",
        "IPN bus notifies that changed only presence and cost no pass.",
        vec![(String::new(), c.presence_only.load(Relaxed) as i64)],
    );
    family(
        "tailscale_monitor_bus_deltas_total",
        "counter",
        "IPN bus changes (a join, a new key, …) decided from the bus's node alone, without re-reading the tailnet.",
        vec![(String::new(), c.deltas.load(Relaxed) as i64)],
    );
    family(
        "tailscale_monitor_source_up",
        "gauge",
        "1 if the tailnet could be read at the last attempt.",
        vec![(String::new(), i64::from(m.health.down_since.is_none()))],
    );
    family(
        "tailscale_monitor_part_visible",
        "gauge",
        "1 if this part of the node view (access: who can reach this server; tailnet_lock; prefs) could be read at the last pass, 0 if not.",
        crate::model::access::Part::ALL
            .iter()
            .map(|p| {
                (
                    format!("{{part=\"{}\"}}", p.as_str()),
                    i64::from(!m.health.parts.contains_key(p)),
                )
            })
            .collect(),
    );
    o
}

/// Binds the metrics listener (a taken port is a startup error) and opens its store handle.
pub async fn bind(
    addr: SocketAddr,
    state_dir: &Path,
) -> anyhow::Result<(tokio::net::TcpListener, Store)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("[metrics] listen {addr}: {e}"))?;
    // The address actually bound: with port 0 the kernel picks one, and this line reports it.
    let addr = listener.local_addr().unwrap_or(addr);
    info!(%addr, "metrics listening");
    Ok((listener, Store::open(state_dir)?))
}

/// Why `/metrics` must not be served at `addr`: in userspace networking mode (`/status` TUN false)
/// tailscaled dials 127.0.0.1 for every tailnet connection to this node, so a loopback listener
/// without a token is open to the whole tailnet.
pub fn userspace_refusal(
    addr: std::net::SocketAddr,
    token: bool,
    tun: Option<bool>,
) -> Option<String> {
    (addr.ip().is_loopback() && !token && tun == Some(false)).then(|| {
        format!(
            "[metrics] listen = \"{addr}\" has no token_file, and tailscaled runs in userspace networking mode: it dials 127.0.0.1 for every tailnet connection to this node, so every device of the tailnet could read /metrics; set [metrics] token_file, or run tailscaled with a TUN device"
        )
    })
}

/// Serves `/metrics` and `/healthz` until the task is dropped.
/// With `token`, only a request that carries it as `Authorization: Bearer` is answered (401
/// otherwise, before any store read).
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    counters: Arc<Counters>,
    token: Option<crate::config::Secret>,
) {
    let store = Arc::new(Mutex::new(store));
    // Compared as digests: the time taken says nothing about how much of the token matched.
    let want: Option<Arc<[u8; 32]>> = token.map(|t| Arc::new(digest(t.expose().as_bytes())));
    crate::listener::serve(listener, "metrics", move |req, _peer| {
        answer(store.clone(), counters.clone(), want.clone(), req)
    })
    .await
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

async fn answer(
    store: Arc<Mutex<Store>>,
    counters: Arc<Counters>,
    token: Option<Arc<[u8; 32]>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |code: u16, ctype: &str, body: String| {
        Response::builder()
            .status(code)
            .header("Content-Type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response")
    };
    if let Some(want) = token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim().as_bytes()));
        if given.as_ref() != Some(&*want) {
            return Ok(Response::builder()
                .status(401)
                .header("WWW-Authenticate", "Bearer")
                .header("Content-Type", "text/plain")
                .body(Full::new(Bytes::from("a bearer token is required\n")))
                .expect("static response"));
        }
    }
    // Any other path costs nothing: no store read.
    let path = req.uri().path().to_owned();
    if path != "/metrics" && path != "/healthz" {
        return Ok(reply(404, "text/plain", "not found\n".into()));
    }
    // The store read blocks (SQLite): off the async workers.
    let m = tokio::task::spawn_blocking(move || {
        store
            .lock()
            .map_err(|_| ())
            .and_then(|s| s.metrics().map_err(|_| ()))
    })
    .await
    .unwrap_or(Err(()));
    Ok(match (path.as_str(), m) {
        (_, Err(())) => reply(500, "text/plain", "state database unreadable\n".into()),
        ("/metrics", Ok(m)) => reply(200, "text/plain; version=0.0.4", render(&m, &counters)),
        ("/healthz", Ok(m)) => match m.health.down_since {
            None => reply(200, "text/plain", "ok\n".into()),
            Some(t) => reply(
                503,
                "text/plain",
                format!(
                    "tailnet unreadable since {}: {}\n",
                    t.to_rfc3339(),
                    crate::sanitize::line(&m.health.last_error, 300)
                ),
            ),
        },
        _ => reply(404, "text/plain", "not found\n".into()),
    })
}
