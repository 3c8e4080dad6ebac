//! A CLB node in the lab: the region's sans-IO CLB core driven by tokio, shaped like
//! quinn's `ConnectionDriver` — `bind` makes its sockets and state, one `on_*` method per
//! input (backbone datagrams, backend datagrams, table sync, gRPC upstream, liveness
//! probes, route changes, timers), `transmit` hands what the core produced to the
//! sockets, and `run` only selects and dispatches.

use crate::error::Doing;
use crate::node::NodeError;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyedge_ccn::{ComponentRng, Link};
use anyedge_ccn::{Dest, NodeId};
use anyedge_control::RouteTable;
use anyedge_region::Clb;
use anyedge_topology::nodes::{ClbAddresses, Identity, clb_config};
use anyedge_topology::{BackboneTransport, Topology};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::io::batch::BatchSocket;
use crate::io::clock::{far_future, now_ns};
use crate::io::shaper::{Due, Shaper};
use crate::io::timer::PreciseTimer;
use crate::layout::{BACKEND_PORT, GRPC_PORT, HEALTH_PORT, SYNC_PORT, mark_ready};
use crate::node::drops::{Drops, Way};
use crate::node::forwarder::{Forwarder, auth_from_now};
use crate::node::liveness::{UdpLiveness, answer_probes};
use crate::plan::{Plan, PlanGap};

/// Largest sync message a node reads at once.
const MTU_BUF: usize = 65_536;
/// How often a CLB node refreshes its connection-table gauges.
const GAUGE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a CLB node's reply goes once its backbone link delivers it.
enum ClbDest {
    Udp(SocketAddr),
    /// Down the gRPC stream the POP opened.
    Stream(u16),
}

/// What woke the driver up.
enum Input {
    Backbone,
    Backend,
    Sync(usize, SocketAddr),
    Upstream(crate::node::grpc::Upstream),
    /// The core's timer.
    Timer,
    /// The links' timer: packets are due.
    Shaped,
    RouteChange(anyedge_control::Change, RouteTable),
    /// The node's directory was read again (SIGHUP): its VIP certificates may be new.
    Reload,
    ProbeTick,
    ProbeAnswer(usize),
}

pub(crate) struct ClbDriver<'a> {
    core: Clb,
    start: Instant,
    drops: Drops,
    follower: Option<crate::node::watch::Follower>,
    place: Place<'a>,
    sockets: Sockets,
    links: Links,
    streams: Streams,
    liveness: Liveness,
    seen: Seen,
}

/// Who and where a CLB node is: its topology, plan, region, index and name, its
/// rendered directory, addresses and backbone identity.
struct Place<'a> {
    t: &'a Topology,
    plan: &'a Plan,
    region: usize,
    index: usize,
    name: &'a str,
    /// Its rendered directory (the VIPs' certificates, read again on reload).
    conf_dir: &'a std::path::Path,
    addresses: ClbAddresses,
    identity: Identity,
}

/// The node's sockets and where they send.
struct Sockets {
    /// Backbone datagrams from POPs and replies to them: batched both ways.
    pop_sock: BatchSocket,
    /// The tunnel to backend hosts and egress nodes: batched both ways.
    be_sock: BatchSocket,
    /// Connection-table sync with the region's other nodes, on the region network.
    sync_sock: UdpSocket,
    sync_peers: Vec<Option<SocketAddr>>,
    sync_buf: Vec<u8>,
    /// Every POP's tunnel endpoint and the CLB's backend hosts, looked up once.
    pop_tunnels: Vec<Option<SocketAddr>>,
    backend_tunnels: HashMap<Ipv4Addr, Option<SocketAddr>>,
}

/// The backbone links back to the POPs, shaped in user space.
struct Links {
    /// Backbone links back to every POP (the POPs shape the way here).
    backbone: Vec<Link>,
    shaper: Shaper<ClbDest>,
    /// Wakes the node when the shaper's next packet is due, to the microsecond.
    shaper_timer: PreciseTimer,
    /// When the input being handled reached the node (the kernel's receive time for
    /// datagrams): the backbone links toward POPs start their delay there.
    arrived_ns: u64,
}

/// The backbone over gRPC streams (`backbone: grpc`), when it is.
struct Streams {
    grpc: bool,
    from_streams: Option<mpsc::Receiver<crate::node::grpc::Upstream>>,
    /// POP id → the stream its packets came up on (replies go down it).
    downstreams: HashMap<u16, mpsc::Sender<Vec<u8>>>,
}

