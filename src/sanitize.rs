//! The one sanitizer for untrusted text.
//!
//! Hostnames, user names, OS strings and tags are chosen by whoever registers a device. Before any
//! of them reaches a mail header, an HTML part, a terminal or a shell argument it goes through
//! [`line`] (and, for HTML, [`html`] on top). It must never let through a character that starts a
//! new header line, a terminal escape, or a bidi override that makes text read differently.

/// True for characters that must not appear in output built from untrusted text: C0/C1 controls
/// (CR, LF, ESC, …), every character of Unicode's `Cf` (format) category (bidi controls,
/// zero-width characters, invisible operators, shorthand format controls, tags…), line and
/// paragraph separators, and the other characters that render as nothing (fillers, variation
/// selectors, blanks) and so can disguise a name. One rule, from the Unicode tables
/// (`unicode-general-category`), so that the next invisible character is covered too.
fn is_forbidden(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    c.is_control()
        || matches!(
            get_general_category(c),
            G::Format | G::LineSeparator | G::ParagraphSeparator | G::Control
        )
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

/// Text in which nothing a device's owner chose can become a clickable link. Mail clients and
/// chats (Slack, Telegram, Matrix, Mattermost, Pushover) turn bare URLs and domain names into
/// links on their own, and no markup escaping prevents that: a device named `www.login-bank.com`
/// would be a link in its own alert. Every URL or domain-shaped word is defanged (its dots become
/// U+2024 ONE DOT LEADER, `://` becomes `꞉//`), except the words in `keep` (the tailnet's own names,
/// which the control plane builds) and the URLs this program writes itself.
pub fn unlink(text: &str, keep: &[&str]) -> String {
    const OWN: [&str; 2] = ["https://login.tailscale.com/", "https://tailscale.com/"];
    let is_word = |c: char| c.is_alphanumeric() || "._~:/?#@!$&*+,;=%-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        let core = word.trim_end_matches(|c: char| ".,;:!?".contains(c));
        let lower = core.to_ascii_lowercase();
        let kept = keep
            .iter()
            .any(|k| !k.is_empty() && lower == k.to_ascii_lowercase())
            || OWN.iter().any(|own| lower.starts_with(own));
        if !kept && link_like(&lower) {
            out.push_str(&core.replace("://", "\u{A789}//").replace('.', "\u{2024}"));
            out.push_str(&word[core.len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A word that a chat or mail client would make a link of: one holding a URL, `www.`, or a
/// domain-shaped run anywhere in it, whatever surrounds it (`!evil.com`, `x/evil.com`,
/// `login-bank.com/@x`). A login (`user@domain`, nothing else) is a login: at most a mailto:
/// link, which opens nothing.
fn link_like(word: &str) -> bool {
    if word.contains("://") || word.contains("www.") {
        return true;
    }
    if is_login(word) {
        return false;
    }
    word.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.'))
        .any(domain_shaped)
}

/// `user@domain` and nothing else.
fn is_login(word: &str) -> bool {
    let mut parts = word.split('@');
    let (Some(user), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !user.is_empty()
        && !user.contains(['/', '?', '#', ':'])
        && !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

/// A domain name whose last label is letters (`a.example`; not `100.64.0.1` or `1.104.2`).
fn domain_shaped(run: &str) -> bool {
    let labels: Vec<&str> = run.trim_matches(['.', '-']).split('.').collect();
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|l| l.chars().count() >= 2 && l.chars().all(char::is_alphabetic))
}

/// JSON text with the C1 controls (U+0080–U+009F) and U+2028/U+2029 written as `\\u` escapes.
/// serde_json leaves them raw, and some terminals act on a C1 control such as U+009B (CSI)
/// encoded as UTF-8. They can occur only inside strings, so the result is the same JSON value.
pub fn json_text(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}') {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
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
/// Query parameters that carry a credential.
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

/// The first query parameter of `url` that carries a credential, if any: such a URL is itself a
/// credential, and is refused in clear as one (F10).
pub fn secret_query(url: &url::Url) -> Option<String> {
    url.query_pairs()
        .map(|(k, _)| k.to_ascii_lowercase())
        .find(|k| SECRET_QUERY.contains(&k.as_str()))
}

pub fn redact_url(url: &url::Url) -> String {
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
    fn json_text_escapes_c1_controls_and_line_separators() {
        let v = serde_json::json!({ "name": "a\u{9b}31mb\u{2028}c\u{85}é" });
        let raw = serde_json::to_string(&v).unwrap();
        assert!(raw.contains('\u{9b}'), "serde_json leaves C1 raw: {raw}");
        let t = json_text(&raw);
        assert!(
            !t.chars()
                .any(|c| matches!(c, '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}')),
            "{t}"
        );
        assert!(
            t.contains("\\u009b") && t.contains("\\u2028") && t.contains("é"),
            "{t}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&t).unwrap(), v);
    }

    #[test]
    fn unlink_defangs_url_shaped_words_only() {
        let keep = ["web-01.example.ts.net"];
        let t = unlink(
            "New device www.evil.com (see https://evil.example/x, login.evil.example.) joined: \
             100.64.0.1 fd7a:115c:a1e0::1 v1.104.2 alice@example.com web-01.example.ts.net \
             https://login.tailscale.com/admin/machines state:ok",
            &keep,
        );
        assert!(t.contains("www\u{2024}evil\u{2024}com"), "{t}");
        assert!(t.contains("https\u{A789}//evil\u{2024}example/x,"), "{t}");
        assert!(t.contains("login\u{2024}evil\u{2024}example."), "{t}");
        for same in [
            "100.64.0.1",
            "fd7a:115c:a1e0::1",
            "v1.104.2",
            "alice@example.com",
            "web-01.example.ts.net",
            "https://login.tailscale.com/admin/machines",
            "state:ok",
        ] {
            assert!(t.contains(same), "{same} in {t}");
        }
    }

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
    fn every_format_character_is_neutralised() {
        use unicode_general_category::{get_general_category, GeneralCategory};
        let cf: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|c| get_general_category(*c) == GeneralCategory::Format)
            .collect();
        assert!(cf.len() > 150, "the Cf table: {}", cf.len());
        // Issue 28's two: U+206A and U+1BCA0.
        assert!(cf.contains(&'\u{206A}') && cf.contains(&'\u{1BCA0}'));
        for c in cf {
            let out = line(&format!("login{c}bank"), 80);
            assert!(!out.contains(c), "U+{:04X} passed: {out:?}", c as u32);
        }
    }

    /// Issue 28 (F17, one step further): a URL- or domain-shaped run is defanged whatever
    /// surrounds it; a login stays a login.
    #[test]
    fn defanging_does_not_depend_on_what_surrounds_a_domain() {
        for domain in ["login-bank.com", "evil.example", "WWW.Evil.Com"] {
            for pre in ["", "!", "~", "x/", "(", "\"", "@", "a@b/", "*", "%", "+"] {
                for post in ["", "/@x", "!", ".", "?q=1", ":8080", "/path", "@x", "#top"] {
                    let token = format!("{pre}{domain}{post}");
                    let out = unlink(&format!("device {token} joined"), &[]);
                    // `www.` is a link wherever it stands.
                    let login = is_login(&token) && !token.to_lowercase().contains("www.");
                    assert_eq!(
                        out.contains(domain),
                        login,
                        "{token:?} -> {out:?} (a login: {login})"
                    );
                }
            }
        }
        assert_eq!(unlink("alice@example.com", &[]), "alice@example.com");
    }

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
