//! `[[export]]`: each export is a durable consumer of the event log with its own cursor in the
//! store. It hands every event over once, in order, resumes where it stopped after a crash or an
//! outage, and never holds up a pass or an alert: `run` drives it on a thread of its own with its
//! own connection to the store; `check` catches up once at its end.
//!
//! A file export is exactly once across a crash: the cursor moves after the lines are synced, and
//! at (re)open the file's last whole line says where the copy is (a cut last line is removed and
//! written again). A syslog or journald collector cannot be read back: each batch is marked in
//! flight before it is handed over, and a stop before the cursor moves sends the marked events
//! again at the next start, each marked `replay` (never twice unmarked, never skipped).

use std::io::{BufRead as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::{info, warn};

use crate::config::{Config, ExportConfig, ExportSink, FileFormat, TlsClient, Transport};
use crate::export::{ecs, journal, ocsf, relp, syslog, witness, Record};
use crate::model::route::Route;
use crate::model::{Event, EventKind};
use crate::sanitize;
use crate::store::{Chained, Store, StoreError};

/// Events handed over per batch.
const BATCH: usize = 500;
/// How long a collector may take to accept a connection or a write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `run`'s export thread looks for new events.
const POLL: Duration = Duration::from_millis(500);

/// A sink, opened lazily and reopened after an error.
enum Sink {
    File {
        path: PathBuf,
        format: FileFormat,
        open: Option<(std::fs::File, u64)>,
    },
    Tcp {
        address: String,
        pen: u32,
        /// TLS (`tls://`, `relp+tls://`): the client's configuration, or why it could not be
        /// built.
        tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
        /// RELP (`relp://`, `relp+tls://`): the session over `stream`.
        relp: Option<Relp>,
        stream: Option<Stream>,
    },
    Udp {
        address: String,
        pen: u32,
    },
    Journal {
        socket: PathBuf,
    },
}

impl Sink {
    fn new(sink: &ExportSink) -> Sink {
        match sink {
            ExportSink::File { path, format } => Sink::File {
                path: path.clone(),
                format: *format,
                open: None,
            },
            ExportSink::Syslog {
                address,
                transport: Transport::Udp,
                pen,
            } => Sink::Udp {
                address: address.clone(),
                pen: *pen,
            },
            ExportSink::Syslog {
                address,
                transport,
                pen,
            } => Sink::Tcp {
                address: address.clone(),
                pen: *pen,
                tls: transport.tls().map(tls_config),
                relp: transport.relp().then(Relp::default),
                stream: None,
            },
            ExportSink::Journald { socket } => Sink::Journal {
                socket: socket.clone(),
            },
        }
    }

    /// Hands `batch` over; `Ok` only when the collector has all of it.
    fn write(&mut self, batch: &[Chained], host: &str, replay: bool) -> std::io::Result<()> {
        let rec = |c| Record { c, host, replay };
        match self {
            Sink::File { path, format, open } => {
                let (f, _) = open_file(path, open)?;
                let mut text = String::new();
                for c in batch {
                    let v = match format {
                        FileFormat::Ecs => ecs::ecs(&rec(c)),
                        FileFormat::Ocsf => ocsf::ocsf(&rec(c)),
                    };
                    text += &v.to_string();
                    text.push('\n');
                }
                let r = f.write_all(text.as_bytes()).and_then(|()| f.sync_data());
                if r.is_err() {
                    *open = None;
                }
                r
            }
            Sink::Tcp {
                address,
                pen,
                tls,
                relp,
                stream,
            } => {
                if stream.is_none() {
                    let addr = resolve(address)?;
                    let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                    if let Some(r) = relp.as_mut() {
                        // A new connection is a new session.
                        *r = Relp::default();
                    }
                    s.set_write_timeout(Some(IO_TIMEOUT))?;
                    s.set_read_timeout(Some(IO_TIMEOUT))?;
                    *stream = Some(match tls {
                        None => Stream::Plain(s),
                        Some(Err(e)) => return Err(std::io::Error::other(e.clone())),
                        Some(Ok(cfg)) => {
                            let host = address
                                .rsplit_once(':')
                                .map_or(address.as_str(), |(h, _)| h);
                            let name = rustls_pki_types::ServerName::try_from(
                                host.trim_start_matches('[')
                                    .trim_end_matches(']')
                                    .to_owned(),
                            )
                            .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
                            let conn = rustls::ClientConnection::new(cfg.clone(), name)
                                .map_err(std::io::Error::other)?;
                            let mut t = rustls::StreamOwned::new(conn, s);
                            // The handshake now, so that a refused certificate is this error.
                            while t.conn.is_handshaking() {
                                t.conn.complete_io(&mut t.sock)?;
                            }
                            Stream::Tls(Box::new(t))
                        }
                    });
                }
                let s = stream.as_mut().expect("connected");
                let r = match relp {
                    // Acknowledged, message by message.
                    Some(relp) => {
                        relp.send(s, batch.iter().map(|c| syslog::message(&rec(c), *pen)))
                    }
                    None => {
                        let mut out = String::new();
                        for c in batch {
                            out += &syslog::framed(&syslog::message(&rec(c), *pen));
                        }
                        s.write_all(out.as_bytes()).and_then(|()| s.flush())
                    }
                };
                if r.is_err() {
                    *stream = None;
                }
                r
            }
            Sink::Udp { address, pen } => {
                let addr = resolve(address)?;
                let s = std::net::UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                for c in batch {
                    s.send_to(syslog::message(&rec(c), *pen).as_bytes(), addr)?;
                }
                Ok(())
            }
            Sink::Journal { socket } => {
                let s = std::os::unix::net::UnixDatagram::unbound()?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                for c in batch {
                    s.send_to(&journal::entry(&rec(c)), &*socket)?;
                }
                Ok(())
            }
        }
    }

    /// Where the copy is, if the sink can tell (a file's last whole line).
    fn copied_up_to(&mut self) -> std::io::Result<Option<i64>> {
        let Sink::File { path, open, .. } = self else {
            return Ok(None);
        };
        let (f, _) = open_file(path, open)?;
        let len = f.metadata()?.len();
        // The last line, read from at most the last 1 MiB.
        let start = len.saturating_sub(1 << 20);
        f.seek(std::io::SeekFrom::Start(start))?;
        let mut last_whole = None;
        let mut end_of_whole = start;
        let mut pos = start;
        let mut reader = std::io::BufReader::new(&*f);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            if line.ends_with('\n') {
                end_of_whole = pos;
                if let Some(w) = witness::read_line(line.trim_end()) {
                    last_whole = Some(w.seq);
                }
            }
        }
        if end_of_whole < len {
            // A line cut by a crash: gone, and written again from the cursor.
            f.set_len(end_of_whole)?;
            f.sync_data()?;
        }
        Ok(last_whole)
    }
}

