//! The listeners a CLB node terminates itself: layer-7 TCP (HTTP, HTTPS, TCP SSL),
//! whose connections the node's own TCP holds and relays, and QUIC, whose connections
//! quinn holds and whose streams are relayed to backends over the node's TCP. Both bind
//! a backend when the first request (or stream) needs one and give the binding and the
//! SNAT port back when the connection ends.

use std::net::{IpAddr, SocketAddr};

use anyedge_proto::inner::{self, TcpFlags};
use anyedge_proto::{FlowKey, Transport};

use super::l7_front::{Admission, Opening};
use super::{Clb, ClbDrop};
use crate::conn_table::Ingress;
use crate::quic_listener::{QuicCounts, QuicStep};
use crate::security::BackendGuard;

/// Whether a packet is a bare SYN (the node's own, opening a connection to a backend).
fn is_syn(bytes: &[u8]) -> bool {
    inner::parse(bytes).is_ok_and(|i| i.tcp.is_some_and(|f| f.syn && !f.ack))
}

/// A SYN toward a backend with a TOA option naming `client` (the node's own SYN's few
/// options always leave room).
fn named_syn(bytes: Vec<u8>, client: SocketAddr) -> Vec<u8> {
    let toa = inner::toa_option((client.ip(), client.port()));
    inner::insert_tcp_option(&bytes, &toa).unwrap_or(bytes)
}

/// Whether a UDP payload is a QUIC long-header Initial (RFC 9000 §17.2.2: form and
/// fixed bits set, type 0), the datagram that asks for a new connection.
fn is_quic_initial(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b & 0xf0 == 0xc0)
}

/// What asking for a layer-7 connection's backend came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connect {
    /// Connected: the request goes on.
    Connected,
    /// The backend's security groups refuse the client: the connection is refused.
    Denied,
    /// No backend, port or socket now: the request waits.
    Nothing,
}

impl Clb {
    /// A client packet of a layer-7 listener: the node's own TCP takes it.
    pub(super) fn forward_l7(
        &mut self,
        now_ns: u64,
        key: FlowKey,
        tcp: Option<TcpFlags>,
        packet: Vec<u8>,
        ingress: Ingress,
        li: usize,
    ) -> Result<(), ClbDrop> {
        let config = self.listeners[li].config();
        let mode = crate::l7::Mode { http: config.http, tls: config.tls.as_ref(), alt_svc: config.alt_svc.as_ref() };
        let seed = u64::from(key.flow_hash()) ^ u64::from(self.node.index) << 32;
        // What the source holds through QUIC matters only to a connection not yet held.
        let held_elsewhere = match self.l7.proxy().get(&key) {
            Some(_) => 0,
            None => {
                let source = crate::cidr::source_prefix(key.src, self.l7.proxy().source_prefix_v4());
                self.listeners.iter().filter_map(|l| l.quic()).map(|q| q.relays_from(source)).sum()
            }
        };
        let at = Opening { listener: li, mode, own: &self.node.own_addresses, seed, held_elsewhere };
        match self.l7.admit(key, tcp, &packet, at, now_ns) {
            Admission::Proxied { new } => {
                self.flows_created += u64::from(new);
                self.l7.proxy_mut().receive_client(&key, ingress, packet);
                self.drive_l7(&key, now_ns);
                Ok(())
            }
            Admission::Answer(syn_ack) => {
                self.reply_to_client(ingress, key.flow_hash(), syn_ack, 0).map_err(ClbDrop::from)
            }
            Admission::Refused(drop, reset) => {
                if let Some(rst) = reset {
                    let _ = self.reply_to_client(ingress, key.flow_hash(), rst, 0);
                }
                Err(drop)
            }
        }
    }

