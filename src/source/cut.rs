//! A JSON document parsed while it arrives, with its one large collection cut out entry by entry:
//! the peer map of `/status` (`"Peer": {key: {...}, ...}`) and the peer list of the netmap
//! (`"NetMap": {"Peers": [{...}, ...]}`), nearly all of a large tailnet's bytes. Each entry is
//! parsed as soon as its closing bracket is read, and its bytes dropped. The rest of the document
//! is kept with `null` in the collection's place, for the caller to parse with its own serde
//! types at the end.
//!
//! So the whole body is never held at once (14 MB of `/status` and 8 MB of netmap at 10,000
//! peers), and the parse runs beside the read instead of after it. The cutting follows strings,
//! escapes and brackets only; every byte still goes through serde_json (an entry, a key, or the
//! rest), so a malformed document is an error as it is for a whole-document parse, with the byte
//! where it was found.

use memchr::memchr2;
use serde::de::DeserializeOwned;

/// A document fed in pieces ([`Cut::feed`]) and finished once ([`Cut::finish`]).
pub struct Cut<T> {
    /// The keys from the top-level object to the collection.
    path: &'static [&'static str],
    /// Whether the collection is an object (its values are the entries) or an array.
    map: bool,
    /// The document outside the collection, with `null` in its place.
    rest: Vec<u8>,
    /// An entry whose bytes span pieces.
    entry: Vec<u8>,
    entries: Vec<T>,
    at: At,
    /// Bytes fed before the piece being read: where an error is.
    read: usize,
    /// Nesting of `{`/`[` in the document outside the collection, or within an entry.
    depth: usize,
    /// Outside the collection: how many keys of `path` the nesting is in.
    inside: usize,
    in_str: bool,
    esc: bool,
    /// Outside the collection: where in `rest` the last string began, and whether the next key
    /// of `path` and then `:` were just read.
    str_at: usize,
    key: Key,
    failed: Option<String>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Outside the collection.
    #[default]
    Doc,
    /// In the collection, between its entries.
    Between(Step),
    /// At or in an entry.
    Entry,
}

/// Where the collection's own syntax is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// After the opening bracket: a key (an entry in an array) or the end.
    First,
    /// After `,`: a key (an entry).
    Next,
    /// In a key's string.
    InKey,
    Colon,
    Value,
    CommaOrEnd,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Key {
    #[default]
    No,
    Read,
    Colon,
}

