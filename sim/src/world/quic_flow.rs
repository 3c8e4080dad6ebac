//! The QUIC side of a client's flow, apart from the world that moves its datagrams: a
//! quinn-proto connection, a stream per request, HTTP/3 when the listener offers `h3`.
//! It imports nothing from the rest of the world but a flow's types and the typed ids.

use crate::app;
use crate::world::flows::Progress;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// The QUIC side of one flow: a connection carrying requests, one stream each.
pub(super) struct QuicFlow {
    pub(super) host: anyedge_region::quic::QuicHost,
    pub(super) conn: Option<quinn_proto::ConnectionHandle>,
    pub(super) connected: bool,
    /// Issue times of requests not yet answered; the front one is on a stream.
    pub(super) pending: VecDeque<u64>,
    pub(super) stream: Option<quinn_proto::StreamId>,
    pub(super) to_send: Vec<u8>,
    pub(super) got: u64,
    pub(super) head: Vec<u8>,
    pub(super) poll_at: Option<u64>,
    pub(super) progress: Progress,
    /// HTTP/3 on this connection, once connected to an `h3` listener.
    h3: Option<H3>,
}

/// A flow's HTTP/3: the client, bytes its own unidirectional streams still have to
/// write, and the server's unidirectional streams it reads.
struct H3 {
    client: anyedge_region::h3::H3Client,
    uni_out: Vec<(quinn_proto::StreamId, Vec<u8>)>,
    server_uni: Vec<quinn_proto::StreamId>,
}

impl H3 {
    /// HTTP/3 on a connection just established: its three unidirectional streams opened.
    fn start(conn: &mut quinn_proto::Connection) -> Option<H3> {
        let uni: Option<Vec<quinn_proto::StreamId>> =
            (0..3).map(|_| conn.streams().open(quinn_proto::Dir::Uni)).collect();
        let uni = uni?;
        let (client, first) = anyedge_region::h3::H3Client::new([uni[0].into(), uni[1].into(), uni[2].into()]).ok()?;
        let uni_out = uni.into_iter().zip(first).map(|(id, (_, bytes))| (id, bytes)).collect();
        Some(H3 { client, uni_out, server_uni: Vec::new() })
    }

    /// Writes what its own streams still hold; reads the server's.
    fn pump(&mut self, conn: &mut quinn_proto::Connection) {
        for (id, bytes) in &mut self.uni_out {
            let n = conn.send_stream(*id).write(bytes).unwrap_or(0);
            bytes.drain(..n);
        }
        self.uni_out.retain(|(_, b)| !b.is_empty());
        while let Some(id) = conn.streams().accept(quinn_proto::Dir::Uni) {
            self.server_uni.push(id);
        }
        for &id in &self.server_uni {
            let (data, fin) = read_stream(conn, id);
            if !data.is_empty() || fin {
                let _ = self.client.feed(id.into(), &data, fin);
            }
        }
    }
}

/// Writes what a request stream still has to send, and finishes it once all has gone.
fn send_rest(conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId, to_send: &mut Vec<u8>) {
    if to_send.is_empty() {
        return;
    }
    let n = conn.send_stream(id).write(to_send).unwrap_or(0);
    to_send.drain(..n);
    if to_send.is_empty() {
        let _ = conn.send_stream(id).finish();
    }
}

/// What a stream holds to read now, and whether its end came (the listener's reader).
fn read_stream(conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId) -> (Vec<u8>, bool) {
    let (data, fin, _) = anyedge_region::quic_listener::read_all(conn, id);
    (data, fin)
}

impl QuicFlow {
    /// Takes the connection's events: connected, or lost (the request in progress
    /// starts again on a new connection).
    pub(super) fn take_events(&mut self) {
        for (ch, event) in self.host.take_events() {
            // A connection the flow gave up on may still report its end.
            if Some(ch) != self.conn {
                continue;
            }
            match event {
                quinn_proto::Event::Connected => self.connected = true,
                quinn_proto::Event::ConnectionLost { .. } => {
                    self.conn = None;
                    self.forget_connection();
                }
                _ => {}
            }
        }
    }

    /// What the flow held of its connection gone: the stream in progress, its bytes and
    /// its HTTP/3 (the next service connects again).
    fn forget_connection(&mut self) {
        self.connected = false;
        self.stream = None;
        self.to_send.clear();
        self.got = 0;
        self.head.clear();
        self.h3 = None;
    }

