//! RFC 5424 messages, for TCP (RFC 6587 octet counting: `LEN SP MSG`) or UDP.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME tailscale-monitor - KIND [meta sequenceId="N"][tsmon@PEN kind="…"
//! severity="…" device="…" seq="N" hash="…" prev="…"( replay="1")] MESSAGE`. Facility 13 (log audit); the
//! severity maps critical → 2, warning → 4, info → 6. Each PARAM-VALUE has `"`, `\` and `]`
//! escaped (§6.3.3) and no control character, and the header fields are printable ASCII without
//! spaces, so a hostile name cannot end the structured data or the frame early.

use super::{bounded, Record, PRODUCT};
use crate::model::Severity;
use crate::sanitize;

/// The longest message sent (a UDP datagram carries it whole on any network).
pub(crate) const MAX_MESSAGE: usize = 8192;

/// A PARAM-VALUE: one line, `"`, `\` and `]` escaped.
pub(crate) fn param(v: &str) -> String {
    let mut out = String::new();
    for c in sanitize::line(&bounded(v), super::MAX_VALUE + 8).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable US-ASCII without spaces, at most `max`; `-` when empty.
fn header(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// One message, without the frame.
pub(crate) fn message(r: &Record<'_>, pen: u32) -> String {
    let e = r.event();
    let severity = match e.severity {
        Severity::Critical => 2,
        Severity::Warning => 4,
        Severity::Info => 6,
    };
    let pri = 13 * 8 + severity;
    let device = e.device.as_ref().map_or("", |d| d.id.0.as_str());
    let mut m = format!(
        "<{pri}>1 {} {} {PRODUCT} - {} [meta sequenceId=\"{}\"][tsmon@{pen} kind=\"{}\" severity=\"{}\" device=\"{}\" seq=\"{}\" hash=\"{}\" prev=\"{}\"{}] ",
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        header(r.host, 255),
        header(e.kind.as_str(), 32),
        // sequenceId: 1..2147483647 (RFC 5424 §7.3.1).
        (r.seq() - 1).rem_euclid(2_147_483_647) + 1,
        param(e.kind.as_str()),
        param(e.severity.as_str()),
        param(device),
        r.seq(),
        param(&r.c.hash),
        param(&r.c.prev_hash),
        if r.replay { " replay=\"1\"" } else { "" },
    );
    m += &sanitize::line(&bounded(&e.summary), super::MAX_VALUE + 8);
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - super::CUT.len();
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str(super::CUT);
    }
    m
}

/// The message framed for TCP: its length in octets, a space, the message.
pub(crate) fn framed(msg: &str) -> String {
    format!("{} {msg}", msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_values_cannot_end_the_structured_data() {
        assert_eq!(param(r#"a"]b\c"#), r#"a\"\]b\\c"#);
        assert!(!param("x\r\ny").contains('\n'));
        assert_eq!(header("device new\n", 32), "devicenew");
        assert_eq!(header("", 32), "-");
    }
}
