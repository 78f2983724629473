//! `audit --witness`: the local chain against an exported copy (a file of ECS or OCSF lines, or
//! `journalctl -o json` output), event by event, by sequence number and hash.

use std::collections::BTreeMap;

use serde_json::Value;

/// One event as a copy recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Witnessed {
    pub seq: i64,
    pub hash: String,
}

/// The sequence number and hash of one line of a copy, whichever format wrote it; `None` for a
/// line that is none of ours (a journal has other entries).
pub(crate) fn read_line(line: &str) -> Option<Witnessed> {
    let v: Value = serde_json::from_str(line).ok()?;
    let num = |v: &Value| v.as_i64().or_else(|| v.as_str()?.parse().ok());
    let (seq, hash) = if let Some(s) = v.pointer("/event/sequence") {
        (num(s)?, v.pointer("/event/hash")?.as_str()?.to_owned())
    } else if let Some(s) = v.pointer("/metadata/sequence") {
        (
            num(s)?,
            v.pointer("/unmapped/tsmon_hash")?.as_str()?.to_owned(),
        )
    } else {
        (
            num(v.get("TSMON_SEQ")?)?,
            v.get("TSMON_HASH")?.as_str()?.to_owned(),
        )
    };
    Some(Witnessed { seq, hash })
}

/// What differs between the local log and a copy.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Differences {
    /// Events whose local hash is not the copy's: rewritten after they were exported.
    pub rewritten: Vec<i64>,
    /// Events the copy holds and the local log does not, up to the local head: deleted locally.
    pub deleted: Vec<i64>,
    /// Local events up to the copy's last that the copy lacks (an export gap).
    pub missing_from_copy: Vec<i64>,
    /// The copy goes past the local head: the local tail was truncated after it (the copy's last).
    pub truncated_after: Option<(i64, i64)>,
}

impl Differences {
    pub fn none(&self) -> bool {
        *self == Differences::default()
    }
}

/// Compares `local` (sequence → hash, the whole log) with what the copy recorded.
pub(crate) fn compare(local: &BTreeMap<i64, String>, copy: &[Witnessed]) -> Differences {
    let mut d = Differences::default();
    let head = local.keys().next_back().copied().unwrap_or(0);
    let mut seen = std::collections::BTreeSet::new();
    for w in copy {
        seen.insert(w.seq);
        match local.get(&w.seq) {
            Some(h) if *h == w.hash => {}
            Some(_) => d.rewritten.push(w.seq),
            None if w.seq <= head => d.deleted.push(w.seq),
            None => {}
        }
    }
    let copy_last = copy.iter().map(|w| w.seq).max().unwrap_or(0);
    if copy_last > head {
        d.truncated_after = Some((head, copy_last));
    }
    d.missing_from_copy = local
        .keys()
        .copied()
        .filter(|s| *s <= copy_last && !seen.contains(s))
        .collect();
    d.rewritten.sort_unstable();
    d.rewritten.dedup();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(n: i64) -> BTreeMap<i64, String> {
        (1..=n).map(|i| (i, format!("h{i}"))).collect()
    }

    fn copy(r: std::ops::RangeInclusive<i64>) -> Vec<Witnessed> {
        r.map(|i| Witnessed {
            seq: i,
            hash: format!("h{i}"),
        })
        .collect()
    }

    #[test]
    fn a_rewrite_a_truncation_and_a_gap_are_each_named() {
        assert!(compare(&local(5), &copy(1..=5)).none());
        assert!(
            compare(&local(7), &copy(1..=5)).none(),
            "not exported yet is no difference"
        );
        let mut l = local(5);
        l.insert(3, "forged".into());
        assert_eq!(compare(&l, &copy(1..=5)).rewritten, vec![3]);
        let d = compare(&local(3), &copy(1..=5));
        assert_eq!(d.truncated_after, Some((3, 5)));
        let mut c = copy(1..=5);
        c.remove(1);
        assert_eq!(compare(&local(5), &c).missing_from_copy, vec![2]);
    }

    #[test]
    fn every_format_is_read() {
        let ecs = r#"{"event":{"sequence":7,"hash":"abc"}}"#;
        let ocsf = r#"{"metadata":{"sequence":7},"unmapped":{"tsmon_hash":"abc"}}"#;
        let journal = r#"{"TSMON_SEQ":"7","TSMON_HASH":"abc","MESSAGE":"x"}"#;
        for l in [ecs, ocsf, journal] {
            assert_eq!(
                read_line(l),
                Some(Witnessed {
                    seq: 7,
                    hash: "abc".into()
                }),
                "{l}"
            );
        }
        assert_eq!(read_line(r#"{"MESSAGE":"someone else's"}"#), None);
    }
}
