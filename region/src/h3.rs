//! HTTP/3 at a QUIC listener, for a connection whose client negotiated ALPN `h3`: each
//! request stream's HTTP/3 (frames and QPACK, by `shiguredo_http3`, sans-IO like the rest
//! of the core) becomes one HTTP/1.1 request toward the backend — checked and given
//! `X-Forwarded-For` by [`crate::http1::with_forwarded_for`], exactly as an HTTPS listener's
//! requests are — and the backend's HTTP/1.1 answer becomes the stream's HTTP/3 response.
//!
//! The session advertises a QPACK dynamic table of zero capacity, so a client's field
//! sections refer to the static table and literals only (Huffman-coded or not); it bounds
//! a field section, a request body and a response head, and answers a request it cannot
//! forward with a status of its own (400, 413, 502) on that stream alone. What breaks
//! the connection's framing (frames on the wrong stream, a second control stream, a
//! malformed SETTINGS) is the library's connection error, which closes that connection
//! and no other.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use shiguredo_http3::{Event, Header, ServerConnection, Settings, VarInt};

use crate::http1::{self, BadResponse, Part, Response};

/// Largest request field section a client may send, bytes (advertised in SETTINGS).
pub const FIELD_SECTION_MAX: u64 = 16 * 1024;
/// Largest request body forwarded, bytes; a larger one is answered 413.
pub const REQUEST_BODY_MAX: usize = 1 << 20;
pub use crate::http1::RESPONSE_HEAD_MAX;
/// Request bytes (fields and bodies arriving, requests waiting for a port) one HTTP/3
/// connection holds before the listener stops reading its request streams; QUIC's flow
/// control (the connection's window) then holds the client back. Above one whole
/// largest request, so one upload always fits.
pub const HELD_MAX: usize = 2 * REQUEST_BODY_MAX;
/// Requests a session holds at once (the listener's streams limit, restated here so the
/// table's bound is this file's own).
pub const REQUESTS_MAX: usize = 128;

/// A stream of the node's own and the bytes it opens with.
pub type StreamStart = (u64, Vec<u8>);

/// Why a session cannot go on: the HTTP/3 error code to close the QUIC connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H3Closed(pub u64);

/// One request stream's exchange.
#[derive(Default)]
struct Exchange {
    /// Pseudo-headers and fields as they arrived, in order.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The header section is whole: a later field section is trailers, and is dropped
    /// (it never becomes request headers at the backend).
    head_done: bool,
    body: Vec<u8>,
    /// The client ended the stream; the request went to `ready` (or was answered).
    ended: bool,
    /// Answered without the backend (a status of the node's own).
    answered: bool,
    /// A HEAD request: its response has no body.
    head_only: bool,
    response: Response,
}

/// One HTTP/3 connection's requests.
pub struct H3Session {
    conn: ServerConnection,
    client: IpAddr,
    exchanges: BTreeMap<u64, Exchange>,
    /// Request streams whose HTTP/1.1 request is ready for the backend.
    ready: VecDeque<(u64, Vec<u8>)>,
    /// Streams the listener must reset toward the client, with the HTTP/3 error code.
    resets: Vec<(u64, u64)>,
}

impl H3Session {
    /// A session for a connection from `client`, its own control and QPACK streams on the
    /// unidirectional streams `uni` (control, encoder, decoder) the listener opened:
    /// returns what each of them carries first.
    pub fn new(client: IpAddr, uni: [u64; 3]) -> Result<(H3Session, [StreamStart; 3]), H3Closed> {
        let mut settings = Settings::new();
        settings.qpack_max_table_capacity = Some(VarInt::from(0u32));
        settings.qpack_blocked_streams = Some(VarInt::from(0u32));
        settings.max_field_section_size = Some(VarInt::from(FIELD_SECTION_MAX as u32));
        let mut conn = ServerConnection::new(settings);
        conn.set_max_received_body_size(REQUEST_BODY_MAX as u64 + 1);
        let init = conn
            .init_h3_streams(uni[0], uni[1], uni[2])
            .map_err(|e| closed(e).err().unwrap_or(H3Closed(ERROR_INTERNAL)))?;
        let first = [
            (init.control_stream_id, init.control_data),
            (init.encoder_stream_id, init.encoder_data),
            (init.decoder_stream_id, init.decoder_data),
        ];
        Ok((H3Session { conn, client, exchanges: BTreeMap::new(), ready: VecDeque::new(), resets: Vec::new() }, first))
    }