impl<T: DeserializeOwned> Cut<T> {
    /// Cuts the object (`map`) or array at `path`, whose entries are `T`s.
    pub fn new(path: &'static [&'static str], map: bool) -> Self {
        assert!(!path.is_empty());
        Self {
            path,
            map,
            rest: Vec::new(),
            entry: Vec::new(),
            entries: Vec::new(),
            at: At::Doc,
            read: 0,
            depth: 0,
            inside: 0,
            in_str: false,
            esc: false,
            str_at: 0,
            key: Key::No,
            failed: None,
        }
    }

    /// The next piece. `false` once the document is known to be malformed: [`Cut::finish`]
    /// says why, and the rest need not be read.
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        if self.failed.is_none() {
            self.failed = self.cut(piece).err();
        }
        self.failed.is_none()
    }

    fn cut(&mut self, whole: &[u8]) -> Result<(), String> {
        let mut at = 0;
        // The piece as text from where its first entry starts, up to its last whole character:
        // checked once, so that each entry is parsed as text. serde_json otherwise checks every
        // string of every entry on its own, a tenth of a large `check`'s instructions.
        let mut text: Option<(usize, &str)> = None;
        while at < whole.len() {
            let piece = &whole[at..];
            let used = match self.at {
                At::Doc => self.doc(piece)?,
                At::Between(step) => self.between(step, piece)?,
                // The rest of an entry that an earlier piece cut: its bytes are gathered (the
                // piece may start inside a character, so the text starts after it).
                At::Entry if !self.entry.is_empty() => self.gather(piece)?,
                At::Entry => {
                    let (from, t) = *text.get_or_insert_with(|| (at, utf8_prefix(piece)));
                    // An entry starts at a bracket, so at a character's start; past the checked
                    // text there is none, and the entry is parsed from its bytes.
                    self.entry(piece, t.get(at - from..).unwrap_or_default())?
                }
            };
            self.read += used;
            at += used;
        }
        Ok(())
    }

    /// The rest of the document (with `null` for the collection) and the entries, in document
    /// order; or why the document is malformed.
    pub fn finish(self) -> Result<(Vec<u8>, Vec<T>), String> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.at != At::Doc {
            return Err(self.error_at(0, format_args!("the document ends inside {}", self.name())));
        }
        Ok((self.rest, self.entries))
    }

    /// Nothing but whitespace fed so far.
    pub fn is_blank(&self) -> bool {
        self.at == At::Doc && self.rest.iter().all(u8::is_ascii_whitespace)
    }

    fn name(&self) -> String {
        self.path.join(".")
    }

    /// An error at byte `i` of the piece being read.
    fn error_at(&self, i: usize, what: impl std::fmt::Display) -> String {
        format!("{what} (byte {})", self.read + i)
    }

    /// Byte `b` inside a string, read one at a time: whether it is the closing quote (an escaped
    /// one is not).
    fn string_ends(&mut self, b: u8) -> bool {
        if self.esc {
            self.esc = false;
        } else if b == b'\\' {
            self.esc = true;
        } else {
            return b == b'"';
        }
        false
    }

    /// Outside the collection: every byte is kept. Returns how many bytes were used: all of
    /// `piece`, or up to the bracket that opens the collection.
    fn doc(&mut self, piece: &[u8]) -> Result<usize, String> {
        for (i, &b) in piece.iter().enumerate() {
            if self.in_str {
                self.rest.push(b);
                if self.string_ends(b) {
                    self.in_str = false;
                    let want = self.path[self.inside].as_bytes();
                    if self.depth == self.inside + 1
                        && self.str_at + want.len() + 2 == self.rest.len()
                        && &self.rest[self.str_at + 1..self.rest.len() - 1] == want
                    {
                        self.key = Key::Read;
                    }
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b':' if self.key == Key::Read => self.key = Key::Colon,
                b'{' | b'['
                    if self.key == Key::Colon
                        && self.inside + 1 == self.path.len()
                        && (b == b'{') == self.map =>
                {
                    self.key = Key::No;
                    self.rest.extend_from_slice(b"null");
                    self.at = At::Between(Step::First);
                    return Ok(i + 1);
                }
                _ => {
                    if self.key == Key::Colon && b == b'{' && self.inside + 1 < self.path.len() {
                        // Into the object of the next key of `path`.
                        self.inside += 1;
                    }
                    self.key = Key::No;
                    match b {
                        b'"' => {
                            self.in_str = true;
                            self.str_at = self.rest.len();
                        }
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth = self.depth.checked_sub(1).ok_or_else(|| {
                                self.error_at(i, "a closing bracket with none open")
                            })?;
                            if self.inside > 0 && self.depth == self.inside {
                                self.inside -= 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            self.rest.push(b);
        }
        Ok(piece.len())
    }

    /// In the collection, between its entries: a map's keys (skipped: each entry carries its
    /// own), colons and commas.
    fn between(&mut self, mut step: Step, piece: &[u8]) -> Result<usize, String> {
        let close = if self.map { b'}' } else { b']' };
        for (i, &b) in piece.iter().enumerate() {
            if step == Step::InKey {
                self.entry.push(b);
                if self.string_ends(b) {
                    // Unused, but checked as serde_json checks a key it skips (as a string).
                    serde_json::from_slice::<String>(&self.entry).map_err(|e| {
                        self.error_at(
                            i,
                            format_args!("{} key {}: {e}", self.name(), self.entries.len() + 1),
                        )
                    })?;
                    self.entry.clear();
                    step = Step::Colon;
                }
                continue;
            }
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                continue;
            }
            step = match (step, b) {
                (Step::First | Step::Next, b'"') if self.map => {
                    self.entry.push(b);
                    Step::InKey
                }
                (Step::Colon, b':') => Step::Value,
                (Step::CommaOrEnd, b',') => Step::Next,
                (Step::First | Step::CommaOrEnd, b) if b == close => {
                    // Back in the object that holds the collection's key (the collection's
                    // brackets are not in `rest`).
                    self.at = At::Doc;
                    self.depth = self.path.len();
                    self.inside = self.path.len() - 1;
                    return Ok(i + 1);
                }
                (Step::First | Step::Next, _) if !self.map => {
                    // An array's entry, where a map has its key.
                    self.value(i, b)?;
                    return Ok(i);
                }
                (Step::Value, _) => {
                    self.value(i, b)?;
                    return Ok(i);
                }
                _ => return Err(self.error_at(i, format_args!("malformed {}", self.name()))),
            };
        }
        self.at = At::Between(step);
        Ok(piece.len())
    }

    /// At an entry's first byte `b`: an entry is read from its opening bracket.
    fn value(&mut self, i: usize, b: u8) -> Result<(), String> {
        if b != b'{' && b != b'[' {
            return Err(self.error_at(
                i,
                format_args!(
                    "{} entry {} is neither an object nor an array",
                    self.name(),
                    self.entries.len() + 1
                ),
            ));
        }
        self.at = At::Entry;
        Ok(())
    }

    /// At an entry's start. One that lies whole in this piece is parsed where it lies, in one
    /// pass; one that the piece cuts is gathered ([`Cut::gather`]) and parsed once
    /// complete.
    /// `text` is the piece's start as far as it is known to be UTF-8 (maybe empty): an entry
    /// within it is parsed as text, one beyond it from its bytes.
    fn entry(&mut self, piece: &[u8], text: &str) -> Result<usize, String> {
        let (first, offset) = if text.is_empty() {
            first(serde_json::Deserializer::from_slice(piece).into_iter::<T>())
        } else {
            first(serde_json::Deserializer::from_str(text).into_iter::<T>())
        };
        match first {
            Some(Ok(p)) => {
                self.entries.push(p);
                self.at = At::Between(Step::CommaOrEnd);
                Ok(offset)
            }
            Some(Err(e)) if !e.is_eof() => Err(self.error_at(
                0,
                format_args!("{} entry {}: {e}", self.name(), self.entries.len() + 1),
            )),
            // Cut by the piece's end: its brackets are followed from its start.
            _ => {
                (self.depth, self.in_str, self.esc) = (0, false, false);
                self.gather(piece)
            }
        }
    }

    /// An entry that spans pieces: its bytes are kept until its closing bracket (outside
    /// strings), then parsed. Each byte is looked at once, so a huge entry costs its length.
    fn gather(&mut self, piece: &[u8]) -> Result<usize, String> {
        let mut i = 0;
        while i < piece.len() {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                    i += 1;
                    continue;
                }
                match memchr2(b'"', b'\\', &piece[i..]) {
                    None => i = piece.len(),
                    Some(j) => {
                        self.esc = piece[i + j] == b'\\';
                        self.in_str = self.esc;
                        i += j + 1;
                    }
                }
                continue;
            }
            let b = piece[i];
            i += 1;
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.entry.extend_from_slice(&piece[..i]);
                        let parsed = serde_json::from_slice::<T>(&self.entry);
                        self.entry.clear();
                        let p = parsed.map_err(|e| {
                            self.error_at(
                                i,
                                format_args!(
                                    "{} entry {}: {e}",
                                    self.name(),
                                    self.entries.len() + 1
                                ),
                            )
                        })?;
                        self.entries.push(p);
                        self.at = At::Between(Step::CommaOrEnd);
                        return Ok(i);
                    }
                }
                _ => {}
            }
        }
        self.entry.extend_from_slice(piece);
        Ok(piece.len())
    }
}

