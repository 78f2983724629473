//! The small root side, and the monitor's client of it.
//!
//! The monitor parses names that whoever registers a device writes, so it never holds root,
//! tailscaled's write permission or `CAP_NET_ADMIN`. The few things that need them go through
//! this narrow interface, the way OpenSSH's monitor and Postfix's daemons split privilege: a
//! unix socket only the monitor's group may open, one request per connection, one line of JSON
//! each way, and a root side ([`server`]) that validates the request, does one fixed thing, and
//! passes on only what the monitor needs. It takes no names, builds no messages and holds no
//! channel secrets.
//!
//! Protocol version 1:
//!
//! ```text
//! → {"v":3,"op":"netmap"}
//! ← {"v":3,"netmap":{"self_id":"…","self_addresses":["100.64.0.1",…],"rules":[…]|null,"ssh":[…]|null}}
//! ← {"v":3,"error":"one line"}                       (any failure)
//! ```
//!
//! `netmap` is `POST /localapi/v0/debug?action=current-netmap` (tailscaled >= 1.104 serves the
//! packet filter to nobody else), cut down to the filter, the SSH policy and this node's own ID
//! and addresses: no peer, no key. It runs on a thread without any capability.
//!
//! The guard (`[guard]`, [`root`], [`nft`]): the root side owns the decision. The monitor may
//! ask it to sync (apply what root decided, from root's own config, records and netmap), read
//! the table (checked whole) and close tailscaled's own doors when root's config says so; only
//! root (`SO_PEERCRED` uid 0, the owner's `sudo`) may approve, revoke, init, or turn it off or on.
//!
//! ```text
//! → {"v":3,"op":"guard_sync"}                      ← {"v":3,"decision":{…}}
//! → {"v":3,"op":"guard_plan"}                      ← the same, changing nothing
//! → {"v":3,"op":"guard_read"}                      ← {"v":3,"guard":{"present":true,"differs":null,…}}
//! → {"v":3,"op":"doors_close"}                     ← {"v":3,"ok":true}
//! → {"v":3,"op":"guard_approve","approve":[{"id":"n1","node_key":"nodekey:…"}]}   (uid 0)
//! → {"v":3,"op":"guard_init","approve":[…]}        (uid 0)
//! → {"v":3,"op":"guard_revoke","revoke":["n1"]}    (uid 0)
//! → {"v":3,"op":"guard_off"} / {"v":3,"op":"guard_on"}   (uid 0)
//! ```
//!
//! No request carries a set, an interface or a name of the monitor's choosing.

pub mod caps;
pub mod nft;
pub mod root;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::model::guard::{Decision, Enforced};
pub use crate::source::netmap::FilterOnly;
pub use root::Confirmed;

/// The protocol version both sides speak (3: the root side owns the guard's decision).
pub const PROTOCOL: u32 = 3;
/// The longest request line the root side reads (a guard set of 16,384 IPv6 and as many IPv4
/// addresses is about 1.1 MB).
pub const MAX_REQUEST: u64 = 2 << 20;
/// The longest answer the monitor reads (a filter of 10,000 rules is about 2 MB).
pub const MAX_REPLY: u64 = 32 << 20;

/// What may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// This node's packet filter and SSH policy, from tailscaled's live netmap.
    Netmap,
    /// Puts what root decided in force, and says what that is.
    GuardSync,
    /// What root decided, changing nothing (`guard status`).
    GuardPlan,
    /// What the guard's table holds (checked whole), and the sources it dropped.
    GuardRead,
    /// Turns Tailscale SSH and the web client off (root's `tailscaled_doors = "close"` only).
    DoorsClose,
    /// Approves devices by stable ID and node key (uid 0).
    GuardApprove,
    /// Approves devices and puts the guard in force (uid 0).
    GuardInit,
    /// Shuts devices out again (uid 0).
    GuardRevoke,
    /// Removes the enforcement until `guard_on` (uid 0).
    GuardOff,
    /// Puts it back (uid 0).
    GuardOn,
}

