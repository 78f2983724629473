//! Posture: the hardening advice as checks with evidence, read from the control view, this node's
//! view and this server's own files. The checks themselves are in `diff::posture` (pure); the
//! facts they read come from the edge.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Severity, StableNodeId};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// The data could not be read (a missing scope, no `[control]`): never a pass.
    Unknown,
    /// The control plane has no such feature (Headscale: device approval, Tailnet Lock, …).
    NotAvailable,
    /// No API can tell (MFA at the identity provider): a reminder.
    Manual,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
            Status::NotAvailable => "n/a",
            Status::Manual => "manual",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier, e.g. `TN-01`.
    pub id: String,
    /// `tailnet`, `policy`, `devices`, `keys`, `server`, `manual`.
    pub area: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    /// The value read and where from (or why it could not be).
    pub evidence: String,
    /// How to fix it: a console path, a command, a policy snippet.
    pub fix: String,
}

/// A whole report, in check order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Counts by status, for summaries.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    /// The highest severity among failing checks.
    pub fn worst_failure(&self) -> Option<Severity> {
        self.findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| f.severity)
            .max()
    }

    /// One line: "posture: 12 pass, 3 fail (worst: critical), 2 unknown, …".
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} pass, {} fail",
            self.count(Status::Pass),
            self.count(Status::Fail)
        );
        if let Some(w) = self.worst_failure() {
            s += &format!(" (worst: {})", w.as_str());
        }
        for st in [Status::Unknown, Status::NotAvailable, Status::Manual] {
            let n = self.count(st);
            if n > 0 {
                s += &format!(", {n} {}", st.as_str());
            }
        }
        s
    }
}

/// An auth key (Tailscale `/keys`, Headscale pre-auth key) or API key, as posture needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFacts {
    pub id: String,
    /// `auth`, `api`, `client` (OAuth), Headscale `preauth`.
    pub kind: String,
    pub description: String,
    pub reusable: bool,
    pub preauthorized: bool,
    pub created: Option<DateTime<Utc>>,
    /// `None`: never expires.
    pub expires: Option<DateTime<Utc>>,
    /// Revoked, expired or used up (single-use and used): no longer a risk.
    pub spent: bool,
}

/// A webhook endpoint (Tailscale `/webhooks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookFacts {
    pub url: String,
    pub provider: String,
    pub subscriptions: Vec<String>,
}

/// Per-device facts that only posture reads (volatile: kept out of the compared control view).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub last_seen: Option<DateTime<Utc>>,
    pub is_external: Option<bool>,
    pub update_available: Option<bool>,
    pub multiple_connections: Option<bool>,
    pub tailnet_lock_error: String,
}

/// What the control plane told about posture beyond the control view. `None` everywhere means
/// "could not be read" (a scope the credential lacks, or a control plane without it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPosture {
    pub devices: BTreeMap<StableNodeId, DeviceFacts>,
    pub auth_keys: Option<Vec<KeyFacts>>,
    pub api_keys: Option<Vec<KeyFacts>>,
    pub webhooks: Option<Vec<WebhookFacts>>,
    /// `security` contact: its e-mail and whether it still needs verification.
    pub security_contact: Option<(String, bool)>,
    /// A configuration log stream is set up.
    pub log_streaming: Option<bool>,
}

/// One file or directory of the monitor, as this server sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFacts {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// `Some(true)` when `lsattr` would show `i`; `None` when the filesystem cannot say.
    pub immutable: Option<bool>,
    /// Why the file could not be examined.
    pub error: String,
}

/// This server's own facts: the monitor's files, its sandbox, the socket it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFacts {
    pub binary: Option<PathFacts>,
    pub config: Option<PathFacts>,
    pub state: Option<PathFacts>,
    pub socket: Option<PathFacts>,
    /// The uid the monitor runs as.
    pub uid: u32,
    /// Under systemd (`INVOCATION_ID`): `NoNewPrivs` and seccomp mode from `/proc/self/status`.
    pub sandbox: Option<(bool, u32)>,
    /// `[guard] mode = "enforce"` is configured.
    #[serde(default)]
    pub guard_enforce: bool,
}

/// What the store keeps between passes: each check's last status.
pub type KnownPosture = BTreeMap<String, Status>;
