//! The tailscaled LocalAPI emulator: a unix-socket HTTP/1.1 server that serves status documents a
//! test can change, for states a real tailscaled is hard to put in (stopped, malformed, hanging,
//! HTTP errors). It answers like tailscaled: same paths, same JSON (the documents are the shared
//! fixtures, written field for field after `ipnstate.Status`), and it checks the Host header the
//! official client sends.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::{Channel, Sender};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixListener;

/// What `GET /localapi/v0/status` answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with this document.
    Status(Value),
    /// 200 with these raw bytes (malformed JSON and the like).
    Raw(String),
    /// This HTTP status and body.
    Error(u16, String),
    /// Accept the connection, never answer.
    Hang,
}

/// How `GET /localapi/v0/watch-ipn-bus` behaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Bus {
    /// Streams: an initial Notify, then whatever the test pushes.
    Stream,
    /// 400 if the mask has any of these bits (like a daemon that rejects a bit).
    Reject(u64),
    /// Accepts the connection, never sends the response head.
    Hang,
    /// 404, like a daemon without the endpoint.
    Absent,
}

struct State {
    mode: Mode,
    bus: Bus,
    requests: Vec<String>,
    watchers: Vec<Sender<Bytes, Infallible>>,
    /// Watch streams opened so far (200 answers), not counting the one-line netmap reads.
    opened: usize,
    masks: Vec<u64>,
    /// The `NetMap` of the first line of `watch-ipn-bus?mask=8` (`None`: the default for the
    /// status document, see [`netmap_for`]).
    netmap: Option<Value>,
    /// Bodies of `tka/status` and `prefs` (`None`: 404, like a daemon without them).
    tka: Option<Value>,
    prefs: Option<Value>,
    /// netmap reads served so far.
    /// The encoded `/status` body and netmap line, kept until the document changes: a daemon
    /// answers from memory, and a test that times the monitor should not time our encoder.
    status_body: Option<Bytes>,
    netmap_line: Option<Bytes>,
    /// Requests whose `path?query` starts with the key get this answer instead (a daemon that
    /// refuses one request: a 403 for `tka/status`, the 1.104 400 for `mask=8`).
    fails: Vec<(String, u16, String)>,
    /// `POST debug?action=current-netmap` answers served.
    current_netmap_reads: usize,
    /// A status document to switch to as soon as a `current-netmap` has been served: a peer
    /// that arrives with the filter that lets it in.
    status_after_netmap: Option<Value>,
}

