//! tailscaled's LocalAPI: HTTP/1.1 over its unix socket.
//!
//! Requests carry the host (`local-tailscaled.sock`) and the `Tailscale-Cap` header the official
//! client sends. Every failure becomes a one-line [`SourceError`] that names the socket and, where
//! it helps, what to do — never an empty snapshot.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use tracing::{debug, info};

use super::cut::Cut;
use super::status_json::Status;
use super::{ipnbus, netmap, SourceError};
use crate::model::access::{NodeTrust, NodeView, Part, Unread};
use crate::model::Snapshot;

/// The host the official client uses; tailscaled accepts it without a password.
pub const HOST: &str = "local-tailscaled.sock";
/// Capability version we announce (tailscale 1.102's `tailcfg.CurrentCapabilityVersion`).
pub const CAPABILITY_VERSION: u32 = 142;

#[derive(Debug, Clone)]
pub struct LocalApi {
    socket: PathBuf,
    timeout: Duration,
    /// The privileged relay, for the netmap on tailscaled >= 1.104 (`None`: not configured).
    relay: Option<PathBuf>,
    /// This daemon answered `watch-ipn-bus?mask=8` with a 400 (tailscaled >= 1.104): the bus
    /// line is not asked for again by this process.
    bus_netmap_refused: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What to do about a part that fails for a reason of its own (a 403, a timeout, bad JSON).
const PART_FIX: &str = "check that tailscaled is healthy (`tailscale status`) and that this user may read its socket; the monitor keeps what it last recorded and reports the part again once it can read it";
/// What to do when no way to read the packet filter works (tailscaled >= 1.104 without the relay).
pub const ACCESS_FIX: &str = "this tailscaled gives the packet filter only to root or its operator (1.104 and later do): enable the privileged relay with `systemctl enable --now tailscale-monitor-privileged.socket` (installed by the package and install.sh), or where there is no systemd run `tailscale-monitor privileged --listen /run/tailscale-monitor/privileged.sock --group tailscale-monitor` as root (README: Access on tailscaled 1.104)";
const RELAY_DENIED_FIX: &str = "run the monitor as the user of the relay socket's group (`tailscale-monitor`), or add its user to that group: `usermod -aG tailscale-monitor USER`, then restart the monitor";
const RELAY_FAILED_FIX: &str = "see the relay's log (`journalctl -u 'tailscale-monitor-privileged@*'`); install the same version of the monitor and the relay; check that tailscaled is logged in";

/// The longest LocalAPI answer read (`/status` of a 50,000-peer tailnet is about 70 MB): a longer
/// one is an error, never memory without end.
const MAX_BODY: usize = 512 << 20;

/// The longest `current-netmap` answer read (the same bound as a bus line).
const MAX_NETMAP: usize = MAX_LINE;

impl LocalApi {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        LocalApi {
            socket: socket.into(),
            timeout,
            relay: None,
            bus_netmap_refused: Default::default(),
        }
    }

    /// The same API, reading the netmap through the privileged relay at `relay` where the
    /// daemon does not serve it to this user.
    pub fn with_relay(mut self, relay: impl Into<PathBuf>) -> Self {
        self.relay = Some(relay.into());
        self
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
        self.request(hyper::Method::GET, path).await
    }

    /// Sends `method path` (no body) and returns the response with its body still streaming.
    async fn request(
        &self,
        method: hyper::Method,
        path: &str,
    ) -> Result<Response<Incoming>, SourceError> {
        self.request_with(method, path, Bytes::new()).await
    }

