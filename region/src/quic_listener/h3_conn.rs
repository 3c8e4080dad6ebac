//! An `h3` connection's HTTP/3 at the listener: the session, the client's streams being
//! read, each request's TCP connection to its backend, and the answers flushed into
//! quinn's streams as far as their flow control takes them. A backend connection whose
//! answer was whole and kept alive is kept for the connection's next request (up to
//! [`IDLE_MAX`] of them), as HAProxy and nginx keep theirs, once it has been quiet for
//! [`IDLE_QUIET_NS`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use quinn_proto::{Dir, StreamId};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::h3::{H3Closed, H3Session};
use crate::tcp_stack::TcpStack;

/// Bytes of an HTTP/3 answer the listener holds for one stream beyond what quinn took
/// (past it, it stops reading that backend connection and TCP's window pushes back).
pub const H3_STREAM_HELD_MAX: usize = 64 * 1024;

/// Kept-alive backend connections one HTTP/3 connection keeps idle for its next
/// requests (as many as an HTTP/2 connection's lanes); past them an answered one closes.
pub const IDLE_MAX: usize = crate::h2::LANES_MAX;

/// How long a kept-alive backend connection must stay quiet before it carries another
/// request: a backend that wrote a second answer after the first (attack 7 of the fourth
/// pass: the lab's rogue writes it 50 ms later) has it arrive within a round trip, or one
/// retransmission later (200 ms, Linux's least RTO), and the connection is let go
/// unused; taken at once, the next request read it as its own answer.
pub const IDLE_QUIET_NS: u64 = 250_000_000;

/// An HTTP/3 request's TCP connection to the backend.
pub(super) struct H3Relay {
    /// The request stream's number.
    pub(super) stream: u64,
    pub(super) tcp: SocketHandle,
    pub(super) local: (IpAddr, u16),
    /// The HTTP/1.1 request, until the socket takes it.
    pub(super) to_tcp: Vec<u8>,
    /// The backend closed its side, and its answer was passed on.
    pub(super) backend_done: bool,
    /// The stream's response has left (or the stream is gone): the relay is over.
    pub(super) over: bool,
    /// The answer is whole, its connection in step and kept alive by the backend: the
    /// connection may carry the next request, and nothing more is read from it here.
    pub(super) kept: bool,
}

impl H3Relay {
    /// A request's relay over backend connection `tcp` from `local`.
    pub(super) fn new(stream: u64, tcp: SocketHandle, local: (IpAddr, u16), request: Vec<u8>) -> H3Relay {
        H3Relay { stream, tcp, local, to_tcp: request, backend_done: false, over: false, kept: false }
    }
}

/// An `h3` connection's HTTP/3: the session, the client's streams being read, what each
/// stream still has to write, and the requests at the backend.
pub(super) struct H3Conn {
    pub(super) session: H3Session,
    /// The client's streams still being read (request streams, its control and QPACK
    /// streams).
    pub(super) reading: Vec<StreamId>,
    /// Bytes quinn has not taken yet, per stream, and whether the stream ends after them.
    pub(super) pending: BTreeMap<u64, (Vec<u8>, bool)>,
    /// Requests waiting for their port toward the backend.
    pub(super) waiting: HashMap<u64, Vec<u8>>,
    pub(super) relays: Vec<H3Relay>,
    /// Kept-alive backend connections with no request at them, by socket, local address
    /// and since when (their ports stay taken, and they count in the source's share).
    pub(super) idle: Vec<(SocketHandle, (IpAddr, u16), u64)>,
}

impl H3Conn {
    /// The client's bytes, stream by stream, into the session; the HTTP/3 error code to
    /// close the connection with, when they broke it.
    pub(super) fn read_client(&mut self, conn: &mut quinn_proto::Connection) -> Option<u64> {
        let mut closed = None;
        let session = &mut self.session;
        // Counted only while a request stream is being read (walking the session costs).
        let reading_requests = self.reading.iter().any(|id| id.dir() == Dir::Bi);
        let mut held = match reading_requests {
            true => session.held() + self.waiting.values().map(Vec::len).sum::<usize>(),
            false => 0,
        };
        self.reading.retain(|&id| {
            // Request streams wait while the connection holds its share (the control
            // and QPACK streams are always read); what quinn keeps meanwhile is bounded
            // by the windows it gives (`STREAM_WINDOW`, `CONNECTION_WINDOW`).
            if closed.is_some() || (id.dir() == Dir::Bi && held >= crate::h3::HELD_MAX) {
                return true;
            }
            let (data, fin, gone) = read_all(conn, id);
            held += data.len();
            if (!data.is_empty() || fin)
                && let Err(H3Closed(code)) = session.feed(id.into(), &data, fin)
            {
                closed = Some(code);
            }
            !(fin || gone)
        });
        closed
    }

    /// Streams the session refused or broke: reset toward the client, and nothing more
    /// of them goes anywhere.
    pub(super) fn reset_refused(&mut self, conn: &mut quinn_proto::Connection) {
        for (stream, code) in self.session.take_resets() {
            let (Some(id), Ok(code)) = (stream_id(stream), quinn_proto::VarInt::from_u64(code)) else { continue };
            let _ = conn.send_stream(id).reset(code);
            let _ = conn.recv_stream(id).stop(code);
            self.pending.remove(&stream);
            self.waiting.remove(&stream);
            for r in self.relays.iter_mut().filter(|r| r.stream == stream) {
                r.over = true;
            }
        }
    }

