//! The CLI fallback: `tailscale status --json`, for hosts where the socket is not reachable
//! directly (the CLI may find it through paths or permissions we do not have).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;

use super::status_json::Status;
use super::SourceError;
use crate::model::Snapshot;

#[derive(Debug, Clone)]
pub struct Cli {
    program: PathBuf,
    socket: Option<PathBuf>,
    timeout: Duration,
}

impl Cli {
    pub fn new(program: &Path, socket: Option<&Path>, timeout: Duration) -> Self {
        Cli {
            program: program.to_owned(),
            socket: socket.map(Path::to_owned),
            timeout,
        }
    }

    pub async fn status(&self) -> Result<Snapshot, SourceError> {
        let err =
            |what: String| SourceError(format!("{} status --json: {what}", self.program.display()));
        let mut cmd = crate::notify::http::child_command(&self.program);
        if let Some(s) = &self.socket {
            cmd.arg(format!("--socket={}", s.display()));
        }
        cmd.args(["status", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.timeout, cmd.output())
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| err(e.to_string()))?;
        // A stopped daemon still prints a status document; prefer its precise BackendState error.
        match Status::parse(&out.stdout) {
            Ok(s) => s.into_snapshot(Utc::now()).map_err(|e| err(e.to_string())),
            Err(e) if out.status.success() => Err(err(e.to_string())),
            Err(_) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Err(err(format!(
                    "exited with {}: {}",
                    out.status,
                    crate::sanitize::line(stderr.lines().next().unwrap_or(""), 200)
                )))
            }
        }
    }
}
