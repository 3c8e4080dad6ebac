//! The HTTP/1.1 side of the listeners that speak a newer HTTP to clients (HTTP/2 on
//! `https`, HTTP/3 on `quic`): a request's fields as the HTTP/1.1 request a backend gets,
//! checked and given `X-Forwarded-For` by [`with_forwarded_for`] exactly as an
//! HTTP/1.1 client's request is, and the backend's HTTP/1.1 answer read as it arrives
//! (Content-Length, chunked, or until the backend closes) into a status, fields and
//! body bytes for the client's protocol.

use std::net::IpAddr;

/// Longest request head the proxy reads before refusing the connection.
pub const HEAD_MAX: usize = 16 * 1024;

/// A request stream the proxy refuses, with the status it answers before closing: 403
/// for a client the backend's security groups deny, 503 for a request no backend took
/// within the wait, 431
/// for a head past `HEAD_MAX`, 501 for a Transfer-Encoding (bodies pass by
/// Content-Length only), 400 for anything not plainly HTTP/1.x or framed ambiguously
/// (RFC 9112: a bare CR or LF, a folded line, whitespace before a colon, a duplicate or
/// malformed Content-Length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHttp {
    pub status: u16,
}

impl NotHttp {
    pub(crate) const BAD: NotHttp = NotHttp { status: 400 };
    pub(crate) const TOO_LONG: NotHttp = NotHttp { status: 431 };
    pub(crate) const NOT_IMPLEMENTED: NotHttp = NotHttp { status: 501 };
    pub(crate) const TIMEOUT: NotHttp = NotHttp { status: 408 };
    pub(crate) const FORBIDDEN: NotHttp = NotHttp { status: 403 };
    pub(crate) const UNAVAILABLE: NotHttp = NotHttp { status: 503 };

    /// What the proxy sends the client before it closes the connection.
    pub fn response(&self) -> Vec<u8> {
        let reason = match self.status {
            403 => "Forbidden",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Bad Request",
        };
        format!("HTTP/1.1 {} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.status).into_bytes()
    }
}

/// Splits a client's byte stream into requests and rewrites each head (public for the
/// fuzzer: `fuzz/fuzz_targets/http.rs`).
#[derive(Debug, Default)]
pub struct Framer {
    /// Not HTTP (TCP SSL): everything passes through untouched.
    raw: bool,
    head: Vec<u8>,
    /// Body bytes of the current request still to pass through.
    body_left: u64,
}

impl Framer {
    /// A framer for an HTTP listener's stream, or (`raw`) one that passes bytes through.
    pub fn new(raw: bool) -> Framer {
        Framer { raw, ..Framer::default() }
    }

    /// Whether bytes pass through untouched (not HTTP).
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Bytes its head buffer holds.
    pub fn held(&self) -> usize {
        self.head.capacity()
    }

    /// Gives its head buffer back when no head is in it (an idle connection).
    pub fn release_idle(&mut self) {
        if self.head.is_empty() {
            self.head = Vec::new();
        }
    }

    /// Appends what the backend should get to `out`; an error when a head grows past
    /// `HEAD_MAX` or is not HTTP/1.x.
    pub fn feed(&mut self, mut data: &[u8], client: IpAddr, out: &mut Vec<u8>) -> Result<(), NotHttp> {
        if self.raw {
            out.extend_from_slice(data);
            return Ok(());
        }
        while !data.is_empty() {
            if self.body_left > 0 {
                let take = (self.body_left as usize).min(data.len());
                out.extend_from_slice(&data[..take]);
                self.body_left -= take as u64;
                data = &data[take..];
                continue;
            }
            let before = self.head.len();
            self.head.extend_from_slice(data);
            let Some(end) = http_head_end(&self.head) else {
                if self.head.len() > HEAD_MAX {
                    return Err(NotHttp::TOO_LONG);
                }
                return Ok(());
            };
            // However the head arrived (one read or many), it may not be longer.
            if end > HEAD_MAX {
                return Err(NotHttp::TOO_LONG);
            }
            data = &data[end - before..];
            let head = std::mem::take(&mut self.head);
            let (rewritten, body) = with_forwarded_for(&head[..end], client)?;
            out.extend_from_slice(&rewritten);
            self.body_left = body;
        }
        Ok(())
    }
}

/// Headers through which a client could name itself (the ones proxies, CDNs and
/// frameworks read a client's address from): the proxy drops them; the backend learns
/// the client from the proxy's own X-Forwarded-For only.
pub const CLIENT_CLAIMS: [&str; 11] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "client-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-forwarded",
];

