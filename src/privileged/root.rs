//! The guard's root side: it owns the decision (review G11, design rule 5).
//!
//! - Its configuration is the `[guard]` table of a file only root may write (the monitor's own
//!   config, `root:tailscale-monitor 0640`): `mode`, `interface`, `approve_new`,
//!   `tailscaled_doors`. Nothing of the kind comes from a request.
//! - Its records live in a directory only root may write ([`DEFAULT_STATE_DIR`]): the approvals
//!   (stable ID, node key, routes, when, by whom), `guard off`, `guard init`, and the last table
//!   applied (kept whole, to check reads against, and to restore at boot before tailscaled).
//! - It computes the set itself ([`crate::diff::guard::set::desired`], a pure function over
//!   addresses, `AllowedIPs` and node keys) from the netmap it reads from tailscaled, so the
//!   unprivileged monitor, which parses names that strangers choose, can ask it to sync and read
//!   but never to admit anyone. Approving, revoking, `init`, `off` and `on` are root's own
//!   (`SO_PEERCRED` uid 0: the owner's `sudo`).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use super::nft;
// The root side reads `[guard]` with the monitor's own config parser (`config` never imports
// `privileged`).
use crate::config::{Doors, GuardMode};
use crate::diff::guard::set::{anomalies, desired};
use crate::model::guard::valid_interface;
use crate::model::guard::{Approval, ApproveNew, Decision, Enforced, GuardSet, Selector};
use crate::model::StableNodeId;
use crate::source::localapi::LocalApi;
use crate::source::netmap::{parse_guard_peers, GuardPeer};

/// Where the root side keeps its records (the socket unit's `StateDirectory=`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tailscale-monitor-guard";
const STATE_FILE: &str = "guard.json";
const TAILSCALED_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest config file read.
const MAX_CONFIG: u64 = 1 << 20;

/// The `[guard]` table, as the root side reads it from its own file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    pub mode: GuardMode,
    pub interface: String,
    pub approve_new: ApproveNew,
    pub doors: Doors,
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            mode: GuardMode::Off,
            interface: "tailscale0".into(),
            approve_new: ApproveNew::Never,
            doors: Doors::Report,
        }
    }
}

/// What the root side was started with (its command line, never a request).
#[derive(Debug, Clone)]
pub struct RootPaths {
    pub config: PathBuf,
    pub state: PathBuf,
    pub tailscaled: PathBuf,
}

/// Reads the `[guard]` table of `path`. No file: the guard is off. A file that anyone but root
/// may write is refused: whoever could write it would decide who gets in.
pub fn load_config(path: &Path) -> Result<RootConfig, String> {
    let shown = path.display();
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RootConfig::default()),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    if !m.file_type().is_file() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} must be a regular file owned by root and writable by no one else (chown root {shown}; chmod go-w {shown}): the guard's root side takes its [guard] settings from it"
        ));
    }
    if m.len() > MAX_CONFIG {
        return Err(format!("{shown} is larger than {MAX_CONFIG} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse_config(&text).map_err(|e| format!("{shown}: [guard] {e}"))
}

fn parse_config(text: &str) -> Result<RootConfig, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ApproveNewRaw {
        Word(String),
        List(Vec<String>),
    }
    #[derive(Deserialize, Default)]
    struct Raw {
        mode: Option<String>,
        interface: Option<String>,
        approve_new: Option<ApproveNewRaw>,
        tailscaled_doors: Option<String>,
    }
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let raw: Raw = match doc.get("guard") {
        None => Raw::default(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?,
    };
    let mut c = RootConfig {
        mode: match raw.mode.as_deref() {
            None | Some("off") => GuardMode::Off,
            Some("enforce") => GuardMode::Enforce,
            Some(_) => return Err("mode is neither \"off\" nor \"enforce\"".into()),
        },
        ..RootConfig::default()
    };
    if let Some(i) = raw.interface {
        if !valid_interface(&i) {
            return Err("interface is not an interface name".into());
        }
        c.interface = i;
    }
    c.approve_new = match raw.approve_new {
        None => ApproveNew::Never,
        Some(ApproveNewRaw::Word(w)) if w == "never" => ApproveNew::Never,
        Some(ApproveNewRaw::Word(_)) => {
            return Err("approve_new is neither \"never\" nor a list".into())
        }
        Some(ApproveNewRaw::List(v)) if v.is_empty() => ApproveNew::Never,
        Some(ApproveNewRaw::List(v)) => {
            ApproveNew::Matching(v.iter().map(|s| Selector::parse(s)).collect())
        }
    };
    c.doors = match raw.tailscaled_doors.as_deref() {
        None | Some("report") => Doors::Report,
        Some("close") => Doors::Close,
        Some(_) => return Err("tailscaled_doors is neither \"report\" nor \"close\"".into()),
    };
    Ok(c)
}

/// The last table applied, whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub interface: String,
    pub set: GuardSet,
    /// [`nft::structure`] right after the apply.
    pub structure: Value,
    /// The kernel's boot ID then: a table absent after a reboot is not tampering.
    pub boot_id: String,
}

/// The root side's records (one file, written whole).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootState {
    #[serde(default)]
    pub approvals: Vec<Approval>,
    #[serde(default)]
    pub off: Option<String>,
    #[serde(default)]
    pub initialized: Option<String>,
    /// Bumped with every change of the approvals, `off` or `init`.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub applied: Option<Applied>,
}

