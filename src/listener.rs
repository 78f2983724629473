//! One way to serve HTTP/1.1 on the monitor's own TCP listeners (`[webhooks]`, `[metrics]`): a
//! listener survives its clients.
//!
//! - a request head must arrive within [`HEADER_TIMEOUT`] and fit in [`MAX_HEAD`] bytes (hyper
//!   answers 431 or closes otherwise); a connection lives at most [`CONNECTION_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections are served at once, and at most [`MAX_PER_SOURCE`]
//!   from one peer address: one client holding half-sent heads cannot keep the others out (F4).
//!   A connection over either share is closed at once;
//! - an `accept()` error (EMFILE, ENFILE, ENOBUFS …) is logged once per streak and retried with a
//!   backoff, never a busy loop and never the end of the listener.
//!
//! Handlers bound their own bodies (size and time): see each handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once for one peer address.
pub const MAX_PER_SOURCE: usize = 8;
/// The time a client has to send a whole request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection (keep-alive included) is served.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request head read (hyper's smallest buffer; a Tailscale webhook's is under 1 KiB).
pub const MAX_HEAD: usize = 8192;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Serves `handle` on `listener` until the task is dropped. `what` names the listener in logs.
pub async fn serve<F, Fut>(listener: TcpListener, what: &'static str, handle: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
        Arc::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = BACKOFF_MIN;
                c
            }
            Err(e) => {
                if backoff == BACKOFF_MIN {
                    warn!(listener = what, error = %e, "accept failed; retrying with backoff");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // This source's share, then a slot: over either, the connection is closed at once (the
        // client sees a reset and may retry; the others are served meanwhile).
        let ip = peer.ip();
        {
            let mut m = per_source.lock().expect("not poisoned");
            let n = m.entry(ip).or_default();
            if *n >= MAX_PER_SOURCE {
                debug!(listener = what, %peer, "over its share of connections; closed");
                continue;
            }
            *n += 1;
        }
        let release = {
            let per_source = per_source.clone();
            move || {
                let mut m = per_source.lock().expect("not poisoned");
                if let Some(n) = m.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(listener = what, %peer, "every slot is busy; closed");
            release();
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                // A client's own misbehaviour: not worth a line per connection at info.
                Ok(Err(e)) => debug!(listener = what, %peer, error = %e, "connection ended"),
                Err(_) => debug!(listener = what, %peer, "connection timed out"),
            }
            drop(permit);
            release();
        });
    }
}