/// The first value of a stream and the offset of the byte after it.
fn first<'de, R: serde_json::de::Read<'de>, T: DeserializeOwned>(
    mut values: serde_json::StreamDeserializer<'de, R, T>,
) -> (Option<serde_json::Result<T>>, usize) {
    let v = values.next();
    (v, values.byte_offset())
}

/// The longest start of `bytes` that is UTF-8 (a piece can end inside a character).
fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// The checks every use of [`Cut`] runs: fed in any pieces, a document gives what its
/// whole-document parse gives.
#[cfg(test)]
pub(crate) mod agree {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The document fed to `cut` in pieces cut at `cuts` (byte offsets, ascending).
    pub fn pieces<T: serde::de::DeserializeOwned>(
        mut cut: super::Cut<T>,
        doc: &[u8],
        cuts: &[usize],
    ) -> super::Cut<T> {
        let mut from = 0;
        for &at in cuts.iter().chain(std::iter::once(&doc.len())) {
            if !cut.feed(&doc[from..at]) {
                break;
            }
            from = at;
        }
        cut
    }

    /// `whole(doc)` and `piecewise(doc, cuts)` agree: the same answer, or both an error.
    fn same<E: std::fmt::Debug>(
        whole: &impl Fn(&[u8]) -> Result<String, E>,
        piecewise: &impl Fn(&[u8], &[usize]) -> Result<String, E>,
        doc: &[u8],
        cuts: &[usize],
    ) {
        let (a, b) = (whole(doc), piecewise(doc, cuts));
        match (&a, &b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "cut at {cuts:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "whole: {a:?}\npiecewise (cut at {cuts:?}): {b:?}\n{}",
                String::from_utf8_lossy(&doc[..doc.len().min(2000)])
            ),
        }
    }

    /// Each document cut into pieces of 1, 2, 3, 7, 64 and 4096 bytes; then the fuzz corpus's
    /// mutations of them, cut at random places.
    pub fn always<E: std::fmt::Debug>(
        docs: &[Vec<u8>],
        whole: impl Fn(&[u8]) -> Result<String, E>,
        piecewise: impl Fn(&[u8], &[usize]) -> Result<String, E>,
    ) {
        for doc in docs {
            same(&whole, &piecewise, doc, &[]);
            for size in [1, 2, 3, 7, 64, 4096] {
                let cuts: Vec<usize> = (size..doc.len()).step_by(size).collect();
                same(&whole, &piecewise, doc, &cuts);
            }
        }
        let mut rng = StdRng::seed_from_u64(0x5747_u64);
        for i in 0..crate::fuzz::cases() {
            let doc = crate::fuzz::mutate(&mut rng, &docs[i % docs.len()]);
            let mut cuts: Vec<usize> = (0..rng.gen_range(0..8))
                .map(|_| rng.gen_range(0..=doc.len()))
                .collect();
            cuts.sort_unstable();
            same(&whole, &piecewise, &doc, &cuts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::agree::pieces;
    use crate::source::status_json::{Status, StatusError};

    fn streamed(doc: &[u8], cuts: &[usize]) -> Result<Status, StatusError> {
        Status::from_cut(pieces(Status::cut(), doc, cuts))
    }

    /// Names that look like the syntax the cutter follows, a `Peer` key where it is not the
    /// map, and `"Peer"` as a value.
    const HOSTILE: &str = r#"{"Version":"Peer","BackendState":"Running",
        "Self":{"ID":"nSELF","HostName":"me","Peer":{"x":{}},"TailscaleIPs":["100.64.0.1"]},
        "Health":["Peer", "}", "{\"Peer\":{"],
        "Peer" :
          { "nodekey:a\"}{" : {"ID":"n1","HostName":"a\"}]{[\\","OS":"\\\"","Tags":["tag:{"],
                              "UserID":7,"TailscaleIPs":["100.64.0.2"],"Extra":{"Peer":{"a":[{},[]]}}},
            "nodekey:b":{"ID":"n2","HostName":"\u007d\u0022","UserID":7} ,
            "nodekey:c":[]},
        "User":{"7":{"ID":7,"LoginName":"\"Peer\":{","DisplayName":"}}}"}}}"#;

    /// `/status`: every fixture (and the hostile document) in every cut, and mutations of them,
    /// give what [`Status::parse`] gives.
    #[test]
    fn status_in_any_pieces_is_status_whole() {
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let mut docs: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        docs.push(HOSTILE.as_bytes().to_vec());
        // Characters of two, three and four bytes, which pieces cut inside; and one entry with
        // a byte that is no UTF-8 at all, between two that are whole.
        let wide = r#"{"BackendState":"Running","Self":{"ID":"nS"},"Peer":{
            "k1":{"ID":"n1","HostName":"é✓😀","OS":"😀"},
            "k2":{"ID":"n2","HostName":"BAD"},
            "k3":{"ID":"n3","HostName":"ü"}}}"#;
        docs.push(wide.as_bytes().to_vec());
        docs.push(wide.replace("BAD", r"B\u00ffD").into_bytes());
        let mut invalid = wide.as_bytes().to_vec();
        let at = wide.find("BAD").unwrap() + 1;
        invalid[at] = 0xff;
        docs.push(invalid);
        super::agree::always(
            &docs,
            |d| Status::parse(d).map(|s| format!("{s:?}")),
            |d, cuts| streamed(d, cuts).map(|s| format!("{s:?}")),
        );
        let s = streamed(HOSTILE.as_bytes(), &[]).unwrap();
        assert_eq!(s.peer.len(), 3);
        assert_eq!(s.peer[0].host_name, "a\"}]{[\\");
        assert_eq!(s.peer[1].host_name, "}\"");
        for size in [1, 2, 3] {
            let cuts: Vec<usize> = (size..wide.len()).step_by(size).collect();
            let s = streamed(wide.as_bytes(), &cuts).unwrap();
            assert_eq!(s.peer[0].host_name, "é✓😀");
            assert_eq!(s.peer[2].host_name, "ü");
        }
        let e = streamed(docs.last().unwrap(), &[]).unwrap_err();
        assert!(e.to_string().contains("Peer entry 2"), "{e}");
    }

    #[test]
    fn errors_say_where() {
        let e = streamed(br#"{"Peer":{"k":{"ID":"n1"} "j":{}}}"#, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed status JSON: malformed Peer (byte 25)"
        );
        let e = streamed(br#"{"Peer":{"k":null}}"#, &[]).unwrap_err();
        assert!(e.to_string().contains("Peer entry 1 is neither"), "{e}");
        let e = streamed(br#"{"Peer":{"k":{"ID":7}}}"#, &[3]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed status JSON: Peer entry 1: invalid type"),
            "{e}"
        );
        let e = streamed(br#"{"Peer":{"k":{"ID":"n1"}"#, &[]).unwrap_err();
        assert!(e.to_string().contains("ends inside Peer"), "{e}");
    }
}
