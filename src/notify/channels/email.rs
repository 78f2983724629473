//! E-mail over SMTP (lettre) or the local `sendmail`.
//!
//! TLS policy: `smtps://` is implicit TLS; `smtp://` to a non-loopback host *requires* STARTTLS
//! (a server that does not offer it fails the send rather than receive the alert in clear);
//! `smtp://` to loopback is plain, for local relays. Headers are built only from sanitized text
//! (see `render`), and lettre encodes them.

use std::path::PathBuf;
use std::str::FromStr;

use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use toml::Spanned;

use super::{Message, Room};
use crate::config::ctx::ConfigError;
use crate::config::keys::{is_loopback, shown_url, toml_str, Keys};
use crate::config::raw::{OneOrMany, RawNotify};
use crate::config::secret::Secret;
use crate::notify::http::SendError;
use crate::notify::render::Rendered;

/// The local MTA's program for `smtp = "sendmail"` unless `sendmail` names another.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// Environment variable read for the SMTP password when no `password_file`/`password_env` is set.
pub const PASSWORD_ENV: &str = "TAILSCALE_MONITOR_SMTP_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP; only allowed to a loopback relay.
    None,
    /// STARTTLS, required (the connection fails rather than send in clear).
    StartTls,
    /// Implicit TLS (smtps://).
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// The local MTA's `sendmail` program (`-i -f FROM -- TO…`, message on stdin).
    Sendmail { program: PathBuf },
    Smtp {
        host: String,
        port: u16,
        tls: SmtpTls,
        user: Option<String>,
        password: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<Mailbox>,
    pub from: Mailbox,
    pub transport: MailTransport,
}

impl Room for Email {
    const NAME: &'static str = "email";
    const BATCH: usize = 200;

    fn parse(k: &Keys) -> Result<Self, ConfigError> {
        parse_email(k)
    }

    fn show(&self, out: &mut String) {
        let to: Vec<String> = self.to.iter().map(|m| toml_str(&m.to_string())).collect();
        let smtp = match &self.transport {
            MailTransport::Sendmail { program } => format!(
                "\"sendmail\"\nsendmail = {}",
                toml_str(&program.display().to_string())
            ),
            t => toml_str(&t.to_string()),
        };
        out.push_str(&format!(
            "to = [{}]\nfrom = {}\nsmtp = {smtp}\n",
            to.join(", "),
            toml_str(&self.from.to_string()),
        ));
        if let MailTransport::Smtp {
            password: Some(_), ..
        } = self.transport
        {
            out.push_str("# password: set (redacted)\n");
        }
    }

    async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
        Ok(send(self, m.timeout, m.rendered).await?)
    }
}

impl std::fmt::Display for MailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailTransport::Sendmail { program } => write!(f, "sendmail ({})", program.display()),
            MailTransport::Smtp {
                host,
                port,
                tls,
                user,
                ..
            } => {
                let scheme = if *tls == SmtpTls::Tls {
                    "smtps"
                } else {
                    "smtp"
                };
                let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                write!(f, "{scheme}://{user}{host}:{port}")
            }
        }
    }
}

