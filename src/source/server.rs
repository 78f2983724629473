//! This server's own facts for the posture checks: owner, mode and the immutable attribute of the
//! monitor's binary, config and state, the socket it reads, and whether it runs in the systemd
//! sandbox. Never fails: what cannot be read says why.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{Config, SourceKind};
use crate::model::posture::{PathFacts, ServerFacts};

/// `FS_IOC_GETFLAGS` and `FS_IMMUTABLE_FL` (linux/fs.h), what `lsattr` reads.
#[cfg(target_os = "linux")]
fn immutable(path: &Path) -> Option<bool> {
    use std::os::fd::AsRawFd;
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let f = std::fs::File::open(path).ok()?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctl writes one long into `flags`, which outlives the call; the descriptor is
    // open for the duration.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) };
    (r == 0).then_some(flags & FS_IMMUTABLE_FL != 0)
}

#[cfg(not(target_os = "linux"))]
fn immutable(_: &Path) -> Option<bool> {
    None
}

/// One path's facts (`immutable` only for regular files: attributes of sockets and directories
/// are not the point).
pub fn path_facts(path: &Path) -> PathFacts {
    let mut p = PathFacts {
        path: path.display().to_string(),
        ..PathFacts::default()
    };
    match std::fs::metadata(path) {
        Ok(m) => {
            p.uid = m.uid();
            p.gid = m.gid();
            p.mode = m.mode();
            if m.is_file() {
                p.immutable = immutable(path);
            }
        }
        Err(e) => p.error = e.to_string(),
    }
    p
}

/// `NoNewPrivs` and `Seccomp` from `/proc/self/status`, when started by systemd.
fn sandbox() -> Option<(bool, u32)> {
    std::env::var_os("INVOCATION_ID")?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Some((
        field("NoNewPrivs:") == Some(1),
        field("Seccomp:").unwrap_or(0),
    ))
}

/// Everything at once.
pub fn facts(cfg: &Config) -> ServerFacts {
    ServerFacts {
        binary: std::env::current_exe().ok().map(|p| path_facts(&p)),
        config: cfg.path.as_deref().map(path_facts),
        // Created 0700 by the first pass: before it, nothing to check.
        state: cfg.state_dir.exists().then(|| path_facts(&cfg.state_dir)),
        socket: (cfg.source.kind == SourceKind::LocalApi).then(|| path_facts(&cfg.source.socket)),
        // SAFETY: geteuid has no preconditions and cannot fail.
        uid: unsafe { libc::geteuid() },
        sandbox: sandbox(),
        guard_enforce: cfg.guard.enforcing(),
    }
}
