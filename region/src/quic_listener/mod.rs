//! QUIC listeners: the CLB node terminates the client's QUIC connection (quinn-proto,
//! TLS 1.3). A connection that negotiated ALPN `h3` speaks HTTP/3: each request
//! ([`crate::h3::H3Session`]) goes to the connection's backend as HTTP/1.1 with
//! X-Forwarded-For over a TCP connection of the node's own, and the answer comes back as
//! the stream's response. Any other protocol (or none) has each bidirectional stream
//! relayed to the backend as bytes over such a connection, naming the client in a TOA
//! option. A client that changes address (4G to Wi-Fi) keeps its connection: quinn
//! validates the new path and the node keeps the backend.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use anyedge_proto::inner;
use quinn_proto::{ConnectionHandle, Dir, Event, StreamEvent, StreamId};

use crate::h3::{H3Closed, H3Session};
use crate::quic::{QuicHost, QuicTransmit};
use crate::tcp_stack::TcpStack;
use crate::termination::QuicTermination;

mod h3_conn;
mod relay;

pub use h3_conn::{H3_STREAM_HELD_MAX, read_all};
use h3_conn::{H3Conn, H3Relay, flush_h3, stream_id};
pub use relay::RELAY_HELD_MAX;
use relay::Relay;

/// The ALPN protocol ID of HTTP/3 (RFC 9114 §3.1).
pub const H3: &[u8] = b"h3";
/// What one QUIC connection counts against the node's budget for terminated connections
/// besides the buffers [`QuicListener::held_bytes`] counts: quinn's state for it, on the
/// safe side of what the lab measured (`tests/lab_attacks.rs`: a CLB node's resident
/// memory per idle connection, 200 of them). What quinn buffers beyond that is bounded
/// by the windows ([`crate::termination::CONNECTION_WINDOW`],
/// [`crate::termination::SEND_WINDOW`]).
pub const QUIC_CONN_BYTES: usize = 64 * 1024;

/// One client QUIC connection at this node.
pub struct QuicConn {
    /// Where its latest packet entered, and its flow hash (for the way back).
    pub ingress: crate::conn_table::Ingress,
    pub flow_hash: u32,
    /// The client's address when the connection began (scheduling key).
    pub first: SocketAddr,
    pub binding: Option<usize>,
    pub backend: Option<SocketAddr>,
    stack: Option<TcpStack>,
    relays: Vec<Relay>,
    /// HTTP/3, when the client negotiated `h3`.
    h3: Option<Box<H3Conn>>,
    /// Established with no backend bound yet: since when, and when it next asks again
    /// (every [`crate::l7::BACKEND_RETRY_NS`]; past [`crate::l7::BACKEND_WAIT_NS`] it closes).
    unbound_since: Option<(u64, u64)>,
    /// Relayed streams opened before a backend was bound: they ask for ports once it is.
    unported: Vec<StreamId>,
}

impl QuicConn {
    /// What [`QuicListener::held_bytes`] counts of this connection.
    fn held_bytes(&self) -> usize {
        let sockets = self.stack.as_ref().map_or(0, |st| {
            st.sockets
                .iter()
                .filter_map(|(_, s)| match s {
                    smoltcp::socket::Socket::Tcp(t) => Some(t.buffer_bytes_allocated()),
                    #[allow(unreachable_patterns)]
                    _ => None,
                })
                .sum()
        });
        let relays: usize = self.relays.iter().map(|r| r.to_tcp.capacity() + r.to_quic.capacity()).sum();
        let h3 = self.h3.as_ref().map_or(0, |h| {
            let waiting: usize = h.waiting.values().map(Vec::len).sum();
            let pending: usize = h.pending.values().map(|(b, _)| b.len()).sum();
            let to_tcp: usize = h.relays.iter().map(|r| r.to_tcp.capacity()).sum();
            h.session.held() + waiting + pending + to_tcp
        });
        sockets + relays + h3
    }
}

/// A binding no longer in use (if any), and local ports (address, port) to free with the
/// backend each was taken toward (SNAT pools are per backend).
pub type Released = (Option<usize>, Vec<(SocketAddr, (IpAddr, u16))>);

/// What the listener asks of the CLB.
#[derive(Default)]
pub struct QuicStep {
    /// QUIC datagrams toward clients: (connection, destination, UDP payload).
    pub to_client: Vec<(ConnectionHandle, SocketAddr, Vec<u8>)>,
    /// TCP packets toward backends: (backend, the client a SYN's TOA option names —
    /// none for HTTP/3, whose requests name it in X-Forwarded-For — packet).
    pub to_backend: Vec<(SocketAddr, Option<SocketAddr>, Vec<u8>)>,
    /// Connections that need a backend chosen (just established).
    pub need_backend: Vec<ConnectionHandle>,
    /// Streams that need a local port toward the backend: (connection, stream).
    pub need_port: Vec<(ConnectionHandle, StreamId)>,
    /// What to release: a finished connection's binding and its relays' local ports.
    pub closed: Vec<Released>,
}

