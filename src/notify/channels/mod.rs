//! The channels, one room each: its `[[notify]]` keys and their validation (through
//! [`config::Keys`](crate::config::keys::Keys)), its redacted display, its payload and its send. Adding
//! a channel is a file here and one line in the registry below.

use crate::config::ctx::ConfigError;
use crate::config::keys::Keys;

pub use super::http::Message;
use super::http::SendError;

/// A chat whose incoming-webhook URL is itself the credential (https only, never in a file
/// others can read): one POST of `body(message)` as JSON. Slack, Discord, Teams, Mattermost and
/// Google Chat differ only in that body.
macro_rules! secret_webhook {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $ty {
            pub url: url::Url,
        }

        impl super::Room for $ty {
            const NAME: &'static str = $name;

            fn parse(k: &crate::config::keys::Keys) -> Result<Self, crate::config::ctx::ConfigError> {
                Ok($ty {
                    url: k.url(crate::config::keys::UrlUse::Secret)?,
                })
            }

            fn show(&self, out: &mut String) {
                crate::notify::http::show_url(out, "url", &self.url, true);
            }

            async fn send(
                &self,
                m: &super::Message<'_>,
            ) -> Result<(), crate::notify::http::SendError> {
                let body: fn(&super::Message) -> serde_json::Value = $body;
                let req = crate::notify::http::client()
                    .post(self.url.clone())
                    .json(&body(m));
                crate::notify::http::finish(Self::NAME, req, m.timeout).await
            }
        }
    };
}

pub mod alertmanager;
pub mod apprise;
pub mod discord;
pub mod email;
pub mod exec;
pub mod googlechat;
pub mod gotify;
pub mod matrix;
pub mod mattermost;
pub mod ntfy;
pub mod pagerduty;
pub mod pushover;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod webhook;

/// What every channel's room provides.
pub(crate) trait Room: Sized {
    /// `kind = "…"` in the config.
    const NAME: &'static str;
    /// The most events one delivery attempt takes from the outbox (`ChannelKind::batch_limit`).
    const BATCH: usize = 1000;
    fn parse(k: &Keys) -> Result<Self, ConfigError>;
    /// Its keys as TOML lines, secrets redacted.
    fn show(&self, out: &mut String);
    async fn send(&self, m: &Message<'_>) -> Result<(), SendError>;
}

macro_rules! registry {
    ($($variant:ident($module:ident::$ty:ident),)*) => {
        /// Every channel kind: one variant per room.
        #[derive(Debug, Clone)]
        pub enum ChannelKind {
            $($variant($module::$ty),)*
        }

        impl ChannelKind {
            /// The channel `k` describes (`kind` picks the room).
            pub(crate) fn parse(k: &Keys) -> Result<ChannelKind, ConfigError> {
                match k.kind() {
                    $(<$module::$ty as Room>::NAME => Ok(ChannelKind::$variant(<$module::$ty as Room>::parse(k)?)),)*
                    other => Err(k.at(
                        &k.raw().kind,
                        "kind",
                        format!(
                            "unknown notify kind `{other}` (supported: {})",
                            [$(<$module::$ty as Room>::NAME),*].join(", ")
                        ),
                    )),
                }
            }

            pub fn as_str(&self) -> &'static str {
                match self {
                    $(ChannelKind::$variant(_) => <$module::$ty as Room>::NAME,)*
                }
            }

            /// The most events one delivery attempt takes from the outbox. Per-event channels
            /// (PagerDuty) take a few requests of their provider's rate limit, so a 429 costs
            /// little and what went through is kept; mail stays well under a relay's size limit;
            /// a chat message is capped to its provider's length anyway (and a refused one is
            /// resent event by event). A larger backlog goes out in several batches.
            pub fn batch_limit(&self) -> usize {
                match self {
                    $(ChannelKind::$variant(_) => <$module::$ty as Room>::BATCH,)*
                }
            }

            /// Its keys as TOML lines, secrets redacted (`config check`).
            pub fn show(&self, out: &mut String) {
                match self {
                    $(ChannelKind::$variant(c) => c.show(out),)*
                }
            }

            /// Sends one message; the error is one line, without secrets.
            pub async fn send(&self, m: &Message<'_>) -> Result<(), SendError> {
                match self {
                    $(ChannelKind::$variant(c) => c.send(m).await,)*
                }
            }
        }
    };
}

registry! {
    Email(email::Email),
    Webhook(webhook::Webhook),
    Ntfy(ntfy::Ntfy),
    Slack(slack::Slack),
    Discord(discord::Discord),
    Telegram(telegram::Telegram),
    Gotify(gotify::Gotify),
    Alertmanager(alertmanager::Alertmanager),
    Teams(teams::Teams),
    Mattermost(mattermost::Mattermost),
    GoogleChat(googlechat::GoogleChat),
    PagerDuty(pagerduty::PagerDuty),
    Pushover(pushover::Pushover),
    Matrix(matrix::Matrix),
    Apprise(apprise::Apprise),
    Exec(exec::Exec),
}