    /// Bytes the client sent on a stream (a request stream, or one of its control and
    /// QPACK streams).
    pub fn feed(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), H3Closed> {
        match self.conn.feed_stream(stream, data, fin) {
            Err(shiguredo_http3::Error::StreamError(code)) => {
                self.forget(stream);
                self.resets.push((stream, code.code()));
            }
            other => other.or_else(closed)?,
        }
        while let Some(event) = self.conn.poll_event().or_else(|e| closed(e).map(|()| None))? {
            self.on_event(event);
        }
        debug_assert!(self.exchanges.len() <= REQUESTS_MAX, "the exchange table's bound");
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::HeadersBegin { stream_id } if !self.exchanges.contains_key(&stream_id) => {
                if self.exchanges.len() >= REQUESTS_MAX {
                    self.resets.push((stream_id, ERROR_REQUEST_REJECTED));
                    return;
                }
                self.exchanges.insert(stream_id, Exchange::default());
            }
            Event::Header { stream_id, name, value } => {
                if let Some(x) = self.exchanges.get_mut(&stream_id).filter(|x| !x.head_done) {
                    x.fields.push((name, value));
                }
            }
            Event::HeadersEnd { stream_id } => {
                if let Some(x) = self.exchanges.get_mut(&stream_id) {
                    x.head_done = true;
                }
            }
            Event::Data { stream_id, data } => {
                let Some(x) = self.exchanges.get_mut(&stream_id).filter(|x| !x.answered) else { return };
                if x.body.len() + data.len() > REQUEST_BODY_MAX {
                    self.answer(stream_id, 413);
                } else {
                    x.body.extend_from_slice(&data);
                }
            }
            Event::StreamEnd { stream_id } => self.request_ended(stream_id),
            Event::StreamReset { stream_id, .. } => self.forget(stream_id),
            _ => {}
        }
    }

    /// A request stream the client reset or broke: nothing more of it goes anywhere.
    fn forget(&mut self, stream: u64) {
        self.exchanges.remove(&stream);
        self.ready.retain(|(s, _)| *s != stream);
    }

    /// The client sent its whole request: it goes to the backend, or is answered here.
    fn request_ended(&mut self, stream: u64) {
        let client = self.client;
        let Some(x) = self.exchanges.get_mut(&stream) else { return };
        if x.ended || x.answered {
            return;
        }
        x.ended = true;
        x.head_only = x.fields.iter().any(|(n, v)| n == b":method" && v == b"HEAD");
        match http1::request(&x.fields, &x.body, client, true) {
            Ok(request) => self.ready.push_back((stream, request)),
            Err(status) => self.answer(stream, status),
        }
    }

    /// Answers a request with a status of the node's own and no body.
    fn answer(&mut self, stream: u64, status: u16) {
        if let Some(x) = self.exchanges.get_mut(&stream) {
            x.answered = true;
            x.response.done = true;
        }
        let status = status.to_string();
        let headers = [Header::new(":status", &status), Header::new("content-length", "0")];
        let headers: Vec<Header> = headers.into_iter().flatten().collect();
        let _ = self.conn.send_response(stream, &headers, true);
    }

    /// Request bytes the session holds: fields and bodies still arriving, requests ready
    /// for the backend (each field counted with [`http1::FIELD_OVERHEAD`] for its storage).
    pub fn held(&self) -> usize {
        let arriving: usize =
            self.exchanges.values().filter(|x| !x.ended).map(|x| x.body.len() + http1::field_cost(&x.fields)).sum();
        arriving + self.ready.iter().map(|(_, r)| r.len()).sum::<usize>()
    }

    /// Refuses the request still arriving that holds the most (H3_REQUEST_REJECTED: safe
    /// to retry), when what the connection holds can go nowhere else.
    pub fn refuse_largest_arriving(&mut self) {
        let largest = self
            .exchanges
            .iter()
            .filter(|(_, x)| !x.ended && !x.answered)
            .max_by_key(|(_, x)| x.body.len() + x.fields.len())
            .map(|(id, _)| *id);
        if let Some(id) = largest {
            self.forget(id);
            self.resets.push((id, ERROR_REQUEST_REJECTED));
        }
    }

    /// A request is ready for the backend.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next request ready for the backend: its stream and HTTP/1.1 bytes.
    pub fn take_request(&mut self) -> Option<(u64, Vec<u8>)> {
        self.ready.pop_front()
    }

    /// Bytes of the backend's answer to the request on `stream`, and whether the backend
    /// has closed its side. Whether the answer is whole now and its connection in step and
    /// kept alive (it may carry another request).
    pub fn backend_bytes(&mut self, stream: u64, data: &[u8], closed: bool) -> bool {
        let Some(x) = self.exchanges.get_mut(&stream) else { return false };
        if x.response.done {
            return false;
        }
        let step = x.response.read(data, closed, x.head_only);
        match step {
            Ok(Part { head, body, end }) => {
                if let Some(fields) = head {
                    let headers: Result<Vec<Header>, _> = fields.iter().map(|(n, v)| Header::new(n, v)).collect();
                    let Ok(headers) = headers else {
                        self.answer(stream, 502);
                        return false;
                    };
                    let _ = self.conn.send_response(stream, &headers, false);
                }
                if !body.is_empty() || end {
                    let _ = self.conn.send_body(stream, &body, end);
                }
                if end && let Some(x) = self.exchanges.get_mut(&stream) {
                    x.response.done = true;
                    return !closed && x.response.keeps_alive();
                }
                false
            }
            Err(BadResponse) => {
                let sent_head = x.response.head_read();
                if sent_head {
                    self.forget(stream);
                    self.resets.push((stream, ERROR_INTERNAL));
                } else {
                    self.answer(stream, 502);
                }
                false
            }
        }
    }

    /// What to write on `stream` now (HTTP/3 frames), and whether the stream ends after
    /// it; an exchange whose response has left is forgotten.
    pub fn take_output(&mut self, stream: u64) -> Option<(Vec<u8>, bool)> {
        let out = self.conn.take_stream_data(stream);
        if out.as_ref().is_some_and(|(_, fin)| *fin) {
            self.exchanges.remove(&stream);
        }
        out
    }

    /// Streams to reset toward the client, with the HTTP/3 error code.
    pub fn take_resets(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.resets)
    }

    /// Streams with something to write.
    pub fn writable(&self) -> Vec<u64> {
        self.conn.writable_streams().collect()
    }

    /// Requests held now.
    pub fn requests(&self) -> usize {
        self.exchanges.len()
    }
}