/// The liveness prober of the POPs.
struct Liveness {
    /// (POP id, its liveness address) for every POP the prober watches.
    pops: Vec<(u16, SocketAddr)>,
    prober: UdpLiveness,
    probe_buf: [u8; 256],
}

/// What the node last showed (status, gauges) and when to give memory back.
struct Seen {
    /// Each backend's health as this node's checks see it.
    health: BTreeMap<String, &'static str>,
    /// Gauges for /metrics, refreshed now and then rather than per packet.
    gauges_at: Instant,
    /// QUIC connections and handshakes, as `status` last showed them.
    quic_seen: anyedge_region::quic_listener::QuicCounts,
    /// Clients the backends' groups denied here, as last told to the status.
    denied_seen: u64,
    /// Packets this pass sent toward backends and back toward POPs (`residence`).
    passed: [u64; 2],
    /// When to hand freed memory back to the kernel.
    trim: MemoryTrim,
}

/// Connections (proxied and QUIC) a node must have let go of since its last peak before
/// it hands freed heap back to the kernel.
const TRIM_AFTER_CONNECTIONS: usize = 256;

/// Gives freed memory back after connections close: glibc keeps what a burst of
/// connections freed in its arenas, so a node that held 12,000 slowloris connections
/// stayed at 831 MB after they closed. `malloc_trim` costs a walk of the heap, so it runs
/// only when [`TRIM_AFTER_CONNECTIONS`] have gone since the peak, at a gauge tick.
#[derive(Debug, Default)]
struct MemoryTrim {
    peak: usize,
}

impl MemoryTrim {
    /// Whether to trim now, with `held` connections open.
    fn due(&mut self, held: usize) -> bool {
        if held >= self.peak {
            self.peak = held;
            return false;
        }
        let due = self.peak - held >= TRIM_AFTER_CONNECTIONS;
        if due {
            self.peak = held;
        }
        due
    }
}

fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<'a> ClbDriver<'a> {
    /// Binds CLB node `index` of `region`: its sockets, core, links and prober; then says
    /// it is ready.
    pub(crate) async fn bind(
        t: &'a Topology,
        plan: &'a Plan,
        (region, index): (usize, usize),
        node: Forwarder<'a>,
    ) -> Result<ClbDriver<'a>, NodeError> {
        let Forwarder { ready, impair, follower, drops, keys, conf_dir, name, .. } = node;
        let from_pops = plan.clb_tunnel(region, index).ok_or(PlanGap("CLB without a backbone address"))?;
        let own = plan.clb_region_addr(region, index).ok_or(PlanGap("CLB without a region address"))?;
        let mut pop_sock = BatchSocket::bind(from_pops).await?;
        let mut be_sock = BatchSocket::bind(SocketAddr::new(IpAddr::V4(own), BACKEND_PORT)).await?;
        pop_sock.count_into(drops.backbone_losses());
        be_sock.count_into(drops.backbone_losses());
        let sync_bind = SocketAddr::new(IpAddr::V4(own), SYNC_PORT);
        let sync_sock = UdpSocket::bind(sync_bind).await.doing(|| format!("bind {sync_bind}"))?;
        let sync_peers = (0..usize::from(t.regions[region].clb_nodes))
            .map(|i| plan.clb_region_addr(region, i).map(|a| SocketAddr::new(IpAddr::V4(a), SYNC_PORT)))
            .collect();
        let addresses = ClbAddresses::of(region, index);
        let start = Instant::now();
        // Each VIP homed here terminates TLS with its own chains, else the certificate
        // lab up issued it.
        let identity = Identity { default: None, vips: crate::pki::vip_identities(conf_dir, t, region)? };
        let auth = auth_from_now(keys)?;
        let me = anyedge_topology::nodes::clb_node(region, index);
        let mut config = clb_config(t, region, index, addresses, &identity);
        config.auth = auth.clone();
        let backbone = backbone_links(t, region, index);
        let grpc = t.backbone.transport == BackboneTransport::Grpc;
        let from_streams = match (grpc, follower.as_ref().and_then(|f| f.reloaded.clone())) {
            (true, Some(reloaded)) => Some(upstreams((conf_dir, name, reloaded), from_pops.ip()).await?),
            (true, None) => return Err(PlanGap("a CLB node without its reload channel").into()),
            (false, _) => None,
        };
        let pop_tunnels: Vec<Option<SocketAddr>> = (0..t.pops.len()).map(|p| plan.pop_tunnel(p)).collect();
        let (pops, prober) = pop_prober(t, &pop_tunnels, from_pops.ip(), auth.keyring(me, 0), start).await?;
        // POPs probe this node over the backbone: answer while we run.
        answer_probes(auth.keyring(me, 0), drops.clone()).await?;
        mark_ready(ready)?;
        drops.set_quic(Default::default());
        let mut core = Clb::new(config, 0);
        // Proxied connections send super-packets, cut by the POP's TUN device as the
        // backend hosts' kernels' are.
        core.set_l7_super_packets(true);
        // QUIC's Retry tokens age on the real clock from the node's start (`now_ns` counts
        // from `start`), so a restarted node's old tokens are as old as they are.
        let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        core.set_quic_wall_epoch(epoch.saturating_sub(start.elapsed().as_secs()));
        Ok(ClbDriver {
            core,
            start,
            drops,
            follower,
            place: Place { t, plan, region, index, name, conf_dir, addresses, identity },
            sockets: Sockets {
                pop_sock,
                be_sock,
                sync_sock,
                sync_peers,
                sync_buf: vec![0u8; MTU_BUF],
                pop_tunnels,
                backend_tunnels: HashMap::new(),
            },
            links: Links {
                backbone,
                shaper: Shaper::new(start, impair),
                shaper_timer: PreciseTimer::new()?,
                arrived_ns: 0,
            },
            streams: Streams { grpc, from_streams, downstreams: HashMap::new() },
            liveness: Liveness { pops, prober, probe_buf: [0u8; 256] },
            seen: Seen {
                health: BTreeMap::new(),
                gauges_at: Instant::now() - GAUGE_EVERY,
                quic_seen: Default::default(),
                denied_seen: 0,
                passed: [0; 2],
                trim: MemoryTrim::default(),
            },
        })
    }

    /// Selects and dispatches until an I/O error ends the node.
    pub(crate) async fn run(mut self) -> Result<(), NodeError> {
        loop {
            let mut due = self.links.shaper.take_ready();
            let mut since = Instant::now();
            if due.is_empty() {
                let input = self.next_input().await?;
                since = Instant::now();
                due = self.dispatch(input).await;
            }
            due.extend(self.links.shaper.take_ready());
            self.send_due(due);
            self.transmit().await;
            for (way, n) in [Way::Request, Way::Reply].into_iter().zip(std::mem::take(&mut self.seen.passed)) {
                self.drops.left(way, since, n);
            }
            self.after_pass();
        }
    }

    /// Waits for the next input: a socket, a stream, a timer or a route change.
    async fn next_input(&mut self) -> Result<Input, NodeError> {
        let start = self.start;
        let core_wake = self
            .core
            .poll_timeout()
            .map(|ns| tokio::time::Instant::from_std(start + std::time::Duration::from_nanos(ns)));
        let wake = core_wake.unwrap_or_else(far_future);
        let shaped_at = self.links.shaper.wake_at();
        Ok(tokio::select! {
            r = self.sockets.pop_sock.recv() => r.map(|()| Input::Backbone).doing(|| "the backbone socket".into())?,
            r = self.sockets.be_sock.recv() => r.map(|()| Input::Backend).doing(|| "the region socket".into())?,
            r = self.sockets.sync_sock.recv_from(&mut self.sockets.sync_buf) => {
                let (n, from) = r.doing(|| "the sync socket".into())?;
                Input::Sync(n, from)
            }
            Some(up) = next_upstream(&mut self.streams.from_streams) => Input::Upstream(up),
            _ = tokio::time::sleep_until(wake) => Input::Timer,
            _ = self.links.shaper_timer.wait_until(shaped_at) => Input::Shaped,
            Some(followed) = crate::node::watch::next_followed(&mut self.follower) => match followed {
                crate::node::watch::Followed::Change(change, table) => Input::RouteChange(change, table),
                crate::node::watch::Followed::Reloaded => Input::Reload,
            },
            _ = tokio::time::sleep_until(self.liveness.prober.wake_at(start)) => Input::ProbeTick,
            r = self.liveness.prober.sock.recv_from(&mut self.liveness.probe_buf) => match r {
                Ok((n, _)) => Input::ProbeAnswer(n),
                Err(_) => Input::ProbeAnswer(0),
            },
        })
    }

    /// Hands an input to the core; returns what a timer made due on the links.
    async fn dispatch(&mut self, input: Input) -> Vec<Due<ClbDest>> {
        self.links.arrived_ns = match input {
            Input::Backbone => self.sockets.pop_sock.received_ns(self.start),
            Input::Backend => self.sockets.be_sock.received_ns(self.start),
            _ => now_ns(self.start),
        };
        match input {
            Input::Backbone => self.on_backbone(),
            Input::Backend => self.on_backend(),
            Input::Sync(n, from) => self.on_sync(n, from),
            Input::Upstream(up) => self.on_upstream(up),
            Input::Timer => self.core.handle_timeout(now_ns(self.start)),
            Input::Shaped => return self.links.shaper.due(),
            Input::RouteChange(change, table) => self.on_route_change(&change, &table),
            Input::Reload => self.on_reload(),
            Input::ProbeTick => self.on_probe_tick().await,
            Input::ProbeAnswer(n) => self.on_probe_answer(n),
        }
        Vec::new()
    }

    fn on_backbone(&mut self) {
        let now = now_ns(self.start);
        for (_, packet) in self.sockets.pop_sock.datagrams() {
            self.drops.packet_in();
            self.drops.count(self.core.handle_from_pop(now, packet));
        }
    }

    fn on_backend(&mut self) {
        let now = now_ns(self.start);
        for (_, packet) in self.sockets.be_sock.datagrams() {
            self.drops.packet_in();
            self.drops.count(self.core.handle_from_backend(now, packet.to_vec()));
        }
    }

    /// Only the region's other nodes sync with this one.
    fn on_sync(&mut self, n: usize, from: SocketAddr) {
        if self.sockets.sync_peers.iter().flatten().any(|p| p.ip() == from.ip()) {
            let result = self.core.handle_from_peer(now_ns(self.start), &self.sockets.sync_buf[..n]);
            self.drops.count(result);
        } else {
            self.drops.count::<anyedge_region::ClbDrop>(Err(anyedge_region::ClbDrop::NotPeer));
        }
        self.drops.set_sync(&self.core.sync_stats());
    }

    /// A packet up a POP's gRPC stream: replies go down the stream its authentic packets
    /// came up.
    fn on_upstream(&mut self, (packet, down): crate::node::grpc::Upstream) {
        self.drops.packet_in();
        let result = self.core.handle_from_pop(now_ns(self.start), &packet);
        let sender = anyedge_proto::seal::Packet::new_checked(&packet[..])
            .ok()
            .and_then(|e| anyedge_ccn::NodeId::from_wire(e.sender()));
        if let (Ok(()), Some(anyedge_ccn::NodeId::Pop(pop))) = (&result, sender) {
            self.streams.downstreams.insert(pop, down);
        }
        self.drops.count(result);
    }

    fn on_route_change(&mut self, change: &anyedge_control::Change, table: &RouteTable) {
        let site = anyedge_topology::route_table::ClbSite {
            t: self.place.t,
            region: self.place.region,
            index: self.place.index,
            addresses: self.place.addresses,
            identity: &self.place.identity,
        };
        anyedge_topology::route_table::apply_to_clb(&mut self.core, &site, table, change);
    }

    /// The node's directory read again: the VIP certificates in it are what listeners
    /// terminate new connections with from now on; open connections keep their session.
    /// Certificates that do not load leave the old ones in place.
    fn on_reload(&mut self) {
        let vips = match crate::pki::vip_identities(self.place.conf_dir, self.place.t, self.place.region) {
            Ok(vips) => vips,
            Err(e) => {
                tracing::warn!("{}: VIP certificates not reloaded, the old ones stay: {e}", self.place.name);
                return;
            }
        };
        let mut changed = 0;
        for (addr, new) in &vips {
            if let Some(old) = self.place.identity.for_vip(*addr) {
                changed += self.core.replace_identity(old, new);
            }
        }
        self.place.identity.vips = vips;
        tracing::info!("{}: VIP certificates read again: {changed} listeners terminate with them", self.place.name);
    }

    async fn on_probe_tick(&mut self) {
        let now = now_ns(self.start);
        // The POPs replies went through since the last round are probed.
        for pop in self.core.take_demand() {
            if let Some(peer) = self.liveness.pops.iter().position(|&(p, _)| p == pop) {
                self.liveness.prober.used(peer, now);
            }
        }
        for (peer, up) in self.liveness.prober.tick(now).await {
            self.core.set_pop_up(self.liveness.pops[peer].0, up);
        }
    }

    fn on_probe_answer(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        for (peer, up) in self.liveness.prober.answered(&self.liveness.probe_buf[..n]) {
            self.core.set_pop_up(self.liveness.pops[peer].0, up);
        }
    }

    /// Replies the backbone links delivered: out of the UDP socket or down a stream.
    fn send_due(&mut self, due: Vec<Due<ClbDest>>) {
        for (to, packet, _) in due {
            match to {
                ClbDest::Udp(to) => {
                    self.drops.packet_out();
                    self.seen.passed[Way::Reply as usize] += 1;
                    self.sockets.pop_sock.queue(to, packet);
                }
                ClbDest::Stream(pop) => {
                    if let Some(down) = self.streams.downstreams.get(&pop) {
                        self.drops.packet_out();
                        self.seen.passed[Way::Reply as usize] += 1;
                        let _ = down.try_send(packet);
                    }
                }
            }
        }
    }

    /// What the core produced: toward POPs over their backbone links, to backend hosts,
    /// to the region's other nodes; then every batch leaves together.
    async fn transmit(&mut self) {
        while let Some(out) = self.core.poll_output() {
            let flow = out.flow();
            match out.dest {
                Dest::Node(NodeId::Pop(pop_id)) => {
                    let p = usize::from(pop_id);
                    if let (Some(&Some(to)), Some(link)) =
                        (self.sockets.pop_tunnels.get(p), self.links.backbone.get_mut(p))
                    {
                        let dest = if self.streams.grpc { ClbDest::Stream(pop_id) } else { ClbDest::Udp(to) };
                        self.links.shaper.push(link, flow, dest, out.bytes, self.links.arrived_ns);
                    }
                }
                Dest::Backend(backend) => {
                    let plan = self.place.plan;
                    if let IpAddr::V4(ip) = backend.ip()
                        && let Some(to) =
                            *self.sockets.backend_tunnels.entry(ip).or_insert_with(|| plan.backend_leg(ip))
                    {
                        self.drops.packet_out();
                        self.seen.passed[Way::Request as usize] += 1;
                        self.sockets.be_sock.queue(to, out.bytes);
                    }
                }
                Dest::Node(NodeId::Clb { node, .. }) => {
                    if let Some(&Some(to)) = self.sockets.sync_peers.get(usize::from(node)) {
                        let _ = self.sockets.sync_sock.send_to(&out.bytes, to).await;
                    }
                    self.drops.set_sync(&self.core.sync_stats());
                }
                // The lab has no direct (non-anycast) path yet.
                Dest::Client(_) | Dest::Node(NodeId::Backend { .. }) => {}
            }
        }
        // What the links pass at once (impairments off, or nothing queued) leaves in
        // this pass, with what the core made for backends.
        let ready = self.links.shaper.take_ready();
        self.send_due(ready);
        self.sockets.pop_sock.flush().await;
        self.sockets.be_sock.flush().await;
    }

    /// Health changes, gauges and QUIC counts for `status` and /metrics.
    fn after_pass(&mut self) {
        while let Some(event) = self.core.poll_event() {
            if let anyedge_region::Event::HealthChanged { backend, healthy } = event {
                let state = if healthy { "healthy" } else { "unhealthy" };
                self.seen.health.insert(backend.to_string(), state);
                self.drops.set_health(&self.seen.health);
                tracing::info!("{}: backend {backend} {state}", self.place.name);
            }
        }
        if self.seen.gauges_at.elapsed() >= GAUGE_EVERY {
            self.seen.gauges_at = Instant::now();
            self.drops.set_gauge("conn_table_entries", self.core.conn_table().len() as u64);
            self.drops.set_gauge("conn_table_evictions_total", self.core.conn_table().evictions());
            self.drops.set_gauge("conn_table_refused_total", self.core.conn_table().refused());
            self.drops.set_gauge("snat_evictions_total", self.core.snat_evictions());
            self.drops.set_gauge("l7_connections", self.core.proxied_connections() as u64);
            self.drops.set_gauge("syn_cookies_total", self.core.syn_cookies_sent());
            self.drops.set_gauge("l7_buffer_bytes", self.core.proxied_buffer_bytes() as u64);
            self.drops.set_gauge("l7_window_grown_bytes", self.core.proxied_windows_grown() as u64);
            self.drops.set_gauge("quic_buffer_bytes", self.core.quic_held_bytes() as u64);
            let held = self.core.proxied_connections() + self.core.quic_counts().connections;
            if self.seen.trim.due(held) {
                trim_heap();
            }
        }
        // The backends' security groups as this node applied them (layer 7, QUIC, NAT64):
        // the client it last kept from a backend, and why.
        let guard = self.core.backend_guard();
        if guard.denied() != self.seen.denied_seen {
            self.seen.denied_seen = guard.denied();
            self.drops.set_gauge("backend_groups_denied_total", guard.denied());
            if let Some(why) = guard.last_denied() {
                self.drops.set_denied(why);
            }
        }
        let quic = self.core.quic_counts();
        if quic != self.seen.quic_seen {
            self.seen.quic_seen = quic;
            self.drops.set_quic(quic);
        }
    }
}

