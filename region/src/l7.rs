//! Layer-7 (HTTP, HTTPS) listeners: the CLB node terminates the client's TCP connection
//! (and for HTTPS its TLS session, with rustls), reads each request head, adds the
//! client's address to X-Forwarded-For, and relays the request to a backend over a
//! second TCP connection of its own; responses stream back. Each proxied connection has
//! its own smoltcp stack on the caller's clock (the VIP toward the client, the node toward
//! the backend).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use anyedge_proto::{FlowKey, inner};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::conn_table::Ingress;
use crate::h2::H2Session;
use crate::http1::{AltSvcOnce, Framer, NotHttp};
use crate::syn_cookie::Syn;
use crate::tcp_stack::TcpStack;
use crate::termination::{TlsTermination, tls_read, tls_write};
use crate::window::{Grant, Pool};

/// Proxied connections one node holds at most; more new ones are refused.
pub const PROXIED_MAX: usize = 100_000;
/// Proxied connections one client source holds at most; more new ones are refused (a
/// few slowloris addresses no longer hold the node's memory). A source is a prefix:
/// [`SOURCE_PREFIX_V6`] bits of an IPv6 address (one client holds a whole /64, and took
/// 12,000 connections from 48 of its addresses when the cap was per address), and
/// [`SOURCE_PREFIX_V4`] bits of an IPv4 one by default (an IPv4 address is one client
/// or one NAT; a node of a network where clients share a /24 can take `L7::new(24)`).
pub const PER_SOURCE_MAX: usize = 256;
use crate::cidr::source_prefix;
pub use crate::cidr::{SOURCE_PREFIX_V4, SOURCE_PREFIX_V6};
/// Time a connection has to finish its first request head (from its SYN); a client
/// that has not is answered 408 and the connection closes.
pub const HEAD_DEADLINE_NS: u64 = 10_000_000_000;
/// Memory the proxied connections of one node may hold before new ones are refused:
/// [`PROXIED_CONN_BYTES`] each, and the socket and relay buffers they have in use. An
/// idle held connection gives its buffers back (to a bounded pool of spares), so what a
/// slowloris army holds is its connections' fixed state; a busy one holds what it has in
/// flight, at most its sockets' 64 KiB each way and [`BUFFER_MAX`] each way.
pub const PROXIED_BYTES_MAX: usize = 2 << 30;
/// What one held connection costs besides its buffers (its TCP stack, sockets and
/// tables), on the safe side of what the lab measured: a CLB node's resident memory grew
/// 7.3–7.6 KiB per slowloris connection with 5,000 a node (10,000 from 40 addresses of
/// one client), 13–25 KiB with 260 (`tests/lab_attacks.rs`; the pool of spare buffers
/// fills first). Before idle connections gave their buffers back it was about 123 KiB.
pub const PROXIED_CONN_BYTES: usize = 24 * 1024;
const _: () = assert!(PROXIED_BYTES_MAX / PROXIED_CONN_BYTES >= PROXIED_MAX / 2);
/// Time a request waits for a backend to take it (none healthy, none with weight, no
/// SNAT port free) before it is answered 503 and the connection closes; HAProxy's
/// `timeout queue` is its `timeout connect` unless set, 5 s in its examples.
pub const BACKEND_WAIT_NS: u64 = 5_000_000_000;
/// How often a waiting request asks for a backend again (health checks, weights and
/// bindings change without a packet of the connection's).
pub const BACKEND_RETRY_NS: u64 = 100_000_000;
const _: () = assert!(BACKEND_RETRY_NS < BACKEND_WAIT_NS);
/// Bytes the proxy holds for one way of one connection beyond the sockets' own buffers;
/// past it, it stops reading that side and TCP's window pushes back on the sender.
pub const BUFFER_MAX: usize = 64 * 1024;

/// How a listener's connections are relayed.
#[derive(Debug, Clone, Copy)]
pub struct Mode<'a> {
    /// Parse HTTP and add X-Forwarded-For; otherwise relay bytes as they are.
    pub http: bool,
    /// Terminate TLS with this identity.
    pub tls: Option<&'a TlsTermination>,
    /// HTTPS: the `Alt-Svc` field value answers carry (the VIP's HTTP/3).
    pub alt_svc: Option<&'a std::sync::Arc<str>>,
}

/// An HTTP/2 connection's further backend connection ([`crate::h2::LANES_MAX`]), to the
/// same backend as its first, from a SNAT port of its own.
struct Lane {
    /// None once it could not be opened again (the stack had no socket).
    backend: Option<SocketHandle>,
    local: (IpAddr, u16),
    to_backend: Vec<u8>,
}

/// A lane's socket, node address and port, and bytes on their way to it.
type LaneParts<'a> = (&'a mut Option<SocketHandle>, Option<(IpAddr, u16)>, &'a mut Vec<u8>);

/// HTTP/2 lane `i`'s parts: lane 0 is the connection's first backend connection, the
/// others its [`Lane`]s.
fn lane_parts<'a>(first: LaneParts<'a>, lanes: &'a mut [Lane], i: usize) -> Option<LaneParts<'a>> {
    match i {
        0 => Some(first),
        _ => lanes.get_mut(i - 1).map(|l| (&mut l.backend, Some(l.local), &mut l.to_backend)),
    }
}

/// A connection's sockets: the client's, then its backend connections' (the first, then
/// its lanes'); borrowing the fields alone, so the stack can be borrowed beside it.
fn sockets(
    client: SocketHandle,
    backend: Option<SocketHandle>,
    lanes: &[Lane],
) -> impl Iterator<Item = SocketHandle> + '_ {
    std::iter::once(client).chain(backend).chain(lanes.iter().filter_map(|l| l.backend))
}

