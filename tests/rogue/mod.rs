//! A backend that misbehaves on purpose, for the fourth attack pass's backend attacks
//! (4, 5, 7 and 8) and for seeing what a client's request became (9): its sockets are
//! bound in a lab backend host's namespace and served by this test process's threads.
//!
//! - [`HTTP_PORT`]: HTTP/1.1, keep-alive. What it answers depends on the path:
//!   `/twice/…` answers twice, a HEAD of `/headbody/…` gets a body (each a moment after
//!   the answer, [`EXTRA_AFTER`]), `/dupcl…` has two
//!   `Content-Length`s (5 and 30), `/clte…` a `Content-Length` and chunked coding,
//!   `/early…` a `103 Early Hints` before its `200`; anything else is answered once with
//!   `answer PATH on connection N` and the request's head (lower-cased names) and
//!   trailers, if any, below it.
//! - [`SINK_PORT`]: accepts and never reads (a backend that stops reading).
//! - [`FLOOD_PORT`]: writes [`FLOOD_BYTES`] to whoever connects, reading nothing, and
//!   counts what the connection took.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const HTTP_PORT: u16 = 8080;
pub const SINK_PORT: u16 = 9001;
pub const FLOOD_PORT: u16 = 9002;
/// What the flood port writes to each connection (attack 5 sent 300 MB).
pub const FLOOD_BYTES: u64 = 300 << 20;
/// How long after a whole answer the rogue sends what follows it (a second answer, a
/// HEAD's body): less than the gap between a client's requests in the tests.
pub const EXTRA_AFTER: Duration = Duration::from_millis(50);
/// How long a sink keeps a connection it never reads.
const SINK_HOLD: Duration = Duration::from_secs(30);

/// One request the HTTP port read: the backend connection it came on, its request line,
/// and its head and trailers as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: u64,
    pub method: String,
    pub path: String,
    pub head: String,
}

/// The running rogue: what it saw and what its floods wrote.
#[derive(Default)]
pub struct Rogue {
    pub seen: Mutex<Vec<Seen>>,
    /// Bytes the flood port's connections took, the largest of any one connection.
    pub flooded_max: AtomicU64,
    conns: AtomicU64,
}

impl Rogue {
    /// Binds the three ports on every address of namespace `ns` and serves them.
    pub fn start(ns: &str) -> Arc<Rogue> {
        let rogue = Arc::new(Rogue::default());
        let listeners = crate::common::net::in_ns(ns, || {
            [HTTP_PORT, SINK_PORT, FLOOD_PORT].map(|p| TcpListener::bind(("0.0.0.0", p)).expect("rogue port binds"))
        });
        let [http, sink, flood] = listeners;
        let r = rogue.clone();
        accept(http, move |s| r.serve_http(s));
        accept(sink, |s| {
            std::thread::sleep(SINK_HOLD);
            drop(s);
        });
        let r = rogue.clone();
        accept(flood, move |s| r.flood(s));
        rogue
    }

    /// The backend connection the last request for `path` came on.
    pub fn conn_of(&self, path: &str) -> Option<u64> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().rev().find(|s| s.path == path).map(|s| s.conn)
    }

    fn flood(&self, mut s: TcpStream) {
        let chunk = vec![b'f'; 64 * 1024];
        let mut sent = 0u64;
        let _ = s.set_write_timeout(Some(Duration::from_secs(20)));
        while sent < FLOOD_BYTES {
            match s.write(&chunk) {
                Ok(n) if n > 0 => sent += n as u64,
                _ => break,
            }
            self.flooded_max.fetch_max(sent, Ordering::Relaxed);
        }
    }

    fn serve_http(&self, mut s: TcpStream) {
        let conn = self.conns.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = Vec::new();
        while let Some(end) = read_until(&mut s, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4)) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let Some(trailers) = read_body(&mut s, &mut buf, &head) else { return };
            let mut line = head.split_whitespace();
            let (method, path) = (line.next().unwrap_or("").to_string(), line.next().unwrap_or("").to_string());
            let head = head.to_ascii_lowercase() + &trailers;
            let seen = Seen { conn, method, path, head };
            let (answer, extra) = answer(&seen);
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
            if s.write_all(&answer).is_err() {
                return;
            }
            // What follows a whole answer comes a moment later, as a read of its own:
            // a proxy that read the answer has put the connection back for reuse.
            if !extra.is_empty() {
                std::thread::sleep(EXTRA_AFTER);
                if s.write_all(&extra).is_err() {
                    return;
                }
            }
        }
    }
}

fn accept(listener: TcpListener, serve: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
}

fn find(b: &[u8], what: &[u8]) -> Option<usize> {
    b.windows(what.len()).position(|w| w == what)
}

/// Reads into `buf` until `complete` finds one whole item in it (and says where); none at
/// end of stream or error.
fn read_until<T>(s: &mut TcpStream, buf: &mut Vec<u8>, complete: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(n) = complete(buf) {
            return Some(n);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads the body `head` announces (a length or chunked coding) off `buf`; the trailers
/// of a chunked body, as text (empty without).
fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> Option<String> {
    let lower = head.to_ascii_lowercase();
    let field = |name: &str| lower.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
    if field("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let (trailers, end) = read_until(s, buf, chunked_end)?;
        let text = String::from_utf8_lossy(&buf[trailers..end]).to_ascii_lowercase();
        buf.drain(..end);
        return Some(text.lines().filter(|l| !l.is_empty()).map(|l| format!("trailer {l}\n")).collect());
    }
    let len: usize = field("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
    read_until(s, buf, |b| (b.len() >= len).then_some(len))?;
    buf.drain(..len);
    Some(String::new())
}

/// Where a chunked body's trailer section starts and where the body ends in `b`, once
/// it has.
fn chunked_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    loop {
        let line = find(&b[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[at..at + line]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at += line + 2;
        if size == 0 {
            let end = if b[at..].starts_with(b"\r\n") { at + 2 } else { at + find(&b[at..], b"\r\n\r\n")? + 4 };
            return Some((at, end));
        }
        if b.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

fn ok(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}", body.len())
}

/// The bytes the rogue writes for one request: its answer, and what it sends after
/// [`EXTRA_AFTER`].
fn answer(seen: &Seen) -> (Vec<u8>, Vec<u8>) {
    let Seen { conn, method, path, head } = seen;
    let mine = format!("answer {path} on connection {conn}\n");
    let (text, extra) = if path.starts_with("/twice/") {
        (ok(&mine), ok(&format!("extra {path} on connection {conn}\n")))
    } else if method == "HEAD" && path.starts_with("/headbody/") {
        let extra = format!("a body for a HEAD on connection {conn}\n");
        (format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", extra.len()), extra)
    } else if path.starts_with("/dupcl") {
        (
            format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\n{:<30}", "thirty bytes"),
            String::new(),
        )
    } else if path.starts_with("/clte") {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        (text.into(), String::new())
    } else if path.starts_with("/early") {
        ("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_string() + &ok(&mine), String::new())
    } else {
        (ok(&(mine + head)), String::new())
    };
    (text.into_bytes(), extra.into_bytes())
}