pub struct QuicListener {
    host: QuicHost,
    vip: SocketAddr,
    own: Vec<IpAddr>,
    conns: HashMap<ConnectionHandle, QuicConn>,
    by_backend: HashMap<(SocketAddr, IpAddr, u16), ConnectionHandle>,
    /// Backend connections (relays, one per stream) open per client source
    /// ([`QuicHost::source_of`]): with the layer-7 proxy's, what a source holds.
    relays_by_source: HashMap<IpAddr, usize>,
    seed: u64,
    h3_requests: u64,
    /// Streams refused because their source held its share of backend connections.
    streams_refused: u64,
    /// What [`QuicListener::held_bytes`] says: counted at the end of every drive.
    held: usize,
}

/// A node's QUIC listeners at a glance: connections held now; handshakes accepted,
/// Initials answered with a Retry (over the rate, address not validated) and stateless
/// resets sent (packets of connections the node does not hold), so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuicCounts {
    pub connections: usize,
    pub handshakes: u64,
    pub retries: u64,
    pub stateless_resets: u64,
    /// Initials refused: their source, or the node, held all the connections it may.
    pub refused: u64,
    /// HTTP/3 requests forwarded to backends (connections that negotiated `h3`).
    pub h3_requests: u64,
    /// Backend connections held now (one per relayed stream or HTTP/3 request at a backend).
    pub relays: usize,
    /// Streams refused because their source held its share of backend connections.
    pub streams_refused: u64,
}

impl std::ops::Add for QuicCounts {
    type Output = QuicCounts;
    fn add(self, o: QuicCounts) -> QuicCounts {
        QuicCounts {
            connections: self.connections + o.connections,
            handshakes: self.handshakes + o.handshakes,
            retries: self.retries + o.retries,
            stateless_resets: self.stateless_resets + o.stateless_resets,
            refused: self.refused + o.refused,
            h3_requests: self.h3_requests + o.h3_requests,
            relays: self.relays + o.relays,
            streams_refused: self.streams_refused + o.streams_refused,
        }
    }
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener").field("vip", &self.vip).field("connections", &self.conns.len()).finish()
    }
}

impl QuicListener {
    pub fn new(
        termination: &QuicTermination,
        vip: SocketAddr,
        own: Vec<IpAddr>,
        (node, cid_secret, cipher): (u8, [u8; 32], Option<anyedge_ccn::CidCipher>),
        seed: u64,
    ) -> QuicListener {
        QuicListener {
            host: QuicHost::server(termination.server.clone(), (node, cipher), seed, cid_secret),
            vip,
            own,
            conns: HashMap::new(),
            by_backend: HashMap::new(),
            relays_by_source: HashMap::new(),
            seed,
            h3_requests: 0,
            streams_refused: 0,
            held: 0,
        }
    }

    /// The real time its `now_ns` counts from ([`QuicHost::set_wall_epoch`]).
    pub fn set_wall_epoch(&mut self, epoch_s: u64) {
        self.host.set_wall_epoch(epoch_s);
    }

    /// The listener counting IPv4 sources by their first `bits` bits (per-source limits).
    pub fn with_source_prefix_v4(mut self, bits: u8) -> QuicListener {
        self.host.set_source_prefix_v4(bits);
        self
    }

    /// New connections handshake with `termination` from now on (a rotated
    /// certificate); open connections keep their keys.
    pub fn set_termination(&mut self, termination: &QuicTermination) {
        self.host.set_server_config(termination.server.clone());
    }

    pub fn handshakes(&self) -> u64 {
        self.host.handshakes()
    }

    pub fn retries(&self) -> u64 {
        self.host.retries()
    }

    /// This listener's counts, for a node's status.
    pub fn counts(&self) -> QuicCounts {
        QuicCounts {
            connections: self.connections(),
            handshakes: self.host.handshakes(),
            retries: self.host.retries(),
            stateless_resets: self.host.stateless_resets(),
            refused: self.host.refused(),
            h3_requests: self.h3_requests,
            relays: self.by_backend.len(),
            streams_refused: self.streams_refused,
        }
    }

