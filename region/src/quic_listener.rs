//! QUIC listeners: the CLB node terminates the client's QUIC connection (quinn-proto,
//! TLS 1.3) and carries each bidirectional stream to the connection's backend over a TCP
//! connection of its own, naming the client in a TOA option. A client that changes
//! address (4G to Wi-Fi) keeps its connection: quinn validates the new path and the
//! node keeps the backend.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use anyedge_proto::inner;
use quinn_proto::{ConnectionHandle, Dir, Event, StreamEvent, StreamId};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::quic::{QuicHost, QuicTransmit};
use crate::tcp_stack::TcpStack;

/// The QUIC server identity of a listener.
pub type QuicTermination = crate::Shared<quinn_proto::ServerConfig>;

/// A stream relayed to the backend over TCP.
struct Relay {
    stream: StreamId,
    tcp: SocketHandle,
    local: (IpAddr, u16),
    to_tcp: Vec<u8>,
    to_quic: Vec<u8>,
    /// The client finished its side of the stream / we closed TCP's send side.
    quic_fin: bool,
    tcp_closed: bool,
    /// The backend finished / we finished the QUIC stream.
    tcp_fin: bool,
    quic_finished: bool,
}

impl Relay {
    /// Client → backend: what the client's stream holds, until its FIN.
    fn read_stream(&mut self, conn: &mut quinn_proto::Connection) {
        if self.quic_fin {
            return;
        }
        let mut stream = conn.recv_stream(self.stream);
        let Ok(mut chunks) = stream.read(true) else { return };
        loop {
            match chunks.next(64 * 1024) {
                Ok(Some(chunk)) => self.to_tcp.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    self.quic_fin = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = chunks.finalize();
    }

    /// Moves bytes both ways between the stream and the TCP socket, and passes each
    /// side's end to the other once what preceded it is delivered.
    fn pump(&mut self, conn: &mut quinn_proto::Connection, s: &mut tcp::Socket<'static>) {
        crate::tcp_stack::exchange(s, &mut self.to_tcp, &mut self.to_quic);
        if self.quic_fin && self.to_tcp.is_empty() && !self.tcp_closed && s.may_send() {
            s.close();
            self.tcp_closed = true;
        }
        let closed_by_backend = matches!(
            s.state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::TimeWait
                | tcp::State::Closed
                | tcp::State::Closing
        );
        if !s.may_recv() && closed_by_backend {
            self.tcp_fin = true;
        }
        if !self.to_quic.is_empty() {
            let n = conn.send_stream(self.stream).write(&self.to_quic).unwrap_or(0);
            self.to_quic.drain(..n);
        }
        if self.tcp_fin && self.to_quic.is_empty() && !self.quic_finished {
            let _ = conn.send_stream(self.stream).finish();
            self.quic_finished = true;
        }
        debug_assert!(!self.quic_finished || self.tcp_fin, "the client's stream ends only after the backend's side");
    }
}

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
}

/// A binding no longer in use (if any), and local ports (address, port) to free with the
/// backend each was taken toward (SNAT pools are per backend).
pub type Released = (Option<usize>, Vec<(SocketAddr, (IpAddr, u16))>);

/// What the listener asks of the CLB.
#[derive(Default)]
pub struct QuicStep {
    /// QUIC datagrams toward clients: (connection, destination, UDP payload).
    pub to_client: Vec<(ConnectionHandle, SocketAddr, Vec<u8>)>,
    /// TCP packets toward backends: (backend, the client it is for, packet).
    pub to_backend: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
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
    seed: u64,
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
            host: QuicHost::server(termination.0.clone(), (node, cipher), seed, cid_secret),
            vip,
            own,
            conns: HashMap::new(),
            by_backend: HashMap::new(),
            seed,
        }
    }

    /// The listener counting IPv4 sources by their first `bits` bits (per-source limits).
    pub fn with_source_prefix_v4(mut self, bits: u8) -> QuicListener {
        self.host.set_source_prefix_v4(bits);
        self
    }

    /// New connections handshake with `termination` from now on (a rotated
    /// certificate); open connections keep their keys.
    pub fn set_termination(&mut self, termination: &QuicTermination) {
        self.host.set_server_config(termination.0.clone());
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
        }
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
            let seed = self.seed ^ (ch.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            c.stack = Some(TcpStack::with_addresses(&self.own, seed, now_ns));
        }
    }

    /// Opens the TCP side of a stream from `local` (after the CLB gave a port).
    pub fn open_relay(&mut self, ch: ConnectionHandle, stream: StreamId, local: (IpAddr, u16)) -> bool {
        let Some(c) = self.conns.get_mut(&ch) else { return false };
        let (Some(stack), Some(backend)) = (c.stack.as_mut(), c.backend) else { return false };
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
        true
    }

    /// Moves everything along at `now_ns`.
    pub fn drive(&mut self, now_ns: u64, step: &mut QuicStep) {
        let mut out = Vec::new();
        self.host.drive(now_ns, &mut out);
        for (ch, event) in self.host.take_events() {
            match event {
                Event::Connected => step.need_backend.push(ch),
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = self.host.conn(ch).and_then(|c| c.streams().accept(Dir::Bi)) {
                        step.need_port.push((ch, id));
                    }
                }
                Event::ConnectionLost { .. } => {
                    if let Some(c) = self.conns.remove(&ch) {
                        let mut ports = Vec::new();
                        if let Some(b) = c.backend {
                            for r in &c.relays {
                                self.by_backend.remove(&(b, r.local.0, r.local.1));
                                ports.push((b, r.local));
                            }
                        }
                        step.closed.push((c.binding, ports));
                    }
                }
                _ => {}
            }
        }
        self.relay(now_ns, step);
        self.host.drive(now_ns, &mut out);
        self.collect(&mut out, step);
    }

    /// Copies bytes between each stream and its TCP connection, both ways.
    fn relay(&mut self, now_ns: u64, step: &mut QuicStep) {
        let mut handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        handles.sort();
        for ch in handles {
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
                step.to_backend.push((backend, c.first, packet));
            }
            // Relays whose both directions are done leave; their ports go back.
            let mut done = Vec::new();
            c.relays.retain(|r| {
                let over = r.quic_finished && r.tcp_closed;
                if over {
                    done.push(r.local);
                }
                !over
            });
            for local in &done {
                self.by_backend.remove(&(backend, local.0, local.1));
            }
            if !done.is_empty() {
                step.closed.push((None, done.into_iter().map(|local| (backend, local)).collect()));
            }
        }
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
        quic.into_iter().chain(tcp).min().map(|t| t.max(now_ns))
    }

    pub fn vip(&self) -> SocketAddr {
        self.vip
    }

    /// Builds the UDP datagram carrying a QUIC payload to a client.
    pub fn datagram_to(&self, client: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        inner::build_udp((self.vip.ip(), self.vip.port()), (client.ip(), client.port()), payload)
    }
}
