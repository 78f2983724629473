//! The Debian package on this machine, as an administrator installs it: `dpkg -i`, an upgrade to a
//! newer build, `dpkg -r` and `dpkg -P`, checking files, owners, modes, the system user, and a
//! state database whose hash chain survives the upgrade (`audit` passes). Needs root and
//! cargo-deb (tests/run-all.sh provides both); it installs and purges the real package.

use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::emulator::{self, Emulator};

const PKG: &str = "tailscale-monitor";
const CONF: &str = "/etc/tailscale-monitor/config.toml";
const STATE: &str = "/var/lib/tailscale-monitor";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the package with this Debian version; returns the .deb.
fn build(version: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run(Command::new(root.join("contrib/deb/build.sh"))
        .args(["--deb-version", version])
        .current_dir(root));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let deb = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no .deb in the output of build.sh: {text}"));
    let deb = PathBuf::from(deb);
    let deb = if deb.is_absolute() {
        deb
    } else {
        root.join(deb)
    };
    // Keep each build: the next one overwrites target/debian.
    let kept = std::env::temp_dir().join(format!("tailscale-monitor-test-{version}.deb"));
    std::fs::copy(&deb, &kept).unwrap();
    kept
}

fn dpkg(args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["--force-confdef", "--force-confold"])
        .args(args))
}

fn installed() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status} ${Version}", PKG])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    out.status.success().then_some(s)
}