/// One proxied client connection.
pub struct Proxied {
    stack: TcpStack,
    tls: Option<rustls::ServerConnection>,
    /// Bytes on their way to the client as they go on the wire (TLS records for HTTPS).
    client_wire: Vec<u8>,
    client: SocketHandle,
    backend: Option<SocketHandle>,
    /// ListenerState index, backend binding and address once a request chose one.
    listener: usize,
    binding: Option<usize>,
    backend_addr: Option<SocketAddr>,
    /// The node's address and port toward the backend.
    local: Option<(IpAddr, u16)>,
    framer: Framer,
    to_backend: Vec<u8>,
    to_client: Vec<u8>,
    poll_at: Option<u64>,
    /// A request was refused: its status goes to the client, then the connection closes
    /// and nothing more is read.
    refused: bool,
    /// When its first request head is due (cleared once it has come).
    head_due_ns: Option<u64>,
    /// Since when its first request has waited for a backend ([`BACKEND_WAIT_NS`]).
    backend_wait: Option<u64>,
    /// Spliced behind a SYN cookie: the cookie less the stack's own initial sequence
    /// number, added to the stack's sequence numbers on the way to the client and taken
    /// from the client's acknowledgements on the way in.
    seq_shift: Option<u32>,
    /// What [`Proxied::buffer_bytes`] was after its last drive (counted in the proxy's sum).
    buffer_bytes: usize,
    /// Where the client's latest packet entered the region: replies leave that way.
    ingress: Ingress,
    /// HTTPS whose client negotiated ALPN `h2`: its HTTP/2, once the TLS handshake is
    /// done (the framer is not used then).
    h2: Option<Box<H2Session>>,
    /// HTTP/2: its backend connections past the first (the session's lanes 1 on).
    lanes: Vec<Lane>,
    /// HTTPS: the `Alt-Svc` value its answers carry: HTTP/2 adds it to each, HTTP/1.1
    /// to the first ([`AltSvcOnce`], dropped once it has).
    alt_svc: Option<std::sync::Arc<str>>,
    alt_svc_h1: Option<Box<AltSvcOnce>>,
    /// The windows its sockets may offer and queue ([`crate::window`]): upward (the
    /// client's socket receiving, the backend's sending) and downward.
    up: Grant,
    down: Grant,
}

impl Proxied {
    /// The listener (its index in the node's listeners) the connection came in on.
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The backend the connection was bound to, once a request chose one: its binding
    /// (index in the listener's bindings), its address, and the node's address and port
    /// toward it (what a release gives back).
    pub fn bound(&self) -> Option<(usize, SocketAddr, (IpAddr, u16))> {
        Some((self.binding?, self.backend_addr?, self.local?))
    }

