//! `[guard]`: `mode`, `interface`, `approve_new`, `tailscaled_doors` (a contract: these names
//! stay).

use toml::Spanned;

use super::ctx::{ConfigError, Ctx};
use super::raw::{RawApproveNew, RawGuard};
use crate::model::guard::{ApproveNew, Selector};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// The default: nothing is enforced (and a table left by `enforce` is removed).
    Off,
    /// Only approved devices reach this server over the Tailscale interface.
    Enforce,
}

/// What the guard does about the ways in that tailscaled answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doors {
    /// The default: each open one is named (`guard status`, `guard.door_open`, posture).
    Report,
    /// The root side turns Tailscale SSH and the web client off, and keeps them off; serve stays
    /// the owner's choice, and reported.
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub mode: GuardMode,
    /// The Tailscale interface the rules match (`tailscale0`).
    pub interface: String,
    pub approve_new: ApproveNew,
    pub tailscaled_doors: Doors,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            mode: GuardMode::Off,
            interface: "tailscale0".into(),
            approve_new: ApproveNew::Never,
            tailscaled_doors: Doors::Report,
        }
    }
}

impl GuardConfig {
    pub fn enforcing(&self) -> bool {
        self.mode == GuardMode::Enforce
    }

    /// What `config check` warns of: `approve_new` entries that rest on the control plane's
    /// word, which the guard is there not to trust.
    pub fn warnings(&self) -> Vec<String> {
        let ApproveNew::Matching(v) = &self.approve_new else {
            return Vec::new();
        };
        v.iter()
            .map(|s| {
                // Stable IDs are the control plane's word too (headscale's are row numbers).
                let (what, v) = match s {
                    Selector::Tag(t) => ("a tag", t),
                    Selector::Login(l) => ("an owner", l),
                    Selector::Id(i) => ("a stable ID, which the control plane assigns", i),
                };
                format!(
                    "[guard] approve_new {v:?} is {what}: whoever controls the tailnet's admin console can give it to any device, which the guard then lets in without you"
                )
            })
            .collect()
    }
}

pub(super) fn parse(cx: &Ctx<'_>, raw: &RawGuard) -> Result<GuardConfig, ConfigError> {
    let mode = cx.choice(
        &raw.mode,
        "guard.mode",
        &[("off", GuardMode::Off), ("enforce", GuardMode::Enforce)],
        GuardMode::Off,
    )?;
    let interface = match &raw.interface {
        None => "tailscale0".to_owned(),
        Some(i) if crate::model::guard::valid_interface(i.get_ref()) => i.get_ref().clone(),
        Some(i) => {
            return Err(cx.at(
                i,
                "guard.interface",
                format!(
                    "{:?} is not an interface name (1 to 15 letters, digits, `_`, `-`, `.`)",
                    crate::sanitize::line(i.get_ref(), 40)
                ),
            ))
        }
    };
    let approve_new = match &raw.approve_new {
        None => ApproveNew::Never,
        Some(a) => approve_new(cx, a)?,
    };
    let tailscaled_doors = cx.choice(
        &raw.tailscaled_doors,
        "guard.tailscaled_doors",
        &[("report", Doors::Report), ("close", Doors::Close)],
        Doors::Report,
    )?;
    Ok(GuardConfig {
        mode,
        interface,
        approve_new,
        tailscaled_doors,
    })
}

fn approve_new(cx: &Ctx<'_>, a: &Spanned<RawApproveNew>) -> Result<ApproveNew, ConfigError> {
    match a.get_ref() {
        RawApproveNew::Word(w) if w == "never" => Ok(ApproveNew::Never),
        RawApproveNew::Word(w) => Err(cx.at(
            a,
            "guard.approve_new",
            format!(
                "{:?} is neither \"never\" nor a list of stable IDs, tags and logins",
                crate::sanitize::line(w, 60)
            ),
        )),
        RawApproveNew::List(v) => {
            let mut out = Vec::new();
            for s in v {
                let bad = s.is_empty()
                    || s.len() > 200
                    || s.chars().any(|c| c.is_control() || c.is_whitespace());
                if bad || s == "tag:" {
                    return Err(cx.at(
                        a,
                        "guard.approve_new",
                        format!(
                            "{:?} is not a stable ID, `tag:name` or `user@domain`",
                            crate::sanitize::line(s, 60)
                        ),
                    ));
                }
                out.push(Selector::parse(s));
            }
            Ok(if out.is_empty() {
                ApproveNew::Never
            } else {
                ApproveNew::Matching(out)
            })
        }
    }
}
