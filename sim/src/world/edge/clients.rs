//! Client hosts and their traffic: UDP requests, TCP connections on smoltcp, SYN floods,
//! and the replies they record (round trips, backends, fault recoveries).
use crate::app;
use crate::world::client::Client;
use crate::world::client::ClientTcp;
use crate::world::client::Group;
use crate::world::client::GroupVip;
use crate::world::edge::Edge;
use crate::world::edge::EdgeCx;
use crate::world::events::Arrival;
use crate::world::events::Ev;
use crate::world::events::PATHS;
use crate::world::events::Path;
use crate::world::flows::PORT_BASE;
use crate::world::flows::TCP_PENDING_MAX;
use crate::world::flows::flow_id;
use crate::world::flows::port_of;
use crate::world::flows::slot_of;
use crate::world::forwarding::PopNode;
use crate::world::forwarding::PopView;
use crate::world::ids::ClientId;
use crate::world::ids::PopId;
use crate::world::ids::Table;
use crate::world::links::LinkKind;
use crate::world::tcp_app::TcpApp;
use crate::world::tcp_app::service_tcp_flow;
use crate::world::wire::Wire;
use anyedge_pop::rendezvous_node;
use anyedge_proto::FlowKey;
use anyedge_proto::Transport;
use anyedge_proto::inner;
use anyedge_topology::FaultAction;
use anyedge_topology::Target;
use anyedge_topology::Topology;
use anyedge_topology::TrafficKind;
use std::net::SocketAddr;

impl Edge {
    /// A request of `client`'s slot left now: counted on its flow and in the series.
    pub(in crate::world) fn note_sent(&mut self, client: ClientId, slot: usize, now: u64, cx: &mut EdgeCx<'_, '_>) {
        let c = &mut self.clients[client];
        c.flows[slot].sent += 1;
        let group = c.group;
        cx.wire.record().sent(group, slot, now);
    }

    /// How many clients' rows this world holds.
    #[cfg(test)]
    pub(in crate::world) fn held(&self) -> usize {
        self.clients.held()
    }

    /// Client `c`'s address, whichever world runs it.
    pub(in crate::world) fn addr_of(&self, c: ClientId) -> Option<std::net::IpAddr> {
        self.addrs.get(c)
    }

