//! Any program, run without a shell, with the webhook JSON on stdin; exit 0 means delivered.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{toml_str, Keys};
use crate::notify::http::{self, SendError};
use crate::sanitize;

#[derive(Debug, Clone)]
pub struct Exec {
    pub command: Vec<String>,
}

impl Room for Exec {
    const NAME: &'static str = "exec";
    const BATCH: usize = 500;

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        let c = k
            .raw()
            .command
            .as_ref()
            .ok_or_else(|| k.missing("command", ""))?;
        if c.get_ref().is_empty() || !std::path::Path::new(&c.get_ref()[0]).is_absolute() {
            return Err(k.at(
                c,
                "command",
                "must be a list starting with an absolute program path",
            ));
        }
        k.program(std::path::Path::new(&c.get_ref()[0]), c, "command")?;
        Ok(Exec {
            command: c.get_ref().clone(),
        })
    }

    fn show(&self, out: &mut String) {
        let v: Vec<String> = self.command.iter().map(|a| toml_str(a)).collect();
        out.push_str(&format!("command = [{}]\n", v.join(", ")));
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        Ok(run(&self.command, m.timeout, &http::payload(m)).await?)
    }
}

/// Runs the program (no shell) with the payload on stdin; success is exit status 0.
async fn run(command: &[String], timeout: Duration, payload: &Value) -> Result<(), String> {
    let mut child = http::child_command(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("exec {}: {e}", command[0]))?;
    let body = serde_json::to_vec(payload).expect("payload serializes");
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its stdin is not an error.
            let _ = stdin.write_all(&body).await;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("exec {}: no exit within {timeout:?} (killed)", command[0]))?
        .map_err(|e| format!("exec {}: {e}", command[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(sanitize::line(
            &format!(
                "exec {}: {}: {}",
                command[0],
                out.status,
                stderr.lines().next().unwrap_or("")
            ),
            300,
        ))
    }
}
