//! Shared test support: the LocalAPI emulator, the real SMTP server launcher, and a runner for
//! the built `tailscale-monitor` binary.

pub mod admin_api;
pub mod emulator;
pub mod netns;
pub mod real;
pub mod receiver;
pub mod smtp;
pub mod synapse;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tailscale-monitor"))
}

/// A monitor installation in a temp dir: its config file and state dir.
pub struct Monitor {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The unprivileged account every command runs as (`None`: the test's own user).
    user: Option<String>,
    /// Another build of the binary every command runs (a benchmark's baseline); `None`: the one
    /// under test.
    pub bin: Option<PathBuf>,
}

/// What one run of the binary printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Monitor {
    /// Writes a config watching `socket`, with `extra` appended (e.g. a [[notify]] table).
    pub fn new(socket: &Path, extra: &str) -> Monitor {
        let dir = tempfile::tempdir().unwrap();
        Self::in_dir(dir, socket, extra)
    }

    pub fn in_dir(dir: tempfile::TempDir, socket: &Path, extra: &str) -> Monitor {
        let config = dir.path().join("config.toml");
        let text = format!(
            "[tailscale]\nsocket = \"{}\"\nprivileged_socket = \"{}\"\ntimeout = \"10s\"\n\n[state]\ndir = \"{}\"\n\n{extra}",
            socket.display(),
            dir.path().join("privileged.sock").display(),
            dir.path().join("state").display()
        );
        std::fs::write(&config, text).unwrap();
        private(&config);
        Monitor {
            dir,
            config,
            user: None,
            bin: None,
        }
    }

    /// Where this monitor looks for the privileged relay (nothing listens there until a test
    /// starts one with [`PrivilegedRelay::start`]).
    pub fn privileged_socket(&self) -> PathBuf {
        self.dir.path().join("privileged.sock")
    }

    /// Runs every command of this monitor as `user`, an unprivileged account that
    /// tests/setup/install-deps.sh creates (`tmtest-mon`, in group `tmtest-relay`;
    /// `tmtest-other`, in no group of ours): the binary is copied where that user can run it and
    /// the whole installation is handed to it, as the package does for `tailscale-monitor`.
    pub fn run_as(mut self, user: &str) -> Monitor {
        let known = Command::new("id").arg("-u").arg(user).output().unwrap();
        assert!(
            known.status.success(),
            "no account {user}: run tests/setup/install-deps.sh as root"
        );
        std::fs::copy(bin(), self.dir.path().join("tailscale-monitor")).unwrap();
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(chown.success(), "chown to {user}");
        self.user = Some(user.to_owned());
        self
    }

