//! `[[notify]]`: every channel kind, its keys and their validation.

use super::*;

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
pub struct EmailConfig {
    pub to: Vec<Mailbox>,
    pub from: Mailbox,
    pub transport: MailTransport,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    Email(EmailConfig),
    /// POST of the documented JSON schema, optionally HMAC-SHA256 signed.
    Webhook {
        url: url::Url,
        secret: Option<Secret>,
    },
    /// ntfy: POST of the text to the topic URL.
    Ntfy {
        url: url::Url,
        token: Option<Secret>,
    },
    /// Slack incoming webhook.
    Slack {
        url: url::Url,
    },
    /// Discord webhook.
    Discord {
        url: url::Url,
    },
    /// Telegram Bot API `sendMessage`.
    Telegram {
        api_url: url::Url,
        token: Secret,
        chat_id: String,
    },
    /// Gotify `POST /message`.
    Gotify {
        url: url::Url,
        token: Secret,
    },
    /// Prometheus Alertmanager API v2, one alert per event.
    Alertmanager {
        url: url::Url,
    },
    /// A program run without a shell, the JSON payload on stdin.
    Exec {
        command: Vec<String>,
    },
    /// Microsoft Teams Workflows webhook: an Adaptive Card.
    Teams {
        url: url::Url,
    },
    /// Mattermost incoming webhook.
    Mattermost {
        url: url::Url,
    },
    /// Google Chat space webhook.
    GoogleChat {
        url: url::Url,
    },
    /// PagerDuty Events API v2: one `trigger` per event, deduplicated per device and kind.
    PagerDuty {
        url: url::Url,
        routing_key: Secret,
    },
    /// Pushover: priority by severity.
    Pushover {
        url: url::Url,
        token: Secret,
        user_key: Secret,
    },
    /// Matrix client-server API: `m.room.message` with a transaction id per outbox batch.
    Matrix {
        homeserver: url::Url,
        room: String,
        token: Secret,
    },
    /// The Apprise CLI, with the service URLs from a file only the service can read.
    Apprise {
        program: PathBuf,
        urls_file: PathBuf,
    },
}

