//! Errors that name the file, the line and the key; durations checked when they are parsed.

use std::fmt;
use std::time::Duration;

use toml::Spanned;

/// A config error, already rendered as one line: `path:line: what (key \`k\`)`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The longest duration a config key takes (F20: `"1000000y"` must be an error, not a panic).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    /// Every local user can read the file: it must not hold a secret.
    pub(super) public: bool,
}

impl Ctx<'_> {
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn at<T>(&self, s: &Spanned<T>, key: &str, msg: impl fmt::Display) -> ConfigError {
        ConfigError(format!(
            "{}:{}: {msg} (key `{key}`)",
            self.file,
            self.line(s.span().start)
        ))
    }

    /// One of a fixed set of words, or `default` when the key is absent.
    pub(super) fn choice<T: Copy>(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = s else { return Ok(default) };
        options
            .iter()
            .find(|(w, _)| w == v.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
                self.at(
                    v,
                    key,
                    format!("`{}` is not one of {}", v.get_ref(), words.join(", ")),
                )
            })
    }

    pub(super) fn duration(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_from(s, key, default, false)
    }

    /// [`Ctx::duration`] where zero means "none" (no hold, at once).
    pub(super) fn duration_or_zero(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_from(s, key, default, true)
    }

    fn duration_from(
        &self,
        s: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        zero: bool,
    ) -> Result<Duration, ConfigError> {
        match s {
            None => Ok(default),
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                // Bounded, so that every deadline computed from it stays representable.
                Ok(d) if d > MAX_DURATION => Err(self.at(
                    v,
                    key,
                    format!("`{}` is longer than 100 years", v.get_ref()),
                )),
                Ok(d) if zero || !d.is_zero() => Ok(d),
                Ok(_) => Err(self.at(v, key, "must be greater than zero")),
                Err(e) => Err(self.at(
                    v,
                    key,
                    format!(
                        "`{}` is not a duration like \"30s\" or \"5m\": {e}",
                        v.get_ref()
                    ),
                )),
            },
        }
    }
}