    /// Points `[tailscale] privileged_socket` at `path`.
    pub fn set_privileged_socket(&self, path: &Path) {
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            &format!(
                "privileged_socket = \"{}\"",
                self.privileged_socket().display()
            ),
            &format!("privileged_socket = \"{}\"", path.display()),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match &self.user {
            None => Command::new(self.bin.clone().unwrap_or_else(bin)),
            Some(u) => {
                // setpriv execs the monitor in place: signals and the exit status are its own.
                let mut c = Command::new("setpriv");
                c.args(["--reuid", u, "--regid", u, "--init-groups", "--"])
                    .arg(self.dir.path().join("tailscale-monitor"));
                c
            }
        };
        c.arg("--config").arg(&self.config).args(args);
        c.env(
            "TAILSCALE_MONITOR_LOG",
            std::env::var("TM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().unwrap().into()
    }

    pub fn check(&self) -> Run {
        self.run(&["check"])
    }

    /// `events --json` as values, newest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let r = self.run(&["events", "--json", "--limit", "1000000"]);
        assert_eq!(r.code, 0, "events failed: {r:?}");
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// Starts `run` in the background; it is killed when the guard drops.
    pub fn spawn_run(&self) -> Daemon {
        Daemon(self.cmd(&["run"]).spawn().unwrap(), None)
    }

    /// Starts `run` in the background with these environment variables added.
    pub fn spawn_run_env(&self, vars: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.cmd(&["run"]);
        cmd.envs(vars.iter().copied());
        Daemon(cmd.spawn().unwrap(), None)
    }

    /// Starts `run` with its log (level info) captured, for tests that wait on what it says.
    pub fn spawn_run_logged(&self) -> Daemon {
        use std::io::BufRead;
        let mut child = self
            .cmd(&["run"])
            .env(
                "TAILSCALE_MONITOR_LOG",
                std::env::var("TM_TEST_RUN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        // Keeps draining the log so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon(child, Some(log))
    }

    /// Starts `run` with `[metrics] listen` on port 0 (appended to the config) and returns the
    /// port the daemon reports having bound, read from its log.
    pub fn spawn_run_with_metrics(&self) -> (Daemon, u16) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        if !text.contains("[metrics]") {
            std::fs::write(
                &self.config,
                text + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            )
            .unwrap();
        }
        let daemon = self.spawn_run_logged();
        let port = daemon.bound_port("metrics listening");
        (daemon, port)
    }

    /// Polls the event log until `kind` appears (or `secs` pass).
    pub fn wait_for_event(&self, kind: &str, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            let r = self.run(&["events", "--json"]);
            if r.code == 0
                && serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout)
                    .is_ok_and(|v| v.iter().any(|e| e["kind"] == kind))
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// How many events of this kind are in the whole log.
    pub fn count_events(&self, kind: &str) -> usize {
        self.events().iter().filter(|e| e["kind"] == kind).count()
    }

    pub fn event_kinds(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A port the kernel had free a moment ago. For servers that must be told their port before they
/// bind it (headscale's URL, Alertmanager): only a guess, so their launchers retry with a new one
/// when the server then fails to bind. Servers that can bind port 0 and report it do that instead.
pub fn port_guess() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on a loopback port (HTTP/1.0: no chunked bodies); the status code and body, or None
/// when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, "")
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// A loopback HTTP/1.1 server on a port of its own choosing, on its own runtime: each request
/// goes to `handle(state, request)`. Returns the base URL and the runtime (the server lives as
/// long as it does).
pub fn serve_http<S, F, Fut>(state: S, handle: F) -> (String, tokio::runtime::Runtime)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<
                hyper::Response<http_body_util::Full<bytes::Bytes>>,
                std::convert::Infallible,
            >,
        > + Send
        + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (st, handle) = (state.clone(), handle.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rt)
}

/// Mode 0600, as the monitor requires of files that hold secrets.
pub fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Writes an executable shell script `dir/name` with this body (after `#!/bin/sh`).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Writes `value` (and a newline) to `dir/name`, mode 0600, as a `*_file` secret; returns the path.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    private(&p);
    p
}

/// The `[[notify]]` table for an e-mail channel to a local SMTP port.
pub fn email_channel(port: u16) -> String {
    format!(
        "[[notify]]\nkind = \"email\"\nto = [\"admin@example.com\"]\nfrom = \"tailscale-monitor@web-01.example.com\"\nsmtp = \"smtp://127.0.0.1:{port}\"\ntimeout = \"30s\"\n"
    )
}

/// A background `tailscale-monitor run`, killed on drop so a failed test leaves nothing behind;
/// with its log when started by `spawn_run_logged`.
pub struct Daemon(
    pub std::process::Child,
    Option<std::sync::Arc<std::sync::Mutex<String>>>,
);

impl Daemon {
    /// Waits until the log has `n` lines containing `needle` (up to `secs`); returns the last.
    /// How many lines of the log so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        let log = self.1.as_ref().expect("started with spawn_run_logged");
        let text = log.lock().unwrap().clone();
        text.lines().filter(|l| l.contains(needle)).count()
    }

    pub fn wait_log(&self, needle: &str, n: usize, secs: u64) -> String {
        let log = self.1.as_ref().expect("started with spawn_run_logged");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let text = log.lock().unwrap().clone();
            let hits: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if hits.len() >= n {
                return hits[n - 1].to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "run did not log {needle:?} ({n}x) within {secs} s:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The loopback port of the log line that says `what` ("metrics listening", "webhooks
    /// listening"): the port the daemon bound itself.
    pub fn bound_port(&self, what: &str) -> u16 {
        let line = self.wait_log(what, 1, 120);
        line.rsplit("127.0.0.1:")
            .next()
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"))
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.0.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP relay on loopback to `target`, so that a test can cut one node's way to its control
/// plane (and only its): connections in flight are shut down and new ones closed at once, until
/// [`Relay::restore`]. Binds port 0.
pub struct Relay {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(up) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, open, conns }
    }

    /// Shuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The finding `id` of a `posture --json` report.
pub fn posture_finding(report: &str, id: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(report).unwrap_or_else(|e| panic!("{e}: {report}"));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id} in {report}"))
}

/// `tailscale-monitor privileged --listen`: the root side, in the foreground, relaying `tailscaled`
/// (a socket with write permission) to members of `group`. Killed when dropped.
pub struct PrivilegedRelay {
    child: std::process::Child,
    pub socket: PathBuf,
}

impl PrivilegedRelay {
    pub fn start(socket: &Path, tailscaled: &Path, group: &str) -> PrivilegedRelay {
        let child = Command::new(bin())
            .args(["privileged", "--listen"])
            .arg(socket)
            .args(["--group", group, "--socket"])
            .arg(tailscaled)
            .arg("--state-dir")
            .arg(socket.with_file_name("guard-state"))
            .env("TAILSCALE_MONITOR_LOG", "warn")
            .spawn()
            .unwrap();
        let relay = PrivilegedRelay {
            child,
            socket: socket.to_owned(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the privileged relay did not listen at {}",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        relay
    }
}

impl Drop for PrivilegedRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name of this process's primary group (the relay's `--group` for a monitor run as us).
pub fn own_group() -> String {
    let out = Command::new("id").arg("-gn").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A `[[notify]]` webhook channel named `name`.
pub fn webhook(name: &str, url: &str) -> String {
    format!(
        "[[notify]]\nkind = \"webhook\"\nname = \"{name}\"\nurl = \"{url}\"\ntimeout = \"20s\"\n"
    )
}

/// Runs `cmd` to its end with its data segment (heap, anonymous mappings, thread stacks) bounded
/// to `limit` bytes (`RLIMIT_DATA`), and returns its standard output and exit status. A child
/// that tries to grow past the bound fails to allocate and aborts. This is a bound, not a
/// measurement: `wait4`'s peak RSS of a child spawned from this (large, multi-threaded) test
/// process includes this process's own peak, carried over the child's `execve`.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    limit: u64,
) -> (String, std::process::ExitStatus) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    (out, status)
}

/// One HTTP/1.1 GET on the socket, as tailscaled's serve sends it; the status, headers and body.
pub fn unix_get(socket: &Path, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Recomputes the whole chain, so that the local log verifies on its own (what root would do).
pub fn rechain(db: &rusqlite::Connection) {
    use sha2::Digest as _;
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT id, data FROM events ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = String::new();
    for (id, data) in rows {
        let hash = hex::encode(sha2::Sha256::digest(format!("{prev}\n{data}")));
        db.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            rusqlite::params![prev, hash, id],
        )
        .unwrap();
        prev = hash;
    }
}