    /// A backend's packet to a connection the node terminates; handed back when it is
    /// not one.
    pub(super) fn terminated_from_backend(
        &mut self,
        now_ns: u64,
        from: SocketAddr,
        local: (IpAddr, u16),
        packet: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let quic = self.listeners.iter().position(|l| l.quic().is_some_and(|q| q.by_backend(from, local).is_some()));
        if let Some(li) = quic {
            if let Some(q) = self.listeners.quic_mut(li)
                && let Some(ch) = q.by_backend(from, local)
            {
                q.receive_backend(ch, packet);
            }
            self.drive_quic(li, now_ns, Ingress::Direct);
            return None;
        }
        let Some(client_key) = self.l7.proxy().by_backend(from, local) else { return Some(packet) };
        self.l7.proxy_mut().receive(&client_key, packet);
        self.drive_l7(&client_key, now_ns);
        None
    }

    /// Moves along every terminated connection whose timer is due.
    pub(super) fn terminated_timeout(&mut self, now_ns: u64) {
        for key in self.l7.proxy().due(now_ns) {
            self.drive_l7(&key, now_ns);
        }
        for li in 0..self.listeners.len() {
            let due = self.listeners.quic_mut(li).and_then(|q| q.poll_timeout(now_ns)).is_some_and(|t| t <= now_ns);
            if due {
                self.drive_quic(li, now_ns, Ingress::Direct);
            }
        }
    }

    /// Moves a layer-7 connection along and sends what it produced.
    fn drive_l7(&mut self, key: &FlowKey, now_ns: u64) {
        let mut step = self.l7.proxy_mut().drive(key, now_ns);
        // A backend chosen, or further lanes opened, the connection moves on at once (its
        // first request, then the requests waiting for lanes): two rounds settle it.
        for _ in 0..2 {
            let moved = if step.needs_backend {
                self.connect_l7(key, now_ns) != Connect::Nothing
            } else {
                step.lanes_wanted > 0 && self.open_lanes(key, step.lanes_wanted) > 0
            };
            if !moved || step.finished {
                break;
            }
            let more = self.l7.proxy_mut().drive(key, now_ns);
            step.to_client.extend(more.to_client);
            step.to_backend.extend(more.to_backend);
            step.finished = more.finished;
            (step.needs_backend, step.lanes_wanted) = (more.needs_backend, more.lanes_wanted);
        }
        let Some(c) = self.l7.proxy().get(key) else { return };
        let (ingress, listener, bound) = (c.ingress(), c.listener(), c.bound());
        for (packet, segment) in step.to_client {
            let _ = self.reply_to_client(ingress, key.flow_hash(), packet, segment);
        }
        if let Some((_, backend, _)) = bound {
            // TCP SSL: the backend's peer is this node; a TOA option names the client.
            let raw = !self.listeners[listener].config().http;
            let client = SocketAddr::new(key.src, key.src_port);
            for bytes in step.to_backend {
                let bytes = if raw && is_syn(&bytes) { named_syn(bytes, client) } else { bytes };
                self.outbox.send_to_backend(backend, bytes);
            }
        }
        if step.finished {
            self.finish_l7(key);
        }
    }

    /// Binds a layer-7 connection whose first request came to a backend, and opens the
    /// node's connection to it from a SNAT port. The backend's security groups judge the
    /// client first: the backend will see this node's address.
    fn connect_l7(&mut self, key: &FlowKey, now_ns: u64) -> Connect {
        let Some(li) = self.l7.proxy().get(key).map(crate::l7::Proxied::listener) else { return Connect::Nothing };
        let Some(binding) = self.pick(li, key, now_ns) else { return Connect::Nothing };
        if !self.backend_admits(li, binding, key) {
            self.l7.proxy_mut().deny(key);
            return Connect::Denied;
        }
        let backend = self.backend_addr(li, binding);
        let Some(local) = self.allocate_snat(Transport::Tcp, backend) else { return Connect::Nothing };
        if !self.l7.proxy_mut().connect(key, binding, backend, local) {
            // Not connected: the port was never used.
            self.snat.free(local.0, local.1, Transport::Tcp, backend);
            return Connect::Nothing;
        }
        self.listeners.acquire(li, binding);
        debug_assert!(
            self.l7.proxy().get(key).and_then(|c| c.bound()).is_some_and(|(b, _, l)| b == binding && l == local)
        );
        Connect::Connected
    }

