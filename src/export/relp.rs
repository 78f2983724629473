//! RELP, the Reliable Event Logging Protocol of rsyslog (librelp): each syslog message is a
//! numbered transaction, and the collector answers each with `200 OK` once it has taken it. So a
//! syslog export over RELP moves its cursor only past what the collector acknowledged; over plain
//! TCP (RFC 6587) a write the kernel accepted is all the monitor can know.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF` (librelp's `doc/relp.html`). The session
//! opens with `open` (the offers below), sends `syslog` frames, and the collector may end it with
//! `serverclose`. Transaction numbers run from 1 to 999,999,999 and wrap to 1.

/// What the client offers at `open`.
pub(crate) const OFFERS: &str = "relp_version=0\nrelp_software=tailscale-monitor\ncommands=syslog";

/// The largest answer read (the collector's offers, or a status line): a longer one is an error.
const MAX_DATA: usize = 64 << 10;

/// One frame.
pub(crate) fn frame(txnr: u32, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{txnr} {command} {}", data.len()).into_bytes();
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
    out
}

/// The transaction number after `txnr`.
pub(crate) fn next(txnr: u32) -> u32 {
    if txnr >= 999_999_999 {
        1
    } else {
        txnr + 1
    }
}

/// A frame from the collector.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

impl Answer {
    /// `Ok` when this is the acknowledgement of `txnr`; else why not, in one line.
    pub fn acknowledges(&self, txnr: u32) -> Result<(), String> {
        let status =
            String::from_utf8_lossy(self.data.split(|&b| b == b'\n').next().unwrap_or(&[]));
        let status = crate::sanitize::line(&status, 200);
        match self.command.as_str() {
            "rsp" if self.txnr == txnr && status.starts_with("200") => Ok(()),
            "rsp" if self.txnr == txnr => Err(format!(
                "the collector refused transaction {txnr}: {status}"
            )),
            "rsp" => Err(format!(
                "the collector answered transaction {} where {txnr} was due",
                self.txnr
            )),
            "serverclose" => Err("the collector closed the session".into()),
            other => Err(format!(
                "the collector sent `{}` where an answer was due",
                crate::sanitize::line(other, 40)
            )),
        }
    }
}

/// The first whole frame in `buf`, removed from it: `Ok(None)` until one is complete.
pub(crate) fn take(buf: &mut Vec<u8>) -> Result<Option<Answer>, String> {
    let bad = |what: &str| format!("not RELP from the collector: {what}");
    // TXNR SP COMMAND SP DATALEN: the head is short; a long one without its spaces is garbage.
    let mut fields = Vec::with_capacity(3);
    let mut at = 0;
    while fields.len() < 3 {
        let Some(rel) = buf[at..].iter().position(|&b| b == b' ' || b == b'\n') else {
            if buf.len() - at > 32 {
                return Err(bad("a header field longer than 32 bytes"));
            }
            return Ok(None);
        };
        let end = at + rel;
        fields.push((at, end, buf[end]));
        at = end + 1;
        if buf[end] == b'\n' && fields.len() < 3 {
            return Err(bad("a frame ends before its length"));
        }
    }
    let text = |(a, b, _): (usize, usize, u8)| std::str::from_utf8(&buf[a..b]).unwrap_or("");
    let txnr: u32 = text(fields[0])
        .parse()
        .map_err(|_| bad("a transaction number that is not one"))?;
    let command = text(fields[1]).to_owned();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(bad("a command that is not a word"));
    }
    let len: usize = text(fields[2])
        .parse()
        .map_err(|_| bad("a data length that is not a number"))?;
    if len > MAX_DATA {
        return Err(bad("an answer longer than 64 KiB"));
    }
    let data_at = at;
    let (data, end) = match (len, fields[2].2) {
        (0, b'\n') => (Vec::new(), data_at),
        (0, _) => {
            // `0 ` then the trailer.
            if buf.len() <= data_at {
                return Ok(None);
            }
            (Vec::new(), data_at + 1)
        }
        (_, b'\n') => return Err(bad("data announced but not sent")),
        (n, _) => {
            if buf.len() < data_at + n + 1 {
                return Ok(None);
            }
            (buf[data_at..data_at + n].to_vec(), data_at + n + 1)
        }
    };
    if buf[end - 1] != b'\n' {
        return Err(bad("a frame without its trailing newline"));
    }
    buf.drain(..end);
    Ok(Some(Answer {
        txnr,
        command,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_as_librelp_writes_them() {
        assert_eq!(frame(2, "syslog", b"<14>1 x"), b"2 syslog 7 <14>1 x\n");
        assert_eq!(frame(4, "close", b""), b"4 close 0\n");
        assert_eq!(next(1), 2);
        assert_eq!(next(999_999_999), 1);
    }

    /// What rsyslog 8 (librelp 1.11) answered in a session, fed in every cut.
    #[test]
    fn answers_in_any_pieces() {
        let wire = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 0\n0 serverclose 0\n";
        for size in 1..wire.len() {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for piece in wire.chunks(size) {
                buf.extend_from_slice(piece);
                while let Some(a) = take(&mut buf).unwrap() {
                    got.push(a);
                }
            }
            assert!(buf.is_empty());
            assert_eq!(got.len(), 5, "pieces of {size}");
            assert!(got[0].acknowledges(1).is_ok());
            assert!(got[0].data.ends_with(b"commands=syslog"));
            assert!(got[1].acknowledges(2).is_ok());
            assert!(got[2].acknowledges(3).is_ok());
            assert_eq!((got[3].txnr, got[3].data.len()), (4, 0));
            assert_eq!(
                got[4].acknowledges(5).unwrap_err(),
                "the collector closed the session"
            );
        }
    }

    #[test]
    fn refusals_and_garbage_are_errors() {
        let mut buf = b"7 rsp 19 500 error\nmore here\n".to_vec();
        let a = take(&mut buf).unwrap().unwrap();
        assert_eq!(
            a.acknowledges(7).unwrap_err(),
            "the collector refused transaction 7: 500 error"
        );
        assert!(a.acknowledges(8).unwrap_err().contains("where 8 was due"));
        for bad in [
            &b"x rsp 6 200 OK\n"[..],
            b"1 rsp\n",
            b"1 rsp 99999999 ",
            b"1 r\x1bp 0\n",
            b"1 rsp 3 200X",
            b"1 rsp 3\n",
            &[b'9'; 40],
        ] {
            let mut buf = bad.to_vec();
            assert!(
                take(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
