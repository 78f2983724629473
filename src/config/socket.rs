//! Where tailscaled's LocalAPI socket is by default, per OS, and which candidate may be trusted.

use std::path::{Path, PathBuf};

/// Where the socket unit (and `privileged --listen`'s example) puts the socket.
pub const DEFAULT_PRIVILEGED_SOCKET: &str = "/run/tailscale-monitor/privileged.sock";

/// Default LocalAPI socket for this OS, preferring one that exists (Synology, QNAP, Gokrazy).
pub fn default_socket() -> PathBuf {
    if cfg!(target_os = "macos") {
        return PathBuf::from("/var/run/tailscaled.socket");
    }
    const CANDIDATES: [&str; 5] = [
        "/var/run/tailscale/tailscaled.sock",
        "/var/packages/Tailscale/var/tailscaled.sock",
        "/var/packages/Tailscale/etc/tailscaled.sock",
        "/tmp/tailscale/tailscaled.sock",
        "/perm/tailscaled/tailscaled.sock",
    ];
    let candidates: Vec<PathBuf> = CANDIDATES.iter().map(PathBuf::from).collect();
    first_trusted(&candidates).unwrap_or_else(|| {
        if Path::new("/var/run").is_dir() {
            PathBuf::from(CANDIDATES[0])
        } else {
            PathBuf::from("tailscaled.sock")
        }
    })
}

/// The first candidate that is tailscaled's: a socket (not a link to one) owned by root, in a
/// directory owned by root that nobody else may write. A socket any local user made in `/tmp`
/// (QNAP's path) is never chosen by default (F9); name it with `[tailscale] socket` if it must be.
pub(super) fn first_trusted(candidates: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    candidates
        .iter()
        .find(|p| {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return false;
            };
            let Some(dir) = p.parent().and_then(|d| std::fs::symlink_metadata(d).ok()) else {
                return false;
            };
            m.file_type().is_socket()
                && m.uid() == 0
                && dir.is_dir()
                && dir.uid() == 0
                && dir.mode() & 0o022 == 0
        })
        .cloned()
}
