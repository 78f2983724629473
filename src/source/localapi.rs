//! tailscaled's LocalAPI: HTTP/1.1 over its unix socket.
//!
//! Requests carry the host (`local-tailscaled.sock`) and the `Tailscale-Cap` header the official
//! client sends. Every failure becomes a one-line [`SourceError`] that names the socket and, where
//! it helps, what to do — never an empty snapshot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use tracing::{debug, warn};

use super::status_json::Status;
use super::{ipnbus, netmap, SourceError};
use crate::model::access::{NodeTrust, NodeView};
use crate::model::Snapshot;

/// The host the official client uses; tailscaled accepts it without a password.
pub const HOST: &str = "local-tailscaled.sock";
/// Capability version we announce (tailscale 1.102's `tailcfg.CurrentCapabilityVersion`).
pub const CAPABILITY_VERSION: u32 = 142;

#[derive(Debug, Clone)]
pub struct LocalApi {
    socket: PathBuf,
    timeout: Duration,
}

impl LocalApi {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        LocalApi {
            socket: socket.into(),
            timeout,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn err(&self, what: impl Into<String>) -> SourceError {
        SourceError(format!(
            "LocalAPI {}: {}",
            self.socket.display(),
            what.into()
        ))
    }

    /// Sends `GET path` and returns the response with its body still streaming. The timeout covers
    /// connecting and receiving the response head.
    pub async fn open(&self, path: &str) -> Result<Response<Incoming>, SourceError> {
        let fut = async {
            let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
                self.err(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "no such socket — is tailscaled running? (set [tailscale] socket if it lives elsewhere)".to_owned()
                    }
                    std::io::ErrorKind::ConnectionRefused => {
                        "connection refused — is tailscaled running?".to_owned()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied — run as a user that may read the socket".to_owned()
                    }
                    _ => e.to_string(),
                })
            })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.err(format!("HTTP handshake failed: {e}")))?;
            tokio::spawn(async move {
                // The connection ends when the response body is dropped or finished.
                let _ = conn.await;
            });
            let req = Request::get(path)
                .header(hyper::header::HOST, HOST)
                .header("Tailscale-Cap", CAPABILITY_VERSION.to_string())
                .body(Empty::<Bytes>::new())
                .expect("static request is valid");
            sender
                .send_request(req)
                .await
                .map_err(|e| self.err(format!("GET {path}: {e}")))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| self.err(format!("GET {path}: no answer within {:?}", self.timeout)))?
    }

    /// `GET path` and the whole body, failing on a non-2xx status.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        let resp = self.open(path).await?;
        let status = resp.status();
        let body = tokio::time::timeout(self.timeout, read_body(resp.into_body()))
            .await
            .map_err(|_| {
                self.err(format!(
                    "GET {path}: body not complete within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|e| self.err(format!("GET {path}: reading body: {e}")))?;
        if status != StatusCode::OK {
            return Err(self.err(format!(
                "GET {path}: HTTP {status}: {}",
                crate::sanitize::line(&String::from_utf8_lossy(&body), 200)
            )));
        }
        Ok(body)
    }

    /// `GET /localapi/v0/whois?addr=IP`: who is behind a tailnet address, as one line
    /// (unsanitized: it comes from the tailnet).
    pub async fn whois(&self, ip: &str) -> Result<String, SourceError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Node {
            name: String,
            #[serde(rename = "StableID")]
            stable_id: String,
            hostinfo: Hostinfo,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Hostinfo {
            hostname: String,
            #[serde(rename = "OS")]
            os: String,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Profile {
            login_name: String,
            display_name: String,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct WhoIs {
            node: Node,
            user_profile: Profile,
        }
        let body = self.get(&format!("/localapi/v0/whois?addr={ip}")).await?;
        let w: WhoIs = serde_json::from_slice(&body)
            .map_err(|e| self.err(format!("whois {ip}: malformed JSON: {e}")))?;
        Ok(format!(
            "whois {ip}: node {} ({}, {}, {}) of {} ({})",
            w.node.name,
            w.node.hostinfo.hostname,
            w.node.hostinfo.os,
            w.node.stable_id,
            w.user_profile.login_name,
            w.user_profile.display_name
        ))
    }

    /// One snapshot from `GET /localapi/v0/status` (devices and users only).
    pub async fn status(&self) -> Result<Snapshot, SourceError> {
        let body = self.get("/localapi/v0/status").await?;
        Status::parse(&body)
            .and_then(|s| s.into_snapshot(Utc::now()))
            .map_err(|e| self.err(e.to_string()))
    }

    /// `/status` Self `Online` alone (`?peers=false`: no peer is encoded): whether this node is
    /// in a map poll with the control plane.
    pub async fn self_online(&self) -> Result<Option<bool>, SourceError> {
        let body = self.get("/localapi/v0/status?peers=false").await?;
        let s = Status::parse(&body).map_err(|e| self.err(e.to_string()))?;
        Ok(s.self_.map(|p| p.online))
    }

    /// The whole node view: `/status`, then who may reach this node ([`LocalApi::node_view`]).
    /// A daemon that refuses the netmap read is an error, never "nobody can reach us".
    pub async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        self.snapshot_with(None).await
    }

    /// [`LocalApi::snapshot`] with `view` as who may reach this node instead of a fresh read of
    /// it (`run`, for passes that only peers' changes triggered).
    pub async fn snapshot_with(&self, view: Option<&NodeView>) -> Result<Snapshot, SourceError> {
        // The netmap is read on another worker while this one reads and parses `/status`.
        // (A JoinSet: the read is cancelled if `/status` fails.)
        let mut read_view = tokio::task::JoinSet::new();
        if view.is_none() {
            let api = self.clone();
            read_view.spawn(async move { api.node_view().await });
        }
        let mut snap = self.status().await?;
        let mut view = match view {
            Some(v) => v.clone(),
            None => read_view
                .join_next()
                .await
                .expect("spawned above")
                .map_err(|e| self.err(format!("reading the netmap: {e}")))??,
        };
        view.trust.update_available = snap.update_available.take();
        // The netmap's peers only name what `/status` cannot: a peer it lists with its owner's
        // profile is named from there.
        view.peers.retain(|p| {
            snap.devices.get(p.id.as_str()).is_none_or(|d| {
                (d.tags.is_empty() && !snap.users.contains_key(&d.user_id))
                    || !p.addresses.iter().all(|a| d.addresses.contains(a))
            })
        });
        snap.node = Some(view);
        Ok(snap)
    }

    /// The packet filter and SSH policy of this node (first line of `watch-ipn-bus?mask=8`), its
    /// Tailnet Lock state and its prefs. Tailnet Lock and prefs are optional (an old daemon, a
    /// build without the feature, a 403): left unknown, never reported as off.
    pub async fn node_view(&self) -> Result<NodeView, SourceError> {
        let (access, tka, prefs) = tokio::join!(
            self.netmap_access(),
            self.get("/localapi/v0/tka/status"),
            self.get("/localapi/v0/prefs")
        );
        let access = match access {
            Ok(a) => a,
            // A daemon without the IPN bus (404) cannot tell: the model stays unknown. A daemon
            // that refuses the read (403) or fails is an error.
            Err(WatchError::Rejected { status: 404, error }) => {
                warn!(error = %error, "this tailscaled has no IPN bus: who may reach this node is unknown");
                netmap::NetmapAccess {
                    rules: None,
                    ssh: None,
                    peers: Vec::new(),
                }
            }
            Err(WatchError::Rejected { error, .. } | WatchError::Source(error)) => {
                return Err(error)
            }
        };
        let mut trust = NodeTrust::default();
        match tka {
            Ok(body) => match netmap::parse_tka(&body) {
                Ok(t) => trust.tailnet_lock = Some(t),
                Err(e) => warn!(error = %e, "Tailnet Lock state unknown"),
            },
            Err(e) => debug!(error = %e, "Tailnet Lock state unknown"),
        }
        match prefs {
            Ok(body) => {
                if let Err(e) = netmap::parse_prefs(&body, &mut trust) {
                    warn!(error = %e, "prefs unknown");
                }
            }
            Err(e) => debug!(error = %e, "prefs unknown"),
        }
        Ok(NodeView {
            rules: access.rules,
            ssh: access.ssh,
            peers: access.peers,
            trust,
        })
    }

    /// Reads the initial NetMap of a short-lived `watch-ipn-bus?mask=8` and closes it.
    pub async fn netmap_access(&self) -> Result<netmap::NetmapAccess, WatchError> {
        let path = format!("/localapi/v0/watch-ipn-bus?mask={}", ipnbus::INITIAL_NETMAP);
        let mut w = self.watch(ipnbus::INITIAL_NETMAP).await?;
        let line = tokio::time::timeout(self.timeout, w.next_line())
            .await
            .map_err(|_| self.err(format!("GET {path}: no netmap within {:?}", self.timeout)))
            .and_then(|r| r)
            .and_then(|l| {
                l.ok_or_else(|| self.err(format!("GET {path}: stream ended before the netmap")))
            })
            .map_err(WatchError::Source)?;
        netmap::parse_initial_notify(&line).map_err(|e| WatchError::Source(self.err(e)))
    }
}

/// A whole response body in one buffer, reserved up front when its length is announced: a
/// multi-megabyte `/status` is copied once, not gathered in pieces and copied again.
async fn read_body(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    use hyper::body::Body as _;
    // The announced length is trusted only up to a bound: the reservation is not an allocation
    // an answer can make arbitrarily large.
    const MAX_RESERVE: u64 = 512 << 20;
    let hint = body.size_hint();
    let mut buf =
        Vec::with_capacity(hint.exact().unwrap_or(hint.lower()).min(MAX_RESERVE) as usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Why a watch could not be opened.
#[derive(Debug)]
pub enum WatchError {
    /// The daemon answered, but refused the request (e.g. 400 for a mask bit it rejects).
    Rejected { status: u16, error: SourceError },
    /// No usable answer (socket, timeout, …).
    Source(SourceError),
}

/// An open IPN bus stream: one JSON `ipn.Notify` per line.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline: each frame is scanned once, so a
    /// multi-megabyte netmap line costs linear time, not quadratic.
    scanned: usize,
}

/// A line longer than this ends the stream (a reconnect resynchronizes).
const MAX_LINE: usize = 64 << 20;

impl LocalApi {
    /// Opens `GET /localapi/v0/watch-ipn-bus?mask=N`.
    pub async fn watch(&self, mask: u64) -> Result<Watch, WatchError> {
        let path = format!("/localapi/v0/watch-ipn-bus?mask={mask}");
        let resp = self.open(&path).await.map_err(WatchError::Source)?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(WatchError::Rejected {
                status: status.as_u16(),
                error: self.err(format!(
                    "GET {path}: HTTP {status}: {}",
                    crate::sanitize::line(&String::from_utf8_lossy(&body), 200)
                )),
            });
        }
        Ok(Watch {
            body: resp.into_body(),
            buf: Vec::new(),
            scanned: 0,
        })
    }
}

impl Watch {
    /// The next complete line; `Ok(None)` when the stream ended (a partial last line is dropped).
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let i = self.scanned + i;
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                self.scanned = 0;
                line.pop();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(SourceError(format!(
                    "IPN bus: a line longer than {MAX_LINE} bytes"
                )));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(SourceError(format!("IPN bus: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
