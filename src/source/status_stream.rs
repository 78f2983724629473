//! `/status` parsed while its body arrives. The peer map (`"Peer": {key: {...}, ...}`, nearly
//! all of a large tailnet's document) is cut into its entries as the bytes come in; each entry is
//! parsed into a [`PeerStatus`] as soon as its closing brace is read, and its bytes dropped. The
//! rest of the document (`Self`, `User`, the tailnet) is kept with `"Peer": null` in place of the
//! map and parsed at the end by the same serde types as [`Status::parse`].
//!
//! So the whole body is never held at once (14 MB at 10,000 peers), and the parse runs beside the
//! read instead of after it. The cutting tracks strings, escapes and braces only; every byte of
//! the document still goes through serde_json (an entry, or the rest), so a malformed document
//! is the same one-line error it is for [`Status::parse`], with the byte where it was found.

use memchr::memchr2;

use super::status_json::{PeerStatus, Status, StatusError};

/// A `/status` document fed in pieces ([`StatusStream::feed`]) and finished once
/// ([`StatusStream::finish`]). Gives what `Status::parse` gives on the whole document.
#[derive(Default)]
pub struct StatusStream {
    /// The document outside the peer map, with `null` in the map's place.
    rest: Vec<u8>,
    /// An entry of the peer map whose bytes span pieces.
    entry: Vec<u8>,
    peers: Vec<PeerStatus>,
    at: At,
    /// Bytes fed so far: where an error is.
    read: usize,
    /// Nesting of `{`/`[` in the document outside the map, or of `{` within an entry.
    depth: usize,
    in_str: bool,
    esc: bool,
    /// Outside the map: where in `rest` the last string of the top-level object began, and
    /// whether `"Peer"` and then `:` were just read there.
    str_at: usize,
    peer_key: PeerKey,
    failed: Option<StatusError>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Outside the peer map.
    #[default]
    Doc,
    /// In the peer map, between its entries.
    Map(Step),
    /// In an entry's object.
    Entry,
}

/// Where the peer map's own syntax is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// After `{`: a key or the end.
    FirstKey,
    /// After `,`: a key.
    Key,
    /// In a key's string.
    InKey,
    Colon,
    Value,
    CommaOrEnd,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum PeerKey {
    #[default]
    No,
    Key,
    Colon,
}

