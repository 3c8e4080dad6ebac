//! One CLB node: takes client packets (encapsulated by a POP, or straight from the
//! internet for the direct baseline), picks a backend, rewrites the destination while
//! keeping the client's source address, and sends replies back the way the flow came.
//!
//! The node is a handful of sub-states, each in its own file with its invariants, in the
//! manner of quinn-proto's `Connection`: [`SnatPool`] (ports per backend, interleaved
//! between nodes), [`Persistence`] (bounded by construction), [`HealthPlane`] (checker
//! and prober), [`L7Front`] (SYN cookies and proxied connections), [`PopFallback`]
//! (which POP replies leave by) and [`Outbox`] (what leaves, sealed, and the keys). This
//! file holds the path of a packet: classify it, bind its flow, rewrite it toward the
//! backend; `peers.rs` the region's connection sync, `terminated.rs` the listeners the
//! node terminates (layer 7 and QUIC), `scheduling.rs` the choice of a backend.

mod admin;
mod fallback;
mod health_plane;
mod l7_front;
mod outbox;
mod peers;
mod persistence;
mod scheduling;
mod snat;
mod terminated;
#[cfg(test)]
mod tests;
mod timers;

use timers::{Timer, TimerTable};

pub use fallback::PopFallback;
pub use health_plane::HealthPlane;
pub use l7_front::L7Front;
pub use outbox::Outbox;
pub use persistence::Persistence;
pub use snat::{SNAT_PORTS, SnatPool};

use std::net::{IpAddr, SocketAddr};

use anyedge_ccn::Transmit;
use anyedge_ccn::auth::{AuthError, Keyring, NodeId};
use anyedge_proto::ccn::{self, Direction};
use anyedge_proto::inner::{self, Inner};
use anyedge_proto::seal::Kind;
use anyedge_proto::{FlowKey, Transport, offload};

use crate::config::{
    CLOSED_LINGER_NS, ClbConfig, HALF_OPEN_NS, ListenerConfig, SWEEP_INTERVAL_NS, TCP_IDLE_NS, UDP_IDLE_NS,
};
use crate::conn_table::{Conn, ConnTable, Ingress};
use crate::health::Health;
use crate::quic_listener::QuicListener;
use crate::sync::ConnSync;
use crate::tables::{BackendTable, ListenerState, ListenerTable, PortId};

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

/// Who this node is: its addresses, its place in the region, and the secrets its
/// unguessable values (QUIC connection IDs) derive from.
#[derive(Debug)]
struct NodeSelf {
    address: IpAddr,
    /// Addresses this node's own TCP answers on: its own and its SNAT addresses.
    own_addresses: Vec<IpAddr>,
    region: u16,
    index: u16,
    /// Nodes in the region (at least one).
    count: u16,
    secret: anyedge_ccn::Prf,
    /// The region's cipher for the node byte of QUIC connection IDs (none: in the clear).
    cid_cipher: Option<anyedge_ccn::CidCipher>,
    /// The real time `now_ns` counts from, for QUIC's wall clock (a lab node's start;
    /// `None` in the simulator: [`crate::quic::SIM_EPOCH_S`]).
    wall_epoch_s: Option<u64>,
}

impl NodeSelf {
    fn new(config: &ClbConfig) -> NodeSelf {
        let mut own: Vec<IpAddr> = std::iter::once(config.address).chain(config.address_v6).collect();
        own.extend(config.snat.iter().filter(|a| !own.contains(a)).copied().collect::<Vec<_>>());
        let count = config.node_count.max(1);
        assert!(config.node_index < count, "node {} of a region of {count}", config.node_index);
        NodeSelf {
            address: config.address,
            own_addresses: own,
            region: config.region,
            index: config.node_index,
            count,
            secret: anyedge_ccn::Prf::new(&config.auth.node_secret("clb")),
            cid_cipher: config.auth.cid_cipher(config.region),
            wall_epoch_s: None,
        }
    }

