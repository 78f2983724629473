//! `[web]`: `listen`, `token_file`, `url`, `viewers` (a contract: these names stay).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::ctx::{ConfigError, Ctx};
use super::raw::RawWeb;
use super::secret::{read_secret, Secret};

/// Where the web view listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebListen {
    /// A unix socket of the monitor's own (0600 in a 0700 directory) that only root may use:
    /// what `tailscale serve --bg unix:PATH` proxies to (tailscaled runs as root).
    Unix(PathBuf),
    /// A loopback TCP address, with a bearer token (for a local reverse proxy).
    Tcp(SocketAddr, Secret),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: WebListen,
    /// The view's address as the owner's browser reaches it (`https://server.tailnet.ts.net`):
    /// alerts link to its pages. `None`: no link.
    pub url: Option<String>,
    /// Stable IDs of the devices whose browsers may look, when the guard is off (with the guard
    /// on, its approvals decide).
    pub viewers: Vec<String>,
}

pub(super) fn parse(cx: &Ctx<'_>, raw: &RawWeb) -> Result<Option<WebConfig>, ConfigError> {
    let Some(listen) = &raw.listen else {
        if let Some(u) = &raw.url {
            return Err(cx.at(
                u,
                "web.url",
                "needs [web] listen: there is no view to link to",
            ));
        }
        return Ok(None);
    };
    let text = listen.get_ref();
    let listen = match text.strip_prefix("unix:") {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(cx.at(listen, "web.listen", "a unix socket path must be absolute"));
            }
            if raw.token_file.is_some() {
                return Err(cx.at(
                    listen,
                    "web.token_file",
                    "a unix socket needs no token: only root (tailscaled) may connect to it",
                ));
            }
            WebListen::Unix(path)
        }
        None => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                cx.at(
                    listen,
                    "web.listen",
                    format!("`{text}` is neither `unix:/path` nor an IP:port"),
                )
            })?;
            if !addr.ip().is_loopback() {
                return Err(cx.at(
                    listen,
                    "web.listen",
                    "a TCP address must be on loopback; use `unix:/run/tailscale-monitor-web/web.sock` with `tailscale serve`",
                ));
            }
            let Some(f) = &raw.token_file else {
                return Err(cx.at(
                    listen,
                    "web.token_file",
                    "a TCP listen address needs token_file: in userspace networking mode tailscaled forwards tailnet connections to loopback, so loopback is not only this machine",
                ));
            };
            WebListen::Tcp(addr, read_secret(cx, f, "web.token_file")?)
        }
    };
    let url = match &raw.url {
        None => None,
        Some(u) => {
            let parsed = url::Url::parse(u.get_ref())
                .map_err(|e| cx.at(u, "web.url", format!("`{}`: {e}", u.get_ref())))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
                return Err(cx.at(u, "web.url", "an http(s) URL with a host"));
            }
            Some(u.get_ref().trim_end_matches('/').to_owned())
        }
    };
    let mut viewers = Vec::new();
    for v in raw.viewers.iter().flat_map(|v| v.get_ref()) {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            let s = raw.viewers.as_ref().expect("iterated");
            return Err(cx.at(s, "web.viewers", format!("`{v}` is not a stable ID")));
        }
        viewers.push(v.clone());
    }
    Ok(Some(WebConfig {
        listen,
        url,
        viewers,
    }))
}