/// Whether a `Host` value is an authority as RFC 9110 §7.2 has it: a host (a
/// reg-name, an IPv4 address or a bracketed IPv6 one) and an optional port; empty
/// allowed. No userinfo (`u@x`), spaces, paths or other characters that a backend might
/// read another way.
pub fn plain_authority(value: &str) -> bool {
    let (host_ok, rest) = match value.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((literal, rest)) => (literal.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let end = value.find(':').unwrap_or(value.len());
            let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            (value[..end].bytes().all(reg_name), &value[end..])
        }
    };
    let port_ok = rest.is_empty()
        || rest.strip_prefix(':').is_some_and(|p| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// RFC 9110 token characters (a method, a field name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request target the proxy passes: origin-form (`/path?query`), or `*` for OPTIONS,
/// in visible ASCII only. An absolute-form target (`http://other/`) is for forward
/// proxies, which these listeners are not: a backend might route by its host instead
/// of `Host`'s. No NUL or control byte (some backends end a string at a NUL).
fn plain_target(method: &str, target: &str) -> bool {
    let visible = !target.is_empty() && target.bytes().all(|b| (0x21..=0x7e).contains(&b));
    visible && (target.starts_with('/') || (target == "*" && method == "OPTIONS"))
}

/// A field value without NUL or control bytes (a horizontal tab is whitespace).
fn plain_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Whether an `Upgrade` value asks for HTTP/2 in the clear (`h2c`): the proxy frames
/// HTTP/1.1 only, and a backend that switched would take what follows unframed.
fn asks_h2c(value: &str) -> bool {
    value.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c"))
}

/// A request head as the backend gets it: the client's own X-Forwarded-For, Forwarded
/// and X-Real-IP dropped and the proxy's `X-Forwarded-For: CLIENT` added; with the body
/// length its Content-Length declares. Refused (RFC 9112's strict reading, so the proxy
/// and any backend frame it alike): anything but `METHOD SP TARGET SP HTTP/1.0|1.1`, a
/// target that is not origin-form ([`plain_target`]), a CR or LF not in a CRLF, a NUL or
/// control byte in a value, a folded line, a field name that is not a token
/// (whitespace before the colon), a second `Host`, more than one Content-Length or one
/// that is not digits, `Upgrade: h2c`, and any Transfer-Encoding (501: bodies pass by
/// Content-Length only). Fields whose names have an underscore are dropped, as nginx
/// drops them by default: some backends read `X_Forwarded_For` as `X-Forwarded-For`.
pub fn with_forwarded_for(head: &[u8], client: IpAddr) -> Result<(Vec<u8>, u64), NotHttp> {
    let text = std::str::from_utf8(head).map_err(|_| NotHttp::BAD)?;
    let fields = text.strip_suffix("\r\n\r\n").ok_or(NotHttp::BAD)?;
    let mut lines = fields.split("\r\n");
    let request_line = lines.next().ok_or(NotHttp::BAD)?;
    if request_line.contains(['\r', '\n']) {
        return Err(NotHttp::BAD);
    }
    let parts: Vec<&str> = request_line.split(' ').collect();
    let plain = parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].bytes().all(is_tchar)
        && plain_target(parts[0], parts[1])
        && matches!(parts[2], "HTTP/1.1" | "HTTP/1.0");
    if !plain {
        return Err(NotHttp::BAD);
    }
    let mut out = String::with_capacity(head.len() + 40);
    out.push_str(request_line);
    out.push_str("\r\n");
    let mut length: Option<u64> = None;
    let mut host = false;
    for line in lines {
        if line.contains(['\r', '\n']) || line.starts_with([' ', '\t']) {
            return Err(NotHttp::BAD);
        }
        let (name, value) = line.split_once(':').ok_or(NotHttp::BAD)?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(NotHttp::BAD);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(NotHttp::NOT_IMPLEMENTED);
        }
        let is_host = name.eq_ignore_ascii_case("host");
        let second_host = is_host && std::mem::replace(&mut host, true);
        let h2c = name.eq_ignore_ascii_case("upgrade") && asks_h2c(value);
        if !plain_value(value) || second_host || h2c || (is_host && !plain_authority(value)) {
            return Err(NotHttp::BAD);
        }
        if name.eq_ignore_ascii_case("content-length") {
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            if length.is_some() || !digits {
                return Err(NotHttp::BAD);
            }
            length = Some(value.parse().map_err(|_| NotHttp::BAD)?);
        }
        if name.contains('_') || CLIENT_CLAIMS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("X-Forwarded-For: {client}\r\n\r\n"));
    Ok((out.into_bytes(), length.unwrap_or(0)))
}

