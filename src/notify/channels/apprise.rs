//! The Apprise CLI, for its ~100 services: the URLs, with their credentials, stay in a file only
//! the service can read, and Apprise reads them itself (`--config`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{toml_str, Keys};
use crate::notify::http::{self, SendError};
use crate::notify::render::Rendered;
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Apprise {
    pub program: PathBuf,
    pub urls_file: PathBuf,
}

impl Room for Apprise {
    const NAME: &'static str = "apprise";

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let r = k.raw();
        let f = r
            .urls_file
            .as_ref()
            .ok_or_else(|| k.missing("urls_file", " (Apprise URLs, one per line)"))?;
        // The URLs carry the services' credentials: the file is a secret like any other.
        k.secret(&r.urls_file, "urls_file")?;
        if let Some(p) = r.program.as_ref().filter(|p| p.get_ref().is_absolute()) {
            k.program(p.get_ref(), p, "program")?;
        }
        Ok(Apprise {
            program: r
                .program
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_else(|| PathBuf::from("apprise")),
            urls_file: f.get_ref().clone(),
        })
    }

    fn show(&self, out: &mut String) {
        out.push_str(&format!(
            "program = {}\nurls_file = {}\n",
            toml_str(&self.program.display().to_string()),
            toml_str(&self.urls_file.display().to_string())
        ));
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        Ok(run(self, m.timeout, m.rendered).await?)
    }
}

/// The Apprise CLI (no shell): `apprise -t TITLE -b BODY URL…` with the URLs read from the file
/// now, so they never appear in the config or our logs.
async fn run(a: &Apprise, timeout: Duration, r: &Rendered) -> Result<(), String> {
    let (program, urls_file) = (a.program.as_path(), a.urls_file.as_path());
    let urls: Vec<String> = std::fs::read_to_string(urls_file)
        .map_err(|e| format!("apprise: {}: {e}", urls_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(format!("apprise: {} lists no URL", urls_file.display()));
    }
    // The URLs hold the services' credentials: Apprise reads them from the file itself
    // (`--config`, its TEXT format: one URL per line), so they never appear in a command line
    // every local user can read in /proc. Read here only to check the file and to redact.
    let child = http::child_command(program)
        .arg("-t")
        .arg(sanitize::line(&r.subject, 250))
        .arg("-b")
        .arg(http::cap(r.text.trim(), 30_000))
        .arg("--config")
        .arg(urls_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("apprise {}: {e}", program.display()))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("apprise: no exit within {timeout:?} (killed)"))?
        .map_err(|e| format!("apprise: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    // Apprise's messages may quote a URL: keep them out of our logs.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned();
    let redacted = urls.iter().fold(first, |acc, u| acc.replace(u, "(url)"));
    Err(sanitize::line(
        &format!("apprise: {}: {redacted}", out.status),
        300,
    ))
}
