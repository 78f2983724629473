//! The two shapes of a command's output: `--json` (pretty, every string through the sanitizer)
//! and fixed-width columns.

use std::io::Write as _;

use crate::sanitize;

/// Writes `value` to stdout as pretty JSON that a terminal can show safely.
pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    writeln!(std::io::stdout().lock(), "{}", sanitize::json_text(&text))?;
    Ok(())
}

/// One line of columns: each cell left-aligned to its width, one space apart; the cells past the
/// widths follow as they are. The caller sanitizes and caps the cells.
pub(super) fn row(widths: &[usize], cells: &[&str]) -> String {
    let mut line = String::new();
    for (n, cell) in cells.iter().enumerate() {
        match widths.get(n) {
            Some(&w) => line += &format!("{cell:<w$} "),
            None => line += cell,
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::row;

    #[test]
    fn cells_are_padded_to_their_widths() {
        assert_eq!(row(&[4, 3], &["ab", "c", "rest"]), "ab   c   rest");
        assert_eq!(row(&[2], &["abcd", "x"]), "abcd x");
    }
}