    /// Bytes this listener's connections hold of their own beyond quinn's (whose share
    /// the windows bound: [`crate::termination::CONNECTION_WINDOW`] received,
    /// [`crate::termination::SEND_WINDOW`] sent, a
    /// connection): HTTP/3 requests arriving and waiting, answers not yet taken by quinn,
    /// relay buffers both ways, and the relays' socket buffers; as the last drive left
    /// them (what moves bytes), so the node's budget sees them as they arrive.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn conn(&self, ch: ConnectionHandle) -> Option<&QuicConn> {
        self.conns.get(&ch)
    }

    /// The connection a backend's TCP packet to `local` belongs to.
    pub fn by_backend(&self, backend: SocketAddr, local: (IpAddr, u16)) -> Option<ConnectionHandle> {
        self.by_backend.get(&(backend, local.0, local.1)).copied()
    }

    /// A client datagram (UDP payload) from `client`.
    pub fn receive(
        &mut self,
        now_ns: u64,
        client: SocketAddr,
        payload: &[u8],
        ingress: crate::conn_table::Ingress,
        flow_hash: u32,
        step: &mut QuicStep,
    ) {
        let mut out = Vec::new();
        let got = self.host.receive(now_ns, client, Some(self.vip.ip()), payload, &mut out);
        self.collect(&mut out, step);
        // Only a datagram that decrypted says where the client is now: junk carrying a
        // connection's IDs (anyone on the path saw them) moves nothing.
        if let Some((ch, true)) = got {
            let conn = self.conns.entry(ch).or_insert_with(|| QuicConn {
                ingress,
                flow_hash,
                first: client,
                binding: None,
                backend: None,
                stack: None,
                relays: Vec::new(),
                h3: None,
                unbound_since: None,
                unported: Vec::new(),
            });
            conn.ingress = ingress;
        }
    }

    /// A backend's TCP packet for one of the relays.
    pub fn receive_backend(&mut self, ch: ConnectionHandle, packet: Vec<u8>) {
        if let Some(stack) = self.conns.get_mut(&ch).and_then(|c| c.stack.as_mut()) {
            stack.receive(packet);
        }
    }

    /// Sets the backend of a connection (after the CLB scheduled it).
    pub fn set_backend(&mut self, ch: ConnectionHandle, binding: usize, backend: SocketAddr, now_ns: u64) {
        if let Some(c) = self.conns.get_mut(&ch) {
            debug_assert!(c.binding.is_none() && c.stack.is_none(), "a connection is bound to one backend, once");
            c.binding = Some(binding);
            c.backend = Some(backend);
            c.unbound_since = None;
            let seed = self.seed ^ (ch.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            c.stack = Some(TcpStack::with_addresses(&self.own, seed, now_ns));
        }
    }

    /// Whether the node holds its memory budget: new connections are refused while it does.
    pub fn set_full(&mut self, full: bool) {
        self.host.set_full(full);
    }

    /// The source connection `ch` counts against (its first address's).
    pub fn source(&self, ch: ConnectionHandle) -> Option<IpAddr> {
        self.conns.get(&ch).map(|c| self.host.source_of(c.first.ip()))
    }

    /// Backend connections this listener holds open for `source`.
    pub fn relays_from(&self, source: IpAddr) -> usize {
        self.relays_by_source.get(&source).copied().unwrap_or(0)
    }

    /// Streams refused so far because their source held its share.
    pub fn streams_refused(&self) -> u64 {
        self.streams_refused
    }

    /// Refuses a stream that asked for a backend connection its source may not have:
    /// reset toward the client (HTTP/3: H3_REQUEST_REJECTED, safe to retry), nothing of it
    /// reaches a backend.
    pub fn refuse_stream(&mut self, ch: ConnectionHandle, stream: StreamId) {
        self.streams_refused += 1;
        let Some(c) = self.conns.get_mut(&ch) else { return };
        let code = match c.h3.as_mut() {
            Some(h3) => {
                h3.waiting.remove(&u64::from(stream));
                crate::h3::ERROR_REQUEST_REJECTED
            }
            None => 0,
        };
        let Some(conn) = self.host.conn(ch) else { return };
        let Ok(code) = quinn_proto::VarInt::from_u64(code) else { return };
        let _ = conn.send_stream(stream).reset(code);
        let _ = conn.recv_stream(stream).stop(code);
    }

    /// `n` relays of `source` ended.
    fn relays_ended(&mut self, source: IpAddr, n: usize) {
        if n == 0 {
            return;
        }
        let held = self.relays_by_source.get_mut(&source);
        debug_assert!(held.as_ref().is_some_and(|h| **h >= n), "a source gives back only relays it held");
        if let Some(h) = held {
            *h = h.saturating_sub(n);
            if *h == 0 {
                self.relays_by_source.remove(&source);
            }
        }
    }

    /// Closes a connection whose backend's security groups deny its client, before any
    /// stream reaches a backend (HTTP/3: H3_REQUEST_REJECTED; a raw relay: code 0).
    pub fn deny(&mut self, ch: ConnectionHandle, now_ns: u64) {
        let h3 = self.conns.get(&ch).is_some_and(|c| c.h3.is_some());
        let code = if h3 { crate::h3::ERROR_REQUEST_REJECTED } else { 0 };
        self.host.close_with(ch, now_ns, code, b"refused");
    }

    /// Opens the TCP side of a stream from `local` (after the CLB gave a port).
    pub fn open_relay(&mut self, ch: ConnectionHandle, stream: StreamId, local: (IpAddr, u16)) -> bool {
        let Some(c) = self.conns.get_mut(&ch) else { return false };
        let (Some(stack), Some(backend)) = (c.stack.as_mut(), c.backend) else { return false };
        if let Some(h3) = c.h3.as_mut() {
            // HTTP/3: the request that asked for the port goes first (none: the client
            // reset it meanwhile, and the port goes back).
            let Some(request) = h3.waiting.remove(&u64::from(stream)) else { return false };
            let Some(tcp) = stack.connect(backend, local) else { return false };
            h3.relays.push(H3Relay::new(stream.into(), tcp, local, request));
            let before = self.by_backend.insert((backend, local.0, local.1), ch);
            debug_assert!(before.is_none(), "a local port serves one relay");
            *self.relays_by_source.entry(self.host.source_of(c.first.ip())).or_default() += 1;
            return true;
        }
        let Some(handle) = stack.connect(backend, local) else { return false };
        c.relays.push(Relay {
            stream,
            tcp: handle,
            local,
            to_tcp: Vec::new(),
            to_quic: Vec::new(),
            quic_fin: false,
            tcp_closed: false,
            tcp_fin: false,
            quic_finished: false,
        });
        let before = self.by_backend.insert((backend, local.0, local.1), ch);
        debug_assert!(before.is_none(), "a local port serves one relay");
        *self.relays_by_source.entry(self.host.source_of(c.first.ip())).or_default() += 1;
        true
    }

    /// Moves everything along at `now_ns`.
    pub fn drive(&mut self, now_ns: u64, step: &mut QuicStep) {
        let mut out = Vec::new();
        self.host.drive(now_ns, &mut out);
        for (ch, event) in self.host.take_events() {
            match event {
                Event::Connected => {
                    step.need_backend.push(ch);
                    if let Some(c) = self.conns.get_mut(&ch) {
                        c.unbound_since = Some((now_ns, now_ns + crate::l7::BACKEND_RETRY_NS));
                    }
                    self.start_h3(ch, now_ns);
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    let h3 = self.conns.get(&ch).is_some_and(|c| c.h3.is_some());
                    while let Some(id) = self.host.conn(ch).and_then(|c| c.streams().accept(dir)) {
                        match (h3, dir) {
                            (true, _) => {
                                if let Some(h) = self.conns.get_mut(&ch).and_then(|c| c.h3.as_mut()) {
                                    h.reading.push(id);
                                }
                            }
                            (false, Dir::Bi) => step.need_port.push((ch, id)),
                            // Without HTTP/3 a client's unidirectional streams carry nothing here.
                            (false, Dir::Uni) => {}
                        }
                    }
                }
                Event::ConnectionLost { .. } => {
                    if let Some(c) = self.conns.remove(&ch) {
                        let mut ports = Vec::new();
                        if let Some(b) = c.backend {
                            let h3 = c.h3.iter().flat_map(|h| {
                                h.relays.iter().map(|r| r.local).chain(h.idle.iter().map(|(_, local, _)| *local))
                            });
                            for local in c.relays.iter().map(|r| r.local).chain(h3) {
                                self.by_backend.remove(&(b, local.0, local.1));
                                ports.push((b, local));
                            }
                        }
                        self.relays_ended(self.host.source_of(c.first.ip()), ports.len());
                        step.closed.push((c.binding, ports));
                    }
                }
                _ => {}
            }
        }
        self.retry_unbound(now_ns, step);
        self.relay(now_ns, step);
        self.host.drive(now_ns, &mut out);
        self.collect(&mut out, step);
        // The relay just walked every connection: one more pass counts what they hold.
        self.held = self.conns.values().map(QuicConn::held_bytes).sum();
    }

    /// Connections established with no backend ask for one again once a retry has passed
    /// (health, weights and bindings change without a datagram of theirs), and close past
    /// the wait (HTTP/3: H3_REQUEST_REJECTED, safe to retry); bound ones have the streams
    /// that opened meanwhile ask for their ports.
    fn retry_unbound(&mut self, now_ns: u64, step: &mut QuicStep) {
        let mut handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        handles.sort();
        for ch in handles {
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            if c.backend.is_some() {
                step.need_port.extend(c.unported.drain(..).map(|s| (ch, s)));
                continue;
            }
            let Some((since, retry_at)) = c.unbound_since else { continue };
            if now_ns >= since + crate::l7::BACKEND_WAIT_NS {
                c.unbound_since = None;
                let code = if c.h3.is_some() { crate::h3::ERROR_REQUEST_REJECTED } else { 0 };
                self.host.close_with(ch, now_ns, code, b"no backend");
            } else if now_ns >= retry_at {
                c.unbound_since = Some((since, now_ns + crate::l7::BACKEND_RETRY_NS));
                if !step.need_backend.contains(&ch) {
                    step.need_backend.push(ch);
                }
            }
        }
    }

    /// A stream opened before its connection had a backend: it asks for its port once
    /// the connection has one.
    pub fn unported(&mut self, ch: ConnectionHandle, stream: StreamId) {
        if let Some(c) = self.conns.get_mut(&ch) {
            c.unported.push(stream);
        }
    }

    /// A connection just established that negotiated `h3`: its HTTP/3 session, on three
    /// unidirectional streams of the node's own (control, QPACK encoder and decoder).
    fn start_h3(&mut self, ch: ConnectionHandle, now_ns: u64) {
        let Some(conn) = self.host.conn(ch) else { return };
        let alpn = conn
            .crypto_session()
            .handshake_data()
            .and_then(|d| d.downcast::<quinn_proto::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol);
        if alpn.as_deref() != Some(H3) {
            return;
        }
        let Some(client) = self.conns.get(&ch).map(|c| c.first.ip()) else { return };
        let uni: Option<Vec<StreamId>> = (0..3).map(|_| conn.streams().open(Dir::Uni)).collect();
        let Some([control, encoder, decoder]) = uni.and_then(|u| <[StreamId; 3]>::try_from(u).ok()) else {
            self.host.close_with(ch, now_ns, crate::h3::ERROR_INTERNAL, b"no streams for HTTP/3");
            return;
        };
        match H3Session::new(client, [control.into(), encoder.into(), decoder.into()]) {
            Ok((session, first)) => {
                let pending = first.into_iter().map(|(s, bytes)| (s, (bytes, false))).collect();
                let (reading, waiting, relays, idle) = (Vec::new(), HashMap::new(), Vec::new(), Vec::new());
                let h3 = H3Conn { session, reading, pending, waiting, relays, idle };
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.h3 = Some(Box::new(h3));
                }
            }
            Err(H3Closed(code)) => self.host.close_with(ch, now_ns, code, b"HTTP/3"),
        }
    }

    /// Copies bytes between each stream and its TCP connection, both ways.
    /// Relays (or requests) toward `backend` that ended, by their local addresses:
    /// forgotten, counted off `client`'s source, their ports handed back to the CLB.
    fn relays_over(&mut self, backend: SocketAddr, client: IpAddr, done: Vec<(IpAddr, u16)>, step: &mut QuicStep) {
        for local in &done {
            self.by_backend.remove(&(backend, local.0, local.1));
        }
        let source = self.host.source_of(client);
        self.relays_ended(source, done.len());
        if !done.is_empty() {
            step.closed.push((None, done.into_iter().map(|local| (backend, local)).collect()));
        }
    }

    fn relay(&mut self, now_ns: u64, step: &mut QuicStep) {
        let mut handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        handles.sort();
        for ch in handles {
            if self.conns.get(&ch).is_some_and(|c| c.h3.is_some()) {
                self.relay_h3(ch, now_ns, step);
                continue;
            }
            let Some(c) = self.conns.get_mut(&ch) else { continue };
            let (Some(stack), Some(backend)) = (c.stack.as_mut(), c.backend) else { continue };
            let Some(conn) = self.host.conn(ch) else { continue };
            stack.poll(now_ns);
            for r in &mut c.relays {
                r.read_stream(conn);
                r.pump(conn, stack.socket(r.tcp));
            }
            stack.poll(now_ns);
            for packet in stack.drain_tx() {
                step.to_backend.push((backend, Some(c.first), packet));
            }
            // Relays whose both directions are done leave; their ports go back, and their
            // sockets (whose FIN left in the poll above) with them.
            let mut done = Vec::new();
            c.relays.retain(|r| {
                let over = r.quic_finished && r.tcp_closed;
                if over {
                    done.push(r.local);
                    stack.remove(r.tcp);
                }
                !over
            });
            debug_assert!(
                stack.sockets.iter().count() <= c.relays.len(),
                "a connection's stack holds its open relays' sockets only"
            );
            let client = c.first.ip();
            self.relays_over(backend, client, done, step);
        }
    }

    /// One `h3` connection: the client's streams into its session, requests out to the
    /// backend (each asks for a port), the backend's answers back through the session,
    /// and what the session has for each stream into quinn's.
    fn relay_h3(&mut self, ch: ConnectionHandle, now_ns: u64, step: &mut QuicStep) {
        let Some(c) = self.conns.get_mut(&ch) else { return };
        let Some(conn) = self.host.conn(ch) else { return };
        let Some(h3) = c.h3.as_mut() else { return };
        if let Some(code) = h3.read_client(conn) {
            self.host.close_with(ch, now_ns, code, b"HTTP/3");
            return;
        }
        // Held to the bound by requests that can go nowhere (none complete, none waiting
        // for a port): the largest still arriving is refused, so the rest can move.
        if h3.waiting.is_empty() && !h3.session.has_ready() && h3.session.held() >= crate::h3::HELD_MAX {
            h3.session.refuse_largest_arriving();
        }
        h3.reset_refused(conn);
        // Idle backend connections that the backend closed (or that hold what nobody
        // asked for) go before any request is given to one.
        let (mut done, mut sockets) = match c.stack.as_mut() {
            Some(stack) => {
                stack.poll(now_ns);
                h3.prune_idle(stack)
            }
            None => Default::default(),
        };
        // Requests ready for the backend: each takes a kept-alive connection, or asks the
        // CLB for a port for a new one (none while no backend is bound: they wait in the
        // session, within its bound).
        while let Some((stream, request)) = c.backend.and_then(|_| h3.session.take_request()) {
            let Some(id) = stream_id(stream) else { continue };
            self.h3_requests += 1;
            if let Some((tcp, local)) = h3.take_idle(now_ns) {
                h3.relays.push(H3Relay::new(stream, tcp, local, request));
                continue;
            }
            h3.waiting.insert(stream, request);
            step.need_port.push((ch, id));
        }
        let (Some(stack), Some(backend)) = (c.stack.as_mut(), c.backend) else {
            flush_h3(conn, h3);
            return;
        };
        stack.poll(now_ns);
        h3.read_backends(stack);
        flush_h3(conn, h3);
        let (ended, ended_sockets) = h3.end_relays(stack, now_ns);
        done.extend(ended);
        sockets.extend(ended_sockets);
        stack.poll(now_ns);
        for packet in stack.drain_tx() {
            step.to_backend.push((backend, None, packet));
        }
        // Their FIN or reset has left: the sockets go, with their buffers (a connection's
        // requests each had one: kept, they added up).
        for h in sockets {
            stack.remove(h);
        }
        debug_assert!(
            stack.sockets.iter().count() <= h3.relays.len() + h3.idle.len(),
            "a connection's stack holds its open requests' and idle connections' sockets only"
        );
        let client = c.first.ip();
        self.relays_over(backend, client, done, step);
    }

    fn collect(&mut self, out: &mut Vec<QuicTransmit>, step: &mut QuicStep) {
        if out.is_empty() {
            return;
        }
        // Datagrams go to a connection's current address (it moves when a client migrates).
        let mut handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        handles.sort();
        let remotes: Vec<(SocketAddr, ConnectionHandle)> =
            handles.into_iter().filter_map(|h| Some((self.host.conn(h)?.remote_address(), h))).collect();
        for (dst, _src, bytes) in out.drain(..) {
            let ch = remotes.iter().find(|(r, _)| *r == dst).map(|(_, h)| *h);
            step.to_client.push((ch.unwrap_or(ConnectionHandle(usize::MAX)), dst, bytes));
        }
    }

    /// When the listener next needs `drive`.
    pub fn poll_timeout(&mut self, now_ns: u64) -> Option<u64> {
        let quic = self.host.poll_timeout();
        let tcp = self.conns.values_mut().filter_map(|c| c.stack.as_mut()?.poll_at_ns(now_ns)).min();
        let retry = self
            .conns
            .values()
            .filter_map(|c| c.unbound_since)
            .map(|(since, retry_at)| retry_at.min(since + crate::l7::BACKEND_WAIT_NS))
            .min();
        quic.into_iter().chain(tcp).chain(retry).min().map(|t| t.max(now_ns))
    }

    pub fn vip(&self) -> SocketAddr {
        self.vip
    }

    /// Builds the UDP datagram carrying a QUIC payload to a client.
    pub fn datagram_to(&self, client: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        inner::build_udp((self.vip.ip(), self.vip.port()), (client.ip(), client.port()), payload)
    }
}