    /// The node's addresses and ports of an HTTP/2 connection's further backend
    /// connections (besides [`Proxied::bound`]'s): what a release gives back too.
    pub fn lane_ports(&self) -> impl Iterator<Item = (IpAddr, u16)> + '_ {
        self.lanes.iter().map(|l| l.local)
    }

    /// Every backend socket: the first and the further lanes'.
    fn backends(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        sockets(self.client, self.backend, &self.lanes).skip(1)
    }

    /// Nothing is on its way to any backend connection.
    fn to_backends_empty(&self) -> bool {
        self.to_backend.is_empty() && self.lanes.iter().all(|l| l.to_backend.is_empty())
    }

    /// Where the client's latest packet entered the region.
    pub fn ingress(&self) -> Ingress {
        self.ingress
    }

    /// Client → backend: what the client's socket holds, through TLS and the framer,
    /// while the backend's buffer has room (past [`BUFFER_MAX`] the client's window
    /// closes instead). The framer's refusal, if it made one, and whether the client's
    /// TLS records were bad.
    fn pump_from_client(&mut self, client_ip: IpAddr, now_ns: u64) -> (Option<NotHttp>, bool) {
        let s = self.stack.socket(self.client);
        // HTTP/2 answers some frames itself (SETTINGS and PING acknowledgements): it reads
        // while the client's side has room for them.
        let room = |c: &Vec<u8>, w: &Vec<u8>, b: &Vec<u8>, h2: bool| {
            if h2 { c.len() + w.len() < BUFFER_MAX } else { b.len() < BUFFER_MAX }
        };
        while s.can_recv()
            && !self.refused
            && room(&self.to_client, &self.client_wire, &self.to_backend, self.h2.is_some())
        {
            let mut buf = [0u8; 4096];
            let n = s.recv_slice(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut plain = Vec::new();
            let data = match self.tls.as_mut() {
                Some(tls) => {
                    if tls_read(tls, &buf[..n], &mut plain).is_err() {
                        return (None, true);
                    }
                    let h2 = !tls.is_handshaking() && tls.alpn_protocol() == Some(b"h2") && !self.framer.is_raw();
                    if h2 && self.h2.is_none() {
                        self.h2 = Some(Box::new(H2Session::new(client_ip).with_alt_svc(self.alt_svc.clone())));
                        self.alt_svc_h1 = None;
                    }
                    &plain[..]
                }
                None => &buf[..n],
            };
            if let Some(h2) = self.h2.as_mut() {
                h2.feed(data, now_ns);
                continue;
            }
            if let Err(refused) = self.framer.feed(data, client_ip, &mut self.to_backend) {
                return (Some(refused), false);
            }
        }
        debug_assert!(!self.refused || self.to_backend.is_empty(), "nothing goes to the backend after a refusal");
        (None, false)
    }

    /// HTTP/2: waiting requests go to free lanes, one at a time on each, the next once
    /// the one before it is answered, on the same backend connection while the backend
    /// keeps it; when the backend has closed it (or said it would), the connection is
    /// reset and opened again from the same port to the same backend (the reset leaves
    /// first, so neither side waits in TIME-WAIT). Whether any request went.
    fn h2_to_backend(&mut self, now_ns: u64) -> bool {
        let Some(h2) = self.h2.as_mut() else { return false };
        let mut sent = false;
        for i in 0..h2.lanes() {
            if !h2.has_request() {
                break;
            }
            let first = (&mut self.backend, self.local, &mut self.to_backend);
            let Some((handle, local, to_backend)) = lane_parts(first, &mut self.lanes, i) else { break };
            if h2.at_backend(i) || !to_backend.is_empty() {
                continue;
            }
            if let (Some(old), Some(addr), Some(local)) = (*handle, self.backend_addr, local) {
                let open = matches!(
                    self.stack.socket(old).state(),
                    tcp::State::Established | tcp::State::SynSent | tcp::State::SynReceived
                );
                // Bytes the backend sent after its last answer, not yet read, would be read
                // as the next request's: a connection holding any is not used again.
                let unread = self.stack.socket(old).recv_queue() > 0;
                if !open || !h2.backend_reusable(i) || unread {
                    self.stack.socket(old).abort();
                    self.stack.poll(now_ns);
                    self.stack.remove(old);
                    *handle = self.stack.connect_growing(addr, local, self.down.bytes(), self.up.send_buffer());
                    if handle.is_none() {
                        if i == 0 {
                            h2.shut();
                            return sent;
                        }
                        continue;
                    }
                    h2.backend_reopened(i);
                }
            } else if i > 0 {
                // A further lane that could not be opened again carries nothing.
                continue;
            }
            let Some(request) = h2.next_request(i) else { break };
            to_backend.extend_from_slice(&request);
            sent = true;
        }
        sent
    }

    /// The head deadline (slowloris): met once a whole head went toward the backend;
    /// past it with none, the connection is refused with 408 (unless refused already).
    fn head_overdue(&mut self, now_ns: u64, refusal: Option<NotHttp>) -> Option<NotHttp> {
        if !self.to_backend.is_empty() {
            self.head_due_ns = None;
        }
        if self.head_due_ns.is_some_and(|due| now_ns >= due) && refusal.is_none() && !self.refused {
            self.head_due_ns = None;
            return Some(NotHttp::TIMEOUT);
        }
        debug_assert!(
            self.head_due_ns.is_none() || self.to_backend.is_empty(),
            "the deadline stands only until a head"
        );
        refusal
    }

    /// The request goes nowhere: the client gets the status and the connection closes;
    /// a backend connection (an earlier request's) is cut.
    fn refuse(&mut self, refused: NotHttp) {
        self.to_backend.clear();
        if let Some(h2) = self.h2.as_mut() {
            // An HTTP/2 client hears it as HTTP/2: GOAWAY, then the close.
            h2.shut();
        } else {
            self.to_client.clear();
            self.to_client.extend_from_slice(&refused.response());
        }
        for l in &mut self.lanes {
            l.to_backend.clear();
        }
        for b in self.backends().collect::<Vec<_>>() {
            self.stack.socket(b).abort();
        }
        debug_assert!(!self.to_client.is_empty() || self.h2.is_some(), "a refusal always carries its status");
        self.refused = true;
    }

    /// A first request waiting for a backend: it asks again every [`BACKEND_RETRY_NS`],
    /// and past [`BACKEND_WAIT_NS`] it is answered 503 (HTTP/2: every waiting stream) and
    /// the connection closes; a TCP SSL connection is reset.
    fn wait_for_backend(&mut self, now_ns: u64) {
        if self.backend.is_some() || self.to_backend.is_empty() || self.refused {
            self.backend_wait = None;
            return;
        }
        let since = *self.backend_wait.get_or_insert(now_ns);
        if now_ns < since + BACKEND_WAIT_NS {
            return;
        }
        self.backend_wait = None;
        if self.framer.is_raw() {
            self.to_backend.clear();
            self.stack.socket(self.client).abort();
            self.refused = true;
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.answer_waiting(NotHttp::UNAVAILABLE.status);
        }
        self.refuse(NotHttp::UNAVAILABLE);
    }

    /// HTTP/2: each lane's answer goes through the session, a stream's window at a time,
    /// for as long as the client's side has room (else the socket's window holds the
    /// backend back).
    fn pump_h2_lanes(&mut self) {
        let Some(h2) = self.h2.as_mut() else { return };
        for i in 0..h2.lanes() {
            let first = (&mut self.backend, self.local, &mut self.to_backend);
            let Some((&mut Some(b), _, to_backend)) = lane_parts(first, &mut self.lanes, i) else { continue };
            let socket = self.stack.socket(b);
            loop {
                let room = BUFFER_MAX.saturating_sub(self.to_client.len() + self.client_wire.len());
                let room = room.min(h2.backend_room(i));
                let mut answer = Vec::new();
                let send_room = self.up.send_room(socket);
                crate::tcp_stack::exchange_within(socket, to_backend, send_room, &mut answer, room);
                let closed = matches!(
                    socket.state(),
                    tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closed | tcp::State::TimeWait
                ) && socket.recv_queue() == 0;
                if h2.at_backend(i) {
                    h2.backend_bytes(i, &answer, closed);
                }
                self.to_client.extend_from_slice(&h2.take_output());
                if answer.is_empty() || !h2.at_backend(i) {
                    break;
                }
            }
        }
    }

    /// Backend → client: the backend's bytes while the client's side has room, through
    /// TLS, into the client's socket; after a refusal's status, the FIN.
    fn pump_to_client(&mut self) {
        if self.h2.is_some() {
            self.pump_h2_lanes();
        } else if let Some(b) = self.backend {
            let room = BUFFER_MAX.saturating_sub(self.to_client.len() + self.client_wire.len());
            let socket = self.stack.socket(b);
            match self.alt_svc_h1.as_mut() {
                // HTTP/1.1 over TLS: the first answer gets the VIP's Alt-Svc.
                Some(alt) => {
                    let mut answer = Vec::new();
                    let room = room.saturating_sub(alt.held());
                    let send_room = self.up.send_room(socket);
                    crate::tcp_stack::exchange_within(socket, &mut self.to_backend, send_room, &mut answer, room);
                    alt.pass(&answer, &mut self.to_client);
                    if alt.done() {
                        self.alt_svc_h1 = None;
                    }
                }
                None => {
                    let send_room = self.up.send_room(socket);
                    let (to_backend, to_client) = (&mut self.to_backend, &mut self.to_client);
                    crate::tcp_stack::exchange_within(socket, to_backend, send_room, to_client, room);
                }
            }
        }
        if let Some(h2) = self.h2.as_mut() {
            self.to_client.extend_from_slice(&h2.take_output());
            if h2.closed().is_some() {
                self.refused = true;
            }
        }
        match self.tls.as_mut() {
            Some(tls) => tls_write(tls, &mut self.to_client, &mut self.client_wire),
            None => self.client_wire.append(&mut self.to_client),
        }
        debug_assert!(self.tls.is_some() || self.to_client.is_empty(), "plain bytes go straight to the wire");
        let cs = self.stack.socket(self.client);
        let send_room = self.down.send_room(cs).min(self.client_wire.len());
        if cs.can_send() && send_room > 0 {
            let n = cs.send_slice(&self.client_wire[..send_room]).unwrap_or(0);
            self.client_wire.drain(..n);
        }
        if self.refused && self.client_wire.is_empty() {
            // The FIN follows the refusal's status, already in the socket.
            cs.close();
        }
    }

    /// Half-closes travel across once the data before them has; a client gone for good
    /// (or with bad TLS) cuts the backend side.
    fn propagate_close(&mut self, bad: bool) {
        let client_state = self.stack.socket(self.client).state();
        let backend_state = self.backend.map(|b| self.stack.socket(b).state());
        if self.h2.is_some() {
            // HTTP/2: the backend connection is the proxy's own, opened again as needed; a
            // client that has closed is finished with it.
            let client_gone = matches!(client_state, tcp::State::CloseWait | tcp::State::Closed);
            if client_gone || (self.refused && self.client_wire.is_empty()) {
                for b in self.backends().collect::<Vec<_>>() {
                    self.stack.socket(b).abort();
                }
                if client_state == tcp::State::CloseWait && self.client_wire.is_empty() {
                    self.stack.socket(self.client).close();
                }
            }
            return;
        }
        if matches!(client_state, tcp::State::CloseWait) && self.to_backend.is_empty() {
            let side = self.backend.unwrap_or(self.client);
            self.stack.socket(side).close();
        }
        let backend_closed = matches!(backend_state, Some(tcp::State::CloseWait));
        if backend_closed && self.to_client.is_empty() && self.client_wire.is_empty() {
            self.stack.socket(self.client).close();
        }
        if matches!(client_state, tcp::State::Closed)
            && let Some(b) = self.backend
        {
            let bs = self.stack.socket(b);
            if bs.state() != tcp::State::Closed && (self.to_backend.is_empty() || bad) {
                bs.abort();
            }
        }
    }

    /// The stack's segments into `step`: from the VIP toward the client (shifted to the
    /// cookie's numbers when spliced behind one), the rest toward the backend.
    /// A super-packet toward the client goes whole (cut where it leaves the backbone);
    /// one toward the backend is cut here.
    fn drain(&mut self, vip: IpAddr, step: &mut Step) {
        for (mut packet, segment) in self.stack.drain_tx_segmented() {
            let from_vip = anyedge_proto::inner::parse(&packet).is_ok_and(|i| i.key.src == vip);
            if from_vip {
                if let Some(shift) = self.seq_shift {
                    // The stack's own segments: parse succeeded above, so this does too.
                    let shifted = inner::shift_tcp(&mut packet, shift, 0);
                    debug_assert!(shifted.is_ok(), "the stack's own segment shifts");
                }
                step.to_client.push((packet, segment));
            } else if segment > 0 {
                let parts = anyedge_proto::offload::cut(&packet, usize::from(segment));
                debug_assert!(parts.is_ok(), "the stack's own super-packet cuts");
                step.to_backend.extend(parts.unwrap_or_default());
            } else {
                step.to_backend.push(packet);
            }
        }
    }

    /// Over on both sides (closed, or waiting out TIME-WAIT).
    fn finished(&mut self) -> bool {
        let stack = &mut self.stack;
        sockets(self.client, self.backend, &self.lanes)
            .all(|h| matches!(stack.socket(h).state(), tcp::State::Closed | tcp::State::TimeWait))
    }

    /// When the connection next needs a drive: its stack's timers, its head deadline or
    /// (HTTP/2) its streams' and idle deadlines.
    fn next_wake(&mut self, now_ns: u64) -> Option<u64> {
        let stack = self.stack.poll_at_ns(now_ns).map(|t| t.max(now_ns));
        let h2 = self.h2.as_ref().and_then(|h| h.next_deadline()).map(|t| t.max(now_ns));
        let retry = self.backend_wait.map(|since| (now_ns + BACKEND_RETRY_NS).min(since + BACKEND_WAIT_NS));
        let wake = [stack, self.head_due_ns, h2, retry].into_iter().flatten().min();
        debug_assert!(
            wake.is_none_or(|t| t >= now_ns || self.head_due_ns == Some(t)),
            "a wake-up is never in the past"
        );
        wake
    }

    /// Grows a direction's window when one of its sockets held its sender back and the
    /// node's pool grants it ([`crate::window`]): upward the client's receive window and
    /// the backend's send queue, downward the backend's receive window and the client's
    /// send queue.
    fn tune(&mut self, pool: &mut Pool, held_bytes: usize, now_ns: u64) {
        let toward_client_empty = self.to_client.is_empty() && self.client_wire.is_empty();
        let to_backends_empty = self.to_backends_empty();
        let client = self.stack.socket(self.client);
        let mut up = self.up.receive_binds(client, to_backends_empty);
        let down_sends = self.down.send_binds(client, !self.client_wire.is_empty());
        let (mut down, down_cwnd) = (down_sends, client.congestion_window().filter(|_| down_sends));
        let mut up_cwnd = None;
        if let Some(b) = self.backend {
            let backend = self.stack.socket(b);
            down |= self.down.receive_binds(backend, toward_client_empty);
            let up_sends = self.up.send_binds(backend, !self.to_backend.is_empty());
            up |= up_sends;
            up_cwnd = backend.congestion_window().filter(|_| up_sends);
        }
        // HTTP/2's further lanes share the connection's downward grant.
        for b in self.lanes.iter().filter_map(|l| l.backend) {
            down |= self.down.receive_binds(self.stack.socket(b), toward_client_empty);
        }
        // A direction grows only while the other one is not backed up at the proxy: a
        // client that pushes requests and leaves their answers unread has its upward
        // window kept where it is (and a backend that does the same, the downward one).
        up &= toward_client_empty;
        down &= to_backends_empty;
        if !up && !down {
            return;
        }
        let backends: Vec<SocketHandle> = self.backends().collect();
        let rtt_ms = std::iter::once(self.client)
            .chain(backends.iter().copied())
            .filter_map(|h| self.stack.socket(h).smoothed_rtt_ms())
            .max();
        let before = pool.grown();
        // A sending socket's queue follows its congestion window at once; the rest
        // doubles at most once a round trip.
        let grow = |pool: &mut Pool, grant: &mut Grant, cwnd: Option<usize>, held: usize| match cwnd {
            Some(cwnd) if pool.expand_send(grant, cwnd, held, now_ns) => true,
            _ => pool.grow(grant, held, now_ns, rtt_ms),
        };
        if up && grow(pool, &mut self.up, up_cwnd, held_bytes) {
            self.stack.socket(self.client).set_window_limit(self.up.bytes());
            for &b in &backends {
                self.stack.socket(b).grow_send_buffer(self.up.send_buffer());
            }
        }
        let held_bytes = held_bytes + (pool.grown() - before);
        if down && grow(pool, &mut self.down, down_cwnd, held_bytes) {
            self.stack.socket(self.client).grow_send_buffer(self.down.send_buffer());
            for &b in &backends {
                self.stack.socket(b).set_window_limit(self.down.bytes());
            }
        }
    }

    /// Gives back what the connection holds idle: socket buffers with nothing in them (to
    /// the stack's spares) and empty relay buffers. A held-open connection that sent half
    /// a head cost about 123 KiB before; the sockets behave the same either way.
    fn release_idle(&mut self) {
        let mut idle = true;
        for h in sockets(self.client, self.backend, &self.lanes) {
            let s = self.stack.socket(h);
            s.release_idle_buffers();
            idle &= s.recv_queue() == 0 && s.send_queue() == 0;
        }
        // Only while nothing is in flight: a streaming connection empties its relay
        // buffers every drive and would otherwise give them back and take them again.
        if idle {
            let lanes = self.lanes.iter_mut().map(|l| &mut l.to_backend);
            for buffer in [&mut self.to_backend, &mut self.to_client, &mut self.client_wire].into_iter().chain(lanes) {
                if buffer.is_empty() {
                    *buffer = Vec::new();
                }
            }
            self.framer.release_idle();
        }
    }

    /// Socket and relay buffer bytes the connection holds.
    fn held_buffer_bytes(&mut self) -> usize {
        let handles = sockets(self.client, self.backend, &self.lanes);
        let sockets: usize = handles.map(|h| self.stack.socket(h).buffer_bytes_allocated()).sum();
        let lanes: usize = self.lanes.iter().map(|l| l.to_backend.capacity()).sum();
        let relay = self.to_backend.capacity() + self.to_client.capacity() + self.client_wire.capacity() + lanes;
        // HTTP/1.1: bounded by the client's window; HTTP/2: one request at a time a lane, whole.
        let bound = if self.h2.is_some() { crate::h2::REQUEST_MAX } else { BUFFER_MAX + 64 * 1024 };
        debug_assert!(self.to_backend.len() <= bound, "the relay buffer is bounded");
        debug_assert!(self.lanes.iter().all(|l| l.to_backend.len() <= bound), "each lane's relay buffer is bounded");
        let alt_svc = self.alt_svc_h1.as_ref().map_or(0, |a| a.held());
        sockets + relay + self.framer.held() + self.h2.as_ref().map_or(0, |h| h.held()) + alt_svc
    }
}

