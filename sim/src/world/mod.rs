//! The simulated world: client hosts, POPs, CLB nodes and backends joined by links, all
//! driven by one event queue. POPs and CLB nodes are the shipped sans-IO cores; this
//! module is their driver: it moves real packets between them over modelled links.
//!
//! `World` holds the tables; each concern has a module of its own: `build` (from a
//! topology), `clients` and `tcp_app` and `quic_client` (traffic), `forwarding` (the
//! cores), `links`, `backends`, `faults`, `report`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyedge_ccn::geo::fiber_delay_ns;
use anyedge_ccn::{ComponentRng, EventQueue, Impairment, Link, LinkOutcome};
use anyedge_pop::{Pop, rendezvous_node};
use anyedge_proto::{FlowKey, Transport, inner};
use anyedge_region::clb::PROBE_PORTS;
use anyedge_region::security::{Firewall, RuleCounters, Verdict};
use anyedge_region::tcp_stack::{TcpStack, buffer_for};
use anyedge_region::{Clb, ClbConfig};
use anyedge_topology::{Cidr, FaultAction, ListenerProtocol, Site, Target, Topology, TrafficKind};
use hdrhistogram::Histogram;
use rustc_hash::{FxHashMap, FxHashSet};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::app;
use crate::report::*;

mod backends;
mod build;
mod capture;
mod clients;
mod egress;
mod faults;
mod forwarding;
mod ids;
mod links;
mod liveness;
mod quic_client;
mod report;
mod samples;
mod tcp_app;

use backends::*;
use clients::*;
use faults::*;
use forwarding::*;
use ids::*;
use links::*;
use liveness::*;
use quic_client::*;
use tcp_app::*;

/// Replies still arriving after the last request are collected for this long.
pub const DRAIN_NS: u64 = 3_000_000_000;

/// One-way delay between a CLB node and a backend in its region.
pub const INTRA_REGION_NS: u64 = 50_000;

/// Outer IPv4 + UDP header the backbone adds around the CCN header.
const OUTER_HEADER: usize = 28;

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
    PopFromClient(PopId),
    PopFromClb(PopId),
    ClbFromPop(ClbId),
    ClbDirect(ClbId),
    ClbFromBackend(ClbId),
    /// Connection-table sync from another CLB node of the region.
    ClbFromPeer(ClbId),
    Backend {
        host: HostId,
        via_clb: ClbId,
    },
    /// A CLB node's sealed packet reaches an egress node (NAT gateway, router).
    EgressFromClb(usize),
    /// An internet host's packet reaches its egress node.
    EgressFromInternet(usize),
    /// An egress node's packet reaches a host on the internet.
    InternetHost(HostId),
    Client(ClientId),
    /// A liveness probe reaches the node it probes, or its answer the prober.
    ProbeRequest {
        to: Probed,
        from: ProberAt,
    },
    ProbeAnswer {
        at: ProberAt,
    },
}

enum Ev {
    UdpSend {
        client: ClientId,
        k: usize,
    },
    FloodSend {
        client: ClientId,
        k: usize,
    },
    QuicIssue {
        client: ClientId,
        k: usize,
    },
    ClientQuicPoll {
        client: ClientId,
        slot: usize,
    },
    TcpIssue {
        client: ClientId,
        k: usize,
    },
    ClientTcpPoll {
        client: ClientId,
    },
    BackendTcpPoll {
        host: HostId,
        remote: (IpAddr, u16),
    },
    Arrive {
        to: Arrival,
        packet: Vec<u8>,
    },
    ClbTimer {
        clb: ClbId,
    },
    Fault {
        index: usize,
    },
    /// A liveness prober's round is due.
    ProbeTick {
        at: ProberAt,
        epoch: u32,
    },
    Reconverge,
    LinkRestore {
        pop: PopId,
        region: usize,
    },
    Control(crate::control::ControlEv),
}

