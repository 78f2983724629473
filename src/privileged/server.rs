//! `tailscale-monitor privileged`: the root side of [`crate::privileged`].
//!
//! Two ways to run it, one handler:
//! - `--stdio`: one connection on standard input, as systemd's `Accept=yes` socket units hand it
//!   over (`tailscale-monitor-privileged.socket` + `tailscale-monitor-privileged@.service`, one
//!   short-lived sandboxed process per request);
//! - `--listen PATH`: a foreground server for systems without systemd, which creates the socket
//!   itself (mode 0660, owned by root and `--group`).
//!
//! Each connection: the peer's credentials are checked (root, or a member of `--group`; the
//! guard's owner operations root only), one request line of at most [`MAX_REQUEST`] bytes is
//! read within a few seconds, and one answer is written within a few seconds too. It never takes
//! a path, a command, a set, an interface or a name from the request, writes only its own records
//! (in the guard's state directory), and never passes on a key or a peer. The netmap read runs
//! on a thread without any capability. Every change is logged at info, under `--stdio` too.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::caps::unprivileged;
use super::root::{self, RootPaths};
use super::{Op, Reply, Request, MAX_REQUEST, PROTOCOL};
// Two-way with `source`: the root side reads tailscaled with the monitor's own LocalAPI client
// and parser, and the monitor's LocalAPI reads the netmap through this relay.
use crate::source::localapi::LocalApi;
use crate::source::netmap;

/// How long a client has to send its request, and tailscaled to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TAILSCALED_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to read the answer (review G13).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once by `--listen` for group members, and for each one of them; root
/// has slots of its own, so that members cannot keep the owner out. More wait in the backlog.
const MAX_CONNECTIONS: usize = 8;
const MAX_PER_UID: usize = 2;
const ROOT_SLOTS: usize = 2;

/// What the root side needs to know, all from its own command line (never from the monitor).
#[derive(Debug, Clone)]
pub struct Options {
    /// tailscaled's LocalAPI socket.
    pub tailscaled: PathBuf,
    /// The group whose members may ask (besides root).
    pub gid: Option<libc::gid_t>,
    /// The guard's config file and records.
    pub paths: RootPaths,
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
    let members = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let root_slots = Arc::new(tokio::sync::Semaphore::new(ROOT_SLOTS));
    let per_uid: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>> = Arc::default();
    let mut backoff = Duration::from_millis(50);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(50);
                let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
                let permit = if uid == 0 {
                    root_slots.clone().try_acquire_owned()
                } else {
                    let mut m = per_uid.lock().expect("not poisoned");
                    let n = m.entry(uid).or_default();
                    if *n >= MAX_PER_UID {
                        warn!(
                            uid,
                            "privileged relay: too many connections from one user; closed"
                        );
                        continue;
                    }
                    match members.clone().try_acquire_owned() {
                        Ok(p) => {
                            *n += 1;
                            Ok(p)
                        }
                        Err(e) => Err(e),
                    }
                };
                let Ok(permit) = permit else {
                    warn!(uid, "privileged relay: every slot is busy; closed");
                    continue;
                };
                let opts = opts.clone();
                let per_uid = per_uid.clone();
                tokio::spawn(async move {
                    handle(stream, &opts).await;
                    drop(permit);
                    if uid != 0 {
                        if let Some(n) = per_uid.lock().expect("not poisoned").get_mut(&uid) {
                            *n = n.saturating_sub(1);
                        }
                    }
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
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    // The directory must be root's and no one else's to write: then nobody can swap the socket
    // for a link between the bind and the chown/chmod below (review G12).
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let m = std::fs::symlink_metadata(dir)
        .with_context(|| format!("the socket's directory {}", dir.display()))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        bail!(
            "{} must be a directory owned by root that only root may write (mkdir -m 0755 {0}; chown root:root {0})",
            dir.display()
        );
    }
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
        std::os::unix::fs::lchown(path, None, Some(gid))
            .with_context(|| format!("chown of {}", path.display()))?;
        if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
            bail!("{} is not the socket just bound", path.display());
        }
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
    let pid = stream.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
    let reply = match read_request(&mut stream).await {
        Ok(Some(req)) if req.op.root_only() && uid != 0 => {
            warn!(uid, pid, op = ?req.op, "privileged relay: an owner's operation asked by a group member; refused");
            Reply {
                v: PROTOCOL,
                error: Some(format!(
                    "{:?} is the owner's: run it as root (sudo tailscale-monitor guard …)",
                    req.op
                )),
                ..Reply::default()
            }
        }
        Ok(Some(req)) => answer(req, opts, &who(uid, pid)).await,
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
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&line)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "privileged relay: the client left before the answer"),
        Err(_) => warn!(
            uid,
            pid, "privileged relay: the client did not read its answer in time; closed"
        ),
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
}