/// Backbone links back to every POP (the POPs shape the way here).
fn backbone_links(t: &Topology, region: usize, index: usize) -> Vec<Link> {
    (0..t.pops.len())
        .map(|p| {
            let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[region].location);
            Link::new(model, ComponentRng::new(t.seed, &format!("lab/backbone/{p}/{region}/1/{index}")))
        })
        .collect()
}

/// Liveness probing of the POPs: a dead POP's flows answer through a live neighbour.
/// Returns (POP id, its liveness address) for every POP with a tunnel, and the prober.
async fn pop_prober(
    t: &Topology,
    pop_tunnels: &[Option<SocketAddr>],
    local: IpAddr,
    keyring: anyedge_ccn::Keyring,
    start: Instant,
) -> Result<(Vec<(u16, SocketAddr)>, UdpLiveness), NodeError> {
    let pops: Vec<(u16, SocketAddr)> = pop_tunnels
        .iter()
        .enumerate()
        .filter_map(|(p, a)| a.map(|a| (p as u16, SocketAddr::new(a.ip(), HEALTH_PORT))))
        .collect();
    let addrs = pops.iter().map(|&(_, a)| a).collect();
    let ids = pops.iter().map(|&(p, _)| anyedge_topology::nodes::pop_node(usize::from(p))).collect();
    let prober = UdpLiveness::bind(local, addrs, (keyring, ids), t, now_ns(start)).await?;
    Ok((pops, prober))
}

