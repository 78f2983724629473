//! A real Matrix homeserver for the tests: Synapse from PyPI (`matrix-synapse`, in its own venv
//! under ~/.cache/tailscale-monitor/synapse, installed by tests/setup/install-deps.sh), on
//! loopback with SQLite, a registered bot user, its access token and a room.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Synapse {
    pub port: u16,
    pub token: String,
    pub room: String,
    child: Child,
    /// Its data, removed with it.
    _dir: tempfile::TempDir,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("TM_SYNAPSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/tailscale-monitor/synapse")
        });
    let p = dir.join("bin").join(name);
    assert!(
        p.exists(),
        "Synapse is not installed ({}): run tests/setup/install-deps.sh",
        p.display()
    );
    p
}

/// One HTTP/1.0 request with a JSON body to a loopback port; the status and the JSON answer.
pub fn http_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (code, json)
}

impl Synapse {
    /// Starts Synapse on a loopback port (guessed, retried when taken), registers `bot`, logs it
    /// in and creates a room.
    pub fn start() -> Synapse {
        let mut last = String::new();
        for _ in 0..5 {
            match Synapse::try_start() {
                Ok(s) => return s,
                Err(e)
                    if e.contains("Address already in use")
                        || e.contains("address already in use") =>
                {
                    last = e
                }
                Err(e) => panic!("synapse did not come up: {e}"),
            }
        }
        panic!("synapse found no free port: {last}")
    }

    fn try_start() -> Result<Synapse, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let py = bin("python");
        let config = d.join("homeserver.yaml");
        let out = Command::new(&py)
            .current_dir(d)
            .args([
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                "test.local",
                "--config-path",
            ])
            .arg(&config)
            .arg("--data-directory")
            .arg(d)
            .args(["--generate-config", "--report-stats=no"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synapse --generate-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::port_guess();
        let mut text = std::fs::read_to_string(&config).unwrap();
        text = text
            .replace("    - ::1\n", "")
            .replace("port: 8008", &format!("port: {port}"));
        let i = text.find("trusted_key_servers:").unwrap_or(text.len());
        text.truncate(i);
        // No federation, no key servers (nothing outside loopback), no rate limits in the way.
        text += "trusted_key_servers: []\nsuppress_key_server_warning: true\n\
                 rc_message: {per_second: 1000, burst_count: 1000}\n\
                 rc_registration: {per_second: 1000, burst_count: 1000}\n\
                 rc_room_creation: {per_second: 1000, burst_count: 1000}\n\
                 rc_login:\n  address: {per_second: 1000, burst_count: 1000}\n  account: {per_second: 1000, burst_count: 1000}\n  failed_attempts: {per_second: 1000, burst_count: 1000}\n";
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(d.join("synapse.out")).unwrap();
        let mut child = Command::new(&py)
            .current_dir(d)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting synapse");
        let read_log = || {
            let mut s = std::fs::read_to_string(d.join("synapse.out")).unwrap_or_default();
            s += &std::fs::read_to_string(d.join("homeserver.log")).unwrap_or_default();
            s
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(read_log());
            }
            if super::http_get(port, "/_matrix/client/versions")
                .is_some_and(|(c, b)| c == 200 && b.contains("versions"))
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("not up within 120 s: {}", read_log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let reg = Command::new(bin("register_new_matrix_user"))
            .args(["-u", "bot", "-p", "bot-password-1", "-a", "-c"])
            .arg(&config)
            .arg(format!("http://127.0.0.1:{port}"))
            .output()
            .unwrap();
        assert!(
            reg.status.success(),
            "register_new_matrix_user: {}",
            String::from_utf8_lossy(&reg.stderr)
        );
        let (code, login) = http_json(
            port,
            "POST",
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bot"}, "password": "bot-password-1"}),
        );
        assert_eq!(code, 200, "login: {login}");
        let token = login["access_token"].as_str().unwrap().to_owned();
        let (code, room) = http_json(
            port,
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            &json!({"name": "alerts"}),
        );
        assert_eq!(code, 200, "createRoom: {room}");
        Ok(Synapse {
            port,
            token,
            room: room["room_id"].as_str().unwrap().to_owned(),
            child,
            _dir: dir,
        })
    }

    /// The `m.room.message` contents of the room, oldest first.
    pub fn messages(&self) -> Vec<Value> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            self.room.replace('!', "%21").replace(':', "%3A")
        );
        let (code, v) = http_json(self.port, "GET", &path, Some(&self.token), &Value::Null);
        assert_eq!(code, 200, "{v}");
        let mut out: Vec<Value> = v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| e["content"].clone())
            .collect();
        out.reverse();
        out
    }
}
