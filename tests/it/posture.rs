//! The posture checks of this server, on the real filesystem: owners and modes of the monitor's
//! files, the immutable attribute `chattr +i` sets, and the socket it reads. The control-plane
//! checks are in `tests/control.rs` (Admin API emulator) and `tests/real.rs` (headscale).

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::emulator::{self, Emulator};
use support::Monitor;

/// `chattr -i` on drop, so that a failing test leaves nothing undeletable behind.
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

fn chattr_i(paths: &[&Path]) -> Result<Immutable, String> {
    let guard = Immutable(paths.iter().map(|p| p.to_path_buf()).collect());
    for p in paths {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
    }
    Ok(guard)
}

#[test]
fn a_world_writable_config_is_refused_and_chattr_i_makes_the_files_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    // A copy of the binary: `chattr +i` must not touch the build's own.
    let bin = dir.path().join("tailscale-monitor");
    std::fs::copy(support::bin(), &bin).unwrap();
    let mon = Monitor::new(&emu.socket, "");
    let posture = || {
        let out = Command::new(&bin)
            .args(["--config"])
            .arg(&mon.config)
            .args(["posture", "--json"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let out = posture();
    let sv03 = support::posture_finding(&out, "SV-03");
    assert_eq!(sv03["status"], "pass", "{sv03}");
    let sv06 = support::posture_finding(&out, "SV-06");
    assert_eq!(
        sv06["status"], "pass",
        "the emulator's socket, owned by root: {sv06}"
    );

    // A config others can write is refused outright (F21): whoever can write it runs code as
    // the service user, so nothing reads it, posture included.
    std::fs::set_permissions(&mon.config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(&bin)
        .args(["--config"])
        .arg(&mon.config)
        .args(["posture", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("every local user can write") && err.contains("chmod o-w"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    std::fs::set_permissions(&mon.config, std::fs::Permissions::from_mode(0o640)).unwrap();

    let sv04 = support::posture_finding(&posture(), "SV-04");
    if sv04["status"] == "unknown" {
        eprintln!("SKIPPED the immutable half: this filesystem reports no attributes ({sv04})");
        return;
    }
    assert_eq!(sv04["status"], "fail", "not immutable yet: {sv04}");
    let _guard = match chattr_i(&[&bin, &mon.config]) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED the immutable half: this filesystem does not take chattr +i ({e})");
            return;
        }
    };
    let sv04 = support::posture_finding(&posture(), "SV-04");
    assert_eq!(sv04["status"], "pass", "{sv04}");
    assert!(
        sv04["evidence"]
            .as_str()
            .unwrap()
            .starts_with("immutable: "),
        "{sv04}"
    );
}

#[test]
fn a_socket_that_is_not_tailscaleds_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the socket should be.
    let fake = dir.path().join("tailscaled.sock");
    std::fs::write(&fake, "").unwrap();
    let mon = Monitor::new(&fake, "");
    let r = mon.run(&["posture", "--json"]);
    assert_eq!(
        r.code, 3,
        "neither tailscaled nor a control plane could be read: {r:?}"
    );
    let sv06 = support::posture_finding(&r.stdout, "SV-06");
    assert_eq!(sv06["status"], "fail", "{sv06}");
    assert!(
        sv06["evidence"].as_str().unwrap().contains("not a socket"),
        "{sv06}"
    );
    // Without a control plane, its checks are unknown with the reason, never pass.
    let tn01 = support::posture_finding(&r.stdout, "TN-01");
    assert_eq!(tn01["status"], "unknown");
    assert!(
        tn01["evidence"]
            .as_str()
            .unwrap()
            .contains("no [control] configured"),
        "{tn01}"
    );
}