/// Why the proxy did not take a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds [`PROXIED_MAX`] connections or [`PROXIED_BYTES_MAX`] of memory, or
    /// could not set the connection up.
    Full,
    /// Its source holds [`PER_SOURCE_MAX`].
    SourceCap,
}

/// What the proxy asks of the CLB after moving a connection along.
#[derive(Debug, Default)]
pub struct Step {
    /// Packets toward the client (from the VIP), each with the segment size a
    /// super-packet is to be cut into where it leaves the backbone (0: an ordinary one).
    pub to_client: Vec<(Vec<u8>, u16)>,
    /// Packets toward the backend (from the node).
    pub to_backend: Vec<Vec<u8>>,
    /// A first request head arrived: choose a backend for this connection.
    pub needs_backend: bool,
    /// HTTP/2: further backend connections worth opening now ([`L7::add_lane`]).
    pub lanes_wanted: usize,
    /// The connection is over on both sides: forget it.
    pub finished: bool,
}

/// All layer-7 connections of a node, and when each next needs a poll.
pub struct L7 {
    conns: HashMap<FlowKey, Proxied, foldhash::fast::RandomState>,
    /// Connections per client source ([`source_prefix`]), each HTTP/2 connection's
    /// further backend connections counted as connections too.
    per_source: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
    /// Bits of an IPv4 address that name one source.
    source_prefix_v4: u8,
    /// New connections refused for their address's cap.
    refused_per_source: u64,
    /// Buffer bytes the connections hold ([`Proxied::buffer_bytes`], summed).
    buffer_bytes: usize,
    /// What the node's QUIC listeners held when last counted: the same budget
    /// ([`PROXIED_BYTES_MAX`]) covers both.
    quic_bytes: usize,
    /// (backend, node address, node port) → client key, for the backend's packets.
    by_backend: HashMap<(SocketAddr, IpAddr, u16), FlowKey, foldhash::fast::RandomState>,
    timers: BTreeSet<(u64, FlowKey)>,
    /// The growth of the connections' windows ([`crate::window`]).
    windows: Pool,
    /// Whether new connections send super-packets ([`L7::set_super_packets`]).
    super_packets: bool,
}

