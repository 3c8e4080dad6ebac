//! One CLB node: takes client packets (encapsulated by a POP, or straight from the
//! internet for the direct baseline), picks a backend, rewrites the destination while
//! keeping the client's source address, and sends replies back the way the flow came.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use anyedge_ccn::auth::{AuthError, Keyring, NodeId};
use anyedge_ccn::{Dest, Transmit};
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::inner::{self, Fnv, Inner, mix64};
use anyedge_proto::seal::Kind;
use anyedge_proto::{FlowKey, Transport};
use lru::LruCache;

use crate::config::{
    CLOSED_LINGER_NS, ClbConfig, HALF_OPEN_NS, ListenerConfig, SWEEP_INTERVAL_NS, SchedulerKind, TCP_IDLE_NS,
    UDP_IDLE_NS, WEIGHT_MAX,
};
use crate::conn_table::{Conn, ConnTable, Ingress};
use crate::health::{Health, HealthChecker, ProbeRequest};
use crate::health_check::HealthProber;
use crate::quic_listener::QuicListener;
use crate::scheduler::{Candidate, Maglev};
use crate::sync::{ConnSync, PeerFlow, SyncStats};
use crate::tables::{BackendTable, ListenerState, ListenerTable, PortId};
use anyedge_proto::sync::{Entry, Message};

/// An output waiting for `poll_output`: sealed there, or already sealed (replies toward
/// a POP are encapsulated and sealed in one copy as they are made).
#[derive(Debug)]
enum Queued {
    ToSeal(Transmit),
    Ready(Transmit),
}

impl Queued {
    /// An IP packet for a backend (a client's, a health check), sealed for its host when
    /// polled; its flow hash is taken here, from the packet as made.
    fn to_backend(backend: SocketAddr, bytes: Vec<u8>) -> Queued {
        let flow_hash = inner::parse(&bytes).map_or(0, |i| i.key.flow_hash());
        Queued::ToSeal(Transmit::new(Dest::Backend(backend), flow_hash, bytes))
    }

    /// The same, for a packet whose flow key the caller knows (it rewrote the packet to
    /// it): no second parse on the forwarding path.
    fn to_backend_as(backend: SocketAddr, key: FlowKey, bytes: Vec<u8>) -> Queued {
        debug_assert_eq!(inner::parse(&bytes).map(|i| i.key).ok(), Some(key), "the key the packet carries");
        Queued::ToSeal(Transmit::new(Dest::Backend(backend), key.flow_hash(), bytes))
    }

    /// A connection-sync batch for the region's CLB node `node`, sealed when polled.
    fn to_peer(region: u16, node: u16, bytes: Vec<u8>) -> Queued {
        Queued::ToSeal(Transmit::new(Dest::Node(NodeId::Clb { region, node }), 0, bytes))
    }
}

/// Something worth recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    HealthChanged {
        backend: SocketAddr,
        healthy: bool,
    },
    /// A flow whose backend became unhealthy or was unbound moved to another one.
    FlowMoved {
        from: SocketAddr,
        to: SocketAddr,
    },
}

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClbDrop {
    Packet(anyedge_proto::Error),
    WrongDirection,
    NoListener,
    NoBackend,
    NoConnection,
    /// The backend was unbound: nothing is forwarded to or from it.
    Unbound,
    /// A security group bound to this node dropped it.
    Denied,
    /// Sync from a node that is not one of this region's others.
    NotPeer,
    /// Not sealed for this node by a peer it holds keys for, or replayed.
    Auth(AuthError),
    /// A POP's packet naming another POP in its CCN header.
    PopMismatch,
    /// A backend host's packet from an address that is not the host's.
    NotHost,
    /// A client SYN whose TCP options leave no room for the node's TOA option even
    /// without the client's padding (the backend could not learn who the client is).
    ToaNoRoom,
    /// A new flow while the connection table holds only established flows (they are never
    /// pushed out for a new one).
    TableFull,
    /// A new flow from a source (an IPv6 /64, an IPv4 prefix) that holds its share
    /// already: `l7::PER_SOURCE_MAX` layer-7 connections, or
    /// `conn_table::HALF_OPEN_PER_SOURCE_MAX` half-open TCP flows.
    SourceCap,
    /// A new flow whose replies would look like an existing flow's (the same client
    /// address and port, through another listener, to the same backend): neither node nor
    /// backend could tell them apart, so it is refused and the first keeps its replies.
    ReplyTaken,
    /// A client's ACK toward a layer-7 listener with no connection whose acknowledgement
    /// is not a SYN cookie this node made for it in the last two periods.
    BadCookie,
}

impl ClbDrop {
    /// A stable name for counters and reports.
    pub fn name(&self) -> &'static str {
        match self {
            ClbDrop::Packet(e) => e.name(),
            ClbDrop::WrongDirection => "wrong_direction",
            ClbDrop::NoListener => "no_listener",
            ClbDrop::NoBackend => "no_backend",
            ClbDrop::NoConnection => "no_connection",
            ClbDrop::Unbound => "unbound",
            ClbDrop::Denied => "denied",
            ClbDrop::NotPeer => "not_peer",
            ClbDrop::Auth(e) => e.name(),
            ClbDrop::PopMismatch => "pop_mismatch",
            ClbDrop::NotHost => "not_host",
            ClbDrop::ToaNoRoom => "toa_no_room",
            ClbDrop::TableFull => "table_full",
            ClbDrop::SourceCap => "source_cap",
            ClbDrop::ReplyTaken => "reply_taken",
            ClbDrop::BadCookie => "bad_cookie",
        }
    }
}

/// A client SYN with the node's TOA option naming `client`, and no TOA of the client's
/// own: the client's are taken out first, and when the options still leave no room, the
/// client's NOP padding too; with no room even then, the flow is refused (`toa_no_room`).
fn with_toa(packet: Vec<u8>, client: inner::Endpoint) -> Result<Vec<u8>, ClbDrop> {
    let toa = inner::toa_option(client);
    let packet = if inner::has_toa(&packet) { inner::strip_toa(&packet)? } else { packet };
    match inner::insert_tcp_option(&packet, &toa) {
        Ok(p) => Ok(p),
        Err(_) => inner::insert_tcp_option(&inner::strip_toa(&packet)?, &toa).map_err(|_| ClbDrop::ToaNoRoom),
    }
}

impl From<anyedge_proto::Error> for ClbDrop {
    fn from(e: anyedge_proto::Error) -> ClbDrop {
        ClbDrop::Packet(e)
    }
}

pub use crate::health_check::PROBE_PORTS;

/// How long an idle flow of this transport is kept.
fn idle_ns(transport: Transport) -> u64 {
    match transport {
        Transport::Tcp => TCP_IDLE_NS,
        Transport::Udp => UDP_IDLE_NS,
    }
}
/// How many of the least recently used open flows a full SNAT pool looks through for a
/// port to take back.
const SNAT_EVICT_SCAN: usize = 256;
/// SNAT ports, split between a region's nodes (below the probe ports).
const SNAT_PORTS: std::ops::Range<u16> = 1024..61_000;
const _: () = assert!(SNAT_PORTS.end <= *PROBE_PORTS.start(), "SNAT ports and health-probe ports never meet");

/// The CLB core.
#[derive(Debug)]
pub struct Clb {
    address: IpAddr,
    /// The latest time the driver gave us.
    now_ns: u64,
    listeners: ListenerTable,
    /// Distinct backend ports across listeners: health is per port (`PortId` indexes both).
    backends: BackendTable,
    health: HealthChecker,
    conns: ConnTable,
    /// (listener, client address) → (binding, expires, when peers were last told).
    persistence: LruCache<(usize, IpAddr), (usize, u64, u64)>,
    sync: ConnSync,
    outputs: VecDeque<Queued>,
    events: VecDeque<Event>,
    probes: Vec<ProbeRequest>,
    changes: Vec<(usize, Health)>,
    pop_fallback: Vec<Vec<u16>>,
    pops_down: Vec<u16>,
    next_sweep_ns: u64,
    flows_created: u64,
    snat_ips: Vec<IpAddr>,
    /// SNAT ports in use: (address, port, transport, the backend it was taken toward).
    /// A pool is one (address, transport, backend): a reply names all four, so the same
    /// port serves flows to different backends at once.
    snat_used: std::collections::HashSet<(IpAddr, u16, Transport, SocketAddr)>,
    /// Ports taken per pool (how full each is); a pool with none taken has no entry.
    snat_taken: HashMap<(IpAddr, Transport, SocketAddr), usize>,
    snat_evictions: u64,
    snat_cursor: u32,
    node_index: u16,
    node_count: u16,
    firewall: Option<crate::security::Firewall>,
    prober: HealthProber,
    l7: crate::l7::L7,
    /// Per layer-7 client connection: where it entered and its flow hash.
    l7_ingress: std::collections::HashMap<FlowKey, (Ingress, u32), foldhash::fast::RandomState>,
    own_addresses: Vec<IpAddr>,
    region: u16,
    keys: Keyring,
    /// What this node's unguessable values (QUIC connection IDs) derive from.
    secret: anyedge_ccn::Prf,
    /// The region's cipher for the node byte of QUIC connection IDs (none: in the clear).
    cid_cipher: Option<anyedge_ccn::CidCipher>,
    /// Layer-7 listeners answer SYNs with these and set up a connection on the ACK.
    syn_cookies: crate::syn_cookie::SynCookies,
    /// SYN-ACKs sent with a cookie (layer-7 listeners).
    syn_cookies_sent: u64,
    backend_hosts: Vec<(IpAddr, NodeId)>,
    /// Outputs dropped for want of a key for their peer (a configuration error).
    unsealable: u64,
}

impl Clb {
    pub fn new(config: ClbConfig, now_ns: u64) -> Clb {
        let mut backends = BackendTable::default();
        let mut health = Vec::new();
        let mut listeners = ListenerTable::default();
        for lc in config.listeners {
            let (listener, added) = ListenerState::new(lc, &mut backends, &config.health);
            health.extend(added);
            listeners.push(listener);
        }
        let mut clb = Clb {
            address: config.address,
            now_ns,
            listeners,
            backends,
            health: HealthChecker::new(health, now_ns),
            conns: ConnTable::new(config.conn_table_capacity).with_source_prefix_v4(config.source_prefix_v4),
            persistence: LruCache::unbounded(),
            sync: ConnSync::new(config.node_index, config.node_count.max(1), config.conn_table_capacity),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            probes: Vec::new(),
            changes: Vec::new(),
            pop_fallback: config.pop_fallback,
            pops_down: Vec::new(),
            next_sweep_ns: now_ns + SWEEP_INTERVAL_NS,
            flows_created: 0,
            snat_ips: config.snat.clone(),
            snat_used: Default::default(),
            snat_taken: HashMap::new(),
            snat_evictions: 0,
            snat_cursor: 0,
            node_index: config.node_index,
            node_count: config.node_count.max(1),
            region: config.region,
            keys: config.auth.keyring(NodeId::Clb { region: config.region, node: config.node_index }, now_ns),
            secret: anyedge_ccn::Prf::new(&config.auth.node_secret("clb")),
            cid_cipher: config.auth.cid_cipher(config.region),
            syn_cookies: crate::syn_cookie::SynCookies::new(&config.auth.node_secret("clb syn cookies")),
            syn_cookies_sent: 0,
            backend_hosts: config.backend_hosts.clone(),
            unsealable: 0,
            firewall: (!config.security_groups.is_empty())
                .then(|| crate::security::Firewall::new(config.security_groups)),
            prober: HealthProber::new(config.address, config.address_v6, u64::from(config.node_index) + 1),
            l7: crate::l7::L7::new(config.source_prefix_v4),
            l7_ingress: Default::default(),
            // Addresses this node's own TCP answers on: its own and its SNAT addresses.
            own_addresses: {
                let mut own: Vec<IpAddr> = std::iter::once(config.address).chain(config.address_v6).collect();
                own.extend(config.snat.iter().filter(|a| !own.contains(a)).copied().collect::<Vec<_>>());
                own
            },
        };
        clb.rebuild_tables();
        let own = clb.own_addresses.clone();
        let node = (clb.node_index as u8, clb.l7.source_prefix_v4());
        for l in clb.listeners.iter_mut() {
            l.quic = quic_endpoint(&l.config, &own, node, (&clb.secret, clb.cid_cipher.as_ref()));
        }
        // A node that starts (or restarts) learns its peers' tables.
        if clb.sync.enabled() {
            let (requests, region) = (clb.sync.requests(), clb.region);
            clb.outputs.extend(requests.into_iter().map(|(node, bytes)| Queued::to_peer(region, node, bytes)));
        }
        clb
    }

