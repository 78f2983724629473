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
//! → {"v":1,"op":"netmap"}
//! ← {"v":1,"netmap":{"self_id":"…","self_addresses":["100.64.0.1",…],"rules":[…]|null,"ssh":[…]|null}}
//! ← {"v":1,"error":"one line"}                       (any failure)
//! ```
//!
//! `netmap` is `POST /localapi/v0/debug?action=current-netmap` (tailscaled >= 1.104 serves the
//! packet filter to nobody else), cut down to the filter, the SSH policy and this node's own ID
//! and addresses: no peer, no key. One more narrow action (the guard's address set) is one more
//! [`Op`] with its own validated arguments.

pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use crate::source::netmap::FilterOnly;

/// The protocol version both sides speak.
pub const PROTOCOL: u32 = 1;
/// Where the socket unit (and `privileged --listen`'s example) puts the socket.
pub const DEFAULT_SOCKET: &str = "/run/tailscale-monitor/privileged.sock";
/// The longest request line the root side reads.
pub const MAX_REQUEST: u64 = 4 << 10;
/// The longest answer the monitor reads (a filter of 10,000 rules is about 2 MB).
pub const MAX_REPLY: u64 = 32 << 20;

/// What may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// This node's packet filter and SSH policy, from tailscaled's live netmap.
    Netmap,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    pub op: Op,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmap: Option<FilterOnly>,
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

/// Asks the relay at `socket` for this node's filter and SSH policy.
pub async fn netmap(socket: &Path, timeout: Duration) -> Result<FilterOnly, RelayError> {
    let failed = |what: String| RelayError::Failed {
        path: socket.to_owned(),
        what,
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    RelayError::Absent(socket.to_owned())
                }
                std::io::ErrorKind::PermissionDenied => RelayError::Denied(socket.to_owned()),
                _ => failed(e.to_string()),
            })?;
        let mut line = serde_json::to_vec(&Request {
            v: PROTOCOL,
            op: Op::Netmap,
        })
        .expect("request serializes");
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
    let answer = tokio::time::timeout(timeout, exchange)
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
    match (reply.netmap, reply.error) {
        (_, Some(e)) => Err(failed(crate::sanitize::line(&e, 300))),
        (Some(n), None) => {
            if n.self_id.is_empty()
                || n.self_addresses.is_empty()
                || n.self_addresses
                    .iter()
                    .any(|a| a.parse::<std::net::IpAddr>().is_err())
            {
                return Err(failed(
                    "the netmap names no valid self node (is tailscaled logged in?)".into(),
                ));
            }
            Ok(n)
        }
        (None, None) => Err(failed("an answer with neither netmap nor error".into())),
    }
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
                br#"{"v":1,"op":"netmap"}"#,
                br#"{"v":1,"netmap":{"self_id":"n1","self_addresses":["100.64.0.1"],"rules":[{"srcs":["*"],"dsts":[{"ip":"*","first":0,"last":65535}],"protos":[],"caps":[]}],"ssh":null}}"#,
            ],
            |b| {
                let _ = serde_json::from_slice::<Request>(b);
                let _ = serde_json::from_slice::<Reply>(b);
            },
        );
    }

    #[test]
    fn the_wire_is_what_the_module_doc_says() {
        let req = serde_json::to_string(&Request {
            v: 1,
            op: Op::Netmap,
        })
        .unwrap();
        assert_eq!(req, r#"{"v":1,"op":"netmap"}"#);
        for bad in [
            r#"{"v":1,"op":"shell"}"#,
            r#"{"v":1,"op":"netmap","path":"/etc/shadow"}"#,
            r#"{"op":"netmap"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let err = serde_json::to_string(&Reply {
            v: 1,
            error: Some("x".into()),
            ..Reply::default()
        })
        .unwrap();
        assert_eq!(err, r#"{"v":1,"error":"x"}"#);
    }
}