#[cfg(test)]
mod tests {
    //! A relayed stream between a real quinn client and a backend's own TCP stack, each
    //! side able to stop reading: what the listener holds stays within its bounds.
    use super::*;
    use crate::conn_table::Ingress;
    use crate::quic::QuicHost;
    use crate::termination::CONNECTION_WINDOW;
    use smoltcp::iface::SocketHandle;
    use std::sync::Arc;

    const VIP: &str = "198.18.0.20:4435";
    const CLIENT: &str = "198.18.128.2:40000";
    const BACKEND: &str = "198.19.20.10:8080";
    const NODE: &str = "198.18.32.1";
    const ALPN: &[u8] = b"anyedge-probe";

    struct Relayed {
        listener: QuicListener,
        client: QuicHost,
        ch: ConnectionHandle,
        backend: TcpStack,
        accepted: SocketHandle,
        now: u64,
        next_port: u16,
    }

    impl Relayed {
        /// A listener relaying ALPN `anyedge-probe`, a client connected to it whose
        /// stream windows are `client_window`, and a backend listening.
        fn new(client_window: u32) -> Relayed {
            Relayed::speaking(ALPN, client_window)
        }

        /// The same, the listener and client speaking `alpn`.
        fn speaking(alpn: &[u8], client_window: u32) -> Relayed {
            let (identity, roots) = crate::identity::test_identity();
            let termination = identity.quic.with_alpn(&[alpn.to_vec()]);
            let vip: SocketAddr = VIP.parse().unwrap();
            let own = vec![NODE.parse().unwrap()];
            let listener = QuicListener::new(&termination, vip, own, (1, [7; 32], None), 3);
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![alpn.to_vec()];
            let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).unwrap();
            let mut config = quinn_proto::ClientConfig::new(Arc::new(quic));
            let mut transport = quinn_proto::TransportConfig::default();
            transport.stream_receive_window(quinn_proto::VarInt::from_u32(client_window));
            config.transport_config(Arc::new(transport));
            let mut client = QuicHost::client(5);
            let ch = client.connect(0, config, vip, "198.18.0.20").unwrap();
            let backend_addr: SocketAddr = BACKEND.parse().unwrap();
            let mut backend = TcpStack::with_addresses(&[backend_addr.ip()], 9, 0);
            let accepted = backend.new_socket();
            backend.socket(accepted).listen(backend_addr).unwrap();
            let mut r = Relayed { listener, client, ch, backend, accepted, now: 0, next_port: 50_000 };
            r.run(50);
            r
        }

