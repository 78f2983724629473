//! An event as blocks: the one walk over its sections. The text and HTML writers format blocks
//! (and a third writer, a web page, would too); neither looks at the event itself.
//!
//! A block keeps apart the words that are ours ([`Piece::Fixed`]) and the values that come from
//! the tailnet ([`Piece::Value`]), which each writer escapes for its syntax, capped at `max`.

use std::borrow::Cow;

use crate::model::event_kind::EventKind;
use crate::model::{Event, Severity};
use crate::notify::render::advice::action;
use crate::notify::render::{device_rows, when};
use crate::sanitize::NAME_MAX;

/// Part of a block's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Our own words and numbers: written as they are.
    Fixed(Cow<'a, str>),
    /// A value from the tailnet (or the policy, or a peer): escaped by the writer, at most `max`
    /// characters.
    Value(Cow<'a, str>, usize),
}

/// A run of pieces: one cell, one row's value, one list item.
pub(crate) type Spans<'a> = Vec<Piece<'a>>;

/// One table column: its header, and what the text writer puts before a cell (`ports: `).
pub(crate) type Column = (&'static str, &'static str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block<'a> {
    /// Severity, kind and summary.
    Heading {
        severity: Severity,
        kind: EventKind,
        summary: Spans<'a>,
    },
    /// One labelled fact (When, the device's rows, User, Changed, Note).
    Row {
        label: Cow<'a, str>,
        value: Spans<'a>,
    },
    /// A titled list.
    List {
        title: String,
        items: Vec<Spans<'a>>,
    },
    /// A titled table; `empty` is said when it has no row.
    Table {
        title: String,
        columns: &'static [Column],
        rows: Vec<Vec<Spans<'a>>>,
        empty: Option<&'static str>,
    },
    /// Preformatted lines: a policy diff (`+`/`-`) or the digest's table.
    Lines {
        title: &'static str,
        lines: &'a [String],
    },
    /// What the reader should do.
    Action(String),
}

fn fixed<'a>(s: impl Into<Cow<'a, str>>) -> Piece<'a> {
    Piece::Fixed(s.into())
}

fn value<'a>(s: impl Into<Cow<'a, str>>, max: usize) -> Piece<'a> {
    Piece::Value(s.into(), max)
}

const DEVICES: &[Column] = &[
    ("Device", ""),
    ("User", ""),
    ("Addresses", ""),
    ("OS", ""),
    ("Node ID", ""),
];
const ACCESS: &[Column] = &[("Who", ""), ("Ports", "ports: "), ("SSH as", "SSH as: ")];

/// The event's sections, in the order every writer shows them.
pub(crate) fn blocks(e: &Event) -> Vec<Block<'_>> {
    let name = |v: &'_ str| value(v.to_owned(), NAME_MAX);
    let mut out = vec![
        Block::Heading {
            severity: e.severity,
            kind: e.kind,
            summary: vec![value(e.summary.as_str(), 300)],
        },
        Block::Row {
            label: "When".into(),
            value: vec![fixed(when(e.at))],
        },
    ];
    if let Some(d) = &e.device {
        for (k, v) in device_rows(d, e.user.as_ref()) {
            out.push(Block::Row {
                label: k.into(),
                value: vec![value(v, 300)],
            });
        }
    } else if let Some(u) = &e.user {
        out.push(Block::Row {
            label: "User".into(),
            value: vec![
                name(&u.login),
                fixed(" ("),
                name(&u.display_name),
                fixed(format!("), ID {}", u.id)),
            ],
        });
    }
    for c in &e.changes {
        out.push(Block::Row {
            label: "Changed".into(),
            value: vec![
                name(&c.field),
                fixed(": "),
                value(c.old.as_str(), 200),
                fixed(" → "),
                value(c.new.as_str(), 200),
            ],
        });
    }
    if !e.detail.is_empty() {
        out.push(Block::Row {
            label: "Note".into(),
            value: vec![value(e.detail.as_str(), 500)],
        });
    }
    if !e.users.is_empty() {
        out.push(Block::List {
            title: format!("Users ({})", e.users.len()),
            items: e
                .users
                .iter()
                .map(|u| {
                    vec![
                        name(&u.login),
                        fixed(" ("),
                        name(&u.display_name),
                        fixed(format!("), ID {}", u.id)),
                    ]
                })
                .collect(),
        });
    }
    if !e.devices.is_empty() {
        let rows = e
            .devices
            .iter()
            .map(|d| {
                let owner = e
                    .users
                    .iter()
                    .find(|u| u.id == d.user_id)
                    .map_or("?", |u| u.login.as_str());
                let mut id = vec![name(&d.id.0)];
                if d.is_self {
                    id.push(fixed(" (this server)"));
                }
                vec![
                    vec![name(d.display_name())],
                    vec![name(owner)],
                    vec![name(&d.addresses.join(", "))],
                    vec![name(&d.os)],
                    id,
                ]
            })
            .collect();
        out.push(Block::Table {
            title: format!("Devices ({})", e.devices.len()),
            columns: DEVICES,
            rows,
            empty: None,
        });
    }
    if !e.diff.is_empty() {
        out.push(Block::Lines {
            title: if e.kind == EventKind::MonitorDigest {
                "Digest"
            } else {
                "Diff"
            },
            lines: &e.diff,
        });
    }
    if let Some(rows) = &e.access {
        out.push(Block::Table {
            title: format!("Who can reach this server ({})", rows.len()),
            columns: ACCESS,
            rows: rows
                .iter()
                .map(|r| {
                    vec![
                        vec![value(r.who.as_str(), 200)],
                        vec![value(r.ports.as_str(), 300)],
                        vec![value(r.ssh.as_str(), 300)],
                    ]
                })
                .collect(),
            empty: Some("Nobody: the policy lets no other device in."),
        });
    }
    out.push(Block::Action(action(e)));
    out
}
