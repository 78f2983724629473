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

/// The longest line of a copy that is read (a record is a few KiB at most).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// A copy read a chunk at a time: its lines parsed as they end, overlong ones skipped.
#[derive(Default)]
pub(crate) struct Lines {
    line: Vec<u8>,
    overlong: bool,
    found: Vec<Witnessed>,
}

impl Lines {
    pub fn push(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..i]);
            self.end();
            chunk = &chunk[i + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, part: &[u8]) {
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line.clear();
        } else if !self.overlong {
            self.line.extend_from_slice(part);
        }
    }

    fn end(&mut self) {
        if !self.overlong {
            if let Some(w) = std::str::from_utf8(&self.line).ok().and_then(read_line) {
                self.found.push(w);
            }
        }
        self.line.clear();
        self.overlong = false;
    }

    /// What the copy recorded (a last line without its newline included).
    pub fn finish(mut self) -> Vec<Witnessed> {
        self.end();
        self.found
    }
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
    fn lines_split_across_chunks_are_read_and_overlong_ones_skipped() {
        let mut l = Lines::default();
        l.push(br#"{"event":{"sequence":1,"hash":"a"}}"#);
        l.push(b"\n{\"event\":{\"seq");
        l.push(br#"uence":2,"hash":"b"}}"#);
        l.push(b"\n");
        l.push(&vec![b'x'; MAX_LINE + 1]);
        l.push(b"\n{\"TSMON_SEQ\":\"3\",\"TSMON_HASH\":\"c\"}");
        let got: Vec<i64> = l.finish().iter().map(|w| w.seq).collect();
        assert_eq!(got, [1, 2, 3]);
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