/// Whether bytes open an HTTP request (rather than the plain request protocol).
pub fn looks_like_http(start: &[u8]) -> bool {
    [&b"GET "[..], b"HEAD", b"POST", b"PUT ", b"DELE", b"OPTI", b"PATC"].iter().any(|m| start.starts_with(m))
}

/// Where an HTTP head ends (just past the blank line), if it has.
pub fn http_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A header's value in an HTTP head (first occurrence, case-insensitive name).
pub fn http_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What one stored request field costs beyond its name and value (two vectors and
/// their allocations), counted in what HTTP/2 and HTTP/3 sessions hold.
pub const FIELD_OVERHEAD: usize = 80;

/// What a request's stored fields cost: their bytes and [`FIELD_OVERHEAD`] each.
pub fn field_cost(fields: &[(Vec<u8>, Vec<u8>)]) -> usize {
    fields.iter().map(|(n, v)| n.len() + v.len() + FIELD_OVERHEAD).sum()
}

/// Largest response head read from a backend, bytes; a larger one is answered 502.
pub const RESPONSE_HEAD_MAX: usize = 16 * 1024;

/// A response field (name lower-case; `:status` first).
pub type Field = (String, String);

/// A backend's HTTP/1.1 answer, read as it arrives.
#[derive(Debug, Default)]
pub struct Response {
    head: Vec<u8>,
    /// The head is read and sent; how the body is framed.
    body: Option<Body>,
    /// The whole response has been read.
    pub done: bool,
    /// The backend keeps its connection open after this response (HTTP/1.1 without
    /// `Connection: close`, a body framed by its length or chunks).
    keeps_alive: bool,
    /// Bytes came after the response's end (a second answer, a HEAD's body): dropped,
    /// and the connection is not used again, so they never reach another request.
    overran: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// Until the backend closes.
    UntilClose,
    /// This many bytes more.
    Length(u64),
    /// Chunked: bytes not yet decoded, and how many of the current chunk remain (None:
    /// a size line is next).
    Chunked { pending: Vec<u8>, left: Option<u64> },
}

/// An HTTP/2 or HTTP/3 request (its pseudo-headers and fields as they arrived) as the
/// HTTP/1.1 request a backend gets (origin-form target, `Host` from `:authority`, the
/// body by Content-Length; `close`: with `Connection: close`, else kept alive), checked
/// and given X-Forwarded-For by the HTTPS listener's own rule; or the status to answer it
/// with.
pub fn request(fields: &[(Vec<u8>, Vec<u8>)], body: &[u8], client: IpAddr, close: bool) -> Result<Vec<u8>, u16> {
    let pseudo = |name: &[u8]| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let text = |v: &[u8]| std::str::from_utf8(v).map(str::to_string).map_err(|_| 400u16);
    let method = text(pseudo(b":method").ok_or(400u16)?)?;
    let path = text(pseudo(b":path").ok_or(400u16)?)?;
    let authority = pseudo(b":authority").map(text).transpose()?;
    if method == "CONNECT" {
        return Err(405);
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(a) = authority {
        head.push_str(&format!("Host: {a}\r\n"));
    }
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in fields.iter().filter(|(n, _)| !n.starts_with(b":")) {
        let (name, value) = (text(name)?, text(value)?);
        // HTTP/2 and HTTP/3 may split a cookie into fields of their own; HTTP/1.1 gets
        // them joined into one (RFC 9113 §8.2.3, RFC 9114 §4.2.1).
        if name == "cookie" {
            cookies.push(value);
            continue;
        }
        // Connection-specific fields are not HTTP/2's or HTTP/3's (RFC 9113 §8.2.2, RFC
        // 9114 §4.2); the body's length is the one this request carries, and it is sent
        // whole (no `Expect: 100-continue` wait).
        let hop = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "expect"];
        if name == "content-length" || (name == "host" && head.contains("\r\nHost: ")) || hop.contains(&name.as_str()) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !cookies.is_empty() {
        head.push_str(&format!("cookie: {}\r\n", cookies.join("; ")));
    }
    if !body.is_empty() || !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str(if close { "Connection: close\r\n\r\n" } else { "\r\n" });
    let (mut request, length) = with_forwarded_for(head.as_bytes(), client).map_err(|e: NotHttp| e.status)?;
    debug_assert_eq!(length, body.len() as u64, "the Content-Length written is the body's");
    request.extend_from_slice(body);
    Ok(request)
}

/// What a backend's bytes made of the response so far.
pub struct Part {
    /// The response's fields, once the head is whole.
    pub head: Option<Vec<Field>>,
    /// Body bytes decoded.
    pub body: Vec<u8>,
    /// The response is complete.
    pub end: bool,
}

/// A backend's answer that is not HTTP/1.1 a proxy can pass on.
pub struct BadResponse;

impl Response {
    /// Whether the backend's connection can carry the next request once this response
    /// is done.
    pub fn keeps_alive(&self) -> bool {
        self.done && self.keeps_alive && !self.overran
    }

    /// Whether the head has been read (and passed on).
    pub fn head_read(&self) -> bool {
        self.body.is_some()
    }

    /// Reads `data` (and the backend's close): the head once whole, then the body.
    /// `head_only`: the request was HEAD, so no body follows whatever the head says.
    pub fn read(&mut self, data: &[u8], closed: bool, head_only: bool) -> Result<Part, BadResponse> {
        if self.body.is_some() {
            return self.read_body(data, closed);
        }
        self.head.extend_from_slice(data);
        let end = loop {
            let Some(end) = http_head_end(&self.head) else {
                let none = Part { head: None, body: Vec::new(), end: false };
                return if self.head.len() > RESPONSE_HEAD_MAX || closed { Err(BadResponse) } else { Ok(none) };
            };
            // An interim response (100 Continue, 103 Early Hints) is dropped: the final
            // one follows on the same connection (RFC 9110 §15.2).
            if !interim(&self.head[..end])? {
                break end;
            }
            self.head.drain(..end);
        };
        let (headers, body, keeps_alive) = response_head(&self.head[..end])?;
        self.keeps_alive = keeps_alive && body != Body::UntilClose;
        let tail = self.head.split_off(end);
        self.body = Some(if head_only { Body::Length(0) } else { body });
        // A HEAD's answer has no body, whatever its head says: bytes after it overran.
        self.overran |= head_only && !tail.is_empty();
        let tail = if head_only { Vec::new() } else { tail };
        let mut step = self.read_body(&tail, closed)?;
        step.head = Some(headers);
        Ok(step)
    }

    fn read_body(&mut self, data: &[u8], closed: bool) -> Result<Part, BadResponse> {
        let mut step = Part { head: None, body: Vec::new(), end: false };
        match self.body.as_mut().ok_or(BadResponse)? {
            Body::UntilClose => {
                step.body.extend_from_slice(data);
                step.end = closed;
            }
            Body::Length(left) => {
                let take = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                step.body.extend_from_slice(&data[..take]);
                *left -= take as u64;
                step.end = *left == 0;
                self.overran |= take < data.len();
                if closed && !step.end {
                    return Err(BadResponse);
                }
            }
            Body::Chunked { pending, left } => {
                pending.extend_from_slice(data);
                let end = dechunk(pending, left, &mut step.body)?;
                self.overran |= end.is_some_and(|rest| rest > 0);
                step.end = end.is_some();
                if closed && !step.end {
                    return Err(BadResponse);
                }
            }
        }
        self.done |= step.end;
        Ok(step)
    }
}

/// Decodes what `pending` holds of a chunked body into `out`; once the last chunk and
/// its trailers (read and dropped) have come, how many bytes followed them.
fn dechunk(pending: &mut Vec<u8>, left: &mut Option<u64>, out: &mut Vec<u8>) -> Result<Option<usize>, BadResponse> {
    loop {
        match *left {
            Some(0) => {
                // A chunk's CRLF.
                if pending.len() < 2 {
                    return Ok(None);
                }
                if &pending[..2] != b"\r\n" {
                    return Err(BadResponse);
                }
                pending.drain(..2);
                *left = None;
            }
            Some(n) => {
                let take = pending.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                out.extend(pending.drain(..take));
                *left = Some(n - take as u64);
                if take == 0 {
                    return Ok(None);
                }
            }
            None => {
                let Some(eol) = pending.windows(2).position(|w| w == b"\r\n") else {
                    return if pending.len() > 64 { Err(BadResponse) } else { Ok(None) };
                };
                let line = std::str::from_utf8(&pending[..eol]).map_err(|_| BadResponse)?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16).map_err(|_| BadResponse)?;
                if size == 0 {
                    // The last chunk, then trailers (dropped) up to a blank line.
                    let rest = &pending[eol + 2..];
                    let trailers_end = if rest.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        rest.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
                    };
                    return match trailers_end {
                        Some(end) => Ok(Some(rest.len() - end)),
                        None if rest.len() > RESPONSE_HEAD_MAX => Err(BadResponse),
                        None => Ok(None),
                    };
                }
                pending.drain(..eol + 2);
                *left = Some(size);
            }
        }
    }
}