    /// Opens up to `wanted` further backend connections (lanes) of an HTTP/2 connection
    /// to its backend, each from a free SNAT port (none is taken back from another flow:
    /// a lane is worth a port only when one is free); how many opened.
    fn open_lanes(&mut self, key: &FlowKey, wanted: usize) -> usize {
        let Some((_, backend, (ip, _))) = self.l7.proxy().get(key).and_then(|c| c.bound()) else { return 0 };
        let mut opened = 0;
        for _ in 0..wanted {
            let Some(port) = self.snat.take(ip, Transport::Tcp, backend) else { break };
            if !self.l7.proxy_mut().add_lane(key, (ip, port)) {
                self.snat.free(ip, port, Transport::Tcp, backend);
                break;
            }
            opened += 1;
        }
        opened
    }

    /// Forgets a finished layer-7 connection and gives back its binding and SNAT ports.
    fn finish_l7(&mut self, key: &FlowKey) {
        let Some(c) = self.l7.proxy_mut().remove(key) else { return };
        if let Some((binding, backend, local)) = c.bound() {
            self.listeners.release(c.listener(), binding);
            for (ip, port) in std::iter::once(local).chain(c.lane_ports()) {
                debug_assert!(
                    self.snat.is_taken(ip, port, Transport::Tcp, backend),
                    "a bound connection holds its ports"
                );
                self.snat.free(ip, port, Transport::Tcp, backend);
            }
        }
    }

    /// A client datagram of a QUIC listener: quinn takes it. An Initial from a client
    /// that every backend's security groups deny is dropped before any handshake, as
    /// those backends would drop its SYN at layer 4.
    pub(super) fn forward_quic(&mut self, now_ns: u64, key: &FlowKey, packet: &[u8], ingress: Ingress, li: usize) {
        let payload = inner::transport_payload(packet);
        if is_quic_initial(payload) && self.every_backend_denies(li, key) {
            return;
        }
        let mut step = QuicStep::default();
        if let Some(q) = self.listeners.quic_mut(li) {
            let client = SocketAddr::new(key.src, key.src_port);
            q.receive(now_ns, client, payload, ingress, key.flow_hash(), &mut step);
        }
        self.apply_quic(li, now_ns, step, ingress);
        self.drive_quic(li, now_ns, ingress);
    }

    /// Drives a QUIC listener and carries out what it asks.
    fn drive_quic(&mut self, li: usize, now_ns: u64, fallback: Ingress) {
        // Choosing backends and opening relays produce more work: a few rounds settle it.
        for _ in 0..4 {
            let mut step = QuicStep::default();
            let Some(q) = self.listeners.quic_mut(li) else { return };
            q.drive(now_ns, &mut step);
            let more = !step.need_backend.is_empty() || !step.need_port.is_empty();
            self.apply_quic(li, now_ns, step, fallback);
            if !more {
                break;
            }
        }
        // What the listener holds now counts against the node's budget at once: a burst
        // meets the budget before it passes it, not a sweep later.
        self.count_terminated_memory();
    }

    /// Carries out what a QUIC listener asked for, in order: backends for new
    /// connections, ports for new streams, datagrams out, releases.
    fn apply_quic(&mut self, li: usize, now_ns: u64, step: QuicStep, fallback: Ingress) {
        for ch in step.need_backend {
            self.bind_quic(li, ch, now_ns);
        }
        for (ch, stream) in step.need_port {
            let backend = self.listeners[li].quic().and_then(|q| q.conn(ch)).and_then(|c| c.backend);
            let Some(backend) = backend else {
                // Not bound yet: the stream asks again once its connection is.
                if let Some(q) = self.listeners.quic_mut(li) {
                    q.unported(ch, stream);
                }
                continue;
            };
            if !self.source_may_open(li, ch) {
                if let Some(q) = self.listeners.quic_mut(li) {
                    q.refuse_stream(ch, stream);
                }
                continue;
            }
            if let Some(local) = self.allocate_snat(Transport::Tcp, backend)
                && let Some(q) = self.listeners.quic_mut(li)
                && !q.open_relay(ch, stream, local)
            {
                self.snat.free(local.0, local.1, Transport::Tcp, backend);
            }
        }
        for (ch, dst, payload) in step.to_client {
            let Some(q) = self.listeners[li].quic() else { return };
            let (ingress, flow_hash) = q.conn(ch).map_or((fallback, 0), |c| (c.ingress, c.flow_hash));
            let Some(packet) = q.datagram_to(dst, &payload) else { continue };
            let _ = self.reply_to_client(ingress, flow_hash, packet, 0);
        }
        for (backend, client, bytes) in step.to_backend {
            let bytes = match client {
                Some(client) if is_syn(&bytes) => named_syn(bytes, client),
                _ => bytes,
            };
            self.outbox.send_to_backend(backend, bytes);
        }
        for (binding, ports) in step.closed {
            if let Some(b) = binding {
                self.listeners.release(li, b);
            }
            for (backend, (ip, port)) in ports {
                self.snat.free(ip, port, Transport::Tcp, backend);
            }
        }
    }