impl Op {
    /// Whether only root may ask.
    pub fn root_only(self) -> bool {
        matches!(
            self,
            Op::GuardApprove | Op::GuardInit | Op::GuardRevoke | Op::GuardOff | Op::GuardOn
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approve: Option<Vec<Confirmed>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmap: Option<FilterOnly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Enforced>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the relay could not answer, as the monitor reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("no privileged relay at {} (not installed, or its socket unit is not enabled)", .0.display())]
    Absent(PathBuf),
    #[error("privileged relay {}: permission denied (the monitor's user is not in the socket's group)", .0.display())]
    Denied(PathBuf),
    #[error("privileged relay {}: {what}", path.display())]
    Failed { path: PathBuf, what: String },
}

/// Sends `req` to the relay at `socket` and reads its one answer (an `error` answer is an
/// error).
async fn exchange(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, RelayError> {
    let failed = |what: String| RelayError::Failed {
        path: socket.to_owned(),
        what,
    };
    let stream = tokio::time::timeout(timeout, UnixStream::connect(socket))
        .await
        .map_err(|_| failed(format!("no connection within {timeout:?}")))?
        .map_err(|e| connect_error(socket, e))?;
    exchange_on(stream, socket, req, timeout).await
}

fn connect_error(socket: &Path, e: std::io::Error) -> RelayError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            RelayError::Absent(socket.to_owned())
        }
        std::io::ErrorKind::PermissionDenied => RelayError::Denied(socket.to_owned()),
        _ => RelayError::Failed {
            path: socket.to_owned(),
            what: e.to_string(),
        },
    }
}

/// Connects to the relay now (blocking; the root side checks the credentials this process has
/// at this moment), for a request sent later with [`guard_admin_on`].
pub fn connect_now(socket: &Path) -> Result<std::os::unix::net::UnixStream, RelayError> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|e| connect_error(socket, e))
}