/// Who asked, for the records: the login user of the peer process (`sudo` keeps it), and the uid.
fn who(uid: u32, pid: i32) -> String {
    let name = |uid: u32| -> String {
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers; `buf` outlives the call; read only when `out` is set.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if rc != 0 || out.is_null() {
            return format!("uid {uid}");
        }
        // SAFETY: getpwuid_r filled `pw_name` with a NUL-terminated string inside `buf`.
        let s = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        crate::sanitize::line(&s.to_string_lossy(), 64)
    };
    let login = std::fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&u| u != u32::MAX);
    match login {
        Some(l) if l != uid => format!("{} (as {})", name(l), name(uid)),
        _ => name(uid),
    }
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

async fn answer(req: Request, opts: &Options, by: &str) -> Reply {
    let mut reply = Reply {
        v: PROTOCOL,
        ..Reply::default()
    };
    let takes_approve = matches!(req.op, Op::GuardApprove | Op::GuardInit);
    if (req.approve.is_some() && !takes_approve)
        || (req.revoke.is_some() && req.op != Op::GuardRevoke)
    {
        reply.error = Some("a field this operation does not take".into());
        return reply;
    }
    let paths = &opts.paths;
    let decided = |r: Result<crate::model::guard::Decision, String>, reply: &mut Reply| match r {
        Ok(d) => reply.decision = Some(d),
        Err(e) => reply.error = Some(e),
    };
    match req.op {
        Op::Netmap => {
            let socket = opts.tailscaled.clone();
            let read = unprivileged(move || async move {
                let api = LocalApi::new(&socket, TAILSCALED_TIMEOUT);
                match api.current_netmap().await {
                    Ok(body) => netmap::parse_filter_only(&body),
                    Err((_, e)) => Err(e.0),
                }
            })
            .await;
            match read {
                Ok(f) => reply.netmap = Some(f),
                Err(e) => reply.error = Some(e),
            }
        }
        Op::GuardSync => decided(root::sync(paths, true).await, &mut reply),
        Op::GuardPlan => decided(root::sync(paths, false).await, &mut reply),
        Op::GuardRead => match root::read(paths).await {
            Ok(e) => reply.guard = Some(e),
            Err(e) => reply.error = Some(e),
        },
        Op::GuardApprove | Op::GuardInit => match req.approve {
            None => reply.error = Some("needs `approve`".into()),
            Some(v) => decided(
                root::approve(paths, &v, req.op == Op::GuardInit, by).await,
                &mut reply,
            ),
        },
        Op::GuardRevoke => match req.revoke {
            None => reply.error = Some("needs `revoke`".into()),
            Some(v) => decided(root::revoke(paths, &v, by).await, &mut reply),
        },
        Op::GuardOff => decided(root::switch(paths, true, by).await, &mut reply),
        Op::GuardOn => decided(root::switch(paths, false, by).await, &mut reply),
        Op::DoorsClose => {
            if let Err(e) = root::doors_may_close(paths) {
                reply.error = Some(e);
                return reply;
            }
            let socket = opts.tailscaled.clone();
            let closed = unprivileged(move || async move {
                LocalApi::new(&socket, TAILSCALED_TIMEOUT)
                    .close_doors()
                    .await
                    .map_err(|e| e.0)
            })
            .await;
            match closed {
                Ok((false, false)) => {
                    info!("guard: Tailscale SSH and the web client turned off");
                    reply.ok = Some(true);
                }
                Ok((ssh, web)) => {
                    reply.error = Some(format!(
                        "tailscaled kept RunSSH={ssh} RunWebClient={web} (is RemoteConfig on, or a policy forcing them?)"
                    ))
                }
                Err(e) => reply.error = Some(e),
            }
        }
    }
    reply
}
