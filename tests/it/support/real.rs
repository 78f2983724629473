//! Real daemons on loopback: headscale as the control server (with its embedded DERP relay) and
//! tailscaled instances in userspace-networking mode, each with its own socket and state dir.
//! Binaries come from `tests/setup/install-deps.sh` (cached under ~/.cache/tailscale-monitor).
//! A missing binary fails the test with the reason; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{http_get, port_guess};

/// A tailscaled/tailscale pair at one release.
#[derive(Clone, Debug)]
pub struct Release {
    pub label: &'static str,
    pub tailscaled: PathBuf,
    pub tailscale: PathBuf,
}

fn cached(env: &str, file: &str) -> PathBuf {
    let p = std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/tailscale-monitor/bin")
            .join(file)
    });
    assert!(
        p.exists(),
        "{} is not installed ({env} unset and {} missing): run tests/setup/install-deps.sh",
        file,
        p.display()
    );
    p
}

/// tailscale >= 1.102 (PeersChanged only to bit-12 watchers, WireGuard state on bit 18).
pub fn new_release() -> Release {
    Release {
        label: "1.102",
        tailscaled: cached("TM_TAILSCALED_NEW", "tailscaled-v1.102.5"),
        tailscale: cached("TM_TAILSCALE_NEW", "tailscale-v1.102.5"),
    }
}

/// tailscale 1.104, the current release: no netmap on the IPN bus any more, so the packet filter
/// is readable only by root or the operator (through the privileged relay for the monitor).
pub fn cur_release() -> Release {
    Release {
        label: "1.104",
        tailscaled: cached("TM_TAILSCALED_CUR", "tailscaled-v1.104.2"),
        tailscale: cached("TM_TAILSCALE_CUR", "tailscale-v1.104.2"),
    }
}

impl Release {
    /// The netmap left the IPN bus (1.104 and later).
    pub fn netmap_off_the_bus(&self) -> bool {
        self.label == "1.104"
    }
}

/// The monitor of `node`, installed as an administrator would on this release: on 1.104 it runs
/// as the unprivileged account `tmtest-mon` beside the privileged relay (run as root, group
/// `tmtest-relay`), so that the privilege boundary is what is tested; on older releases, as the
/// test's own user, as the suites always did.
pub fn monitor_for(rel: &Release, node: &Node, extra: &str) -> (super::Monitor, Option<Relayed>) {
    let mon = super::Monitor::new(node.socket(), extra);
    if !rel.netmap_off_the_bus() {
        return (mon, None);
    }
    let mon = mon.run_as("tmtest-mon");
    let relay = Relayed::start(node);
    mon.set_privileged_socket(&relay.relay.socket);
    (mon, Some(relay))
}

/// The privileged relay of one node, its socket in a directory every user may traverse (the
/// socket itself is 0660 root:tmtest-relay).
pub struct Relayed {
    pub relay: super::PrivilegedRelay,
    _dir: tempfile::TempDir,
}

impl Relayed {
    pub fn start(node: &Node) -> Relayed {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let relay = super::PrivilegedRelay::start(
            &dir.path().join("privileged.sock"),
            node.socket(),
            "tmtest-relay",
        );
        Relayed { relay, _dir: dir }
    }
}