    fn id(&self) -> NodeId {
        NodeId::Clb { region: self.region, node: self.index }
    }

    /// A QUIC listener's endpoint (connection IDs name this node, encrypted under the
    /// region's key, the rest drawn under the node's secret for this listener; IPv4
    /// sources counted by `source_prefix_v4` bits), for QUIC listeners.
    fn quic_endpoint(&self, config: &ListenerConfig, source_prefix_v4: u8) -> Option<QuicListener> {
        let vip = SocketAddr::new(config.vip, config.port);
        let seed = u64::from(self.index as u8) << 48 ^ u64::from(config.port);
        let cid_secret = self.secret.eval(format!("quic cid {vip}").as_bytes());
        let ids = (self.index as u8, cid_secret, self.cid_cipher.clone());
        let mut listener =
            config.quic.as_ref().map(|q| QuicListener::new(q, vip, self.own_addresses.clone(), ids, seed))?;
        if let Some(epoch_s) = self.wall_epoch_s {
            listener.set_wall_epoch(epoch_s);
        }
        Some(listener.with_source_prefix_v4(source_prefix_v4))
    }
}

/// The CLB core.
#[derive(Debug)]
pub struct Clb {
    node: NodeSelf,
    /// The latest time the driver gave us.
    now_ns: u64,
    listeners: ListenerTable,
    /// Distinct backend ports across listeners: health is per port (`PortId` indexes both).
    backends: BackendTable,
    health: HealthPlane,
    conns: ConnTable,
    persistence: Persistence,
    sync: ConnSync,
    outbox: Outbox,
    fallback: PopFallback,
    snat: SnatPool,
    groups: crate::security::ClbGroups,
    l7: L7Front,
    /// When each of its timers is due.
    timers: TimerTable,
    /// Flows this node has scheduled (a flow that moves backend counts once).
    flows_created: u64,
}

/// What a client packet is, by the listener it reached.
enum Classified {
    /// A layer-7 listener's: the node's own TCP takes it.
    Layer7(usize),
    /// A QUIC listener's: the node terminates QUIC.
    Quic(usize),
    /// A layer-4 listener's: its flow is bound to a backend and the packet rewritten.
    Layer4(usize),
}

impl Clb {
    pub fn new(config: ClbConfig, now_ns: u64) -> Clb {
        let node = NodeSelf::new(&config);
        let l7 = L7Front::new(config.source_prefix_v4, &config.auth.node_secret("clb syn cookies"));
        let mut backends = BackendTable::default();
        let mut health = Vec::new();
        let mut listeners = ListenerTable::default();
        for lc in config.listeners {
            let (listener, added) = ListenerState::new(lc, &mut backends, &config.health);
            let listener = listener.with_quic(|c| node.quic_endpoint(c, l7.proxy().source_prefix_v4()));
            health.extend(added);
            listeners.push(listener);
        }
        let addresses = (config.address, config.address_v6);
        let keys = config.auth.keyring(node.id(), now_ns);
        let mut clb = Clb {
            now_ns,
            listeners,
            backends,
            health: HealthPlane::new(health, addresses, u64::from(config.node_index) + 1, now_ns),
            conns: ConnTable::new(config.conn_table_capacity).with_source_prefix_v4(config.source_prefix_v4),
            persistence: Persistence::new(config.conn_table_capacity),
            sync: ConnSync::new(config.node_index, node.count, config.conn_table_capacity),
            outbox: Outbox::new(keys, config.backend_hosts),
            fallback: PopFallback::new(config.pop_fallback),
            snat: SnatPool::new(config.snat, config.node_index, node.count),
            groups: crate::security::ClbGroups {
                own: (!config.security_groups.is_empty())
                    .then(|| crate::security::Firewall::new(config.security_groups)),
                for_backends: Default::default(),
            },
            l7,
            timers: {
                let mut timers = TimerTable::default();
                timers.set(Timer::Sweep, Some(now_ns + SWEEP_INTERVAL_NS));
                timers
            },
            flows_created: 0,
            node,
        };
        clb.rebuild_tables();
        // A node that starts (or restarts) learns its peers' tables.
        if clb.sync.enabled() {
            clb.outbox.send_to_peers(clb.node.region, clb.sync.requests());
        }
        clb
    }