/// The TLS client of a `tls://` syslog export: the collector's certificate is checked against
/// `ca_file` (PEM), or the web PKI's roots without one; with `cert_file` and `key_file`, this
/// monitor shows that certificate to a collector that asks for one.
fn tls_config(tls: &TlsClient) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    // The certificates of a PEM file named by config key `key`: at least one.
    let certificates = |key: &str, p: &Path| {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(p)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{key} {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{key} {}: no certificate in it", p.display()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(p) => {
            let (added, _) = roots.add_parsable_certificates(certificates("ca_file", p)?);
            if added == 0 {
                return Err(format!("ca_file {}: no certificate in it", p.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let cfg = match &tls.identity {
        None => cfg.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("cert_file", cert)?;
            let k = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("key_file {}: {e}", key.display()))?;
            cfg.with_client_auth_cert(chain, k).map_err(|e| {
                format!(
                    "cert_file {} and key_file {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
    };
    Ok(Arc::new(cfg))
}

/// A syslog connection.
enum Stream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl std::io::Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Drop for Sink {
    /// A RELP session ends with `close`, answered, so that the collector sees an orderly end.
    fn drop(&mut self) {
        if let Sink::Tcp {
            relp: Some(relp),
            stream: Some(s),
            ..
        } = self
        {
            if relp.txnr != 0 {
                relp.close(s);
            }
        }
    }
}

/// RELP messages sent before their acknowledgements are awaited.
const RELP_WINDOW: usize = 128;

/// A RELP session ([`relp`]): opened on the first batch of each connection.
#[derive(Default)]
struct Relp {
    /// The next transaction number; 0 before `open`.
    txnr: u32,
    /// What the collector sent that is not read yet.
    unread: Vec<u8>,
}

impl Relp {
    /// Sends `messages`, `Ok` only once the collector acknowledged every one. On an error the
    /// session is over: the next connection opens a new one.
    fn send(
        &mut self,
        s: &mut Stream,
        messages: impl Iterator<Item = String>,
    ) -> std::io::Result<()> {
        let r = self.exchange(s, messages);
        if r.is_err() {
            self.txnr = 0;
        }
        r
    }

    fn exchange(
        &mut self,
        s: &mut Stream,
        messages: impl Iterator<Item = String>,
    ) -> std::io::Result<()> {
        let acked = |a: relp::Answer, t| a.acknowledges(t).map_err(std::io::Error::other);
        if self.txnr == 0 {
            self.unread.clear();
            s.write_all(&relp::frame(1, "open", relp::OFFERS.as_bytes()))?;
            s.flush()?;
            acked(self.answer(s, Instant::now() + IO_TIMEOUT)?, 1)?;
            self.txnr = 2;
        }
        let messages: Vec<String> = messages.collect();
        for window in messages.chunks(RELP_WINDOW) {
            let mut out = Vec::new();
            let mut due = Vec::with_capacity(window.len());
            for m in window {
                out.extend(relp::frame(self.txnr, "syslog", m.as_bytes()));
                due.push(self.txnr);
                self.txnr = relp::next(self.txnr);
            }
            s.write_all(&out)?;
            s.flush()?;
            // The whole window's answers within one timeout: a collector that answers a byte at a
            // time cannot hold a round for a timeout per answer.
            let until = Instant::now() + IO_TIMEOUT;
            for t in due {
                acked(self.answer(s, until)?, t)?;
            }
        }
        Ok(())
    }

    /// Ends the session: `close`, and its answer awaited a moment (best effort: the events are
    /// acknowledged already).
    fn close(&mut self, s: &mut Stream) {
        let txnr = self.txnr;
        self.txnr = 0;
        if s.write_all(&relp::frame(txnr, "close", b""))
            .and_then(|()| s.flush())
            .is_ok()
        {
            let _ = self.answer(s, Instant::now() + Duration::from_secs(1));
        }
    }

    /// The collector's next frame, read by `until`.
    fn answer(&mut self, s: &mut Stream, until: Instant) -> std::io::Result<relp::Answer> {
        use std::io::Read as _;
        loop {
            if let Some(a) = relp::take(&mut self.unread).map_err(std::io::Error::other)? {
                return Ok(a);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no acknowledgement within {IO_TIMEOUT:?}"),
                ));
            }
            if let Stream::Plain(t) = s {
                t.set_read_timeout(Some(left))?;
            }
            let mut piece = [0u8; 4096];
            let n = s.read(&mut piece)?;
            if n == 0 {
                return Err(std::io::Error::other(
                    "the collector closed the connection before it acknowledged",
                ));
            }
            self.unread.extend_from_slice(&piece[..n]);
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Drop for Stream {
    /// A TLS session ends with close_notify, so that the collector sees an orderly end.
    fn drop(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

fn resolve(address: &str) -> std::io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{address}: no address")))
}

/// The file, opened for appending; reopened when the path is another file now (logrotate moved
/// it and created a new one), so rotation needs no signal.
fn open_file<'a>(
    path: &Path,
    open: &'a mut Option<(std::fs::File, u64)>,
) -> std::io::Result<&'a mut (std::fs::File, u64)> {
    let now = std::fs::metadata(path).ok().map(|m| m.ino());
    if open.as_ref().is_some_and(|(_, ino)| Some(*ino) != now) {
        *open = None;
    }
    if open.is_none() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o640)
            .open(path)?;
        let ino = f.metadata()?.ino();
        *open = Some((f, ino));
    }
    Ok(open.as_mut().expect("opened"))
}

/// One export's state between rounds.
struct Exporter {
    cfg: ExportConfig,
    sink: Sink,
    /// The export has its cursor row (written once, at its first round).
    started: bool,
    /// The copy's position was read back from the sink (once per open).
    recovered: bool,
    /// `monitor.export_lagging` was raised for the current backlog.
    lagging: bool,
    /// The last error, said once per streak.
    failing: Option<String>,
}

impl Exporter {
    fn new(cfg: &ExportConfig) -> Exporter {
        Exporter {
            sink: Sink::new(&cfg.sink),
            cfg: cfg.clone(),
            started: false,
            recovered: false,
            lagging: false,
            failing: None,
        }
    }

    /// Hands over what is new; returns how many events went.
    fn round(
        &mut self,
        store: &mut Store,
        routes: &[Route],
        host: &str,
    ) -> Result<usize, StoreError> {
        let name = self.cfg.name.clone();
        if !self.started {
            store.init_export_cursor(&name)?;
            self.started = true;
        }
        let mut cursor = store.export_cursor(&name)?;
        if !self.recovered {
            let stream = !matches!(self.sink, Sink::File { .. });
            let recovered = if stream {
                self.replay(store, host, cursor)?
            } else {
                self.sink.copied_up_to()
            };
            match recovered {
                Ok(Some(seq)) if seq > cursor => {
                    if stream {
                        info!(export = %name, from = cursor + 1, to = seq, "export: a batch the collector may have had before a stop was sent again, marked replay");
                    } else {
                        info!(export = %name, from = cursor, to = seq, "export: the copy is ahead of the cursor (a crash between the two); moving the cursor");
                    }
                    store.set_export_cursor(&name, seq)?;
                    cursor = seq;
                    self.recovered = true;
                }
                Ok(_) => self.recovered = true,
                Err(e) => return self.failed(store, routes, cursor, &e.to_string()),
            }
        }
        let mut sent = 0;
        loop {
            let batch = store.events_after(cursor, BATCH)?;
            let Some(last) = batch.last().map(|c| c.logged.id) else {
                break;
            };
            // A collector that cannot be read back: the batch is marked in flight first, so that
            // a stop before the cursor moves sends it again marked (`replay`), never unmarked.
            if !matches!(self.sink, Sink::File { .. }) {
                store.set_export_inflight(&name, last)?;
            }
            if let Err(e) = self.sink.write(&batch, host, false) {
                self.recovered = false;
                self.failed(store, routes, cursor, &e.to_string())?;
                return Ok(sent);
            }
            store.set_export_cursor(&name, last)?;
            cursor = last;
            sent += batch.len();
            if batch.len() < BATCH {
                break;
            }
        }
        if self.failing.take().is_some() {
            info!(export = %name, "export: the collector takes events again");
        }
        self.lagging = false;
        Ok(sent)
    }

    /// A stream export that stopped in the middle of a batch (its in-flight mark is past the
    /// cursor): the events up to the mark go again, marked `replay`, since the collector may
    /// have had them. `Ok(Some(mark))` once they are handed over.
    fn replay(
        &mut self,
        store: &mut Store,
        host: &str,
        cursor: i64,
    ) -> Result<std::io::Result<Option<i64>>, StoreError> {
        let Some(mark) = store
            .export_inflight(&self.cfg.name)?
            .filter(|&m| m > cursor)
        else {
            return Ok(Ok(None));
        };
        let mut from = cursor;
        while from < mark {
            let mut batch = store.events_after(from, BATCH)?;
            batch.retain(|c| c.logged.id <= mark);
            let Some(last) = batch.last().map(|c| c.logged.id) else {
                break;
            };
            if let Err(e) = self.sink.write(&batch, host, true) {
                return Ok(Err(e));
            }
            from = last;
        }
        Ok(Ok(Some(mark)))
    }

    /// The collector refused: said once per streak, and `monitor.export_lagging` once the backlog
    /// is older than `max_lag`.
    fn failed(
        &mut self,
        store: &mut Store,
        routes: &[Route],
        cursor: i64,
        error: &str,
    ) -> Result<usize, StoreError> {
        let error = sanitize::line(error, 300);
        if self.failing.as_deref() != Some(error.as_str()) {
            warn!(export = %self.cfg.name, error = %error, "export: the collector does not take the events; retrying");
            self.failing = Some(error.clone());
        }
        let (newest, oldest) = store.backlog(cursor)?;
        let age = oldest
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| Utc::now() - t.with_timezone(&Utc))
            .and_then(|d| d.to_std().ok())
            .unwrap_or_default();
        if !self.lagging && age >= self.cfg.max_lag {
            self.lagging = true;
            let mut e = Event::new(
                EventKind::MonitorExportLagging,
                Utc::now(),
                format!(
                    "Export {} is {} event(s) behind: its collector has taken nothing for {}",
                    self.cfg.name,
                    newest - cursor,
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                ),
            );
            e.detail = format!("last error: {error}");
            // Logged and queued as any event (and exported too, once the collector is back).
            store.record_event(routes, e)?;
        }
        Ok(0)
    }
}

/// `check`'s part: each export catches up once (within its collectors' timeouts).
pub fn catch_up(cfg: &Config, store: &mut Store, host: &str) -> Result<(), StoreError> {
    let routes = cfg.routes();
    for x in &cfg.exports {
        Exporter::new(x).round(store, &routes, host)?;
    }
    Ok(())
}

/// `run`'s part: a thread that hands new events to every export as they are logged.
pub fn spawn(cfg: &Config, host: &str) -> anyhow::Result<()> {
    if cfg.exports.is_empty() {
        return Ok(());
    }
    let mut store = Store::open(&cfg.state_dir)?;
    let routes = cfg.routes();
    let host = host.to_owned();
    let mut exporters: Vec<Exporter> = cfg.exports.iter().map(Exporter::new).collect();
    std::thread::Builder::new()
        .name("export".into())
        .spawn(move || loop {
            for x in &mut exporters {
                if let Err(e) = x.round(&mut store, &routes, &host) {
                    warn!(export = %x.cfg.name, error = %e, "export: cannot read the event log");
                }
            }
            std::thread::sleep(POLL);
        })
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("starting the export thread: {e}"))
}