/// tailscale < 1.98 (a full NetMap on every change, no WireGuard state on the bus).
pub fn old_release() -> Release {
    Release {
        label: "1.96",
        tailscaled: cached("TM_TAILSCALED_OLD", "tailscaled-v1.96.5"),
        tailscale: cached("TM_TAILSCALE_OLD", "tailscale-v1.96.5"),
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Headscale {
    pub dir: tempfile::TempDir,
    pub url: String,
    config: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl Headscale {
    /// Starts headscale on loopback ports; a port taken meanwhile by another test is retried
    /// with new ones.
    pub fn start() -> Headscale {
        let mut last = String::new();
        for _ in 0..10 {
            match Headscale::try_start() {
                Ok(hs) => return hs,
                Err(log) if log.contains("address already in use") => last = log,
                Err(log) => panic!("headscale did not come up: {log}"),
            }
        }
        panic!("headscale found no free ports in 10 tries: {last}")
    }

    fn try_start() -> Result<Headscale, String> {
        let bin = cached("TM_HEADSCALE", "headscale-v0.29.3");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (http, stun, metrics, grpc) = (port_guess(), port_guess(), port_guess(), port_guess());
        let url = format!("http://127.0.0.1:{http}");
        // The embedded DERP relay, described with a static map so clients reach it over plain
        // HTTP (tailscaled runs with TS_DEBUG_USE_DERP_HTTP=1).
        std::fs::write(
            dir.path().join("derp.yaml"),
            format!(
                "regions:\n  999:\n    regionid: 999\n    regioncode: hs\n    regionname: test\n    nodes:\n      - name: 999a\n        regionid: 999\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        stunport: {stun}\n        derpport: {http}\n"
            ),
        )
        .unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                r#"server_url: {url}
listen_addr: 127.0.0.1:{http}
metrics_listen_addr: 127.0.0.1:{metrics}
grpc_listen_addr: 127.0.0.1:{grpc}
grpc_allow_insecure: false
noise:
  private_key_path: {d}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: hs
    region_name: test
    verify_clients: false
    stun_listen_addr: 127.0.0.1:{stun}
    private_key_path: {d}/derp_server_private.key
    automatically_add_embedded_derp_region: false
    ipv4: 127.0.0.1
  urls: []
  paths: [{d}/derp.yaml]
  auto_update_enabled: false
  update_frequency: 24h
disable_check_updates: true
database:
  type: sqlite
  sqlite:
    path: {d}/db.sqlite
    write_ahead_log: true
log:
  level: warn
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: tailnet.test
  override_local_dns: false
  nameservers:
    global: []
unix_socket: {d}/headscale.sock
unix_socket_permission: "0770"
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("headscale.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("serve")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting headscale");
        let mut hs = Headscale {
            dir,
            url,
            config,
            bin,
            child: Some(child),
        };
        let log = |hs: &Headscale| {
            std::fs::read_to_string(hs.dir.path().join("headscale.log")).unwrap_or_default()
        };
        // Up means: still running (a port taken by someone else makes it exit), its own HTTP
        // health answer on our port, and the CLI served over its socket.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(_))) = hs.child.as_mut().map(|c| c.try_wait()) {
                return Err(log(&hs));
            }
            let healthy =
                http_get(http, "/health").is_some_and(|(c, b)| c == 200 && b.contains("pass"));
            if healthy && hs.cmd(&["users", "list", "-o", "json"]).status.code() == Some(0) {
                if let Some(Ok(None)) = hs.child.as_mut().map(|c| c.try_wait()) {
                    return Ok(hs);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not up within 60 s: {}", log(&hs)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&ok(self.cmd(&a), &format!("headscale {}", args.join(" ")))).unwrap()
    }

    /// Creates a user; returns its ID.
    pub fn user(&self, name: &str) -> u64 {
        self.json(&["users", "create", name])["id"]
            .as_u64()
            .unwrap()
    }

    /// Sets the tailnet policy (HuJSON) at run time: `headscale policy set --file`, as an
    /// administrator (or an attacker with the admin console) would.
    pub fn set_policy(&self, policy: &str) {
        let file = self.dir.path().join("policy.hujson");
        std::fs::write(&file, policy).unwrap();
        ok(
            self.cmd(&["policy", "set", "--file", &file.display().to_string()]),
            "headscale policy set",
        );
    }

    /// A new API key for the REST API (`headscale apikeys create`), and its prefix.
    pub fn api_key(&self) -> (String, String) {
        let key = ok(
            self.cmd(&["apikeys", "create", "-e", "1h"]),
            "headscale apikeys create",
        )
        .trim()
        .to_owned();
        let prefix = self
            .json(&["apikeys", "list"])
            .as_array()
            .and_then(|a| a.last().cloned())
            .and_then(|k| k["prefix"].as_str().map(str::to_owned))
            .expect("the key just created is listed");
        (key, prefix)
    }

    /// A `[control]` section reading this headscale with a new API key written (0600) into `dir`,
    /// and the key's prefix.
    pub fn control_config(&self, dir: &Path) -> (String, String) {
        let (key, prefix) = self.api_key();
        let key_file = dir.join("headscale-api-key");
        std::fs::write(&key_file, &key).unwrap();
        super::private(&key_file);
        let section = format!(
            "\n[control]\nkind = \"headscale\"\nurl = \"{}\"\napi_key_file = \"{}\"\n",
            self.url,
            key_file.display()
        );
        (section, prefix)
    }

    /// Deletes an API key, as an administrator revoking it would.
    pub fn delete_api_key(&self, prefix: &str) {
        ok(
            self.cmd(&["apikeys", "delete", "--prefix", prefix, "--force"]),
            "headscale apikeys delete",
        );
    }

    /// A reusable pre-auth key that tags the nodes it registers.
    pub fn tagged_key(&self, user: u64, tag: &str) -> String {
        let v = self.json(&[
            "preauthkeys",
            "create",
            "--user",
            &user.to_string(),
            "--reusable",
            "-e",
            "1h",
            "--tags",
            tag,
        ]);
        v["key"].as_str().unwrap().to_owned()
    }

    /// A reusable pre-auth key for the user.
    pub fn preauth_key(&self, user: u64) -> String {
        let v = self.json(&[
            "preauthkeys",
            "create",
            "--user",
            &user.to_string(),
            "--reusable",
            "-e",
            "1h",
        ]);
        v["key"].as_str().unwrap().to_owned()
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.json(&["nodes", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Deletes the node with this name (headscale's `givenName`/`name`).
    pub fn delete_node(&self, name: &str) {
        let node = self
            .nodes()
            .into_iter()
            .find(|n| n["given_name"] == name || n["name"] == name)
            .unwrap_or_else(|| panic!("node {name} not in headscale"));
        let id = node["id"].as_u64().unwrap().to_string();
        ok(
            self.cmd(&["nodes", "delete", "-i", &id, "--force"]),
            "headscale nodes delete",
        );
    }
}

impl Drop for Headscale {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub release: Release,
    child: Option<Child>,
    /// More tailscaled flags (`--socks5-server=127.0.0.1:0`).
    daemon_args: Vec<String>,
}

impl Node {
    /// Starts tailscaled and joins the tailnet with the pre-auth key.
    pub fn join(release: &Release, hs: &Headscale, name: &str, key: &str) -> Node {
        Node::join_via(release, &hs.url, name, key)
    }

    /// [`Node::join`] with `login_server` as the control plane's URL (a relay to headscale).
    pub fn join_via(release: &Release, login_server: &str, name: &str, key: &str) -> Node {
        Node::join_with(release, login_server, name, key, &[])
    }

    /// [`Node::join_via`] with more tailscaled flags.
    pub fn join_with(
        release: &Release,
        login_server: &str,
        name: &str,
        key: &str,
        daemon_args: &[&str],
    ) -> Node {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Traversable, not listable: the socket (0666, tailscaled's own) is reachable by an
        // unprivileged monitor, the state beside it (0600) is not.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let socket = dir.path().join("tailscaled.sock");
        let mut n = Node {
            name: name.to_owned(),
            dir,
            socket,
            release: release.clone(),
            child: None,
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
        };
        n.start_daemon();
        n.up_via(login_server, key, &[]);
        n
    }

    /// Starts (or restarts) tailscaled with the node's state dir and socket.
    pub fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tailscaled.log"))
            .unwrap();
        let child = Command::new(&self.release.tailscaled)
            .arg("--tun=userspace-networking")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--statedir={}", self.dir.path().display()))
            .arg("--port=0")
            .args(&self.daemon_args)
            .env("TS_DEBUG_USE_DERP_HTTP", "1")
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting tailscaled");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cli(&["status", "--json"]).status.code().is_none()
            || !self.socket.exists()
            || self.cli(&["version"]).status.code() != Some(0)
        {
            assert!(
                Instant::now() < deadline,
                "tailscaled {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills tailscaled (the state dir stays).
    pub fn stop_daemon(&mut self) {
        kill(&mut self.child);
    }

    pub fn up(&self, hs: &Headscale, key: &str, extra: &[&str]) {
        self.up_via(&hs.url, key, extra);
    }

    fn up_via(&self, login_server: &str, key: &str, extra: &[&str]) {
        let mut args = vec![
            "up".to_owned(),
            format!("--login-server={login_server}"),
            format!("--authkey={key}"),
            format!("--hostname={}", self.name),
            "--accept-dns=false".to_owned(),
            "--timeout=60s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(self.cli(&a), &format!("tailscale up ({})", self.name));
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.release.tailscale)
            .arg(format!("--socket={}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ip(&self) -> String {
        ok(self.cli(&["ip", "-4"]), "tailscale ip")
            .trim()
            .to_owned()
    }

    /// Opens a WireGuard session to `ip` (a TSMP ping travels inside WireGuard).
    pub fn connect_to(&self, ip: &str) {
        let _ = self.cli(&["ping", "--tsmp", "-c", "3", "--timeout=3s", ip]);
    }

    pub fn status_json(&self) -> String {
        ok(self.cli(&["status", "--json"]), "tailscale status --json")
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The port of the SOCKS5 server tailscaled opened (`--socks5-server=127.0.0.1:0`), as it
    /// logged it.
    pub fn socks5_port(&self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("tailscaled.log")).unwrap_or_default();
            if let Some(p) = log.lines().find_map(|l| {
                l.split("SOCKS5 listening on ")
                    .nth(1)
                    .and_then(|a| a.trim().rsplit(':').next())
                    .and_then(|p| p.parse().ok())
            }) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no SOCKS5 port in {}'s log",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// This node's stable ID and MagicDNS name (without the final dot).
    pub fn identity(&self) -> (String, String) {
        let s: Value = serde_json::from_str(&self.status_json()).unwrap();
        (
            s["Self"]["ID"].as_str().unwrap().to_owned(),
            s["Self"]["DNSName"]
                .as_str()
                .unwrap()
                .trim_end_matches('.')
                .to_owned(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A headscale policy: the team may reach the server and each other; mallory only her own.
pub const P0: &str = r#"{
  // The team may reach the server and each other; mallory only her own devices.
  "tagOwners": {"tag:server": ["ops@"]},
  "acls": [
    {"action": "accept", "src": ["ops@"], "dst": ["tag:server:*", "ops@:*"]},
    {"action": "accept", "src": ["mallory@"], "dst": ["mallory@:*"]}
  ]
}"#;

/// [`P0`] with more ACL entries and an `ssh` section.
pub fn policy(extra_acls: &str, ssh: &str) -> String {
    P0.replace(
        "\"dst\": [\"mallory@:*\"]}\n  ]",
        &format!("\"dst\": [\"mallory@:*\"]}}{extra_acls}\n  ]{ssh}"),
    )
}
