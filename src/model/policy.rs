//! Policy text (HuJSON): comments stripped, and the line diff of two versions that
//! `policy.changed` shows. Pure; used by the control diff and the posture audit.

/// Strips `//` and `/* */` comments outside strings (HuJSON), so that a commented-out `"*"` is
/// not read as a widening.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut esc, mut line_c, mut block_c) = (false, false, false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if line_c {
            if c == '\n' {
                line_c = false;
                out.push(c);
            }
            continue;
        }
        if block_c {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                block_c = false;
            } else if c == '\n' {
                out.push(c);
            }
            continue;
        }
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                chars.next();
                line_c = true;
            }
            ('/', Some('*')) => {
                chars.next();
                block_c = true;
            }
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A unified line diff of two policy texts (at most 200 lines), and whether the added lines widen
/// access: a `*` source, `*:*`, `autogroup:danger-all`, or a new SSH rule.
pub fn policy_diff(old: &str, new: &str) -> (Vec<String>, bool) {
    // Myers is O(N·D): two long, wholly different policies would take tens of seconds in the
    // pass. Past the deadline `similar` returns a coarser diff that is still correct.
    let diff = similar::TextDiff::configure()
        .timeout(POLICY_DIFF_TIMEOUT)
        .diff_lines(old, new);
    let mut lines = Vec::new();
    for group in diff.grouped_ops(2) {
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                lines.push(format!("{sign} {}", change.value().trim_end_matches('\n')));
            }
        }
        lines.push("  …".into());
    }
    lines.pop();
    lines.truncate(200);
    let added: String = diff
        .iter_all_changes()
        .filter(|c| c.tag() == similar::ChangeTag::Insert)
        .map(|c| c.value().to_owned())
        .collect();
    let added = strip_comments(&added);
    let old_code = strip_comments(old);
    let new_code = strip_comments(new);
    let ssh_rules = |t: &str| t.matches("\"users\"").count();
    let widens = added.contains("\"*\"")
        || added.contains("*:*")
        || added.contains("autogroup:danger-all")
        || ssh_rules(&new_code) > ssh_rules(&old_code);
    (lines, widens)
}

/// How long the policy diff may search for a minimal answer.
const POLICY_DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

#[cfg(test)]
mod tests {
    use super::*;

    /// F11: two wholly different 60,000-line policies took 32 s in the pass; now bounded,
    /// and the diff still shows what was removed and added. The bound is loose (a debug build on a
    /// loaded machine); without the deadline this takes minutes in a debug build.
    #[test]
    fn a_long_policy_replaced_is_diffed_in_bounded_time() {
        let old: String = (0..60_000).map(|i| format!("// old rule {i}\n")).collect();
        let new: String = (0..60_000).map(|i| format!("// new rule {i}\n")).collect();
        let started = std::time::Instant::now();
        let (lines, widens) = policy_diff(&old, &new);
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        assert!(!widens);
        assert_eq!(lines.len(), 200, "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("- // old rule")));
    }
}