/// The numeric ID of `name` in the `passwd` or `group` database.
fn getent_id(db: &str, name: &str) -> Option<u32> {
    let out = Command::new("getent").args([db, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
}

fn mode(path: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

/// Runs the installed binary as the package's user.
fn as_user(args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", PKG, "--", "/usr/bin/tailscale-monitor"])
        .args(args)
        .output()
        .unwrap()
}

fn unit_path() -> &'static str {
    [
        "/usr/lib/systemd/system/tailscale-monitor.service",
        "/lib/systemd/system/tailscale-monitor.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the systemd unit is installed")
}

#[test]
#[ignore = "installs the real package (root, cargo-deb): run tests/run-all.sh"]
fn install_upgrade_remove_and_purge_the_debian_package() {
    if installed().is_some() {
        dpkg(&["-P", PKG]);
    }
    let old = build("0.1.0-1");
    let new = build("0.1.0-2");

    // Install.
    dpkg(&["-i", old.to_str().unwrap()]);
    assert!(installed()
        .unwrap()
        .starts_with("install ok installed 0.1.0-1"));
    let uid = getent_id("passwd", PKG).expect("the system user exists");
    let gid = getent_id("group", PKG).expect("its group exists");
    assert!(uid < 1000, "a system user: uid {uid}");
    assert_eq!(mode("/usr/bin/tailscale-monitor"), (0, 0, 0o755));
    assert_eq!(mode(CONF), (0, gid, 0o640), "root:tailscale-monitor 0640");
    assert_eq!(mode(STATE), (uid, gid, 0o700));
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/tailscale-monitor --config /etc/tailscale-monitor/config.toml run"
        ),
        "{unit}"
    );
    // The privileged relay: its socket unit and the per-connection service, enabled on install.
    let dir = Path::new(unit_path()).parent().unwrap().to_owned();
    let socket = std::fs::read_to_string(dir.join("tailscale-monitor-privileged.socket")).unwrap();
    assert!(
        socket.contains("SocketGroup=tailscale-monitor") && socket.contains("SocketMode=0660"),
        "{socket}"
    );
    let relay = std::fs::read_to_string(dir.join("tailscale-monitor-privileged@.service")).unwrap();
    assert!(
        relay.contains("ExecStart=/usr/bin/tailscale-monitor --config /etc/tailscale-monitor/config.toml privileged --stdio"),
        "{relay}"
    );
    let restore =
        std::fs::read_to_string(dir.join("tailscale-monitor-guard-restore.service")).unwrap();
    assert!(
        restore.contains("Before=tailscaled.service") && restore.contains("privileged --restore"),
        "{restore}"
    );
    let wants = "/etc/systemd/system/sockets.target.wants/tailscale-monitor-privileged.socket";
    assert!(
        Path::new(wants).symlink_metadata().is_ok(),
        "the relay's socket is enabled: {wants}"
    );
    for f in [
        "/usr/share/man/man1/tailscale-monitor.1.gz",
        "/usr/share/bash-completion/completions/tailscale-monitor",
        "/usr/share/zsh/vendor-completions/_tailscale-monitor",
        "/usr/share/fish/vendor_completions.d/tailscale-monitor.fish",
    ] {
        assert!(Path::new(f).exists(), "{f}");
    }
    let conffiles = String::from_utf8_lossy(
        &run(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", PKG])).stdout,
    )
    .into_owned();
    assert!(conffiles.contains(CONF), "a conffile: {conffiles}");
    let v = run(Command::new("/usr/bin/tailscale-monitor").arg("--version"));
    assert!(String::from_utf8_lossy(&v.stdout).contains("tailscale-monitor 0.1.0"));
    let cfg_check = as_user(&["config", "check"]);
    assert!(
        cfg_check.status.success(),
        "the shipped config is valid and readable by the service: {}",
        String::from_utf8_lossy(&cfg_check.stderr)
    );

    // State: a baseline and a change, taken by the service user against the emulator.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let emu = Emulator::start(dir.path(), emulator::tailnet());
    std::fs::set_permissions(&emu.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tailscale]\nsocket = \"{}\"\n\n[state]\ndir = \"{STATE}\"\n",
            emu.socket.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = cfg.to_str().unwrap();
    assert_eq!(as_user(&["--config", c, "check"]).status.code(), Some(0));
    let mut doc = emulator::tailnet();
    emulator::add_peer(&mut doc, "nNEWDEVCNTRL", "new-device", 1, "100.101.7.7");
    emu.set_status(doc);
    assert_eq!(
        as_user(&["--config", c, "check"]).status.code(),
        Some(2),
        "a new device"
    );
    let audit = as_user(&["--config", c, "audit"]);
    let before = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit.status.success(), "{before}");
    // The administrator edits the config.
    let edited = std::fs::read_to_string(CONF).unwrap() + "\n# edited by the administrator\n";
    std::fs::write(CONF, &edited).unwrap();

    // F21: what postinst hands to the service. A file a root-run command left becomes the
    // service's; a hard link the service user planted to a root-owned file stays root's.
    let secret = Path::new("/var/lib/tailscale-monitor-test-secret");
    std::fs::write(secret, "root only\n").unwrap();
    std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let planted = format!("{STATE}/planted");
    let _ = std::fs::remove_file(&planted);
    std::fs::hard_link(secret, &planted).unwrap();
    let left = format!("{STATE}/left-by-root");
    std::fs::write(&left, "").unwrap();

    // Upgrade: config and state kept, the chain intact and the same.
    dpkg(&["-i", new.to_str().unwrap()]);
    assert_eq!(
        mode(secret.to_str().unwrap()).0,
        0,
        "a hard link is never chowned"
    );
    assert_eq!(
        mode(&left).0,
        uid,
        "a root-owned file of one link is the service's"
    );
    std::fs::remove_file(&planted).unwrap();
    std::fs::remove_file(secret).unwrap();
    std::fs::remove_file(&left).unwrap();
    assert!(installed()
        .unwrap()
        .starts_with("install ok installed 0.1.0-2"));
    assert_eq!(
        std::fs::read_to_string(CONF).unwrap(),
        edited,
        "the edited conffile is kept"
    );
    assert_eq!(mode(CONF), (0, gid, 0o640));
    assert_eq!(mode(STATE), (uid, gid, 0o700));
    assert_eq!(mode(&format!("{STATE}/state.db")).0, uid);
    let audit = as_user(&["--config", c, "audit"]);
    let after = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(audit.status.success(), "{after}");
    assert!(after.contains("event log chain intact"), "{after}");
    assert_eq!(before, after, "the same events, the same head");

    // Remove: the binary goes, config and state stay.
    dpkg(&["-r", PKG]);
    assert!(!Path::new("/usr/bin/tailscale-monitor").exists());
    assert!(Path::new(CONF).exists(), "config kept on remove");
    assert!(
        Path::new(&format!("{STATE}/state.db")).exists(),
        "state kept on remove"
    );

    // Purge: both go.
    dpkg(&["-P", PKG]);
    assert!(
        installed().is_none_or(|s| !s.contains("installed")),
        "{:?}",
        installed()
    );
    assert!(!Path::new(CONF).exists(), "config deleted on purge");
    assert!(!Path::new(STATE).exists(), "state deleted on purge");
    assert!(
        Path::new("/etc/systemd/system/sockets.target.wants/tailscale-monitor-privileged.socket")
            .symlink_metadata()
            .is_err(),
        "the relay's socket is no longer enabled after purge"
    );
    drop(emu);
}
