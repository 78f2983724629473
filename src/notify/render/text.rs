//! The text writer of [`blocks`](super::blocks): mail text parts, chats, the terminal. Every
//! value passes `sanitize::line`.

use std::fmt::Write as _;

use crate::model::Event;
use crate::notify::render::blocks::{blocks, Block, Piece};
use crate::notify::render::severity_label;
use crate::sanitize;

fn spans(pieces: &[Piece<'_>]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Fixed(s) => s.clone(),
            Piece::Value(v, max) => sanitize::line(v, *max).into(),
        })
        .collect()
}

/// One event as plain text, for mail bodies and the terminal.
pub fn event_text(out: &mut String, e: &Event) {
    for b in blocks(e) {
        let _ = match b {
            Block::Heading {
                severity,
                kind,
                summary,
            } => write!(
                out,
                "\n[{}] {kind} — {}\n",
                severity_label(severity),
                spans(&summary)
            ),
            Block::Row { label, value } => {
                writeln!(out, "  {:<11} {}", format!("{label}:"), spans(&value))
            }
            Block::List { title, items } => {
                let _ = writeln!(out, "  {title}:");
                items
                    .iter()
                    .try_for_each(|i| writeln!(out, "    - {}", spans(i)))
            }
            Block::Table {
                title,
                columns,
                rows,
                empty,
            } => {
                let _ = writeln!(out, "  {title}:");
                if rows.is_empty() {
                    if let Some(empty) = empty {
                        let _ = writeln!(out, "    - {empty}");
                    }
                }
                rows.iter().try_for_each(|row| {
                    let cells: Vec<String> = row
                        .iter()
                        .zip(columns)
                        .map(|(cell, (_, prefix))| format!("{prefix}{}", spans(cell)))
                        .collect();
                    writeln!(out, "    - {}", cells.join(" — "))
                })
            }
            Block::Lines { title, lines } => {
                let _ = writeln!(out, "  {title}:");
                lines
                    .iter()
                    .try_for_each(|l| writeln!(out, "    {}", sanitize::line(l, 300)))
            }
            Block::Action(a) => writeln!(out, "  What to do: {}", sanitize::line(&a, 2000)),
        };
    }
}