impl StatusStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next piece of the body. `false` once the document is known to be malformed:
    /// [`StatusStream::finish`] says why, and the rest need not be read.
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        if self.failed.is_none() {
            self.failed = self.cut(piece).err();
        }
        self.failed.is_none()
    }

    fn cut(&mut self, mut piece: &[u8]) -> Result<(), StatusError> {
        while !piece.is_empty() {
            let used = match self.at {
                At::Doc => self.doc(piece)?,
                At::Map(step) => self.map(step, piece)?,
                At::Entry => self.entry(piece)?,
            };
            self.read += used;
            piece = &piece[used..];
        }
        Ok(())
    }

    /// The whole document, parsed.
    pub fn finish(self) -> Result<Status, StatusError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.at != At::Doc {
            return Err(self.error("the document ends inside the Peer map"));
        }
        let mut status = Status::parse(&self.rest)?;
        if !self.peers.is_empty() {
            if !status.peer.is_empty() {
                // A second `Peer` key (spelled with an escape, so not cut out) is a duplicate
                // field above; never reached.
                return Err(self.error("a second Peer map"));
            }
            status.peer = self.peers;
        }
        Ok(status)
    }

    fn error(&self, what: impl std::fmt::Display) -> StatusError {
        self.error_at(0, what)
    }

    /// An error at byte `i` of the piece being read.
    fn error_at(&self, i: usize, what: impl std::fmt::Display) -> StatusError {
        StatusError::Malformed(format!("{what} (byte {})", self.read + i))
    }

    /// Outside the peer map: every byte is kept. Returns how many bytes were used: all of
    /// `piece`, or up to the `{` that opens the peer map.
    fn doc(&mut self, piece: &[u8]) -> Result<usize, StatusError> {
        for (i, &b) in piece.iter().enumerate() {
            if self.in_str {
                self.rest.push(b);
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if self.depth == 1
                        && self.str_at + 6 == self.rest.len()
                        && self.rest.ends_with(b"\"Peer\"")
                    {
                        self.peer_key = PeerKey::Key;
                    }
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b':' if self.peer_key == PeerKey::Key => self.peer_key = PeerKey::Colon,
                b'{' if self.peer_key == PeerKey::Colon => {
                    self.peer_key = PeerKey::No;
                    self.rest.extend_from_slice(b"null");
                    self.at = At::Map(Step::FirstKey);
                    return Ok(i + 1);
                }
                _ => {
                    self.peer_key = PeerKey::No;
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
                        }
                        _ => {}
                    }
                }
            }
            self.rest.push(b);
        }
        Ok(piece.len())
    }

    /// Between the peer map's entries: its keys (skipped: each entry carries its own key),
    /// colons and commas.
    fn map(&mut self, mut step: Step, piece: &[u8]) -> Result<usize, StatusError> {
        for (i, &b) in piece.iter().enumerate() {
            if step == Step::InKey {
                self.entry.push(b);
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    // Unused, but checked as serde_json checks a key it skips (as a string).
                    serde_json::from_slice::<String>(&self.entry).map_err(|e| {
                        self.error_at(i, format_args!("Peer key {}: {e}", self.peers.len() + 1))
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
                (Step::FirstKey | Step::Key, b'"') => {
                    self.entry.push(b);
                    Step::InKey
                }
                (Step::Colon, b':') => Step::Value,
                (Step::Value, b'{' | b'[') => {
                    // The entry is read from its opening bracket.
                    self.at = At::Entry;
                    return Ok(i);
                }
                (Step::CommaOrEnd, b',') => Step::Key,
                (Step::FirstKey | Step::CommaOrEnd, b'}') => {
                    // Back in the top-level object (the map's braces are not in `rest`).
                    self.at = At::Doc;
                    self.depth = 1;
                    return Ok(i + 1);
                }
                (Step::Value, _) => {
                    return Err(self.error_at(
                        i,
                        format_args!(
                            "Peer entry {} is neither an object nor an array",
                            self.peers.len() + 1
                        ),
                    ))
                }
                _ => return Err(self.error_at(i, "malformed Peer map")),
            };
        }
        self.at = At::Map(step);
        Ok(piece.len())
    }

    /// At or in an entry. One that lies whole in this piece is parsed where it lies, in one
    /// pass; one that the piece cuts is gathered ([`StatusStream::gather`]) and parsed once
    /// complete.
    fn entry(&mut self, piece: &[u8]) -> Result<usize, StatusError> {
        if !self.entry.is_empty() {
            return self.gather(piece);
        }
        let mut values = serde_json::Deserializer::from_slice(piece).into_iter::<PeerStatus>();
        match values.next() {
            Some(Ok(p)) => {
                self.peers.push(p);
                self.at = At::Map(Step::CommaOrEnd);
                Ok(values.byte_offset())
            }
            Some(Err(e)) if !e.is_eof() => {
                Err(self.error(format_args!("Peer entry {}: {e}", self.peers.len() + 1)))
            }
            // Cut by the piece's end: its brackets are followed from its start.
            _ => {
                (self.depth, self.in_str, self.esc) = (0, false, false);
                self.gather(piece)
            }
        }
    }

    /// An entry that spans pieces: its bytes are kept until its closing bracket (outside
    /// strings), then parsed. Each byte is looked at once, so a huge entry costs its length.
    fn gather(&mut self, piece: &[u8]) -> Result<usize, StatusError> {
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
                        let parsed = serde_json::from_slice::<PeerStatus>(&self.entry);
                        self.entry.clear();
                        let p = parsed.map_err(|e| {
                            self.error_at(
                                i,
                                format_args!("Peer entry {}: {e}", self.peers.len() + 1),
                            )
                        })?;
                        self.peers.push(p);
                        self.at = At::Map(Step::CommaOrEnd);
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The document fed in pieces cut at `cuts` (byte offsets, ascending).
    fn streamed(doc: &[u8], cuts: &[usize]) -> Result<Status, StatusError> {
        let mut s = StatusStream::new();
        let mut from = 0;
        for &at in cuts.iter().chain(std::iter::once(&doc.len())) {
            if !s.feed(&doc[from..at]) {
                break;
            }
            from = at;
        }
        s.finish()
    }

    /// The stream gives what the whole-document parse gives: the same status, or an error for
    /// the same document.
    fn same(doc: &[u8], cuts: &[usize]) {
        let whole = Status::parse(doc).map(|s| format!("{s:?}"));
        let piecewise = streamed(doc, cuts).map(|s| format!("{s:?}"));
        match (&whole, &piecewise) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "cut at {cuts:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "whole: {whole:?}\npiecewise (cut at {cuts:?}): {piecewise:?}\n{}",
                String::from_utf8_lossy(&doc[..doc.len().min(2000)])
            ),
        }
    }

    fn fixtures() -> Vec<Vec<u8>> {
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let mut docs: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        docs.push(HOSTILE.as_bytes().to_vec());
        docs
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

    #[test]
    fn every_fixture_in_every_cut() {
        for doc in fixtures() {
            same(&doc, &[]);
            for size in [1, 2, 3, 7, 64, 4096] {
                let cuts: Vec<usize> = (size..doc.len()).step_by(size).collect();
                same(&doc, &cuts);
            }
        }
        let s = streamed(HOSTILE.as_bytes(), &[]).unwrap();
        assert_eq!(s.peer.len(), 3);
        assert_eq!(s.peer[0].host_name, "a\"}]{[\\");
        assert_eq!(s.peer[1].host_name, "}\"");
    }

    /// Mutated documents (the fuzz corpus's mutations) cut at random places: never a different
    /// answer from the whole-document parse.
    #[test]
    fn mutated_documents_agree() {
        let docs = fixtures();
        let mut rng = StdRng::seed_from_u64(0x5747_u64);
        for i in 0..crate::fuzz::cases() {
            let doc = crate::fuzz::mutate(&mut rng, &docs[i % docs.len()]);
            let mut cuts: Vec<usize> = (0..rng.gen_range(0..8))
                .map(|_| rng.gen_range(0..=doc.len()))
                .collect();
            cuts.sort_unstable();
            same(&doc, &cuts);
        }
    }

    #[test]
    fn errors_say_where() {
        let e = streamed(br#"{"Peer":{"k":{"ID":"n1"} "j":{}}}"#, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed status JSON: malformed Peer map (byte 25)"
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
        assert!(e.to_string().contains("ends inside the Peer map"), "{e}");
    }
}