/// Whether a response head is an interim (1xx) one to drop; 101 Switching Protocols, an
/// upgrade no request here asked for, is refused.
fn interim(head: &[u8]) -> Result<bool, BadResponse> {
    if !head.starts_with(b"HTTP/1.") {
        return Ok(false);
    }
    let code = head.get(9..12).and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(101) => Err(BadResponse),
        Some(100..=199) => Ok(true),
        _ => Ok(false),
    }
}

/// A response head's status and fields as HTTP/2 and HTTP/3 send them (lower-case names,
/// no connection-specific fields), how its body is framed, and whether the backend keeps
/// the connection open after it (RFC 9112 §9.3).
fn response_head(head: &[u8]) -> Result<(Vec<Field>, Body, bool), BadResponse> {
    let text = std::str::from_utf8(head).map_err(|_| BadResponse)?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let status_line = lines.next().ok_or(BadResponse)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(BadResponse)?;
    let status = parts.next().ok_or(BadResponse)?;
    let code: u16 = status.parse().map_err(|_| BadResponse)?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || !(200..=599).contains(&code) || status.len() != 3 {
        return Err(BadResponse);
    }
    let mut length: Option<u64> = None;
    let mut headers = vec![(":status".to_string(), status.to_string())];
    let mut body = Body::UntilClose;
    let mut keeps_alive = version == "HTTP/1.1";
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(BadResponse)?;
        let (name, value) = (name.to_ascii_lowercase(), value.trim());
        match name.as_str() {
            // Framing a proxy could read two ways is refused (RFC 9112 §6.3): chunked
            // twice, chunked with a Content-Length, or two Content-Lengths that differ
            // (the same one twice is passed on once).
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") && body == Body::UntilClose => {
                body = Body::Chunked { pending: Vec::new(), left: None };
                continue;
            }
            "transfer-encoding" => return Err(BadResponse),
            "content-length" => {
                let n: u64 = value.parse().map_err(|_| BadResponse)?;
                match (&body, length) {
                    (Body::Chunked { .. }, _) => return Err(BadResponse),
                    (_, Some(m)) if m != n => return Err(BadResponse),
                    (_, Some(_)) => continue,
                    _ => {}
                }
                length = Some(n);
                body = Body::Length(n);
            }
            "connection" => {
                let says = |word: &str| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(word));
                keeps_alive = if keeps_alive { !says("close") } else { says("keep-alive") };
                continue;
            }
            "keep-alive" | "proxy-connection" | "upgrade" | "te" => continue,
            _ => {}
        }
        headers.push((name, value.to_string()));
    }
    if code == 204 || code == 304 {
        body = Body::Length(0);
    }
    Ok((headers, body, keeps_alive))
}