pub struct World<'t> {
    t: &'t Topology,
    q: EventQueue<Ev>,
    end_ns: u64,
    clients: Table<ClientId, Client>,
    groups: Vec<Group>,
    pops: Table<PopId, PopNode>,
    clbs: Table<ClbId, ClbNode>,
    /// Per region: its first CLB node (a region's nodes are consecutive).
    clb_base: Vec<ClbId>,
    clb_by_addr: FxHashMap<IpAddr, ClbId>,
    hosts: Table<HostId, BackendHost>,
    host_by_ip: FxHashMap<IpAddr, HostId>,
    inet_pop: Vec<Link>,
    inet_direct: Vec<Link>,
    /// Each region's QUIC connection-ID cipher: the region's edge routes QUIC by the node
    /// an ID names, as a QUIC-LB load balancer holding the key does.
    cid_ciphers: Vec<anyedge_ccn::CidCipher>,
    backbone: Vec<Link>,
    /// [group][k][path] round-trip histograms in microseconds.
    hist: Vec<Vec<[Histogram<u64>; 2]>>,
    /// [group][k][path]: every round trip, and requests sent per second.
    samples: Vec<Vec<[samples::Samples; 2]>>,
    trackers: Vec<FaultTracker>,
    backends: Table<BackendId, BackendRecord>,
    /// Backend address → its first record in `backends`.
    backend_index: FxHashMap<SocketAddr, BackendId>,
    packets: u64,
    /// Invariants found broken while running (bugs, not input): reported with the seed.
    violations: Vec<String>,
    /// Backends unbound by faults (a restarted CLB node must not forget them).
    unbound: Vec<SocketAddr>,
    client_by_addr: AddrRuns,
    /// Each group's first client (groups' clients are consecutive).
    group_start: Vec<usize>,
    /// Per traffic class: the backend ports its listener binds (no other may answer it).
    class_backends: Vec<Vec<SocketAddr>>,
    /// [group][k]: when the group's class last got an anycast reply.
    last_reply_ns: Vec<Vec<Option<u64>>>,
    /// Per traffic class: it talks HTTP (its listener is layer 7), over TLS (HTTPS).
    class_http: Vec<bool>,
    class_tls: Vec<bool>,
    /// HTTPS listeners' identity and the clients' trust in it (when any listener is HTTPS).
    vip_identity: Option<anyedge_region::identity::VipIdentity>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    quic_client: Option<quinn_proto::ClientConfig>,
    /// (region, backend host) → [to the backend, back] for backends away from the region.
    site_links: FxHashMap<(usize, HostId), [Link; 2]>,
    /// Security-group counters of CLB cores that were restarted.
    retired_sg: Vec<Vec<RuleCounters>>,
    /// The Raft control plane (`control:`); its watchers are the CLB nodes, then the
    /// POPs, in order.
    control: Option<crate::control::ControlPlane>,
    /// Weights set by faults without a control plane (a restarted CLB node keeps them).
    weights_set: Vec<(SocketAddr, u8)>,
    /// The liveness probers of every node and edge.
    probers: Option<Probers>,
    /// NAT gateways and routers that carry internet backends.
    egress: Vec<egress::EgressNode>,
    /// Internet backend address → its egress node.
    egress_by_ip: FxHashMap<IpAddr, usize>,
    /// (when, group, VIP, its POP now) each time routing moved a group's anycast traffic.
    catchments: Vec<(u64, usize, usize, Option<PopId>)>,
    /// `--pcap DIR`: every packet that reaches a node, per node.
    capture: Option<capture::Capture>,
    /// [request, response]: the largest of any TCP class (backends size sockets by them).
    tcp_messages_max: [u64; 2],
}

/// Why a topology cannot be simulated (beyond what validation checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl<'t> World<'t> {
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
        self.clbs.iter().map(|c| c.core.quic_counts().handshakes).sum()
    }

    pub fn events(&self) -> u64 {
        self.q.processed()
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// [group][k]: when each client group's traffic class last got an anycast reply.
    pub fn last_reply_ns(&self) -> Vec<Vec<Option<u64>>> {
        self.last_reply_ns.clone()
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
            Ev::Arrive { to, packet } => {
                self.capture(&to, &packet);
                self.arrive(to, packet)
            }
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
            Ev::ProbeTick { at, epoch } => self.probe_tick(at, epoch),
            Ev::Reconverge => self.reconverge(),
            Ev::LinkRestore { pop, region } => {
                for dir in 0..2 {
                    let i = self.link_bb(pop, region, dir);
                    self.backbone[i].clear_override();
                }
            }
        }
    }
}