fn parse_email(k: &Keys) -> Result<Email, ConfigError> {
    let r = k.raw();
    let missing = |key: &str| k.missing(key, "");
    let to_raw = r.to.as_ref().ok_or_else(|| missing("to"))?;
    let list = match to_raw.get_ref() {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if list.is_empty() {
        return Err(k.at(to_raw, "to", "needs at least one address"));
    }
    let to = list
        .iter()
        .map(|a| {
            Mailbox::from_str(a)
                .map_err(|e| k.at(to_raw, "to", format!("`{a}` is not a mail address: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let from_raw = r.from.as_ref().ok_or_else(|| missing("from"))?;
    let from = Mailbox::from_str(from_raw.get_ref()).map_err(|e| {
        k.at(
            from_raw,
            "from",
            format!("`{}` is not a mail address: {e}", from_raw.get_ref()),
        )
    })?;
    let smtp_raw = r.smtp.as_ref().ok_or_else(|| missing("smtp"))?;
    let transport = smtp_target(k, smtp_raw, r)?;
    Ok(Email {
        to,
        from,
        transport,
    })
}

fn smtp_target(k: &Keys, s: &Spanned<String>, r: &RawNotify) -> Result<MailTransport, ConfigError> {
    let text = s.get_ref();
    if text == "sendmail" {
        let program = match &r.sendmail {
            None => PathBuf::from(DEFAULT_SENDMAIL),
            Some(p) if p.get_ref().is_absolute() => p.get_ref().clone(),
            Some(p) => {
                return Err(k.at(
                    p,
                    "sendmail",
                    format!("`{}` must be an absolute path", p.get_ref().display()),
                ))
            }
        };
        return Ok(MailTransport::Sendmail { program });
    }
    if let Some(p) = &r.sendmail {
        return Err(k.at(p, "sendmail", "only applies with smtp = \"sendmail\""));
    }
    let bad = |why: &str| {
        k.at(
            s,
            "smtp",
            format!("`{}` {why}; expected \"smtp://host:port\", \"smtp://user@host:587\", \"smtps://user@host:465\" or \"sendmail\"", shown_url(text)),
        )
    };
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?
        .to_owned();
    if url.password().is_some() {
        return Err(k.at(
            s,
            "smtp",
            "do not put the password in the URL: use password_file or the environment",
        ));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(bad("has a path or query"));
    }
    let user = Some(url.username()).filter(|u| !u.is_empty()).map(|u| {
        percent_encoding::percent_decode_str(u)
            .decode_utf8_lossy()
            .into_owned()
    });
    let (tls, default_port) = match url.scheme() {
        "smtps" => (SmtpTls::Tls, 465),
        "smtp" if is_loopback(&host) => (SmtpTls::None, 25),
        "smtp" => (SmtpTls::StartTls, if user.is_some() { 587 } else { 25 }),
        _ => return Err(bad("has an unsupported scheme")),
    };
    let password = match (&r.password_file, &r.password_env) {
        (Some(_), Some(env)) => {
            return Err(k.at(
                env,
                "password_env",
                "set either password_file or password_env, not both",
            ))
        }
        (Some(_), None) => k.secret(&r.password_file, "password_file")?,
        (None, Some(env)) => Some(Secret::new(std::env::var(env.get_ref()).map_err(|_| {
            k.at(
                env,
                "password_env",
                format!("environment variable {} is not set", env.get_ref()),
            )
        })?)),
        // The default variable only matters when there is a user to authenticate as.
        (None, None) if user.is_some() => std::env::var(PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret::new),
        (None, None) => None,
    };
    if user.is_some() && password.is_none() {
        return Err(k.at(
            s,
            "smtp",
            format!(
                "a user is set but no password: set password_file, password_env or {PASSWORD_ENV}"
            ),
        ));
    }
    Ok(MailTransport::Smtp {
        host: host.trim_matches(['[', ']']).to_owned(),
        port: url.port().unwrap_or(default_port),
        tls,
        user,
        password,
    })
}

/// Builds the MIME message: text and HTML alternatives.
pub fn build(cfg: &Email, r: &Rendered) -> Result<Mail, String> {
    let mut b = Mail::builder()
        .from(cfg.from.clone())
        .subject(r.subject.clone())
        .header(header::ContentTransferEncoding::QuotedPrintable)
        .user_agent(concat!("tailscale-monitor/", env!("CARGO_PKG_VERSION")).to_owned());
    for to in &cfg.to {
        b = b.to(to.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(
        r.text.clone(),
        r.html.clone(),
    ))
    .map_err(|e| format!("building the message: {e}"))
}

/// Sends one message; the error is one line naming the transport.
/// `program -i -f FROM -- TO…` with the message on its standard input, as lettre's sendmail
/// transport runs it, but with an environment built from an allowlist (F12): the MTA never sees
/// the monitor's secrets.
async fn sendmail(program: &std::path::Path, msg: &Mail) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let env = msg.envelope();
    let mut c = crate::notify::http::child_command(program);
    c.arg("-i");
    if let Some(from) = env.from() {
        c.arg("-f").arg(from);
    }
    c.arg("--")
        .args(env.to().iter().map(|a| a.to_string()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|e| format!("running it: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(&msg.formatted())
        .await
        .map_err(|e| format!("writing the message: {e}"))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for it: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "exited with {}: {}",
        out.status,
        crate::sanitize::line(err.trim(), 300)
    ))
}

pub async fn send(cfg: &Email, timeout: std::time::Duration, r: &Rendered) -> Result<(), String> {
    let msg = build(cfg, r)?;
    let target = cfg.transport.to_string();
    let res = match &cfg.transport {
        MailTransport::Sendmail { program } => {
            if !program.exists() {
                return Err(format!(
                    "{target}: no such program — install a local MTA (e.g. `apt install postfix` or msmtp-mta), set `sendmail` to its program, or use smtp://"
                ));
            }
            tokio::time::timeout(timeout, sendmail(program, &msg))
                .await
                .map_err(|_| format!("{target}: no answer within {:?}", timeout))?
                .map_err(|e| format!("{target}: {e}"))
        }
        MailTransport::Smtp {
            host,
            port,
            tls,
            user,
            password,
        } => {
            let builder = match tls {
                SmtpTls::None => {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                }
                SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                    .map_err(|e| format!("{target}: {e}"))?,
                SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                    .map_err(|e| format!("{target}: {e}"))?,
            };
            let mut builder = builder.port(*port).timeout(Some(timeout));
            if let (Some(u), Some(p)) = (user, password) {
                builder = builder.credentials(Credentials::new(u.clone(), p.expose().to_owned()));
            }
            tokio::time::timeout(timeout, builder.build().send(msg))
                .await
                .map_err(|_| format!("no answer within {:?}", timeout))
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
        }
    };
    res.map_err(|e| crate::sanitize::line(&format!("{target}: {e}"), 300))
}
