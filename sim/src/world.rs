//! The simulated world: client hosts, POPs, CLB nodes and backends joined by links, all
//! driven by one event queue. POPs and CLB nodes are the shipped sans-IO cores; this
//! module is their driver: it moves real packets between them over modelled links.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyedge_ccn::geo::fiber_delay_ns;
use anyedge_ccn::{ComponentRng, Impairment, Link, Outcome};
use anyedge_pop::{Pop, rendezvous_node};
use anyedge_proto::{FlowKey, Transport, inner};
use anyedge_region::clb::PROBE_PORTS;
use anyedge_region::{Clb, ClbConfig};
use hdrhistogram::Histogram;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::app;
use anyedge_ccn::EventQueue;
use crate::report::*;
use anyedge_topology::{Cidr, FaultAction, ListenerProtocol, SgBinding, Site, Target, Topology, TrafficKind};
use anyedge_region::security::{Firewall, RuleCounters, Verdict};
use anyedge_region::tcp_stack::TcpStack;

/// Replies still arriving after the last request are collected for this long.
pub const DRAIN_NS: u64 = 3_000_000_000;
/// One-way delay between a CLB node and a backend in its region.
pub const INTRA_REGION_NS: u64 = 50_000;
/// Outer IPv4 + UDP header the backbone adds around the CCN header.
const OUTER_HEADER: usize = 28;
/// Requests a TCP flow queues before it counts the oldest as lost.
const TCP_PENDING_MAX: usize = 256;
/// TCP connections a backend host holds (its backlog): more new SYNs are dropped.
const BACKEND_CONNS_MAX: usize = 4096;
/// Client source ports: 10000 + slot * 1000 + connection generation.
const PORT_BASE: u16 = 10_000;
const PORTS_PER_SLOT: u16 = 1_000;
/// Most traffic slots (class × path) a client group may have.
pub const SLOTS_MAX: usize = 55;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Anycast = 0,
    Direct = 1,
}

const PATHS: [Path; 2] = [Path::Anycast, Path::Direct];

#[derive(Debug, Clone, Copy)]
enum Arrival {
    PopFromClient(usize),
    PopFromClb(usize),
    ClbFromPop(usize),
    ClbDirect(usize),
    ClbFromBackend(usize),
    Backend { host: usize, via_clb: usize },
    Client(usize),
}

enum Ev {
    UdpSend {
        client: usize,
        k: usize,
    },
    FloodSend {
        client: usize,
        k: usize,
    },
    QuicIssue {
        client: usize,
        k: usize,
    },
    ClientQuicPoll {
        client: usize,
        slot: usize,
    },
    TcpIssue {
        client: usize,
        k: usize,
    },
    ClientTcpPoll {
        client: usize,
    },
    BackendTcpPoll {
        host: usize,
        remote: (IpAddr, u16),
    },
    Arrive {
        to: Arrival,
        packet: Vec<u8>,
    },
    ClbTimer {
        clb: usize,
    },
    Fault {
        index: usize,
    },
    Withdraw {
        pop: usize,
    },
    /// Backbone probing (POPs, the region edge) learns a CLB node's state.
    ClbDetected {
        clb: usize,
        up: bool,
    },
    Reconverge,
    LinkRestore {
        pop: usize,
        region: usize,
    },
    Control(crate::control::ControlEv),
}

/// One client's traffic on one path.
#[derive(Debug, Default)]
struct Flow {
    sent: u64,
    received: u64,
    last_backend: Option<SocketAddr>,
    last_rtt_ns: Option<u64>,
    jitter_sum_ns: u128,
    jitter_n: u64,
    /// Fault trackers waiting for this flow's first reply after the fault.
    watching: Vec<(usize, usize)>,
    udp_seq: u64,
}

/// The TCP side of one flow: a connection carrying sequential requests.
#[derive(Default)]
struct TcpFlow {
    handle: Option<SocketHandle>,
    generation: u16,
    /// Issue times of requests not yet answered; the front one is on the wire.
    pending: VecDeque<u64>,
    sent_bytes: usize,
    resp_got: u64,
    head: Vec<u8>,
    /// HTTP: where the response body starts in `head`, and the response's full length.
    body_at: Option<usize>,
    expected: Option<u64>,
    /// HTTPS: the client's TLS session on the current connection.
    tls: Option<rustls::ClientConnection>,
    /// Bytes waiting for room in the socket (TLS records, or the plain request).
    wire: Vec<u8>,
}

struct Client {
    group: usize,
    addr: IpAddr,
    /// Indexed by slot = k * 2 + path.
    flows: Vec<Flow>,
    tcp: Option<TcpStack>,
    tcp_flows: Vec<TcpFlow>,
    tcp_poll_at: Option<u64>,
    /// The client's own draws (flood source ports).
    rng: ComponentRng,
    /// Per slot: the QUIC side of QUIC traffic classes.
    quic_flows: Vec<Option<QuicFlow>>,
}

/// The QUIC side of one flow: a connection carrying requests, one stream each.
struct QuicFlow {
    host: anyedge_region::quic::QuicHost,
    conn: Option<quinn_proto::ConnectionHandle>,
    connected: bool,
    /// Issue times of requests not yet answered; the front one is on a stream.
    pending: VecDeque<u64>,
    stream: Option<quinn_proto::StreamId>,
    to_send: Vec<u8>,
    got: u64,
    head: Vec<u8>,
    poll_at: Option<u64>,
}

struct Group {
    /// Per VIP: POPs in preference order (catchment or nearest by internet delay).
    order: Vec<Vec<usize>>,
    /// Per VIP: the POP routing delivers this group to now.
    route: Vec<Option<usize>>,
    /// Per VIP: [anycast, direct] round trips no reply can beat: light in a straight
    /// fiber over the internet legs (fault overrides touch only backbone links).
    floor_ns: Vec<[u64; 2]>,
}

struct PopNode {
    core: Pop,
    up: bool,
    announced: bool,
    /// Packets the core refused, by reason.
    drops: BTreeMap<&'static str, u64>,
}

struct ClbNode {
    region: usize,
    index: usize,
    core: Clb,
    config: ClbConfig,
    up: bool,
    /// What backbone probing believes: the direct path's region edge uses it.
    known_up: bool,
    /// Counters of cores this node ran before a restart.
    flows_before: u64,
    peak_before: usize,
    evictions_before: u64,
    timer_at: Option<u64>,
    /// Packets the core refused, by reason (across restarts).
    drops: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct Serve {
    header: Vec<u8>,
    remaining_req: u64,
    pending_resp: Vec<u8>,
    resp_off: usize,
    /// The peer asked to close after this response (HTTP `Connection: close`).
    close_after: bool,
}

/// One server-side TCP connection of a backend: its own smoltcp stack, so serving one
/// connection never walks the others (TCP connections are independent anyway).
struct BackendConn {
    stack: TcpStack,
    handle: SocketHandle,
    serve: Serve,
    poll_at: Option<u64>,
}

struct BackendHost {
    ip: IpAddr,
    /// Ports whose service is down: packets to them vanish.
    down_ports: Vec<u16>,
    tcp_ports: Vec<u16>,
    /// Remote endpoint → its connection.
    conns: HashMap<(IpAddr, u16), BackendConn>,
    /// Client endpoint → the CLB node that last forwarded its packets (the way back).
    via: HashMap<(IpAddr, u16), usize>,
    /// Security groups bound to this instance.
    firewall: Option<Firewall>,
}

struct FaultTracker {
    at_ns: u64,
    what: String,
    affected: Vec<(usize, usize)>,
    before: Vec<Option<SocketAddr>>,
    first_reply_ns: Vec<Option<u64>>,
    changed: Vec<bool>,
}

/// Per backend port, as the report shows it.
struct BackendRecord {
    region: usize,
    group: String,
    addr: SocketAddr,
    weight: u8,
    flows: std::collections::BTreeSet<(usize, usize)>,
    health: Vec<(u64, bool)>,
    /// The lowest source addresses the backend saw on client traffic (at most 16).
    addrs_seen: std::collections::BTreeSet<IpAddr>,
}

/// How many client addresses a backend's report lists.
const ADDRS_SEEN_MAX: usize = 16;

pub struct World<'t> {
    t: &'t Topology,
    q: EventQueue<Ev>,
    end_ns: u64,
    clients: Vec<Client>,
    groups: Vec<Group>,
    pops: Vec<PopNode>,
    clbs: Vec<ClbNode>,
    clb_base: Vec<usize>,
    clb_by_addr: HashMap<IpAddr, usize>,
    hosts: Vec<BackendHost>,
    host_by_ip: HashMap<IpAddr, usize>,
    inet_pop: Vec<Link>,
    inet_direct: Vec<Link>,
    backbone: Vec<Link>,
    /// [group][k][path] round-trip histograms in microseconds.
    hist: Vec<Vec<[Histogram<u64>; 2]>>,
    trackers: Vec<FaultTracker>,
    backends: Vec<BackendRecord>,
    /// Backend address → its first record in `backends`.
    backend_index: HashMap<SocketAddr, usize>,
    packets: u64,
    /// Invariants found broken while running (bugs, not input): reported with the seed.
    violations: Vec<String>,
    /// Backends unbound by faults (a restarted CLB node must not forget them).
    unbound: Vec<SocketAddr>,
    client_by_addr: HashMap<IpAddr, usize>,
    /// Per traffic class: it talks HTTP (its listener is layer 7), over TLS (HTTPS).
    class_http: Vec<bool>,
    class_tls: Vec<bool>,
    /// HTTPS listeners' identity and the clients' trust in it (when any listener is HTTPS).
    tls_server: Option<anyedge_region::l7::TlsTermination>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    quic_server: Option<anyedge_region::quic_listener::QuicTermination>,
    quic_client: Option<quinn_proto::ClientConfig>,
    /// (region, backend host) → [to the backend, back] for backends away from the region.
    site_links: HashMap<(usize, usize), [Link; 2]>,
    /// Security-group counters of CLB cores that were restarted.
    retired_sg: Vec<Vec<RuleCounters>>,
    /// The Raft control plane (`control:`); its watchers are the CLB nodes, in order.
    control: Option<crate::control::ControlPlane>,
    /// Weights set by faults without a control plane (a restarted CLB node keeps them).
    weights_set: Vec<(SocketAddr, u8)>,
}

/// The default pool clients without an `address` block draw from: 198.18.64.1 up to
/// 198.18.255.254, clear of VIPs (198.18.0.x) and CLB nodes (198.18.32.x).
fn default_pool() -> (Cidr, u128) {
    (Cidr { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), prefix: 16 }, 64 * 256)
}