/// Adds an `Alt-Svc` field to the first final answer a backend sends on an HTTP/1.1
/// connection (interim 1xx heads pass as they are; an answer with its own field keeps
/// it): one is all a client needs to learn the alternative, and everything after passes
/// untouched. Holds at most [`RESPONSE_HEAD_MAX`] bytes; a head longer, or bytes that
/// are no HTTP/1.x answer, pass as they came.
#[derive(Debug)]
pub struct AltSvcOnce {
    value: std::sync::Arc<str>,
    head: Vec<u8>,
    done: bool,
}

impl AltSvcOnce {
    pub fn new(value: std::sync::Arc<str>) -> AltSvcOnce {
        AltSvcOnce { value, head: Vec::new(), done: false }
    }

    /// Whether the field is in (or will never be): the rest passes untouched.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Bytes held until the first final head is whole.
    pub fn held(&self) -> usize {
        self.head.len()
    }

    /// Passes the backend's `data` on into `out`, the field added to the first final head.
    pub fn pass(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            out.extend_from_slice(data);
            return;
        }
        self.head.extend_from_slice(data);
        while let Some(end) = http_head_end(&self.head) {
            if interim(&self.head[..end]).unwrap_or(false) {
                out.extend(self.head.drain(..end));
                continue;
            }
            let head = &self.head[..end];
            let own = head.split(|&b| b == b'\n').any(|l| l.len() > 8 && l[..8].eq_ignore_ascii_case(b"alt-svc:"));
            if head.starts_with(b"HTTP/1.") && !own {
                out.extend_from_slice(&head[..end - 2]);
                out.extend_from_slice(format!("Alt-Svc: {}\r\n\r\n", self.value).as_bytes());
                out.extend_from_slice(&self.head[end..]);
            } else {
                out.extend_from_slice(&self.head);
            }
            self.finish();
            return;
        }
        let http = self.head.iter().zip(b"HTTP/1.").all(|(a, b)| a == b);
        if self.head.len() > RESPONSE_HEAD_MAX || !http {
            out.append(&mut self.head);
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.head = Vec::new();
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(pieces: &[&[u8]]) -> String {
        let mut alt = AltSvcOnce::new("h3=\":443\"; ma=86400".into());
        let mut out = Vec::new();
        for p in pieces {
            alt.pass(p, &mut out);
        }
        assert!(alt.done(), "done after {pieces:?}");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_first_final_answer_gets_alt_svc_and_the_rest_passes_untouched() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let want = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAlt-Svc: h3=\":443\"; ma=86400\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(passed(&[answer]), want);
        // Split anywhere, even inside the blank line, it comes out the same.
        for at in 1..answer.len() {
            assert_eq!(passed(&[&answer[..at], &answer[at..]]), want, "split at {at}");
        }
    }

    #[test]
    fn an_interim_answer_passes_first_and_a_backends_own_alt_svc_or_no_http_is_left_alone() {
        let early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let got = passed(&[early]);
        assert!(got.starts_with("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204"), "{got}");
        assert!(got.ends_with("\r\nAlt-Svc: h3=\":443\"; ma=86400\r\n\r\n"), "{got}");
        let own = b"HTTP/1.1 200 OK\r\nalt-svc: clear\r\n\r\n";
        assert_eq!(passed(&[own]).as_bytes(), own);
        let junk = b"SSH-2.0-OpenSSH\r\n";
        assert_eq!(passed(&[junk]).as_bytes(), junk);
        let endless = vec![b'a'; RESPONSE_HEAD_MAX + 1];
        let head = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &endless].concat();
        assert_eq!(passed(&[&head]).as_bytes(), head.as_slice(), "a head past the bound passes as it came");
    }