impl std::fmt::Debug for L7 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L7").field("conns", &self.conns.len()).finish()
    }
}

impl Default for L7 {
    fn default() -> L7 {
        L7::new(SOURCE_PREFIX_V4)
    }
}

impl L7 {
    /// A node's proxy, counting IPv4 sources by their first `source_prefix_v4` bits.
    pub fn new(source_prefix_v4: u8) -> L7 {
        L7 {
            conns: HashMap::default(),
            per_source: HashMap::default(),
            source_prefix_v4: source_prefix_v4.min(32),
            refused_per_source: 0,
            buffer_bytes: 0,
            quic_bytes: 0,
            by_backend: HashMap::default(),
            timers: BTreeSet::new(),
            windows: Pool::default(),
            super_packets: false,
        }
    }

    /// Whether new connections' stacks send TCP super-packets toward clients
    /// ([`TcpStack::with_super_packets`]): the lab's nodes do, whose POPs hand them to a
    /// TUN device that cuts them, as the kernel's TCP behind the `tcp` listener sends
    /// them; the simulator's do not (its hosts have no offloads, and its reports stay
    /// what they were).
    pub fn set_super_packets(&mut self, on: bool) {
        self.super_packets = on;
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Proxied> {
        self.conns.get(key)
    }

    /// The client key of a backend's packet to `local`.
    pub fn by_backend(&self, backend: SocketAddr, local: (IpAddr, u16)) -> Option<FlowKey> {
        self.by_backend.get(&(backend, local.0, local.1)).copied()
    }

    /// Accepts a new client connection (on its SYN). `own` are the node's addresses;
    /// `tls` makes it HTTPS.
    pub fn accept(
        &mut self,
        key: FlowKey,
        listener: usize,
        own: &[IpAddr],
        mode: Mode<'_>,
        seed: u64,
        now_ns: u64,
    ) -> Result<(), Refused> {
        let Mode { http, tls, alt_svc } = mode;
        let alt_svc = alt_svc.filter(|_| http && tls.is_some()).cloned();
        if self.conns.len() >= PROXIED_MAX || self.held_bytes() + PROXIED_CONN_BYTES > PROXIED_BYTES_MAX {
            return Err(Refused::Full);
        }
        let source = source_prefix(key.src, self.source_prefix_v4);
        if self.per_source.get(&source).is_some_and(|&n| n >= PER_SOURCE_MAX) {
            self.refused_per_source += 1;
            return Err(Refused::SourceCap);
        }
        let tls = match tls.map(|t| rustls::ServerConnection::new(t.0.clone())) {
            None => None,
            Some(Ok(conn)) => Some(conn),
            Some(Err(_)) => return Err(Refused::Full),
        };
        let addrs: Vec<IpAddr> = std::iter::once(key.dst).chain(own.iter().copied()).collect();
        let mut stack = match self.super_packets {
            true => TcpStack::with_super_packets(&addrs, seed, now_ns),
            false => TcpStack::with_addresses(&addrs, seed, now_ns),
        };
        let client = stack.new_growing_socket(crate::window::START, crate::window::START);
        let socket = stack.socket(client);
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(30)));
        if socket.listen((key.dst, key.dst_port)).is_err() {
            return Err(Refused::Full);
        }
        let conn = Proxied {
            stack,
            tls,
            client_wire: Vec::new(),
            client,
            backend: None,
            listener,
            binding: None,
            backend_addr: None,
            local: None,
            framer: Framer::new(!http),
            to_backend: Vec::new(),
            to_client: Vec::new(),
            poll_at: None,
            refused: false,
            head_due_ns: http.then_some(now_ns + HEAD_DEADLINE_NS),
            backend_wait: None,
            seq_shift: None,
            buffer_bytes: 0,
            // Until its first packet is handed over (`receive_client`).
            ingress: Ingress::Direct,
            h2: None,
            lanes: Vec::new(),
            alt_svc_h1: alt_svc.clone().map(|v| Box::new(AltSvcOnce::new(v))),
            alt_svc,
            up: Grant::default(),
            down: Grant::default(),
        };
        self.conns.insert(key, conn);
        *self.per_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// Leading bits of an IPv4 address that name one source.
    pub fn source_prefix_v4(&self) -> u8 {
        self.source_prefix_v4
    }