impl ChannelKind {
    /// The most events one delivery attempt takes from the outbox. Per-event channels
    /// (PagerDuty) take a few requests of their provider's rate limit, so a 429 costs little and
    /// what went through is kept; mail stays well under a relay's message-size limit; a chat
    /// message is capped to its provider's length anyway (and a refused one is resent event by
    /// event). A larger backlog goes out in several batches.
    pub fn batch_limit(&self) -> usize {
        match self {
            ChannelKind::PagerDuty { .. } => 10,
            ChannelKind::Email(_) => 200,
            ChannelKind::Webhook { .. }
            | ChannelKind::Alertmanager { .. }
            | ChannelKind::Exec { .. } => 500,
            _ => 1000,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Email(_) => "email",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Gotify { .. } => "gotify",
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Mattermost { .. } => "mattermost",
            ChannelKind::GoogleChat { .. } => "googlechat",
            ChannelKind::PagerDuty { .. } => "pagerduty",
            ChannelKind::Pushover { .. } => "pushover",
            ChannelKind::Matrix { .. } => "matrix",
            ChannelKind::Apprise { .. } => "apprise",
            ChannelKind::Alertmanager { .. } => "alertmanager",
            ChannelKind::Exec { .. } => "exec",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub route: Route,
    pub kind: ChannelKind,
    /// Per send.
    pub timeout: Duration,
}

impl fmt::Display for MailTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

pub(super) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn channel(cx: &Ctx, n: &Spanned<RawNotify>) -> Result<Channel, ConfigError> {
    let r = n.get_ref();
    let kind = r.kind.get_ref().as_str();
    let name = r
        .name
        .as_ref()
        .map_or_else(|| kind.to_owned(), |s| s.get_ref().clone());
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(cx.at(
            n,
            "name",
            "channel names must be non-empty and without spaces",
        ));
    }
    let min_severity = cx.choice(
        &r.min_severity,
        "min_severity",
        &[
            ("info", Severity::Info),
            ("warning", Severity::Warning),
            ("critical", Severity::Critical),
        ],
        Severity::Info,
    )?;
    let kinds = match &r.events {
        None => None,
        Some(s) => Some(
            s.get_ref()
                .iter()
                .map(|k| {
                    EventKind::parse(k).ok_or_else(|| {
                        cx.at(
                            s,
                            "events",
                            format!("unknown event kind `{k}` (see README: Events)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let route = Route {
        channel: name.clone(),
        min_severity,
        kinds,
        // Set from `[alerts] coalesce_window` once the whole file is read.
        coalesce: Duration::ZERO,
    };
    let url = |key: &str| -> Result<url::Url, ConfigError> {
        let raw = r
            .url
            .as_ref()
            .ok_or_else(|| cx.at(n, key, format!("[[notify]] kind = \"{kind}\" needs `url`")))?;
        let u = http_url(cx, raw, "url")?;
        // A URL that is itself a credential, or that carries one (a token, a routing key, a
        // password): never in clear over the network.
        let carries = matches!(
            kind,
            "slack"
                | "discord"
                | "teams"
                | "mattermost"
                | "googlechat"
                | "gotify"
                | "pagerduty"
                | "pushover"
        ) || u.password().is_some()
            || (kind == "ntfy" && r.token_file.is_some());
        if carries {
            no_plain_http(cx, raw, "url", &u)?;
        }
        // Whoever has a Slack or Discord webhook URL can post to the channel.
        let secret = match kind {
            "slack" | "discord" | "teams" | "mattermost" | "googlechat" => {
                Some(format!("a {kind} webhook URL is a secret"))
            }
            _ if u.password().is_some() => Some("this URL holds a password".to_owned()),
            _ => None,
        };
        if let (Some(what), true) = (secret, cx.public) {
            return Err(cx.at(
                raw,
                key,
                format!(
                    "{what}, and every local user can read {f}: chmod o-rwx {f}",
                    f = cx.file
                ),
            ));
        }
        Ok(u)
    };
    let secret = |f: &Option<Spanned<PathBuf>>, key: &str| -> Result<Option<Secret>, ConfigError> {
        f.as_ref().map(|f| read_secret(cx, f, key)).transpose()
    };
    let required = |f: &Option<Spanned<PathBuf>>, key: &str| -> Result<Secret, ConfigError> {
        secret(f, key)?.ok_or_else(|| {
            cx.at(
                n,
                key,
                format!("[[notify]] kind = \"{kind}\" needs `{key}`"),
            )
        })
    };
    let channel_kind = match kind {
        "email" => ChannelKind::Email(email(cx, n)?),
        "webhook" => ChannelKind::Webhook { url: url("url")?, secret: secret(&r.secret_file, "secret_file")? },
        "ntfy" => ChannelKind::Ntfy { url: url("url")?, token: secret(&r.token_file, "token_file")? },
        "slack" => ChannelKind::Slack { url: url("url")? },
        "discord" => ChannelKind::Discord { url: url("url")? },
        "telegram" => ChannelKind::Telegram {
            api_url: match &r.api_url {
                Some(a) => no_plain_http(cx, a, "api_url", &http_url(cx, a, "api_url")?)?,
                None => url::Url::parse("https://api.telegram.org").expect("static URL"),
            },
            token: required(&r.token_file, "token_file")?,
            chat_id: r
                .chat_id
                .as_ref()
                .map(|c| c.get_ref().clone())
                .ok_or_else(|| cx.at(n, "chat_id", "[[notify]] kind = \"telegram\" needs `chat_id`"))?,
        },
        "gotify" => ChannelKind::Gotify { url: url("url")?, token: required(&r.token_file, "token_file")? },
        "alertmanager" => ChannelKind::Alertmanager { url: url("url")? },
        "teams" => ChannelKind::Teams { url: url("url")? },
        "mattermost" => ChannelKind::Mattermost { url: url("url")? },
        "googlechat" => ChannelKind::GoogleChat { url: url("url")? },
        "pagerduty" => ChannelKind::PagerDuty {
            url: match &r.url {
                Some(_) => url("url")?,
                None => url::Url::parse("https://events.pagerduty.com/v2/enqueue").expect("static URL"),
            },
            routing_key: required(&r.routing_key_file, "routing_key_file")?,
        },
        "pushover" => ChannelKind::Pushover {
            url: match &r.url {
                Some(_) => url("url")?,
                None => url::Url::parse("https://api.pushover.net/1/messages.json").expect("static URL"),
            },
            token: required(&r.token_file, "token_file")?,
            user_key: required(&r.user_key_file, "user_key_file")?,
        },
        "matrix" => ChannelKind::Matrix {
            homeserver: match &r.homeserver {
                Some(h) => no_plain_http(cx, h, "homeserver", &http_url(cx, h, "homeserver")?)?,
                None => return Err(cx.at(n, "homeserver", "[[notify]] kind = \"matrix\" needs `homeserver`")),
            },
            room: r
                .room
                .as_ref()
                .map(|c| c.get_ref().clone())
                .ok_or_else(|| cx.at(n, "room", "[[notify]] kind = \"matrix\" needs `room` (a room ID like !abc:example.org)"))?,
            token: required(&r.token_file, "token_file")?,
        },
        "apprise" => {
            let f = r.urls_file.as_ref().ok_or_else(|| {
                cx.at(n, "urls_file", "[[notify]] kind = \"apprise\" needs `urls_file` (Apprise URLs, one per line)")
            })?;
            // The URLs carry the services' credentials: the file is a secret like any other.
            read_secret(cx, f, "urls_file")?;
            if let Some(p) = r.program.as_ref().filter(|p| p.get_ref().is_absolute()) {
                writable_only_by_owner(p.get_ref()).map_err(|m| cx.at(p, "program", m))?;
            }
            ChannelKind::Apprise {
                program: r
                    .program
                    .as_ref()
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_else(|| PathBuf::from("apprise")),
                urls_file: f.get_ref().clone(),
            }
        }
        "exec" => {
            let c = r
                .command
                .as_ref()
                .ok_or_else(|| cx.at(n, "command", "[[notify]] kind = \"exec\" needs `command`"))?;
            if c.get_ref().is_empty() || !Path::new(&c.get_ref()[0]).is_absolute() {
                return Err(cx.at(c, "command", "must be a list starting with an absolute program path"));
            }
            writable_only_by_owner(Path::new(&c.get_ref()[0])).map_err(|m| cx.at(c, "command", m))?;
            ChannelKind::Exec { command: c.get_ref().clone() }
        }
        other => {
            return Err(cx.at(
                &r.kind,
                "kind",
                format!(
                    "unknown notify kind `{other}` (supported: email, webhook, ntfy, slack, discord, telegram, gotify, alertmanager, teams, mattermost, googlechat, pagerduty, pushover, matrix, apprise, exec)"
                ),
            ))
        }
    };
    let timeout = cx.duration(&r.timeout, "timeout", Duration::from_secs(30))?;
    Ok(Channel {
        name,
        route,
        kind: channel_kind,
        timeout,
    })
}

/// A URL from the config as an error may repeat it: scheme and host only. A webhook URL's path
/// and a URL's user and password are credentials (Slack, Discord, Teams), and an error ends up in
/// the journal (F18).
pub(super) fn shown_url(text: &str) -> String {
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

pub(super) fn email(cx: &Ctx, n: &Spanned<RawNotify>) -> Result<EmailConfig, ConfigError> {
    let r = n.get_ref();
    let missing = |key: &str| cx.at(n, key, format!("[[notify]] kind = \"email\" needs `{key}`"));
    let to_raw = r.to.as_ref().ok_or_else(|| missing("to"))?;
    let list = match to_raw.get_ref() {
        OneOrMany::One(s) => vec![s.clone()],
        OneOrMany::Many(v) => v.clone(),
    };
    if list.is_empty() {
        return Err(cx.at(to_raw, "to", "needs at least one address"));
    }
    let to = list
        .iter()
        .map(|a| {
            Mailbox::from_str(a)
                .map_err(|e| cx.at(to_raw, "to", format!("`{a}` is not a mail address: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let from_raw = r.from.as_ref().ok_or_else(|| missing("from"))?;
    let from = Mailbox::from_str(from_raw.get_ref()).map_err(|e| {
        cx.at(
            from_raw,
            "from",
            format!("`{}` is not a mail address: {e}", from_raw.get_ref()),
        )
    })?;
    let smtp_raw = r.smtp.as_ref().ok_or_else(|| missing("smtp"))?;
    let transport = smtp_target(cx, smtp_raw, r)?;
    Ok(EmailConfig {
        to,
        from,
        transport,
    })
}

pub(super) fn smtp_target(
    cx: &Ctx,
    s: &Spanned<String>,
    r: &RawNotify,
) -> Result<MailTransport, ConfigError> {
    let text = s.get_ref();
    if text == "sendmail" {
        let program = match &r.sendmail {
            None => PathBuf::from(DEFAULT_SENDMAIL),
            Some(p) if p.get_ref().is_absolute() => p.get_ref().clone(),
            Some(p) => {
                return Err(cx.at(
                    p,
                    "sendmail",
                    format!("`{}` must be an absolute path", p.get_ref().display()),
                ))
            }
        };
        return Ok(MailTransport::Sendmail { program });
    }
    if let Some(p) = &r.sendmail {
        return Err(cx.at(p, "sendmail", "only applies with smtp = \"sendmail\""));
    }
    let bad = |why: &str| {
        cx.at(
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
        return Err(cx.at(
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
            return Err(cx.at(
                env,
                "password_env",
                "set either password_file or password_env, not both",
            ))
        }
        (Some(f), None) => Some(read_secret(cx, f, "password_file")?),
        (None, Some(env)) => Some(Secret(std::env::var(env.get_ref()).map_err(|_| {
            cx.at(
                env,
                "password_env",
                format!("environment variable {} is not set", env.get_ref()),
            )
        })?)),
        // The default variable only matters when there is a user to authenticate as.
        (None, None) if user.is_some() => std::env::var(PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret),
        (None, None) => None,
    };
    if user.is_some() && password.is_none() {
        return Err(cx.at(
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