    #[test]
    fn a_host_that_is_no_authority_is_refused_and_every_client_address_claim_is_dropped() {
        let client: IpAddr = "198.18.128.2".parse().unwrap();
        let head = |host: &str, extra: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
        for bad in ["a b", "u@x", "a b@evil/x", "x/y", "[::1", "[zz]:80", "x:80a", "x:123456"] {
            assert_eq!(with_forwarded_for(head(bad, "").as_bytes(), client).err(), Some(NotHttp::BAD), "Host: {bad}");
        }
        for good in
            ["example.test", "example.test:8443", "198.18.0.20", "[fd00:a::20]:443", "xn--bcher-kva.example", ""]
        {
            assert!(with_forwarded_for(head(good, "").as_bytes(), client).is_ok(), "Host: {good}");
        }
        let claims = "True-Client-IP: 6.6.6.6\r\nX-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\n\
            X-Cluster-Client-IP: 6.6.6.6\r\nClient-IP: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n";
        let (out, _) = with_forwarded_for(head("example.test", claims).as_bytes(), client).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("6.6.6.6"), "{out}");
        assert!(out.ends_with("X-Forwarded-For: 198.18.128.2\r\n\r\n"), "{out}");
    }

    #[test]
    fn the_client_is_named_by_the_proxy_alone_whatever_it_claims() {
        let client: IpAddr = "198.18.66.7".parse().unwrap();
        let (out, body) = with_forwarded_for(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", client).unwrap();
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.18.66.7\r\n\r\n");
        assert_eq!(body, 0);
        let claims = b"POST /a HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\nforwarded: for=6.6.6.6\r\n\
X-Real-IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nx_real_ip: 6.6.6.6\r\nContent-Length: 5\r\n\r\n";
        let (out, body) = with_forwarded_for(claims, client).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "POST /a HTTP/1.1\r\nContent-Length: 5\r\nX-Forwarded-For: 198.18.66.7\r\n\r\n");
        assert_eq!(body, 5);
    }

    #[test]
    fn ambiguous_or_smuggling_heads_are_refused_with_400_and_transfer_encoding_with_501() {
        let client: IpAddr = "198.18.66.7".parse().unwrap();
        let status = |head: &[u8]| with_forwarded_for(head, client).err().map(|e| e.status);
        for (head, why) in [
            (&b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..], "conflicting lengths"),
            (b"GET / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", "a duplicate length"),
            (b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "a signed length"),
            (b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", "a list for a length"),
            (b"GET / HTTP/1.1\r\nContent-Length: lots\r\n\r\n", "no number"),
            (b"GET / HTTP/1.1\r\nHost: x\nX-Smuggled: y\r\n\r\n", "a bare LF"),
            (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", "a bare CR"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "a folded line"),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "whitespace before the colon"),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "a line without a field"),
            (b"GET  / HTTP/1.1\r\n\r\n", "two spaces in the request line"),
            (b"GET / HTTP/2.0\r\n\r\n", "not HTTP/1.x"),
            (b"SSH-2.0-x\r\n\r\n", "not HTTP"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
            (b"GET / HTTP/1.1\r\nhost: a\r\nHOST: a\r\n\r\n", "the same Host twice"),
            (b"GET http://other/ HTTP/1.1\r\nHost: a\r\n\r\n", "an absolute-form target"),
            (b"CONNECT other:443 HTTP/1.1\r\nHost: a\r\n\r\n", "an authority-form target"),
            (b"GET * HTTP/1.1\r\n\r\n", "an asterisk for another method than OPTIONS"),
            (b"GET /a\x00b HTTP/1.1\r\n\r\n", "a NUL in the target"),
            (b"GET /a\x7f HTTP/1.1\r\n\r\n", "DEL in the target"),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", "a raw non-ASCII byte in the target"),
            (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "a NUL in a value"),
            (b"GET / HTTP/1.1\r\nX-A: a\x1bb\r\n\r\n", "a control byte in a value"),
            (b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", "an upgrade to h2c"),
            (b"GET / HTTP/1.1\r\nUpgrade: websocket, H2C\r\n\r\n", "h2c among upgrades"),
        ] {
            assert_eq!(status(head), Some(400), "{why}");
        }
        assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(501));
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 0005\r\n\r\n"), None, "leading zeros are digits");
        assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), None, "OPTIONS * is a request");
        assert_eq!(status(b"GET /%C3%A9?q=1 HTTP/1.1\r\nX-A: \tcaf\xc3\xa9\r\n\r\n"), None, "escapes, a tab, UTF-8");
        // In a stream, the refused request reaches the backend not at all, the one before
        // it whole.
        let mut f = Framer::new(false);
        let mut out = Vec::new();
        let stream = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc";
        assert_eq!(f.feed(stream, client, &mut out), Err(NotHttp { status: 400 }));
        assert_eq!(out, b"GET /1 HTTP/1.1\r\nX-Forwarded-For: 198.18.66.7\r\n\r\n");
        assert!(NotHttp { status: 400 }.response().starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn the_framer_rewrites_every_request_of_a_kept_alive_connection() {
        let client: IpAddr = "fd00:66::7".parse().unwrap();
        let mut f = Framer::default();
        let mut out = Vec::new();
        let stream = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\n\r\n";
        // Fed in awkward pieces, as TCP may deliver it.
        for chunk in stream.chunks(7) {
            f.feed(chunk, client, &mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("X-Forwarded-For: fd00:66::7").count(), 2, "{text}");
        assert!(text.contains("\r\n\r\nabcGET /2"), "the body passes untouched: {text}");
        let mut f = Framer::default();
        assert!(f.feed(&vec![b'a'; HEAD_MAX + 10], client, &mut Vec::new()).is_err());
    }

    /// Found by the `http` fuzz target (fuzz/corpus/http/finding-long-head-in-one-read):
    /// a head longer than `HEAD_MAX` was refused when it came in pieces but passed when
    /// one read held all of it.
    #[test]
    fn a_head_longer_than_head_max_is_refused_however_it_arrives() {
        let client: IpAddr = "198.18.64.7".parse().unwrap();
        let mut stream = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        stream.resize(HEAD_MAX + 100, b'a');
        stream.extend_from_slice(b"\r\n\r\n");
        for chunk in [stream.len(), 200] {
            let mut f = Framer::new(false);
            let fed = stream.chunks(chunk).try_for_each(|c| f.feed(c, client, &mut Vec::new()));
            assert!(fed.is_err(), "a {}-byte head read {chunk} bytes at a time", stream.len());
        }
        // One at the limit passes either way.
        let mut at_limit = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        at_limit.resize(HEAD_MAX - 4, b'a');
        at_limit.extend_from_slice(b"\r\n\r\n");
        for chunk in [at_limit.len(), 200] {
            let mut f = Framer::new(false);
            assert!(at_limit.chunks(chunk).try_for_each(|c| f.feed(c, client, &mut Vec::new())).is_ok());
        }
    }
}
