//! One event on its own page: the third writer of [`blocks`](crate::notify::render::blocks),
//! beside the text and the mail's HTML, so that the page says what the alert said.

use maud::{html, Markup};

use crate::model::Event;
use crate::model::Severity;
use crate::notify::render::blocks::{blocks, Block, Piece};
use crate::sanitize;

fn spans(pieces: &[Piece<'_>]) -> Markup {
    html! {
        @for p in pieces {
            @match p {
                Piece::Fixed(s) => (s.as_ref()),
                Piece::Value(v, max) => (sanitize::line(v, *max)),
            }
        }
    }
}

/// The event as the alert showed it.
pub(crate) fn event(e: &Event) -> Markup {
    let all = blocks(e);
    let rows: Vec<&Block> = all
        .iter()
        .filter(|b| matches!(b, Block::Row { .. }))
        .collect();
    html! {
        @for b in &all {
            @match b {
                Block::Heading { severity, kind, summary } => {
                    p {
                        span class=(match severity {
                            Severity::Critical => "critical",
                            Severity::Warning => "warning",
                            Severity::Info => "info",
                        }) { (severity.as_str()) }
                        " " code { (kind.as_str()) } " — " (spans(summary))
                    }
                    table {
                        @for r in &rows {
                            @if let Block::Row { label, value } = r {
                                tr { th { (label.as_ref()) } td { (spans(value)) } }
                            }
                        }
                    }
                }
                Block::Row { .. } => {}
                Block::List { title, items } => {
                    h2 { (title) }
                    ul { @for i in items { li { (spans(i)) } } }
                }
                Block::Table { title, columns, rows, empty } => {
                    h2 { (title) }
                    @if rows.is_empty() {
                        @if let Some(e) = empty { p { (e) } }
                    } @else {
                        table {
                            tr { @for (h, _) in columns.iter() { th { (h) } } }
                            @for row in rows { tr { @for cell in row { td { (spans(cell)) } } } }
                        }
                    }
                }
                Block::Lines { title, lines } => {
                    h2 { (title) }
                    pre { @for l in lines.iter() { (sanitize::line(l, 300)) "\n" } }
                }
                Block::Action(a) => { h2 { "What to do" } p { (sanitize::line(a, 2000)) } }
            }
        }
    }
}