    pub fn address(&self) -> IpAddr {
        self.node.address
    }

    pub fn conn_table(&self) -> &ConnTable {
        &self.conns
    }

    /// The security groups bound to this node, with their counters.
    pub fn firewall(&self) -> Option<&crate::security::Firewall> {
        self.groups.own.as_ref()
    }

    /// The backends' security groups as this node applied them for them (layer 7, QUIC,
    /// translated flows), with their counters.
    pub fn backend_guard(&self) -> &crate::security::BackendGuard {
        &self.groups.for_backends
    }

    /// Whether `binding`'s backend would let the client flow `key` in by its own security
    /// groups (judged here: the backend will see this node's address, not the client's).
    fn backend_admits(&mut self, li: usize, binding: usize, key: &FlowKey) -> bool {
        let backend = self.backend_addr(li, binding);
        let groups = &self.listeners[li].bindings()[binding].backend.security_groups;
        let as_backend_judges = FlowKey { dst: backend.ip(), dst_port: backend.port(), ..*key };
        self.groups.for_backends.judge(groups, &as_backend_judges) == crate::security::Verdict::Pass
    }

    /// Flows this node has scheduled (a flow that moves backend counts once).
    pub fn flows_created(&self) -> u64 {
        self.flows_created
    }

    pub fn backend_healthy(&self, backend: SocketAddr) -> Option<bool> {
        let p = self.backends.find(backend)?;
        Some(self.health.is_healthy(p))
    }

    /// Active (open) flows on a backend across listeners, as WLC counts them.
    pub fn active_flows(&self, backend: SocketAddr) -> u32 {
        self.listeners
            .iter()
            .flat_map(|l| l.bindings())
            .filter(|b| self.backends[b.port].addr == backend)
            .map(|b| b.active())
            .sum()
    }

    /// The next packet to send: a reply encapsulated for a POP or a sync batch for
    /// another CLB node of the region (`Dest::Node`), a packet for a backend
    /// (`Dest::Backend`), or a reply straight to a client that came straight in
    /// (`Dest::Client`). What goes over the backbone or to a backend host is sealed for it.
    pub fn poll_output(&mut self) -> Option<Transmit> {
        self.outbox.poll_output()
    }

    /// This node's backbone keys: drivers seal and open its probes with them.
    pub fn keyring(&mut self) -> &mut Keyring {
        self.outbox.keyring()
    }

    /// Packets this node could not send for want of a key.
    pub fn unsealable(&self) -> u64 {
        self.outbox.unsealable()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.outbox.poll_event()
    }

    pub fn poll_timeout(&mut self) -> Option<u64> {
        let now = self.now_ns;
        self.timers.set(Timer::Health, self.health.poll_timeout(now));
        self.timers.set(Timer::Proxy, self.l7.proxy().next_timer());
        self.timers.set(Timer::Quic, self.listeners.quics_mut().filter_map(|q| q.poll_timeout(now)).min());
        self.timers.set(Timer::Sync, self.sync.poll_timeout());
        debug_assert!(self.timers.get(Timer::Sweep).is_some(), "the sweep is always set");
        self.timers.next()
    }

    /// The POPs this node sent replies through since the last call: its driver's prober
    /// probes them (and the POPs it takes to be down), no others.
    pub fn take_demand(&mut self) -> Vec<u16> {
        self.outbox.take_demand()
    }

    /// Whether the layer-7 proxy's new connections send TCP super-packets toward their
    /// clients ([`crate::l7::L7::set_super_packets`]; the lab's nodes do).
    pub fn set_l7_super_packets(&mut self, on: bool) {
        self.l7.proxy_mut().set_super_packets(on);
    }