        /// Moves everything along for `rounds` milliseconds.
        fn run(&mut self, rounds: usize) {
            let (client_at, vip): (SocketAddr, SocketAddr) = (CLIENT.parse().unwrap(), VIP.parse().unwrap());
            for _ in 0..rounds {
                self.now += 1_000_000;
                let mut up = Vec::new();
                self.client.drive(self.now, &mut up);
                let mut step = QuicStep::default();
                for (_, _, d) in up {
                    self.listener.receive(self.now, client_at, &d, Ingress::Direct, 0, &mut step);
                }
                self.listener.drive(self.now, &mut step);
                for ch in std::mem::take(&mut step.need_backend) {
                    self.listener.set_backend(ch, 0, BACKEND.parse().unwrap(), self.now);
                }
                for (ch, stream) in std::mem::take(&mut step.need_port) {
                    self.next_port += 1;
                    assert!(self.listener.open_relay(ch, stream, (NODE.parse().unwrap(), self.next_port)));
                }
                self.listener.drive(self.now, &mut step);
                let mut down = Vec::new();
                for (_, _, payload) in step.to_client {
                    self.client.receive(self.now, vip, None, &payload, &mut down);
                }
                for (_, _, packet) in step.to_backend {
                    self.backend.receive(packet);
                }
                self.backend.poll(self.now);
                let from_backend: Vec<Vec<u8>> = self.backend.drain_tx().collect();
                for packet in from_backend {
                    self.listener.receive_backend(self.ch_at_listener(), packet);
                }
            }
        }

