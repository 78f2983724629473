//! Real tailscaled in kernel TUN mode, each node in a network namespace this test creates
//! (`../shared/spec/netns-testing.md`): a veth pair with a TEST-NET-1 address so that tailscaled
//! sees the network up, and headscale (in the root namespace, on loopback) reached through a
//! unix-socket bridge, so that every packet stays on loopback or inside the test's namespaces.
//! Needs root, `ip`, `socat` and `nft`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::real::{Headscale, Release};

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    );
}

/// This run's prefix; namespaces of runs whose process is gone are removed first.
fn prefix() -> String {
    let me = std::process::id();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if let Some(pid) = name
                .strip_prefix("tmg-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
    }
    format!("tmg-{me}")
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address [`Netns::link_to`] puts behind the other namespace (TEST-NET-3).
pub const BEHIND: &str = "203.0.113.10";

/// A network namespace, removed (with what runs in it) when dropped.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    /// A namespace with `lo` up and one veth pair (`d0` at 192.0.2.`n`/24, the default route).
    pub fn new(label: &str, n: u8) -> Netns {
        let name = format!("{}-{label}", prefix());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("192.0.2.{n}/24"),
            "dev",
            "d0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "d0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "d1", "up"]);
        ip(&["-n", &ns.name, "route", "add", "default", "dev", "d0"]);
        ns
    }

    /// `cmd` run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Starts `cmd` (from [`Netns::cmd`]); it is killed with the namespace. Returns its pid
    /// (`ip netns exec` execs the program, so it is the program's).
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning in {}: {e}", self.name));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Whether a TCP connection to `addr:port` from here gets the listener's greeting.
    pub fn connects(&self, addr: &str, port: u16) -> bool {
        let out = self
            .cmd("timeout")
            .args([
                "4",
                "socat",
                "-T2",
                "-",
                &format!("TCP:{addr}:{port},connect-timeout=2"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("guarded-hello")
    }

    /// What a TCP connection from here to `addr:port` reads in its first seconds (an SSH
    /// server's banner), empty when nothing answers.
    pub fn banner(&self, addr: &str, port: u16) -> String {
        let out = self
            .cmd("timeout")
            .args([
                "6",
                "socat",
                "-T3",
                "-",
                &format!("TCP:{addr}:{port},connect-timeout=3"),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a DNS query from here to `server`:53 gets an answer (any answer: NXDOMAIN counts).
    pub fn dns_answers(&self, server: &str, name: &str) -> bool {
        let family = if server.contains(':') {
            "AF_INET6"
        } else {
            "AF_INET"
        };
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 1, 0, 1]);
        let hex: String = q.iter().map(|b| format!("{b:02x}")).collect();
        let code = format!(
            "import socket\ns=socket.socket(socket.{family},socket.SOCK_DGRAM)\ns.settimeout(3)\n\
             s.sendto(bytes.fromhex('{hex}'),('{server}',53))\n\
             try:\n print('answer', len(s.recv(512)))\nexcept Exception as e:\n print('none', e)"
        );
        let out = self.cmd("python3").args(["-c", &code]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).starts_with("answer")
    }

    /// A TCP listener on `port` that greets every connection.
    pub fn listen(&mut self, port: u16) {
        let mut c = self.cmd("socat");
        c.args([
            &format!("TCP-LISTEN:{port},fork,reuseaddr"),
            "SYSTEM:echo guarded-hello",
        ]);
        self.spawn(c);
    }

    /// A veth link from this namespace (`e0`, `mine`/24) to `other` (`e1`, `theirs`/24), which
    /// then routes everything through this one.
    pub fn link_to(&self, other: &Netns, mine: &str, theirs: &str) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "add",
            "e0",
            "type",
            "veth",
            "peer",
            "name",
            "e1",
            "netns",
            &other.name,
        ]);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("{mine}/24"),
            "dev",
            "e0",
        ]);
        ip(&[
            "-n",
            &other.name,
            "addr",
            "add",
            &format!("{theirs}/24"),
            "dev",
            "e1",
        ]);
        ip(&["-n", &self.name, "link", "set", "e0", "up"]);
        ip(&["-n", &other.name, "link", "set", "e1", "up"]);
        ip(&[
            "-n",
            &other.name,
            "route",
            "replace",
            "default",
            "via",
            mine,
            "dev",
            "e1",
        ]);
        // A host address behind `other` that this namespace reaches through a gateway, not on a
        // subnet of its own: tailscaled's exit node leaves its directly attached LANs out of
        // 0.0.0.0/0 ("guest wifi", ipnlocal's shrinkDefaultRoute).
        ip(&[
            "-n",
            &other.name,
            "addr",
            "add",
            &format!("{BEHIND}/32"),
            "dev",
            "lo",
        ]);
        ip(&[
            "-n",
            &self.name,
            "route",
            "add",
            &format!("{BEHIND}/32"),
            "via",
            theirs,
        ]);
        run(
            self.cmd("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]),
            "sysctl ip_forward",
        );
    }

    /// `nft` run inside the namespace.
    pub fn nft(&self, args: &[&str]) -> Output {
        self.cmd("nft").args(args).output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// headscale's port, reachable from every namespace through a unix socket.
pub struct Bridge {
    pub port: u16,
    pub socket: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Bridge {
    pub fn start(hs: &Headscale) -> Bridge {
        let port: u16 = hs.url.rsplit(':').next().unwrap().parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("hs.sock");
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", socket.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .spawn()
            .expect("socat (apt install socat)");
        wait("the headscale bridge", 30, || socket.exists());
        Bridge {
            port,
            socket,
            child,
            _dir: dir,
        }
    }

    /// Listens on 127.0.0.1:`port` inside `ns`, forwarding to headscale.
    pub fn into(&self, ns: &mut Netns) {
        let mut c = ns.cmd("socat");
        c.arg(format!(
            "TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr",
            self.port
        ))
        .arg(format!("UNIX-CONNECT:{}", self.socket.display()));
        ns.spawn(c);
        let (name, port) = (ns.name.clone(), self.port);
        wait("the bridge inside the namespace", 30, || {
            Command::new("ip")
                .args(["netns", "exec", &name, "bash", "-c"])
                .arg(format!("echo > /dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tailscaled in kernel TUN mode (`tailscale0`) in its own namespace, joined to headscale.
pub struct KernelNode {
    pub ns: Netns,
    pub socket: PathBuf,
    pub release: Release,
    pub dir: tempfile::TempDir,
    daemon: u32,
}

impl KernelNode {
    pub fn join(
        rel: &Release,
        bridge: &Bridge,
        name: &str,
        n: u8,
        key: &str,
        extra: &[&str],
    ) -> KernelNode {
        let mut ns = Netns::new(name, n);
        bridge.into(&mut ns);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tailscaled.sock");
        let mut node = KernelNode {
            ns,
            socket,
            release: rel.clone(),
            dir,
            daemon: 0,
        };
        node.start_daemon();
        let mut args = vec![
            "up".to_owned(),
            format!("--login-server=http://127.0.0.1:{}", bridge.port),
            format!("--authkey={key}"),
            format!("--hostname={name}"),
            "--accept-dns=false".to_owned(),
            "--timeout=60s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = node.cli(&a);
        assert!(
            out.status.success(),
            "tailscale up ({name}): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(node.dir.path().join("tailscaled.log")).unwrap_or_default()
        );
        node
    }

    /// Starts tailscaled (again: with its state, it comes back logged in).
    pub fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tailscaled.log"))
            .unwrap();
        let mut c = self.ns.cmd(&self.release.tailscaled);
        c.arg("--tun=tailscale0")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--statedir={}", self.dir.path().display()))
            .arg("--port=0")
            .env("TS_DEBUG_USE_DERP_HTTP", "1")
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.daemon = self.ns.spawn(c);
        wait("tailscaled (kernel mode)", 60, || {
            self.socket.exists() && self.cli(&["version"]).status.success()
        });
    }

    /// Stops tailscaled (SIGTERM; it removes `tailscale0`) and waits until it is gone.
    pub fn stop_daemon(&mut self) {
        unsafe { libc::kill(self.daemon as i32, libc::SIGTERM) };
        let pid = self.daemon;
        wait("tailscaled to exit", 60, || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.release.tailscale)
            .arg(format!("--socket={}", self.socket.display()))
            .args(args)
            .output()
            .unwrap()
    }

    /// What a failed assertion needs: routes, rules, the firewall and tailscaled's view.
    pub fn diag(&self) -> String {
        let mut out = format!("==== {}\n", self.ns.name);
        for args in [
            &["ip", "rule"][..],
            &["ip", "route", "show", "table", "all"],
            &["ip", "addr"],
            &["nft", "list", "ruleset"],
        ] {
            let o = self.ns.cmd(args[0]).args(&args[1..]).output().unwrap();
            out += &format!(
                "$ {}\n{}{}\n",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let st = self.cli(&["status"]);
        out += &format!(
            "$ tailscale status\n{}\n",
            String::from_utf8_lossy(&st.stdout)
        );
        let log =
            std::fs::read_to_string(self.dir.path().join("tailscaled.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        out += &format!(
            "tailscaled.log (last 40):\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        out
    }

    pub fn ip(&self) -> String {
        let out = self.cli(&["ip", "-4"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The port the tests' listeners greet on.
pub const PORT: u16 = 8080;

/// The relay's command line in `ns` (for `--restore` too).
pub fn relay_cmd(
    ns: &Netns,
    dir: &std::path::Path,
    tailscaled: &std::path::Path,
    config: &std::path::Path,
) -> Command {
    let mut c = ns.cmd(super::bin());
    c.arg("--config")
        .arg(config)
        .arg("privileged")
        .args(["--group", "root", "--socket"])
        .arg(tailscaled)
        .arg("--state-dir")
        .arg(dir.join("guard"))
        .env("TAILSCALE_MONITOR_LOG", "info");
    c
}

/// The relay as root inside `ns` (its `nft` acts on that namespace), its socket in `dir` and its
/// records in `dir/guard`, taking its `[guard]` from `config`; and its pid.
pub fn relay_with_pid(
    ns: &mut Netns,
    dir: &std::path::Path,
    tailscaled: &std::path::Path,
    config: &std::path::Path,
) -> (std::path::PathBuf, u32) {
    let socket = dir.join("privileged.sock");
    let mut c = relay_cmd(ns, dir, tailscaled, config);
    c.arg("--listen").arg(&socket);
    let pid = ns.spawn(c);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the relay did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (socket, pid)
}

/// A monitor of the tailscaled at `tailscaled` with `config`, and the relay as root in `ns`,
/// which takes its `[guard]` from that config; `dir` (0755) holds the relay's socket and records.
pub struct Guarded {
    pub mon: super::Monitor,
    pub relay: PathBuf,
    pub dir: tempfile::TempDir,
}

pub fn guarded(ns: &mut Netns, tailscaled: &Path, config: &str) -> Guarded {
    use std::os::unix::fs::PermissionsExt;
    let mon = super::Monitor::new(tailscaled, config);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (relay, _) = relay_with_pid(ns, dir.path(), tailscaled, &mon.config);
    mon.set_privileged_socket(&relay);
    Guarded { mon, relay, dir }
}

/// How long until a connection from `ns` to `ip`:[`PORT`] gets the greeting (`None`: not within `secs`).
pub fn connects_within(ns: &Netns, ip: &str, secs: u64) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if ns.connects(ip, PORT) {
            return Some(start.elapsed());
        }
    }
    None
}

/// Whether the guard's table exists in `ns`.
pub fn table_exists(ns: &Netns) -> bool {
    ns.nft(&["list", "table", "inet", "tailscale_monitor_guard"])
        .status
        .success()
}
