//! Shared test support: the LocalAPI emulator, the real SMTP server launcher, and a runner for
//! the built `tailscale-monitor` binary.
#![allow(dead_code)]

pub mod emulator;
pub mod real;
pub mod receiver;
pub mod smtp;

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
            "[tailscale]\nsocket = \"{}\"\ntimeout = \"2s\"\n\n[state]\ndir = \"{}\"\n\n{extra}",
            socket.display(),
            dir.path().join("state").display()
        );
        std::fs::write(&config, text).unwrap();
        private(&config);
        Monitor { dir, config }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
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
        Daemon(self.cmd(&["run"]).spawn().unwrap())
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

/// Mode 0600, as the monitor requires of files that hold secrets.
pub fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `[[notify]]` table for an e-mail channel to a local SMTP port.
pub fn email_channel(port: u16) -> String {
    format!(
        "[[notify]]\nkind = \"email\"\nto = [\"admin@example.com\"]\nfrom = \"tailscale-monitor@web-01.example.com\"\nsmtp = \"smtp://127.0.0.1:{port}\"\ntimeout = \"5s\"\n"
    )
}

/// A background `tailscale-monitor run`, killed on drop so a failed test leaves nothing behind.
pub struct Daemon(pub std::process::Child);

impl Daemon {
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
