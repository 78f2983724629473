//! A real SMTP server for the tests: aiosmtpd (PyPI) with its Maildir handler, on loopback.
//! `tests/setup/install-deps.sh` installs it; a test that needs it and cannot find it fails with
//! the reason instead of skipping.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Header names in order, lower-case.
    pub header_names: Vec<String>,
    /// Envelope recipients as aiosmtpd recorded them (X-RcptTo).
    pub rcpt_to: String,
}

/// The Python with aiosmtpd installed.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TM_AIOSMTPD") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/tailscale-monitor/venv/bin/python");
    assert!(
        p.exists(),
        "the real SMTP server (aiosmtpd) is not installed: run tests/setup/install-deps.sh \
         (or tests/run-all.sh), or set TM_AIOSMTPD to a python with aiosmtpd"
    );
    p
}

/// A loopback TCP port held by a bound socket that does not listen: connections to it are
/// refused (a server that is down), and no other test can bind it, since only sockets that also
/// set SO_REUSEPORT may share it. Servers the test starts on it later (`Smtp::start_on`) set
/// SO_REUSEPORT and take its connections while they run. Held until dropped.
pub struct PortHold {
    pub port: u16,
    _socket: socket2::Socket,
}

impl PortHold {
    pub fn new() -> PortHold {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind 127.0.0.1:0");
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        PortHold { port, _socket: s }
    }
}

/// A loopback port on which nothing listens, for as long as the hold lives.
pub fn closed_port() -> PortHold {
    PortHold::new()
}

/// Reads the port a child server printed on its first stdout line (up to `secs`).
pub fn reported_port(child: &mut Child, what: &str, secs: u64) -> u16 {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not report its port within {secs} s"));
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what} did not start (printed {line:?})"))
}

impl Smtp {
    /// Starts aiosmtpd on a port of its own choosing.
    pub fn start() -> Smtp {
        Smtp::spawn(None)
    }

    /// Starts aiosmtpd on the held port (a server that was down comes up).
    pub fn start_on(hold: &PortHold) -> Smtp {
        Smtp::spawn(Some(hold.port))
    }

    fn spawn(port: Option<u16>) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/smtp_server.py"
        );
        let mut cmd = Command::new(python());
        cmd.arg(script).arg(&maildir);
        if let Some(p) = port {
            cmd.arg(p.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting aiosmtpd");
        // A cold first import of aiosmtpd on a loaded machine takes seconds: be generous.
        let port = reported_port(&mut child, "aiosmtpd", 120);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        Smtp {
            port,
            maildir,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    let m = e.metadata().unwrap().modified().unwrap();
                    files.push((m, e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| parse(&std::fs::read(p).unwrap()))
            .collect()
    }

    /// Waits until at least `n` messages arrived (up to `secs`), then returns all of them.
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = self.mails();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse(raw: &[u8]) -> Mail {
    let msg = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("parsable mail");
    Mail {
        raw: String::from_utf8_lossy(raw).into_owned(),
        subject: msg.subject().unwrap_or_default().to_owned(),
        text: msg.body_text(0).map(|s| s.into_owned()).unwrap_or_default(),
        html: msg.body_html(0).map(|s| s.into_owned()).unwrap_or_default(),
        header_names: msg
            .headers()
            .iter()
            .map(|h| h.name().to_lowercase())
            .collect(),
        rcpt_to: msg
            .header_raw("X-RcptTo")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// The first mail `pred` accepts, waiting up to `secs`; fails naming `what` and the subjects.
pub fn wait_mail(smtp: &Smtp, what: &str, secs: u64, pred: impl Fn(&Mail) -> bool) -> Mail {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(m) = smtp.mails().into_iter().find(|m| pred(m)) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail with {what} within {secs} s; got: {:#?}",
            smtp.mails().iter().map(|m| &m.subject).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many mails' text contains `needle`.
pub fn count(smtp: &Smtp, needle: &str) -> usize {
    smtp.mails()
        .iter()
        .filter(|m| m.text.contains(needle))
        .count()
}
