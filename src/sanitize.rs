//! The one sanitizer for untrusted text.
//!
//! Hostnames, user names, OS strings and tags are chosen by whoever registers a device. Before any
//! of them reaches a mail header, an HTML part, a terminal or a shell argument it goes through
//! [`line`] (and, for HTML, [`html`] on top). It must never let through a character that starts a
//! new header line, a terminal escape, or a bidi override that makes text read differently.

/// True for characters that must not appear in output built from untrusted text: C0/C1 controls
/// (CR, LF, ESC, …), Unicode line/paragraph separators, bidi controls, and other invisible
/// format characters that can disguise a name.
fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'                 // line / paragraph separator
            | '\u{200B}'..='\u{200F}'               // zero-width, LRM, RLM
            | '\u{202A}'..='\u{202E}'               // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'               // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'               // bidi isolates
            | '\u{FEFF}'                            // BOM / zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}'               // interlinear annotations
            | '\u{061C}'                            // Arabic letter mark (a bidi control)
            | '\u{00AD}' | '\u{034F}'               // soft hyphen, grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers: blanks
            | '\u{17B4}' | '\u{17B5}'               // Khmer inherent vowels (invisible)
            | '\u{180B}'..='\u{180F}'               // Mongolian selectors, vowel separator
            | '\u{2800}'                            // braille blank
            | '\u{FE00}'..='\u{FE0F}'               // variation selectors
            | '\u{1D173}'..='\u{1D17A}'             // musical format controls
            | '\u{E0000}'..='\u{E007F}'             // tag characters
            | '\u{E0100}'..='\u{E01EF}'             // variation selectors supplement
        )
}

/// One line of safe, printable text of at most `max` characters: forbidden characters become a
/// space (runs collapse), the ends are trimmed, and a cut is marked with `…`.
pub fn line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut count = 0;
    let mut pending_space = false;
    for c in s.chars() {
        let c = if is_forbidden(c) { ' ' } else { c };
        if c == ' ' {
            pending_space = !out.is_empty();
            continue;
        }
        let need = usize::from(pending_space) + 1;
        if count + need > max {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// [`line`], then HTML-escaped for element content and quoted attribute values.
pub fn html(s: &str, max: usize) -> String {
    html_escape::encode_quoted_attribute(&line(s, max)).into_owned()
}

/// Text for Slack and Mattermost `text`: `&`, `<` and `>` escaped, so that no `<!channel>`,
/// `<@U…>` mention or `<url|label>` link can be formed by untrusted text (Slack's own escaping).
pub fn slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for Discord `content`: every Markdown character backslash-escaped, so that no masked
/// link `[label](url)`, heading or formatting renders. Mentions are disabled by the payload's
/// `allowed_mentions: {"parse": []}`, which Discord requires beside this.
pub fn discord(text: &str) -> String {
    markdown(text)
}

/// Text for Mattermost: Slack's escaping, Markdown escaped, and `@` replaced by the fullwidth
/// `＠` (U+FF20) because incoming webhooks have no way to turn `@channel`/`@all` off.
pub fn mattermost(text: &str) -> String {
    markdown(&slack(text))
        .replace('@', "\u{FF20}")
        .replace("\\\u{FF20}", "\u{FF20}")
}

/// Every Markdown character backslash-escaped (Discord, Teams Adaptive Card text).
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '~'
                | '`'
                | '|'
                | '>'
                | '#'
                | '-'
                | '['
                | ']'
                | '('
                | ')'
                | '@'
                | '<'
                | ':'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Caps already-escaped text at `max` characters without leaving a dangling escape.
pub fn cap_escaped(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(30)).collect();
    let trailing = s.chars().rev().take_while(|&c| c == '\\').count();
    if trailing % 2 == 1 {
        s.pop();
    }
    s.push_str("\n… (truncated; see `events`)");
    s
}

/// A URL as it may be printed (config check, logs, errors): a password in it, token-bearing
/// query values, and the secret path parts of chat webhooks (Slack `/services/T…/B…/<secret>`,
/// Discord `/api/webhooks/<id>/<token>`, Mattermost `/hooks/<key>`, Google Chat `key=`/`token=`,
/// Teams workflow `sig=`) are replaced by `REDACTED`.
pub fn redact_url(url: &url::Url) -> String {
    const SECRET_QUERY: [&str; 10] = [
        "token",
        "key",
        "access_token",
        "auth",
        "sig",
        "signature",
        "secret",
        "apikey",
        "api_key",
        "password",
    ];
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let secret = SECRET_QUERY.contains(&k.to_ascii_lowercase().as_str());
            (
                k.into_owned(),
                if secret {
                    "REDACTED".into()
                } else {
                    v.into_owned()
                },
            )
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let host = u.host_str().unwrap_or("").to_ascii_lowercase();
    let segs: Vec<String> = u
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    let redact_from = match segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["services", ..] if host.ends_with("slack.com") => Some(3),
        ["api", "webhooks", ..] => Some(3),
        ["hooks", ..] if !host.ends_with("slack.com") => Some(1),
        _ => None,
    };
    if let Some(from) = redact_from {
        if segs.len() > from {
            let mut p: Vec<String> = segs[..from].to_vec();
            p.extend(std::iter::repeat_n(
                "REDACTED".to_owned(),
                segs.len() - from,
            ));
            u.set_path(&p.join("/"));
        }
    }
    u.to_string()
}