pub struct Emulator {
    /// The socket as an unprivileged user reaches it: read permission only (the LocalAPI's
    /// write-level requests get tailscaled's 403).
    pub socket: PathBuf,
    /// The same daemon as root reaches it: write permission too.
    pub root_socket: PathBuf,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Emulator {
    /// Starts serving `doc` at `dir/tailscaled.sock`.
    pub fn start(dir: &Path, doc: Value) -> Emulator {
        let socket = dir.join("tailscaled.sock");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Status(doc),
            bus: Bus::Stream,
            requests: Vec::new(),
            watchers: Vec::new(),
            opened: 0,
            masks: Vec::new(),
            netmap: None,
            tka: Some(json!({"Enabled": false, "TrustedKeys": null})),
            prefs: Some(json!({"RunSSH": false, "AdvertiseRoutes": null})),
            status_body: None,
            netmap_line: None,
            fails: Vec::new(),
            current_netmap_reads: 0,
            status_after_netmap: None,
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let root_socket = dir.join("tailscaled-root.sock");
        for (path, write) in [(&socket, false), (&root_socket, true)] {
            let listener = rt
                .block_on(async { UnixListener::bind(path) })
                .expect("bind emulator socket");
            let st = state.clone();
            rt.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc =
                            hyper::service::service_fn(move |req| handle(st.clone(), write, req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        Emulator {
            socket,
            root_socket,
            state,
            runtime: Some(rt),
        }
    }

    pub fn set(&self, mode: Mode) {
        let mut s = self.state.lock().unwrap();
        s.mode = mode;
        s.status_body = None;
        s.netmap_line = None;
    }

    pub fn set_status(&self, doc: Value) {
        self.set(Mode::Status(doc));
    }

    pub fn set_bus(&self, bus: Bus) {
        self.state.lock().unwrap().bus = bus;
    }

    /// Sets the `NetMap` sent on `watch-ipn-bus?mask=8` (no notify: like a filter-only update
    /// on tailscaled >= 1.100). `Value::Null` for the default of the status document.
    pub fn set_netmap(&self, netmap: Value) {
        let mut s = self.state.lock().unwrap();
        s.netmap = (!netmap.is_null()).then_some(netmap);
        s.netmap_line = None;
    }

    /// Answers every request whose `path?query` starts with `prefix` with `code` and `body`.
    pub fn fail(&self, prefix: &str, code: u16, body: &str) {
        self.state
            .lock()
            .unwrap()
            .fails
            .push((prefix.to_owned(), code, body.to_owned()));
    }

    /// Stops the failures [`Emulator::fail`] set.
    pub fn heal(&self) {
        self.state.lock().unwrap().fails.clear();
    }

    /// Like tailscaled 1.104: `watch-ipn-bus` refuses bits 3 and 8 with its own 400s.
    pub fn like_1_104(&self) {
        self.fail(
            "/localapi/v0/watch-ipn-bus?mask=8",
            400,
            "the NotifyInitialNetMap IPN bus subscription bit is no longer supported; seed from NotifyInitialStatus instead\n",
        );
    }

    /// Switches to `doc` right after the next `current-netmap` answer.
    pub fn set_status_after_netmap(&self, doc: Value) {
        self.state.lock().unwrap().status_after_netmap = Some(doc);
    }

    /// `POST debug?action=current-netmap` answers served (to root).
    pub fn current_netmap_reads(&self) -> usize {
        self.state.lock().unwrap().current_netmap_reads
    }

    pub fn set_tka(&self, tka: Option<Value>) {
        self.state.lock().unwrap().tka = tka;
    }

    pub fn set_prefs(&self, prefs: Option<Value>) {
        self.state.lock().unwrap().prefs = prefs;
    }

    /// Masks of every watch request so far.
    pub fn masks(&self) -> Vec<u64> {
        self.state.lock().unwrap().masks.clone()
    }

    /// Watch streams opened so far.
    pub fn opened(&self) -> usize {
        self.state.lock().unwrap().opened
    }

    /// Waits until `n` watch streams have been opened in all.
    pub fn wait_opened(&self, n: usize, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if self.opened() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends raw bytes to every watcher (include the newline for a whole line).
    pub fn push(&self, bytes: &str) {
        let mut s = self.state.lock().unwrap();
        for w in &mut s.watchers {
            let _ = w.try_send(Frame::data(Bytes::from(bytes.to_owned())));
        }
    }

    /// Sets the status document and notifies watchers the way tailscaled >= 1.100 does.
    pub fn change(&self, doc: Value) {
        self.set_status(doc);
        self.push("{\"PeersChanged\":[{\"ID\":1}]}\n");
    }

    /// Ends every watch stream (like tailscaled exiting mid-stream).
    pub fn cut(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Stops serving and removes the socket, like a tailscaled that exited.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.root_socket);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(code: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("Content-Type", "application/json")
        .header("Tailscale-Version", "1.102.3-emulator")
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

async fn watch(state: Arc<Mutex<State>>, req: &Request<Incoming>) -> Response<Body> {
    let mask: u64 = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("mask=")))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if mask == 8 {
        // A one-shot read of the initial netmap: answered with one line, not counted as a stream.
        let bus = state.lock().unwrap().bus.clone();
        match bus {
            Bus::Absent => return reply(404, "404 page not found\n"),
            Bus::Reject(bits) if mask & bits != 0 => {
                return reply(
                    400,
                    format!("unsupported watch mask bits {}\n", mask & bits),
                )
            }
            Bus::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return reply(500, "");
            }
            _ => {}
        }
        let mut s = state.lock().unwrap();
        if s.netmap_line.is_none() {
            let nm = match (&s.netmap, &s.mode) {
                (Some(nm), _) => serde_json::to_string(nm).unwrap(),
                (None, Mode::Status(doc)) => netmap_for(doc).to_string(),
                _ => "null".to_owned(),
            };
            s.netmap_line = Some(Bytes::from(format!("{{\"NetMap\":{nm}}}\n")));
        }
        return reply(200, s.netmap_line.clone().unwrap());
    }
    let (bus, version, running) = {
        let mut s = state.lock().unwrap();
        s.masks.push(mask);
        let (v, r) = match &s.mode {
            Mode::Status(d) => (
                d["Version"].as_str().unwrap_or("").to_owned(),
                d["BackendState"] == "Running",
            ),
            _ => (String::new(), false),
        };
        (s.bus.clone(), v, r)
    };
    match bus {
        Bus::Absent => reply(404, "404 page not found\n"),
        Bus::Reject(bits) if mask & bits != 0 => reply(
            400,
            format!("unsupported watch mask bits {}\n", mask & bits),
        ),
        Bus::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            reply(500, "")
        }
        _ => {
            let (mut tx, body) = Channel::<Bytes, Infallible>::new(64);
            if mask & 2 != 0 {
                let first = format!(
                    "{{\"Version\":\"{version}\",\"State\":{}}}\n",
                    if running { 6 } else { 4 }
                );
                let _ = tx.try_send(Frame::data(Bytes::from(first)));
            }
            let mut s = state.lock().unwrap();
            s.watchers.push(tx);
            s.opened += 1;
            Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .body(body.boxed())
                .unwrap()
        }
    }
}

/// `whois?addr=IP[:port]`: the node and user profile behind a tailnet address, from the status
/// document (apitype.WhoIsResponse: a tailcfg.Node and a tailcfg.UserProfile).
fn whois(mode: &Mode, query: &str) -> Response<Body> {
    let addr = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("addr="))
        .unwrap_or("");
    let ip = addr
        .rsplit_once(':')
        .filter(|(h, _)| !h.contains(':'))
        .map_or(addr, |(h, _)| h);
    let Mode::Status(doc) = mode else {
        return reply(500, "no status");
    };
    let empty = serde_json::Map::new();
    let peers = doc["Peer"].as_object().unwrap_or(&empty);
    let Some(p) = peers.values().find(|p| {
        p["TailscaleIPs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == ip))
    }) else {
        return reply(404, "no match for IP:port\n");
    };
    let user = &doc["User"][p["UserID"].to_string()];
    reply(
        200,
        serde_json::to_vec(&json!({
            "Node": {
                "ID": p["NodeID"], "StableID": p["ID"], "Name": p["DNSName"], "User": p["UserID"],
                "Key": p["PublicKey"], "Addresses": p["AllowedIPs"],
                "Hostinfo": {"Hostname": p["HostName"], "OS": p["OS"]},
            },
            "UserProfile": {"ID": user["ID"], "LoginName": user["LoginName"], "DisplayName": user["DisplayName"]},
            "CapMap": {}
        }))
        .unwrap(),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    write: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path = req.uri().path().to_owned();
    {
        let mut s = state.lock().unwrap();
        s.requests
            .push(format!("{} {} host={host}", req.method(), req.uri()));
    }
    // tailscaled refuses other hosts without a password (localapi.validHost).
    if !(host.is_empty() || host == "local-tailscaled.sock") {
        return Ok(reply(403, "invalid localapi host"));
    }
    let full = req.uri().to_string();
    if let Some((_, code, body)) = state
        .lock()
        .unwrap()
        .fails
        .iter()
        .find(|(p, _, _)| full.starts_with(p.as_str()))
    {
        return Ok(reply(*code, body.clone()));
    }
    if path == "/localapi/v0/watch-ipn-bus" {
        return Ok(watch(state, &req).await);
    }
    if path == "/localapi/v0/debug" {
        // ipn/localapi/debug.go: write permission first, then POST, then the action.
        if !write {
            return Ok(reply(403, "debug access denied\n"));
        }
        if req.method() != hyper::Method::POST {
            return Ok(reply(405, "POST required\n"));
        }
        if req.uri().query() != Some("action=current-netmap") {
            return Ok(reply(400, "unknown action\n"));
        }
        let mut s = state.lock().unwrap();
        s.current_netmap_reads += 1;
        let nm = match (&s.netmap, &s.mode) {
            (Some(nm), _) => nm.clone(),
            (None, Mode::Status(doc)) => netmap_for(doc),
            _ => return Ok(reply(500, "no netmap\n")),
        };
        if let Some(doc) = s.status_after_netmap.take() {
            s.mode = Mode::Status(doc);
            s.status_body = None;
            s.netmap_line = None;
        }
        return Ok(reply(200, serde_json::to_vec(&nm).unwrap()));
    }
    if path == "/localapi/v0/tka/status" || path == "/localapi/v0/prefs" {
        let s = state.lock().unwrap();
        let body = if path.ends_with("prefs") {
            &s.prefs
        } else {
            &s.tka
        };
        return Ok(match body {
            Some(v) => reply(200, serde_json::to_vec(v).unwrap()),
            None => reply(404, "404 page not found\n"),
        });
    }
    if path == "/localapi/v0/whois" {
        let s = state.lock().unwrap();
        return Ok(whois(&s.mode, req.uri().query().unwrap_or("")));
    }
    if path != "/localapi/v0/status" {
        return Ok(reply(404, "404 page not found\n"));
    }
    let mode = {
        let mut s = state.lock().unwrap();
        if let (Mode::Status(v), None) = (&s.mode, &s.status_body) {
            let body = Bytes::from(serde_json::to_vec_pretty(v).unwrap());
            s.status_body = Some(body);
        }
        match (&s.mode, &s.status_body) {
            (Mode::Status(_), Some(b)) => return Ok(reply(200, b.clone())),
            (m, _) => m.clone(),
        }
    };
    Ok(match mode {
        Mode::Status(_) => unreachable!("answered above"),
        Mode::Raw(s) => reply(200, s),
        Mode::Error(code, body) => reply(code, body),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            reply(500, "")
        }
    })
}

/// The default netmap of a status document: its self node, and a packet filter that lets the
/// first peer (by stable ID) reach TCP 22 on the self node, in both address families.
pub fn netmap_for(doc: &Value) -> Value {
    let self_ips = doc["Self"]["TailscaleIPs"].clone();
    let mut peers: Vec<&Value> = doc["Peer"]
        .as_object()
        .map(|m| m.values().collect())
        .unwrap_or_default();
    peers.sort_by_key(|p| p["ID"].as_str().unwrap_or("").to_owned());
    let rules = match peers.first() {
        Some(p) => json!([{
            "SrcIPs": p["TailscaleIPs"],
            "DstPorts": self_ips.as_array().cloned().unwrap_or_default().iter()
                .map(|ip| json!({"IP": ip, "Ports": {"First": 22, "Last": 22}}))
                .collect::<Vec<_>>(),
        }]),
        None => json!([]),
    };
    json!({
        "SelfNode": {"StableID": doc["Self"]["ID"], "Addresses": self_ips},
        "Peers": [],
        "PacketFilterRules": rules,
        "SSHPolicy": null,
    })
}

/// The `tailcfg.Node` tailscaled >= 1.100 sends in `PeersChanged` for the peer `host` of a status
/// document, with its presence (`Online`, `LastSeen`) as given: a realistic presence patch.
pub fn peer_node(doc: &Value, host: &str, online: bool) -> Value {
    let p = doc["Peer"]
        .as_object()
        .and_then(|m| m.values().find(|p| p["HostName"] == host))
        .unwrap_or_else(|| panic!("no peer {host}"));
    node_of(p, online)
}

/// The `tailcfg.Node` of one peer of a status document.
pub fn node_of(p: &Value, online: bool) -> Value {
    let prefixes = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|ip| {
                        if ip.contains(':') {
                            format!("{ip}/128")
                        } else {
                            format!("{ip}/32")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut node = json!({
        "ID": p["NodeID"], "StableID": p["ID"], "Name": p["DNSName"], "User": p["UserID"],
        "Key": p["PublicKey"], "Machine": "mkey:0000000000000000000000000000000000000000000000000000000000000001",
        "DiscoKey": "discokey:0000000000000000000000000000000000000000000000000000000000000002",
        "Addresses": prefixes(&p["TailscaleIPs"]),
        "AllowedIPs": p["AllowedIPs"].as_array().cloned().unwrap_or_default(),
        "Endpoints": ["192.0.2.10:41641"], "HomeDERP": 1,
        "Hostinfo": {"Hostname": p["HostName"], "OS": p["OS"]},
        "Created": p["Created"], "Cap": 142,
        "Tags": p["Tags"].as_array().cloned().unwrap_or_default(),
        "PrimaryRoutes": p["PrimaryRoutes"].as_array().cloned().unwrap_or_default(),
        "Online": online,
        "LastSeen": chrono::Utc::now().to_rfc3339(),
        "MachineAuthorized": true,
    });
    if let Some(k) = p.get("KeyExpiry") {
        node["KeyExpiry"] = k.clone();
    }
    node
}

/// A netmap with these packet filter rules and SSH policy (the self node of `doc`).
pub fn netmap(doc: &Value, rules: Value, ssh: Value) -> Value {
    let mut nm = netmap_for(doc);
    nm["PacketFilterRules"] = rules;
    nm["SSHPolicy"] = ssh;
    nm
}

/// Reads a fixture from tests/fixtures.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The standard running tailnet (5 devices, 3 users).
pub fn tailnet() -> Value {
    fixture("status-running.json")
}

/// Adds a peer the way tailscaled lists one; returns its node key.
pub fn add_peer(doc: &mut Value, stable_id: &str, host: &str, user_id: i64, ip: &str) -> String {
    let key = format!("nodekey:{:0>64}", format!("{:x}", hash(stable_id)));
    let peer = json!({
        "ID": stable_id,
        "NodeID": 5000 + (hash(stable_id) % 1000) as i64,
        "PublicKey": key,
        "HostName": host,
        "DNSName": format!("{}.tail1a2b3c.ts.net.", host.to_lowercase()),
        "OS": "linux",
        "UserID": user_id,
        "TailscaleIPs": [ip],
        "AllowedIPs": [format!("{ip}/32")],
        "Addrs": null, "CurAddr": "", "Relay": "fra", "PeerRelay": "",
        "RxBytes": 0, "TxBytes": 0,
        "Created": "2026-11-24T10:00:00Z",
        "LastWrite": "0001-01-01T00:00:00Z", "LastSeen": "0001-01-01T00:00:00Z",
        "LastHandshake": "0001-01-01T00:00:00Z",
        "Online": true, "ExitNode": false, "ExitNodeOption": false, "Active": false,
        "PeerAPIURL": null, "TaildropTarget": 0, "NoFileSharingReason": "",
        "InNetworkMap": true, "InMagicSock": true, "InEngine": false,
        "KeyExpiry": "2027-05-01T00:00:00Z"
    });
    doc["Peer"][&key] = peer;
    key
}

/// Adds a user profile.
pub fn add_user(doc: &mut Value, id: i64, login: &str, display: &str) {
    doc["User"][id.to_string()] = json!({"ID": id, "LoginName": login, "DisplayName": display});
}

/// Removes the peer with this host name; returns its (key, peer).
pub fn remove_peer(doc: &mut Value, host: &str) -> (String, Value) {
    let peers = doc["Peer"].as_object_mut().unwrap();
    let key = peers
        .iter()
        .find(|(_, p)| p["HostName"] == host)
        .map(|(k, _)| k.clone())
        .expect("peer exists");
    let p = peers.remove(&key).unwrap();
    (key, p)
}

/// Gives the peer with this host name a new node key (re-authentication, same stable ID).
pub fn rekey_peer(doc: &mut Value, host: &str, new_key_suffix: &str) {
    let (_, mut p) = remove_peer(doc, host);
    let key = format!("nodekey:{:0>64}", new_key_suffix);
    p["PublicKey"] = json!(key);
    doc["Peer"][&key] = p;
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

/// The standard tailnet as a stopped daemon reports it.
pub fn stopped() -> Value {
    let mut d = tailnet();
    d["BackendState"] = "Stopped".into();
    d["Peer"] = Value::Null;
    d
}

/// Sets a peer's `Online` in a status document.
pub fn set_online(doc: &mut Value, host: &str, online: bool) {
    let peers = doc["Peer"].as_object_mut().unwrap();
    let p = peers.values_mut().find(|p| p["HostName"] == host).unwrap();
    p["Online"] = online.into();
}

/// Changes presence the way tailscaled >= 1.100 announces it: the status document and a
/// `PeersChanged` with the node.
pub fn flip(emu: &Emulator, doc: &mut Value, host: &str, online: bool) {
    set_online(doc, host, online);
    emu.set_status(doc.clone());
    let node = peer_node(doc, host, online);
    emu.push(&format!(
        "{}\n",
        serde_json::json!({ "PeersChanged": [node] })
    ));
}

/// The standard tailnet with `n` more peers (`joiner-0`…, `nJOIN0CNTRL`…) joined.
pub fn join(emu: &Emulator, n: usize) {
    let mut doc = tailnet();
    for i in 0..n {
        add_peer(
            &mut doc,
            &format!("nJOIN{i}CNTRL"),
            &format!("joiner-{i}"),
            6201,
            &format!("100.102.{}.{}", i / 250, i % 250 + 1),
        );
    }
    emu.set_status(doc);
}