    /// A connection silent too long while a request waited is closed (see
    /// [`Progress`]): that request counts as lost and the next service connects again.
    pub(super) fn give_up_if_silent(&mut self, now: u64) {
        if !self.progress.gone_silent(!self.pending.is_empty(), now) {
            return;
        }
        if let Some(ch) = self.conn.take() {
            self.host.close(ch, now, b"no answer");
        }
        self.forget_connection();
        self.pending.pop_front();
        self.progress.made(now);
    }

    /// On a connected flow: opens a stream for the next request, writes it, reads its
    /// answer; the request's issue time and the backend that answered once it is whole.
    /// `h3`: toward a listener that speaks HTTP/3 (at `authority`).
    pub(super) fn exchange(
        &mut self,
        (request, response): (u32, u32),
        h3: Option<&str>,
    ) -> Option<(u64, Option<SocketAddr>)> {
        let conn = self.conn.filter(|_| self.connected).and_then(|ch| self.host.conn(ch))?;
        if let Some(authority) = h3 {
            if self.h3.is_none() {
                self.h3 = H3::start(conn);
            }
            return self.exchange_h3(authority, (request, response));
        }
        if self.stream.is_none() && !self.pending.is_empty() {
            self.stream = conn.streams().open(quinn_proto::Dir::Bi);
            self.to_send = app::tcp_request(request, response);
            self.got = 0;
            self.head.clear();
        }
        let id = self.stream?;
        send_rest(conn, id, &mut self.to_send);
        if let Ok(mut chunks) = conn.recv_stream(id).read(true) {
            while let Ok(Some(chunk)) = chunks.next(64 * 1024) {
                let want = app::ID_LEN.saturating_sub(self.head.len()).min(chunk.bytes.len());
                self.head.extend_from_slice(&chunk.bytes[..want]);
                self.got += chunk.bytes.len() as u64;
            }
            let _ = chunks.finalize();
        }
        if self.got < u64::from(response.max(app::ID_LEN as u32)) {
            return None;
        }
        let backend = app::parse_identity(&self.head).map(|(b, _)| b);
        self.stream = None;
        Some((self.pending.pop_front()?, backend))
    }

    /// The same over HTTP/3: a POST of `request` body bytes asking for `response`.
    fn exchange_h3(&mut self, authority: &str, (request, response): (u32, u32)) -> Option<(u64, Option<SocketAddr>)> {
        let conn = self.conn.and_then(|ch| self.host.conn(ch))?;
        let h3 = self.h3.as_mut()?;
        h3.pump(conn);
        if self.stream.is_none() && !self.pending.is_empty() {
            let id = conn.streams().open(quinn_proto::Dir::Bi)?;
            let size = response.to_string();
            let fields = [("x-anyedge-response-bytes", size.as_str())];
            let body = vec![b'x'; request as usize];
            let (n, bytes) = h3.client.request(("POST", authority, "/"), &fields, &body).ok()?;
            // The library numbers the client's streams as QUIC opens them.
            debug_assert_eq!(n, u64::from(id), "HTTP/3 and QUIC agree on the request stream");
            self.stream = Some(id);
            self.to_send = bytes;
        }
        let id = self.stream?;
        send_rest(conn, id, &mut self.to_send);
        let (data, fin) = read_stream(conn, id);
        if !data.is_empty() || fin {
            let _ = h3.client.feed(id.into(), &data, fin);
        }
        if !h3.client.answer(id.into()).is_some_and(|a| a.ended) {
            return None;
        }
        let answer = h3.client.take_answer(id.into())?;
        self.stream = None;
        let backend = app::parse_identity(&answer.body).map(|(b, _)| b).filter(|_| answer.status == Some(200));
        Some((self.pending.pop_front()?, backend))
    }

    /// A flow of `host` that has not connected yet.
    pub(super) fn new(host: anyedge_region::quic::QuicHost) -> QuicFlow {
        QuicFlow {
            host,
            conn: None,
            connected: false,
            pending: VecDeque::new(),
            stream: None,
            to_send: Vec::new(),
            got: 0,
            head: Vec::new(),
            poll_at: None,
            progress: Progress::default(),
            h3: None,
        }
    }
}