    pub(in crate::world) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Each group's first client (groups' clients are consecutive).
    pub(in crate::world) fn group_starts(&self) -> &[usize] {
        &self.group_start
    }

    /// Group `g`'s clients this world holds (all of them or none).
    pub(in crate::world) fn group_clients(&self, g: usize) -> impl Iterator<Item = &Client> {
        self.clients.range(self.group_ids(g)).map(|(_, c)| c)
    }

    /// Group `g`'s client ids.
    fn group_ids(&self, g: usize) -> std::ops::Range<usize> {
        let end = self.group_start.get(g + 1).copied().unwrap_or(self.clients.total());
        self.group_start[g]..end
    }

    /// Takes group `g`'s clients from another partition's world, which ran them.
    pub(in crate::world) fn take_group(&mut self, g: usize, other: &mut Edge) {
        self.clients.take(self.group_ids(g), &mut other.clients);
    }

    /// After a partitioned run: trackers' positions moved, so no flow watches any more.
    pub(in crate::world) fn forget_watches(&mut self) {
        for c in self.clients.iter_mut() {
            for f in c.flows.iter_mut() {
                f.watching = None;
            }
        }
    }

    /// POP `from`'s update, which the internet has heard: each group of partition `part`
    /// whose best route (the first POP of its order the internet has heard announce the
    /// VIP) it changes moves once the update has crossed to where the group hears BGP
    /// ([`Group::hears_after_ns`], [`GroupVip::bgp_hears_after_ns`]); at once where that is
    /// no later.
    pub(in crate::world) fn hear(&mut self, pops: &Table<PopId, PopNode>, from: PopId, part: u32, wire: &mut Wire<'_>) {
        let t = wire.t();
        for (gi, g) in self.groups.iter_mut().enumerate() {
            if !wire.moves_group(gi, part) {
                continue;
            }
            let transit_after_ns = g.hears_after_ns(t, from);
            for gv in &mut g.vips {
                let v = gv.vip;
                let route = gv.order.find(t, |p| pops[p].heard(v));
                if route == gv.heading {
                    continue;
                }
                let after_ns = gv.bgp_hears_after_ns(t, from, |p| pops[p].heard(v)).unwrap_or(transit_after_ns);
                gv.heading = route;
                if after_ns == 0 {
                    move_group(gi, gv, wire);
                } else {
                    wire.schedule(wire.now() + after_ns, Ev::GroupHears { group: gi, vip: v, route });
                }
            }
        }
    }

    /// A BGP update reached group `g`: it moves to `route` unless a later one, which
    /// reaches it after this, leads elsewhere.
    pub(in crate::world) fn group_hears(&mut self, g: usize, vip: usize, route: Option<PopId>, wire: &mut Wire<'_>) {
        let Some(gv) = self.groups[g].vips.iter_mut().find(|gv| gv.vip == vip) else { return };
        if gv.heading == route {
            move_group(g, gv, wire);
        }
    }

    /// The flows of this world's clients a fault touches, with each POP's core as `pop`
    /// gives it (its owner's, when the world runs partitioned) and what this world's
    /// POPs heard.
    pub(in crate::world) fn affected_flows(
        &self,
        action: &FaultAction,
        (view, pops): (&dyn PopView, &Table<PopId, PopNode>),
        wire: &Wire<'_>,
    ) -> Vec<(ClientId, usize)> {
        let t = wire.t();
        let mut out = Vec::new();
        for (ci, c) in self.clients.enumerate() {
            if !wire.owns(wire.group_part(c.group)) {
                continue;
            }
            let g = &self.groups[c.group];
            for (k, &class) in t.clients[c.group].traffic.iter().enumerate() {
                let vip = t.traffic[class].vip;
                let home = t.vips[vip].home;
                let slot = k * 2;
                let hit = match *action {
                    FaultAction::Down(Target::Pop(p)) => g.route(vip) == Some(PopId(p)),
                    FaultAction::Up(Target::Pop(p)) => {
                        let p = PopId(p);
                        g.find_pop(t, vip, |q| q == p || pops[q].heard(vip)) == Some(p) && g.route(vip) != Some(p)
                    }
                    FaultAction::Down(Target::Region(r)) | FaultAction::Up(Target::Region(r)) => home == r,
                    FaultAction::Down(Target::Backend { addr, .. })
                    | FaultAction::Up(Target::Backend { addr, .. })
                    | FaultAction::Unbind(Target::Backend { addr, .. })
                    | FaultAction::Bind(Target::Backend { addr, .. }) => c.flows[slot].last_backend == Some(addr),
                    FaultAction::Down(Target::Clb { region, index }) => {
                        home == region
                            && g.route(vip).is_some_and(|p| view.node_of(p, &self.slot_key(ci, slot, t)) == Some(index))
                    }
                    // The flows its POPs will send it once they find it back.
                    FaultAction::Up(Target::Clb { region, index }) => {
                        let nodes = t.regions[region].clb_nodes;
                        let hash = self.slot_key(ci, slot, t).flow_hash();
                        home == region
                            && g.route(vip).is_some_and(|p| {
                                let live = |n: u16| n == index || view.clb_up(p, region as u16, n);
                                view.node_of(p, &self.slot_key(ci, slot, t)).is_some()
                                    && rendezvous_node(hash, nodes, live) == index
                            })
                    }
                    FaultAction::Unbind(_) | FaultAction::Bind(_) => false,
                    FaultAction::SetWeight { addr, .. } => c.flows[slot].last_backend == Some(addr),
                    FaultAction::Down(Target::Control(_))
                    | FaultAction::Up(Target::Control(_))
                    | FaultAction::Partition(_)
                    | FaultAction::Heal => false,
                    FaultAction::Migrate(group) => c.group == group,
                    FaultAction::Link(lo) => g.route(vip) == Some(PopId(lo.pop)) && home == lo.region,
                };
                if hit {
                    out.push((ci, slot));
                }
            }
        }
        out
    }

    /// Every client of `group` changes its source port: QUIC carries on, TCP connections
    /// die with it.
    pub(in crate::world) fn migrate(&mut self, group: usize) {
        for client in self.clients.iter_mut().filter(|c| c.group == group) {
            for slot in 0..client.flows.len() {
                client.flows[slot].generation = client.flows[slot].generation.wrapping_add(1);
                if let Some(tcp) = client.tcp.as_deref_mut()
                    && let Some(h) =
                        client.flows[slot].tcp.and_then(|i| tcp.flows.get(usize::from(i))).and_then(|f| f.handle)
                {
                    tcp.stack.live(&[client.addr]).socket(h).abort();
                }
            }
        }
    }

    /// The flows fault tracker `tracker` follows (`affected`, in its order) watch it; the
    /// backend each was on.
    pub(in crate::world) fn watch(
        &mut self,
        tracker: usize,
        affected: &[(ClientId, usize)],
    ) -> Vec<Option<SocketAddr>> {
        let before = affected.iter().map(|&(c, s)| self.clients[c].flows[s].last_backend).collect();
        for (pos, &(c, s)) in affected.iter().enumerate() {
            let flow = &mut self.clients[c].flows[s];
            let mut watching = flow.watching.take().map(Vec::from).unwrap_or_default();
            watching.push((tracker, pos));
            flow.watching = Some(watching.into_boxed_slice());
        }
        before
    }

    /// The 5-tuple a client's traffic slot uses now (TCP: its current connection).
    pub(in crate::world) fn slot_key(&self, client: ClientId, slot: usize, t: &Topology) -> FlowKey {
        let c = &self.clients[client];
        let class = &t.traffic[t.clients[c.group].traffic[slot / 2]];
        let generation = c.flows[slot].generation;
        FlowKey {
            transport: class.transport(),
            src: c.addr,
            src_port: port_of(slot, generation),
            dst: t.vip_addr(class, c.addr),
            dst_port: class.port,
        }
    }

    pub(in crate::world) fn slot_route(
        &self,
        client: ClientId,
        k: usize,
        path: Path,
        cx: &EdgeCx<'_, '_>,
    ) -> Option<(LinkKind, Arrival)> {
        let c = &self.clients[client];
        let class = &cx.wire.t().traffic[cx.wire.t().clients[c.group].traffic[k]];
        match path {
            Path::Anycast => {
                let p = self.groups[c.group].route(class.vip)?;
                Some((LinkKind::InetPop(cx.wire.link_pop(c.group, p, 0)), Arrival::PopFromClient(p)))
            }
            Path::Direct => {
                let r = cx.wire.t().vips[class.vip].home;
                let hash = self.slot_key(client, k * 2 + 1, cx.wire.t()).flow_hash();
                let quic = matches!(class.kind, anyedge_topology::TrafficKind::Quic { .. });
                let to = Arrival::RegionEdge { region: r as u32, hash, quic };
                Some((LinkKind::InetDirect(cx.wire.link_direct(c.group, r, 0)), to))
            }
        }
    }

    pub(in crate::world) fn udp_send(&mut self, client: ClientId, k: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        if now >= cx.wire.t().duration_ns {
            return;
        }
        let class = &cx.wire.t().traffic[cx.wire.t().clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Udp { interval_ns, size } = class.kind else {
            return;
        };
        let vip = (cx.wire.t().vip_addr(class, self.clients[client].addr), class.port);
        for path in PATHS {
            let slot = k * 2 + path as usize;
            self.note_sent(client, slot, now, cx);
            let flow = &mut self.clients[client].flows[slot];
            let seq = flow.udp_seq;
            flow.udp_seq += 1;
            let payload = app::udp_request(seq, now, size as usize);
            let src = (self.clients[client].addr, port_of(slot, 0));
            let Some(packet) = inner::build_udp(src, vip, &payload) else {
                continue;
            };
            if let Some((link, to)) = self.slot_route(client, k, path, cx) {
                cx.wire.send_over(link, flow_id(client, slot), to, packet);
            }
        }
        cx.wire.schedule(now + interval_ns, Ev::UdpSend { client, k });
    }

    /// One SYN of a flood, from a random low source port, never completed.
    pub(in crate::world) fn flood_send(&mut self, client: ClientId, k: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        if now >= cx.wire.t().duration_ns {
            return;
        }
        let class = &cx.wire.t().traffic[cx.wire.t().clients[self.clients[client].group].traffic[k]];
        let TrafficKind::SynFlood { rate_per_s } = class.kind else { return };
        self.note_sent(client, k * 2, now, cx);
        let c = &mut self.clients[client];
        let Some(rng) = c.rng.as_mut() else { return };
        let src_port = 1024 + rng.below(u64::from(PORT_BASE - 1024)) as u16;
        let seq = rng.next_u64() as u32;
        let syn = inner::bare_tcp(src_port, class.port, smoltcp::wire::TcpControl::Syn, seq, None, Some(1460));
        if let Some(packet) = inner::build_tcp(c.addr, cx.wire.t().vip_addr(class, c.addr), &syn)
            && let Some((link, to)) = self.slot_route(client, k, Path::Anycast, cx)
        {
            cx.wire.send_over(link, flow_id(client, k * 2) ^ u64::from(src_port) << 40, to, packet);
        }
        cx.wire.schedule(now + (1e9 / rate_per_s) as u64, Ev::FloodSend { client, k });
    }

    pub(in crate::world) fn tcp_issue(&mut self, client: ClientId, k: usize, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        if now >= cx.wire.t().duration_ns {
            return;
        }
        let class = &cx.wire.t().traffic[cx.wire.t().clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Tcp { requests_per_s, .. } = class.kind else {
            return;
        };
        for path in PATHS {
            let slot = k * 2 + path as usize;
            self.note_sent(client, slot, now, cx);
            let c = &mut self.clients[client];
            let Some(ClientTcp { stack, flows, .. }) = c.tcp.as_deref_mut() else { continue };
            let Some(tf) = c.flows[slot].tcp.and_then(|i| flows.get_mut(usize::from(i))) else { continue };
            if tf.pending.is_empty() {
                tf.progress.made(now);
            }
            tf.pending.push_back(now);
            if tf.pending.len() > TCP_PENDING_MAX {
                // The oldest request is abandoned with its connection (its answer must not
                // be taken for the next one's): counted as sent, never received.
                tf.pending.pop_front();
                if let Some(h) = tf.handle {
                    stack.live(&[c.addr]).socket(h).abort();
                }
                tf.reset_exchange();
            }
        }
        self.client_tcp_service(client, cx);
        cx.wire.schedule(now + (1e9 / requests_per_s) as u64, Ev::TcpIssue { client, k });
    }

    /// Drives a client's TCP flows: (re)connect, write requests, read responses, poll.
    pub(in crate::world) fn client_tcp_service(&mut self, client: ClientId, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        let t = cx.wire.t();
        let group = self.clients[client].group;
        let addr = self.clients[client].addr;
        let Some(mut tcp) = self.clients[client].tcp.take() else {
            return;
        };
        let ClientTcp { stack: host, flows: tcp_flows, .. } = &mut *tcp;
        let stack = host.live(&[addr]);
        stack.poll(now);
        let mut completions: Vec<(usize, u64, Option<SocketAddr>)> = Vec::new();
        let mut give_up_at: Option<u64> = None;
        for (k, &class_idx) in t.clients[group].traffic.iter().enumerate() {
            let class = &t.traffic[class_idx];
            let TrafficKind::Tcp { request, response, .. } = class.kind else {
                continue;
            };
            let remote = (t.vip_addr(class, addr), class.port);
            let app = TcpApp {
                request,
                response,
                http: cx.classes[class_idx].http,
                tls: cx.classes[class_idx].tls.then(|| cx.pki.tls_client.clone()).flatten(),
            };
            for path in PATHS {
                let slot = k * 2 + path as usize;
                let c = &mut self.clients[client];
                let flow = &mut c.flows[slot];
                let Some(tf) = flow.tcp.and_then(|i| tcp_flows.get_mut(usize::from(i))) else { continue };
                let generation = &mut flow.generation;
                service_tcp_flow(stack, (tf, generation), (slot, now), addr, remote, &app, &mut completions);
                // Between requests a kept-alive connection holds no buffer memory.
                if tf.pending.is_empty() {
                    tf.shed();
                    if let Some(h) = tf.handle {
                        stack.socket(h).release_idle_buffers();
                    }
                }
                give_up_at = give_up_at.into_iter().chain(tf.progress.give_up_at(!tf.pending.is_empty())).min();
            }
        }
        stack.poll(now);
        let out: Vec<Vec<u8>> = stack.drain_tx().collect();
        let next = stack.poll_at_ns(now).into_iter().chain(give_up_at).min();
        // Between requests a kept-alive connection is a few hundred bytes: the stack parks
        // (made again exactly as it was when the next request or packet comes).
        if tcp_flows.iter().all(|tf| tf.pending.is_empty()) {
            host.park_if_idle();
        }
        self.clients[client].tcp = Some(tcp);
        for (slot, issued, backend) in completions {
            self.record_reply(client, slot, issued, backend, cx);
        }
        for packet in out {
            let Ok(info) = inner::parse(&packet) else { continue };
            let Some(slot) = slot_of(info.key.src_port) else {
                continue;
            };
            let path = if slot.is_multiple_of(2) { Path::Anycast } else { Path::Direct };
            if let Some((link, to)) = self.slot_route(client, slot / 2, path, cx) {
                cx.wire.send_over(link, flow_id(client, slot), to, packet);
            }
        }
        if let Some(at) = next {
            self.arm_client_poll(client, at.max(now), cx);
        }
    }

    /// A client's TCP poll, when it is the one last armed.
    pub(in crate::world) fn client_tcp_poll(&mut self, client: ClientId, cx: &mut EdgeCx<'_, '_>) {
        let now = cx.wire.now();
        if let Some(tcp) = self.clients[client].tcp.as_deref_mut()
            && tcp.poll_at == Some(now)
        {
            tcp.poll_at = None;
            self.client_tcp_service(client, cx);
        }
    }

    pub(in crate::world) fn arm_client_poll(&mut self, client: ClientId, at: u64, cx: &mut EdgeCx<'_, '_>) {
        let c = &mut self.clients[client];
        let Some(tcp) = c.tcp.as_deref_mut() else { return };
        if tcp.poll_at.is_none_or(|t| at < t) {
            tcp.poll_at = Some(at);
            cx.wire.schedule(at, Ev::ClientTcpPoll { client });
        }
    }

    pub(in crate::world) fn record_reply(
        &mut self,
        client: ClientId,
        slot: usize,
        sent_ns: u64,
        backend: Option<SocketAddr>,
        cx: &mut EdgeCx<'_, '_>,
    ) {
        let now = cx.wire.now();
        let group = self.clients[client].group;
        let rtt_ns = now.saturating_sub(sent_ns);
        let class = cx.wire.t().clients[group].traffic[slot / 2];
        let floor_ns = self.groups[group].floor_ns(cx.wire.t().traffic[class].vip)[slot % 2];
        if rtt_ns < floor_ns {
            cx.wire.violation(format!(
                "client group `{}`: a reply took {rtt_ns} ns, faster than light allows ({floor_ns} ns)",
                cx.wire.t().clients[group].name
            ));
        }
        if let Some(b) = backend
            && !cx.classes[class].backends.contains(&b)
        {
            cx.wire.violation(format!(
                "client group `{}`: answered by {b}, a backend its listener never sends to",
                cx.wire.t().clients[group].name
            ));
        }
        cx.wire.record().replied(group, slot, sent_ns, rtt_ns, now, slot % 2 == Path::Anycast as usize);
        let flow = &mut self.clients[client].flows[slot];
        let new_backend = flow.replied(rtt_ns, backend);
        let watching = flow.watching.take();
        let mut still = Vec::new();
        for (tr, pos) in watching.into_iter().flat_map(|w| w.into_vec()) {
            let tracker = &mut cx.wire.record().trackers_mut()[tr];
            if sent_ns >= tracker.at_ns {
                tracker.first_reply_ns[pos] = Some(now);
                tracker.changed[pos] =
                    tracker.before[pos].is_some() && backend.is_some() && tracker.before[pos] != backend;
            } else {
                still.push((tr, pos));
            }
        }
        self.clients[client].flows[slot].watching = (!still.is_empty()).then(|| still.into_boxed_slice());
        // A flow counts once per backend that served it: only a change needs recording.
        if let Some(b) = new_backend {
            cx.servers.record_flow(b, client, slot);
        }
    }

    pub(in crate::world) fn client_receive(&mut self, client: ClientId, packet: Vec<u8>, cx: &mut EdgeCx<'_, '_>) {
        let Ok(info) = inner::parse(&packet) else { return };
        match info.key.transport {
            Transport::Udp => {
                let Some(slot) = slot_of(info.key.dst_port) else { return };
                if slot >= self.clients[client].flows.len() {
                    return;
                }
                // A QUIC class's slot (known from the topology, without touching the
                // client's QUIC table: most UDP is not QUIC).
                let class = cx.wire.t().clients[self.clients[client].group].traffic[slot / 2];
                if matches!(cx.wire.t().traffic[class].kind, TrafficKind::Quic { .. }) {
                    let now = cx.wire.now();
                    let remote = SocketAddr::new(info.key.src, info.key.src_port);
                    let payload = &packet[packet.len() - info.payload_len..];
                    let mut out = Vec::new();
                    if let Some(f) = self.clients[client].quic_flows.get_mut(slot).and_then(Option::as_mut) {
                        f.host.receive(now, remote, Some(info.key.dst), payload, &mut out);
                    }
                    self.send_quic_datagrams(client, slot, out, cx);
                    self.client_quic_service(client, slot, cx);
                    return;
                }
                let Some(reply) = app::parse_udp_reply(&packet[packet.len() - info.payload_len..]) else {
                    return;
                };
                self.record_reply(client, slot, reply.sent_ns, Some(reply.backend), cx);
            }
            Transport::Tcp => {
                let c = &mut self.clients[client];
                if let Some(tcp) = c.tcp.as_deref_mut() {
                    tcp.stack.live(&[c.addr]).receive(packet);
                    self.client_tcp_service(client, cx);
                }
            }
        }
    }
}

/// Group `g` takes the route its last update leads to, for VIP `gv`.
fn move_group(g: usize, gv: &mut GroupVip, wire: &mut Wire<'_>) {
    if gv.heading != gv.route {
        // For the report's map: where the group's anycast traffic lands now.
        let now = wire.now();
        wire.record().catchment_moved(now, g, gv.vip, gv.heading);
        gv.route = gv.heading;
    }
}

#[cfg(test)]
mod tests {
    use crate::world::World;
    use crate::world::client::Client;
    use crate::world::client::ClientTcp;
    use crate::world::client::PopOrder;
    use crate::world::flows::Flow;
    use crate::world::flows::TcpFlow;
    use crate::world::ids::PopId;
    use crate::world::servers::BackendConn;
    use anyedge_region::tcp_stack::ParkedStack;
    use anyedge_region::tcp_stack::Stack;
    use std::mem::size_of;

    /// What client `c` holds between requests, in bytes: its row and flows, and for
    /// TCP its flows' state and its parked stack (`None` while a request is outstanding
    /// or its stack is live).
    fn idle_client_bytes(c: &Client) -> Option<usize> {
        let tcp = match c.tcp.as_deref() {
            None => 0,
            Some(tcp) => {
                let Stack::Parked(p) = &tcp.stack else { return None };
                if tcp.flows.iter().any(|f| !f.pending.is_empty() || f.exchange.is_some() || f.tls.is_some()) {
                    return None;
                }
                let heap: usize = tcp.flows.iter().map(|f| f.pending.capacity() * 8 + f.wire.capacity()).sum();
                size_of::<ClientTcp>()
                    + tcp.flows.len() * size_of::<TcpFlow>()
                    + heap
                    + size_of::<ParkedStack>()
                    + p.heap_bytes()
            }
        };
        let watching: usize = c.flows.iter().map(|f| f.watching.as_ref().map_or(0, |w| w.len() * 16)).sum();
        Some(size_of::<Client>() + c.flows.len() * size_of::<Flow>() + watching + c.quic_flows.len() * 8 + tcp)
    }

    /// What a backend's end of a kept-alive connection holds between requests (`None`
    /// while it reads or answers one).
    fn idle_conn_bytes(conn: &BackendConn) -> Option<usize> {
        let Stack::Parked(p) = &conn.stack else { return None };
        let serve = conn.serve.header.capacity() + conn.serve.pending_resp.capacity();
        Some(size_of::<BackendConn>() + size_of::<ParkedStack>() + p.heap_bytes() + serve)
    }

    /// A client between requests costs a few hundred bytes: a UDP client its row and
    /// two flows (anycast and direct); a browsing client also its TCP flows and a
    /// parked stack with a kept-alive connection on each path, and each connection's
    /// far end at its backend a parked stack of its own.
    #[test]
    fn a_client_between_requests_costs_a_few_hundred_bytes() {
        let spec = anyedge_topology::generate::Spec {
            name: "idle".into(),
            pops: 12,
            regions: 3,
            clients: 600,
            groups: 30,
            web_every: 2,
            clb_nodes: 2,
            duration_s: 3,
            seed: 5,
            internet: false,
        };
        let text = anyedge_topology::generate::generate(&spec).unwrap();
        let t = anyedge_topology::parse_str("idle.yaml", &text).unwrap();
        let mut w = World::new(&t, anyedge_ccn::Tags::Fast).unwrap();
        w.run_until(2_500_000_000);
        let (mut udp, mut web) = (Vec::new(), Vec::new());
        for c in w.edge.clients.iter() {
            if let Some(bytes) = idle_client_bytes(c) {
                if c.tcp.is_some() { web.push(bytes) } else { udp.push(bytes) }
            }
        }
        let ends: Vec<usize> =
            w.servers.hosts().iter().flat_map(|h| h.conns.values()).filter_map(|conn| idle_conn_bytes(conn)).collect();
        let webs = w.edge.clients.iter().filter(|c| c.tcp.is_some()).count();
        assert!(
            udp.len() > 200 && web.len() > webs / 2,
            "{} UDP and {} of {webs} web clients between requests",
            udp.len(),
            web.len()
        );
        assert!(ends.len() > webs, "{} idle connection ends at backends", ends.len());
        let (udp, web, end) = (udp.iter().max().unwrap(), web.iter().max().unwrap(), ends.iter().max().unwrap());
        println!(
            "between requests: a UDP client {udp} bytes, a web client {web} bytes, a backend's end of a connection {end} bytes"
        );
        assert!(*udp <= 320, "a UDP client holds {udp} bytes");
        assert!(*web <= 1_300, "a web client (game and web, each on two paths) holds {web} bytes");
        assert!(*end <= 450, "a backend's end of a kept-alive connection holds {end} bytes");
    }

    /// Whatever POPs have withdrawn, the lazy order finds the POP the whole order does,
    /// and works the whole order out only when its first POP is refused.
    #[test]
    fn a_lazy_pop_order_finds_what_the_whole_order_finds() {
        let spec = anyedge_topology::generate::Spec {
            name: "orders".into(),
            pops: 40,
            regions: 4,
            clients: 400,
            groups: 40,
            web_every: 0,
            clb_nodes: 1,
            duration_s: 1,
            seed: 7,
            internet: false,
        };
        let text = anyedge_topology::generate::generate(&spec).unwrap();
        let t = anyedge_topology::parse_str("orders.yaml", &text).unwrap();
        for at in 0..t.pops.len() {
            for vip in 0..t.vips.len() {
                let whole = anyedge_topology::bgp::selection_order(&t, at, &t.vips[vip].pops);
                for down in [0usize, 1, 3, 7] {
                    let order = PopOrder::attached(&t, at, vip);
                    let up = |p: PopId| (p.0 + at) % 8 >= down;
                    let want = whole.iter().copied().map(PopId).find(|&p| up(p));
                    assert_eq!(order.find(&t, up), want, "attached at {at}, VIP {vip}, {down} of 8 down");
                    assert_eq!(order.whole.get().is_some(), down > 0 && !up(PopId(at)), "worked out only when needed");
                }
            }
        }
    }
}
