//! A real SMTP server for the tests: aiosmtpd (PyPI) with its Maildir handler, on loopback.
//! `tests/setup/install-deps.sh` installs it; a test that needs it and cannot find it fails with
//! the reason instead of skipping.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtp {
    pub fn start() -> Smtp {
        Smtp::start_on(free_port())
    }

    /// Starts aiosmtpd on `port` and waits until it accepts connections.
    pub fn start_on(port: u16) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting aiosmtpd");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port} within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
