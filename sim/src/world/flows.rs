//! What one client's flow is, apart from the world that moves it: its counters on one
//! path, the TCP side's requests and answer in progress, when it last made progress,
//! and how a flow's slot maps to its source port and id. It imports nothing from the
//! rest of the world but its typed ids, so every kind of traffic (UDP, TCP, QUIC) and
//! every part that reads a flow can take it without taking each other.

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyedge_topology::CLIENT_WAIT_NS;
use smoltcp::iface::SocketHandle;

use crate::world::ids::ClientId;

/// Requests a TCP flow queues before it counts the oldest as lost.
pub(super) const TCP_PENDING_MAX: usize = 256;

/// Client source ports: 10000 + slot * 1000 + connection generation.
pub(super) const PORT_BASE: u16 = 10_000;

pub(super) const PORTS_PER_SLOT: u16 = 1_000;

/// One client's traffic on one path.
#[derive(Debug, Default)]
pub(super) struct Flow {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) last_backend: Option<SocketAddr>,
    pub(super) last_rtt_ns: Option<u64>,
    /// Sum of the differences between consecutive round trips (a flow's few thousand
    /// answers, each a difference of at most the run's length: far from 2^64 ns).
    pub(super) jitter_sum_ns: u64,
    pub(super) jitter_n: u64,
    /// Fault trackers waiting for this flow's first reply after the fault (boxed: most
    /// flows never watch, and an empty list inline is 24 bytes a flow).
    pub(super) watching: Option<Box<[(usize, usize)]>>,
    pub(super) udp_seq: u64,
    /// Source-port generation: bumped when the client moves to a new port (a TCP
    /// reconnect, a migration).
    pub(super) generation: u16,
    /// A TCP class's slot: its flow's index in the client's `tcp_flows`.
    pub(super) tcp: Option<u16>,
}

impl Flow {
    /// A reply after `rtt_ns`, from `backend` when the answer names one: counted, its
    /// jitter against the last round trip added; the backend when it is new to the flow.
    pub(super) fn replied(&mut self, rtt_ns: u64, backend: Option<SocketAddr>) -> Option<SocketAddr> {
        self.received += 1;
        debug_assert!(self.received <= self.sent, "a flow gets no more replies than it sent requests");
        if let Some(prev) = self.last_rtt_ns {
            self.jitter_sum_ns = self.jitter_sum_ns.saturating_add(prev.abs_diff(rtt_ns));
            self.jitter_n += 1;
        }
        self.last_rtt_ns = Some(rtt_ns);
        let new_backend = backend.filter(|b| self.last_backend != Some(*b));
        if backend.is_some() {
            self.last_backend = backend;
        }
        new_backend
    }
}

/// The TCP side of one flow: a connection carrying sequential requests.
#[derive(Default)]
pub(super) struct TcpFlow {
    pub(super) handle: Option<SocketHandle>,
    /// Issue times of requests not yet answered; the front one is on the wire.
    pub(super) pending: VecDeque<u64>,
    /// The request in progress and its answer so far: made when the flow is served,
    /// dropped between requests ([`TcpFlow::shed`]).
    pub(super) exchange: Option<Box<Exchange>>,
    /// HTTPS: the client's TLS session on the current connection (boxed: a kilobyte
    /// every client would carry for nothing when its classes are not HTTPS).
    pub(super) tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes waiting for room in the socket (TLS records, or the plain request).
    pub(super) wire: Vec<u8>,
    pub(super) progress: Progress,
}

/// A TCP flow's request in progress: how much of it is written, and its answer so far.
#[derive(Default)]
pub(super) struct Exchange {
    pub(super) sent_bytes: usize,
    pub(super) resp_got: u64,
    pub(super) head: Vec<u8>,
    /// HTTP: where the response body starts in `head`, and the response's full length.
    pub(super) body_at: Option<usize>,
    pub(super) expected: Option<u64>,
}

/// When a client's flow (TCP or QUIC) last made progress: a connection begun, an answer
/// completed, a request issued to an idle flow. With a request outstanding, a connection
/// silent for `CLIENT_WAIT_NS` past it is given up, as an application's read timeout
/// would (the lab's probe waits as long): that request counts as lost and the flow
/// connects again. Without it a client whose answer a restarted load balancer can no
/// longer route back waited for ever, having nothing unacknowledged to retransmit.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Progress {
    at_ns: u64,
}

impl Progress {
    pub(super) fn made(&mut self, now: u64) {
        self.at_ns = now;
    }

    /// When a flow that `waiting` on a request gives its connection up unless it makes
    /// progress first; `None` when it waits on nothing.
    pub(super) fn give_up_at(self, waiting: bool) -> Option<u64> {
        waiting.then(|| self.at_ns.saturating_add(CLIENT_WAIT_NS))
    }

    /// Whether a flow `waiting` on a request has been silent too long at `now`.
    pub(super) fn gone_silent(self, waiting: bool, now: u64) -> bool {
        self.give_up_at(waiting).is_some_and(|at| now >= at)
    }
}

pub(super) fn port_of(slot: usize, generation: u16) -> u16 {
    PORT_BASE + slot as u16 * PORTS_PER_SLOT + generation % PORTS_PER_SLOT
}

pub(super) fn slot_of(port: u16) -> Option<usize> {
    port.checked_sub(PORT_BASE).map(|p| usize::from(p / PORTS_PER_SLOT))
}

pub(super) fn flow_id(client: ClientId, slot: usize) -> u64 {
    ((client.0 as u64) << 8) | slot as u64
}