    /// The real time (seconds since the Unix epoch) this node's `now_ns` counts from:
    /// QUIC's Retry tokens carry and judge their age on it (a lab node calls it at start;
    /// the simulator does not, so its runs never read the machine's clock).
    pub fn set_quic_wall_epoch(&mut self, epoch_s: u64) {
        self.node.wall_epoch_s = Some(epoch_s);
        for q in self.listeners.quics_mut() {
            q.set_wall_epoch(epoch_s);
        }
    }

    /// Backbone health probing says whether a POP is reachable.
    pub fn set_pop_up(&mut self, pop_id: u16, up: bool) {
        self.fallback.set_up(pop_id, up);
    }

    /// Queues a reply to a client, back the way it came: through the POP it entered by (or
    /// a live neighbour of it), or straight out when it came straight in.
    fn reply_to_client(
        &mut self,
        ingress: Ingress,
        flow_hash: u32,
        packet: Vec<u8>,
        segment: u16,
    ) -> anyedge_proto::Result<()> {
        let via = match ingress {
            Ingress::Pop(p) => Ingress::Pop(self.fallback.reply_pop(p)),
            Ingress::Direct => Ingress::Direct,
        };
        self.outbox.send_to_client(via, flow_hash, packet, segment)
    }

    /// A sealed, encapsulated client packet from a POP. The POP id in the CCN header must
    /// be the sealing POP's own: replies follow it.
    pub fn handle_from_pop(&mut self, now_ns: u64, bytes: &[u8]) -> Result<(), ClbDrop> {
        let (from, bytes) = self.outbox.open(Kind::Data, bytes).map_err(ClbDrop::Auth)?;
        let (repr, packet) = ccn::decapsulate(bytes)?;
        if repr.direction != Direction::ToRegion {
            return Err(ClbDrop::WrongDirection);
        }
        if from != NodeId::Pop(repr.pop_id) {
            return Err(ClbDrop::PopMismatch);
        }
        self.forward(now_ns, packet.to_vec(), Ingress::Pop(repr.pop_id), repr.segment)
    }

    /// A client packet that reached the region straight over the internet.
    pub fn handle_direct(&mut self, now_ns: u64, packet: Vec<u8>) -> Result<(), ClbDrop> {
        self.forward(now_ns, packet, Ingress::Direct, 0)
    }