/// An HTTP/3 client's side of one QUIC connection: what the simulator's QUIC clients
/// and `anyedge probe --protocol quic` speak to `h3` listeners (the same library, the
/// client role; a zero-capacity QPACK table, so every field is a literal or the static
/// table's).
pub struct H3Client {
    conn: shiguredo_http3::ClientConnection,
    answers: BTreeMap<u64, H3Answer>,
}

/// A response as the client read it so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct H3Answer {
    pub status: Option<u16>,
    /// Its fields besides `:status`, as sent (lower-case names).
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The stream ended: the response is whole.
    pub ended: bool,
}

impl H3Client {
    /// A client whose control and QPACK streams are the unidirectional streams `uni`
    /// (control, encoder, decoder) it opened: returns what each carries first.
    pub fn new(uni: [u64; 3]) -> Result<(H3Client, [StreamStart; 3]), H3Closed> {
        let mut settings = Settings::new();
        settings.qpack_max_table_capacity = Some(VarInt::from(0u32));
        settings.qpack_blocked_streams = Some(VarInt::from(0u32));
        let mut conn = shiguredo_http3::ClientConnection::new(settings);
        let init = conn
            .init_h3_streams(uni[0], uni[1], uni[2])
            .map_err(|e| closed(e).err().unwrap_or(H3Closed(ERROR_INTERNAL)))?;
        let first = [
            (init.control_stream_id, init.control_data),
            (init.encoder_stream_id, init.encoder_data),
            (init.decoder_stream_id, init.decoder_data),
        ];
        Ok((H3Client { conn, answers: BTreeMap::new() }, first))
    }