    /// Sends `method path` with `body` and returns the response with its body still streaming.
    async fn request_with(
        &self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, SourceError> {
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
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, HOST)
                .header("Tailscale-Cap", CAPABILITY_VERSION.to_string())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| self.err(format!("{method} {path}: {e}")))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| self.err(format!("{method} {path}: {e}")))
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| {
            self.err(format!(
                "{method} {path}: no answer within {:?}",
                self.timeout
            ))
        })?
    }

    /// `GET path` and the whole body, failing on a non-2xx status.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        self.fetch(hyper::Method::GET, path, MAX_BODY)
            .await
            .map_err(|(_, e)| e)
    }

    /// `method path` and the whole body (at most `max` bytes), failing on a non-200 status with
    /// the status code beside the error.
    async fn fetch(
        &self,
        method: hyper::Method,
        path: &str,
        max: usize,
    ) -> Result<Vec<u8>, (Option<u16>, SourceError)> {
        self.fetch_into(method, path, max, Vec::new()).await
    }

    /// [`LocalApi::fetch`], handing the body to `sink` piece by piece as it arrives. A non-200
    /// answer's body is read whole instead, into its error.
    async fn fetch_into<S: BodySink>(
        &self,
        method: hyper::Method,
        path: &str,
        max: usize,
        sink: S,
    ) -> Result<S, (Option<u16>, SourceError)> {
        let resp = self
            .request(method.clone(), path)
            .await
            .map_err(|e| (None, e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = self.read_within(&method, path, status, resp.into_body(), max, Vec::new());
            let body = body.await?;
            return Err((
                Some(status.as_u16()),
                self.err(format!(
                    "{method} {path}: HTTP {status}: {}",
                    crate::sanitize::line(&String::from_utf8_lossy(&body), 200)
                )),
            ));
        }
        self.read_within(&method, path, status, resp.into_body(), max, sink)
            .await
    }

    /// [`read_body`] within the timeout, its failure as one line naming the request.
    async fn read_within<S: BodySink>(
        &self,
        method: &hyper::Method,
        path: &str,
        status: StatusCode,
        body: Incoming,
        max: usize,
        sink: S,
    ) -> Result<S, (Option<u16>, SourceError)> {
        tokio::time::timeout(self.timeout, read_body(body, max, sink))
            .await
            .map_err(|_| {
                self.err(format!(
                    "{method} {path}: body not complete within {:?}",
                    self.timeout
                ))
            })
            .and_then(|r| r.map_err(|e| self.err(format!("{method} {path}: reading body: {e}"))))
            .map_err(|e| (Some(status.as_u16()), e))
    }

    /// `PATCH /localapi/v0/prefs` turning Tailscale SSH and the web client off (`ipn.MaskedPrefs`):
    /// the guard's `tailscaled_doors = "close"`. Needs the LocalAPI's write permission (the root
    /// side). Returns `RunSSH` and `RunWebClient` as tailscaled answers them.
    pub async fn close_doors(&self) -> Result<(bool, bool), SourceError> {
        let body =
            br#"{"RunSSHSet":true,"RunSSH":false,"RunWebClientSet":true,"RunWebClient":false}"#;
        let resp = self
            .request_with(
                hyper::Method::PATCH,
                "/localapi/v0/prefs",
                Bytes::from_static(body),
            )
            .await?;
        let status = resp.status();
        let body = tokio::time::timeout(
            self.timeout,
            read_body(resp.into_body(), 1 << 20, Vec::new()),
        )
        .await
        .map_err(|_| self.err("PATCH prefs: no answer in time".to_owned()))?
        .map_err(|e| self.err(format!("PATCH prefs: reading body: {e}")))?;
        if status != StatusCode::OK {
            return Err(self.err(format!(
                "PATCH prefs: HTTP {status}: {}",
                crate::sanitize::line(&String::from_utf8_lossy(&body), 200)
            )));
        }
        let mut t = NodeTrust::default();
        netmap::parse_prefs(&body, &mut t).map_err(|e| self.err(e))?;
        Ok((t.ssh_server.unwrap_or(true), t.web_client.unwrap_or(true)))
    }

    /// This node's prefs and serve config only (for `guard status`): the doors tailscaled
    /// answers itself.
    pub async fn doors_view(&self) -> Result<NodeTrust, SourceError> {
        let mut t = NodeTrust::default();
        let prefs = self.get("/localapi/v0/prefs").await?;
        netmap::parse_prefs(&prefs, &mut t).map_err(|e| self.err(e))?;
        match self
            .fetch(hyper::Method::GET, "/localapi/v0/serve-config", 4 << 20)
            .await
        {
            Ok(b) => t.serve = Some(netmap::parse_serve_config(&b).map_err(|e| self.err(e))?),
            Err((Some(404), _)) => {}
            Err((_, e)) => return Err(e),
        }
        Ok(t)
    }

    /// `POST /localapi/v0/debug?action=current-netmap`: the live netmap, packet filter included.
    /// tailscaled answers it only to a caller with the LocalAPI's write permission (root or its
    /// operator user); anyone else gets a 403, returned as `Err(Some(403), …)`.
    pub async fn current_netmap(&self) -> Result<Vec<u8>, (Option<u16>, SourceError)> {
        self.fetch(
            hyper::Method::POST,
            "/localapi/v0/debug?action=current-netmap",
            MAX_NETMAP,
        )
        .await
    }

    /// `GET /localapi/v0/whois?addr=IP`: who is behind a tailnet address (unsanitized: it comes
    /// from the tailnet).
    pub async fn whois(&self, ip: &str) -> Result<crate::model::WhoIs, SourceError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "PascalCase")]
        struct Node {
            name: String,
            key: String,
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
        // An address from a hostile source never reaches the request line unparsed.
        let ip: std::net::IpAddr = ip.parse().map_err(|_| {
            self.err(format!(
                "whois: `{}` is not an IP address",
                crate::sanitize::line(ip, 60)
            ))
        })?;
        let body = self.get(&format!("/localapi/v0/whois?addr={ip}")).await?;
        let w: WhoIs = serde_json::from_slice(&body)
            .map_err(|e| self.err(format!("whois {ip}: malformed JSON: {e}")))?;
        Ok(crate::model::WhoIs {
            ip: ip.to_string(),
            node: w.node.name,
            node_key: w.node.key,
            hostname: w.node.hostinfo.hostname,
            os: w.node.hostinfo.os,
            stable_id: w.node.stable_id,
            login: w.user_profile.login_name,
            display_name: w.user_profile.display_name,
        })
    }

    /// One snapshot from `GET /localapi/v0/status` (devices and users only), parsed while the
    /// body arrives ([`Cut`]).
    pub async fn status(&self) -> Result<Snapshot, SourceError> {
        let t = std::time::Instant::now();
        let stream = self
            .fetch_into(
                hyper::Method::GET,
                "/localapi/v0/status",
                MAX_BODY,
                Status::cut(),
            )
            .await
            .map_err(|(_, e)| e)?;
        let read = t.elapsed();
        let snap = Status::from_cut(stream)
            .and_then(|s| s.into_snapshot(Utc::now()))
            .map_err(|e| self.err(e.to_string()));
        tracing::debug!(?read, parsed = ?t.elapsed() - read, "/status (parsed while read)");
        snap
    }

    /// `/status` Self `Online` alone (`?peers=false`: no peer is encoded): whether this node is
    /// in a map poll with the control plane.
    pub async fn self_online(&self) -> Result<Option<bool>, SourceError> {
        Ok(self.self_status().await?.self_.map(|p| p.online))
    }

    /// `/status` `TUN` alone (`?peers=false`): whether tailscaled uses a kernel interface.
    pub async fn tun(&self) -> Result<Option<bool>, SourceError> {
        Ok(self.self_status().await?.tun)
    }

    async fn self_status(&self) -> Result<Status, SourceError> {
        let body = self.get("/localapi/v0/status?peers=false").await?;
        Status::parse(&body).map_err(|e| self.err(e.to_string()))
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
        // (A JoinSet: the read is cancelled if `/status` fails.) Where the filter comes through
        // the privileged relay (tailscaled >= 1.104), which passes on no peer to name its
        // sources, the view is read first and `/status` after it: a peer the new filter lets in
        // is then already listed, never "no device this server knows".
        let relayed = self
            .bus_netmap_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let first = match (view, relayed) {
            (None, true) => Some(self.node_view().await),
            _ => None,
        };
        let mut read_view = tokio::task::JoinSet::new();
        if view.is_none() && first.is_none() {
            let api = self.clone();
            read_view.spawn(async move { api.node_view().await });
        }
        let mut snap = self.status().await?;
        let mut view = match (view, first) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v,
            (None, None) => read_view
                .join_next()
                .await
                .expect("spawned above")
                .map_err(|e| self.err(format!("reading the netmap: {e}")))?,
        };
        if let Some(other) = view
            .netmap_self
            .as_deref()
            .filter(|&id| id != snap.self_id.0)
        {
            // A relay or socket answering for another daemon: not this node's filter.
            let error = self
                .err(format!(
                    "the netmap read is of node {}, but /status Self is {}",
                    crate::sanitize::line(other, 40),
                    crate::sanitize::line(&snap.self_id.0, 40)
                ))
                .0;
            view.rules = None;
            view.ssh = None;
            view.peers.clear();
            view.unread.retain(|u| u.part != Part::Access);
            view.unread.insert(
                0,
                Unread {
                    part: Part::Access,
                    error,
                    fix: "point [tailscale] socket and the relay's --socket at the same tailscaled"
                        .into(),
                },
            );
        }
        keep_unnamed(&mut view.peers, &snap);
        snap.node = Some(view);
        Ok(snap)
    }

    /// Who may reach this node (its packet filter and SSH policy, [`LocalApi::access`]), its
    /// Tailnet Lock state and its prefs. Never fails: each part that cannot be read is listed in
    /// [`NodeView::unread`] with why and the fix, and left unknown, never reported as empty or
    /// off. A daemon that has no such endpoint at all (404: an old daemon, a build without the
    /// feature) leaves that part unknown without a word.
    pub async fn node_view(&self) -> NodeView {
        let (access, tka, prefs, serve) = tokio::join!(
            self.access(),
            self.fetch(hyper::Method::GET, "/localapi/v0/tka/status", 1 << 20),
            self.fetch(hyper::Method::GET, "/localapi/v0/prefs", 1 << 20),
            self.fetch(hyper::Method::GET, "/localapi/v0/serve-config", 4 << 20)
        );
        let mut unread = Vec::new();
        let mut trust = NodeTrust::default();
        fn part(
            unread: &mut Vec<Unread>,
            part: Part,
            r: Result<Vec<u8>, (Option<u16>, SourceError)>,
        ) -> Option<Vec<u8>> {
            match r {
                Ok(body) => Some(body),
                Err((Some(404), e)) => {
                    debug!(error = %e, part = part.as_str(), "not served by this tailscaled");
                    None
                }
                Err((_, e)) => {
                    unread.push(Unread {
                        part,
                        error: e.0,
                        fix: PART_FIX.into(),
                    });
                    None
                }
            }
        }
        if let Some(body) = part(&mut unread, Part::TailnetLock, tka) {
            match netmap::parse_tka(&body) {
                Ok(t) => trust.tailnet_lock = Some(t),
                Err(e) => unread.push(Unread {
                    part: Part::TailnetLock,
                    error: self.err(e).0,
                    fix: PART_FIX.into(),
                }),
            }
        }
        if let Some(body) = part(&mut unread, Part::Prefs, prefs) {
            if let Err(e) = netmap::parse_prefs(&body, &mut trust) {
                unread.push(Unread {
                    part: Part::Prefs,
                    error: self.err(e).0,
                    fix: PART_FIX.into(),
                });
            }
        }
        if let Some(body) = part(&mut unread, Part::Serve, serve) {
            match netmap::parse_serve_config(&body) {
                Ok(s) => trust.serve = Some(s),
                Err(e) => unread.push(Unread {
                    part: Part::Serve,
                    error: self.err(e).0,
                    fix: PART_FIX.into(),
                }),
            }
        }
        let (access, netmap_self) = match access {
            Ok(a) => {
                let me = (!a.self_id.is_empty()).then_some(a.self_id);
                (Some((a.rules, a.ssh, a.peers)), me)
            }
            Err(u) => {
                unread.push(u);
                (None, None)
            }
        };
        let (rules, ssh, peers) = access.unwrap_or_default();
        unread.sort_by_key(|u| u.part);
        NodeView {
            rules,
            ssh,
            peers,
            trust,
            unread,
            netmap_self,
        }
    }

    /// This node's packet filter and SSH policy, from the first of these that works:
    /// 1. the first line of `watch-ipn-bus?mask=8`, which any local user may read, on daemons
    ///    that still serve it (before 1.104; a 400 is remembered and not asked again);
    /// 2. the privileged relay, where its socket is there;
    /// 3. `POST debug?action=current-netmap`, which works when the monitor itself has the
    ///    LocalAPI's write permission (root, or tailscaled's operator).
    ///
    /// When none does: one [`Unread`] that says what was tried and the exact fix.
    pub async fn access(&self) -> Result<netmap::NetmapAccess, Unread> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut tried = Vec::new();
        if !self.bus_netmap_refused.load(Relaxed) {
            match self.netmap_access().await {
                Ok(a) => return Ok(a),
                Err(WatchError::Rejected { status: 400, error }) => {
                    info!(error = %error, "this tailscaled no longer serves the netmap on the IPN bus (1.104 or later); reading it through the privileged relay");
                    self.bus_netmap_refused.store(true, Relaxed);
                    tried.push(error.0);
                }
                Err(WatchError::Rejected { error, .. } | WatchError::Source(error)) => {
                    tried.push(error.0)
                }
            }
        }
        let mut fix = ACCESS_FIX;
        if let Some(relay) = &self.relay {
            match crate::privileged::netmap(relay, self.timeout).await {
                Ok(f) => {
                    return Ok(netmap::NetmapAccess {
                        rules: f.rules,
                        ssh: f.ssh,
                        peers: Vec::new(),
                        self_id: f.self_id,
                    })
                }
                Err(e @ crate::privileged::RelayError::Absent(_)) => tried.push(e.to_string()),
                Err(e) => {
                    fix = match e {
                        crate::privileged::RelayError::Denied(_) => RELAY_DENIED_FIX,
                        _ => RELAY_FAILED_FIX,
                    };
                    tried.push(e.to_string());
                }
            }
        }
        match self.current_netmap().await {
            Ok(body) => netmap::parse_current_netmap(&body).map_err(|e| Unread {
                part: Part::Access,
                error: self.err(format!("current-netmap: {e}")).0,
                fix: PART_FIX.into(),
            }),
            Err((_, e)) => {
                tried.push(e.0);
                Err(Unread {
                    part: Part::Access,
                    error: tried.join("; "),
                    fix: fix.into(),
                })
            }
        }
    }

    /// Reads the initial NetMap of a short-lived `watch-ipn-bus?mask=8` and closes it.
    pub async fn netmap_access(&self) -> Result<netmap::NetmapAccess, WatchError> {
        let path = format!("/localapi/v0/watch-ipn-bus?mask={}", ipnbus::INITIAL_NETMAP);
        let mut w = self.watch(ipnbus::INITIAL_NETMAP).await?;
        let mut cut = netmap::initial_notify_cut();
        let lines = async {
            // A line of whitespace alone is skipped, as a line reader does.
            while w.line_into(&mut cut).await? {
                if !cut.is_blank() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let whole = tokio::time::timeout(self.timeout, lines)
            .await
            .map_err(|_| self.err(format!("GET {path}: no netmap within {:?}", self.timeout)))
            .and_then(|r| r)
            .and_then(|whole| {
                whole
                    .then_some(())
                    .ok_or_else(|| self.err(format!("GET {path}: stream ended before the netmap")))
            });
        whole.map_err(WatchError::Source)?;
        netmap::parse_initial_notify_cut(cut).map_err(|e| WatchError::Source(self.err(e)))
    }
}

/// Where a response body goes as it arrives: a buffer ([`Vec`]), or a parser that reads it in
/// pieces ([`Cut`]).
trait BodySink {
    /// The body's announced length, bounded: a buffer reserves it once.
    fn announced(&mut self, _len: usize) {}
    /// The next piece. `false` stops the read: the sink holds why.
    fn piece(&mut self, piece: &[u8]) -> bool;
}

/// The netmap's peers only name what `/status` cannot: a peer it lists with its owner's profile
/// and all the peer's addresses is named from there, and dropped here. The netmap's read sorts
/// the peers by ID, so both lists are walked once side by side; peers in another order, or one ID
/// listed twice, are looked up one by one.
fn keep_unnamed(peers: &mut Vec<crate::model::access::NetmapPeer>, snap: &Snapshot) {
    let unnamed = |p: &crate::model::access::NetmapPeer, d: Option<&crate::model::Device>| {
        d.is_none_or(|d| {
            (d.tags.is_empty() && !snap.users.contains_key(&d.user_id))
                || !p.addresses.iter().all(|a| d.addresses.contains(a))
        })
    };
    if peers.is_sorted_by(|a, b| a.id < b.id) {
        let mut listed = crate::model::Ascending::new(&snap.devices);
        peers.retain(|p| unnamed(p, listed.get(p.id.as_str())));
    } else {
        peers.retain(|p| unnamed(p, snap.devices.get(p.id.as_str())));
    }
}

/// A whole response body in one buffer, reserved up front when its length is announced: a
/// multi-megabyte body is copied once, not gathered in pieces and copied again.
impl BodySink for Vec<u8> {
    fn announced(&mut self, len: usize) {
        self.reserve(len);
    }
    fn piece(&mut self, piece: &[u8]) -> bool {
        self.extend_from_slice(piece);
        true
    }
}

impl<T: serde::de::DeserializeOwned> BodySink for Cut<T> {
    fn piece(&mut self, piece: &[u8]) -> bool {
        self.feed(piece)
    }
}

/// Reads a response body into `sink`. A body longer than `max` is an error.
async fn read_body<S: BodySink>(mut body: Incoming, max: usize, mut sink: S) -> Result<S, String> {
    use hyper::body::Body as _;
    // The announced length is trusted only up to a bound: the reservation is not an allocation
    // an answer can make arbitrarily large.
    const MAX_RESERVE: u64 = 512 << 20;
    let hint = body.size_hint();
    sink.announced(hint.exact().unwrap_or(hint.lower()).min(MAX_RESERVE) as usize);
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
            len = len.saturating_add(data.len());
            if len > max {
                return Err(format!("longer than {max} bytes"));
            }
            if !sink.piece(&data) {
                break;
            }
        }
    }
    Ok(sink)
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

    /// The next line handed to `sink` as it arrives, never gathered whole (the first line of a
    /// large tailnet's netmap is 8 MB at 10,000 peers). `Ok(false)` when the stream ended first
    /// (the partial line went to `sink`); what follows the line stays for the next read. Lines
    /// of whitespace alone go to `sink` too: they are whitespace between JSON values.
    async fn line_into<S: BodySink>(&mut self, sink: &mut S) -> Result<bool, SourceError> {
        let mut len = 0usize;
        let mut data = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.scanned = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &data) {
                sink.piece(&data[..i]);
                self.buf = data[i + 1..].to_vec();
                return Ok(true);
            }
            len = len.saturating_add(data.len());
            if len > MAX_LINE {
                return Err(SourceError(format!(
                    "IPN bus: a line longer than {MAX_LINE} bytes"
                )));
            }
            if !data.is_empty() && !sink.piece(&data) {
                // The sink has its answer (malformed): the rest of the line is not read.
                return Ok(true);
            }
            data = match self.body.frame().await {
                None => return Ok(false),
                Some(Err(e)) => return Err(SourceError(format!("IPN bus: {e}"))),
                Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::access::NetmapPeer;
    use crate::model::{Device, StableNodeId, User, UserId};

    fn peer(id: &str, address: &str) -> NetmapPeer {
        NetmapPeer {
            id: id.into(),
            hostname: format!("host-{id}"),
            owner: "someone@example.com".into(),
            addresses: vec![address.into()],
        }
    }

    /// The walk beside `/status` keeps the same peers as a lookup of each: in ID order, in
    /// another order, and with one ID listed twice.
    #[test]
    fn the_netmap_peers_kept_are_those_status_cannot_name() {
        let mut snap = Snapshot::default();
        for (id, address, user) in [
            ("a", "100.64.0.1", 1),
            ("c", "100.64.0.3", 2),
            ("d", "100.64.0.4", 1),
        ] {
            let mut d = Device::for_tests(id);
            d.addresses = vec![address.into()];
            d.user_id = UserId(user);
            snap.devices.insert(StableNodeId(id.into()), d);
        }
        snap.users.insert(
            UserId(1),
            User {
                id: UserId(1),
                login: "one@example.com".into(),
                display_name: "One".into(),
            },
        );
        let by_lookup = |peers: &[NetmapPeer]| -> Vec<NetmapPeer> {
            peers
                .iter()
                .filter(|p| {
                    snap.devices.get(p.id.as_str()).is_none_or(|d| {
                        (d.tags.is_empty() && !snap.users.contains_key(&d.user_id))
                            || !p.addresses.iter().all(|a| d.addresses.contains(a))
                    })
                })
                .cloned()
                .collect()
        };
        let lists = [
            // Named by /status (a), unknown there (b), its owner's profile missing (c), an
            // address /status does not give it (d, second), listed twice (a).
            vec![
                peer("a", "100.64.0.1"),
                peer("b", "100.64.0.2"),
                peer("c", "100.64.0.3"),
                peer("d", "100.64.0.9"),
            ],
            vec![
                peer("a", "100.64.0.1"),
                peer("a", "100.64.0.1"),
                peer("b", "100.64.0.2"),
                peer("d", "100.64.0.4"),
            ],
            vec![
                peer("d", "100.64.0.4"),
                peer("b", "100.64.0.2"),
                peer("a", "100.64.0.1"),
                peer("c", "100.64.0.3"),
            ],
        ];
        for list in lists {
            let mut kept = list.clone();
            keep_unnamed(&mut kept, &snap);
            assert_eq!(kept, by_lookup(&list), "{list:?}");
        }
        let mut first = vec![
            peer("a", "100.64.0.1"),
            peer("b", "100.64.0.2"),
            peer("c", "100.64.0.3"),
        ];
        keep_unnamed(&mut first, &snap);
        let ids: Vec<&str> = first.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }
}
