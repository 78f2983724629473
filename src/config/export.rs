//! `[[export]]`: `name`, `kind` ("file", "syslog", "journald"), `path` and `format` (file),
//! `address`, `pen`, `ca_file`, `cert_file` and `key_file` (syslog), `socket` (journald), `max_lag`
//! (a contract: these names stay).

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::ctx::{ConfigError, Ctx};
use super::raw::RawExport;

/// Where the event log is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportSink {
    /// JSON lines appended to a file.
    File { path: PathBuf, format: FileFormat },
    /// RFC 5424 to a collector: TCP (octet counting, RFC 6587), TLS (RFC 5425), RELP (over TCP
    /// or TLS) or UDP.
    Syslog {
        address: String,
        transport: Transport,
        /// The private enterprise number of the structured data's own element (`tsmon@PEN`).
        pen: u32,
    },
    /// The native protocol of systemd-journald.
    Journald { socket: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// TLS (RFC 5425).
    Tls(TlsClient),
    /// RELP over TCP: every message acknowledged by the collector (rsyslog's `imrelp`).
    Relp,
    /// RELP over TLS (`imrelp` with `tls="on"`).
    RelpTls(TlsClient),
}

/// The TLS client of a syslog export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsClient {
    /// The collector's certificate is checked against this CA (PEM), or the web PKI's roots.
    pub ca_file: Option<PathBuf>,
    /// The certificate (`cert_file`, PEM, its chain after it) and key (`key_file`, PEM) this
    /// monitor shows a collector that asks for one (mutual TLS: librelp's default).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Transport {
    /// How the collector is spoken to over TLS: `tls://` and `relp+tls://`.
    pub fn tls(&self) -> Option<&TlsClient> {
        match self {
            Transport::Tls(t) | Transport::RelpTls(t) => Some(t),
            _ => None,
        }
    }

    /// Every message is acknowledged by the collector: `relp://` and `relp+tls://`.
    pub fn relp(&self) -> bool {
        matches!(self, Transport::Relp | Transport::RelpTls { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Elastic Common Schema.
    Ecs,
    /// Open Cybersecurity Schema Framework.
    Ocsf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    pub name: String,
    pub sink: ExportSink,
    /// A backlog older than this raises `monitor.export_lagging` (once per backlog).
    pub max_lag: Duration,
}

pub(super) fn parse(cx: &Ctx<'_>, e: &Spanned<RawExport>) -> Result<ExportConfig, ConfigError> {
    let r = e.get_ref();
    let kind = r.kind.get_ref().as_str();
    let need = |v: &Option<Spanned<String>>, key: &str| {
        v.as_ref().map(|s| s.get_ref().clone()).ok_or_else(|| {
            cx.at(
                e,
                key,
                format!("an export of kind \"{kind}\" needs `{key}`"),
            )
        })
    };
    let sink = match kind {
        "file" => {
            let path = need(&r.path, "path")?;
            if !path.starts_with('/') {
                return Err(cx.at(r.path.as_ref().expect("given"), "path", "must be absolute"));
            }
            let format = cx.choice(
                &r.format,
                "format",
                &[("ecs", FileFormat::Ecs), ("ocsf", FileFormat::Ocsf)],
                FileFormat::Ecs,
            )?;
            ExportSink::File {
                path: path.into(),
                format,
            }
        }
        "syslog" => {
            let address = need(&r.address, "address")?;
            let identity = match (&r.cert_file, &r.key_file) {
                (Some(c), Some(k)) => Some((c.get_ref().into(), k.get_ref().into())),
                (None, None) => None,
                (Some(c), None) => return Err(cx.at(c, "cert_file", "needs `key_file` beside it")),
                (None, Some(k)) => return Err(cx.at(k, "key_file", "needs `cert_file` beside it")),
            };
            let tls = TlsClient {
                ca_file: r.ca_file.as_ref().map(|c| c.get_ref().into()),
                identity,
            };
            let (transport, rest) = match address.split_once("://") {
                Some(("tcp", rest)) => (Transport::Tcp, rest),
                Some(("udp", rest)) => (Transport::Udp, rest),
                Some(("relp", rest)) => (Transport::Relp, rest),
                Some(("relp+tls", rest)) => (Transport::RelpTls(tls), rest),
                Some(("tls", rest)) => (Transport::Tls(tls), rest),
                _ => {
                    return Err(cx.at(
                        r.address.as_ref().expect("given"),
                        "address",
                        format!(
                        "`{address}`: expected tcp://HOST:PORT, tls://HOST:PORT, relp://HOST:PORT, relp+tls://HOST:PORT or udp://HOST:PORT"
                    ),
                    ))
                }
            };
            if transport.tls().is_none() {
                for (v, key) in [
                    (&r.ca_file, "ca_file"),
                    (&r.cert_file, "cert_file"),
                    (&r.key_file, "key_file"),
                ] {
                    if let Some(v) = v {
                        return Err(cx.at(
                            v,
                            key,
                            format!("only a tls:// or relp+tls:// address uses {key}"),
                        ));
                    }
                }
            }
            if rest
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(cx.at(
                    r.address.as_ref().expect("given"),
                    "address",
                    format!("`{address}`: no port"),
                ));
            }
            let Some(pen) = r.pen.as_ref() else {
                return Err(cx.at(
                    e,
                    "pen",
                    "a syslog export needs `pen`, your organisation's IANA private enterprise number: the structured data's own element is named tsmon@PEN (RFC 5424 §7.2.2)",
                ));
            };
            ExportSink::Syslog {
                address: rest.to_owned(),
                transport,
                pen: *pen.get_ref(),
            }
        }
        "journald" => ExportSink::Journald {
            socket: r.socket.as_ref().map_or_else(
                || "/run/systemd/journal/socket".into(),
                |s| s.get_ref().into(),
            ),
        },
        other => {
            return Err(cx.at(
                &r.kind,
                "kind",
                format!("`{other}` is not an export kind: \"file\", \"syslog\" or \"journald\""),
            ))
        }
    };
    Ok(ExportConfig {
        name: r
            .name
            .as_ref()
            .map_or_else(|| kind.to_owned(), |n| n.get_ref().clone()),
        sink,
        max_lag: cx.duration(&r.max_lag, "max_lag", Duration::from_secs(600))?,
    })
}
