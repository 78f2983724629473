//! Where the web view listens, and who is on the other end of each connection.
//!
//! - `unix:PATH`: the socket is created 0600 in a directory of the monitor's own that no one else
//!   may enter (0700), and each connection's `SO_PEERCRED` must be uid 0: tailscaled, which runs
//!   as root and proxies `tailscale serve` to it. Anyone else who reaches it (the monitor's own
//!   user included) is refused before a request is read, and `web.refused` says so.
//! - a loopback TCP address needs `[web] token_file` (checked on each request): in userspace
//!   networking mode tailscaled forwards tailnet connections to loopback.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use super::Web;
use crate::config::WebListen;
use crate::listener::{CONNECTION_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD};

/// Who connected, as the kernel says.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// On the unix socket, with the peer's uid (`SO_PEERCRED`).
    Unix { uid: u32 },
    /// On loopback TCP.
    Tcp(std::net::SocketAddr),
}

/// Creates the unix socket: its directory must be the monitor's own and closed to others.
pub(crate) fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .context("[web] listen: the socket needs a directory")?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("{}", dir.display()))?;
    let me = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) != me || meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "[web] listen: {} must be this user's own directory, closed to others (chmod 0700): anyone who may enter it could swap the socket (the shipped unit makes /run/tailscale-monitor-web so)",
            dir.display()
        );
    }
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("removing the old {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// A bound listener of the web view.
pub(crate) enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(UnixListener),
}

/// Binds `[web] listen` (at `run`'s start: a failure stops it, loudly).
pub(crate) async fn bind(listen: &WebListen) -> anyhow::Result<Bound> {
    Ok(match listen {
        WebListen::Tcp(addr, _) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding [web] listen {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "web view listening");
            Bound::Tcp(l)
        }
        WebListen::Unix(path) => {
            let l = bind_unix(path)?;
            tracing::info!(socket = %path.display(), "web view listening");
            Bound::Unix(l)
        }
    })
}

/// Serves the web view until the task is dropped.
pub(crate) async fn serve(web: Arc<Web>, bound: Bound) {
    let router = super::pages::router(web.clone());
    let handle = move |req: Request<Incoming>, peer: Peer| {
        let router = router.clone();
        async move {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(peer);
            let resp = router.oneshot(req).await.unwrap_or_else(|e| match e {});
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, Infallible>(Response::from_parts(parts, Full::new(bytes)))
        }
    };
    match bound {
        Bound::Tcp(l) => {
            crate::listener::serve(l, "web", move |req, a| handle(req, Peer::Tcp(a))).await;
        }
        Bound::Unix(l) => {
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let stream = match l.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!(error = %e, "web: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
                let handle = handle.clone();
                tokio::spawn(async move {
                    let peer = Peer::Unix { uid };
                    let svc = hyper::service::service_fn(move |req| handle(req, peer.clone()));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .max_buf_size(MAX_HEAD)
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                        debug!(error = %e, "web: connection ended");
                    }
                    drop(permit);
                });
            }
        }
    }
}
