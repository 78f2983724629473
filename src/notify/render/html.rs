//! The HTML writer of [`blocks`](super::blocks): the mail's HTML part. Every value passes
//! `sanitize::html`.

use std::fmt::Write as _;

use crate::model::{Event, Severity};
use crate::notify::render::blocks::{blocks, Block, Piece};
use crate::notify::render::severity_label;
use crate::sanitize;

fn spans(pieces: &[Piece<'_>]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Fixed(s) => html_escape::encode_safe(s).into_owned(),
            Piece::Value(v, max) => sanitize::html(v, *max),
        })
        .collect()
}

const TABLE: &str = "<table border=\"1\" cellpadding=\"3\" style=\"border-collapse:collapse\">";

pub(super) fn event_html(out: &mut String, e: &Event) {
    // The facts (the rows after the heading) are one table.
    let mut facts = false;
    for b in blocks(e) {
        if facts && !matches!(b, Block::Row { .. }) {
            out.push_str("</table>");
            facts = false;
        }
        let _ = match b {
            Block::Heading {
                severity,
                kind,
                summary,
            } => {
                let color = match severity {
                    Severity::Critical => "#b00020",
                    Severity::Warning => "#b26a00",
                    Severity::Info => "#555",
                };
                write!(
                    out,
                    "<h3 style=\"color:{color}\">{} · {kind} — {}</h3>",
                    severity_label(severity),
                    spans(&summary)
                )
            }
            Block::Row { label, value } => {
                if !facts {
                    out.push_str("<table cellpadding=\"2\">");
                    facts = true;
                }
                write!(
                    out,
                    "<tr><td><b>{}</b></td><td>{}</td></tr>",
                    sanitize::html(&label, 100),
                    spans(&value)
                )
            }
            Block::List { title, items } => {
                let _ = write!(out, "<p><b>{title}</b></p><ul>");
                for i in &items {
                    let _ = write!(out, "<li>{}</li>", spans(i));
                }
                write!(out, "</ul>")
            }
            Block::Table {
                title,
                columns,
                rows,
                empty,
            } => {
                let _ = write!(out, "<p><b>{title}</b></p>");
                match empty.filter(|_| rows.is_empty()) {
                    Some(empty) => write!(out, "<p>{empty}</p>"),
                    None => {
                        out.push_str(TABLE);
                        out.push_str("<tr>");
                        for (header, _) in columns {
                            let _ = write!(out, "<th>{header}</th>");
                        }
                        out.push_str("</tr>");
                        for row in &rows {
                            out.push_str("<tr>");
                            for cell in row {
                                let _ = write!(out, "<td>{}</td>", spans(cell));
                            }
                            out.push_str("</tr>");
                        }
                        write!(out, "</table>")
                    }
                }
            }
            Block::Lines { lines, .. } => {
                out.push_str("<pre style=\"background:#f6f6f6;padding:6px\">");
                for l in lines {
                    let color = match l.chars().next() {
                        Some('+') => "#0a0",
                        Some('-') => "#b00020",
                        _ => "#555",
                    };
                    let _ = writeln!(
                        out,
                        "<span style=\"color:{color}\">{}</span>",
                        sanitize::html(l, 300)
                    );
                }
                write!(out, "</pre>")
            }
            Block::Action(a) => write!(
                out,
                "<p><b>What to do:</b> {}</p>",
                sanitize::html(&a, 2000)
            ),
        };
    }
    if facts {
        out.push_str("</table>");
    }
}