    /// Whether the client of QUIC connection `ch` may have one more backend connection:
    /// what its source holds over every layer-7 and QUIC listener of the node stays under
    /// [`crate::l7::PER_SOURCE_MAX`] (an HTTP/2 connection holds one backend connection
    /// a lane, an HTTP/3 one holds one per request at the backend).
    fn source_may_open(&self, li: usize, ch: quinn_proto::ConnectionHandle) -> bool {
        let Some(source) = self.listeners[li].quic().and_then(|q| q.source(ch)) else { return false };
        let quic: usize = self.listeners.iter().filter_map(|l| l.quic()).map(|q| q.relays_from(source)).sum();
        quic + self.l7.proxy().held_by(source) < crate::l7::PER_SOURCE_MAX
    }

    /// Whether no backend of listener `li` would let the client flow `key` in by its own
    /// groups; then it is counted as denied once, on the first backend with groups (the
    /// one its groups would have judged).
    fn every_backend_denies(&mut self, li: usize, key: &FlowKey) -> bool {
        let bindings = self.listeners[li].bindings();
        let as_judged = |b: &crate::tables::Binding| FlowKey {
            transport: Transport::Tcp,
            dst: b.backend.addr.ip(),
            dst_port: b.backend.addr.port(),
            ..*key
        };
        let denied = !bindings.is_empty()
            && bindings.iter().all(|b| !BackendGuard::would_admit(&b.backend.security_groups, &as_judged(b)));
        if denied && let Some(b) = bindings.iter().find(|b| !b.backend.security_groups.is_empty()) {
            let verdict = self.groups.for_backends.judge(&b.backend.security_groups, &as_judged(b));
            debug_assert_eq!(verdict, crate::security::Verdict::Drop, "every backend denies it");
        }
        denied
    }

    /// Chooses the backend of a QUIC connection just established, by its first address.
    fn bind_quic(&mut self, li: usize, ch: quinn_proto::ConnectionHandle, now_ns: u64) {
        let Some(q) = self.listeners[li].quic() else { return };
        let Some(first) = q.conn(ch).map(|c| c.first) else { return };
        let vip = q.vip();
        let key = FlowKey {
            transport: Transport::Udp,
            src: first.ip(),
            src_port: first.port(),
            dst: vip.ip(),
            dst_port: vip.port(),
        };
        let Some(binding) = self.pick(li, &key, now_ns) else { return };
        if !self.backend_admits(li, binding, &FlowKey { transport: Transport::Tcp, ..key }) {
            // The backend will see this node's address: its groups judge the client here.
            if let Some(q) = self.listeners.quic_mut(li) {
                q.deny(ch, now_ns);
            }
            return;
        }
        let backend = self.backend_addr(li, binding);
        if let Some(q) = self.listeners.quic_mut(li) {
            q.set_backend(ch, binding, backend, now_ns);
        }
        self.listeners.acquire(li, binding);
        self.flows_created += 1;
    }

    /// This node's QUIC listeners, summed.
    pub fn quic_counts(&self) -> QuicCounts {
        self.listeners.iter().filter_map(|l| l.quic()).fold(Default::default(), |sum, q| sum + q.counts())
    }
}