    /// A request on the client's next bidirectional stream (0, 4, 8…, as QUIC opens
    /// them): the stream's number and all it carries (the stream ends after them).
    pub fn request(
        &mut self,
        (method, authority, path): (&str, &str, &str),
        fields: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u64, Vec<u8>), H3Closed> {
        let pseudo = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)];
        let headers: Result<Vec<Header>, _> = pseudo.iter().chain(fields).map(|(n, v)| Header::new(n, v)).collect();
        let headers = headers.map_err(|_| H3Closed(ERROR_INTERNAL))?;
        let id = self
            .conn
            .send_request(&headers, body.is_empty())
            .map_err(|e| closed(e).err().unwrap_or(H3Closed(ERROR_INTERNAL)))?;
        if !body.is_empty() {
            self.conn.send_body(id, body, true).map_err(|e| closed(e).err().unwrap_or(H3Closed(ERROR_INTERNAL)))?;
        }
        let mut bytes = Vec::new();
        while let Some((more, fin)) = self.conn.take_stream_data(id) {
            bytes.extend_from_slice(&more);
            if fin || more.is_empty() {
                break;
            }
        }
        self.answers.insert(id, H3Answer::default());
        Ok((id, bytes))
    }

    /// The server's bytes on a stream: a response, or its control and QPACK streams.
    pub fn feed(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), H3Closed> {
        self.conn.feed_stream(stream, data, fin).or_else(closed)?;
        while let Some(event) = self.conn.poll_event().or_else(|e| closed(e).map(|()| None))? {
            match event {
                Event::Header { stream_id, name, value } => {
                    let Some(a) = self.answers.get_mut(&stream_id) else { continue };
                    let (name, value) = (String::from_utf8_lossy(&name), String::from_utf8_lossy(&value));
                    if name == ":status" {
                        a.status = value.parse().ok();
                    } else {
                        a.fields.push((name.into_owned(), value.into_owned()));
                    }
                }
                Event::Data { stream_id, data } => {
                    if let Some(a) = self.answers.get_mut(&stream_id) {
                        a.body.extend_from_slice(&data);
                    }
                }
                Event::StreamEnd { stream_id } => {
                    if let Some(a) = self.answers.get_mut(&stream_id) {
                        a.ended = true;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The response on `stream` so far.
    pub fn answer(&self, stream: u64) -> Option<&H3Answer> {
        self.answers.get(&stream)
    }

    /// The response on `stream`, forgotten here (a whole one, or one given up on).
    pub fn take_answer(&mut self, stream: u64) -> Option<H3Answer> {
        self.answers.remove(&stream)
    }
}

/// H3_REQUEST_REJECTED (RFC 9114 §8.1): not processed, safe to retry.
pub const ERROR_REQUEST_REJECTED: u64 = 0x010b;
/// H3_INTERNAL_ERROR.
pub const ERROR_INTERNAL: u64 = 0x0102;

/// H3_FRAME_ERROR.
const ERROR_FRAME: u64 = 0x0106;
/// QPACK_DECOMPRESSION_FAILED (RFC 9204 §6).
const ERROR_QPACK: u64 = 0x0200;

/// What the library's error means for the connection: nothing (a stream already gone),
/// or its close with an HTTP/3 error code.
fn closed(e: shiguredo_http3::Error) -> Result<(), H3Closed> {
    use shiguredo_http3::Error;
    match e {
        Error::StreamNotFound(_) | Error::StreamClosed(_) => Ok(()),
        Error::ConnectionError(code) | Error::StreamError(code) => Err(H3Closed(code.code())),
        Error::FrameDecode(_) => Err(H3Closed(ERROR_FRAME)),
        Error::Qpack(_) => Err(H3Closed(ERROR_QPACK)),
        _ => Err(H3Closed(ERROR_INTERNAL)),
    }
}

#[cfg(test)]
mod tests {
    //! The session against an HTTP/3 client nobody here wrote: the same library's
    //! `ClientConnection` encodes the requests and decodes the responses.
    use super::*;
    use shiguredo_http3::ClientConnection;

    const CLIENT: &str = "198.18.128.2";

    struct Pair {
        server: H3Session,
        client: ClientConnection,
    }

    /// A response as the client read it: fields (":status" first), body, whether it ended.
    type Read = (Vec<(String, String)>, Vec<u8>, bool);

    impl Pair {
        fn new() -> Pair {
            let (mut server, first) = H3Session::new(CLIENT.parse().unwrap(), [3, 7, 11]).unwrap();
            let mut client = ClientConnection::new(Settings::new());
            let init = client.init_h3_streams(2, 6, 10).unwrap();
            for (id, data) in [
                (init.control_stream_id, init.control_data),
                (init.encoder_stream_id, init.encoder_data),
                (init.decoder_stream_id, init.decoder_data),
            ] {
                server.feed(id, &data, false).unwrap();
            }
            for (id, data) in first {
                client.feed_stream(id, &data, false).unwrap();
            }
            while client.poll_event().unwrap().is_some() {}
            Pair { server, client }
        }

        /// Sends a request; what the backend gets, if the node forwards it.
        fn request(&mut self, fields: &[(&str, &str)], body: &[u8]) -> (u64, Option<Vec<u8>>) {
            let headers: Vec<Header> = fields.iter().map(|(n, v)| Header::new(n, v).unwrap()).collect();
            let id = self.client.send_request(&headers, body.is_empty()).unwrap();
            if !body.is_empty() {
                self.client.send_body(id, body, true).unwrap();
            }
            while let Some((bytes, fin)) = self.client.take_stream_data(id) {
                self.server.feed(id, &bytes, fin).unwrap();
                if fin {
                    break;
                }
            }
            (
                id,
                self.server.take_request().map(|(s, r)| {
                    assert_eq!(s, id);
                    r
                }),
            )
        }

        /// What the client reads of the response on `id` so far.
        fn response(&mut self, id: u64) -> Read {
            while let Some((bytes, fin)) = self.server.take_output(id) {
                self.client.feed_stream(id, &bytes, fin).unwrap();
                if bytes.is_empty() && !fin {
                    break;
                }
            }
            let (mut fields, mut body, mut end) = (Vec::new(), Vec::new(), false);
            while let Some(e) = self.client.poll_event().unwrap() {
                match e {
                    Event::Header { name, value, .. } => {
                        fields.push((String::from_utf8(name).unwrap(), String::from_utf8(value).unwrap()))
                    }
                    Event::Data { data, .. } => body.extend(data),
                    Event::StreamEnd { .. } => end = true,
                    _ => {}
                }
            }
            (fields, body, end)
        }
    }

    fn get(path: &str) -> Vec<(&str, &str)> {
        vec![(":method", "GET"), (":scheme", "https"), (":authority", "example.test"), (":path", path)]
    }

    #[test]
    fn a_get_reaches_the_backend_as_http1_with_the_clients_address_and_its_answer_comes_back() {
        let mut p = Pair::new();
        let mut fields = get("/hello?x=1");
        fields.push(("user-agent", "aioquic"));
        fields.push(("x-forwarded-for", "6.6.6.6"));
        let (id, request) = p.request(&fields, b"");
        let request = String::from_utf8(request.expect("forwarded")).unwrap();
        assert!(request.starts_with("GET /hello?x=1 HTTP/1.1\r\nHost: example.test\r\n"), "{request}");
        assert!(request.contains("user-agent: aioquic\r\n"), "{request}");
        assert!(request.ends_with(&format!("Connection: close\r\nX-Forwarded-For: {CLIENT}\r\n\r\n")), "{request}");
        assert!(!request.contains("6.6.6.6"), "the client's own claim is dropped: {request}");
        p.server.backend_bytes(
            id,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\nX-Backend: b1\r\n\r\nhel",
            false,
        );
        p.server.backend_bytes(id, b"lo", false);
        let (fields, body, end) = p.response(id);
        assert_eq!(fields[0], (":status".into(), "200".into()));
        assert!(fields.contains(&("x-backend".into(), "b1".into())), "{fields:?}");
        assert!(!fields.iter().any(|(n, _)| n == "connection"), "no connection-specific fields in HTTP/3");
        assert_eq!((body.as_slice(), end), (&b"hello"[..], true));
        assert_eq!(p.server.requests(), 0, "an exchange whose response left is forgotten");
    }

    #[test]
    fn a_post_body_goes_with_its_length_and_a_chunked_answer_is_decoded() {
        let mut p = Pair::new();
        let mut fields = get("/up");
        fields[0] = (":method", "POST");
        let (id, request) = p.request(&fields, b"0123456789");
        let request = request.expect("forwarded");
        let text = String::from_utf8_lossy(&request);
        assert!(text.contains("Content-Length: 10\r\n") && text.ends_with("\r\n\r\n0123456789"), "{text}");
        for piece in [
            &b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"[..],
            b"cd\r\n3;x=y\r\nefg\r\n0\r\n",
            b"\r\n",
        ] {
            p.server.backend_bytes(id, piece, false);
        }
        let (fields, body, end) = p.response(id);
        assert_eq!(fields[0], (":status".into(), "201".into()));
        assert!(!fields.iter().any(|(n, _)| n == "transfer-encoding"), "{fields:?}");
        assert_eq!((body.as_slice(), end), (&b"abcdefg"[..], true));
    }

    #[test]
    fn a_body_delimited_by_the_backends_close_ends_with_it_and_head_gets_no_body() {
        let mut p = Pair::new();
        let (id, _) = p.request(&get("/stream"), b"");
        p.server.backend_bytes(id, b"HTTP/1.0 200 OK\r\n\r\nsome", false);
        p.server.backend_bytes(id, b" bytes", true);
        let (_, body, end) = p.response(id);
        assert_eq!((body.as_slice(), end), (&b"some bytes"[..], true));
        let mut head = get("/");
        head[0] = (":method", "HEAD");
        let (id, _) = p.request(&head, b"");
        p.server.backend_bytes(id, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false);
        let (fields, body, end) = p.response(id);
        assert!(fields.contains(&("content-length".into(), "1000".into())) && body.is_empty() && end, "{fields:?}");
    }

    #[test]
    fn what_cannot_be_forwarded_or_passed_back_is_answered_on_its_stream_alone() {
        let mut p = Pair::new();
        // A request body past the bound: 413, and the backend never sees it.
        let mut post = get("/big");
        post[0] = (":method", "POST");
        let (id, request) = p.request(&post, &vec![7u8; REQUEST_BODY_MAX + 1]);
        assert!(request.is_none());
        assert_eq!(p.response(id).0[0], (":status".into(), "413".into()));
        // A backend that does not speak HTTP: 502. A head past its bound: 502.
        let (id, _) = p.request(&get("/a"), b"");
        p.server.backend_bytes(id, b"SSH-2.0-OpenSSH\r\n\r\n", false);
        assert_eq!(p.response(id).0[0], (":status".into(), "502".into()));
        let (id, _) = p.request(&get("/b"), b"");
        p.server.backend_bytes(id, &vec![b'x'; RESPONSE_HEAD_MAX + 1], false);
        assert_eq!(p.response(id).0[0], (":status".into(), "502".into()));
        // A body shorter than its length when the backend closes: the stream is reset.
        let (id, _) = p.request(&get("/c"), b"");
        p.server.backend_bytes(id, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", true);
        assert_eq!(p.server.take_resets(), vec![(id, ERROR_INTERNAL)]);
        // And the connection still serves the next request.
        let (id, request) = p.request(&get("/d"), b"");
        assert!(request.is_some());
        p.server.backend_bytes(id, b"HTTP/1.1 204 No Content\r\n\r\n", false);
        let (fields, _, end) = p.response(id);
        assert_eq!((fields[0].1.as_str(), end), ("204", true));
    }

    #[test]
    fn trailers_stay_off_the_backends_request_headers_and_cookies_are_joined() {
        let mut p = Pair::new();
        let mut fields = get("/t");
        fields.push(("cookie", "a=1"));
        fields.push(("cookie", "b=2"));
        let headers: Vec<Header> = fields.iter().map(|(n, v)| Header::new(n, v).unwrap()).collect();
        let id = p.client.send_request(&headers, false).unwrap();
        // A trailer section and no body: a second HEADERS frame, its QPACK field lines
        // literal names and values (RFC 9204 §4.5.6), after the first.
        let mut section = vec![0x00, 0x00];
        for (name, value) in [("authorization", "Bearer stolen"), ("cookie", "c=3")] {
            let (name, value) = (name.as_bytes(), value.as_bytes());
            match name.len() {
                n if n < 7 => section.push(0x20 | n as u8),
                n => section.extend([0x27, (n - 7) as u8]),
            }
            section.extend(name);
            section.push(value.len() as u8);
            section.extend(value);
        }
        let mut trailer_bytes = vec![0x01, section.len() as u8];
        trailer_bytes.extend(section);
        while let Some((bytes, _)) = p.client.take_stream_data(id) {
            if bytes.is_empty() {
                break;
            }
            p.server.feed(id, &bytes, false).unwrap();
        }
        p.server.feed(id, &trailer_bytes, true).unwrap();
        let (s, request) = p.server.take_request().expect("forwarded");
        let request = String::from_utf8(request).unwrap();
        assert_eq!(s, id);
        assert!(!request.contains("stolen") && !request.contains("c=3"), "trailers are no headers: {request}");
        assert!(request.contains("cookie: a=1; b=2\r\n"), "one cookie field, joined: {request}");
        assert_eq!(request.matches("cookie").count(), 1, "{request}");
    }

    #[test]
    fn frames_that_break_http3_close_the_connection_with_its_error() {
        let mut p = Pair::new();
        // DATA on the client's control stream (RFC 9114 §7.2.1: H3_FRAME_UNEXPECTED).
        let data_frame = [0x00, 0x01, 0x61];
        assert!(p.server.feed(2, &data_frame, false).is_err());
        // A second session: a request stream that opens with SETTINGS.
        let mut q = Pair::new();
        let settings_frame = [0x04, 0x00];
        assert!(q.server.feed(0, &settings_frame, false).is_err());
    }

    #[test]
    fn a_field_section_past_the_bound_is_refused_and_goes_nowhere() {
        // A client that has not read the node's SETTINGS sends a 20 KiB field.
        let (mut server, _) = H3Session::new(CLIENT.parse().unwrap(), [3, 7, 11]).unwrap();
        let mut client = ClientConnection::new(Settings::new());
        let init = client.init_h3_streams(2, 6, 10).unwrap();
        server.feed(init.control_stream_id, &init.control_data, false).unwrap();
        let big = "v".repeat(20 * 1024);
        let fields =
            [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/"), ("x-big", &big)];
        let headers: Vec<Header> = fields.iter().map(|(n, v)| Header::new(n, v).unwrap()).collect();
        let id = client.send_request(&headers, true).unwrap();
        let mut refused = false;
        while let Some((bytes, fin)) = client.take_stream_data(id) {
            refused |= server.feed(id, &bytes, fin).is_err();
            if fin || bytes.is_empty() {
                break;
            }
        }
        let reset = server.take_resets().iter().any(|(s, _)| *s == id);
        assert!(refused || reset, "a field section past {FIELD_SECTION_MAX} bytes is refused");
        assert!(server.take_request().is_none(), "and no request goes to the backend");
    }

    #[test]
    fn our_own_client_speaks_to_the_session_and_reads_the_answer() {
        let (mut server, first) = H3Session::new(CLIENT.parse().unwrap(), [3, 7, 11]).unwrap();
        let (mut client, ours) = H3Client::new([2, 6, 10]).unwrap();
        for (id, data) in ours {
            server.feed(id, &data, false).unwrap();
        }
        for (id, data) in first {
            client.feed(id, &data, false).unwrap();
        }
        let fields = [("x-anyedge-response-bytes", "5")];
        let (id, bytes) = client.request(("POST", "198.18.0.20:4433", "/"), &fields, b"hello").unwrap();
        assert_eq!(id, 0, "the first bidirectional stream");
        server.feed(id, &bytes, true).unwrap();
        let (stream, request) = server.take_request().expect("a whole request");
        let text = String::from_utf8_lossy(&request).into_owned();
        assert!(text.starts_with("POST / HTTP/1.1\r\nHost: 198.18.0.20:4433\r\n"), "{text}");
        assert!(text.contains("x-anyedge-response-bytes: 5\r\n") && text.ends_with("\r\n\r\nhello"), "{text}");
        server.backend_bytes(stream, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nworld", false);
        while let Some((out, fin)) = server.take_output(stream) {
            client.feed(stream, &out, fin).unwrap();
            if fin || out.is_empty() {
                break;
            }
        }
        let answer = client.take_answer(id).unwrap();
        assert_eq!((answer.status, answer.body.as_slice(), answer.ended), (Some(200), &b"world"[..], true));
        assert!(answer.fields.contains(&("content-length".into(), "5".into())), "{:?}", answer.fields);
    }
}
