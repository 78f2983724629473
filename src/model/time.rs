//! RFC 3339 times as tailscaled and the store write them, read in a fraction of chrono's cost.
//!
//! A 10,000-device `check` reads about 80,000 times (four per peer of `/status`, five per stored
//! device). Nearly all are UTC in one shape, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`; those are
//! read here digit by digit, and anything else goes to chrono's `parse_from_rfc3339`, so that the
//! result is chrono's for every input (a property test holds the two together).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// `s` as chrono's `DateTime::parse_from_rfc3339` reads it, in UTC.
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match utc_fast(s.as_bytes()) {
        Some(t) => Ok(t),
        None => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)),
    }
}

/// The common shape, or `None` for chrono to decide (another offset, a leap second, more than
/// nine digits of fraction, a date that does not exist, anything unusual).
fn utc_fast(b: &[u8]) -> Option<DateTime<Utc>> {
    let (head, tail) = b.split_first_chunk::<19>()?;
    let d = |i: usize| -> Option<u32> {
        let (x, y) = (head[i].wrapping_sub(b'0'), head[i + 1].wrapping_sub(b'0'));
        (x < 10 && y < 10).then_some(u32::from(x) * 10 + u32::from(y))
    };
    if head[4] != b'-'
        || head[7] != b'-'
        || head[10] != b'T'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let year = d(0)? * 100 + d(2)?;
    let (month, day, hour, minute, second) = (d(5)?, d(8)?, d(11)?, d(14)?, d(17)?);
    if second > 59 {
        return None;
    }
    let (nanos, offset) = match tail.split_first() {
        Some((b'.', rest)) => {
            let digits = rest
                .iter()
                .take(10)
                .take_while(|c| c.is_ascii_digit())
                .count();
            if !(1..=9).contains(&digits) {
                return None;
            }
            let n = rest[..digits]
                .iter()
                .fold(0, |n, &c| n * 10 + u32::from(c - b'0'));
            (n * 10u32.pow(9 - digits as u32), &rest[digits..])
        }
        _ => (0, tail),
    };
    if offset != b"Z" && offset != b"+00:00" {
        return None;
    }
    let t = NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(Utc.from_utc_datetime(&t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn the_shapes_tailscaled_and_the_store_write() {
        for s in [
            "2026-03-02T10:11:12.123456789Z",
            "2026-11-24T09:58:01.5Z",
            "0001-01-01T00:00:00Z",
            "2027-02-01T10:11:12Z",
            "2026-12-08T01:37:13.519585382+00:00",
            "2026-11-24T09:57:30.100+00:00",
            "2024-02-29T23:59:59Z",
        ] {
            assert!(utc_fast(s.as_bytes()).is_some(), "{s}");
            assert_eq!(rfc3339(s).ok(), chrono(s), "{s}");
        }
        // chrono decides these: the answer is still chrono's.
        for s in [
            "2026-12-08T01:37:13+01:00",
            "2016-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-11-24T09:57:30.1234567891Z",
            "2026-11-24t09:57:30Z",
            "2026-11-24 09:57:30Z",
            "2026-11-24T09:57:30.Z",
            "2026-11-24T09:57:30z",
            "2026-11-24T09:57:30Z ",
            "+2026-11-24T09:57:30Z",
            "2026-11-24T09:57:3",
            "",
        ] {
            assert!(utc_fast(s.as_bytes()).is_none(), "{s}");
            assert_eq!(rfc3339(s).ok(), chrono(s), "{s}");
        }
    }

    fn digits(n: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![8 => proptest::char::range('0', '9'), 1 => Just('x'), 1 => Just('-')],
            n,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        /// Whatever the parts, the answer is chrono's: valid and invalid dates, fractions of
        /// any length, other offsets and separators.
        #[test]
        fn agrees_with_chrono(
            y in prop_oneof![digits(4), (0u32..10000).prop_map(|y| format!("{y:04}"))],
            mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61, s in 0u32..62,
            frac in prop_oneof![Just(String::new()), digits(1), digits(3), digits(9), digits(10),
                                Just(".".to_string())],
            off in prop_oneof![Just("Z"), Just("+00:00"), Just("-00:00"), Just("+05:30"),
                               Just("z"), Just(""), Just("Z0")],
            t in prop_oneof![8 => Just('T'), 1 => Just('t'), 1 => Just(' ')],
        ) {
            let frac = if frac.is_empty() || frac.starts_with('.') { frac } else { format!(".{frac}") };
            let text = format!("{y}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{frac}{off}");
            prop_assert_eq!(rfc3339(&text).ok(), chrono(&text), "{}", text);
        }

        /// Every instant chrono writes (`to_rfc3339` and serde's form) reads back through the
        /// fast path to itself.
        #[test]
        fn reads_back_what_chrono_writes(secs in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            for text in [t.to_rfc3339(), serde_json::to_value(t).unwrap().as_str().unwrap().to_string(),
                         t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)] {
                prop_assert!(utc_fast(text.as_bytes()).is_some(), "{}", text);
                prop_assert_eq!(rfc3339(&text).ok(), Some(t), "{}", text);
            }
        }
    }
}
