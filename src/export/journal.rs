//! journald's native protocol: one datagram per entry, `FIELD=value\n` for a value without a
//! newline, `FIELD\n` + its length as 64-bit little endian + the value + `\n` otherwise. Each kind
//! has a 128-bit `MESSAGE_ID`, which the message catalog the package ships explains
//! (`journalctl -x`).

use sha2::{Digest as _, Sha256};

use super::{bounded, Record, PRODUCT};
use crate::model::{EventKind, Severity};

/// The `MESSAGE_ID` of a kind: the first 128 bits of SHA-256 of `tailscale-monitor:KIND`, in hex.
pub(crate) fn message_id(k: EventKind) -> String {
    hex::encode(&Sha256::digest(format!("{PRODUCT}:{}", k.as_str()))[..16])
}

fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    if value.contains('\n') {
        out.extend_from_slice(key.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    } else {
        out.extend_from_slice(format!("{key}={value}\n").as_bytes());
    }
}

/// One entry.
pub(crate) fn entry(r: &Record<'_>) -> Vec<u8> {
    let e = r.event();
    let mut out = Vec::new();
    // What `journalctl` prints to a terminal is one line without control or bidi characters;
    // the IDs and hashes stay exact for matching.
    field(
        &mut out,
        "MESSAGE",
        &crate::sanitize::line(&e.summary, super::MAX_VALUE),
    );
    let priority = match e.severity {
        Severity::Critical => "2",
        Severity::Warning => "4",
        Severity::Info => "6",
    };
    field(&mut out, "PRIORITY", priority);
    field(&mut out, "MESSAGE_ID", &message_id(e.kind));
    field(&mut out, "SYSLOG_IDENTIFIER", PRODUCT);
    field(&mut out, "TSMON_KIND", e.kind.as_str());
    field(&mut out, "TSMON_SEVERITY", e.severity.as_str());
    if let Some(d) = &e.device {
        field(&mut out, "TSMON_DEVICE_ID", &bounded(&d.id.0));
        field(
            &mut out,
            "TSMON_DEVICE",
            &crate::sanitize::line(d.display_name(), super::MAX_VALUE),
        );
    }
    field(&mut out, "TSMON_SEQ", &r.seq().to_string());
    field(&mut out, "TSMON_HASH", &r.c.hash);
    field(&mut out, "TSMON_PREV", &r.c.prev_hash);
    if r.replay {
        field(&mut out, "TSMON_REPLAY", "1");
    }
    if !e.detail.is_empty() {
        field(
            &mut out,
            "TSMON_DETAIL",
            &crate::sanitize::line(&e.detail, super::MAX_VALUE),
        );
    }
    out
}

/// The message catalog (`journalctl -x`), one entry per kind: what it means and what to do.
#[cfg(test)]
pub(crate) fn catalog() -> String {
    let mut out = String::from(
        "# tailscale-monitor's journal message catalog (generated: `cargo test catalog`).\n\
         # Installed to /usr/lib/systemd/catalog/; `journalctl --update-catalog` indexes it.\n",
    );
    for k in EventKind::ALL {
        let mut e = crate::model::Event::new(k, chrono::DateTime::UNIX_EPOCH, "");
        e.severity = k.severity();
        let advice = crate::notify::render::advice::action(&e);
        out += &format!(
            "\n-- {}\nSubject: tailscale-monitor: {}\nDefined-By: tailscale-monitor\nSupport: man:tailscale-monitor(1)\n\n{} ({}).\n\n{}\n",
            message_id(k),
            k.as_str(),
            k.as_str(),
            k.severity().as_str(),
            advice.replace('\n', " ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_newline_is_length_prefixed() {
        let mut out = Vec::new();
        field(&mut out, "MESSAGE", "a\nTSMON_KIND=forged");
        assert!(out.starts_with(b"MESSAGE\n"));
        assert_eq!(&out[8..16], &(19u64).to_le_bytes());
    }

    /// A replay says so, in a field of its own; a first hand-over does not.
    #[test]
    fn a_replay_is_marked() {
        let c = crate::store::Chained {
            logged: crate::store::LoggedEvent {
                id: 7,
                pass: 1,
                event: crate::model::Event::new(
                    crate::model::EventKind::DeviceNew,
                    chrono::Utc::now(),
                    "New device",
                ),
            },
            hash: "h".into(),
            prev_hash: "p".into(),
        };
        let has = |replay| {
            let e = entry(&Record {
                c: &c,
                host: "srv",
                replay,
            });
            String::from_utf8_lossy(&e).contains("\nTSMON_REPLAY=1\n")
        };
        assert!(has(true));
        assert!(!has(false));
        let m = |replay| {
            crate::export::syslog::message(
                &Record {
                    c: &c,
                    host: "srv",
                    replay,
                },
                32473,
            )
        };
        assert!(m(true).contains(r#" prev="p" replay="1"] "#), "{}", m(true));
        assert!(!m(false).contains("replay"), "{}", m(false));
    }

    /// The shipped catalog is the one the code would write (refresh with TM_WRITE_CATALOG=1).
    #[test]
    fn catalog_matches_the_shipped_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/tailscale-monitor.catalog"
        );
        let want = catalog();
        if std::env::var_os("TM_WRITE_CATALOG").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "contrib/tailscale-monitor.catalog is stale: TM_WRITE_CATALOG=1 cargo test catalog"
        );
    }
}
