//! Secrets: a value that never prints, read from a file only its owner (and group) may read.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ctx::{ConfigError, Ctx};

/// A secret value that never shows up in Debug output or printed config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    /// A secret from a value read elsewhere (an environment variable).
    pub(crate) fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    #[doc(hidden)]
    pub fn for_tests(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Whoever can write a config, secret or program file runs code as the service user (or
/// redirects its alerts): refused when others may write it, warned of when its group may.
pub(super) fn writable_only_by_owner(p: &Path) -> Result<(), String> {
    let Ok(m) = std::fs::metadata(p) else {
        return Ok(());
    };
    let mode = m.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "every local user can write {p}: chmod o-w {p}",
            p = p.display()
        ));
    }
    if mode & 0o020 != 0 {
        tracing::warn!(
            path = %p.display(),
            "its group can write this file; chmod g-w it unless the whole group is trusted"
        );
    }
    Ok(())
}

pub(super) fn read_secret(
    cx: &Ctx,
    f: &Spanned<PathBuf>,
    key: &str,
) -> Result<Secret, ConfigError> {
    let p = f.get_ref();
    let text =
        std::fs::read_to_string(p).map_err(|e| cx.at(f, key, format!("{}: {e}", p.display())))?;
    writable_only_by_owner(p).map_err(|m| cx.at(f, key, m))?;
    if std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
        return Err(cx.at(
            f,
            key,
            format!(
                "every local user can read {p}: chmod o-rwx {p}",
                p = p.display()
            ),
        ));
    }
    let v = text.trim_end_matches(['\r', '\n']).to_owned();
    if v.is_empty() {
        return Err(cx.at(f, key, format!("{} is empty", p.display())));
    }
    Ok(Secret(v))
}