fn clb_addr(region: usize, index: usize) -> IpAddr {
    let base = u32::from(Ipv4Addr::new(198, 18, 32, 1));
    IpAddr::V4(Ipv4Addr::from(base + (region * 64 + index) as u32))
}

fn clb_addr_v6(region: usize, index: usize) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0x18, 0x32, 0, 0, 0, region as u16, index as u16 + 1))
}

fn port_of(slot: usize, generation: u16) -> u16 {
    PORT_BASE + slot as u16 * PORTS_PER_SLOT + generation % PORTS_PER_SLOT
}

fn slot_of(port: u16) -> Option<usize> {
    port.checked_sub(PORT_BASE).map(|p| usize::from(p / PORTS_PER_SLOT))
}

/// Why a topology cannot be simulated (beyond what validation checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl<'t> World<'t> {
    pub fn new(t: &'t Topology) -> Result<World<'t>, SimError> {
        let total: u64 = t.clients.iter().map(|c| u64::from(c.count)).sum();
        if total > 40_000 {
            return Err(SimError(format!("{total} clients: the simulator addresses at most 40000")));
        }
        if let Some(g) = t.clients.iter().find(|g| g.traffic.len() * 2 > SLOTS_MAX) {
            return Err(SimError(format!("client group `{}` has more than {} traffic classes", g.name, SLOTS_MAX / 2)));
        }
        let seed = t.seed;
        let (np, nr, ng) = (t.pops.len(), t.regions.len(), t.clients.len());
        let mut inet_pop = Vec::with_capacity(ng * np * 2);
        for g in 0..ng {
            for p in 0..np {
                let model = anyedge_topology::nodes::access_link(t, g, t.pops[p].location);
                for dir in 0..2 {
                    inet_pop.push(Link::new(model, ComponentRng::new(seed, &format!("inet/{g}/pop/{p}/{dir}"))));
                }
            }
        }
        let mut inet_direct = Vec::with_capacity(ng * nr * 2);
        for g in 0..ng {
            for r in 0..nr {
                let model = anyedge_topology::nodes::access_link(t, g, t.regions[r].location);
                for dir in 0..2 {
                    let rng = ComponentRng::new(seed, &format!("inet/{g}/region/{r}/{dir}"));
                    inet_direct.push(Link::new(model, rng));
                }
            }
        }
        let mut backbone = Vec::with_capacity(np * nr * 2);
        for p in 0..np {
            for r in 0..nr {
                let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
                for dir in 0..2 {
                    backbone.push(Link::new(model, ComponentRng::new(seed, &format!("backbone/{p}/{r}/{dir}"))));
                }
            }
        }
        let mut w = World {
            t,
            q: EventQueue::new(),
            end_ns: t.duration_ns + DRAIN_NS,
            clients: Vec::new(),
            groups: Vec::new(),
            pops: Vec::new(),
            clbs: Vec::new(),
            clb_base: Vec::new(),
            clb_by_addr: HashMap::new(),
            hosts: Vec::new(),
            host_by_ip: HashMap::new(),
            inet_pop,
            inet_direct,
            backbone,
            hist: Vec::new(),
            trackers: Vec::new(),
            backends: Vec::new(),
            backend_index: HashMap::new(),
            packets: 0,
            violations: Vec::new(),
            unbound: Vec::new(),
            client_by_addr: HashMap::new(),
            class_http: t.traffic.iter().map(|c| class_listener(t, c).is_some_and(|p| p.is_layer7())).collect(),
            class_tls: t.traffic.iter().map(|c| class_listener(t, c).is_some_and(|p| p.has_tls())).collect(),
            tls_server: None,
            tls_client: None,
            quic_server: None,
            quic_client: None,
            site_links: HashMap::new(),
            retired_sg: t.security_groups.iter().map(|d| vec![RuleCounters::default(); d.group.rules.len()]).collect(),
            control: None,
            weights_set: Vec::new(),
        };
        let listeners = || t.vips.iter().flat_map(|v| &v.listeners);
        let https = listeners().any(|l| l.protocol.has_tls() || l.protocol == ListenerProtocol::Quic);
        if https {
            let names: Vec<IpAddr> =
                t.vips.iter().flat_map(|v| [Some(IpAddr::V4(v.ipv4)), v.ipv6.map(IpAddr::V6)]).flatten().collect();
            let (server, client) = crate::tls::vip_pki(&names).map_err(SimError)?;
            if listeners().any(|l| l.protocol == ListenerProtocol::Quic) {
                let (qs, qc) = crate::tls::quic_configs(&server, &client).map_err(SimError)?;
                w.quic_server = Some(qs);
                w.quic_client = Some(qc);
            }
            w.tls_server = Some(server);
            w.tls_client = Some(client);
        }
        w.build_pops();
        w.build_regions();
        w.build_groups();
        w.build_clients();
        for (index, f) in t.faults.iter().enumerate() {
            w.q.schedule(f.at_ns, Ev::Fault { index });
        }
        if let Some(c) = &t.control {
            let watchers: Vec<_> = w.clbs.iter().map(|n| t.regions[n.region].location).collect();
            w.control = Some(crate::control::ControlPlane::new(t, c, &watchers).map_err(SimError)?);
            w.q.schedule(0, Ev::Control(crate::control::ControlEv::Tick));
        }
        Ok(w)
    }

    fn build_pops(&mut self) {
        for p in 0..self.t.pops.len() {
            let core = Pop::new(anyedge_topology::nodes::pop_config(self.t, p));
            self.pops.push(PopNode { core, up: true, announced: true, drops: BTreeMap::new() });
        }
    }

    fn clb_config(&self, r: usize, index: usize) -> ClbConfig {
        let addresses =
            anyedge_topology::nodes::ClbAddresses { address: clb_addr(r, index), address_v6: Some(clb_addr_v6(r, index)) };
        let identity = anyedge_topology::nodes::Identity { tls: self.tls_server.clone(), quic: self.quic_server.clone() };
        anyedge_topology::nodes::clb_config(self.t, r, index, addresses, &identity)
    }

    fn build_regions(&mut self) {
        let t = self.t;
        for (r, region) in t.regions.iter().enumerate() {
            self.clb_base.push(self.clbs.len());
            for index in 0..usize::from(region.clb_nodes) {
                let config = self.clb_config(r, index);
                let core = Clb::new(config.clone(), 0);
                self.clb_by_addr.insert(config.address, self.clbs.len());
                if let Some(v6) = config.address_v6 {
                    self.clb_by_addr.insert(v6, self.clbs.len());
                }
                self.clbs.push(ClbNode {
                    region: r,
                    index,
                    core,
                    config,
                    up: true,
                    known_up: true,
                    timer_at: None,
                    flows_before: 0,
                    peak_before: 0,
                    evictions_before: 0,
                    drops: BTreeMap::new(),
                });
            }
            for group in &region.backend_groups {
                for b in &group.backends {
                    self.backend_index.entry(b.addr).or_insert(self.backends.len());
                    self.backends.push(BackendRecord {
                        region: r,
                        group: group.name.clone(),
                        addr: b.addr,
                        weight: b.weight,
                        flows: Default::default(),
                        health: vec![(0, true)],
                        addrs_seen: Default::default(),
                    });
                    self.ensure_host(b.addr, r, b.site);
                }
            }
        }
        for c in 0..self.clbs.len() {
            self.arm_clb_timer(c);
        }
    }

    fn ensure_host(&mut self, addr: SocketAddr, region: usize, site: Site) {
        let h = self.host(addr, region);
        let t = self.t;
        let location = match site {
            Site::Local => return,
            Site::Region(r) => t.regions[r].location,
            Site::Idc(i) => t.idcs[i].location,
        };
        if self.site_links.contains_key(&(region, h)) {
            return;
        }
        // A backend away from its region is reached over the backbone.
        let model = anyedge_topology::nodes::backbone_link(t, t.regions[region].location, location);
        let link =
            |dir: usize| Link::new(model, ComponentRng::new(t.seed, &format!("site/{region}/{}/{dir}", addr.ip())));
        self.site_links.insert((region, h), [link(0), link(1)]);
    }

    fn host(&mut self, addr: SocketAddr, _region: usize) -> usize {
        let h = match self.host_by_ip.get(&addr.ip()) {
            Some(&h) => h,
            None => {
                let h = self.hosts.len();
                self.hosts.push(BackendHost {
                    ip: addr.ip(),
                    down_ports: Vec::new(),
                    tcp_ports: Vec::new(),
                    conns: HashMap::new(),
                    via: HashMap::new(),
                    firewall: self.backend_firewall(addr.ip()),
                });
                self.host_by_ip.insert(addr.ip(), h);
                h
            }
        };
        // Every backend port also listens on TCP, so TCP health checks find it.
        if !self.hosts[h].tcp_ports.contains(&addr.port()) {
            self.hosts[h].tcp_ports.push(addr.port());
        }
        h
    }

    fn backend_firewall(&self, ip: IpAddr) -> Option<Firewall> {
        let groups: Vec<_> = self
            .t
            .security_groups
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bind.contains(&SgBinding::Backend(ip)))
            .map(|(gi, d)| (gi, d.group.clone()))
            .collect();
        (!groups.is_empty()).then(|| Firewall::new(groups))
    }

    fn build_groups(&mut self) {
        let t = self.t;
        for (gi, g) in t.clients.iter().enumerate() {
            let order: Vec<Vec<usize>> = (0..t.vips.len()).map(|v| t.pop_order(gi, v)).collect();
            let route = order.iter().map(|o| o.first().copied()).collect();
            let floor_ns = t
                .vips
                .iter()
                .map(|v| {
                    let to_pop = v.pops.iter().map(|&p| fiber_delay_ns(g.location, t.pops[p].location, 1.0)).min();
                    let to_region = fiber_delay_ns(g.location, t.regions[v.home].location, 1.0);
                    [2 * to_pop.unwrap_or(0), 2 * to_region]
                })
                .collect();
            self.groups.push(Group { order, route, floor_ns });
        }
    }

    fn build_clients(&mut self) {
        let t = self.t;
        let mut next = 0usize;
        let explicit: Vec<Cidr> = t.clients.iter().filter_map(|g| g.address).collect();
        let reserved: std::collections::HashSet<IpAddr> =
            t.vips.iter().map(|v| IpAddr::V4(v.ipv4)).chain(self.backends.iter().map(|b| b.addr.ip())).collect();
        let (pool, mut pool_next) = default_pool();
        for (g, group) in t.clients.iter().enumerate() {
            self.hist.push(
                group
                    .traffic
                    .iter()
                    .map(|_| {
                        let h =
                            || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid");
                        [h(), h()]
                    })
                    .collect(),
            );
            let mut rng = ComponentRng::new(t.seed, &format!("clients/{}", group.name));
            for i in 0..group.count {
                let c = next;
                next += 1;
                let addr = match group.address {
                    Some(cidr) => cidr.host(u128::from(i)),
                    None => loop {
                        let a = pool.host(pool_next);
                        pool_next += 1;
                        if !explicit.iter().any(|e| e.contains(a)) && !reserved.contains(&a) {
                            break a;
                        }
                    },
                };
                self.client_by_addr.insert(addr, c);
                let has_tcp = group.traffic.iter().any(|&k| matches!(t.traffic[k].kind, TrafficKind::Tcp { .. }));
                let tcp = has_tcp.then(|| TcpStack::new(addr, rng.next_u64(), 0));
                let slots = group.traffic.len() * 2;
                self.clients.push(Client {
                    group: g,
                    addr,
                    flows: (0..slots).map(|_| Flow::default()).collect(),
                    tcp,
                    tcp_flows: (0..slots).map(|_| TcpFlow::default()).collect(),
                    tcp_poll_at: None,
                    rng: ComponentRng::new(t.seed, &format!("client/{c}")),
                    quic_flows: (0..slots)
                        .map(|slot| {
                            let class = &t.traffic[group.traffic[slot / 2]];
                            matches!(class.kind, TrafficKind::Quic { .. }).then(|| QuicFlow {
                                host: anyedge_region::quic::QuicHost::client(
                                    ComponentRng::new(t.seed, &format!("quic/{c}/{slot}")).next_u64(),
                                ),
                                conn: None,
                                connected: false,
                                pending: VecDeque::new(),
                                stream: None,
                                to_send: Vec::new(),
                                got: 0,
                                head: Vec::new(),
                                poll_at: None,
                            })
                        })
                        .collect(),
                });
                for (k, &class) in group.traffic.iter().enumerate() {
                    let period = match t.traffic[class].kind {
                        TrafficKind::Udp { interval_ns, .. } => interval_ns,
                        TrafficKind::Tcp { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
                        TrafficKind::SynFlood { rate_per_s } => (1e9 / rate_per_s) as u64,
                        TrafficKind::Quic { requests_per_s, .. } => (1e9 / requests_per_s) as u64,
                    };
                    let start = rng.below(period.max(1));
                    let ev = match t.traffic[class].kind {
                        TrafficKind::Udp { .. } => Ev::UdpSend { client: c, k },
                        TrafficKind::Tcp { .. } => Ev::TcpIssue { client: c, k },
                        TrafficKind::SynFlood { .. } => Ev::FloodSend { client: c, k },
                        TrafficKind::Quic { .. } => Ev::QuicIssue { client: c, k },
                    };
                    self.q.schedule(start, ev);
                }
            }
        }
    }

    fn link_pop(&self, g: usize, p: usize, dir: usize) -> usize {
        (g * self.t.pops.len() + p) * 2 + dir
    }

    fn link_direct(&self, g: usize, r: usize, dir: usize) -> usize {
        (g * self.t.regions.len() + r) * 2 + dir
    }

    fn link_bb(&self, p: usize, r: usize, dir: usize) -> usize {
        (p * self.t.regions.len() + r) * 2 + dir
    }

    fn send_over(&mut self, link: LinkKind, flow: u64, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        let size = match link {
            LinkKind::Backbone(_) => packet.len() + OUTER_HEADER,
            _ => packet.len(),
        };
        let l = match link {
            LinkKind::InetPop(i) => &mut self.inet_pop[i],
            LinkKind::InetDirect(i) => &mut self.inet_direct[i],
            LinkKind::Backbone(i) => &mut self.backbone[i],
        };
        if let Outcome::Deliver(at) = l.transmit(now, size, flow) {
            self.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }

    /// CLB node `clb` ↔ backend `host`: inside the region, or over the backbone when the
    /// backend lives elsewhere (another region, an IDC). `dir` 0 is toward the backend.
    fn send_clb_backend(&mut self, clb: usize, host: usize, dir: usize, packet: Vec<u8>) {
        let to = if dir == 0 { Arrival::Backend { host, via_clb: clb } } else { Arrival::ClbFromBackend(clb) };
        let region = self.clbs[clb].region;
        let now = self.q.now_ns();
        let at = match self.site_links.get_mut(&(region, host)) {
            None => Some(now + INTRA_REGION_NS),
            Some(links) => {
                let flow = inner::parse(&packet).map_or(0, |i| u64::from(i.key.flow_hash()));
                match links[dir].transmit(now, packet.len() + OUTER_HEADER, flow) {
                    Outcome::Deliver(at) => Some(at),
                    Outcome::Lost | Outcome::QueueFull => None,
                }
            }
        };
        if let Some(at) = at {
            self.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }

    /// Runs to the end; `progress` is called with the fraction done now and then.
    pub fn run(&mut self, mut progress: impl FnMut(f64)) {
        let step = (self.end_ns / 100).max(1);
        let mut next_progress = step;
        while let Some(ev) = self.q.pop_until(self.end_ns) {
            if self.q.now_ns() >= next_progress {
                progress(self.q.now_ns() as f64 / self.end_ns as f64);
                next_progress = self.q.now_ns() + step;
            }
            self.handle(ev);
        }
        if let Some(c) = self.control.as_mut() {
            c.finish(self.end_ns);
        }
        self.collect_control_violations();
        progress(1.0);
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(format!("t={} ns: {what}", self.q.now_ns()));
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// QUIC handshakes CLB nodes accepted (a migrating client must not add one).
    pub fn quic_handshakes(&self) -> u64 {
        self.clbs.iter().map(|c| c.core.quic_connections().1).sum()
    }

    pub fn events(&self) -> u64 {
        self.q.processed()
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn sim_s(&self) -> f64 {
        self.end_ns as f64 / 1e9
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::UdpSend { client, k } => self.udp_send(client, k),
            Ev::TcpIssue { client, k } => self.tcp_issue(client, k),
            Ev::FloodSend { client, k } => self.flood_send(client, k),
            Ev::QuicIssue { client, k } => self.quic_issue(client, k),
            Ev::ClientQuicPoll { client, slot } => {
                let now = self.q.now_ns();
                let due = self.clients[client].quic_flows[slot].as_ref().is_some_and(|f| f.poll_at == Some(now));
                if due {
                    if let Some(f) = self.clients[client].quic_flows[slot].as_mut() {
                        f.poll_at = None;
                    }
                    self.client_quic_service(client, slot);
                }
            }
            Ev::ClientTcpPoll { client } => {
                if self.clients[client].tcp_poll_at == Some(self.q.now_ns()) {
                    self.clients[client].tcp_poll_at = None;
                    self.client_tcp_service(client);
                }
            }
            Ev::BackendTcpPoll { host, remote } => {
                let now = self.q.now_ns();
                if let Some(conn) = self.hosts[host].conns.get_mut(&remote)
                    && conn.poll_at == Some(now)
                {
                    conn.poll_at = None;
                    self.backend_tcp_service(host, remote);
                }
            }
            Ev::Arrive { to, packet } => self.arrive(to, packet),
            Ev::ClbTimer { clb } => {
                if self.clbs[clb].timer_at == Some(self.q.now_ns()) {
                    self.clbs[clb].timer_at = None;
                    if self.clbs[clb].up {
                        let now = self.q.now_ns();
                        self.clbs[clb].core.handle_timeout(now);
                        self.drain_clb(clb);
                    }
                }
            }
            Ev::Fault { index } => self.apply_fault(index),
            Ev::Control(ev) => self.control_event(ev),
            Ev::Withdraw { pop } => {
                if !self.pops[pop].up {
                    self.pops[pop].announced = false;
                    // Backbone probing finds the dead POP in the same time BGP does.
                    self.set_pop_state_at_clbs(pop, false);
                    let at = self.q.now_ns() + self.t.failover.route_converge_ns;
                    self.q.schedule(at, Ev::Reconverge);
                }
            }
            Ev::Reconverge => self.reconverge(),
            Ev::ClbDetected { clb, up } => {
                self.clbs[clb].known_up = up;
                let (region, index) = (self.clbs[clb].region as u16, self.clbs[clb].index as u16);
                for p in &mut self.pops {
                    p.core.set_clb_up(region, index, up);
                }
            }
            Ev::LinkRestore { pop, region } => {
                for dir in 0..2 {
                    let i = self.link_bb(pop, region, dir);
                    self.backbone[i].clear_override();
                }
            }
        }
    }

    fn set_pop_state_at_clbs(&mut self, pop: usize, up: bool) {
        for c in &mut self.clbs {
            c.core.set_pop_up(pop as u16, up);
        }
    }

    fn reconverge(&mut self) {
        for g in &mut self.groups {
            for (v, order) in g.order.iter().enumerate() {
                g.route[v] = order.iter().copied().find(|&p| self.pops[p].announced);
            }
        }
    }

    /// The 5-tuple a client's traffic slot uses now (TCP: its current connection).
    fn slot_key(&self, client: usize, slot: usize) -> FlowKey {
        let c = &self.clients[client];
        let class = &self.t.traffic[self.t.clients[c.group].traffic[slot / 2]];
        let generation = c.tcp_flows[slot].generation;
        FlowKey {
            transport: class.transport(),
            src: c.addr,
            src_port: port_of(slot, generation),
            dst: self.t.vip_addr(class, c.addr),
            dst_port: class.port,
        }
    }

    fn slot_route(&self, client: usize, k: usize, path: Path) -> Option<(LinkKind, Arrival)> {
        let c = &self.clients[client];
        let class = &self.t.traffic[self.t.clients[c.group].traffic[k]];
        match path {
            Path::Anycast => {
                let p = self.groups[c.group].route[class.vip]?;
                Some((LinkKind::InetPop(self.link_pop(c.group, p, 0)), Arrival::PopFromClient(p)))
            }
            Path::Direct => {
                let r = self.t.vips[class.vip].home;
                let base = self.clb_base[r];
                let hash = self.slot_key(client, k * 2 + 1).flow_hash();
                let node =
                    rendezvous_node(hash, self.t.regions[r].clb_nodes, |n| self.clbs[base + usize::from(n)].known_up);
                let clb = base + usize::from(node);
                Some((LinkKind::InetDirect(self.link_direct(c.group, r, 0)), Arrival::ClbDirect(clb)))
            }
        }
    }

    fn udp_send(&mut self, client: usize, k: usize) {
        let now = self.q.now_ns();
        if now >= self.t.duration_ns {
            return;
        }
        let class = &self.t.traffic[self.t.clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Udp { interval_ns, size } = class.kind else {
            return;
        };
        let vip = (self.t.vip_addr(class, self.clients[client].addr), class.port);
        for path in PATHS {
            let slot = k * 2 + path as usize;
            let flow = &mut self.clients[client].flows[slot];
            let seq = flow.udp_seq;
            flow.udp_seq += 1;
            flow.sent += 1;
            let payload = app::udp_request(seq, now, size as usize);
            let src = (self.clients[client].addr, port_of(slot, 0));
            let Some(packet) = inner::build_udp(src, vip, &payload) else {
                continue;
            };
            if let Some((link, to)) = self.slot_route(client, k, path) {
                self.send_over(link, flow_id(client, slot), to, packet);
            }
        }
        self.q.schedule(now + interval_ns, Ev::UdpSend { client, k });
    }

    /// One SYN of a flood, from a random low source port, never completed.
    fn flood_send(&mut self, client: usize, k: usize) {
        let now = self.q.now_ns();
        if now >= self.t.duration_ns {
            return;
        }
        let class = &self.t.traffic[self.t.clients[self.clients[client].group].traffic[k]];
        let TrafficKind::SynFlood { rate_per_s } = class.kind else { return };
        let c = &mut self.clients[client];
        let src_port = 1024 + c.rng.below(u64::from(PORT_BASE - 1024)) as u16;
        let seq = c.rng.next_u64() as u32;
        c.flows[k * 2].sent += 1;
        let syn = inner::bare_tcp(src_port, class.port, smoltcp::wire::TcpControl::Syn, seq, None, Some(1460));
        if let Some(packet) = inner::build_tcp(c.addr, self.t.vip_addr(class, c.addr), &syn)
            && let Some((link, to)) = self.slot_route(client, k, Path::Anycast)
        {
            self.send_over(link, flow_id(client, k * 2) ^ u64::from(src_port) << 40, to, packet);
        }
        self.q.schedule(now + (1e9 / rate_per_s) as u64, Ev::FloodSend { client, k });
    }

    fn quic_issue(&mut self, client: usize, k: usize) {
        let now = self.q.now_ns();
        if now >= self.t.duration_ns {
            return;
        }
        let class = &self.t.traffic[self.t.clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Quic { requests_per_s, .. } = class.kind else { return };
        for path in PATHS {
            let slot = k * 2 + path as usize;
            let c = &mut self.clients[client];
            c.flows[slot].sent += 1;
            if let Some(f) = c.quic_flows[slot].as_mut() {
                f.pending.push_back(now);
                if f.pending.len() > TCP_PENDING_MAX {
                    f.pending.pop_front();
                }
            }
            self.client_quic_service(client, slot);
        }
        self.q.schedule(now + (1e9 / requests_per_s) as u64, Ev::QuicIssue { client, k });
    }

    /// Drives a client's QUIC flow: connect, one stream per request, read the answer.
    fn client_quic_service(&mut self, client: usize, slot: usize) {
        let now = self.q.now_ns();
        let t = self.t;
        let group = self.clients[client].group;
        let class = &t.traffic[t.clients[group].traffic[slot / 2]];
        let TrafficKind::Quic { request, response, .. } = class.kind else { return };
        let addr = self.clients[client].addr;
        let remote = SocketAddr::new(t.vip_addr(class, addr), class.port);
        let config = self.quic_client.clone();
        let Some(f) = self.clients[client].quic_flows[slot].as_mut() else { return };
        let mut out = Vec::new();
        let mut completions = Vec::new();
        if f.conn.is_none()
            && !f.pending.is_empty()
            && let Some(config) = config
        {
            f.conn = f.host.connect(now, config, remote, &remote.ip().to_string());
            f.connected = false;
        }
        f.host.drive(now, &mut out);
        for (_, event) in f.host.take_events() {
            match event {
                quinn_proto::Event::Connected => f.connected = true,
                quinn_proto::Event::ConnectionLost { .. } => {
                    f.conn = None;
                    f.connected = false;
                    f.stream = None;
                    f.to_send.clear();
                    f.got = 0;
                    f.head.clear();
                }
                _ => {}
            }
        }
        if let Some(ch) = f.conn
            && f.connected
            && let Some(conn) = f.host.conn(ch)
        {
            if f.stream.is_none() && !f.pending.is_empty() {
                f.stream = conn.streams().open(quinn_proto::Dir::Bi);
                f.to_send = app::tcp_request(request, response);
                f.got = 0;
                f.head.clear();
            }
            if let Some(id) = f.stream {
                if !f.to_send.is_empty() {
                    let n = conn.send_stream(id).write(&f.to_send).unwrap_or(0);
                    f.to_send.drain(..n);
                    if f.to_send.is_empty() {
                        let _ = conn.send_stream(id).finish();
                    }
                }
                let expected = u64::from(response.max(app::ID_LEN as u32));
                let mut done = false;
                if let Ok(mut chunks) = conn.recv_stream(id).read(true) {
                    while let Ok(Some(chunk)) = chunks.next(64 * 1024) {
                        let want = app::ID_LEN.saturating_sub(f.head.len()).min(chunk.bytes.len());
                        f.head.extend_from_slice(&chunk.bytes[..want]);
                        f.got += chunk.bytes.len() as u64;
                    }
                    let _ = chunks.finalize();
                }
                if f.got >= expected {
                    done = true;
                }
                if done {
                    let backend = app::parse_identity(&f.head).map(|(b, _)| b);
                    if let Some(issued) = f.pending.pop_front() {
                        completions.push((issued, backend));
                    }
                    f.stream = None;
                }
            }
            f.host.drive(now, &mut out);
        }
        let next = f.host.poll_timeout();
        for (issued, backend) in completions {
            self.record_reply(client, slot, issued, backend);
        }
        self.send_quic_datagrams(client, slot, out);
        if let Some(at) = next {
            let at = at.max(now);
            let f = self.clients[client].quic_flows[slot].as_mut();
            if let Some(f) = f
                && f.poll_at.is_none_or(|t| at < t)
            {
                f.poll_at = Some(at);
                self.q.schedule(at, Ev::ClientQuicPoll { client, slot });
            }
        }
    }

    /// Sends a client's QUIC datagrams from its slot's current source port.
    fn send_quic_datagrams(&mut self, client: usize, slot: usize, out: Vec<anyedge_region::quic::QuicTransmit>) {
        let addr = self.clients[client].addr;
        let port = port_of(slot, self.clients[client].tcp_flows[slot].generation);
        let path = if slot.is_multiple_of(2) { Path::Anycast } else { Path::Direct };
        for (dst, _, payload) in out {
            let Some(packet) = inner::build_udp((addr, port), (dst.ip(), dst.port()), &payload) else { continue };
            let route = match path {
                Path::Anycast => self.slot_route(client, slot / 2, path),
                Path::Direct => self.direct_quic_route(client, slot, &payload),
            };
            if let Some((link, to)) = route {
                self.send_over(link, flow_id(client, slot), to, packet);
            }
        }
    }

    /// The region edge routes QUIC by the connection ID the CLB node issued, when there is
    /// one, so a migrated client reaches the node that holds its connection.
    fn direct_quic_route(&self, client: usize, slot: usize, payload: &[u8]) -> Option<(LinkKind, Arrival)> {
        let (link, to) = self.slot_route(client, slot / 2, Path::Direct)?;
        let Arrival::ClbDirect(clb) = to else { return Some((link, to)) };
        let r = self.clbs[clb].region;
        let node = anyedge_region::quic::cid_node(payload, self.t.regions[r].clb_nodes);
        Some((link, Arrival::ClbDirect(node.map_or(clb, |n| self.clb_base[r] + usize::from(n)))))
    }

    fn tcp_issue(&mut self, client: usize, k: usize) {
        let now = self.q.now_ns();
        if now >= self.t.duration_ns {
            return;
        }
        let class = &self.t.traffic[self.t.clients[self.clients[client].group].traffic[k]];
        let TrafficKind::Tcp { requests_per_s, .. } = class.kind else {
            return;
        };
        for path in PATHS {
            let slot = k * 2 + path as usize;
            let c = &mut self.clients[client];
            c.flows[slot].sent += 1;
            let tf = &mut c.tcp_flows[slot];
            tf.pending.push_back(now);
            if tf.pending.len() > TCP_PENDING_MAX {
                // The oldest request is abandoned with its connection (its answer must not
                // be taken for the next one's): counted as sent, never received.
                tf.pending.pop_front();
                if let (Some(stack), Some(h)) = (c.tcp.as_mut(), tf.handle) {
                    stack.socket(h).abort();
                }
                tf.reset_exchange();
            }
        }
        self.client_tcp_service(client);
        self.q.schedule(now + (1e9 / requests_per_s) as u64, Ev::TcpIssue { client, k });
    }

    /// Drives a client's TCP flows: (re)connect, write requests, read responses, poll.
    fn client_tcp_service(&mut self, client: usize) {
        let now = self.q.now_ns();
        let t = self.t;
        let group = self.clients[client].group;
        let addr = self.clients[client].addr;
        let Some(mut stack) = self.clients[client].tcp.take() else {
            return;
        };
        stack.poll(now);
        let mut completions: Vec<(usize, u64, Option<SocketAddr>)> = Vec::new();
        for (k, &class_idx) in t.clients[group].traffic.iter().enumerate() {
            let class = &t.traffic[class_idx];
            let TrafficKind::Tcp { request, response, .. } = class.kind else {
                continue;
            };
            let remote = (t.vip_addr(class, addr), class.port);
            let app = TcpApp {
                request,
                response,
                http: self.class_http[class_idx],
                tls: self.class_tls[class_idx].then(|| self.tls_client.clone()).flatten(),
            };
            for path in PATHS {
                let slot = k * 2 + path as usize;
                let tf = &mut self.clients[client].tcp_flows[slot];
                service_tcp_flow(&mut stack, tf, slot, addr, remote, &app, &mut completions);
            }
        }
        stack.poll(now);
        let out: Vec<Vec<u8>> = stack.drain_tx().collect();
        let next = stack.poll_at_ns(now);
        self.clients[client].tcp = Some(stack);
        for (slot, issued, backend) in completions {
            self.record_reply(client, slot, issued, backend);
        }
        for packet in out {
            let Ok(info) = inner::parse(&packet) else { continue };
            let Some(slot) = slot_of(info.key.src_port) else {
                continue;
            };
            let path = if slot.is_multiple_of(2) { Path::Anycast } else { Path::Direct };
            if let Some((link, to)) = self.slot_route(client, slot / 2, path) {
                self.send_over(link, flow_id(client, slot), to, packet);
            }
        }
        if let Some(at) = next {
            self.arm_client_poll(client, at.max(now));
        }
    }

    fn arm_client_poll(&mut self, client: usize, at: u64) {
        let c = &mut self.clients[client];
        if c.tcp_poll_at.is_none_or(|t| at < t) {
            c.tcp_poll_at = Some(at);
            self.q.schedule(at, Ev::ClientTcpPoll { client });
        }
    }

    fn record_reply(&mut self, client: usize, slot: usize, sent_ns: u64, backend: Option<SocketAddr>) {
        let now = self.q.now_ns();
        let group = self.clients[client].group;
        let rtt_ns = now.saturating_sub(sent_ns);
        let class = self.t.clients[group].traffic[slot / 2];
        let floor_ns = self.groups[group].floor_ns[self.t.traffic[class].vip][slot % 2];
        if rtt_ns < floor_ns {
            self.violation(format!(
                "client group `{}`: a reply took {rtt_ns} ns, faster than light allows ({floor_ns} ns)",
                self.t.clients[group].name
            ));
        }
        let _ = self.hist[group][slot / 2][slot % 2].record((rtt_ns / 1000).max(1));
        let flow = &mut self.clients[client].flows[slot];
        flow.received += 1;
        if let Some(prev) = flow.last_rtt_ns {
            flow.jitter_sum_ns += u128::from(prev.abs_diff(rtt_ns));
            flow.jitter_n += 1;
        }
        flow.last_rtt_ns = Some(rtt_ns);
        let new_backend = backend.filter(|b| flow.last_backend != Some(*b));
        if backend.is_some() {
            flow.last_backend = backend;
        }
        let watching = std::mem::take(&mut flow.watching);
        let mut still = Vec::new();
        for (tr, pos) in watching {
            let tracker = &mut self.trackers[tr];
            if sent_ns >= tracker.at_ns {
                tracker.first_reply_ns[pos] = Some(now);
                tracker.changed[pos] =
                    tracker.before[pos].is_some() && backend.is_some() && tracker.before[pos] != backend;
            } else {
                still.push((tr, pos));
            }
        }
        self.clients[client].flows[slot].watching = still;
        // A flow counts once per backend that served it: only a change needs recording.
        if let Some(&b) = new_backend.as_ref().and_then(|b| self.backend_index.get(b)) {
            self.backends[b].flows.insert((client, slot));
        }
    }

    fn arrive(&mut self, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        match to {
            Arrival::PopFromClient(p) | Arrival::PopFromClb(p) => {
                let node = &mut self.pops[p];
                if !node.up {
                    return;
                }
                let result = match to {
                    Arrival::PopFromClient(_) => node.core.handle_from_client(now, &packet),
                    _ => node.core.handle_from_clb(now, &packet),
                };
                match result {
                    Ok(()) => self.drain_pop(p),
                    Err(reason) => *node.drops.entry(reason.name()).or_default() += 1,
                }
            }
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) => {
                let node = &mut self.clbs[c];
                if !node.up {
                    return;
                }
                let result = match to {
                    Arrival::ClbFromPop(_) => node.core.handle_from_pop(now, &packet),
                    Arrival::ClbDirect(_) => node.core.handle_direct(now, packet),
                    _ => node.core.handle_from_backend(now, packet),
                };
                if let Err(reason) = result {
                    *node.drops.entry(reason.name()).or_default() += 1;
                }
                self.drain_clb(c);
            }
            Arrival::Backend { host, via_clb } => self.backend_receive(host, via_clb, packet),
            Arrival::Client(c) => self.client_receive(c, packet),
        }
    }

    /// The client a packet from the VIP is for, and its flow id.
    fn reply_target(&self, packet: &[u8]) -> Option<(usize, u64)> {
        let key = inner::parse(packet).ok()?.key;
        let client = *self.client_by_addr.get(&key.dst)?;
        Some((client, flow_id(client, slot_of(key.dst_port).unwrap_or(0))))
    }

    fn drain_pop(&mut self, p: usize) {
        while let Some(out) = self.pops[p].core.poll_output() {
            match out {
                anyedge_pop::Output::ToClb { region, node, bytes } => {
                    let region = usize::from(region);
                    let clb = self.clb_base[region] + usize::from(node);
                    let link = LinkKind::Backbone(self.link_bb(p, region, 0));
                    self.send_over(link, ccn_flow(&bytes), Arrival::ClbFromPop(clb), bytes);
                }
                anyedge_pop::Output::ToClient { bytes } => {
                    let Some((client, flow)) = self.reply_target(&bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetPop(self.link_pop(self.clients[client].group, p, 1));
                    self.send_over(link, flow, Arrival::Client(client), bytes);
                }
            }
        }
    }

    fn drain_clb(&mut self, c: usize) {
        let region = self.clbs[c].region;
        let table = self.clbs[c].core.conn_table();
        if table.len() > table.capacity() {
            let msg = format!("CLB {c}: connection table holds {} > capacity {}", table.len(), table.capacity());
            self.violation(msg);
        }
        while let Some(out) = self.clbs[c].core.poll_output() {
            match out {
                anyedge_region::Output::ToPop { pop_id, bytes } => {
                    let p = usize::from(pop_id);
                    if p >= self.pops.len() {
                        continue;
                    }
                    let link = LinkKind::Backbone(self.link_bb(p, region, 1));
                    self.send_over(link, ccn_flow(&bytes), Arrival::PopFromClb(p), bytes);
                }
                anyedge_region::Output::ToBackend { backend, bytes } => {
                    if let Some(&host) = self.host_by_ip.get(&backend.ip()) {
                        self.send_clb_backend(c, host, 0, bytes);
                    }
                }
                anyedge_region::Output::ToClient { bytes } => {
                    let Some((client, flow)) = self.reply_target(&bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetDirect(self.link_direct(self.clients[client].group, region, 1));
                    self.send_over(link, flow, Arrival::Client(client), bytes);
                }
            }
        }
        while let Some(ev) = self.clbs[c].core.poll_event() {
            if let anyedge_region::Event::HealthChanged { backend, healthy } = ev
                && self.clbs[c].index == 0
            {
                let now = self.q.now_ns();
                for rec in self.backends.iter_mut().filter(|r| r.addr == backend && r.region == region) {
                    rec.health.push((now, healthy));
                }
            }
        }
        self.arm_clb_timer(c);
    }

    fn arm_clb_timer(&mut self, c: usize) {
        let Some(at) = self.clbs[c].core.poll_timeout() else {
            return;
        };
        if self.clbs[c].timer_at.is_none_or(|t| at < t) {
            self.clbs[c].timer_at = Some(at);
            self.q.schedule(at, Ev::ClbTimer { clb: c });
        }
    }

    fn backend_receive(&mut self, host: usize, via_clb: usize, mut packet: Vec<u8>) {
        let Ok(info) = inner::parse(&packet) else { return };
        let h = &mut self.hosts[host];
        if info.key.dst != h.ip || h.down_ports.contains(&info.key.dst_port) {
            return;
        }
        if let Some(fw) = h.firewall.as_mut()
            && fw.inbound(&info.key) == Verdict::Drop
        {
            return;
        }
        h.via.insert((info.key.src, info.key.src_port), via_clb);
        let probe = self.clb_by_addr.contains_key(&info.key.src) && PROBE_PORTS.contains(&info.key.src_port);
        let new_flow = info.tcp.is_none_or(|f| f.syn && !f.ack);
        let port = SocketAddr::new(info.key.dst, info.key.dst_port);
        if !probe
            && new_flow
            && let Some(&b) = self.backend_index.get(&port)
        {
            // What the server would report as its peer: the TOA address when there is one.
            let peer = inner::read_toa(&packet).map_or(info.key.src, |(ip, _)| ip);
            self.note_client_seen(b, peer);
        }
        let h = &mut self.hosts[host];
        match info.key.transport {
            Transport::Udp => {
                let payload_start = packet.len() - info.payload_len;
                let mut payload = packet.split_off(payload_start);
                let backend = SocketAddr::new(info.key.dst, info.key.dst_port);
                let client_seen = SocketAddr::new(info.key.src, info.key.src_port);
                app::stamp_identity(&mut payload, app::UDP_STAMP_LEN, backend, client_seen);
                let src = (info.key.dst, info.key.dst_port);
                let dst = (info.key.src, info.key.src_port);
                if let Some(reply) = inner::build_udp(src, dst, &payload) {
                    self.send_clb_backend(via_clb, host, 1, reply);
                }
            }
            Transport::Tcp => {
                let remote = (info.key.src, info.key.src_port);
                let flags = info.tcp.unwrap_or_default();
                if !h.conns.contains_key(&remote) {
                    if h.conns.len() >= BACKEND_CONNS_MAX && flags.syn && !flags.ack {
                        return; // a full backlog drops new SYNs
                    }
                    if !(flags.syn && !flags.ack && h.tcp_ports.contains(&info.key.dst_port)) {
                        // No connection and no listener for it: the host answers RST.
                        if let Some(rst) = inner::tcp_reset_for(&packet) {
                            self.send_clb_backend(via_clb, host, 1, rst);
                        }
                        return;
                    }
                    let seed = ComponentRng::new(self.t.seed, &format!("backend/{}/{:?}", h.ip, remote)).next_u64();
                    let mut stack = TcpStack::new(h.ip, seed, self.q.now_ns());
                    let handle = stack.new_socket();
                    let socket = stack.socket(handle);
                    // Like a server with TCP_NODELAY: a response's tail is not held back.
                    socket.set_nagle_enabled(false);
                    // Half-open or silent peers are given up on, as a kernel would.
                    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(10)));
                    let _ = socket.listen(info.key.dst_port);
                    h.conns.insert(remote, BackendConn { stack, handle, serve: Serve::default(), poll_at: None });
                }
                if let Some(conn) = h.conns.get_mut(&remote) {
                    conn.stack.receive(packet);
                }
                self.backend_tcp_service(host, remote);
            }
        }
    }

    fn note_client_seen(&mut self, backend: usize, client: IpAddr) {
        let seen = &mut self.backends[backend].addrs_seen;
        seen.insert(client);
        if seen.len() > ADDRS_SEEN_MAX {
            seen.pop_last();
        }
    }

    /// Serves one TCP connection: read requests, answer with the response size asked for.
    fn backend_tcp_service(&mut self, host: usize, remote: (IpAddr, u16)) {
        let now = self.q.now_ns();
        let h = &mut self.hosts[host];
        let ip = h.ip;
        let Some(conn) = h.conns.get_mut(&remote) else { return };
        conn.stack.poll(now);
        let s = conn.stack.socket(conn.handle);
        let mut http_clients = Vec::new();
        if !matches!(s.state(), tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed) {
            serve_connection(s, &mut conn.serve, ip, &mut http_clients);
            if s.state() == tcp::State::CloseWait && conn.serve.pending_resp.len() == conn.serve.resp_off {
                s.close();
            }
        }
        conn.stack.poll(now);
        let out: Vec<Vec<u8>> = conn.stack.drain_tx().collect();
        let local_port = conn.stack.socket(conn.handle).local_endpoint().map(|e| e.port);
        // Back to Listen (a reset handshake, e.g. a health probe) or done: forget it.
        let state = conn.stack.socket(conn.handle).state();
        let finished = matches!(state, tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait);
        let next = if finished { None } else { conn.stack.poll_at_ns(now) };
        if finished {
            h.conns.remove(&remote);
        }
        if let Some(&b) = local_port.and_then(|p| self.backend_index.get(&SocketAddr::new(ip, p))) {
            for client in http_clients {
                self.note_client_seen(b, client);
            }
        }
        for packet in out {
            let Ok(info) = inner::parse(&packet) else { continue };
            let via = match self.clb_by_addr.get(&info.key.dst) {
                Some(&c) => Some(c),
                None => self.hosts[host].via.get(&(info.key.dst, info.key.dst_port)).copied(),
            };
            if let Some(c) = via {
                self.send_clb_backend(c, host, 1, packet);
            }
        }
        if let Some(at) = next {
            let at = at.max(now);
            if let Some(conn) = self.hosts[host].conns.get_mut(&remote)
                && conn.poll_at.is_none_or(|t| at < t)
            {
                conn.poll_at = Some(at);
                self.q.schedule(at, Ev::BackendTcpPoll { host, remote });
            }
        }
    }

    fn client_receive(&mut self, client: usize, packet: Vec<u8>) {
        let Ok(info) = inner::parse(&packet) else { return };
        match info.key.transport {
            Transport::Udp => {
                let Some(slot) = slot_of(info.key.dst_port) else { return };
                if slot >= self.clients[client].flows.len() {
                    return;
                }
                if self.clients[client].quic_flows[slot].is_some() {
                    let now = self.q.now_ns();
                    let remote = SocketAddr::new(info.key.src, info.key.src_port);
                    let payload = &packet[packet.len() - info.payload_len..];
                    let mut out = Vec::new();
                    if let Some(f) = self.clients[client].quic_flows[slot].as_mut() {
                        f.host.receive(now, remote, Some(info.key.dst), payload, &mut out);
                    }
                    self.send_quic_datagrams(client, slot, out);
                    self.client_quic_service(client, slot);
                    return;
                }
                let Some(reply) = app::parse_udp_reply(&packet[packet.len() - info.payload_len..]) else {
                    return;
                };
                self.record_reply(client, slot, reply.sent_ns, Some(reply.backend));
            }
            Transport::Tcp => {
                if let Some(stack) = self.clients[client].tcp.as_mut() {
                    stack.receive(packet);
                    self.client_tcp_service(client);
                }
            }
        }
    }

    fn apply_fault(&mut self, index: usize) {
        let t = self.t;
        let fault = &t.faults[index];
        let now = self.q.now_ns();
        let affected = self.affected_flows(&fault.action);
        let before = affected.iter().map(|&(c, s)| self.clients[c].flows[s].last_backend).collect();
        let tr = self.trackers.len();
        for (pos, &(c, s)) in affected.iter().enumerate() {
            self.clients[c].flows[s].watching.push((tr, pos));
        }
        self.trackers.push(FaultTracker {
            at_ns: now,
            what: fault.what.clone(),
            first_reply_ns: vec![None; affected.len()],
            changed: vec![false; affected.len()],
            before,
            affected,
        });
        match fault.action {
            FaultAction::Down(Target::Control(n)) => {
                if let Some(c) = self.control.as_mut() {
                    c.down(now, n);
                }
            }
            FaultAction::Up(Target::Control(n)) => {
                if let Some(c) = self.control.as_mut() {
                    c.up(now, n);
                }
            }
            FaultAction::Partition(side_of) => {
                if let Some(c) = self.control.as_mut() {
                    c.partition(now, &side_of);
                }
            }
            FaultAction::Heal => {
                if let Some(c) = self.control.as_mut() {
                    c.heal(now);
                }
            }
            FaultAction::SetWeight { region, addr, weight } => match self.control.as_mut() {
                Some(c) => {
                    let events = c.request(now, anyedge_control::Change::SetWeight { backend: addr, weight });
                    self.schedule_control(events);
                }
                None => {
                    self.weights_set.retain(|&(a, _)| a != addr);
                    self.weights_set.push((addr, weight));
                    for c in self.clbs.iter_mut().filter(|c| c.region == region) {
                        c.core.set_weight(addr, weight);
                    }
                }
            },
            FaultAction::Down(Target::Pop(p)) => {
                self.pops[p].up = false;
                self.q.schedule(now + t.failover.pop_detect_ns, Ev::Withdraw { pop: p });
            }
            FaultAction::Up(Target::Pop(p)) => {
                if !self.pops[p].up {
                    self.pops[p].up = true;
                    self.pops[p].announced = true;
                    self.set_pop_state_at_clbs(p, true);
                    self.q.schedule(now + t.failover.route_converge_ns, Ev::Reconverge);
                }
            }
            FaultAction::Down(Target::Region(r)) => {
                for (i, c) in self.clbs.iter_mut().enumerate().filter(|(_, c)| c.region == r) {
                    c.up = false;
                    if let Some(plane) = self.control.as_mut() {
                        plane.watcher_down(i);
                    }
                }
            }
            FaultAction::Up(Target::Region(r)) => {
                let nodes: Vec<usize> = (0..self.clbs.len()).filter(|&c| self.clbs[c].region == r).collect();
                for c in nodes {
                    if !self.clbs[c].up {
                        self.restart_clb(c, now);
                    }
                }
            }
            FaultAction::Down(Target::Clb { region, index }) => {
                let c = self.clb_base[region] + usize::from(index);
                self.clbs[c].up = false;
                if let Some(plane) = self.control.as_mut() {
                    plane.watcher_down(c);
                }
                self.q.schedule(now + t.failover.pop_detect_ns, Ev::ClbDetected { clb: c, up: false });
            }
            FaultAction::Up(Target::Clb { region, index }) => {
                let c = self.clb_base[region] + usize::from(index);
                if !self.clbs[c].up {
                    self.restart_clb(c, now);
                    self.q.schedule(now, Ev::ClbDetected { clb: c, up: true });
                }
            }
            FaultAction::Unbind(Target::Backend { region, addr })
            | FaultAction::Bind(Target::Backend { region, addr }) => {
                let unbind = matches!(fault.action, FaultAction::Unbind(_));
                self.unbound.retain(|&a| a != addr);
                if unbind {
                    self.unbound.push(addr);
                }
                for c in self.clbs.iter_mut().filter(|c| c.region == region) {
                    if unbind { c.core.unbind(addr) } else { c.core.bind(addr) }
                }
            }
            FaultAction::Unbind(_) | FaultAction::Bind(_) => {}
            FaultAction::Migrate(group) => {
                for client in self.clients.iter_mut().filter(|c| c.group == group) {
                    for slot in 0..client.tcp_flows.len() {
                        // A new source port: QUIC carries on, TCP connections die with it.
                        client.tcp_flows[slot].generation = client.tcp_flows[slot].generation.wrapping_add(1);
                        if let (Some(stack), Some(h)) = (client.tcp.as_mut(), client.tcp_flows[slot].handle) {
                            stack.socket(h).abort();
                        }
                    }
                }
            }
            FaultAction::Down(Target::Backend { addr, .. }) => {
                if let Some(&h) = self.host_by_ip.get(&addr.ip()) {
                    self.hosts[h].down_ports.push(addr.port());
                }
            }
            FaultAction::Up(Target::Backend { addr, .. }) => {
                if let Some(&h) = self.host_by_ip.get(&addr.ip()) {
                    self.hosts[h].down_ports.retain(|&p| p != addr.port());
                }
            }
            FaultAction::Link(lo) => {
                for dir in 0..2 {
                    let i = self.link_bb(lo.pop, lo.region, dir);
                    let base = self.backbone[i].model().impairment;
                    self.backbone[i].set_override(Impairment {
                        delay_ns: lo.delay_ns.unwrap_or(base.delay_ns),
                        jitter_mean_ns: lo.jitter_ns.unwrap_or(base.jitter_mean_ns),
                        loss: lo.loss.unwrap_or(base.loss),
                    });
                }
                self.q.schedule(now + lo.for_ns, Ev::LinkRestore { pop: lo.pop, region: lo.region });
            }
        }
    }

    fn collect_control_violations(&mut self) {
        let found = self.control.as_mut().map(|c| c.take_violations()).unwrap_or_default();
        for v in found {
            self.violation(v);
        }
    }

    fn schedule_control(&mut self, events: Vec<(u64, crate::control::ControlEv)>) {
        for (at, ev) in events {
            self.q.schedule(at, Ev::Control(ev));
        }
    }

    fn control_event(&mut self, ev: crate::control::ControlEv) {
        use crate::control::ControlEv;
        let now = self.q.now_ns();
        let Some(plane) = self.control.as_mut() else { return };
        let events = match ev {
            ControlEv::Tick => plane.tick(now),
            ControlEv::Message { to, bytes } => plane.deliver(now, to, &bytes),
            ControlEv::Watch { watcher, update } => {
                for wc in plane.watch_arrived(watcher, update) {
                    self.apply_route_change(wc.watcher, &wc.table, &wc.change);
                }
                Vec::new()
            }
        };
        self.schedule_control(events);
        self.collect_control_violations();
    }

    /// A CLB node applies a committed change from its watch stream.
    fn apply_route_change(&mut self, c: usize, table: &anyedge_control::RouteTable, change: &anyedge_control::Change) {
        let (r, index) = (self.clbs[c].region, self.clbs[c].index);
        let addresses =
            anyedge_topology::nodes::ClbAddresses { address: clb_addr(r, index), address_v6: Some(clb_addr_v6(r, index)) };
        let identity = anyedge_topology::nodes::Identity { tls: self.tls_server.clone(), quic: self.quic_server.clone() };
        let site = anyedge_topology::route_table::ClbSite { t: self.t, region: r, index, addresses, identity: &identity };
        anyedge_topology::route_table::apply_to_clb(&mut self.clbs[c].core, &site, table, change);
    }

    /// The control plane's report section (when the file has `control:`).
    pub fn control_report(&self) -> Option<crate::control::ControlReport> {
        let names: Vec<String> =
            self.clbs.iter().map(|n| format!("clb/{}/{}", self.t.regions[n.region].name, n.index)).collect();
        self.control.as_ref().map(|c| c.report(&names))
    }

    /// A restarted node comes back empty: no connection table, fresh health state.
    fn restart_clb(&mut self, c: usize, now: u64) {
        let node = &mut self.clbs[c];
        node.flows_before += node.core.flows_created();
        node.peak_before = node.peak_before.max(node.core.conn_table().peak());
        node.evictions_before += node.core.conn_table().evictions();
        if let Some(fw) = node.core.firewall() {
            for (gi, counters) in fw.counters() {
                for (ri, c) in counters.iter().enumerate() {
                    self.retired_sg[gi][ri].matched += c.matched;
                    self.retired_sg[gi][ri].denied += c.denied;
                }
            }
        }
        self.clbs[c].core = Clb::new(self.clbs[c].config.clone(), now);
        for p in (0..self.pops.len()).filter(|&p| !self.pops[p].announced) {
            self.clbs[c].core.set_pop_up(p as u16, false);
        }
        for &addr in &self.unbound {
            self.clbs[c].core.unbind(addr);
        }
        for &(addr, weight) in &self.weights_set {
            self.clbs[c].core.set_weight(addr, weight);
        }
        // With a control plane it catches up from its watch stream instead.
        if let Some(plane) = self.control.as_mut() {
            plane.watcher_restarted(c);
        }
        self.clbs[c].up = true;
        self.clbs[c].timer_at = None;
        self.arm_clb_timer(c);
    }

    /// Anycast flows a fault touches: those entering the POP, crossing the link, homed in
    /// the region, on the CLB node, or served by the backend it names.
    fn affected_flows(&self, action: &FaultAction) -> Vec<(usize, usize)> {
        let t = self.t;
        let mut out = Vec::new();
        for (ci, c) in self.clients.iter().enumerate() {
            let g = &self.groups[c.group];
            for (k, &class) in t.clients[c.group].traffic.iter().enumerate() {
                let vip = t.traffic[class].vip;
                let home = t.vips[vip].home;
                let slot = k * 2;
                let hit = match *action {
                    FaultAction::Down(Target::Pop(p)) => g.route[vip] == Some(p),
                    FaultAction::Up(Target::Pop(p)) => {
                        g.order[vip].iter().copied().find(|&q| q == p || self.pops[q].announced) == Some(p)
                            && g.route[vip] != Some(p)
                    }
                    FaultAction::Down(Target::Region(r)) | FaultAction::Up(Target::Region(r)) => home == r,
                    FaultAction::Down(Target::Backend { addr, .. })
                    | FaultAction::Up(Target::Backend { addr, .. })
                    | FaultAction::Unbind(Target::Backend { addr, .. })
                    | FaultAction::Bind(Target::Backend { addr, .. }) => c.flows[slot].last_backend == Some(addr),
                    FaultAction::Down(Target::Clb { region, index })
                    | FaultAction::Up(Target::Clb { region, index }) => {
                        home == region
                            && g.route[vip]
                                .is_some_and(|p| self.pops[p].core.node_of(&self.slot_key(ci, slot)) == Some(index))
                    }
                    FaultAction::Unbind(_) | FaultAction::Bind(_) => false,
                    FaultAction::SetWeight { addr, .. } => c.flows[slot].last_backend == Some(addr),
                    FaultAction::Down(Target::Control(_))
                    | FaultAction::Up(Target::Control(_))
                    | FaultAction::Partition(_)
                    | FaultAction::Heal => false,
                    FaultAction::Migrate(group) => c.group == group,
                    FaultAction::Link(lo) => g.route[vip] == Some(lo.pop) && home == lo.region,
                };
                if hit {
                    out.push((ci, slot));
                }
            }
        }
        out
    }

    /// Per fault, each recovered flow's time from the fault to its first reply.
    pub fn recoveries_ns(&self) -> Vec<Vec<u64>> {
        self.trackers.iter().map(|tr| tr.first_reply_ns.iter().flatten().map(|&at| at - tr.at_ns).collect()).collect()
    }

    pub fn report(&self) -> Report {
        let t = self.t;
        let pops = t
            .pops
            .iter()
            .enumerate()
            .map(|(p, site)| PopReport {
                name: site.name.clone(),
                location: site.location,
                flows: self.pops[p].core.flows_seen(),
            })
            .collect();
        let clients = t.clients.iter().enumerate().map(|(g, group)| self.client_report(g, group)).collect();
        let backends = self
            .backends
            .iter()
            .map(|b| BackendReport {
                region: t.regions[b.region].name.clone(),
                group: b.group.clone(),
                address: b.addr.to_string(),
                weight: b.weight,
                flows: b.flows.len() as u64,
                client_addrs_seen: b.addrs_seen.iter().map(|a| a.to_string()).collect(),
                health: b
                    .health
                    .iter()
                    .map(|&(at, ok)| HealthReport {
                        at_s: ms3(at as f64 / 1e9),
                        state: if ok { "healthy" } else { "unhealthy" },
                    })
                    .collect(),
            })
            .collect();
        let faults = self.trackers.iter().map(fault_report).collect();
        let security_groups = self.security_group_report();
        let clb_nodes = self
            .clbs
            .iter()
            .map(|n| {
                let table = n.core.conn_table();
                ClbNodeReport {
                    region: t.regions[n.region].name.clone(),
                    index: n.index,
                    flows: n.flows_before + n.core.flows_created(),
                    conn_table: ConnTableReport {
                        capacity: table.capacity(),
                        peak: n.peak_before.max(table.peak()),
                        evictions: n.evictions_before + table.evictions(),
                    },
                }
            })
            .collect();
        Report {
            name: t.name.clone(),
            seed: t.seed,
            duration_s: t.duration_ns as f64 / 1e9,
            pops,
            clients,
            backends,
            clb_nodes,
            security_groups,
            faults,
            control: self.control_report(),
            drops: self.drop_report(),
        }
    }

    /// Every core's refused packets, by node and reason.
    fn drop_report(&self) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
        let t = self.t;
        let pops = self.pops.iter().enumerate().map(|(p, n)| (format!("pop/{}", t.pops[p].name), &n.drops));
        let clbs = self.clbs.iter().map(|n| (format!("clb/{}/{}", t.regions[n.region].name, n.index), &n.drops));
        pops.chain(clbs).filter(|(_, d)| !d.is_empty()).map(|(name, d)| (name, d.clone())).collect()
    }

    /// Rule counters summed over every host a group is bound to.
    fn security_group_report(&self) -> Vec<SecurityGroupReport> {
        let mut totals = self.retired_sg.clone();
        let firewalls = self
            .clbs
            .iter()
            .filter_map(|c| c.core.firewall())
            .chain(self.hosts.iter().filter_map(|h| h.firewall.as_ref()));
        for fw in firewalls {
            for (gi, counters) in fw.counters() {
                for (ri, c) in counters.iter().enumerate() {
                    totals[gi][ri].matched += c.matched;
                    totals[gi][ri].denied += c.denied;
                }
            }
        }
        self.t
            .security_groups
            .iter()
            .zip(totals)
            .map(|(d, counts)| SecurityGroupReport {
                name: d.group.name.clone(),
                rules: d
                    .group
                    .rules
                    .iter()
                    .zip(counts)
                    .map(|(r, c)| RuleReport {
                        source: r.source.to_string(),
                        port: r.ports.to_string(),
                        action: r.action.name(),
                        matched: c.matched,
                        denied: c.denied,
                    })
                    .collect(),
            })
            .collect()
    }

    fn client_report(&self, g: usize, group: &anyedge_topology::ClientGroup) -> ClientReport {
        let t = self.t;
        let first_vip = group.traffic.first().map(|&k| t.traffic[k].vip);
        let pop = first_vip.and_then(|v| self.groups[g].order[v].first()).map(|&p| t.pops[p].name.clone());
        let members: Vec<&Client> = self.clients.iter().filter(|c| c.group == g).collect();
        let traffic = group
            .traffic
            .iter()
            .enumerate()
            .map(|(k, &class)| {
                let path = |p: usize| {
                    let flows = members.iter().map(|c| &c.flows[k * 2 + p]);
                    path_report(flows, &self.hist[g][k][p])
                };
                TrafficReport {
                    name: t.traffic[class].name.clone(),
                    protocol: match t.traffic[class].kind {
                        TrafficKind::Udp { .. } => "udp".into(),
                        TrafficKind::Tcp { .. } => "tcp".into(),
                        TrafficKind::SynFlood { .. } => "syn-flood".into(),
                        TrafficKind::Quic { .. } => "quic".into(),
                    },
                    anycast: path(0),
                    direct: path(1),
                }
            })
            .collect();
        ClientReport { name: group.name.clone(), location: group.location, count: group.count, pop, traffic }
    }
}

/// The protocol of the TCP listener a traffic class reaches.
fn class_listener(t: &Topology, class: &anyedge_topology::TrafficClass) -> Option<ListenerProtocol> {
    let tcp = class.transport() == Transport::Tcp;
    t.vips[class.vip]
        .listeners
        .iter()
        .find(|l| l.port == class.port && (l.protocol.transport() == Transport::Tcp) == tcp)
        .map(|l| l.protocol)
}

fn flow_id(client: usize, slot: usize) -> u64 {
    ((client as u64) << 8) | slot as u64
}

/// The flow hash a CCN header carries (every encapsulated packet the cores emit has one).
fn ccn_flow(bytes: &[u8]) -> u64 {
    anyedge_proto::CcnPacket::new_checked(bytes).map_or(0, |p| u64::from(p.flow_hash()))
}

#[derive(Debug, Clone, Copy)]
enum LinkKind {
    InetPop(usize),
    InetDirect(usize),
    Backbone(usize),
}

/// What a TCP traffic class sends: the plain request protocol, or HTTP (to a layer-7
/// listener), over TLS for HTTPS.
#[derive(Clone)]
struct TcpApp {
    request: u32,
    response: u32,
    http: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl TcpApp {
    fn request_bytes(&self, remote: (IpAddr, u16)) -> Vec<u8> {
        if self.http {
            app::http_request(remote, self.request, self.response)
        } else {
            app::tcp_request(self.request, self.response)
        }
    }

    /// Response length when it is known before the head is read (the plain protocol).
    fn fixed_response(&self) -> Option<u64> {
        (!self.http).then(|| u64::from(self.response.max(app::ID_LEN as u32)))
    }
}

/// Drives one TCP flow of a client: (re)connect, write the request in progress, read its
/// response; completed requests go to `completions` as (slot, issue time, backend).
fn service_tcp_flow(
    stack: &mut TcpStack,
    tf: &mut TcpFlow,
    slot: usize,
    addr: IpAddr,
    remote: (IpAddr, u16),
    app: &TcpApp,
    completions: &mut Vec<(usize, u64, Option<SocketAddr>)>,
) {
    let state = tf.handle.map(|h| stack.socket(h).state());
    let broken =
        matches!(state, None | Some(tcp::State::Closed) | Some(tcp::State::TimeWait) | Some(tcp::State::CloseWait));
    if broken {
        if tf.pending.is_empty() {
            return;
        }
        if let Some(h) = tf.handle.take() {
            stack.socket(h).abort();
            stack.sockets.remove(h);
            tf.generation = tf.generation.wrapping_add(1);
        }
        let h = stack.new_socket();
        let local = port_of(slot, tf.generation);
        let (iface, sockets) = (&mut stack.iface, &mut stack.sockets);
        let socket = sockets.get_mut::<tcp::Socket>(h);
        socket.set_nagle_enabled(false);
        if socket.connect(iface.context(), remote, (addr, local)).is_err() {
            sockets.remove(h);
            return;
        }
        tf.handle = Some(h);
        tf.tls = app.tls.as_ref().and_then(|cfg| {
            let name = rustls::pki_types::ServerName::IpAddress(remote.0.into());
            rustls::ClientConnection::new(cfg.clone(), name).ok()
        });
        tf.wire.clear();
        tf.reset_exchange();
    }
    let Some(h) = tf.handle else { return };
    if tf.expected.is_none() {
        tf.expected = app.fixed_response();
        tf.body_at = tf.expected.map(|_| 0);
    }
    let req = app.request_bytes(remote);
    let s = stack.socket(h);
    // Request out: straight onto the socket, or through TLS once its handshake is done.
    if !tf.pending.is_empty() && tf.sent_bytes < req.len() {
        match tf.tls.as_mut() {
            Some(tls) if !tls.is_handshaking() => {
                let _ = std::io::Write::write_all(&mut tls.writer(), &req[tf.sent_bytes..]);
                tf.sent_bytes = req.len();
            }
            Some(_) => {}
            None => {
                tf.wire.extend_from_slice(&req[tf.sent_bytes..]);
                tf.sent_bytes = req.len();
            }
        }
    }
    if let Some(tls) = tf.tls.as_mut() {
        anyedge_region::l7::tls_write(tls, &mut Vec::new(), &mut tf.wire);
    }
    if s.can_send() && !tf.wire.is_empty() {
        let n = s.send_slice(&tf.wire).unwrap_or(0);
        tf.wire.drain(..n);
    }
    // Response in.
    while s.can_recv() {
        let mut buf = [0u8; 8192];
        let n = s.recv_slice(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut plain = Vec::new();
        let data = match tf.tls.as_mut() {
            Some(tls) => {
                if anyedge_region::l7::tls_read(tls, &buf[..n], &mut plain).is_err() {
                    s.abort();
                    return;
                }
                &plain[..]
            }
            None => &buf[..n],
        };
        absorb_response(tf, data, app, slot, completions);
    }
    // A finished handshake may have freed the request, or TLS may owe the peer records.
    if let Some(tls) = tf.tls.as_mut() {
        if !tf.pending.is_empty() && tf.sent_bytes < req.len() && !tls.is_handshaking() {
            let _ = std::io::Write::write_all(&mut tls.writer(), &req[tf.sent_bytes..]);
            tf.sent_bytes = req.len();
        }
        anyedge_region::l7::tls_write(tls, &mut Vec::new(), &mut tf.wire);
        if s.can_send() && !tf.wire.is_empty() {
            let n = s.send_slice(&tf.wire).unwrap_or(0);
            tf.wire.drain(..n);
        }
    }
}

/// Takes response bytes of the request in progress; completes it when all have come.
fn absorb_response(
    tf: &mut TcpFlow,
    mut data: &[u8],
    app: &TcpApp,
    slot: usize,
    completions: &mut Vec<(usize, u64, Option<SocketAddr>)>,
) {
    while !data.is_empty() && !tf.pending.is_empty() {
        // Until an HTTP head is read the response's length is unknown: one request is
        // outstanding at a time, so whatever arrives belongs to it.
        let need = tf.expected.map_or(usize::MAX, |e| e.saturating_sub(tf.resp_got) as usize);
        let n = data.len().min(need);
        let keep = tf.body_at.map_or(app::HTTP_HEAD_MAX, |b| b + app::ID_LEN);
        let want = keep.saturating_sub(tf.head.len()).min(n);
        tf.head.extend_from_slice(&data[..want]);
        tf.resp_got += n as u64;
        data = &data[n..];
        if tf.expected.is_none()
            && let Some(end) = app::http_head_end(&tf.head)
        {
            let text = String::from_utf8_lossy(&tf.head[..end]);
            let length: u64 = app::http_header(&text, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            tf.body_at = Some(end);
            tf.expected = Some(end as u64 + length);
        }
        if tf.expected.is_some_and(|e| tf.resp_got >= e) {
            let body = tf.body_at.and_then(|b| tf.head.get(b..)).unwrap_or(&[]);
            let backend = app::parse_identity(body).map(|(b, _)| b);
            if let Some(issued) = tf.pending.pop_front() {
                completions.push((slot, issued, backend));
            }
            tf.reset_exchange();
            tf.expected = app.fixed_response();
            tf.body_at = tf.expected.map(|_| 0);
        }
    }
}

impl TcpFlow {
    /// Forgets the request in progress (answered, or lost with its connection).
    fn reset_exchange(&mut self) {
        self.sent_bytes = 0;
        self.resp_got = 0;
        self.head.clear();
        self.body_at = None;
        self.expected = None;
    }
}

/// Reads request bytes and queues responses on one server-side connection.
/// HTTP clients it answered (as the server sees them) go to `http_clients`.
fn serve_connection(s: &mut tcp::Socket<'static>, serve: &mut Serve, ip: IpAddr, http_clients: &mut Vec<IpAddr>) {
    while s.can_recv() {
        let mut chunk = [0u8; 4096];
        let n = s.recv_slice(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut data = &chunk[..n];
        while !data.is_empty() {
            let http = app::looks_like_http(&serve.header) || serve.header.is_empty() && app::looks_like_http(data);
            if serve.remaining_req == 0 && http {
                // HTTP: read the head, answer it, skip any body.
                let before = serve.header.len();
                let take = (app::HTTP_HEAD_MAX - before).min(data.len());
                serve.header.extend_from_slice(&data[..take]);
                let Some(end) = app::http_head_end(&serve.header) else {
                    if serve.header.len() >= app::HTTP_HEAD_MAX {
                        s.abort();
                        return;
                    }
                    data = &data[take..];
                    continue;
                };
                data = &data[end - before..];
                let remote = s.remote_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port));
                let local = s.local_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port));
                let (Some(remote), Some(local)) = (remote, local) else { return };
                let answer = app::http_answer(&serve.header[..end], local, remote);
                http_clients.push(answer.client);
                serve.header.clear();
                serve.pending_resp.drain(..serve.resp_off);
                serve.resp_off = 0;
                serve.pending_resp.extend_from_slice(&answer.response);
                serve.remaining_req = answer.body_len;
                serve.close_after |= answer.close;
                continue;
            }
            if serve.remaining_req == 0 {
                let take = (app::TCP_REQUEST_HEADER - serve.header.len()).min(data.len());
                serve.header.extend_from_slice(&data[..take]);
                data = &data[take..];
                if serve.header.len() < app::TCP_REQUEST_HEADER {
                    break;
                }
                let Some((req_len, resp_len)) = app::parse_tcp_request_header(&serve.header) else {
                    s.abort();
                    return;
                };
                serve.header.clear();
                let remote = s.remote_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port));
                let local = s.local_endpoint().map(|e| SocketAddr::new(e.addr.into(), e.port));
                let mut resp = vec![0u8; (resp_len as usize).clamp(app::ID_LEN, 16 << 20)];
                if let (Some(remote), Some(local)) = (remote, local) {
                    debug_assert_eq!(local.ip(), ip);
                    app::stamp_identity(&mut resp, 0, local, remote);
                }
                serve.pending_resp.drain(..serve.resp_off);
                serve.resp_off = 0;
                serve.pending_resp.extend_from_slice(&resp);
                serve.remaining_req = u64::from(req_len) - app::TCP_REQUEST_HEADER as u64;
            } else {
                let take = (serve.remaining_req as usize).min(data.len());
                serve.remaining_req -= take as u64;
                data = &data[take..];
            }
        }
    }
    while serve.resp_off < serve.pending_resp.len() && s.can_send() {
        let n = s.send_slice(&serve.pending_resp[serve.resp_off..]).unwrap_or(0);
        if n == 0 {
            break;
        }
        serve.resp_off += n;
    }
    if serve.resp_off == serve.pending_resp.len() {
        serve.pending_resp.clear();
        serve.resp_off = 0;
        if serve.close_after {
            s.close();
        }
    }
}

fn path_report<'a>(flows: impl Iterator<Item = &'a Flow>, hist: &Histogram<u64>) -> PathReport {
    let (mut sent, mut received, mut jsum, mut jn) = (0u64, 0u64, 0u128, 0u64);
    for f in flows {
        sent += f.sent;
        received += f.received;
        jsum += f.jitter_sum_ns;
        jn += f.jitter_n;
    }
    let loss_pct = if sent == 0 { 0.0 } else { ms3(100.0 * sent.saturating_sub(received) as f64 / sent as f64) };
    let ms = |us: u64| ms3(us as f64 / 1000.0);
    let rtt_ms = (!hist.is_empty()).then(|| Percentiles {
        p50: ms(hist.value_at_quantile(0.5)),
        p90: ms(hist.value_at_quantile(0.9)),
        p99: ms(hist.value_at_quantile(0.99)),
        p999: ms(hist.value_at_quantile(0.999)),
        max: ms(hist.max()),
    });
    let jitter_ms = (jn > 0).then(|| ms3(jsum as f64 / jn as f64 / 1e6));
    PathReport { sent, received, loss_pct, rtt_ms, jitter_ms }
}

fn fault_report(tr: &FaultTracker) -> FaultReport {
    let mut rec: Vec<u64> = tr.first_reply_ns.iter().flatten().map(|&at| at - tr.at_ns).collect();
    rec.sort_unstable();
    let recovery_ms = (!rec.is_empty()).then(|| Recovery {
        p50: ms3(rec[(rec.len() - 1) / 2] as f64 / 1e6),
        max: ms3(*rec.last().unwrap_or(&0) as f64 / 1e6),
    });
    FaultReport {
        at_s: ms3(tr.at_ns as f64 / 1e9),
        what: tr.what.clone(),
        flows_affected: tr.affected.len() as u64,
        flows_recovered: rec.len() as u64,
        recovery_ms,
        flows_backend_changed: tr.changed.iter().filter(|&&c| c).count() as u64,
    }
}
