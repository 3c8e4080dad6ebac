//! The HTTP/1.1 side of the listeners that speak a newer HTTP to clients (HTTP/2 on
//! `https`, HTTP/3 on `quic`): a request's fields as the HTTP/1.1 request a backend gets,
//! checked and given `X-Forwarded-For` by [`crate::l7::with_forwarded_for`] exactly as an
//! HTTP/1.1 client's request is, and the backend's HTTP/1.1 answer read as it arrives
//! (Content-Length, chunked, or until the backend closes) into a status, fields and
//! body bytes for the client's protocol.

use std::net::IpAddr;

use crate::l7::{NotHttp, http_head_end, with_forwarded_for};

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
        while let Some(end) = crate::l7::http_head_end(&self.head) {
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
}
