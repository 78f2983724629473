//! A loopback HTTP server that records every request (for webhook, ntfy, Slack, Discord, Telegram
//! and Gotify payloads) and answers with the status codes a test queues (200 when none is).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::emulator::{self, Emulator};
use super::{webhook, Monitor};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// When the request's body had arrived (for latencies free of the waiter's polling).
    #[allow(
        dead_code,
        reason = "read by the benchmarks (bench/cost.rs), which share this module"
    )]
    pub received: std::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", self.path))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    codes: VecDeque<u16>,
    /// The `Location` of 3xx answers.
    location: Option<String>,
}

pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let (url, rt) = super::serve_http(state.clone(), handle);
        Receiver {
            url,
            state,
            _rt: rt,
        }
    }

    /// Answers the next requests with these codes, in order (0: answer 200 only after 10 s).
    pub fn queue(&self, codes: &[u16]) {
        self.state.lock().unwrap().codes.extend(codes);
    }

    /// Where 3xx answers point.
    pub fn redirect_to(&self, url: &str) {
        self.state.lock().unwrap().location = Some(url.to_owned());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests to `path` (answered with any code).
    pub fn at(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn wait(&self, path: &str, n: usize, secs: u64) -> Vec<Recorded> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.at(path);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let (code, location) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method,
            path,
            headers,
            body,
            received: std::time::Instant::now(),
        });
        (s.codes.pop_front().unwrap_or(200), s.location.clone())
    };
    // 0: the request is taken (recorded) but answered only after 10 s, past a client's timeout.
    let code = if code == 0 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        200
    } else {
        code
    };
    let mut resp = Response::builder().status(code);
    if let (300..=399, Some(l)) = (code, location) {
        resp = resp.header("Location", l);
    }
    Ok(resp
        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        .unwrap())
}

/// The emulator's standard tailnet, a loopback receiver, and a monitor whose config is
/// `config(receiver URL)`.
pub fn with_receiver(
    config: impl FnOnce(&str) -> String,
) -> (tempfile::TempDir, Emulator, Receiver, Monitor) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    let rx = Receiver::start();
    let mon = Monitor::new(&emu.socket, &config(&rx.url));
    (dir, emu, rx, mon)
}

/// [`with_receiver`] whose first channel is the webhook `hook` at `/hook`; `extra` (given the
/// receiver's URL) is appended to the config.
pub fn with_hook(
    extra: impl FnOnce(&str) -> String,
) -> (tempfile::TempDir, Emulator, Receiver, Monitor) {
    with_receiver(|url| webhook("hook", &format!("{url}/hook")) + &extra(url))
}

/// The kinds of every event the receiver got at `/hook`, in order.
pub fn hook_kinds(rx: &Receiver) -> Vec<String> {
    rx.at("/hook")
        .iter()
        .flat_map(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}