    /// What counts against [`PROXIED_BYTES_MAX`]: [`PROXIED_CONN_BYTES`] a connection,
    /// the buffers in use, and the QUIC listeners' bytes as last counted.
    pub fn held_bytes(&self) -> usize {
        self.conns.len() * PROXIED_CONN_BYTES + self.buffer_bytes + self.quic_bytes + self.windows.grown()
    }

    /// Bytes of window growth the node has granted ([`crate::window::Pool`]).
    pub fn windows_grown(&self) -> usize {
        self.windows.grown()
    }

    /// What the node's QUIC listeners hold now (counted once a sweep: walking them costs
    /// a pass over their connections).
    pub fn set_quic_bytes(&mut self, bytes: usize) {
        self.quic_bytes = bytes;
    }

    /// Buffer bytes the node's proxied connections hold now ([`PROXIED_BYTES_MAX`]).
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Connections `source` (a [`source_prefix`]) holds now, with their HTTP/2 lanes.
    pub fn held_by(&self, source: IpAddr) -> usize {
        self.per_source.get(&source).copied().unwrap_or(0)
    }

    /// A new connection was refused for its source's share, held partly elsewhere (the
    /// node's QUIC listeners).
    pub fn note_refused_per_source(&mut self) {
        self.refused_per_source += 1;
    }

    /// New connections refused because their client address held [`PER_SOURCE_MAX`].
    pub fn refused_per_source(&self) -> u64 {
        self.refused_per_source
    }

    /// Refuses a connection whose backend's security groups deny its client: an HTTP
    /// client is answered 403 (HTTP/2: GOAWAY) and the connection closes; a TCP SSL
    /// client's connection is reset. Nothing reaches a backend.
    pub fn deny(&mut self, key: &FlowKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.framer.is_raw() {
            c.to_backend.clear();
            c.stack.socket(c.client).abort();
            c.refused = true;
        } else {
            c.refuse(NotHttp::FORBIDDEN);
        }
        debug_assert!(c.refused && c.to_backend.is_empty(), "a denied connection sends nothing on");
    }

