//! `tailscale-monitor privileged`: the root side of [`crate::privileged`].
//!
//! Two ways to run it, one handler:
//! - `--stdio`: one connection on standard input, as systemd's `Accept=yes` socket units hand it
//!   over (`tailscale-monitor-privileged.socket` + `tailscale-monitor-privileged@.service`, one
//!   short-lived sandboxed process per request);
//! - `--listen PATH`: a foreground server for systems without systemd, which creates the socket
//!   itself (mode 0660, owned by root and `--group`).
//!
//! Each connection: the peer's credentials are checked (root, or a member of `--group`), one
//! request line of at most [`MAX_REQUEST`] bytes is read within a few seconds, and one answer is
//! written. It must never take a path, a command or a name from the request, never write a file,
//! and never pass on a key or a peer.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::{Op, Reply, Request, MAX_REQUEST, PROTOCOL};
use crate::source::localapi::LocalApi;
use crate::source::netmap;

/// How long a client has to send its request, and tailscaled to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TAILSCALED_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once by `--listen`; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// What the root side needs to know, all from its own command line (never from the monitor).
#[derive(Debug, Clone)]
pub struct Options {
    /// tailscaled's LocalAPI socket.
    pub tailscaled: PathBuf,
    /// The group whose members may ask (besides root).
    pub gid: Option<libc::gid_t>,
}

/// The numeric ID of group `name`.
pub fn group_id(name: &str) -> anyhow::Result<libc::gid_t> {
    let c = std::ffi::CString::new(name).context("group name contains a NUL byte")?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it; the result is read only
    // through `grp` when `out` says it was filled.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        bail!("no group named {name:?} (create it, or name another with --group)");
    }
    Ok(grp.gr_gid)
}

/// Serves the one connection on standard input (systemd `Accept=yes`).
pub async fn serve_stdio(opts: Options) -> anyhow::Result<()> {
    // SAFETY: fd 0 is the accepted connection systemd passed; it is owned here from now on.
    let std = unsafe {
        use std::os::fd::FromRawFd;
        std::os::unix::net::UnixStream::from_raw_fd(0)
    };
    std.set_nonblocking(true)
        .context("standard input is not a unix socket (run from a socket unit with Accept=yes)")?;
    let stream = UnixStream::from_std(std).context("standard input is not a unix socket")?;
    handle(stream, &opts).await;
    Ok(())
}

