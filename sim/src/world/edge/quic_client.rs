//! QUIC clients (quinn-proto): a connection per flow, a stream per request, datagrams
//! routed by the connection ID the CLB node issued. Toward a listener that offers `h3`
//! a client offers it too and each request is an HTTP/3 POST (the region's own
//! [`anyedge_region::h3::H3Client`]) whose answer the backend sizes by
//! `x-anyedge-response-bytes`; toward any other, a stream carries the simulator's own
//! request and answer as bytes.
use crate::world::edge::Edge;
use crate::world::edge::EdgeCx;
use crate::world::events::Ev;
use crate::world::events::PATHS;
use crate::world::events::Path;
use crate::world::flows::TCP_PENDING_MAX;
use crate::world::flows::flow_id;
use crate::world::flows::port_of;
use crate::world::ids::ClientId;
use anyedge_proto::inner;
use anyedge_topology::TrafficKind;
use std::net::SocketAddr;

impl Edge {
    pub(in crate::world) fn quic_issue(&mut self, client: ClientId, k: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        if now >= cx.wire.t().duration_ns {
            return;
        }
        let class = &cx.wire.t().traffic[cx.wire.t().clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Quic { requests_per_s, .. } = class.kind else { return };
        for path in PATHS {
            let slot = k * 2 + path as usize;
            self.note_sent(client, slot, now, cx);
            let c = &mut self.clients[client];
            if let Some(f) = c.quic_flows.get_mut(slot).and_then(Option::as_mut) {
                if f.pending.is_empty() {
                    f.progress.made(now);
                }
                f.pending.push_back(now);
                if f.pending.len() > TCP_PENDING_MAX {
                    f.pending.pop_front();
                }
            }
            self.client_quic_service(client, slot, cx);
        }
        cx.wire.schedule(now + (1e9 / requests_per_s) as u64, Ev::QuicIssue { client, k });
    }

    /// A client's QUIC poll of slot `slot`, when it is the one last armed.
    pub(in crate::world) fn client_quic_poll(&mut self, client: ClientId, slot: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        let flow = self.clients[client].quic_flows.get_mut(slot).and_then(Option::as_mut);
        if let Some(f) = flow
            && f.poll_at == Some(now)
        {
            f.poll_at = None;
            self.client_quic_service(client, slot, cx);
        }
    }

    /// Drives a client's QUIC flow: connect, one stream per request, read the answer.
    pub(in crate::world) fn client_quic_service(&mut self, client: ClientId, slot: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        let t = cx.wire.t();
        let group = self.clients[client].group;
        let class = &t.traffic[t.clients[group].traffic[slot / 2]];
        let TrafficKind::Quic { request, response, .. } = class.kind else { return };
        let addr = self.clients[client].addr;
        let remote = SocketAddr::new(t.vip_addr(class, addr), class.port);
        let listener = t.vips[class.vip]
            .listeners
            .iter()
            .find(|l| l.port == class.port && l.protocol == anyedge_topology::ListenerProtocol::Quic);
        let offer = crate::tls::quic_offer(listener.map_or(&[][..], |l| &l.alpn));
        let config = cx.pki.quic_clients.get(&offer).cloned();
        let authority = remote.to_string();
        let h3 = (offer == anyedge_region::quic_listener::H3).then_some(authority.as_str());
        let Some(f) = self.clients[client].quic_flows.get_mut(slot).and_then(Option::as_mut) else { return };
        let mut out = Vec::new();
        f.give_up_if_silent(now);
        if f.conn.is_none()
            && !f.pending.is_empty()
            && let Some(config) = config
        {
            f.conn = f.host.connect(now, config, remote, &remote.ip().to_string());
            f.connected = false;
            f.progress.made(now);
        }
        f.host.drive(now, &mut out);
        f.take_events();
        let live = f.connected && f.conn.is_some_and(|ch| f.host.conn(ch).is_some());
        let completed = f.exchange((request, response), h3);
        if live {
            f.host.drive(now, &mut out);
        }
        if completed.is_some() {
            f.progress.made(now);
        }
        let give_up_at = f.progress.give_up_at(!f.pending.is_empty());
        let next = f.host.poll_timeout().into_iter().chain(give_up_at).min();
        if let Some((issued, backend)) = completed {
            self.record_reply(client, slot, issued, backend, cx);
        }
        self.send_quic_datagrams(client, slot, out, cx);
        if let Some(at) = next {
            self.arm_quic_poll(client, slot, at.max(now), cx);
        }
    }

    /// Schedules a poll of a client's QUIC flow at `at`, unless one is due sooner.
    fn arm_quic_poll(&mut self, client: ClientId, slot: usize, at: u64, cx: &mut EdgeCx<'_, '_>) {
        let f = self.clients[client].quic_flows.get_mut(slot).and_then(Option::as_mut);
        if let Some(f) = f
            && f.poll_at.is_none_or(|t| at < t)
        {
            f.poll_at = Some(at);
            cx.wire.schedule(at, Ev::ClientQuicPoll { client, slot });
        }
    }

    /// Sends a client's QUIC datagrams from its slot's current source port.
    pub(in crate::world) fn send_quic_datagrams(
        &mut self,
        client: ClientId,
        slot: usize,
        out: Vec<anyedge_region::quic::QuicTransmit>,
        cx: &mut EdgeCx<'_, '_>,
    ) {
        let addr = self.clients[client].addr;
        let port = port_of(slot, self.clients[client].flows[slot].generation);
        let path = if slot.is_multiple_of(2) { Path::Anycast } else { Path::Direct };
        for (dst, _, payload) in out {
            let Some(packet) = inner::build_udp((addr, port), (dst.ip(), dst.port()), &payload) else { continue };
            let route = self.slot_route(client, slot / 2, path, cx);
            if let Some((link, to)) = route {
                cx.wire.send_over(link, flow_id(client, slot), to, packet);
            }
        }
    }
}