/// [`exchange`] on a connection already made.
async fn exchange_on(
    mut stream: UnixStream,
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Reply, RelayError> {
    let failed = |what: String| RelayError::Failed {
        path: socket.to_owned(),
        what,
    };
    let talk = async {
        let mut line = serde_json::to_vec(req).expect("request serializes");
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| failed(format!("sending the request: {e}")))?;
        let mut answer = Vec::new();
        match BufReader::new(stream.take(MAX_REPLY + 1))
            .read_until(b'\n', &mut answer)
            .await
        {
            // A peer the root side refuses is closed on with its request unread: a reset.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => answer.clear(),
            Err(e) => return Err(failed(format!("reading the answer: {e}"))),
            Ok(_) => {}
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(timeout, talk)
        .await
        .map_err(|_| failed(format!("no answer within {timeout:?}")))??;
    if answer.len() as u64 > MAX_REPLY {
        return Err(failed(format!("an answer longer than {MAX_REPLY} bytes")));
    }
    if answer.last() != Some(&b'\n') {
        // A connection closed without a word: most likely refused by the root side's peer
        // check, which says why in its own log.
        return Err(failed(
            "the connection closed without an answer (see the relay's log: journalctl -u 'tailscale-monitor-privileged@*')".into(),
        ));
    }
    let reply: Reply =
        serde_json::from_slice(&answer).map_err(|e| failed(format!("malformed answer: {e}")))?;
    if reply.v != PROTOCOL {
        return Err(failed(format!(
            "speaks protocol {}, this monitor {PROTOCOL}: install the same version of both",
            reply.v
        )));
    }
    if let Some(e) = &reply.error {
        return Err(failed(crate::sanitize::line(e, 300)));
    }
    Ok(reply)
}

fn request(op: Op) -> Request {
    Request {
        v: PROTOCOL,
        op,
        approve: None,
        revoke: None,
    }
}

/// Asks the relay at `socket` for this node's filter and SSH policy.
pub async fn netmap(socket: &Path, timeout: Duration) -> Result<FilterOnly, RelayError> {
    let reply = exchange(socket, &request(Op::Netmap), timeout).await?;
    let failed = |what: &str| RelayError::Failed {
        path: socket.to_owned(),
        what: what.to_owned(),
    };
    let n = reply
        .netmap
        .ok_or_else(|| failed("an answer with neither netmap nor error"))?;
    if n.self_id.is_empty()
        || n.self_addresses.is_empty()
        || n.self_addresses
            .iter()
            .any(|a| a.parse::<std::net::IpAddr>().is_err())
    {
        return Err(failed(
            "the netmap names no valid self node (is tailscaled logged in?)",
        ));
    }
    Ok(n)
}

fn decision(socket: &Path, reply: Reply) -> Result<Decision, RelayError> {
    reply.decision.ok_or_else(|| RelayError::Failed {
        path: socket.to_owned(),
        what: "an answer without the guard's decision".into(),
    })
}

/// Asks the root side to put what it decided in force.
pub async fn guard_sync(socket: &Path, timeout: Duration) -> Result<Decision, RelayError> {
    let reply = exchange(socket, &request(Op::GuardSync), timeout).await?;
    decision(socket, reply)
}

/// What the root side decided, changing nothing.
pub async fn guard_plan(socket: &Path, timeout: Duration) -> Result<Decision, RelayError> {
    let reply = exchange(socket, &request(Op::GuardPlan), timeout).await?;
    decision(socket, reply)
}

/// An owner's request (uid 0) on `stream` ([`connect_now`], made as root): approve (`init`: and
/// put in force), revoke, off, on.
pub async fn guard_admin_on(
    stream: std::os::unix::net::UnixStream,
    socket: &Path,
    op: Op,
    approve: Option<Vec<Confirmed>>,
    revoke: Option<Vec<String>>,
    timeout: Duration,
) -> Result<Decision, RelayError> {
    let req = Request {
        approve,
        revoke,
        ..request(op)
    };
    stream
        .set_nonblocking(true)
        .map_err(|e| connect_error(socket, e))?;
    let stream = UnixStream::from_std(stream).map_err(|e| connect_error(socket, e))?;
    let reply = exchange_on(stream, socket, &req, timeout).await?;
    decision(socket, reply)
}

/// Turns Tailscale SSH and the web client off.
pub async fn doors_close(socket: &Path, timeout: Duration) -> Result<(), RelayError> {
    exchange(socket, &request(Op::DoorsClose), timeout)
        .await
        .map(|_| ())
}

/// What the guard's table holds now.
pub async fn guard_read(socket: &Path, timeout: Duration) -> Result<Enforced, RelayError> {
    let reply = exchange(socket, &request(Op::GuardRead), timeout).await?;
    reply.guard.ok_or_else(|| RelayError::Failed {
        path: socket.to_owned(),
        what: "an answer without the guard's table".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: the relay's request and answer lines never panic either side.
    #[test]
    fn fuzz_relay_lines() {
        crate::fuzz::check(
            "relay lines",
            &[
                br#"{"v":3,"op":"netmap"}"#,
                br#"{"v":3,"netmap":{"self_id":"n1","self_addresses":["100.64.0.1"],"rules":[{"srcs":["*"],"dsts":[{"ip":"*","first":0,"last":65535}],"protos":[],"caps":[]}],"ssh":null}}"#,
            ],
            |b| {
                let _ = serde_json::from_slice::<Request>(b);
                let _ = serde_json::from_slice::<Reply>(b);
            },
        );
    }

    #[test]
    fn the_wire_is_what_the_module_doc_says() {
        let req = serde_json::to_string(&request(Op::Netmap)).unwrap();
        assert_eq!(req, r#"{"v":3,"op":"netmap"}"#);
        let req = serde_json::to_string(&request(Op::DoorsClose)).unwrap();
        assert_eq!(req, r#"{"v":3,"op":"doors_close"}"#);
        for bad in [
            r#"{"v":3,"op":"shell"}"#,
            r#"{"v":3,"op":"netmap","path":"/etc/shadow"}"#,
            r#"{"op":"netmap"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let err = serde_json::to_string(&Reply {
            v: 3,
            error: Some("x".into()),
            ..Reply::default()
        })
        .unwrap();
        assert_eq!(err, r#"{"v":3,"error":"x"}"#);
    }
}
