//! E-mail over SMTP (lettre) or the local `sendmail`.
//!
//! TLS policy: `smtps://` is implicit TLS; `smtp://` to a non-loopback host *requires* STARTTLS
//! (a server that does not offer it fails the send rather than receive the alert in clear);
//! `smtp://` to loopback is plain, for local relays. Headers are built only from sanitized text
//! (see `render`), and lettre encodes them.

use lettre::message::{header, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::render::Rendered;
use crate::config::{EmailConfig, MailTransport, SmtpTls};

/// Builds the MIME message: text and HTML alternatives.
pub fn build(cfg: &EmailConfig, r: &Rendered) -> Result<Message, String> {
    let mut b = Message::builder()
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
pub async fn send(
    cfg: &EmailConfig,
    timeout: std::time::Duration,
    r: &Rendered,
) -> Result<(), String> {
    let msg = build(cfg, r)?;
    let target = cfg.transport.to_string();
    let res = match &cfg.transport {
        MailTransport::Sendmail { program } => {
            if !program.exists() {
                return Err(format!(
                    "{target}: no such program — install a local MTA (e.g. `apt install postfix` or msmtp-mta), set `sendmail` to its program, or use smtp://"
                ));
            }
            let t = AsyncSendmailTransport::<Tokio1Executor>::new_with_command(program.as_os_str());
            tokio::time::timeout(timeout, t.send(msg))
                .await
                .map_err(|_| format!("{target}: no answer within {:?}", timeout))?
                .map(|_| ())
                .map_err(|e| e.to_string())
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