    /// Opens the backend side of a connection from `local`.
    pub fn connect(&mut self, key: &FlowKey, binding: usize, backend: SocketAddr, local: (IpAddr, u16)) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        debug_assert!(c.backend.is_none(), "a connection binds one backend, once");
        let Some(handle) = c.stack.connect_growing(backend, local, c.down.bytes(), c.up.send_buffer()) else {
            return false;
        };
        c.backend = Some(handle);
        c.binding = Some(binding);
        c.backend_addr = Some(backend);
        c.local = Some(local);
        self.by_backend.insert((backend, local.0, local.1), *key);
        true
    }

    /// Opens one more backend connection of an HTTP/2 connection, to its backend from
    /// `local` (a SNAT port of its own): one more lane for its requests. It counts as one
    /// more connection of the client's source ([`PER_SOURCE_MAX`]); false when the source
    /// is at its cap, the session wants no more lanes or the stack has no socket (the
    /// port was not used).
    pub fn add_lane(&mut self, key: &FlowKey, local: (IpAddr, u16)) -> bool {
        let source = source_prefix(key.src, self.source_prefix_v4);
        if self.per_source.get(&source).is_some_and(|&n| n >= PER_SOURCE_MAX) {
            return false;
        }
        let Some(c) = self.conns.get_mut(key) else { return false };
        let (Some(h2), Some(backend)) = (c.h2.as_mut(), c.backend_addr) else { return false };
        if h2.lanes_wanted() == 0 || c.refused {
            return false;
        }
        let Some(handle) = c.stack.connect_growing(backend, local, c.down.bytes(), c.up.send_buffer()) else {
            return false;
        };
        c.lanes.push(Lane { backend: Some(handle), local, to_backend: Vec::new() });
        let lane = h2.add_lane();
        debug_assert_eq!(lane, c.lanes.len(), "the session's lanes are the first and the further ones");
        self.by_backend.insert((backend, local.0, local.1), *key);
        *self.per_source.entry(source).or_default() += 1;
        true
    }

    /// Hands a connection just accepted on a client's ACK that carried a good SYN
    /// cookie to its stack as though the handshake had been the stack's own: the
    /// client's SYN (its initial sequence number, the MSS and window scale the cookie
    /// carried) goes in, the stack's SYN-ACK is kept back, and from then on sequence
    /// numbers are shifted between the stack's and the cookie's. False when the stack
    /// would not answer.
    pub fn splice(&mut self, key: &FlowKey, client_isn: u32, cookie: u32, syn: Syn, now_ns: u64) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        let control = smoltcp::wire::TcpControl::Syn;
        let mut client_syn = inner::bare_tcp(key.src_port, key.dst_port, control, client_isn, None, Some(syn.mss));
        client_syn.window_scale = syn.window_scale;
        client_syn.sack_permitted = syn.sack;
        let Some(client_syn) = inner::build_tcp(key.src, key.dst, &client_syn) else { return false };
        c.stack.receive(client_syn);
        c.stack.poll(now_ns);
        let syn_ack = c
            .stack
            .drain_tx_segmented()
            .map(|(packet, _)| packet)
            .find(|p| inner::parse(p).is_ok_and(|i| i.key.src == key.dst && i.tcp.is_some_and(|f| f.syn && f.ack)));
        let Some((own_isn, _, _)) = syn_ack.as_deref().and_then(inner::tcp_numbers) else { return false };
        // The client was offered the scale the stack offers now (the cookie's SYN-ACK).
        debug_assert_eq!(
            syn_ack.as_deref().and_then(inner::tcp_window_scale),
            syn.window_scale.map(|_| crate::window::SHIFT),
            "the cookie's SYN-ACK offered the stack's own window scale"
        );
        debug_assert!(c.seq_shift.is_none(), "a connection is spliced once");
        c.seq_shift = Some(cookie.wrapping_sub(own_isn));
        true
    }

    /// A packet of this connection from the client, which entered the region at `ingress`.
    pub fn receive_client(&mut self, key: &FlowKey, ingress: Ingress, mut packet: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(key) {
            c.ingress = ingress;
            if let Some(shift) = c.seq_shift
                && inner::shift_tcp(&mut packet, 0, shift).is_err()
            {
                return;
            }
            c.stack.receive(packet);
        }
    }

    /// A packet of this connection from its backend.
    pub fn receive(&mut self, key: &FlowKey, packet: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(key) {
            c.stack.receive(packet);
        }
    }

    /// Moves a connection along at `now_ns`: relays bytes both ways, reports packets.
    pub fn drive(&mut self, key: &FlowKey, now_ns: u64) -> Step {
        let held_bytes = self.held_bytes();
        let Some(c) = self.conns.get_mut(key) else { return Step::default() };
        c.stack.poll(now_ns);
        let (refusal, bad) = c.pump_from_client(key.src, now_ns);
        if let Some(h2) = c.h2.as_mut() {
            h2.expire(now_ns);
        }
        let _ = c.h2_to_backend(now_ns);
        let refusal = c.head_overdue(now_ns, refusal);
        if bad {
            c.stack.socket(c.client).abort();
        }
        if let Some(refused) = refusal {
            c.refuse(refused);
        }
        c.wait_for_backend(now_ns);
        c.pump_to_client();
        // HTTP/2: an answer just finished lets the next request go at once.
        if c.h2_to_backend(now_ns) {
            c.pump_to_client();
        }
        let lanes_wanted = match (&c.h2, c.backend) {
            (Some(h2), Some(_)) if !c.refused => h2.lanes_wanted(),
            _ => 0,
        };
        let needs_backend = c.backend.is_none() && !c.to_backend.is_empty();
        let mut step = Step { needs_backend, lanes_wanted, ..Step::default() };
        c.propagate_close(bad);
        c.tune(&mut self.windows, held_bytes, now_ns);
        c.stack.poll(now_ns);
        c.drain(key.dst, &mut step);
        c.release_idle();
        let held = c.held_buffer_bytes();
        debug_assert!(self.buffer_bytes >= c.buffer_bytes, "the sum holds every connection's bytes");
        self.buffer_bytes = self.buffer_bytes - c.buffer_bytes + held;
        c.buffer_bytes = held;
        step.finished = c.finished();
        let next = if step.finished { None } else { c.next_wake(now_ns) };
        if let Some(old) = c.poll_at.take() {
            self.timers.remove(&(old, *key));
        }
        if let Some(at) = next {
            c.poll_at = Some(at);
            self.timers.insert((at, *key));
        }
        debug_assert!(
            step.finished
                || c.backend.is_some()
                || c.to_backend.is_empty()
                || c.refused
                || c.poll_at.is_some_and(|t| t <= now_ns + BACKEND_RETRY_NS),
            "a request waiting for a backend is woken to ask again within a retry"
        );
        debug_assert!(self.timers.len() <= self.conns.len(), "one timer per connection at most");
        step
    }

    /// Forgets a finished connection; returns it so the caller can free what it held.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Proxied> {
        let c = self.conns.remove(key)?;
        debug_assert!(self.buffer_bytes >= c.buffer_bytes, "the sum holds every connection's bytes");
        self.buffer_bytes -= c.buffer_bytes;
        self.windows.release(&c.up);
        self.windows.release(&c.down);
        if let Some(at) = c.poll_at {
            self.timers.remove(&(at, *key));
        }
        let source = source_prefix(key.src, self.source_prefix_v4);
        let held = self.per_source.get_mut(&source);
        let count = 1 + c.lanes.len();
        debug_assert!(held.as_ref().is_some_and(|n| **n >= count), "a connection released that its source never held");
        if let Some(n) = held {
            *n -= count;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        if let (Some(b), Some(l)) = (c.backend_addr, c.local) {
            for l in std::iter::once(l).chain(c.lane_ports()) {
                let owner = self.by_backend.remove(&(b, l.0, l.1));
                debug_assert_eq!(owner, Some(*key), "a backend's side names its own connection");
            }
        }
        Some(c)
    }

    pub fn next_timer(&self) -> Option<u64> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Connections whose timer is due at `now_ns`.
    pub fn due(&self, now_ns: u64) -> Vec<FlowKey> {
        self.timers.iter().take_while(|&&(t, _)| t <= now_ns).map(|&(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyedge_proto::Transport;

    const VIP: &str = "198.18.0.20";

    /// A client's own TCP stack connected (from `port`) to an HTTP listener of `l7`.
    struct Client {
        stack: TcpStack,
        socket: smoltcp::iface::SocketHandle,
        key: FlowKey,
    }

    fn key(src: &str, port: u16) -> FlowKey {
        FlowKey {
            transport: Transport::Tcp,
            src: src.parse().unwrap(),
            src_port: port,
            dst: VIP.parse().unwrap(),
            dst_port: 80,
        }
    }

    fn connect(l7: &mut L7, src: &str, port: u16, now: u64) -> Client {
        let key = key(src, port);
        let mut stack = TcpStack::new(key.src, u64::from(port), now);
        let socket = stack.connect(SocketAddr::new(key.dst, 80), (key.src, port)).unwrap();
        assert!(l7.accept(key, 0, &[], Mode { http: true, tls: None, alt_svc: None }, 1, now).is_ok());
        let mut c = Client { stack, socket, key };
        shuttle(l7, &mut c, now);
        c
    }

    /// Packets both ways until both sides are quiet.
    fn shuttle(l7: &mut L7, c: &mut Client, now: u64) {
        for _ in 0..200 {
            c.stack.poll(now);
            let up: Vec<Vec<u8>> = c.stack.drain_tx().collect();
            for p in &up {
                l7.receive(&c.key, p.clone());
            }
            let step = l7.drive(&c.key, now);
            if up.is_empty() && step.to_client.is_empty() {
                return;
            }
            for (p, _) in step.to_client {
                c.stack.receive(p);
            }
        }
    }

    #[test]
    fn what_the_quic_listeners_hold_counts_against_the_same_budget_as_proxied_connections() {
        let mut l7 = L7::default();
        let key = |port| FlowKey {
            transport: anyedge_proto::Transport::Tcp,
            src: "198.18.128.2".parse().unwrap(),
            src_port: port,
            dst: "198.18.0.20".parse().unwrap(),
            dst_port: 80,
        };
        let mode = Mode { http: true, tls: None, alt_svc: None };
        assert!(l7.accept(key(1000), 0, &[], mode, 1, 0).is_ok());
        l7.set_quic_bytes(PROXIED_BYTES_MAX);
        assert_eq!(l7.held_bytes(), PROXIED_BYTES_MAX + PROXIED_CONN_BYTES);
        assert_eq!(l7.accept(key(1001), 0, &[], mode, 1, 0), Err(Refused::Full), "the QUIC listeners hold the budget");
        l7.set_quic_bytes(0);
        assert!(l7.accept(key(1002), 0, &[], mode, 1, 0).is_ok());
    }

    #[test]
    fn held_open_connections_give_their_socket_buffers_back_and_the_node_counts_what_they_hold() {
        let mut l7 = L7::default();
        let mut clients: Vec<Client> = (0..200).map(|i| connect(&mut l7, "198.51.100.7", 4000 + i, 0)).collect();
        // Slowloris: half a head each, then nothing.
        for c in &mut clients {
            c.stack.socket(c.socket).send_slice(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: b\r\n").unwrap();
            shuttle(&mut l7, c, 1_000_000);
        }
        // What each holds is its half head, not the 4 x 64 KiB its sockets may take.
        let per_connection = l7.buffer_bytes() / clients.len();
        assert!(per_connection <= 256, "{per_connection} buffer bytes per held connection");
        // A connection with a whole request in flight holds its buffers, counted.
        let busy = &mut clients[0];
        let body = vec![b'x'; 30_000];
        let head = format!("\r\nContent-Length: {}\r\n\r\n", body.len());
        busy.stack.socket(busy.socket).send_slice(head.as_bytes()).unwrap();
        busy.stack.socket(busy.socket).send_slice(&body[..16_000]).unwrap();
        shuttle(&mut l7, busy, 2_000_000);
        assert!(l7.buffer_bytes() > 16_000, "{} bytes held with a body on its way", l7.buffer_bytes());
        // Gone, they take their count with them.
        let keys: Vec<FlowKey> = clients.iter().map(|c| c.key).collect();
        for key in keys {
            l7.remove(&key);
        }
        assert_eq!(l7.buffer_bytes(), 0);
    }

    #[test]
    fn a_head_not_finished_in_ten_seconds_gets_408_and_the_connection_closes() {
        let mut l7 = L7::default();
        let mut c = connect(&mut l7, "198.51.100.7", 4000, 0);
        // Slowloris: a head that never ends.
        c.stack.socket(c.socket).send_slice(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: b\r\n").unwrap();
        shuttle(&mut l7, &mut c, 1_000_000);
        // Nothing more from the client: only timers move it (the deadline is one of them).
        while let Some(at) = l7.next_timer().filter(|&t| t <= HEAD_DEADLINE_NS) {
            for key in l7.due(at) {
                for (p, _) in l7.drive(&key, at).to_client {
                    c.stack.receive(p);
                }
            }
            shuttle(&mut l7, &mut c, at);
        }
        let mut got = Vec::new();
        let s = c.stack.socket(c.socket);
        while s.can_recv() {
            s.recv(|d| {
                got.extend_from_slice(d);
                (d.len(), ())
            })
            .unwrap();
        }
        assert!(got.starts_with(b"HTTP/1.1 408 Request Timeout"), "{}", String::from_utf8_lossy(&got));
        assert!(!s.may_recv(), "the proxy closed its side");
    }

    #[test]
    fn one_address_holds_at_most_per_source_max_connections() {
        let mut l7 = L7::default();
        let mode = || Mode { http: true, tls: None, alt_svc: None };
        for port in 0..PER_SOURCE_MAX as u16 {
            assert!(l7.accept(key("203.0.113.5", 1000 + port), 0, &[], mode(), 1, 0).is_ok());
        }
        assert_eq!(
            l7.accept(key("203.0.113.5", 9999), 0, &[], mode(), 1, 0),
            Err(Refused::SourceCap),
            "one more from the same address"
        );
        assert_eq!(l7.refused_per_source(), 1);
        assert!(l7.accept(key("198.51.100.7", 9999), 0, &[], mode(), 1, 0).is_ok(), "another address is not held back");
        l7.remove(&key("203.0.113.5", 1000));
        assert!(l7.accept(key("203.0.113.5", 9999), 0, &[], mode(), 1, 0).is_ok(), "room again once one ends");
    }

    #[test]
    fn one_ipv6_client_holds_per_source_max_connections_across_all_addresses_of_its_64() {
        let mut l7 = L7::default();
        let mode = || Mode { http: true, tls: None, alt_svc: None };
        // 48 addresses of one /64, as the attack pass used: the cap is the /64's.
        for i in 0..PER_SOURCE_MAX {
            let src = format!("2001:db8:0:7::{:x}", i % 48 + 1);
            assert!(l7.accept(key(&src, 1000 + i as u16), 0, &[], mode(), 1, 0).is_ok(), "{src}");
        }
        assert_eq!(
            l7.accept(key("2001:db8:0:7::ffff", 9999), 0, &[], mode(), 1, 0),
            Err(Refused::SourceCap),
            "another address of the /64"
        );
        assert!(
            l7.accept(key("2001:db8:0:8::1", 9999), 0, &[], mode(), 1, 0).is_ok(),
            "the next /64 is another client"
        );
        // IPv4 by /24 when the node is told so.
        let mut by_24 = L7::new(24);
        for i in 0..PER_SOURCE_MAX {
            assert!(
                by_24.accept(key(&format!("203.0.113.{}", i % 200), 1000 + i as u16), 0, &[], mode(), 1, 0).is_ok()
            );
        }
        assert_eq!(by_24.accept(key("203.0.113.250", 9999), 0, &[], mode(), 1, 0), Err(Refused::SourceCap));
        assert!(by_24.accept(key("203.0.114.1", 9999), 0, &[], mode(), 1, 0).is_ok());
    }

    #[test]
    fn a_body_the_backend_is_not_taking_stays_in_the_clients_window_not_in_memory() {
        let mut l7 = L7::default();
        let mut c = connect(&mut l7, "198.51.100.7", 4000, 0);
        let mut body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n".to_vec();
        body.resize(4 * 1024 * 1024, b'a');
        let mut sent = 0;
        // No backend ever connects: the client pushes as long as the windows let it.
        for round in 0..2_000u64 {
            let s = c.stack.socket(c.socket);
            if s.can_send() && sent < body.len() {
                sent += s.send_slice(&body[sent..]).unwrap();
            }
            shuttle(&mut l7, &mut c, round * 1_000_000);
        }
        let held = l7.conns.get(&c.key).map(|p| p.to_backend.len()).unwrap();
        assert!(held <= BUFFER_MAX + 4096, "the proxy holds {held} bytes of the body");
        assert!(sent < body.len(), "the client was held back ({sent} of {} bytes out)", body.len());
    }
}