        /// The listener's handle of the one connection.
        fn ch_at_listener(&self) -> ConnectionHandle {
            *self.listener.conns.keys().next().expect("connected")
        }

        /// Opens a stream on the client and writes as much of `bytes` as it takes.
        fn client_stream(&mut self) -> StreamId {
            self.client.conn(self.ch).unwrap().streams().open(Dir::Bi).unwrap()
        }
    }

    #[test]
    fn a_backend_that_stops_reading_holds_the_client_back_and_the_relay_within_its_bound() {
        let mut r = Relayed::new(1 << 20);
        let stream = r.client_stream();
        // The client writes 16 MB toward a backend that never reads (the pass: +194 MB).
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        for _ in 0..400 {
            if let Ok(n) = r.client.conn(r.ch).unwrap().send_stream(stream).write(&chunk) {
                written += n;
            }
            r.run(2);
        }
        let held = r.listener.held_bytes();
        let bound = 2 * RELAY_HELD_MAX + 4 * 64 * 1024;
        eprintln!("backend not reading: {written} bytes written, the listener holds {held}");
        assert!(r.listener.counts().relays == 1, "the stream has its backend connection");
        assert!(held <= bound, "the listener holds {held} bytes (bound {bound})");
        assert!(
            written < 2 * CONNECTION_WINDOW as usize,
            "QUIC's flow control held the client back: {written} written"
        );
        assert!(written > RELAY_HELD_MAX, "something was relayed: {written}");
        // The backend reads now: the rest flows.
        let mut got = 0;
        for _ in 0..200 {
            let s = r.backend.socket(r.accepted);
            while let Ok(n) = s.recv(|d| (d.len(), d.len())) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            if let Ok(n) = r.client.conn(r.ch).unwrap().send_stream(stream).write(&chunk) {
                written += n;
            }
            r.run(2);
        }
        eprintln!("then the backend read {got} of {written}");
        assert!(got > CONNECTION_WINDOW as usize, "the relay moves again once the backend reads: {got}");
    }

    #[test]
    fn a_client_that_never_opens_its_window_holds_the_backend_back_and_the_relay_within_its_bound() {
        let mut r = Relayed::new(64 * 1024);
        let stream = r.client_stream();
        r.client.conn(r.ch).unwrap().send_stream(stream).write(b"GET").unwrap();
        r.run(20);
        // The backend answers 16 MB; the client never reads (the pass: +484 MB).
        let mut sent = 0usize;
        let chunk = vec![9u8; 64 * 1024];
        for _ in 0..400 {
            let s = r.backend.socket(r.accepted);
            if s.can_send() {
                sent += s.send_slice(&chunk).unwrap_or(0);
            }
            r.run(2);
        }
        let held = r.listener.held_bytes();
        let bound = 2 * RELAY_HELD_MAX + 4 * 64 * 1024;
        eprintln!("client not reading: the backend sent {sent}, the listener holds {held}");
        assert!(held <= bound, "the listener holds {held} bytes (bound {bound})");
        assert!(sent < 4 << 20, "TCP's window held the backend back: {sent} sent");
        assert!(sent > 64 * 1024, "something was relayed: {sent}");
    }

    /// An HTTP/3 client on the relayed connection (`H3Client`): its control and QPACK
    /// streams opened, and what the server's streams carry fed to it.
    struct H3Side {
        client: crate::h3::H3Client,
        server_streams: Vec<StreamId>,
    }

    impl H3Side {
        fn new(r: &mut Relayed) -> H3Side {
            let conn = r.client.conn(r.ch).unwrap();
            let uni: Vec<StreamId> = (0..3).map(|_| conn.streams().open(Dir::Uni).unwrap()).collect();
            let (client, first) = crate::h3::H3Client::new([uni[0].into(), uni[1].into(), uni[2].into()]).unwrap();
            for (id, bytes) in first {
                conn.send_stream(stream_id(id).unwrap()).write(&bytes).unwrap();
            }
            H3Side { client, server_streams: Vec::new() }
        }

        /// A GET of `path` on the next request stream; its number.
        fn get(&mut self, r: &mut Relayed, path: &str) -> u64 {
            let (id, bytes) = self.client.request(("GET", "198.18.0.20", path), &[], b"").unwrap();
            let conn = r.client.conn(r.ch).unwrap();
            let stream = conn.streams().open(Dir::Bi).unwrap();
            assert_eq!(u64::from(stream), id, "the client's next request stream");
            conn.send_stream(stream).write(&bytes).unwrap();
            conn.send_stream(stream).finish().unwrap();
            id
        }

        /// What the server's streams hold, into the client.
        fn read(&mut self, r: &mut Relayed, streams: &[u64]) {
            let conn = r.client.conn(r.ch).unwrap();
            while let Some(id) = conn.streams().accept(Dir::Uni) {
                self.server_streams.push(id);
            }
            let ids = self.server_streams.iter().copied().chain(streams.iter().filter_map(|&s| stream_id(s)));
            for id in ids.collect::<Vec<_>>() {
                let (data, fin, _) = read_all(conn, id);
                if !data.is_empty() || fin {
                    self.client.feed(id.into(), &data, fin).unwrap();
                }
            }
        }
    }

    /// The backend's side of its one connection: what it read since the last call.
    fn backend_read(r: &mut Relayed) -> String {
        let s = r.backend.socket(r.accepted);
        let mut got = Vec::new();
        while let Ok(n) = s.recv(|d| {
            got.extend_from_slice(d);
            (d.len(), d.len())
        }) {
            if n == 0 {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn http3_requests_one_after_another_reuse_the_kept_alive_backend_connection() {
        let mut r = Relayed::speaking(H3, 1 << 20);
        let mut h3 = H3Side::new(&mut r);
        // The backend listens on one socket: it takes one connection, and a second would
        // find nobody listening.
        for (i, path) in ["/first", "/second", "/third"].into_iter().enumerate() {
            // Past the quiet time a kept connection waits before it carries another.
            r.run((h3_conn::IDLE_QUIET_NS / 1_000_000) as usize);
            let stream = h3.get(&mut r, path);
            r.run(30);
            let request = backend_read(&mut r);
            assert!(request.starts_with(&format!("GET {path} HTTP/1.1")), "request {i} at the backend: {request:?}");
            let body = format!("answer {i}");
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            r.backend.socket(r.accepted).send_slice(answer.as_bytes()).unwrap();
            r.run(30);
            h3.read(&mut r, &[stream]);
            let got = h3.client.answer(stream).cloned().unwrap_or_default();
            assert_eq!((got.status, got.body, got.ended), (Some(200), body.into_bytes(), true), "answer {i}");
        }
        assert_eq!(r.next_port, 50_001, "one SNAT port asked for, once");
        assert_eq!(r.listener.counts().relays, 1, "the kept-alive connection is held, counted as one");
        assert_eq!(r.backend.socket(r.accepted).state(), smoltcp::socket::tcp::State::Established);
        // The backend closes it: the next request gets a new connection from a new port.
        r.backend.socket(r.accepted).close();
        r.run(30);
        assert_eq!(r.listener.counts().relays, 0, "the closed connection is let go, its port given back");
        r.backend.socket(r.accepted).abort();
        r.run(5);
        r.backend.socket(r.accepted).listen(BACKEND.parse::<SocketAddr>().unwrap()).unwrap();
        let stream = h3.get(&mut r, "/fourth");
        r.run(30);
        assert!(backend_read(&mut r).starts_with("GET /fourth HTTP/1.1"));
        assert_eq!(r.next_port, 50_002, "a new port for the new connection");
        r.backend.socket(r.accepted).send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        r.run(30);
        h3.read(&mut r, &[stream]);
        assert_eq!(h3.client.answer(stream).and_then(|a| a.status), Some(200));
    }

    #[test]
    fn a_kept_connection_that_speaks_out_of_turn_before_it_has_been_quiet_carries_no_other_request() {
        let mut r = Relayed::speaking(H3, 1 << 20);
        let mut h3 = H3Side::new(&mut r);
        let first = h3.get(&mut r, "/twice");
        r.run(30);
        assert!(backend_read(&mut r).starts_with("GET /twice "));
        r.backend.socket(r.accepted).send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        r.run(30);
        h3.read(&mut r, &[first]);
        assert!(h3.client.answer(first).is_some_and(|a| a.ended), "the first answer arrived");
        // Another request at once: the kept connection has not been quiet long enough.
        let second = h3.get(&mut r, "/at-once");
        r.run(5);
        assert_eq!(r.next_port, 50_002, "a new port asked for: the kept connection is not taken yet");
        // The backend answers the first request again, 50 ms on (the lab's rogue does):
        // the connection that spoke out of turn is let go, never used.
        r.run(15);
        r.backend.socket(r.accepted).send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra").unwrap();
        r.run(300);
        // (The second request's connection found nobody listening: the backend has one
        // socket, the kept connection's.)
        assert_eq!(r.listener.counts().relays, 0, "the connection that spoke out of turn was let go");
        let third = h3.get(&mut r, "/later");
        r.run(5);
        assert_eq!(r.next_port, 50_003, "the connection that spoke out of turn carried nothing more");
        h3.read(&mut r, &[second, third]);
        for s in [second, third] {
            assert!(h3.client.answer(s).is_none_or(|a| !a.body.starts_with(b"extra")), "an answer not its own");
        }
    }
}
