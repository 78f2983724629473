//! What a channel reads of its `[[notify]]` table: each key typed, and errors that name the
//! file, the line and the key. A channel's room (`notify::channels::*`) parses through this; the
//! URL rules (https for credentials, secrets out of files others can read) are here, once.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ctx::{ConfigError, Ctx};
use super::raw::RawNotify;
use super::secret::{read_secret, writable_only_by_owner, Secret};

/// What a channel's URL carries, which decides the rules it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlUse {
    /// Nothing secret (a URL with a password still counts as a secret).
    Plain,
    /// The requests to it carry a credential (a token header, a routing key): https only.
    Credential,
    /// The URL is itself the credential (whoever has a Slack webhook URL can post): https only,
    /// and never in a config file others can read.
    Secret,
}

/// One `[[notify]]` table being read.
pub struct Keys<'a> {
    pub(super) cx: &'a Ctx<'a>,
    pub(super) n: &'a Spanned<RawNotify>,
}

impl Keys<'_> {
    /// The channel kind (`kind = "…"`).
    pub fn kind(&self) -> &str {
        self.n.get_ref().kind.get_ref()
    }

    /// The table's keys as serde read them.
    pub fn raw(&self) -> &RawNotify {
        self.n.get_ref()
    }

    /// An error about `key`, at the value's line.
    pub fn at<T>(&self, s: &Spanned<T>, key: &str, msg: impl std::fmt::Display) -> ConfigError {
        self.cx.at(s, key, msg)
    }

    /// "needs `key`", at the table's line; `what` says more (", a room ID like …").
    pub fn missing(&self, key: &str, what: &str) -> ConfigError {
        self.cx.at(
            self.n,
            key,
            format!("[[notify]] kind = \"{}\" needs `{key}`{what}", self.kind()),
        )
    }

    /// The required `url`, checked for what it carries.
    pub fn url(&self, use_: UrlUse) -> Result<url::Url, ConfigError> {
        let raw = self
            .raw()
            .url
            .as_ref()
            .ok_or_else(|| self.missing("url", ""))?;
        self.checked_url(raw, "url", use_)
    }

    /// `url` when set, else `default`.
    pub fn url_or(&self, default: &str, use_: UrlUse) -> Result<url::Url, ConfigError> {
        match &self.raw().url {
            Some(raw) => self.checked_url(raw, "url", use_),
            None => Ok(url::Url::parse(default).expect("static URL")),
        }
    }

    /// Another URL key that leads to a credential's use: https (or loopback) only.
    pub fn https(&self, raw: &Spanned<String>, key: &str) -> Result<url::Url, ConfigError> {
        no_plain_http(self.cx, raw, key, &http_url(self.cx, raw, key)?)
    }

    fn checked_url(
        &self,
        raw: &Spanned<String>,
        key: &str,
        use_: UrlUse,
    ) -> Result<url::Url, ConfigError> {
        let u = http_url(self.cx, raw, key)?;
        let password = u.password().is_some();
        let query = crate::sanitize::secret_query(&u);
        // A URL that is itself a credential, or that carries one (a token, a routing key, a
        // password, a `?token=`): never in clear over the network.
        if use_ != UrlUse::Plain || password || query.is_some() {
            no_plain_http(self.cx, raw, key, &u).map_err(|e| match &query {
                Some(q) if use_ == UrlUse::Plain && !password => self.cx.at(
                    raw,
                    key,
                    format!(
                        "`{}` carries a credential in its query (`{q}=`) and would send it in clear over http:// to another host: use https:// (plain http:// only to a loopback address)",
                        shown_url(raw.get_ref())
                    ),
                ),
                _ => e,
            })?;
        }
        let secret = match use_ {
            UrlUse::Secret => Some(format!("a {} webhook URL is a secret", self.kind())),
            _ if password => Some("this URL holds a password".to_owned()),
            _ if query.is_some() => Some("this URL carries a credential in its query".to_owned()),
            _ => None,
        };
        if let (Some(what), true) = (secret, self.cx.public) {
            return Err(self.cx.at(
                raw,
                key,
                format!(
                    "{what}, and every local user can read {f}: chmod o-rwx {f}",
                    f = self.cx.file
                ),
            ));
        }
        Ok(u)
    }

    /// A secret read from the file `f` names, if it is set.
    pub fn secret(
        &self,
        f: &Option<Spanned<PathBuf>>,
        key: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        f.as_ref().map(|f| read_secret(self.cx, f, key)).transpose()
    }

    /// A secret that must be set.
    pub fn required(&self, f: &Option<Spanned<PathBuf>>, key: &str) -> Result<Secret, ConfigError> {
        self.secret(f, key)?.ok_or_else(|| self.missing(key, ""))
    }

    /// A required string key.
    pub fn string(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        what: &str,
    ) -> Result<String, ConfigError> {
        v.as_ref()
            .map(|c| c.get_ref().clone())
            .ok_or_else(|| self.missing(key, what))
    }

    /// A program the channel runs: refused when others may write it.
    pub fn program(
        &self,
        p: &Path,
        at: &Spanned<impl Sized>,
        key: &str,
    ) -> Result<(), ConfigError> {
        writable_only_by_owner(p).map_err(|m| self.cx.at(at, key, m))
    }
}

/// A TOML string, for the redacted display.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL from the config as an error may repeat it: scheme and host only. A webhook URL's path
/// and a URL's user and password are credentials (Slack, Discord, Teams), and an error ends up in
/// the journal (F18).
pub fn shown_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return format!("({} characters, not a URL)", text.chars().count());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let more = if rest.len() > authority.len() {
        "/…"
    } else {
        ""
    };
    crate::sanitize::line(&format!("{scheme}://{host}{more}"), 120)
}

pub(super) fn http_url(
    cx: &Ctx,
    raw: &Spanned<String>,
    key: &str,
) -> Result<url::Url, ConfigError> {
    let u = url::Url::parse(raw.get_ref()).map_err(|e| {
        cx.at(
            raw,
            key,
            format!("`{}` is not a URL: {e}", shown_url(raw.get_ref())),
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(cx.at(
            raw,
            key,
            format!("`{}` must be http:// or https://", shown_url(raw.get_ref())),
        ));
    }
    Ok(u)
}

/// `u` unchanged, unless it would send a credential in clear: plain `http://` is for loopback
/// only (a local proxy, a local Headscale), as for SMTP (F10).
pub(super) fn no_plain_http(
    cx: &Ctx,
    raw: &Spanned<String>,
    key: &str,
    u: &url::Url,
) -> Result<url::Url, ConfigError> {
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if u.scheme() == "http" && !loopback {
        return Err(cx.at(
            raw,
            key,
            format!(
                "`{}` would send a credential in clear over http:// to another host: use https:// (plain http:// only to a loopback address)",
                shown_url(raw.get_ref())
            ),
        ));
    }
    Ok(u.clone())
}