    /// The backends' answers into the session, while each stream has room for them; a
    /// backend that closed ends its answer, and the node's side closes too.
    pub(super) fn read_backends(&mut self, stack: &mut TcpStack) {
        for r in self.relays.iter_mut().filter(|r| !r.over && !r.kept) {
            let s = stack.socket(r.tcp);
            let held = self.pending.get(&r.stream).map_or(0, |(b, _)| b.len());
            let mut answer = Vec::new();
            let room = H3_STREAM_HELD_MAX.saturating_sub(held);
            crate::tcp_stack::exchange_upto(s, &mut r.to_tcp, &mut answer, room);
            let backend_closed =
                !s.may_recv() && matches!(s.state(), tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closed);
            let ended = backend_closed && !r.backend_done;
            if !answer.is_empty() || ended {
                // Bytes after a kept answer stay in the socket: it is not used again then.
                let whole = self.session.backend_bytes(r.stream, &answer, ended);
                r.kept = whole && r.to_tcp.is_empty();
            }
            if ended {
                r.backend_done = true;
                s.close();
            }
        }
    }

    /// Relays whose answer has left (or whose stream is gone) end: a kept-alive one is
    /// kept idle for the next request (up to [`IDLE_MAX`]); otherwise, answered, the node's
    /// side closes; cut short, it is aborted. Their local ports and sockets, to give back
    /// once the stack has sent their FIN or reset.
    pub(super) fn end_relays(&mut self, stack: &mut TcpStack, now_ns: u64) -> (Vec<(IpAddr, u16)>, Vec<SocketHandle>) {
        let (mut done, mut sockets) = (Vec::new(), Vec::new());
        let pending = &self.pending;
        let idle = &mut self.idle;
        self.relays.retain(|r| {
            let over = r.over || (r.backend_done && !pending.contains_key(&r.stream));
            if over {
                let s = stack.socket(r.tcp);
                let in_step = s.state() == tcp::State::Established && s.recv_queue() == 0 && s.send_queue() == 0;
                if r.kept && in_step && idle.len() < IDLE_MAX {
                    s.release_idle_buffers();
                    idle.push((r.tcp, r.local, now_ns));
                    return false;
                }
                if !r.backend_done && s.state() != tcp::State::CloseWait && r.to_tcp.is_empty() {
                    s.close();
                } else if !r.backend_done {
                    s.abort();
                }
                done.push(r.local);
                sockets.push(r.tcp);
            }
            !over
        });
        (done, sockets)
    }
}

impl H3Conn {
    /// Idle backend connections the backend closed, or that hold bytes nobody asked for,
    /// are let go: closed (or reset), their ports and sockets given back as
    /// [`H3Conn::end_relays`] gives them.
    pub(super) fn prune_idle(&mut self, stack: &mut TcpStack) -> (Vec<(IpAddr, u16)>, Vec<SocketHandle>) {
        let (mut done, mut sockets) = (Vec::new(), Vec::new());
        self.idle.retain(|&(h, local, _)| {
            let s = stack.socket(h);
            let state = s.state();
            if state == tcp::State::Established && s.recv_queue() == 0 {
                return true;
            }
            match state {
                tcp::State::CloseWait if s.recv_queue() == 0 => s.close(),
                _ => s.abort(),
            }
            done.push(local);
            sockets.push(h);
            false
        });
        (done, sockets)
    }
}

impl H3Conn {
    /// An idle backend connection quiet for [`IDLE_QUIET_NS`] at `now_ns`, taken for a
    /// request: its socket and local address.
    pub(super) fn take_idle(&mut self, now_ns: u64) -> Option<(SocketHandle, (IpAddr, u16))> {
        let at = self.idle.iter().position(|&(_, _, since)| now_ns >= since + IDLE_QUIET_NS)?;
        let (h, local, _) = self.idle.remove(at);
        Some((h, local))
    }
}

/// The quinn ID of stream number `n`.
pub(super) fn stream_id(n: u64) -> Option<StreamId> {
    quinn_proto::VarInt::from_u64(n).ok().map(StreamId::from)
}

/// What a stream holds to read now, whether its end came, and whether it is gone (reset
/// or stopped).
pub fn read_all(conn: &mut quinn_proto::Connection, id: StreamId) -> (Vec<u8>, bool, bool) {
    let (mut data, mut fin, mut gone) = (Vec::new(), false, false);
    let mut stream = conn.recv_stream(id);
    match stream.read(true) {
        Ok(mut chunks) => {
            loop {
                match chunks.next(64 * 1024) {
                    Ok(Some(chunk)) => data.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        fin = true;
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        Err(_) => gone = true,
    }
    (data, fin, gone)
}

/// What the session has for each stream, into quinn's streams as far as their flow
/// control takes it; a stream whose last bytes left is finished, and its relay is over.
pub(super) fn flush_h3(conn: &mut quinn_proto::Connection, h3: &mut H3Conn) {
    for stream in h3.session.writable() {
        while let Some((bytes, fin)) = h3.session.take_output(stream) {
            let entry = h3.pending.entry(stream).or_default();
            entry.0.extend_from_slice(&bytes);
            entry.1 |= fin;
            if fin || bytes.is_empty() {
                break;
            }
        }
    }
    let mut ended = Vec::new();
    h3.pending.retain(|&stream, (bytes, fin)| {
        let Some(id) = stream_id(stream) else { return false };
        let mut send = conn.send_stream(id);
        if !bytes.is_empty() {
            match send.write(bytes) {
                Ok(n) => {
                    bytes.drain(..n);
                }
                Err(quinn_proto::WriteError::Blocked) => {}
                // The client stopped the stream (or it is gone): nothing more goes.
                Err(_) => {
                    ended.push(stream);
                    return false;
                }
            }
        }
        if bytes.is_empty() && *fin {
            let _ = send.finish();
            ended.push(stream);
            return false;
        }
        true
    });
    for r in h3.relays.iter_mut().filter(|r| ended.contains(&r.stream)) {
        r.over = true;
    }
}