/// A URL that is a secret as a whole (Slack, Discord, Teams, Mattermost, Google Chat incoming
/// webhooks: whoever has it can post): [`redact_url`], and every path segment after the first.
pub fn redact_secret_url(url: &url::Url) -> String {
    let mut u = url::Url::parse(&redact_url(url)).unwrap_or_else(|_| url.clone());
    let segs: Vec<String> = u
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    if segs.len() > 1 {
        let mut p = vec![segs[0].clone()];
        p.extend(std::iter::repeat_n("REDACTED".to_owned(), segs.len() - 1));
        u.set_path(&p.join("/"));
    }
    u.to_string()
}

/// Default cap for names (hostnames, logins, OS strings) in messages.
pub const NAME_MAX: usize = 80;
/// Cap for a mail subject.
pub const SUBJECT_MAX: usize = 150;

/// An error chain as one line, each cause once.
pub fn error_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        if !out.iter().any(|o| o.contains(&p)) {
            out.push(p);
        }
    }
    line(&out.join(": "), 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_header_injection() {
        let s = line("evil\r\nBcc: x@y <script>", 80);
        assert!(!s.contains('\r') && !s.contains('\n'));
        assert_eq!(s, "evil Bcc: x@y <script>");
    }

    #[test]
    fn strips_terminal_escapes_and_bidi() {
        assert_eq!(line("a\u{1b}[31mred", 80), "a [31mred");
        assert_eq!(line("admin\u{202E}fdp.exe", 80), "admin fdp.exe");
        assert_eq!(line("x\u{2028}y\u{85}z", 80), "x y z");
        assert_eq!(line("zero\u{200B}width", 80), "zero width");
    }

    /// F17: every invisible or bidi character the review lists is neutralised.
    #[test]
    fn strips_the_invisible_characters_that_disguise_a_name() {
        for c in [
            '\u{061C}',
            '\u{00AD}',
            '\u{034F}',
            '\u{180E}',
            '\u{2800}',
            '\u{115F}',
            '\u{1160}',
            '\u{3164}',
            '\u{FFA0}',
            '\u{FE00}',
            '\u{FE0F}',
            '\u{E0000}',
            '\u{E0041}',
            '\u{E007F}',
        ] {
            assert_eq!(
                line(&format!("web-01{c}"), 80),
                "web-01",
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn caps_length_with_a_marker() {
        let s = line(&"a".repeat(500), 10);
        assert_eq!(s.chars().count(), 11);
        assert!(s.ends_with('…'));
        assert_eq!(line("short", 10), "short");
        assert_eq!(line("exactly10!", 10), "exactly10!");
    }

    #[test]
    fn html_escapes_markup() {
        assert_eq!(
            html("<script>alert('x')</script> & \"q\"", 200),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn collapses_and_trims_whitespace() {
        assert_eq!(line("  a \t\t b  ", 80), "a b");
        assert_eq!(line("", 80), "");
    }
}