/// With `backbone.transport: grpc`, the POPs' streams up to this node (mutual TLS).
async fn upstreams(
    (conf_dir, name, reloaded): (&std::path::Path, &str, tokio::sync::watch::Receiver<u64>),
    ip: IpAddr,
) -> Result<mpsc::Receiver<crate::node::grpc::Upstream>, NodeError> {
    let tls = crate::io::tls::ServerTls::new(crate::pki::server(conf_dir, name)?);
    // After each reload (the node's own, `node::reload`): its directory's certificate.
    crate::node::reload::server_tls_on_reload(conf_dir.to_path_buf(), name.to_string(), tls.clone(), reloaded);
    crate::node::grpc::serve(SocketAddr::new(ip, GRPC_PORT), tls).await
}

/// The next packet up any gRPC stream (never, when the backbone is UDP).
async fn next_upstream(
    streams: &mut Option<mpsc::Receiver<crate::node::grpc::Upstream>>,
) -> Option<crate::node::grpc::Upstream> {
    match streams.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_is_trimmed_once_enough_connections_closed_since_the_peak() {
        let mut trim = MemoryTrim::default();
        assert!(!(0..=1_000).step_by(100).any(|held| trim.due(held)), "never while connections open");
        assert!(!trim.due(1_000 - TRIM_AFTER_CONNECTIONS + 1), "a few closed");
        assert!(trim.due(1_000 - TRIM_AFTER_CONNECTIONS), "enough closed");
        assert!(!trim.due(700), "once per fall, counted from where it was trimmed");
        assert!(trim.due(0), "all of them closed");
    }
}