    /// A sealed packet from a backend host: a reply to a client, or the answer to a health
    /// probe. The host speaks only for its own address.
    pub fn handle_from_backend(&mut self, now_ns: u64, sealed: Vec<u8>) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let (from, bytes) = self.outbox.open(Kind::Backend, &sealed).map_err(ClbDrop::Auth)?;
        let (segment, bytes) = offload::unshim(bytes)?;
        self.opened_from_backend(now_ns, from, bytes.to_vec(), segment)
    }

    /// An opened packet from backend host `from`; a super-packet of `segment` bytes per
    /// segment passes whole only as a layer-4 flow's reply: anything else (a health
    /// check's answer, a terminated connection's segments) is cut into segments first.
    fn opened_from_backend(&mut self, now_ns: u64, from: NodeId, packet: Vec<u8>, segment: u16) -> Result<(), ClbDrop> {
        let info = inner::parse(&packet)?;
        if self.outbox.host_id(info.key.src) != Some(from) {
            return Err(ClbDrop::NotHost);
        }
        if segment > 0 {
            let at = SocketAddr::new(info.key.src, info.key.src_port);
            let terminated = self.l7.proxy().by_backend(at, (info.key.dst, info.key.dst_port)).is_some();
            let layer4 = self.conns.reply_owner(&info.key).is_some();
            if terminated || !layer4 || self.health.is_probe_traffic(&info) {
                let parts = offload::cut(&packet, usize::from(segment))?;
                return parts
                    .into_iter()
                    .map(|part| self.opened_from_backend(now_ns, from, part, 0))
                    .fold(Ok(()), Result::and);
            }
        }
        if self.health.is_probe_traffic(&info) {
            self.probe_packet(now_ns, &info, &packet);
            return Ok(());
        }
        let from = SocketAddr::new(info.key.src, info.key.src_port);
        let local = (info.key.dst, info.key.dst_port);
        let key = info.key;
        let Some(packet) = self.terminated_from_backend(now_ns, from, local, packet) else { return Ok(()) };
        self.reply_from_backend(now_ns, key, info.tcp, packet, segment)
    }

    /// A backend's reply on a layer-4 flow: back to the client as the VIP.
    fn reply_from_backend(
        &mut self,
        now_ns: u64,
        key: FlowKey,
        tcp: Option<inner::TcpFlags>,
        mut packet: Vec<u8>,
        segment: u16,
    ) -> Result<(), ClbDrop> {
        let (fkey, conn) = self.conns.lookup_reply(&key).ok_or(ClbDrop::NoConnection)?;
        conn.last_seen_ns = now_ns;
        conn.answered = true;
        let conn = *conn;
        let port = self.listeners[conn.listener].bindings()[conn.backend].port;
        if self.backends[port].unbound {
            return Err(ClbDrop::Unbound);
        }
        if let Some(flags) = tcp {
            self.track_close(&fkey, flags.fin, flags.rst, false);
        }
        let vip = (fkey.dst, fkey.dst_port);
        if conn.snat.is_some() {
            inner::readdress(&mut packet, vip, (fkey.src, fkey.src_port))?;
        } else {
            inner::rewrite(&mut packet, Some(vip), None)?;
        }
        self.reply_to_client(conn.ingress, conn.flow_hash, packet, segment)?;
        Ok(())
    }

    /// Runs health checking and forgets idle flows; call at `poll_timeout()`.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        let mut sends = Vec::new();
        let changes = self.health.on_timeout(now_ns, &self.backends, &mut sends);
        self.apply_health_changes(changes);
        for (backend, bytes) in sends {
            self.outbox.send_to_backend(backend, bytes);
        }
        self.terminated_timeout(now_ns);
        let batches = self.sync.flush(now_ns);
        self.outbox.send_to_peers(self.node.region, batches);
        if self.timers.is_due(Timer::Sweep, now_ns) {
            self.timers.set(Timer::Sweep, Some(now_ns + SWEEP_INTERVAL_NS));
            self.sync.expire(now_ns);
            self.count_terminated_memory();
            let expired = self.conns.expire(now_ns, |c, established| match c.reply_key.transport {
                _ if c.closing => CLOSED_LINGER_NS,
                Transport::Tcp if !established => HALF_OPEN_NS,
                transport => idle_ns(transport),
            });
            for conn in expired {
                self.release(&conn);
            }
            debug_assert!(self.conns.len() <= self.conns.capacity(), "the table stays within its bound");
        }
        debug_assert!(!self.timers.is_due(Timer::Sweep, now_ns), "the next sweep is in the future");
    }

    /// A client packet: classified by the listener it reached, then handed to that
    /// listener's path.
    fn forward(&mut self, now_ns: u64, packet: Vec<u8>, ingress: Ingress, segment: u16) -> Result<(), ClbDrop> {
        self.now_ns = self.now_ns.max(now_ns);
        let info = inner::parse(&packet)?;
        let denied_before = self.groups.for_backends.denied();
        // A terminated connection whose backend's groups deny its client is refused by
        // the packet that asked for the backend: that packet counts as denied.
        let denied = |clb: &Clb| clb.groups.for_backends.denied() > denied_before;
        let classified = self.classify(&info.key)?;
        // Only a layer-4 flow passes a super-packet on whole: a terminated connection's
        // stack takes the segments the client's kernel would have sent.
        if segment > 0 && !matches!(classified, Classified::Layer4(_)) {
            let parts = offload::cut(&packet, usize::from(segment))?;
            return parts.into_iter().map(|part| self.forward(now_ns, part, ingress, 0)).fold(Ok(()), Result::and);
        }
        match classified {
            Classified::Layer7(li) => {
                self.forward_l7(now_ns, info.key, info.tcp, packet, ingress, li)?;
                if denied(self) { Err(ClbDrop::Denied) } else { Ok(()) }
            }
            Classified::Quic(li) => {
                self.forward_quic(now_ns, &info.key, &packet, ingress, li);
                if denied(self) { Err(ClbDrop::Denied) } else { Ok(()) }
            }
            Classified::Layer4(li) => {
                let binding = self.bind_flow(now_ns, &info, ingress, li)?;
                if let Some(flags) = info.tcp {
                    self.track_close(&info.key, flags.fin, flags.rst, true);
                }
                self.rewrite_toward_backend(&info, packet, (li, binding), segment)
            }
        }
    }

    /// The security groups' verdict, then the listener the packet reached and its kind.
    fn classify(&mut self, key: &FlowKey) -> Result<Classified, ClbDrop> {
        if let Some(fw) = self.groups.own.as_mut()
            && fw.inbound(key) == crate::security::Verdict::Drop
        {
            return Err(ClbDrop::Denied);
        }
        let li = self.listeners.find(key).ok_or(ClbDrop::NoListener)?;
        let l = &self.listeners[li];
        debug_assert!(!l.is_removed() && l.serves(key.dst, key.transport, key.dst_port));
        Ok(if l.config().layer7 {
            Classified::Layer7(li)
        } else if l.quic().is_some() {
            Classified::Quic(li)
        } else {
            Classified::Layer4(li)
        })
    }

    /// The binding a layer-4 packet's flow goes to: the flow's own while its backend
    /// serves, else the one a peer scheduled it on, else a new pick. A new or moved flow
    /// gets its table entry (and SNAT port) here.
    fn bind_flow(&mut self, now_ns: u64, info: &Inner, ingress: Ingress, li: usize) -> Result<usize, ClbDrop> {
        let key = info.key;
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
        match existing {
            Some(conn) if conn.listener == li && self.serves_existing(li, conn.backend) => {
                // Renewed at the peers well before their copy would expire.
                if now_ns.saturating_sub(conn.synced_ns) >= idle_ns(key.transport) / 4 {
                    self.sync_flow(now_ns, key);
                }
                Ok(conn.backend)
            }
            Some(conn) => {
                let binding = self.pick(li, &key, now_ns).ok_or(ClbDrop::NoBackend)?;
                let from = self.backend_addr(conn.listener, conn.backend);
                let to = self.backend_addr(li, binding);
                self.outbox.event(Event::FlowMoved { from, to });
                self.insert_conn(key, li, binding, ingress, now_ns)?;
                Ok(binding)
            }
            None => self.bind_new_flow(now_ns, key, ingress, li),
        }
    }

    /// A flow this node does not hold: one another node of the region scheduled keeps
    /// its backend here; any other is scheduled.
    fn bind_new_flow(&mut self, now_ns: u64, key: FlowKey, ingress: Ingress, li: usize) -> Result<usize, ClbDrop> {
        let adopted = self
            .sync
            .peer_flow(&key, now_ns)
            .and_then(|backend| self.binding_of(li, backend))
            .filter(|&b| self.serves_existing(li, b));
        if let Some(binding) = adopted {
            self.sync.forget_flow(&key);
            self.sync.stats.flows_adopted += 1;
            self.insert_conn(key, li, binding, ingress, now_ns)?;
            return Ok(binding);
        }
        let binding = self.pick(li, &key, now_ns).ok_or(ClbDrop::NoBackend)?;
        self.insert_conn(key, li, binding, ingress, now_ns)?;
        self.flows_created += 1;
        Ok(binding)
    }

    /// Rewrites a layer-4 packet toward its backend (through SNAT when its flow took a
    /// port) and names the client to the backend on a SYN when the backend cannot see it.
    fn rewrite_toward_backend(
        &mut self,
        info: &Inner,
        mut packet: Vec<u8>,
        (li, binding): (usize, usize),
        segment: u16,
    ) -> Result<(), ClbDrop> {
        let key = info.key;
        let backend = self.backend_addr(li, binding);
        let to = (backend.ip(), backend.port());
        let snat = self.conns.get_mut(&key).and_then(|c| c.snat);
        let (src, src_port) = snat.unwrap_or((key.src, key.src_port));
        let seen = FlowKey { src, src_port, dst: to.0, dst_port: to.1, ..key };
        let syn = info.tcp.is_some_and(|f| f.syn && !f.ack);
        let named = match snat {
            Some(snat) => {
                inner::readdress(&mut packet, snat, to)?;
                // The backend only sees our address: tell it who the client is.
                syn.then(|| with_toa(packet.clone(), (key.src, key.src_port)))
            }
            None => {
                inner::rewrite(&mut packet, None, Some(to))?;
                // A NAT gateway will put its address in place of the client's; else the
                // client's own address reaches the backend, and a TOA of its own is a lie.
                match (syn, self.listeners[li].bindings()[binding].backend.behind_nat) {
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
        self.outbox.send_to_backend_as(backend, seen, packet, segment);
        Ok(())
    }

    /// Layer-7 connections this node holds now.
    pub fn proxied_connections(&self) -> usize {
        self.l7.proxy().len()
    }

    /// Buffer bytes the node's proxied connections hold (`l7::PROXIED_BYTES_MAX`).
    pub fn proxied_buffer_bytes(&self) -> usize {
        self.l7.proxy().buffer_bytes()
    }

    /// Window growth the node granted its proxied connections ([`crate::window::Pool`]).
    pub fn proxied_windows_grown(&self) -> usize {
        self.l7.proxy().windows_grown()
    }

    /// Counts what the QUIC listeners hold into the node's one budget for terminated
    /// connections ([`crate::l7::PROXIED_BYTES_MAX`], with the layer-7 proxy's): past it,
    /// new QUIC connections are refused as new layer-7 ones are. Each QUIC connection
    /// counts [`crate::quic_listener::QUIC_CONN_BYTES`] besides its own buffers. Runs
    /// after every drive of a QUIC listener, and each sweep (layer-7 buffers that emptied
    /// meanwhile let QUIC connections in again).
    fn count_terminated_memory(&mut self) {
        let quic = self.quic_held_bytes() + self.quic_counts().connections * crate::quic_listener::QUIC_CONN_BYTES;
        self.l7.proxy_mut().set_quic_bytes(quic);
        let full = self.l7.proxy().held_bytes() >= crate::l7::PROXIED_BYTES_MAX;
        for q in self.listeners.quics_mut() {
            q.set_full(full);
        }
    }

    /// Bytes the QUIC listeners' connections hold of their own
    /// ([`crate::quic_listener::QuicListener::held_bytes`], as their last drive left them).
    pub fn quic_held_bytes(&self) -> usize {
        self.listeners.iter().filter_map(|l| l.quic()).map(|q| q.held_bytes()).sum()
    }

    /// Whether a flow to this binding goes through SNAT: on-premises backends, and
    /// backends of the other IP family (NAT64).
    fn needs_snat(&self, key: &FlowKey, li: usize, binding: usize) -> bool {
        let b = &self.listeners[li].bindings()[binding].backend;
        b.snat || b.addr.is_ipv4() != key.dst.is_ipv4()
    }

    /// A free SNAT address and port in the backend's family toward this backend. With
    /// every port of the pool taken, the least recently used flow to this backend that
    /// never got established (a spoofed SYN's) gives up its port; an established flow
    /// never does.
    fn allocate_snat(&mut self, transport: Transport, backend: SocketAddr) -> Option<(IpAddr, u16)> {
        let ip = self.snat.address_for(backend)?;
        if let Some(port) = self.snat.take(ip, transport, backend) {
            return Some((ip, port));
        }
        let to_backend = |c: &Conn| SocketAddr::new(c.reply_key.src, c.reply_key.src_port) == backend;
        let victim = self.conns.oldest_open(SNAT_EVICT_SCAN, |c| {
            c.snat.is_some_and(|(a, _)| a == ip) && c.reply_key.transport == transport && to_backend(c)
        })?;
        let conn = self.conns.remove(&victim)?;
        self.release(&conn);
        let taken = conn.snat?;
        debug_assert!(!self.snat.is_taken(taken.0, taken.1, transport, backend), "the victim gave its port back");
        self.snat.hand_over(taken.0, taken.1, transport, backend);
        Some(taken)
    }

    /// SYN-ACKs this node answered layer-7 SYNs with, a cookie each (nothing kept).
    pub fn syn_cookies_sent(&self) -> u64 {
        self.l7.cookies_sent()
    }

    /// SNAT ports taken back from flows that never got established, for new ones.
    pub fn snat_evictions(&self) -> u64 {
        self.snat.evictions()
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
            self.listeners.release(l, b);
        }
    }

    /// An entry left the table: it no longer counts as active, its SNAT port is free.
    fn release(&mut self, conn: &Conn) {
        if let Some((ip, port)) = conn.snat {
            let backend = SocketAddr::new(conn.reply_key.src, conn.reply_key.src_port);
            self.snat.free(ip, port, conn.reply_key.transport, backend);
        }
        if !conn.closing {
            self.listeners.release(conn.listener, conn.backend);
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
        if translated && !self.backend_admits(listener, binding, &key) {
            // The backend would see our address, not the client's: its groups judge the
            // client here (an IPv6 client through NAT64 went past a group denying it).
            return Err(ClbDrop::Denied);
        }
        // Out of SNAT ports: the flow goes unanswered rather than unaddressed.
        let snat = if translated { self.allocate_snat(key.transport, backend) } else { None };
        let free_snat = |clb: &mut Clb| {
            if let Some((ip, port)) = snat {
                clb.snat.free(ip, port, key.transport, backend);
            }
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
            free_snat(self);
            return Err(ClbDrop::ReplyTaken);
        }
        let mut conn = Conn::new(listener, binding, ingress, key.flow_hash(), reply_key, now_ns);
        conn.snat = snat;
        let Ok(pushed_out) = self.conns.insert(key, conn) else {
            free_snat(self);
            return Err(ClbDrop::TableFull);
        };
        self.listeners.acquire(listener, binding);
        for old in pushed_out {
            self.release(&old);
        }
        self.sync_flow(now_ns, key);
        Ok(())
    }

    /// The address of a listener's binding.
    fn backend_addr(&self, li: usize, binding: usize) -> SocketAddr {
        let port = self.listeners[li].bindings()[binding].port;
        debug_assert!(port.0 < self.backends.len(), "a binding names a row of the backend table");
        self.backends[port].addr
    }

    fn apply_health_changes(&mut self, changes: Vec<(PortId, Health)>) {
        if changes.is_empty() {
            return;
        }
        for (port, state) in changes {
            let healthy = state == Health::Healthy;
            self.outbox.event(Event::HealthChanged { backend: self.backends[port].addr, healthy });
        }
        self.rebuild_tables();
    }

    /// A packet answering one of this node's health probes.
    fn probe_packet(&mut self, now_ns: u64, info: &Inner, packet: &[u8]) {
        let mut sends = Vec::new();
        let changes = self.health.on_packet(now_ns, (info, packet), &self.backends, &mut sends);
        self.apply_health_changes(changes);
        for (backend, bytes) in sends {
            self.outbox.send_to_backend(backend, bytes);
        }
    }
}