    /// Connection-table sync traffic of this node.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync.stats
    }

    /// Flows the region's other nodes told this one of (still live or not yet expired).
    pub fn peer_flows(&self) -> usize {
        self.sync.peer_flows()
    }

    /// A sealed sync message from another CLB node of the region; it must name its sealer.
    pub fn handle_from_peer(&mut self, now_ns: u64, bytes: &[u8]) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let (sender, bytes) = self.keys.open(Kind::Sync, bytes).map_err(ClbDrop::Auth)?;
        let message = Message::parse(bytes)?;
        let named = match message {
            Message::Request { from } | Message::Entries { from, .. } => from,
        };
        if sender != (NodeId::Clb { region: self.region, node: named }) {
            return Err(ClbDrop::NotPeer);
        }
        match message {
            Message::Request { from } => {
                if !self.sync.is_peer(from) {
                    return Err(ClbDrop::NotPeer);
                }
                self.sync.received(bytes.len(), 0);
                let entries = self.table_entries(now_ns);
                let (out, region) = (self.sync.dump(from, &entries), self.region);
                self.outputs.extend(out.into_iter().map(|(node, bytes)| Queued::to_peer(region, node, bytes)));
            }
            Message::Entries { from, entries } => {
                if !self.sync.is_peer(from) {
                    return Err(ClbDrop::NotPeer);
                }
                self.sync.received(bytes.len(), entries.len());
                for e in entries {
                    self.learn(now_ns, e);
                }
            }
        }
        Ok(())
    }

    /// Takes in one entry a peer sent.
    fn learn(&mut self, now_ns: u64, entry: Entry) {
        match entry {
            Entry::Flow { key, backend, ttl_ms } => {
                // A flow this node serves itself keeps what this node decided.
                if !self.conns.contains(&key) {
                    let expires_ns = now_ns + u64::from(ttl_ms) * 1_000_000;
                    self.sync.learn_flow(key, PeerFlow { backend, expires_ns });
                }
            }
            Entry::Persist { transport, client, vip, backend, ttl_ms } => {
                let Some(li) = self.listeners.find_vip(vip.ip(), transport, vip.port()) else { return };
                let Some(binding) = self.binding_of(li, backend) else { return };
                let expires_ns = now_ns + u64::from(ttl_ms) * 1_000_000;
                // Known to the peers already: not sent on again.
                self.put_persistence((li, client), (binding, expires_ns, now_ns));
            }
        }
    }

    /// Everything a restarting peer should learn: this node's flows, the flows it knows
    /// of from other peers, and live persistence.
    fn table_entries(&self, now_ns: u64) -> Vec<Entry> {
        let ms = |ns: u64| u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX);
        let mut out: Vec<Entry> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closing && c.snat.is_none())
            .map(|(key, c)| {
                let left = (c.last_seen_ns + idle_ns(key.transport)).saturating_sub(now_ns);
                Entry::Flow { key: *key, backend: self.backend_addr(c.listener, c.backend), ttl_ms: ms(left) }
            })
            .collect();
        out.extend(self.sync.live_peer_flows(now_ns).map(|(key, f)| Entry::Flow {
            key: *key,
            backend: f.backend,
            ttl_ms: ms(f.expires_ns - now_ns),
        }));
        for (&(li, client), &(binding, expires_ns, _)) in self.persistence.iter() {
            let l = &self.listeners[li];
            if expires_ns > now_ns && !l.removed {
                out.push(Entry::Persist {
                    transport: l.config.transport,
                    client,
                    vip: SocketAddr::new(l.config.vip, l.config.port),
                    backend: self.backend_addr(li, binding),
                    ttl_ms: ms(expires_ns - now_ns),
                });
            }
        }
        out
    }

    /// The binding of listener `li` that sends to `backend`.
    fn binding_of(&self, li: usize, backend: SocketAddr) -> Option<usize> {
        self.listeners[li].bindings.iter().position(|b| self.backends[b.port].addr == backend)
    }

    /// Tells the region's other nodes where a flow goes.
    fn sync_flow(&mut self, now_ns: u64, key: FlowKey) {
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if conn.snat.is_some() || !self.sync.enabled() {
            // Replies to a node's own SNAT address cannot reach another node.
            return;
        }
        conn.synced_ns = now_ns;
        let (li, b) = (conn.listener, conn.backend);
        let ttl_ms = u32::try_from(idle_ns(key.transport) / 1_000_000).unwrap_or(u32::MAX);
        let backend = self.backend_addr(li, b);
        self.sync.queue(now_ns, Entry::Flow { key, backend, ttl_ms });
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn conn_table(&self) -> &ConnTable {
        &self.conns
    }

    /// The security groups bound to this node, with their counters.
    pub fn firewall(&self) -> Option<&crate::security::Firewall> {
        self.firewall.as_ref()
    }

    /// Flows this node has scheduled (a flow that moves backend counts once).
    pub fn flows_created(&self) -> u64 {
        self.flows_created
    }

    pub fn backend_healthy(&self, backend: SocketAddr) -> Option<bool> {
        let p = self.backends.find(backend)?;
        Some(self.health.is_healthy(p.0))
    }

    /// Active (open) flows on a backend across listeners, as WLC counts them.
    pub fn active_flows(&self, backend: SocketAddr) -> u32 {
        self.listeners
            .iter()
            .flat_map(|l| &l.bindings)
            .filter(|b| self.backends[b.port].addr == backend)
            .map(|b| b.active)
            .sum()
    }

    /// The next packet to send: a reply encapsulated for a POP or a sync batch for
    /// another CLB node of the region (`Dest::Node`), a packet for a backend
    /// (`Dest::Backend`), or a reply straight to a client that came straight in
    /// (`Dest::Client`). What goes over the backbone or to a backend host is sealed for it.
    pub fn poll_output(&mut self) -> Option<Transmit> {
        loop {
            let mut out = match self.outputs.pop_front()? {
                Queued::Ready(out) => return Some(out),
                Queued::ToSeal(out) => out,
            };
            let (to, kind) = match out.dest {
                Dest::Node(node @ NodeId::Pop(_)) => (node, Kind::Data),
                Dest::Node(node) => (node, Kind::Sync),
                Dest::Backend(backend) => match self.host_id(backend.ip()) {
                    Some(host) => (host, Kind::Backend),
                    None => {
                        self.unsealable += 1;
                        continue;
                    }
                },
                Dest::Client(_) => return Some(out),
            };
            let Some(sealed) = self.keys.seal(to, kind, &out.bytes) else {
                self.unsealable += 1;
                continue;
            };
            out.bytes = sealed;
            return Some(out);
        }
    }

    /// The backend host at `ip`.
    fn host_id(&self, ip: IpAddr) -> Option<NodeId> {
        self.backend_hosts.iter().find(|(a, _)| *a == ip).map(|&(_, id)| id)
    }

    /// This node's backbone keys: drivers seal and open its probes with them.
    pub fn keyring(&mut self) -> &mut Keyring {
        &mut self.keys
    }

    /// Packets this node could not send for want of a key.
    pub fn unsealable(&self) -> u64 {
        self.unsealable
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<u64> {
        let sweep = Some(self.next_sweep_ns);
        let probes = self.prober.poll_timeout(self.now_ns);
        let l7 = self.l7.next_timer();
        let now = self.now_ns;
        let quic = self.listeners.iter_mut().filter_map(|l| l.quic.as_mut()?.poll_timeout(now)).min();
        let sync = self.sync.poll_timeout();
        self.health.poll_timeout().into_iter().chain(sweep).chain(probes).chain(l7).chain(quic).chain(sync).min()
    }

    /// Changes a backend's weight on every listener that binds it. Weight 0 drains: no
    /// new flows, existing ones continue.
    pub fn set_weight(&mut self, backend: SocketAddr, weight: u8) {
        for l in self.listeners.iter_mut() {
            for b in l.bindings.iter_mut().filter(|b| b.backend.addr == backend) {
                b.backend.weight = weight.min(WEIGHT_MAX);
            }
        }
        self.rebuild_tables();
    }

    /// Unbinds a backend port: from now on nothing is forwarded to it or from it, and its
    /// flows move to other backends on their next packet.
    pub fn unbind(&mut self, backend: SocketAddr) {
        if let Some(p) = self.backends.find(backend) {
            self.backends[p].unbound = true;
            self.rebuild_tables();
        }
    }

    /// Binds an unbound backend port again.
    pub fn bind(&mut self, backend: SocketAddr) {
        if let Some(p) = self.backends.find(backend) {
            self.backends[p].unbound = false;
            self.rebuild_tables();
        }
    }

    /// Backbone health probing says whether a POP is reachable.
    pub fn set_pop_up(&mut self, pop_id: u16, up: bool) {
        self.pops_down.retain(|&p| p != pop_id);
        if !up {
            self.pops_down.push(pop_id);
        }
    }

    /// The POP a reply leaves through: the flow's latest ingress POP, or when that POP is
    /// down, its nearest live neighbour.
    fn reply_pop(&self, ingress: u16) -> u16 {
        if !self.pops_down.contains(&ingress) {
            return ingress;
        }
        let fallback = self
            .pop_fallback
            .get(usize::from(ingress))
            .and_then(|order| order.iter().copied().find(|p| !self.pops_down.contains(p)));
        fallback.unwrap_or(ingress)
    }

    /// Queues a reply to a client, back the way it came: through the POP it entered by (or
    /// a live neighbour of it) — encapsulated and sealed in one copy — or straight out when
    /// it came straight in.
    fn reply_to_client(&mut self, ingress: Ingress, flow_hash: u32, packet: Vec<u8>) -> anyedge_proto::Result<()> {
        let Ingress::Pop(p) = ingress else {
            let key = inner::parse(&packet)?.key;
            self.outputs.push_back(Queued::Ready(Transmit::new(Dest::Client(key.dst), key.flow_hash(), packet)));
            return Ok(());
        };
        let pop_id = self.reply_pop(p);
        let ccn = ccn::Repr::around(Direction::ToPop, pop_id, flow_hash, &packet)?;
        match self.keys.seal_with(NodeId::Pop(pop_id), Kind::Data, ccn.buffer_len(), |b| ccn.emit_with(b, &packet)) {
            Some(bytes) => {
                self.outputs.push_back(Queued::Ready(Transmit::new(Dest::Node(NodeId::Pop(pop_id)), flow_hash, bytes)))
            }
            None => self.unsealable += 1,
        }
        Ok(())
    }

    /// A sealed, encapsulated client packet from a POP. The POP id in the CCN header must
    /// be the sealing POP's own: replies follow it.
    pub fn handle_from_pop(&mut self, now_ns: u64, bytes: &[u8]) -> Result<(), ClbDrop> {
        let (from, bytes) = self.keys.open(Kind::Data, bytes).map_err(ClbDrop::Auth)?;
        let (repr, packet) = ccn::decapsulate(bytes)?;
        if repr.direction != Direction::ToRegion {
            return Err(ClbDrop::WrongDirection);
        }
        if from != NodeId::Pop(repr.pop_id) {
            return Err(ClbDrop::PopMismatch);
        }
        self.forward(now_ns, packet.to_vec(), Ingress::Pop(repr.pop_id))
    }

    /// A client packet that reached the region straight over the internet.
    pub fn handle_direct(&mut self, now_ns: u64, packet: Vec<u8>) -> Result<(), ClbDrop> {
        self.forward(now_ns, packet, Ingress::Direct)
    }

    /// A sealed packet from a backend host: a reply to a client, or the answer to a health
    /// probe. The host speaks only for its own address.
    pub fn handle_from_backend(&mut self, now_ns: u64, sealed: Vec<u8>) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let (from, bytes) = self.keys.open(Kind::Backend, &sealed).map_err(ClbDrop::Auth)?;
        let mut packet = bytes.to_vec();
        let info = inner::parse(&packet)?;
        if self.host_id(info.key.src) != Some(from) {
            return Err(ClbDrop::NotHost);
        }
        if self.prober.is_probe_traffic(&info) {
            self.probe_packet(now_ns, &info, &packet);
            return Ok(());
        }
        let from = SocketAddr::new(info.key.src, info.key.src_port);
        let local = (info.key.dst, info.key.dst_port);
        let quic =
            self.listeners.iter().position(|l| l.quic.as_ref().is_some_and(|q| q.by_backend(from, local).is_some()));
        if let Some(li) = quic {
            if let Some(q) = self.listeners[li].quic.as_mut()
                && let Some(ch) = q.by_backend(from, local)
            {
                q.receive_backend(ch, packet);
            }
            self.drive_quic(li, now_ns, Ingress::Direct);
            return Ok(());
        }
        if let Some(client_key) = self.l7.by_backend(from, (info.key.dst, info.key.dst_port)) {
            self.l7.receive(&client_key, packet);
            self.drive_l7(&client_key, now_ns);
            return Ok(());
        }
        let (fkey, conn) = self.conns.lookup_reply(&info.key).ok_or(ClbDrop::NoConnection)?;
        conn.last_seen_ns = now_ns;
        conn.answered = true;
        let conn_copy = *conn;
        let port = self.listeners[conn_copy.listener].bindings[conn_copy.backend].port;
        if self.backends[port].unbound {
            return Err(ClbDrop::Unbound);
        }
        if let Some(flags) = info.tcp {
            self.track_close(&fkey, flags.fin, flags.rst, false);
        }
        let vip = (fkey.dst, fkey.dst_port);
        if conn_copy.snat.is_some() {
            packet = inner::translate(&packet, vip, (fkey.src, fkey.src_port))?;
        } else {
            inner::rewrite(&mut packet, Some(vip), None)?;
        }
        self.reply_to_client(conn_copy.ingress, conn_copy.flow_hash, packet)?;
        Ok(())
    }

    /// Runs health checking and forgets idle flows; call at `poll_timeout()`.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        let mut probes = std::mem::take(&mut self.probes);
        let mut changes = std::mem::take(&mut self.changes);
        self.health.on_timeout(now_ns, &mut probes, &mut changes);
        let mut sends = Vec::new();
        let health = &self.health;
        self.prober.cancel_except(|id| health.backend_of_probe(id).is_some(), &mut sends);
        for probe in probes.drain(..) {
            let port = &self.backends[PortId(probe.backend)];
            self.prober.start(now_ns, probe.probe_id, port.addr, &port.probe, &mut sends);
        }
        let mut answers = Vec::new();
        self.prober.handle_timeout(now_ns, &mut sends, &mut answers);
        self.probes = probes;
        self.apply_answers(&answers, &mut changes);
        self.apply_health_changes(&mut changes);
        self.changes = changes;
        self.outputs.extend(sends.into_iter().map(|(backend, bytes)| Queued::to_backend(backend, bytes)));
        for key in self.l7.due(now_ns) {
            self.drive_l7(&key, now_ns);
        }
        for li in 0..self.listeners.len() {
            let due =
                self.listeners[li].quic.as_mut().and_then(|q| q.poll_timeout(now_ns)).is_some_and(|t| t <= now_ns);
            if due {
                self.drive_quic(li, now_ns, Ingress::Direct);
            }
        }
        let batches = self.sync.flush(now_ns);
        let region = self.region;
        self.outputs.extend(batches.into_iter().map(|(node, bytes)| Queued::to_peer(region, node, bytes)));
        if now_ns >= self.next_sweep_ns {
            self.next_sweep_ns = now_ns + SWEEP_INTERVAL_NS;
            self.sync.expire(now_ns);
            let expired = self.conns.expire(now_ns, |c, established| match c.reply_key.transport {
                _ if c.closing => CLOSED_LINGER_NS,
                Transport::Tcp if !established => HALF_OPEN_NS,
                transport => idle_ns(transport),
            });
            for conn in expired {
                self.release(&conn);
            }
        }
    }

    fn forward(&mut self, now_ns: u64, mut packet: Vec<u8>, ingress: Ingress) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let info = inner::parse(&packet)?;
        let key = info.key;
        if let Some(fw) = self.firewall.as_mut()
            && fw.inbound(&key) == crate::security::Verdict::Drop
        {
            return Err(ClbDrop::Denied);
        }
        let li = self.find_listener(&key).ok_or(ClbDrop::NoListener)?;
        if self.listeners[li].config.layer7 {
            return self.forward_l7(now_ns, key, info.tcp, packet, ingress, li);
        }
        if self.listeners[li].quic.is_some() {
            let payload = inner::transport_payload(&packet);
            let mut step = crate::quic_listener::QuicStep::default();
            if let Some(q) = self.listeners[li].quic.as_mut() {
                let client = SocketAddr::new(key.src, key.src_port);
                q.receive(now_ns, client, payload, ingress, key.flow_hash(), &mut step);
            }
            self.apply_quic(li, now_ns, step, ingress);
            self.drive_quic(li, now_ns, ingress);
            return Ok(());
        }
        let existing = self.conns.get_mut(&key).map(|c| {
            c.ingress = ingress;
            c.last_seen_ns = now_ns;
            *c
        });
        // A client packet past the SYN after the backend answered: the handshake is
        // done, and the flow is never pushed out for a new one.
        if info.tcp.is_some_and(|f| !f.syn) && existing.is_some_and(|c| c.answered) {
            self.conns.establish(&key);
        }
        let binding = match existing {
            Some(conn) if conn.listener == li && self.serves_existing(li, conn.backend) => {
                // Renewed at the peers well before their copy would expire.
                if now_ns.saturating_sub(conn.synced_ns) >= idle_ns(key.transport) / 4 {
                    self.sync_flow(now_ns, key);
                }
                conn.backend
            }
            Some(conn) => {
                let binding = self.pick(li, &key, now_ns).ok_or(ClbDrop::NoBackend)?;
                let from = self.backend_addr(conn.listener, conn.backend);
                let to = self.backend_addr(li, binding);
                self.events.push_back(Event::FlowMoved { from, to });
                self.insert_conn(key, li, binding, ingress, now_ns)?;
                binding
            }
            None => {
                // A flow another node of the region scheduled keeps its backend here.
                let adopted = self
                    .sync
                    .peer_flow(&key, now_ns)
                    .and_then(|backend| self.binding_of(li, backend))
                    .filter(|&b| self.serves_existing(li, b));
                match adopted {
                    Some(binding) => {
                        self.sync.forget_flow(&key);
                        self.sync.stats.flows_adopted += 1;
                        self.insert_conn(key, li, binding, ingress, now_ns)?;
                        binding
                    }
                    None => {
                        let binding = self.pick(li, &key, now_ns).ok_or(ClbDrop::NoBackend)?;
                        self.insert_conn(key, li, binding, ingress, now_ns)?;
                        self.flows_created += 1;
                        binding
                    }
                }
            }
        };
        if let Some(flags) = info.tcp {
            self.track_close(&key, flags.fin, flags.rst, true);
        }
        let backend = self.backend_addr(li, binding);
        let to = (backend.ip(), backend.port());
        let snat = self.conns.get_mut(&key).and_then(|c| c.snat);
        let (src, src_port) = snat.unwrap_or((key.src, key.src_port));
        let seen = FlowKey { src, src_port, dst: to.0, dst_port: to.1, ..key };
        let syn = info.tcp.is_some_and(|f| f.syn && !f.ack);
        let named = match snat {
            Some(snat) => {
                packet = inner::translate(&packet, snat, to)?;
                // The backend only sees our address: tell it who the client is.
                syn.then(|| with_toa(packet.clone(), (key.src, key.src_port)))
            }
            None => {
                inner::rewrite(&mut packet, None, Some(to))?;
                // A NAT gateway will put its address in place of the client's; else the
                // client's own address reaches the backend, and a TOA of its own is a lie.
                match (syn, self.listeners[li].bindings[binding].backend.behind_nat) {
                    (true, true) => Some(with_toa(packet.clone(), (key.src, key.src_port))),
                    (true, false) if inner::has_toa(&packet) => Some(inner::strip_toa(&packet).map_err(ClbDrop::from)),
                    _ => None,
                }
            }
        };
        match named {
            Some(Ok(p)) => packet = p,
            Some(Err(e)) => {
                // No flow for it: the entry just made goes, and its SNAT port with it.
                if let Some(conn) = self.conns.remove(&key) {
                    self.release(&conn);
                }
                return Err(e);
            }
            None => {}
        }
        self.outputs.push_back(Queued::to_backend_as(backend, seen, packet));
        Ok(())
    }

    /// An ACK of a connection this node does not know (it restarted, or the ACK is
    /// forged): a reset with the acknowledged number as its sequence (RFC 9293 §3.10.7.1),
    /// within the node's reset budget, so a real client opens a new connection at once.
    fn reset_unknown(&mut self, now_ns: u64, key: &FlowKey, ack: u32, ingress: Ingress) {
        if !self.syn_cookies.take_reset(now_ns) {
            return;
        }
        let rst = inner::bare_tcp(key.dst_port, key.src_port, smoltcp::wire::TcpControl::Rst, ack, None, None);
        if let Some(rst) = inner::build_tcp(key.dst, key.src, &rst) {
            let _ = self.reply_to_client(ingress, key.flow_hash(), rst);
        }
    }

    /// A client packet of a layer-7 listener: the node's own TCP takes it.
    fn forward_l7(
        &mut self,
        now_ns: u64,
        key: FlowKey,
        tcp: Option<inner::TcpFlags>,
        packet: Vec<u8>,
        ingress: Ingress,
        li: usize,
    ) -> Result<(), ClbDrop> {
        if self.l7.get(&key).is_none() {
            let Some(flags) = tcp.filter(|f| !f.rst) else { return Err(ClbDrop::NoConnection) };
            let (seq, ack, mss) = inner::tcp_numbers(&packet).ok_or(ClbDrop::NoConnection)?;
            if flags.syn && !flags.ack {
                // A SYN costs nothing to remember: the SYN-ACK's sequence number is a
                // cookie, and the connection is set up on the ACK that returns it.
                let (cookie, mss) = self.syn_cookies.make(&key, seq, mss, now_ns);
                let control = smoltcp::wire::TcpControl::Syn;
                let syn_ack =
                    inner::bare_tcp(key.dst_port, key.src_port, control, cookie, Some(seq.wrapping_add(1)), Some(mss));
                let syn_ack = inner::build_tcp(key.dst, key.src, &syn_ack).ok_or(ClbDrop::NoConnection)?;
                self.syn_cookies_sent += 1;
                return self.reply_to_client(ingress, key.flow_hash(), syn_ack).map_err(ClbDrop::from);
            }
            if flags.syn || !flags.ack {
                return Err(ClbDrop::NoConnection);
            }
            let (client_isn, cookie) = (seq.wrapping_sub(1), ack.wrapping_sub(1));
            let Some(mss) = self.syn_cookies.check(&key, client_isn, cookie, now_ns) else {
                self.reset_unknown(now_ns, &key, ack, ingress);
                return Err(ClbDrop::BadCookie);
            };
            let seed = u64::from(key.flow_hash()) ^ u64::from(self.node_index) << 32;
            let config = &self.listeners[li].config;
            let mode = crate::l7::Mode { http: config.http, tls: config.tls.as_ref() };
            match self.l7.accept(key, li, &self.own_addresses, mode, seed, now_ns) {
                Ok(()) => {}
                Err(crate::l7::Refused::SourceCap) => return Err(ClbDrop::SourceCap),
                Err(crate::l7::Refused::Full) => return Err(ClbDrop::NoBackend),
            }
            if !self.l7.splice(&key, client_isn, cookie, mss, now_ns) {
                self.l7.remove(&key);
                return Err(ClbDrop::NoBackend);
            }
            self.flows_created += 1;
        }
        self.l7_ingress.insert(key, (ingress, key.flow_hash()));
        self.l7.receive_client(&key, packet);
        self.drive_l7(&key, now_ns);
        Ok(())
    }

    /// Moves a layer-7 connection along and sends what it produced.
    fn drive_l7(&mut self, key: &FlowKey, now_ns: u64) {
        let mut step = self.l7.drive(key, now_ns);
        if step.needs_backend {
            let Some(li) = self.l7.get(key).map(crate::l7::Proxied::listener) else { return };
            let chosen = self.pick(li, key, now_ns).and_then(|binding| {
                let backend = self.backend_addr(li, binding);
                let local = self.allocate_snat(Transport::Tcp, backend)?;
                Some((binding, backend, local))
            });
            if let Some((binding, backend, local)) = chosen {
                if self.l7.connect(key, binding, backend, local) {
                    self.listeners[li].bindings[binding].active += 1;
                    let more = self.l7.drive(key, now_ns);
                    step.to_client.extend(more.to_client);
                    step.to_backend.extend(more.to_backend);
                    step.finished = more.finished;
                } else {
                    // Not connected: the port was never used.
                    self.snat_free(local.0, local.1, Transport::Tcp, backend);
                }
            }
        }
        let (ingress, flow_hash) = self.l7_ingress.get(key).copied().unwrap_or((Ingress::Direct, 0));
        for packet in step.to_client {
            let _ = self.reply_to_client(ingress, flow_hash, packet);
        }
        let backend = self.l7.get(key).and_then(|c| c.bound()).map(|(_, addr, _)| addr);
        let http = self.l7.get(key).is_some_and(|c| self.listeners[c.listener()].config.http);
        if let Some(backend) = backend {
            for mut bytes in step.to_backend {
                // TCP SSL: the backend's peer is this node; a TOA option names the client.
                let syn = inner::parse(&bytes).is_ok_and(|i| i.tcp.is_some_and(|f| f.syn && !f.ack));
                if syn && !http {
                    // The node's own SYN: its few options always leave room.
                    let toa = inner::toa_option((key.src, key.src_port));
                    bytes = inner::insert_tcp_option(&bytes, &toa).unwrap_or(bytes);
                }
                self.outputs.push_back(Queued::to_backend(backend, bytes));
            }
        }
        if step.finished
            && let Some(c) = self.l7.remove(key)
        {
            self.l7_ingress.remove(key);
            if let Some((binding, backend, (ip, port))) = c.bound() {
                self.listeners[c.listener()].bindings[binding].release();
                self.snat_free(ip, port, Transport::Tcp, backend);
            }
        }
    }

    /// Drives a QUIC listener and carries out what it asks.
    fn drive_quic(&mut self, li: usize, now_ns: u64, fallback: Ingress) {
        // Choosing backends and opening relays produce more work: a few rounds settle it.
        for _ in 0..4 {
            let mut step = crate::quic_listener::QuicStep::default();
            let Some(q) = self.listeners[li].quic.as_mut() else { return };
            q.drive(now_ns, &mut step);
            let more = !step.need_backend.is_empty() || !step.need_port.is_empty();
            self.apply_quic(li, now_ns, step, fallback);
            if !more {
                break;
            }
        }
    }

    fn apply_quic(&mut self, li: usize, now_ns: u64, step: crate::quic_listener::QuicStep, fallback: Ingress) {
        for ch in step.need_backend {
            let Some(first) = self.listeners[li].quic.as_ref().and_then(|q| q.conn(ch)).map(|c| c.first) else {
                continue;
            };
            let vip = self.listeners[li].quic.as_ref().map(|q| q.vip());
            let Some(vip) = vip else { continue };
            let key = FlowKey {
                transport: Transport::Udp,
                src: first.ip(),
                src_port: first.port(),
                dst: vip.ip(),
                dst_port: vip.port(),
            };
            if let Some(binding) = self.pick(li, &key, now_ns) {
                let backend = self.backend_addr(li, binding);
                if let Some(q) = self.listeners[li].quic.as_mut() {
                    q.set_backend(ch, binding, backend, now_ns);
                }
                self.listeners[li].bindings[binding].active += 1;
                self.flows_created += 1;
            }
        }
        for (ch, stream) in step.need_port {
            let backend = self.listeners[li].quic.as_ref().and_then(|q| q.conn(ch)).and_then(|c| c.backend);
            let Some(backend) = backend else { continue };
            if let Some(local) = self.allocate_snat(Transport::Tcp, backend)
                && let Some(q) = self.listeners[li].quic.as_mut()
                && !q.open_relay(ch, stream, local)
            {
                self.snat_free(local.0, local.1, Transport::Tcp, backend);
            }
        }
        for (ch, dst, payload) in step.to_client {
            let Some(q) = self.listeners[li].quic.as_ref() else { return };
            let (ingress, flow_hash) = q.conn(ch).map_or((fallback, 0), |c| (c.ingress, c.flow_hash));
            let Some(packet) = q.datagram_to(dst, &payload) else { continue };
            let _ = self.reply_to_client(ingress, flow_hash, packet);
        }
        for (backend, client, mut bytes) in step.to_backend {
            if inner::parse(&bytes).is_ok_and(|i| i.tcp.is_some_and(|f| f.syn && !f.ack)) {
                let toa = inner::toa_option((client.ip(), client.port()));
                bytes = inner::insert_tcp_option(&bytes, &toa).unwrap_or(bytes);
            }
            self.outputs.push_back(Queued::to_backend(backend, bytes));
        }
        for (binding, ports) in step.closed {
            if let Some(b) = binding {
                self.listeners[li].bindings[b].release();
            }
            for (backend, (ip, port)) in ports {
                self.snat_free(ip, port, Transport::Tcp, backend);
            }
        }
    }

    /// This node's QUIC listeners, summed.
    pub fn quic_counts(&self) -> crate::quic_listener::QuicCounts {
        self.listeners.iter().filter_map(|l| l.quic.as_ref()).fold(Default::default(), |sum, q| sum + q.counts())
    }

    /// Layer-7 connections this node holds now.
    pub fn proxied_connections(&self) -> usize {
        self.l7.len()
    }

    /// Buffer bytes the node's proxied connections hold (`l7::PROXIED_BYTES_MAX`).
    pub fn proxied_buffer_bytes(&self) -> usize {
        self.l7.buffer_bytes()
    }

    /// Whether a flow to this binding goes through SNAT: on-premises backends, and
    /// backends of the other IP family (NAT64).
    fn needs_snat(&self, key: &FlowKey, li: usize, binding: usize) -> bool {
        let b = &self.listeners[li].bindings[binding].backend;
        b.snat || b.addr.is_ipv4() != key.dst.is_ipv4()
    }

    /// A free SNAT address and port in the backend's family toward this backend, from
    /// this node's share of the port range: each (backend, transport) has a pool of its
    /// own, so a flood toward one backend leaves every other backend's ports alone.
    fn allocate_snat(&mut self, transport: Transport, backend: SocketAddr) -> Option<(IpAddr, u16)> {
        let ip = *self.snat_ips.iter().find(|a| a.is_ipv4() == backend.is_ipv4())?;
        let pool = (ip, transport, backend);
        let share = u32::from(SNAT_PORTS.end - SNAT_PORTS.start) / u32::from(self.node_count);
        // A full pool is known without a look at every port (a flood would pay that per SYN).
        let full = self.snat_taken.get(&pool).is_some_and(|&n| n >= share as usize);
        for _ in 0..if full { 0 } else { share } {
            let k = self.snat_cursor % share;
            self.snat_cursor = self.snat_cursor.wrapping_add(1);
            let port = SNAT_PORTS.start + (k * u32::from(self.node_count)) as u16 + self.node_index;
            if self.snat_used.insert((ip, port, transport, backend)) {
                *self.snat_taken.entry(pool).or_default() += 1;
                return Some((ip, port));
            }
        }
        // Every port taken: the least recently used flow to this backend that never got
        // established (a spoofed SYN's) gives up its port; an established flow never does.
        let to_backend = |c: &Conn| SocketAddr::new(c.reply_key.src, c.reply_key.src_port) == backend;
        let victim = self.conns.oldest_open(SNAT_EVICT_SCAN, |c| {
            c.snat.is_some_and(|(a, _)| a == ip) && c.reply_key.transport == transport && to_backend(c)
        })?;
        let conn = self.conns.remove(&victim)?;
        self.release(&conn);
        self.snat_evictions += 1;
        let taken = conn.snat?;
        self.snat_used.insert((taken.0, taken.1, transport, backend));
        *self.snat_taken.entry(pool).or_default() += 1;
        Some(taken)
    }

    /// Gives a SNAT port taken toward `backend` back.
    fn snat_free(&mut self, ip: IpAddr, port: u16, transport: Transport, backend: SocketAddr) {
        let pool = (ip, transport, backend);
        if self.snat_used.remove(&(ip, port, transport, backend))
            && let Some(n) = self.snat_taken.get_mut(&pool)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.snat_taken.remove(&pool);
            }
        }
    }

    /// SNAT ports taken back from flows that never got established, for new ones.
    /// SYN-ACKs this node answered layer-7 SYNs with, a cookie each (nothing kept).
    pub fn syn_cookies_sent(&self) -> u64 {
        self.syn_cookies_sent
    }

    pub fn snat_evictions(&self) -> u64 {
        self.snat_evictions
    }

    /// A RST, or FINs from both sides, close a connection: it stops counting as active.
    fn track_close(&mut self, key: &FlowKey, fin: bool, rst: bool, from_client: bool) {
        if !fin && !rst {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.closing {
            return;
        }
        if fin && from_client {
            conn.fin_client = true;
        } else if fin {
            conn.fin_backend = true;
        }
        if rst || (conn.fin_client && conn.fin_backend) {
            conn.closing = true;
            let (l, b) = (conn.listener, conn.backend);
            self.listeners[l].bindings[b].release();
        }
    }

    /// An entry left the table: it no longer counts as active, its SNAT port is free.
    fn release(&mut self, conn: &Conn) {
        if let Some((ip, port)) = conn.snat {
            let backend = SocketAddr::new(conn.reply_key.src, conn.reply_key.src_port);
            self.snat_free(ip, port, conn.reply_key.transport, backend);
        }
        if !conn.closing {
            self.listeners[conn.listener].bindings[conn.backend].release();
        }
    }

    /// A new flow's entry (or a moved flow's new one); refused when the table holds only
    /// established flows, and then nothing of it is kept (its SNAT port goes back).
    fn insert_conn(
        &mut self,
        key: FlowKey,
        listener: usize,
        binding: usize,
        ingress: Ingress,
        now_ns: u64,
    ) -> Result<(), ClbDrop> {
        let half_open = self.conns.half_open_from(key.src);
        if key.transport == Transport::Tcp && half_open >= crate::conn_table::HALF_OPEN_PER_SOURCE_MAX {
            return Err(ClbDrop::SourceCap);
        }
        let backend = self.backend_addr(listener, binding);
        let translated = self.needs_snat(&key, listener, binding);
        let groups = &self.listeners[listener].bindings[binding].backend.security_groups;
        let as_backend_judges = FlowKey { dst: backend.ip(), dst_port: backend.port(), ..key };
        if translated && !crate::security::SecurityGroup::admit(groups, &as_backend_judges) {
            // The backend would see our address, not the client's: its groups judge the
            // client here (an IPv6 client through NAT64 went past a group denying it).
            return Err(ClbDrop::Denied);
        }
        let snat = if translated {
            // Out of SNAT ports: the flow goes unanswered rather than unaddressed.
            self.allocate_snat(key.transport, backend)
        } else {
            None
        };
        let (seen_ip, seen_port) = snat.unwrap_or((key.src, key.src_port));
        let reply_key = FlowKey {
            transport: key.transport,
            src: backend.ip(),
            src_port: backend.port(),
            dst: seen_ip,
            dst_port: seen_port,
        };
        // Replies are told apart by their tuple alone: a second flow with the first's (the
        // same client port to another listener's same backend) would take its replies.
        if self.conns.reply_owner(&reply_key).is_some_and(|owner| owner != key) {
            if let Some((ip, port)) = snat {
                self.snat_free(ip, port, key.transport, backend);
            }
            return Err(ClbDrop::ReplyTaken);
        }
        let mut conn = Conn::new(listener, binding, ingress, key.flow_hash(), reply_key, now_ns);
        conn.snat = snat;
        let Ok(pushed_out) = self.conns.insert(key, conn) else {
            if let Some((ip, port)) = snat {
                self.snat_free(ip, port, key.transport, backend);
            }
            return Err(ClbDrop::TableFull);
        };
        self.listeners[listener].bindings[binding].active += 1;
        for old in pushed_out {
            self.release(&old);
        }
        self.sync_flow(now_ns, key);
        Ok(())
    }

    /// The address of a listener's binding.
    fn backend_addr(&self, li: usize, binding: usize) -> SocketAddr {
        self.backends[self.listeners[li].bindings[binding].port].addr
    }

    fn find_listener(&self, key: &FlowKey) -> Option<usize> {
        self.listeners.find(key)
    }

    /// Adds a listener at run time (a committed route-table change). Its backends get
    /// health checks of `health` unless already checked for another listener. A listener
    /// already serving the same VIP, port and transport is left as it is.
    pub fn add_listener(&mut self, config: ListenerConfig, health: &crate::HealthConfig) {
        if self.has_listener(config.vip, config.transport, config.port) {
            return;
        }
        let (mut listener, added) = ListenerState::new(config, &mut self.backends, health);
        for h in added {
            self.health.add_port(h, self.now_ns);
        }
        let ids = (&self.secret, self.cid_cipher.as_ref());
        let node = (self.node_index as u8, self.l7.source_prefix_v4());
        listener.quic = quic_endpoint(&listener.config, &self.own_addresses, node, ids);
        self.listeners.push(listener);
        self.rebuild_tables();
    }

    /// A VIP's certificate rotated: listeners that terminate TLS or QUIC with `from`'s
    /// certificate terminate with `to`'s from now on. New connections handshake with the
    /// new one; connections already open keep their session and their backend. Returns
    /// how many listeners changed.
    pub fn replace_identity(
        &mut self,
        from: &crate::identity::VipIdentity,
        to: &crate::identity::VipIdentity,
    ) -> usize {
        /// The old and the new termination of one kind (one-way, mutual), when there is one.
        type Pair<'a, T> = (Option<&'a crate::Shared<T>>, Option<&'a crate::Shared<T>>);
        fn swap<T>(now: &mut Option<crate::Shared<T>>, pairs: [Pair<'_, T>; 2]) -> bool {
            let Some(current) = now.as_ref() else { return false };
            for (old, new) in pairs {
                if let (Some(old), Some(new)) = (old, new)
                    && std::sync::Arc::ptr_eq(&old.0, &current.0)
                {
                    *now = Some(new.clone());
                    return true;
                }
            }
            false
        }
        let mut changed = 0;
        for l in self.listeners.iter_mut() {
            let tls = [(Some(&from.tls), Some(&to.tls)), (from.tls_mutual.as_ref(), to.tls_mutual.as_ref())];
            let quic = [(Some(&from.quic), Some(&to.quic)), (from.quic_mutual.as_ref(), to.quic_mutual.as_ref())];
            let tls = swap(&mut l.config.tls, tls);
            let quic = swap(&mut l.config.quic, quic);
            if let (true, Some(endpoint), Some(termination)) = (quic, l.quic.as_mut(), l.config.quic.as_ref()) {
                endpoint.set_termination(termination);
            }
            changed += usize::from(tls || quic);
        }
        changed
    }

    /// Deletes the listener on this VIP, port and transport: new packets to it match
    /// nothing, and its existing flows end.
    pub fn remove_listener(&mut self, vip: IpAddr, transport: Transport, port: u16) {
        for l in self.listeners.iter_mut().filter(|l| l.serves(vip, transport, port)) {
            l.removed = true;
        }
    }

    /// Whether a listener serves this VIP, port and transport now.
    pub fn has_listener(&self, vip: IpAddr, transport: Transport, port: u16) -> bool {
        self.listeners.find_vip(vip, transport, port).is_some()
    }

    /// Weights as schedulers see them: 0 for unhealthy or unbound ports.
    fn effective_weights(&self, li: usize) -> Vec<u32> {
        let live = |p: PortId| self.health.is_healthy(p.0) && !self.backends[p].unbound;
        self.listeners[li].bindings.iter().map(|b| if live(b.port) { u32::from(b.backend.weight) } else { 0 }).collect()
    }

    /// Whether an existing flow may stay on its backend (weight 0 does not matter).
    fn serves_existing(&self, li: usize, binding: usize) -> bool {
        if self.listeners[li].removed {
            return false;
        }
        let p = self.listeners[li].bindings[binding].port;
        self.health.is_healthy(p.0) && !self.backends[p].unbound
    }

    fn eligible(&self, li: usize, binding: usize) -> bool {
        let l = &self.listeners[li];
        l.bindings.get(binding).is_some_and(|b| b.backend.weight > 0) && self.serves_existing(li, binding)
    }

    /// Picks a binding for a new flow: a live persistence entry first, then the scheduler.
    fn pick(&mut self, li: usize, key: &FlowKey, now_ns: u64) -> Option<usize> {
        let persistence_ns = self.listeners[li].config.persistence_ns;
        if let Some(ttl_ns) = persistence_ns
            && let Some(&(binding, expires_ns, synced_ns)) = self.persistence.get(&(li, key.src))
            && expires_ns > now_ns
            && self.eligible(li, binding)
        {
            let renew = now_ns.saturating_sub(synced_ns) >= ttl_ns / 4;
            self.persistence.put((li, key.src), (binding, now_ns + ttl_ns, if renew { now_ns } else { synced_ns }));
            if renew {
                self.sync_persistence(now_ns, li, key.src, binding, ttl_ns);
            }
            return Some(binding);
        }
        let binding = match self.listeners[li].config.scheduler {
            SchedulerKind::Wrr => {
                let weights = self.effective_weights(li);
                let ListenerState { bindings, wrr, .. } = &mut self.listeners[li];
                let cands: Vec<Candidate> =
                    bindings.iter().zip(&weights).map(|(b, &w)| Candidate { name: &b.name, weight: w }).collect();
                wrr.pick(&cands)?
            }
            SchedulerKind::Wlc => self.least_connections(li)?,
            SchedulerKind::Hash { .. } => self.listeners[li].table.as_ref()?.lookup(source_hash(key.src))?,
            SchedulerKind::Maglev { .. } => self.listeners[li].table.as_ref()?.lookup(key.flow_hash())?,
        };
        if let Some(ttl_ns) = persistence_ns {
            self.put_persistence((li, key.src), (binding, now_ns + ttl_ns, now_ns));
            self.sync_persistence(now_ns, li, key.src, binding, ttl_ns);
        }
        Some(binding)
    }

    /// Sets a persistence entry, keeping the table within the connection table's bound.
    fn put_persistence(&mut self, key: (usize, IpAddr), value: (usize, u64, u64)) {
        self.persistence.put(key, value);
        while self.persistence.len() > self.conns.capacity() {
            self.persistence.pop_lru();
        }
    }

    fn sync_persistence(&mut self, now_ns: u64, li: usize, client: IpAddr, binding: usize, ttl_ns: u64) {
        let l = &self.listeners[li];
        let entry = Entry::Persist {
            transport: l.config.transport,
            client,
            vip: SocketAddr::new(l.config.vip, l.config.port),
            backend: self.backend_addr(li, binding),
            ttl_ms: u32::try_from(ttl_ns / 1_000_000).unwrap_or(u32::MAX),
        };
        self.sync.queue(now_ns, entry);
    }

    /// The binding with the fewest active flows per unit of weight; ties go to the
    /// heavier, then the first.
    fn least_connections(&self, li: usize) -> Option<usize> {
        let weights = self.effective_weights(li);
        let bindings = &self.listeners[li].bindings;
        let active = |i: usize| bindings[i].active;
        let mut best: Option<usize> = None;
        for (i, &w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
            best = match best {
                None => Some(i),
                Some(b) => {
                    // active[i]/w < active[b]/weights[b], without division.
                    let lhs = u64::from(active(i)) * u64::from(weights[b]);
                    let rhs = u64::from(active(b)) * u64::from(w);
                    if lhs < rhs || (lhs == rhs && w > weights[b]) { Some(i) } else { Some(b) }
                }
            };
        }
        best
    }

    fn rebuild_tables(&mut self) {
        for li in 0..self.listeners.len() {
            let table_size = match self.listeners[li].config.scheduler {
                SchedulerKind::Maglev { table_size } | SchedulerKind::Hash { table_size } => table_size,
                SchedulerKind::Wrr | SchedulerKind::Wlc => continue,
            };
            let weights = self.effective_weights(li);
            let l = &self.listeners[li];
            let cands: Vec<Candidate> =
                l.bindings.iter().zip(&weights).map(|(b, &w)| Candidate { name: &b.name, weight: w }).collect();
            let table = Maglev::build(&cands, table_size);
            self.listeners[li].table = Some(table);
        }
    }

    fn apply_health_changes(&mut self, changes: &mut Vec<(usize, Health)>) {
        if changes.is_empty() {
            return;
        }
        for (port, state) in changes.drain(..) {
            let healthy = state == Health::Healthy;
            self.events.push_back(Event::HealthChanged { backend: self.backends[PortId(port)].addr, healthy });
        }
        self.rebuild_tables();
    }

    /// A packet answering one of this node's health probes.
    fn probe_packet(&mut self, now_ns: u64, info: &Inner, packet: &[u8]) {
        let (mut sends, mut answers) = (Vec::new(), Vec::new());
        let (health, backends) = (&self.health, &self.backends);
        let backend_of = |id: u16| health.backend_of_probe(id).map(|p| backends[PortId(p)].addr);
        self.prober.on_packet(now_ns, info, packet, backend_of, &mut sends, &mut answers);
        let mut changes = std::mem::take(&mut self.changes);
        self.apply_answers(&answers, &mut changes);
        self.apply_health_changes(&mut changes);
        self.changes = changes;
        self.outputs.extend(sends.into_iter().map(|(backend, bytes)| Queued::to_backend(backend, bytes)));
    }

    fn apply_answers(&mut self, answers: &[crate::health_check::Answer], changes: &mut Vec<(usize, Health)>) {
        for &(probe_id, ok) in answers {
            if let Some(port) = self.health.backend_of_probe(probe_id) {
                self.health.on_answer(port, probe_id, ok, changes);
            }
        }
    }
}

/// A QUIC listener's endpoint (connection IDs name this node, encrypted under the
/// region's key, the rest drawn under the node's secret for this listener; IPv4 sources
/// counted by `source_prefix_v4` bits), for QUIC listeners.
fn quic_endpoint(
    config: &ListenerConfig,
    own: &[IpAddr],
    (node, source_prefix_v4): (u8, u8),
    (secret, cipher): (&anyedge_ccn::Prf, Option<&anyedge_ccn::CidCipher>),
) -> Option<QuicListener> {
    let vip = SocketAddr::new(config.vip, config.port);
    let seed = u64::from(node) << 48 ^ u64::from(config.port);
    let cid_secret = secret.eval(format!("quic cid {vip}").as_bytes());
    let ids = (node, cid_secret, cipher.cloned());
    let listener = config.quic.as_ref().map(|q| QuicListener::new(q, vip, own.to_vec(), ids, seed))?;
    Some(listener.with_source_prefix_v4(source_prefix_v4))
}

/// The hash `hash` listeners schedule by: the client's address alone.
fn source_hash(src: IpAddr) -> u32 {
    let mut h = Fnv::new();
    h.addr(src);
    (mix64(h.finish()) >> 32) as u32
}

#[cfg(test)]
mod tests {
    //! A harness in the quinn-proto style: the core alone, packets in and out, no I/O.
    use super::*;
    use crate::config::{BackendConfig, HealthConfig};
    use crate::tcp_stack::TcpStack;
    use anyedge_ccn::auth::{AuthConfig, BackboneSecret};
    use smoltcp::iface::SocketHandle;
    use smoltcp::wire::TcpControl;

    /// The test backbone: POPs 0..4, three CLB nodes of region 0, and the backend hosts.
    fn backbone() -> (BackboneSecret, Vec<NodeId>) {
        let pops = (0..4).map(NodeId::Pop);
        let clbs = (0..3).map(|node| NodeId::Clb { region: 0, node });
        let hosts = backend_hosts().into_iter().map(|(_, id)| id);
        (BackboneSecret::from_seed(3), pops.chain(clbs).chain(hosts).collect())
    }

    /// The hosts of B1 and B2.
    fn backend_hosts() -> Vec<(IpAddr, NodeId)> {
        [B1, B2]
            .iter()
            .enumerate()
            .map(|(i, b)| (b.parse::<SocketAddr>().unwrap().ip(), NodeId::Backend { region: 0, host: i as u16 }))
            .collect()
    }

    fn host_of(ip: IpAddr) -> NodeId {
        backend_hosts().into_iter().find(|(a, _)| *a == ip).expect("a test backend host").1
    }

    /// A packet the core sent, as its receiver sees it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Sent {
        /// An encapsulated reply for the POP with this id (still sealed).
        Pop { pop_id: u16, bytes: Vec<u8> },
        /// An IP packet a backend receives (opened by its host).
        Backend { backend: SocketAddr, bytes: Vec<u8> },
        /// An IP packet straight to a client.
        Client { bytes: Vec<u8> },
        /// Connection-table sync for the region's CLB node with this index (still sealed).
        Peer { node: u16, bytes: Vec<u8> },
    }

    impl Clb {
        /// The next output as its receiver sees it: a backend's packet opened by its host.
        /// Every output carries the flow hash of the packet it was made from.
        fn next_out(&mut self) -> Option<Sent> {
            let Transmit { dest, flow_hash, bytes } = self.poll_output()?;
            Some(match dest {
                Dest::Backend(backend) => {
                    let mut host = keyring(host_of(backend.ip()));
                    let (from, opened) = host.open(Kind::Backend, &bytes).expect("sealed for the backend's host");
                    assert_eq!(from, NodeId::Clb { region: 0, node: self.node_index });
                    assert_eq!(flow_hash, inner::parse(opened).unwrap().key.flow_hash(), "the packet's own flow");
                    Sent::Backend { backend, bytes: opened.to_vec() }
                }
                Dest::Node(NodeId::Pop(pop_id)) => {
                    let opened = at_pop(pop_id, &bytes);
                    let (repr, _) = ccn::decapsulate(&opened).unwrap();
                    assert_eq!(repr.flow_hash, flow_hash, "the hash the CCN header carries");
                    Sent::Pop { pop_id, bytes }
                }
                Dest::Node(NodeId::Clb { region: 0, node }) => Sent::Peer { node, bytes },
                Dest::Client(client) => {
                    let key = inner::parse(&bytes).unwrap().key;
                    assert_eq!((client, flow_hash), (key.dst, key.flow_hash()));
                    Sent::Client { bytes }
                }
                other => panic!("a CLB node sends nothing to {other:?}"),
            })
        }

        /// A packet from a backend, sealed by the host its source address belongs to.
        fn handle_backend_sealed(&mut self, now_ns: u64, packet: Vec<u8>) -> Result<(), ClbDrop> {
            let src = inner::parse(&packet).unwrap().key.src;
            let to = NodeId::Clb { region: 0, node: self.node_index };
            let sealed = keyring(host_of(src)).seal(to, Kind::Backend, &packet).unwrap();
            self.handle_from_backend(now_ns, sealed)
        }
    }

    /// The keys of CLB node `node` of region 0.
    fn auth(node: u16) -> AuthConfig {
        let (secret, peers) = backbone();
        let me = NodeId::Clb { region: 0, node };
        AuthConfig {
            keys: secret.keys_for(me, &peers.into_iter().filter(|&p| p != me).collect::<Vec<_>>()),
            cid_keys: vec![(0, secret.cid_key(0))],
            ..AuthConfig::default()
        }
    }

    /// A fresh keyring for `id` whose sequence numbers are ahead of every earlier one's.
    fn keyring(id: NodeId) -> Keyring {
        static BOOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        let (secret, peers) = backbone();
        let boot = BOOT.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
        Keyring::new(id, &secret.keys_for(id, &peers), boot)
    }

    /// What POP `pop` sends CLB node `node` of region 0 for `packet`.
    fn from_pop(pop: u16, node: u16, packet: &[u8]) -> Vec<u8> {
        let bytes = ccn::encapsulate(Direction::ToRegion, pop, 1, packet).unwrap();
        keyring(NodeId::Pop(pop)).seal(NodeId::Clb { region: 0, node }, Kind::Data, &bytes).unwrap()
    }

    /// The CCN packet POP `pop` finds in what a CLB node sent it.
    fn at_pop(pop: u16, sealed: &[u8]) -> Vec<u8> {
        keyring(NodeId::Pop(pop)).open(Kind::Data, sealed).expect("sealed for this POP").1.to_vec()
    }

    /// A VIP identity from a fresh self-signed certificate (its own client CA too).
    fn identity() -> crate::identity::VipIdentity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["edge".to_string()]).unwrap().self_signed(&key).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        crate::identity::VipIdentity::new(vec![cert.der().clone()], der, Some(cert.der().clone())).unwrap()
    }

    #[test]
    fn a_rotated_vip_certificate_replaces_the_old_one_on_every_listener_that_presented_it() {
        let (a, b) = (identity(), identity());
        let mut c = config(SchedulerKind::Wrr, None);
        let base = c.listeners[0].clone();
        let https = |port, tls| ListenerConfig {
            transport: Transport::Tcp,
            port,
            layer7: true,
            http: true,
            tls,
            ..base.clone()
        };
        c.listeners.push(https(8443, Some(a.tls.clone())));
        c.listeners.push(https(9443, a.tls_mutual.clone()));
        c.listeners.push(ListenerConfig { port: 4433, quic: Some(a.quic.clone()), ..base.clone() });
        let mut clb = Clb::new(c, 0);
        assert_eq!(clb.replace_identity(&b, &a), 0, "no listener presented b");
        assert_eq!(clb.replace_identity(&a, &b), 3, "HTTPS, mutual HTTPS and QUIC");
        assert_eq!(clb.replace_identity(&a, &b), 0, "a is presented nowhere now");
        let at = |port: u16| clb.listeners.iter().find(|l| l.config.port == port).unwrap();
        let same = |x: &Option<crate::Shared<rustls::ServerConfig>>, y: &crate::Shared<rustls::ServerConfig>| {
            x.as_ref().is_some_and(|x| std::sync::Arc::ptr_eq(&x.0, &y.0))
        };
        assert!(same(&at(8443).config.tls, &b.tls), "one-way TLS takes b's one-way config");
        assert!(same(&at(9443).config.tls, b.tls_mutual.as_ref().unwrap()), "mutual TLS takes b's mutual config");
        assert!(at(4433).config.quic.as_ref().is_some_and(|q| std::sync::Arc::ptr_eq(&q.0, &b.quic.0)));
        assert!(at(7000).config.tls.is_none() && at(7000).config.quic.is_none(), "plain UDP untouched");
    }

    /// A node whose one listener is an HTTP proxy on the VIP's port 80.
    fn http_node() -> Clb {
        let mut c = config(SchedulerKind::Wrr, None);
        let l = &mut c.listeners[0];
        (l.transport, l.port, l.layer7, l.http) = (Transport::Tcp, 80, true, true);
        Clb::new(c, 0)
    }

    fn tcp_flags(bytes: &[u8]) -> inner::TcpFlags {
        inner::parse(bytes).unwrap().tcp.unwrap()
    }

    #[test]
    fn an_http_listener_answers_syns_with_cookies_and_keeps_nothing_until_the_ack_returns_one() {
        let mut clb = http_node();
        let vip: IpAddr = VIP.parse().unwrap();
        // 10,000 spoofed SYNs: a SYN-ACK each, no connection, nothing kept.
        for i in 0..10_000u32 {
            let src = (IpAddr::from([203, 0, (i >> 8) as u8, i as u8]), 1024 + (i % 50_000) as u16);
            let syn = inner::build_tcp(src.0, vip, &inner::bare_tcp(src.1, 80, TcpControl::Syn, i, None, Some(1460)));
            clb.handle_direct(1_000, syn.unwrap()).unwrap();
            let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("SYN {i} unanswered") };
            let f = tcp_flags(&bytes);
            assert!(f.syn && f.ack, "a SYN-ACK");
            assert_eq!(inner::tcp_numbers(&bytes).map(|n| n.1), Some(i.wrapping_add(1)), "it acknowledges the SYN");
        }
        assert_eq!((clb.l7.len(), clb.syn_cookies_sent()), (0, 10_000), "no connection set up for a SYN");
        // An ACK whose acknowledgement is no cookie of this node's sets nothing up either.
        let src: IpAddr = "203.0.0.1".parse().unwrap();
        for guess in [0u32, 1, 0xdead_beef] {
            let ack = inner::bare_tcp(1025, 80, TcpControl::None, 2, Some(guess), None);
            let ack = inner::build_tcp(src, vip, &ack).unwrap();
            assert_eq!(clb.handle_direct(2_000, ack).map_err(|e| e.name()), Err("bad_cookie"));
        }
        assert_eq!(clb.l7.len(), 0);
    }

    #[test]
    fn a_segment_of_a_connection_the_node_does_not_know_is_reset_within_a_budget() {
        // A node that restarted gets the next segment of a connection it held before.
        let mut clb = http_node();
        let (vip, src): (IpAddr, IpAddr) = (VIP.parse().unwrap(), "203.0.0.1".parse().unwrap());
        let segment = |ack: u32| {
            let repr = inner::bare_tcp(1025, 80, TcpControl::Psh, 7_000, Some(ack), None);
            inner::build_tcp(src, vip, &repr).unwrap()
        };
        assert_eq!(clb.handle_direct(1_000, segment(0x1234_5678)).map_err(|e| e.name()), Err("bad_cookie"));
        let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("no reset for an unknown connection") };
        let f = tcp_flags(&bytes);
        assert!(f.rst && !f.syn, "a reset");
        assert_eq!(inner::tcp_numbers(&bytes).map(|n| n.0), Some(0x1234_5678), "its sequence is the segment's ack");
        let parsed = inner::parse(&bytes).unwrap().key;
        assert_eq!((parsed.src, parsed.src_port, parsed.dst, parsed.dst_port), (vip, 80, src, 1025));
        assert_eq!(clb.l7.len(), 0, "nothing set up");
        // A flood of forged ACKs gets at most the budget back in a second, and the budget
        // comes back the next second.
        let mut resets = 0;
        for i in 0..3 * crate::syn_cookie::RESETS_PER_S {
            let _ = clb.handle_direct(2_000_000_000 + u64::from(i), segment(i));
            while clb.next_out().is_some() {
                resets += 1;
            }
        }
        assert_eq!(resets, crate::syn_cookie::RESETS_PER_S);
        let _ = clb.handle_direct(3_000_000_000, segment(1));
        assert!(clb.next_out().is_some(), "a new second, a new budget");
    }

    #[test]
    fn a_client_behind_a_syn_cookie_gets_its_request_to_a_backend_and_the_answer_back() {
        let mut clb = http_node();
        let vip: IpAddr = VIP.parse().unwrap();
        let me: IpAddr = "198.18.64.7".parse().unwrap();
        let mut client = TcpStack::new(me, 5, 0);
        let h = client.connect(SocketAddr::new(vip, 80), (me, 40_000)).unwrap();
        // Both backends run a server on their port.
        let mut servers: Vec<(SocketAddr, TcpStack, SocketHandle)> = [B1, B2]
            .iter()
            .map(|b| {
                let addr: SocketAddr = b.parse().unwrap();
                let mut stack = TcpStack::new(addr.ip(), 9, 0);
                let s = stack.new_socket();
                stack.socket(s).listen(addr.port()).unwrap();
                (addr, stack, s)
            })
            .collect();
        let request = b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n".to_vec();
        let (mut sent, mut answered, mut got) = (false, false, Vec::new());
        for step in 0..200u64 {
            let now = 1_000_000 + step * 1_000_000;
            client.poll(now);
            let s = client.socket(h);
            if s.may_send() && !sent {
                sent = s.send_slice(&request).unwrap() == request.len();
            }
            while s.can_recv() {
                let mut buf = [0u8; 4096];
                let n = s.recv_slice(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            client.poll(now);
            for p in client.drain_tx().collect::<Vec<_>>() {
                let _ = clb.handle_direct(now, p);
            }
            clb.handle_timeout(now);
            while let Some(out) = clb.next_out() {
                match out {
                    Sent::Client { bytes } => client.receive(bytes),
                    Sent::Backend { backend, bytes } => {
                        servers.iter_mut().find(|(a, _, _)| *a == backend).unwrap().1.receive(bytes)
                    }
                    _ => {}
                }
            }
            for (_, stack, sock) in servers.iter_mut() {
                stack.poll(now);
                let s = stack.socket(*sock);
                if s.can_recv() && !answered {
                    let mut buf = [0u8; 4096];
                    let n = s.recv_slice(&mut buf).unwrap();
                    assert!(buf[..n].starts_with(b"GET / HTTP/1.1\r\n"), "the request as the client sent it");
                    s.send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
                    answered = true;
                }
                stack.poll(now);
                for p in stack.drain_tx().collect::<Vec<_>>() {
                    let _ = clb.handle_backend_sealed(now, p);
                }
            }
            if got.ends_with(b"ok") {
                break;
            }
        }
        assert!(answered, "the request reached a backend");
        assert!(got.starts_with(b"HTTP/1.1 200 OK") && got.ends_with(b"ok"), "{:?}", String::from_utf8_lossy(&got));
        assert_eq!(client.socket(h).send_queue(), 0, "the node's stack acknowledged all the client sent");
        assert_eq!(clb.syn_cookies_sent(), 1);
    }

    const VIP: &str = "198.18.0.20";
    const B1: &str = "198.19.20.1:7000";
    const B2: &str = "198.19.20.2:7000";

    fn config(scheduler: SchedulerKind, persistence_ns: Option<u64>) -> ClbConfig {
        let backends = [B1, B2].iter().map(|a| BackendConfig::direct(a.parse().unwrap(), 10)).collect();
        ClbConfig {
            address: "198.18.32.1".parse().unwrap(),
            address_v6: None,
            region: 0,
            node_index: 0,
            node_count: 1,
            snat: vec!["198.18.32.1".parse().unwrap()],
            security_groups: vec![],
            listeners: vec![ListenerConfig {
                vip: VIP.parse().unwrap(),
                transport: Transport::Udp,
                port: 7000,
                scheduler,
                backends,
                persistence_ns,
                layer7: false,
                http: false,
                tls: None,
                quic: None,
            }],
            health: HealthConfig::tcp(1_000_000_000, 500_000_000, 2, 2),
            conn_table_capacity: 1000,
            source_prefix_v4: crate::cidr::SOURCE_PREFIX_V4,
            pop_fallback: vec![vec![1, 2], vec![0, 2], vec![1, 0]],
            auth: auth(0),
            backend_hosts: backend_hosts(),
        }
    }

    fn client(port: u16) -> Vec<u8> {
        inner::build_udp(("198.18.64.7".parse().unwrap(), port), (VIP.parse().unwrap(), 7000), b"ping").unwrap()
    }

    /// Sends a client packet in through `pop` and returns the backend it reached.
    fn send(clb: &mut Clb, pop: u16, port: u16) -> SocketAddr {
        let bytes = from_pop(pop, clb.node_index, &client(port));
        clb.handle_from_pop(0, &bytes).unwrap();
        loop {
            match clb.next_out() {
                Some(Sent::Backend { backend, bytes }) if backend.port() == 7000 => {
                    let seen = inner::parse(&bytes).unwrap().key;
                    assert_eq!(seen.src, "198.18.64.7".parse::<IpAddr>().unwrap(), "the client's own address");
                    assert_eq!((seen.dst, seen.dst_port), (backend.ip(), backend.port()));
                    return backend;
                }
                Some(_) => continue,
                None => panic!("nothing forwarded"),
            }
        }
    }

    /// The backend answers; returns the POP the reply leaves through and the reply.
    fn reply(clb: &mut Clb, backend: SocketAddr, port: u16) -> (u16, Vec<u8>) {
        let packet =
            inner::build_udp((backend.ip(), backend.port()), ("198.18.64.7".parse().unwrap(), port), b"pong").unwrap();
        clb.handle_backend_sealed(0, packet).unwrap();
        match clb.next_out() {
            Some(Sent::Pop { pop_id, bytes }) => {
                let bytes = at_pop(pop_id, &bytes);
                let (repr, inner_bytes) = ccn::decapsulate(&bytes).unwrap();
                assert_eq!(repr.pop_id, pop_id);
                (pop_id, inner_bytes.to_vec())
            }
            other => panic!("expected a reply toward a POP, got {other:?}"),
        }
    }

    fn fail_health(clb: &mut Clb, backend: SocketAddr) {
        // Run the clock with probes to `backend` unanswered and the others answered.
        while clb.backend_healthy(backend) == Some(true) {
            let now = clb.poll_timeout().unwrap();
            clb.handle_timeout(now);
            while let Some(out) = clb.next_out() {
                if let Sent::Backend { backend: to, bytes } = out
                    && to != backend
                    && let Some(answer) = syn_ack(&bytes)
                {
                    clb.handle_backend_sealed(now, answer).unwrap();
                }
            }
            assert!(now < 60_000_000_000, "never marked unhealthy");
        }
    }

    fn syn_ack(probe: &[u8]) -> Option<Vec<u8>> {
        let info = inner::parse(probe).ok()?;
        let tcp = smoltcp::wire::TcpPacket::new_checked(&probe[20..]).ok()?;
        let repr = inner::bare_tcp(
            info.key.dst_port,
            info.key.src_port,
            TcpControl::Syn,
            7,
            Some((tcp.seq_number() + 1).0 as u32),
            None,
        );
        inner::build_tcp(info.key.dst, info.key.src, &repr)
    }

    #[test]
    fn replies_leave_as_the_vip_through_the_latest_ingress_pop() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let backend = send(&mut clb, 0, 4000);
        let (pop, packet) = reply(&mut clb, backend, 4000);
        assert_eq!(pop, 0);
        let key = inner::parse(&packet).unwrap().key;
        assert_eq!((key.src, key.src_port), (VIP.parse().unwrap(), 7000), "the reply comes from the VIP");
        // The client's anycast route moved to POP 2: replies follow it.
        assert_eq!(send(&mut clb, 2, 4000), backend, "same flow, same backend");
        assert_eq!(reply(&mut clb, backend, 4000).0, 2);
    }

    #[test]
    fn replies_avoid_a_pop_known_to_be_down() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let backend = send(&mut clb, 0, 4000);
        clb.set_pop_up(0, false);
        clb.set_pop_up(1, false);
        assert_eq!(reply(&mut clb, backend, 4000).0, 2, "the nearest live neighbour of POP 0");
        clb.set_pop_up(0, true);
        assert_eq!(reply(&mut clb, backend, 4000).0, 0);
    }

    #[test]
    fn weight_zero_drains_existing_flows() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let first = send(&mut clb, 0, 4000);
        clb.set_weight(first, 0);
        for _ in 0..5 {
            assert_eq!(send(&mut clb, 0, 4000), first, "an existing flow keeps its backend");
        }
        for port in 5000..5020 {
            assert_ne!(send(&mut clb, 0, port), first, "no new flow goes to a weight-0 backend");
        }
    }

    #[test]
    fn flows_on_an_unhealthy_backend_move_to_a_healthy_one() {
        for scheduler in [SchedulerKind::Wrr, SchedulerKind::Maglev { table_size: 251 }] {
            let mut clb = Clb::new(config(scheduler, None), 0);
            let ports: Vec<u16> = (4000..4040).collect();
            let before: Vec<SocketAddr> = ports.iter().map(|&p| send(&mut clb, 0, p)).collect();
            let victim: SocketAddr = B1.parse().unwrap();
            assert!(before.contains(&victim));
            fail_health(&mut clb, victim);
            let mut moved = 0;
            while let Some(ev) = clb.poll_event() {
                if let Event::FlowMoved { .. } = ev {
                    moved += 1;
                }
            }
            assert_eq!(moved, 0, "flows move when their next packet arrives, not before");
            for (&p, &b) in ports.iter().zip(&before) {
                let now = send(&mut clb, 0, p);
                assert_ne!(now, victim, "{scheduler:?}");
                if b != victim {
                    assert_eq!(now, b, "flows on healthy backends stay put ({scheduler:?})");
                }
            }
        }
    }

    #[test]
    fn persistence_keeps_a_client_ip_on_one_backend() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, Some(300_000_000_000)), 0);
        let first = send(&mut clb, 0, 4000);
        for port in 4001..4010 {
            assert_eq!(send(&mut clb, 0, port), first, "new flows from the same client IP");
        }
        let mut plain = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let spread: std::collections::BTreeSet<SocketAddr> = (4000..4010).map(|p| send(&mut plain, 0, p)).collect();
        assert_eq!(spread.len(), 2, "without persistence WRR spreads the same client");
    }

    #[test]
    fn maglev_nodes_agree_on_every_flow() {
        let mut a = Clb::new(config(SchedulerKind::Maglev { table_size: 65_537 }, None), 0);
        let mut cfg = config(SchedulerKind::Maglev { table_size: 65_537 }, None);
        cfg.node_index = 1;
        cfg.auth = auth(1);
        cfg.address = "198.18.32.2".parse().unwrap();
        let mut b = Clb::new(cfg, 0);
        for port in 4000..4200 {
            assert_eq!(send(&mut a, 0, port), send(&mut b, 1, port));
        }
    }

    #[test]
    fn packets_for_no_listener_are_dropped() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let other = inner::build_udp(("198.18.64.7".parse().unwrap(), 1), (VIP.parse().unwrap(), 9999), b"x").unwrap();
        assert_eq!(clb.handle_direct(0, other), Err(ClbDrop::NoListener));
        let stray = inner::build_udp(("198.19.20.1".parse().unwrap(), 7000), ("198.18.64.9".parse().unwrap(), 1), b"x")
            .unwrap();
        assert_eq!(clb.handle_backend_sealed(0, stray), Err(ClbDrop::NoConnection));
    }

    fn tcp_segment(port: u16, control: TcpControl) -> Vec<u8> {
        let repr = inner::bare_tcp(port, 7000, control, 1, None, None);
        inner::build_tcp("198.18.64.7".parse().unwrap(), VIP.parse().unwrap(), &repr).unwrap()
    }

    fn tcp_config(scheduler: SchedulerKind, weights: [u8; 2]) -> ClbConfig {
        let mut c = config(scheduler, None);
        c.listeners[0].transport = Transport::Tcp;
        for (b, w) in c.listeners[0].backends.iter_mut().zip(weights) {
            b.weight = w;
        }
        c
    }

    /// Opens a TCP flow from `port`; returns its backend.
    fn open(clb: &mut Clb, port: u16) -> SocketAddr {
        clb.handle_direct(0, tcp_segment(port, TcpControl::Syn)).unwrap();
        match clb.next_out() {
            Some(Sent::Backend { backend, .. }) => backend,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_half_open_flows_and_others_still_get_in() {
        use crate::conn_table::HALF_OPEN_PER_SOURCE_MAX;
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        c.conn_table_capacity = 100_000;
        let mut clb = Clb::new(c, 0);
        // SYNs from every port of one address (a source under the default /32).
        let syn_from = |clb: &mut Clb, src: IpAddr, port: u16| {
            let repr = inner::bare_tcp(port, 7000, TcpControl::Syn, 1, None, None);
            let result = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
            while clb.next_out().is_some() {}
            result
        };
        let mut refused = 0;
        for i in 0..3_000u16 {
            refused +=
                usize::from(syn_from(&mut clb, "203.0.113.5".parse().unwrap(), 1024 + i) == Err(ClbDrop::SourceCap));
        }
        assert_eq!(clb.conn_table().len(), HALF_OPEN_PER_SOURCE_MAX, "the source's share, no more");
        assert_eq!(refused, 3_000 - HALF_OPEN_PER_SOURCE_MAX);
        // Another address gets its handshake; the flooder's entries time out, freeing its share.
        assert_eq!(syn_from(&mut clb, "198.18.64.9".parse().unwrap(), 5000), Ok(()));
        let mut now = 1;
        while now < HALF_OPEN_NS + 2 * SWEEP_INTERVAL_NS {
            now = clb.poll_timeout().unwrap().max(now + 1);
            clb.handle_timeout(now);
            while clb.next_out().is_some() {}
        }
        assert_eq!(clb.conn_table().half_open_from("203.0.113.5".parse().unwrap()), 0, "its share is free again");
    }

    #[test]
    fn a_syn_flood_never_pushes_out_established_flows_and_half_open_ones_go_after_ten_seconds() {
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        c.conn_table_capacity = 200;
        let mut clb = Clb::new(c, 0);
        let client: IpAddr = "198.18.64.7".parse().unwrap();
        // Eight real clients: SYN, the backend's SYN-ACK, the client's ACK.
        let mut victims = Vec::new();
        for port in 4000..4008u16 {
            let backend = open(&mut clb, port);
            let syn_ack = inner::bare_tcp(backend.port(), port, TcpControl::Syn, 9, Some(2), None);
            clb.handle_backend_sealed(0, inner::build_tcp(backend.ip(), client, &syn_ack).unwrap()).unwrap();
            while clb.next_out().is_some() {}
            clb.handle_direct(0, tcp_segment(port, TcpControl::None)).unwrap();
            while clb.next_out().is_some() {}
            victims.push((port, backend));
        }
        // 45,000 spoofed SYNs through a 200-entry table.
        for i in 0..45_000u32 {
            let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
            let src = IpAddr::from([203, 0, (i >> 16) as u8 + 113, (i >> 8) as u8]);
            let _ = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
            while clb.next_out().is_some() {}
        }
        assert_eq!(clb.conn_table().len(), 200);
        for &(port, backend) in &victims {
            clb.handle_direct(1, tcp_segment(port, TcpControl::Psh)).unwrap();
            match clb.next_out() {
                Some(Sent::Backend { backend: to, .. }) => assert_eq!(to, backend, "flow {port} kept its backend"),
                other => panic!("flow {port} lost: {other:?}"),
            }
        }
        assert_eq!(clb.conn_table().refused(), 0, "the flood pushed out only its own entries");
        // Ten seconds on, the half-open entries are gone and the established stay.
        let mut now = 1;
        while now < HALF_OPEN_NS + 2 * SWEEP_INTERVAL_NS {
            now = clb.poll_timeout().unwrap().max(now + 1);
            clb.handle_timeout(now);
            while clb.next_out().is_some() {}
        }
        assert_eq!(clb.conn_table().len(), victims.len());
    }

    #[test]
    fn a_spoofed_syn_flood_that_takes_every_snat_port_gives_them_back_to_real_clients() {
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 0]);
        for b in &mut c.listeners[0].backends {
            b.snat = true;
        }
        c.conn_table_capacity = 100_000;
        let mut clb = Clb::new(c, 0);
        let client: IpAddr = "198.18.64.7".parse().unwrap();
        // One real flow, established (SYN, SYN-ACK, ACK).
        clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
        let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("not forwarded") };
        let snat = inner::parse(&bytes).unwrap().key;
        let syn_ack = inner::bare_tcp(backend.port(), snat.src_port, TcpControl::Syn, 9, Some(2), None);
        clb.handle_backend_sealed(0, inner::build_tcp(backend.ip(), snat.src, &syn_ack).unwrap()).unwrap();
        while clb.next_out().is_some() {}
        clb.handle_direct(0, tcp_segment(4000, TcpControl::None)).unwrap();
        while clb.next_out().is_some() {}
        // More spoofed SYNs than the node has SNAT ports.
        let ports = usize::from(SNAT_PORTS.end - SNAT_PORTS.start);
        for i in 0..ports as u32 + 1_000 {
            let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
            let src = IpAddr::from([203, 0, 113 + (i >> 16) as u8, (i >> 8) as u8]);
            let _ = clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap());
            while clb.next_out().is_some() {}
        }
        assert!(clb.snat_evictions() >= 1_000, "the pool ran out and took ports back: {}", clb.snat_evictions());
        // A new real client still gets a port; the established flow keeps its own.
        clb.handle_direct(1, tcp_segment(5000, TcpControl::Syn)).unwrap();
        let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("a new client refused") };
        assert_eq!(inner::read_toa(&bytes), Some((client, 5000)));
        clb.handle_direct(1, tcp_segment(4000, TcpControl::Psh)).unwrap();
        let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("the established flow lost") };
        assert_eq!(inner::parse(&bytes).unwrap().key.src_port, snat.src_port, "it kept its SNAT port");
    }

    #[test]
    fn each_backend_has_a_snat_pool_of_its_own_so_one_port_serves_two_backends_at_once() {
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        for b in &mut c.listeners[0].backends {
            b.snat = true;
        }
        c.conn_table_capacity = 200_000;
        let mut clb = Clb::new(c, 0);
        // One and a half times the port range, split between two backends: a single pool
        // would have to take ports back, a pool per backend never does.
        let ports = usize::from(SNAT_PORTS.end - SNAT_PORTS.start);
        let mut used: HashMap<SocketAddr, std::collections::HashSet<u16>> = HashMap::new();
        for i in 0..(ports + ports / 2) as u32 {
            let repr = inner::bare_tcp(1024 + (i % 60_000) as u16, 7000, TcpControl::Syn, 1, None, None);
            let src = IpAddr::from([203, 0, 113 + (i >> 16) as u8, (i >> 8) as u8]);
            clb.handle_direct(0, inner::build_tcp(src, VIP.parse().unwrap(), &repr).unwrap()).unwrap();
            let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("SYN {i} not forwarded") };
            let port = inner::parse(&bytes).unwrap().key.src_port;
            assert!(used.entry(backend).or_default().insert(port), "port {port} taken twice toward {backend}");
            while clb.next_out().is_some() {}
        }
        assert_eq!(clb.snat_evictions(), 0, "no flow gave its port up");
        assert_eq!(used.len(), 2);
        let [a, b] = [B1, B2].map(|x| &used[&x.parse::<SocketAddr>().unwrap()]);
        assert!(a.len() + b.len() > ports, "more flows than one pool holds: {} + {}", a.len(), b.len());
        assert!(a.intersection(b).count() > ports / 3, "the same ports serve both backends");
    }

    /// Found by the `cores` fuzz target once its node had two listeners sharing a backend
    /// (the conn table's own check, "one reply key per flow", fired): a client that sends
    /// from one port to two VIP ports whose listeners pick the same backend makes two flows
    /// whose replies look alike (backend → client address and port). The second used to
    /// overwrite the first's reply key, so the first's replies left from the wrong VIP port,
    /// and once either ended the other's replies were dropped.
    #[test]
    fn a_second_flow_whose_replies_would_look_like_the_firsts_is_refused_and_the_first_keeps_its_replies() {
        let mut c = config(SchedulerKind::Wrr, None);
        let mut other = c.listeners[0].clone();
        other.port = 7001;
        other.backends.truncate(1);
        c.listeners[0].backends.truncate(1);
        c.listeners.push(other);
        let mut clb = Clb::new(c, 0);
        let (client, vip): (IpAddr, IpAddr) = ("198.18.64.7".parse().unwrap(), VIP.parse().unwrap());
        let to = |port| inner::build_udp((client, 5000), (vip, port), b"ping").unwrap();
        clb.handle_direct(0, to(7000)).unwrap();
        let Some(Sent::Backend { backend, .. }) = clb.next_out() else { panic!("the first flow not forwarded") };
        assert_eq!(clb.handle_direct(0, to(7001)), Err(ClbDrop::ReplyTaken), "the look-alike flow is refused");
        assert!(clb.next_out().is_none());
        assert_eq!(clb.conn_table().len(), 1);
        // The first flow's replies still leave from its own VIP port.
        let answer = inner::build_udp((backend.ip(), backend.port()), (client, 5000), b"pong").unwrap();
        clb.handle_backend_sealed(0, answer).unwrap();
        let Some(Sent::Client { bytes, .. }) = clb.next_out() else { panic!("no reply") };
        assert_eq!(inner::parse(&bytes).unwrap().key.src_port, 7000);
        assert_eq!(ClbDrop::ReplyTaken.name(), "reply_taken");
    }

    #[test]
    fn wlc_balances_active_flows_per_weight() {
        let mut clb = Clb::new(tcp_config(SchedulerKind::Wlc, [10, 30]), 0);
        for port in 0..400 {
            open(&mut clb, 4000 + port);
        }
        let (b1, b2) = (B1.parse().unwrap(), B2.parse().unwrap());
        assert_eq!((clb.active_flows(b1), clb.active_flows(b2)), (100, 300), "active ∝ weight");
        // Close 100 flows of B2 with RSTs: the next new flows go to B2 until it is even.
        let mut closed = 0;
        for port in 0..400 {
            if closed < 100 && open(&mut clb, 4000 + port) == b2 {
                clb.handle_direct(0, tcp_segment(4000 + port, TcpControl::Rst)).unwrap();
                while clb.next_out().is_some() {}
                closed += 1;
            }
        }
        assert_eq!(clb.active_flows(b2), 200);
        let next: Vec<SocketAddr> = (0..100).map(|i| open(&mut clb, 6000 + i)).collect();
        assert!(next.iter().all(|b| *b == b2), "the least loaded per weight takes new flows");
    }

    #[test]
    fn source_hash_sends_a_client_ip_to_one_backend() {
        let mut clb = Clb::new(config(SchedulerKind::Hash { table_size: 251 }, None), 0);
        let first = send(&mut clb, 0, 4000);
        assert!((4001..4050).all(|p| send(&mut clb, 0, p) == first));
    }

    #[test]
    fn unbind_stops_forwarding_at_once() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let first = send(&mut clb, 0, 4000);
        clb.unbind(first);
        // Nothing from the unbound backend reaches the client any more.
        let stray = inner::build_udp((first.ip(), first.port()), ("198.18.64.7".parse().unwrap(), 4000), b"x").unwrap();
        assert_eq!(clb.handle_backend_sealed(0, stray), Err(ClbDrop::Unbound));
        // Its flow moves on the next packet, and no new flow goes there.
        assert_ne!(send(&mut clb, 0, 4000), first);
        assert!((5000..5020).all(|p| send(&mut clb, 0, p) != first));
        clb.bind(first);
        assert!((6000..6020).any(|p| send(&mut clb, 0, p) == first));
    }

    #[test]
    fn idle_udp_flows_are_forgotten() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        send(&mut clb, 0, 4000);
        assert_eq!(clb.conn_table().len(), 1);
        let mut now = 0;
        while now < crate::config::UDP_IDLE_NS + 2 * crate::config::SWEEP_INTERVAL_NS {
            now = clb.poll_timeout().unwrap();
            clb.handle_timeout(now);
            while clb.next_out().is_some() {}
        }
        assert_eq!(clb.conn_table().len(), 0);
        assert_eq!(clb.active_flows(B1.parse().unwrap()) + clb.active_flows(B2.parse().unwrap()), 0);
    }

    #[test]
    fn nat64_takes_ipv6_clients_to_ipv4_backends_and_back() {
        let mut c = config(SchedulerKind::Wrr, None);
        c.listeners[0].vip = "fd00:a::20".parse().unwrap();
        let mut clb = Clb::new(c, 0);
        let client: (IpAddr, u16) = ("fd00:66::7".parse().unwrap(), 4000);
        let request = inner::build_udp(client, ("fd00:a::20".parse().unwrap(), 7000), b"ping").unwrap();
        clb.handle_direct(0, request).unwrap();
        let Some(Sent::Backend { backend, bytes }) = clb.next_out() else { panic!("not forwarded") };
        let seen = inner::parse(&bytes).unwrap().key;
        assert_eq!(seen.src, "198.18.32.1".parse::<IpAddr>().unwrap(), "the backend sees the SNAT address");
        assert_eq!((seen.dst, seen.dst_port), (backend.ip(), backend.port()));
        let answer = inner::build_udp((backend.ip(), backend.port()), (seen.src, seen.src_port), b"pong").unwrap();
        clb.handle_backend_sealed(0, answer).unwrap();
        let Some(Sent::Client { bytes }) = clb.next_out() else { panic!("no reply") };
        let back = inner::parse(&bytes).unwrap().key;
        assert_eq!((back.src, back.src_port), ("fd00:a::20".parse().unwrap(), 7000));
        assert_eq!((back.dst, back.dst_port), client);
    }

    #[test]
    fn an_ipv6_client_a_backends_group_denies_is_refused_before_nat64_hides_its_address() {
        use crate::security::{Action, Ports, Rule, SecurityGroup};
        let rule = |source: &str, action| Rule {
            source: crate::cidr::Cidr::parse(source).unwrap(),
            ports: Ports::Range(7000, 7000),
            action,
        };
        let mut c = config(SchedulerKind::Wrr, None);
        c.listeners[0].vip = "fd00:a::20".parse().unwrap();
        // Every backend denies fd00:66::/64 and takes the rest of IPv6.
        let group = SecurityGroup {
            name: "no-66".into(),
            rules: vec![rule("fd00:66::/64", Action::Drop), rule("::/0", Action::Allow)],
        };
        for b in &mut c.listeners[0].backends {
            b.security_groups = vec![group.clone()];
        }
        let mut clb = Clb::new(c, 0);
        let vip: IpAddr = "fd00:a::20".parse().unwrap();
        let denied = inner::build_udp(("fd00:66::7".parse().unwrap(), 4000), (vip, 7000), b"ping").unwrap();
        assert_eq!(clb.handle_direct(0, denied).map_err(|e| e.name()), Err("denied"));
        assert!(clb.next_out().is_none(), "nothing reaches a backend");
        let allowed = inner::build_udp(("fd00:67::7".parse().unwrap(), 4000), (vip, 7000), b"ping").unwrap();
        clb.handle_direct(0, allowed).unwrap();
        assert!(matches!(clb.next_out(), Some(Sent::Backend { .. })), "another /64 is let through");
    }

    #[test]
    fn snat_backends_get_the_client_in_a_toa_option() {
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        for b in &mut c.listeners[0].backends {
            b.snat = true;
        }
        let mut clb = Clb::new(c, 0);
        clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
        let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
        assert_eq!(inner::parse(&bytes).unwrap().key.src, "198.18.32.1".parse::<IpAddr>().unwrap());
        assert_eq!(inner::read_toa(&bytes), Some(("198.18.64.7".parse().unwrap(), 4000)));
    }

    /// A SYN with `option` appended as often as the 40 bytes of TCP options allow.
    fn packed(mut syn: Vec<u8>, option: &[u8]) -> Vec<u8> {
        while let Ok(more) = inner::insert_tcp_option(&syn, option) {
            syn = more;
        }
        syn
    }

    #[test]
    fn a_clients_own_toa_never_reaches_a_backend_and_the_nodes_always_fits_or_the_flow_is_refused() {
        let client: IpAddr = "198.18.64.7".parse().unwrap();
        let forged = inner::toa_option(("6.6.6.6".parse().unwrap(), 4242));
        let syn = inner::insert_tcp_option(&tcp_segment(4000, TcpControl::Syn), &forged).unwrap();
        // The client's claim, then NOPs up to the options' 40 bytes: no room left as sent.
        let padded = packed(syn.clone(), &[1]);
        assert!(inner::insert_tcp_option(&padded, &inner::toa_option((client, 4000))).is_err());
        for (snat, behind_nat) in [(false, false), (true, false), (false, true)] {
            for (packet, what) in [(&syn, "a forged TOA"), (&padded, "a forged TOA and padding")] {
                let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
                for b in &mut c.listeners[0].backends {
                    (b.snat, b.behind_nat) = (snat, behind_nat);
                }
                let mut clb = Clb::new(c, 0);
                clb.handle_direct(0, packet.clone()).unwrap();
                let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
                // With SNAT or a NAT gateway the node names the client; with the client's
                // own address as source, nothing does. Never 6.6.6.6.
                let want = (snat || behind_nat).then_some((client, 4000));
                assert_eq!(inner::read_toa(&bytes), want, "{what}, snat {snat}, behind NAT {behind_nat}");
                assert_eq!(inner::parse(&bytes).unwrap().tcp.map(|f| f.syn), Some(true));
            }
        }
        // Options of the client's own filling every byte: the SNAT flow is refused, counted,
        // and leaves no entry behind.
        let stuffed = packed(tcp_segment(4000, TcpControl::Syn), &[30, 2]);
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        for b in &mut c.listeners[0].backends {
            b.snat = true;
        }
        let mut clb = Clb::new(c, 0);
        assert_eq!(clb.handle_direct(0, stuffed).map_err(|e| e.name()), Err("toa_no_room"));
        assert!(clb.next_out().is_none());
        assert_eq!(clb.conn_table().len(), 0);
    }

    #[test]
    fn backends_behind_a_nat_gateway_get_the_client_in_a_toa_option_and_the_client_as_source() {
        let mut c = tcp_config(SchedulerKind::Wrr, [10, 10]);
        for b in &mut c.listeners[0].backends {
            b.behind_nat = true;
        }
        let mut clb = Clb::new(c, 0);
        clb.handle_direct(0, tcp_segment(4000, TcpControl::Syn)).unwrap();
        let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
        // The gateway translates the source; the node leaves it alone and names the client.
        assert_eq!(inner::parse(&bytes).unwrap().key.src, "198.18.64.7".parse::<IpAddr>().unwrap());
        assert_eq!(inner::read_toa(&bytes), Some(("198.18.64.7".parse().unwrap(), 4000)));
        // Only the SYN carries it.
        clb.handle_direct(0, tcp_segment(4000, TcpControl::None)).unwrap();
        let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!("not forwarded") };
        assert_eq!(inner::read_toa(&bytes), None);
    }

    #[test]
    fn snat_ports_are_unique_and_split_between_nodes() {
        let mut ports = std::collections::BTreeSet::new();
        for node in 0..2u16 {
            let mut c = config(SchedulerKind::Wrr, None);
            c.node_index = node;
            c.node_count = 2;
            c.auth = auth(node);
            for b in &mut c.listeners[0].backends {
                b.snat = true;
            }
            let mut clb = Clb::new(c, 0);
            // Its first output is the table request to its peer.
            assert!(matches!(clb.next_out(), Some(Sent::Peer { .. })));
            for port in 0..300 {
                clb.handle_direct(0, client(5000 + port)).unwrap();
                let Some(Sent::Backend { bytes, .. }) = clb.next_out() else { panic!() };
                let p = inner::parse(&bytes).unwrap().key.src_port;
                assert_eq!(p % 2, node ^ (SNAT_PORTS.start % 2), "node {node} uses its own share");
                assert!(ports.insert(p), "port {p} handed out twice");
            }
        }
    }

    /// Node `index` of a two-node region.
    fn node(index: u16, scheduler: SchedulerKind, persistence_ns: Option<u64>) -> Clb {
        let mut c = config(scheduler, persistence_ns);
        c.node_index = index;
        c.node_count = 2;
        c.auth = auth(index);
        Clb::new(c, 0)
    }

    /// Runs `from`'s timers at `now` and hands every sync message it sends to `to`.
    fn pump(from: &mut Clb, to: &mut Clb, now: u64) -> usize {
        from.handle_timeout(now);
        let mut n = 0;
        while let Some(out) = from.next_out() {
            if let Sent::Peer { node, bytes } = out {
                assert_eq!(node, to.node_index);
                to.handle_from_peer(now, &bytes).unwrap();
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_peer_keeps_the_flows_another_node_scheduled_on_the_same_backend() {
        let (mut a, mut b, mut unsynced) =
            (node(0, SchedulerKind::Wrr, None), node(1, SchedulerKind::Wrr, None), node(1, SchedulerKind::Wrr, None));
        while a.next_out().is_some() {}
        // b and its twin have scheduled flows of their own, so their WRR is elsewhere.
        for port in 5000..5003 {
            send(&mut b, 0, port);
            send(&mut unsynced, 0, port);
        }
        let chosen: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut a, 0, port)).collect();
        assert_eq!(pump(&mut a, &mut b, 0), 0, "nothing is sent before the sync interval");
        assert!(pump(&mut a, &mut b, crate::sync::SYNC_INTERVAL_NS) >= 1, "one batch (or a few) after it");
        let kept: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut b, 1, port)).collect();
        assert_eq!(kept, chosen, "node 1 took over node 0's flows with their backends");
        assert_eq!(b.sync_stats().flows_adopted, 50);
        assert_eq!(b.flows_created(), 3, "adopted flows are not scheduled again");
        // Without the sync the same node would have moved some of them.
        let fresh: Vec<SocketAddr> = (1000..1050).map(|port| send(&mut unsynced, 1, port)).collect();
        assert_ne!(fresh, chosen, "the test's premise: WRR on another node picks differently");
        let stats = a.sync_stats();
        assert_eq!(stats.entries_sent, 50);
        assert!(stats.bytes_sent < 50 * 40 && stats.messages_sent <= 3, "batched: {stats:?}");
    }

    #[test]
    fn a_restarted_node_learns_flows_and_persistence_from_a_peer() {
        let mut a = node(0, SchedulerKind::Wrr, Some(60_000_000_000));
        while a.next_out().is_some() {}
        let chosen: Vec<SocketAddr> = (1000..1004).map(|port| send(&mut a, 0, port)).collect();
        // Node 1 (re)starts: its first output asks node 0 for its table.
        let mut b = node(1, SchedulerKind::Wrr, Some(60_000_000_000));
        match b.next_out() {
            Some(Sent::Peer { node: 0, bytes }) => a.handle_from_peer(1, &bytes).unwrap(),
            other => panic!("expected a table request, got {other:?}"),
        }
        let mut dumped = 0;
        while let Some(out) = a.next_out() {
            if let Sent::Peer { node: 1, bytes } = out {
                b.handle_from_peer(1, &bytes).unwrap();
                dumped += 1;
            }
        }
        assert!(dumped >= 1);
        let kept: Vec<SocketAddr> = (1000..1004).map(|port| send(&mut b, 1, port)).collect();
        assert_eq!(kept, chosen);
        // Persistence came along: a new flow of the same client goes where its others do.
        assert!(chosen.iter().all(|&c| c == chosen[0]), "persistence kept the client on one backend");
        assert_eq!(send(&mut b, 1, 2000), chosen[0]);
    }

    #[test]
    fn sync_from_outside_the_region_or_garbage_is_refused_and_changes_nothing() {
        let mut b = node(1, SchedulerKind::Wrr, None);
        let me = NodeId::Clb { region: 0, node: 1 };
        // Sealed by node 2 (a member of the test backbone, not of this two-node region),
        // and by node 0 but naming another sender.
        for (sealer, from) in [(2, 2), (0, 2), (0, 7)] {
            let bytes = keyring(NodeId::Clb { region: 0, node: sealer })
                .seal(me, Kind::Sync, &Message::Request { from }.emit())
                .unwrap();
            assert_eq!(b.handle_from_peer(0, &bytes), Err(ClbDrop::NotPeer), "node {sealer} as {from}");
        }
        // A POP's keys, an unsealed request and garbage.
        let pop = keyring(NodeId::Pop(0)).seal(me, Kind::Sync, &Message::Request { from: 0 }.emit()).unwrap();
        assert_eq!(b.handle_from_peer(0, &pop), Err(ClbDrop::NotPeer));
        let bare = Message::Request { from: 0 }.emit();
        assert_eq!(b.handle_from_peer(0, &bare), Err(ClbDrop::Auth(AuthError::Malformed)));
        assert!(b.handle_from_peer(0, b"AS\x01\x01garbage").is_err());
        assert_eq!(b.peer_flows(), 0);
        assert!(b.next_out().is_some_and(|o| matches!(o, Sent::Peer { node: 0, .. })));
        assert!(b.next_out().is_none(), "nothing answered");
    }

    #[test]
    fn a_backend_hosts_packet_must_be_sealed_by_it_and_come_from_its_own_address() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let backend = send(&mut clb, 0, 4000);
        let other = [B1, B2].iter().map(|b| b.parse::<SocketAddr>().unwrap()).find(|b| *b != backend).unwrap();
        let answer = inner::build_udp((backend.ip(), backend.port()), ("198.18.64.7".parse().unwrap(), 4000), b"pong");
        let answer = answer.unwrap();
        let me = NodeId::Clb { region: 0, node: 0 };
        assert_eq!(clb.handle_from_backend(0, answer.clone()), Err(ClbDrop::Auth(AuthError::Malformed)), "bare");
        // The other backend's host speaking for this backend's address.
        let spoofed = keyring(host_of(other.ip())).seal(me, Kind::Backend, &answer).unwrap();
        assert_eq!(clb.handle_from_backend(0, spoofed), Err(ClbDrop::NotHost));
        let pop = keyring(NodeId::Pop(1)).seal(me, Kind::Backend, &answer).unwrap();
        assert_eq!(clb.handle_from_backend(0, pop), Err(ClbDrop::NotHost), "a POP's keys are no host's");
        assert!(clb.next_out().is_none(), "nothing reached the client");
        assert_eq!(clb.handle_backend_sealed(0, answer), Ok(()));
        assert!(matches!(clb.next_out(), Some(Sent::Pop { pop_id: 0, .. })));
    }

    #[test]
    fn a_pops_packet_must_be_sealed_for_this_node_and_name_its_sealer() {
        let mut clb = Clb::new(config(SchedulerKind::Wrr, None), 0);
        let bare = ccn::encapsulate(Direction::ToRegion, 1, 1, &client(4000)).unwrap();
        assert_eq!(clb.handle_from_pop(0, &bare), Err(ClbDrop::Auth(AuthError::Malformed)));
        // POP 1 seals a packet whose CCN header says POP 2: replies would go to POP 2.
        let claims_other = ccn::encapsulate(Direction::ToRegion, 2, 1, &client(4000)).unwrap();
        let forged = keyring(NodeId::Pop(1)).seal(NodeId::Clb { region: 0, node: 0 }, Kind::Data, &claims_other);
        assert_eq!(clb.handle_from_pop(0, &forged.unwrap()), Err(ClbDrop::PopMismatch));
        let for_node_1 = from_pop(1, 1, &client(4000));
        assert_eq!(clb.handle_from_pop(0, &for_node_1), Err(ClbDrop::Auth(AuthError::Misdirected)));
        let good = from_pop(1, 0, &client(4000));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        assert_eq!(clb.handle_from_pop(0, &flipped), Err(ClbDrop::Auth(AuthError::BadTag)));
        assert_eq!(clb.handle_from_pop(0, &good), Ok(()));
        assert_eq!(clb.handle_from_pop(0, &good), Err(ClbDrop::Auth(AuthError::Replayed)));
        assert_eq!(clb.flows_created(), 1, "only the authentic packet was scheduled");
    }

    #[test]
    fn the_sync_queue_is_bounded_and_counts_what_it_drops() {
        let mut c = config(SchedulerKind::Maglev { table_size: 251 }, None);
        c.node_count = 2;
        c.conn_table_capacity = 20_000;
        let mut a = Clb::new(c, 0);
        for port in 0..10_000 {
            send(&mut a, 0, port);
        }
        let stats = a.sync_stats();
        assert_eq!(stats.queue_overflow, 10_000 - crate::sync::SYNC_QUEUE_MAX as u64);
    }
}