/// The kernel's boot ID.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl RootPaths {
    /// The state directory, checked: root's own, and no one else's to write.
    fn dir(&self) -> Result<&Path, String> {
        let d = &self.state;
        match std::fs::symlink_metadata(d) {
            Ok(m) => {
                if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
                    return Err(format!(
                        "{} must be a directory owned by root and writable by no one else",
                        d.display()
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(d)
                    .map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", d.display())),
        }
        Ok(d)
    }

    pub fn load(&self) -> Result<RootState, String> {
        let path = self.dir()?.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RootState::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes `st` whole: a new file, synced, renamed over the old one.
    pub fn save(&self, st: &RootState) -> Result<(), String> {
        let dir = self.dir()?;
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let path = dir.join(STATE_FILE);
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(st).expect("state serializes"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

/// The peers tailscaled's netmap holds now, and the exit node this node uses.
/// Read and parsed on a thread without any capability (tailscaled's answers are the control
/// plane's words).
async fn netmap(paths: &RootPaths) -> Result<(Vec<GuardPeer>, Option<String>), String> {
    let socket = paths.tailscaled.clone();
    super::caps::unprivileged(move || async move {
        let api = LocalApi::new(&socket, TAILSCALED_TIMEOUT);
        let body = api.current_netmap().await.map_err(|(_, e)| e.0)?;
        let (_, peers) = parse_guard_peers(&body)?;
        let mut trust = crate::model::access::NodeTrust::default();
        let prefs = api.get("/localapi/v0/prefs").await.map_err(|e| e.0)?;
        crate::source::netmap::parse_prefs(&prefs, &mut trust)?;
        Ok((peers, trust.exit_node_id.filter(|s| !s.is_empty())))
    })
    .await
}

fn approvable(p: &GuardPeer) -> Vec<String> {
    p.peer
        .routes
        .iter()
        .filter(|n| n.prefix_len() > 0)
        .map(|n| n.to_string())
        .collect()
}

/// Puts what root decided in force: removes the table when the guard is off, applies the set
/// when it differs from what is there (checked whole), and says when it put back a table
/// changed or removed by someone else. Every change is logged (review G14). `apply` false: what
/// it would do, changing nothing (`guard status`).
pub async fn sync(paths: &RootPaths, apply: bool) -> Result<Decision, String> {
    let cfg = load_config(&paths.config)?;
    let mut st = paths.load()?;
    let mut d = Decision {
        mode: match cfg.mode {
            GuardMode::Off => "off".into(),
            GuardMode::Enforce => "enforce".into(),
        },
        interface: cfg.interface.clone(),
        initialized: st.initialized.is_some(),
        off: st.off.clone(),
        ..Decision::default()
    };
    if cfg.mode == GuardMode::Off || st.off.is_some() {
        if !apply {
            d.approvals = st.approvals;
            d.version = st.version;
            return Ok(d);
        }
        if nft::exists().await? {
            nft::remove().await?;
            info!("guard: table removed (the guard is off)");
            d.applied = true;
        }
        if st.applied.take().is_some() {
            paths.save(&st)?;
        }
        d.approvals = st.approvals;
        d.version = st.version;
        return Ok(d);
    }
    let (peers, exit) = netmap(paths).await?;
    // approve_new, from root's own config.
    for p in &peers {
        let known = st
            .approvals
            .iter()
            .any(|a| a.device.0 == p.peer.id && a.node_key == p.peer.node_key);
        if known || p.peer.id.is_empty() {
            continue;
        }
        if let Some(sel) = cfg
            .approve_new
            .matches_parts(&p.peer.id, &p.tags, p.login.as_deref())
            .filter(|_| apply)
        {
            info!(device = %p.peer.id, node_key = %p.peer.node_key, by = ?sel, "guard: approved by approve_new");
            st.approvals.retain(|a| a.device.0 != p.peer.id);
            st.approvals.push(Approval {
                device: StableNodeId(p.peer.id.clone()),
                node_key: p.peer.node_key.clone(),
                routes: approvable(p),
                at: chrono::Utc::now().to_rfc3339(),
                by: format!("approve_new ({sel:?})"),
            });
            st.version += 1;
            paths.save(&st)?;
        }
    }
    let plain: Vec<_> = peers.iter().map(|p| p.peer.clone()).collect();
    let (set, left_out) = desired(&plain, &st.approvals, exit.as_deref());
    d.anomalies = anomalies(&plain);
    d.left_out = left_out;
    d.approvals = st.approvals.clone();
    d.version = st.version;
    d.set = set.clone();
    if st.initialized.is_none() {
        return Ok(d);
    }
    if !nft::interface_exists(&cfg.interface) {
        d.no_interface = true;
        return Ok(d);
    }
    let now = nft::listed().await?.map(|l| l.structure);
    let same = st.applied.as_ref().is_some_and(|a| {
        a.interface == cfg.interface && a.set == set && now.as_ref() == Some(&a.structure)
    });
    // What root applied last is not what is there: someone else changed or removed it.
    if let Some(a) = &st.applied {
        d.repaired = match &now {
            None => Some("the table is gone".to_owned()),
            Some(n) => nft::differs(&a.structure, n),
        };
        d.rebooted = now.is_none() && a.boot_id != boot_id();
    }
    if !apply {
        return Ok(d);
    }
    if !same {
        let before = st
            .applied
            .as_ref()
            .map(|a| a.set.clone())
            .unwrap_or_default();
        let structure = nft::apply(&cfg.interface, &set).await?;
        let added = set
            .nets()
            .filter(|n| !before.nets().any(|b| b == *n))
            .count();
        let removed = before
            .nets()
            .filter(|n| !set.nets().any(|b| b == *n))
            .count();
        info!(interface = %cfg.interface, prefixes = set.len(), added, removed, "guard: set applied");
        st.applied = Some(Applied {
            interface: cfg.interface.clone(),
            set,
            structure,
            boot_id: boot_id(),
        });
        paths.save(&st)?;
        d.applied = true;
    }
    Ok(d)
}

/// What the table holds now, checked whole against what root applied last.
pub async fn read(paths: &RootPaths) -> Result<Enforced, String> {
    let st = paths.load()?;
    let mut e = Enforced {
        version: st.version,
        ..Enforced::default()
    };
    let Some(now) = nft::listed().await? else {
        e.rebooted = st.applied.as_ref().is_some_and(|a| a.boot_id != boot_id());
        if st.applied.is_some() {
            e.differs = Some("the table is gone".into());
        }
        return Ok(e);
    };
    e.present = true;
    e.set = now.set;
    e.blocked = now.blocked;
    let now = now.structure;
    match &st.applied {
        None => e.differs = Some("a table root never applied is in place".into()),
        Some(a) => {
            e.interface = a.interface.clone();
            e.differs = nft::differs(&a.structure, &now);
            if e.differs.is_none() && !nft::interface_exists(&a.interface) {
                e.differs = Some(format!("its interface {} does not exist", a.interface));
            }
        }
    }
    Ok(e)
}

/// One device to approve: its stable ID and node key, as the owner confirmed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmed {
    pub id: String,
    pub node_key: String,
}

/// Approves `devices` (uid 0 only: the caller checked). Each must be a current peer with exactly
/// that stable ID and node key, and no other peer may share the ID.
pub async fn approve(
    paths: &RootPaths,
    devices: &[Confirmed],
    init: bool,
    by: &str,
) -> Result<Decision, String> {
    let mut st = paths.load()?;
    let (peers, _) = netmap(paths).await?;
    let plain: Vec<_> = peers.iter().map(|p| p.peer.clone()).collect();
    let odd = anomalies(&plain);
    for c in devices {
        let p = peers
            .iter()
            .find(|p| p.peer.id == c.id && p.peer.node_key == c.node_key)
            .ok_or_else(|| {
                format!(
                    "no current peer has stable ID {} with node key {} (did it re-authenticate?)",
                    crate::sanitize::line(&c.id, 40),
                    crate::sanitize::line(&c.node_key, 80)
                )
            })?;
        if c.id.is_empty() || odd.iter().any(|a| a.node_key == p.peer.node_key) {
            return Err(format!(
                "{} shares its stable ID with another peer, or has none: it cannot be approved",
                crate::sanitize::line(&c.id, 40)
            ));
        }
        st.approvals.retain(|a| a.device.0 != c.id);
        st.approvals.push(Approval {
            device: StableNodeId(c.id.clone()),
            node_key: c.node_key.clone(),
            routes: approvable(p),
            at: chrono::Utc::now().to_rfc3339(),
            by: by.to_owned(),
        });
        info!(device = %c.id, node_key = %c.node_key, by, "guard: approved");
    }
    st.approvals.sort_by(|a, b| a.device.cmp(&b.device));
    if init {
        st.initialized = Some(chrono::Utc::now().to_rfc3339());
        st.off = None;
        info!(by, devices = devices.len(), "guard: initialized");
    }
    st.version += 1;
    paths.save(&st)?;
    sync(paths, true).await
}

/// Revokes `ids` (uid 0 only).
pub async fn revoke(paths: &RootPaths, ids: &[String], by: &str) -> Result<Decision, String> {
    let mut st = paths.load()?;
    for id in ids {
        if st.approvals.iter().any(|a| &a.device.0 == id) {
            info!(device = %id, by, "guard: revoked");
        }
        st.approvals.retain(|a| &a.device.0 != id);
    }
    st.version += 1;
    paths.save(&st)?;
    sync(paths, true).await
}

/// `guard off` (true) or `guard on` (false), uid 0 only.
pub async fn switch(paths: &RootPaths, off: bool, by: &str) -> Result<Decision, String> {
    let mut st = paths.load()?;
    st.off = off.then(|| by.to_owned());
    st.version += 1;
    info!(by, off, "guard: turned {}", if off { "off" } else { "on" });
    paths.save(&st)?;
    sync(paths, true).await
}

/// At boot, before tailscaled: the last table applied, from root's own copy; or, when the guard
/// is enforcing and nothing was applied yet, a table that lets nobody in. Fail closed.
pub async fn restore(paths: &RootPaths) -> Result<(), String> {
    let cfg = load_config(&paths.config)?;
    let mut st = paths.load()?;
    if cfg.mode == GuardMode::Off || st.off.is_some() || st.initialized.is_none() {
        info!("guard: nothing to restore (the guard is off or not initialized)");
        return Ok(());
    }
    let (interface, set) = match &st.applied {
        Some(a) => (a.interface.clone(), a.set.clone()),
        None => (cfg.interface.clone(), GuardSet::default()),
    };
    let structure = nft::apply(&interface, &set).await?;
    info!(interface = %interface, prefixes = set.len(), "guard: restored at boot");
    st.applied = Some(Applied {
        interface,
        set,
        structure,
        boot_id: boot_id(),
    });
    paths.save(&st)
}

/// `tailscaled_doors = "close"` in root's own config, or a refusal.
pub fn doors_may_close(paths: &RootPaths) -> Result<(), String> {
    let cfg = load_config(&paths.config)?;
    if cfg.mode != GuardMode::Enforce || cfg.doors != Doors::Close {
        return Err("[guard] tailscaled_doors is not \"close\" (with mode = \"enforce\") in the root side's config".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_side_reads_only_its_guard_table() {
        let c = parse_config(
            "[tailscale]\nsocket = \"/x\"\n[guard]\nmode = \"enforce\"\ninterface = \"ts1\"\napprove_new = [\"tag:ci\", \"n1\"]\ntailscaled_doors = \"close\"\n",
        )
        .unwrap();
        assert_eq!(c.mode, GuardMode::Enforce);
        assert_eq!(c.interface, "ts1");
        assert_eq!(c.doors, Doors::Close);
        assert!(matches!(c.approve_new, ApproveNew::Matching(ref v) if v.len() == 2));
        assert_eq!(parse_config("").unwrap(), RootConfig::default());
        for bad in [
            "[guard]\nmode = \"on\"",
            "[guard]\ninterface = \"a b\"",
            "[guard]\ntailscaled_doors = \"open\"",
        ] {
            assert!(parse_config(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_anyone_else_may_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.toml");
        std::fs::write(&p, "[guard]\nmode = \"enforce\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load_config(&p).unwrap_err();
        assert!(e.contains("writable by no one else"), "{e}");
        assert_eq!(
            load_config(&d.path().join("none")).unwrap(),
            RootConfig::default()
        );
    }
}