/// Listens on `path` until killed (systems without systemd).
pub async fn listen(path: &Path, opts: Options) -> anyhow::Result<()> {
    let listener = bind(path, opts.gid)?;
    info!(socket = %path.display(), tailscaled = %opts.tailscaled.display(), "privileged relay listening");
    let opts = Arc::new(opts);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(50);
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(50);
                let opts = opts.clone();
                tokio::spawn(async move {
                    handle(stream, &opts).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and the like: say so, wait, go on; never a busy loop, never an exit.
                warn!(error = %e, retry_in = ?backoff, "privileged relay: accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Creates the socket: a stale socket at `path` is replaced, anything else is an error; the new
/// one is never reachable with wider permissions than 0660 root:`gid`.
fn bind(path: &Path, gid: Option<libc::gid_t>) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?,
        Ok(_) => bail!(
            "{} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(_) => {}
    }
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chown of {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod of {}", path.display()))?;
    }
    Ok(listener)
}

/// Whether the peer may ask: root, or a member of the group (its primary group or, through
/// `SO_PEERGROUPS`, a supplementary one).
fn peer_allowed(stream: &UnixStream, gid: Option<libc::gid_t>) -> Result<u32, String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("reading the peer's credentials: {e}"))?;
    let uid = cred.uid();
    if uid == 0 {
        return Ok(uid);
    }
    let Some(gid) = gid else {
        return Err(format!("uid {uid} is not root, and no --group is allowed"));
    };
    if cred.gid() == gid || peer_groups(stream).contains(&gid) {
        return Ok(uid);
    }
    Err(format!("uid {uid} is not in group {gid}"))
}

/// The peer's supplementary groups (empty where the kernel does not say).
fn peer_groups(stream: &UnixStream) -> Vec<libc::gid_t> {
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer and its length are valid; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    groups
}

/// Serves one connection: check, read, answer. Every failure is logged and, where the peer may
/// hear it, answered with one line.
async fn handle(mut stream: UnixStream, opts: &Options) {
    let uid = match peer_allowed(&stream, opts.gid) {
        Ok(uid) => uid,
        Err(why) => {
            // No answer at all: a refused peer learns nothing.
            warn!(reason = %why, "privileged relay: connection refused");
            return;
        }
    };
    let reply = match read_request(&mut stream).await {
        Ok(Some(req)) => answer(req, opts).await,
        Ok(None) => {
            // A client that gave up (its pass was cancelled), or a probe: nothing to answer.
            debug!(uid, "privileged relay: the client left without a request");
            return;
        }
        Err(e) => Reply {
            v: PROTOCOL,
            error: Some(e),
            ..Reply::default()
        },
    };
    if let Some(e) = &reply.error {
        warn!(uid, error = %e, "privileged relay: request failed");
    } else {
        debug!(uid, "privileged relay: answered");
    }
    let mut line = serde_json::to_vec(&reply).expect("reply serializes");
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line).await {
        debug!(error = %e, "privileged relay: the client left before the answer");
    }
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, String> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(stream.take(MAX_REQUEST + 1));
    let read = limited.read_until(b'\n', &mut line);
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => return Err(format!("no request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    if line.len() as u64 > MAX_REQUEST || line.last() != Some(&b'\n') {
        return Err(format!(
            "a request is one line of at most {MAX_REQUEST} bytes"
        ));
    }
    let req: Request = serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))?;
    if req.v != PROTOCOL {
        return Err(format!(
            "protocol {} asked, this relay speaks {PROTOCOL}: install the same version of both",
            req.v
        ));
    }
    Ok(Some(req))
}

async fn answer(req: Request, opts: &Options) -> Reply {
    let mut reply = Reply {
        v: PROTOCOL,
        ..Reply::default()
    };
    if req.op != Op::GuardApply && req.guard.is_some() {
        reply.error = Some("only guard_apply takes `guard`".into());
        return reply;
    }
    match req.op {
        Op::Netmap => {
            let api = LocalApi::new(&opts.tailscaled, TAILSCALED_TIMEOUT);
            match api.current_netmap().await {
                Ok(body) => match netmap::parse_filter_only(&body) {
                    Ok(f) => reply.netmap = Some(f),
                    Err(e) => reply.error = Some(e),
                },
                Err((_, e)) => reply.error = Some(e.0),
            }
        }
        Op::GuardApply => match &req.guard {
            None => reply.error = Some("guard_apply needs `guard`".into()),
            Some(g) => match super::nft::apply(&g.interface, &g.set).await {
                Ok(()) => {
                    info!(interface = %g.interface, v4 = g.set.v4.len(), v6 = g.set.v6.len(), "guard: set applied");
                    reply.ok = Some(true);
                }
                Err(e) => reply.error = Some(e),
            },
        },
        Op::GuardRemove => match super::nft::remove().await {
            Ok(()) => {
                info!("guard: table removed");
                reply.ok = Some(true);
            }
            Err(e) => reply.error = Some(e),
        },
        Op::DoorsClose => {
            let api = LocalApi::new(&opts.tailscaled, TAILSCALED_TIMEOUT);
            match api.close_doors().await {
                Ok((false, false)) => {
                    info!("guard: Tailscale SSH and the web client turned off");
                    reply.ok = Some(true);
                }
                Ok((ssh, web)) => {
                    reply.error = Some(format!(
                        "tailscaled kept RunSSH={ssh} RunWebClient={web} (is RemoteConfig on, or a policy forcing them?)"
                    ))
                }
                Err(e) => reply.error = Some(e.0),
            }
        }
        Op::GuardRead => match super::nft::read().await {
            Ok(e) => reply.guard = Some(e),
            Err(e) => reply.error = Some(e),
        },
    }
    reply
}
