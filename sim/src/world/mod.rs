//! The simulated world: client hosts, POPs, CLB nodes and backends joined by links, all
//! driven by one event queue. POPs and CLB nodes are the shipped sans-IO cores; this
//! module is their driver: it moves real packets between them over modelled links.
//!
//! `World` keeps the dispatch: each event goes to the part that owns what it changes,
//! with a narrow context of what that part may touch. The parts, each built whole by its
//! own builder, keep their rows private and have the methods that change them: `Wire`
//! (the queue, the links, the record and the partition seam: what every part sends
//! through, `wire`), `Edge` (client groups and their clients, `edge/`), the POPs and
//! `Regions` (the cores, `forwarding`), `Servers` (backend hosts and egress nodes,
//! `servers/`), `Probers` (`liveness`), `FaultState` (`fault_state`), `Pki` and the
//! classes' facts. What the world itself does has files of its own: `build`, `faults`
//! (a fault told to each part), `report`, `merge`, `partition`, `capture`. No module
//! imports by glob, and no two import each other in a circle.

use anyedge_topology::Topology;

use crate::world::classes::ClassInfo;
use crate::world::edge::Edge;
use crate::world::edge::EdgeCx;
use crate::world::fault_state::FaultState;
use crate::world::forwarding::PopNode;
use crate::world::forwarding::Regions;
use crate::world::ids::PopId;
use crate::world::ids::Table;
use crate::world::liveness::ProbeCx;
use crate::world::liveness::Probers;
use crate::world::pki::Pki;
use crate::world::servers::Servers;

use events::{Arrival, Ev};
pub use events::{DRAIN_NS, INTRA_REGION_NS, SLOTS_MAX};

mod build;
mod capture;
mod classes;
mod client;
mod edge;
mod events;
mod fault_state;
mod faults;
mod flows;
mod forwarding;
mod ids;
mod links;
mod liveness;
mod merge;
pub mod partition;
pub(crate) mod partitioning;
mod pki;
mod quic_flow;
pub(crate) mod rank_merge;
mod rank_wire;
mod report;
mod samples;
mod servers;
mod tcp_app;
mod wire;

pub struct World<'t> {
    t: &'t Topology,
    end_ns: u64,
    /// The queue, the links, the record and the seam to other partitions: what every
    /// part sends through.
    wire: wire::Wire<'t>,
    /// Client groups and their clients.
    edge: Edge,
    /// Per traffic class: what answers it and how it talks.
    classes: Vec<ClassInfo>,
    /// Certificates and keys clients and the region edges hold.
    pki: Pki,
    pops: Table<PopId, PopNode>,
    /// Every region's CLB nodes.
    regions: Regions,
    /// Backend hosts, their records and the egress nodes in front of internet backends.
    servers: Servers,
    /// What faults changed that a restarted node must not forget.
    faults: FaultState,
    /// The liveness probers of every node and edge.
    probers: Probers,
    /// The Raft control plane (`control:`); its watchers are the CLB nodes, then the
    /// POPs, in order.
    control: Option<crate::control::ControlPlane>,
    /// `--pcap DIR`: every packet that reaches a node, per node.
    capture: Option<capture::Capture>,
}

/// Why a topology cannot be simulated (beyond what validation checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl<'t> World<'t> {
    /// Runs to the end; `progress` is called with the fraction done now and then.
    pub fn run(&mut self, mut progress: impl FnMut(f64)) {
        let step = (self.end_ns / 100).max(1);
        let mut next_progress = step;
        while let Some(ev) = self.wire.pop_until(self.end_ns) {
            if self.wire.now() >= next_progress {
                progress(self.wire.now() as f64 / self.end_ns as f64);
                next_progress = self.wire.now() + step;
            }
            self.handle(ev);
        }
        self.finish();
        progress(1.0);
    }

    /// Runs every event due no later than `until_ns` (a partition's window).
    fn run_until(&mut self, until_ns: u64) {
        while let Some(ev) = self.wire.pop_until(until_ns) {
            self.handle(ev);
        }
    }

    fn finish(&mut self) {
        if let Some(c) = self.control.as_mut() {
            c.finish(self.end_ns);
        }
        self.collect_control_violations();
    }

    pub fn violations(&self) -> &[String] {
        self.wire.recorded().violations()
    }

    /// QUIC handshakes CLB nodes accepted (a migrating client must not add one).
    pub fn quic_handshakes(&self) -> u64 {
        self.regions.clbs().iter().map(|c| c.core().quic_counts().handshakes).sum()
    }

    /// HTTP/3 requests CLB nodes forwarded to backends.
    pub fn quic_h3_requests(&self) -> u64 {
        self.regions.clbs().iter().map(|c| c.core().quic_counts().h3_requests).sum()
    }

    pub fn events(&self) -> u64 {
        self.wire.processed() + self.wire.recorded().merged_events()
    }

    pub fn packets(&self) -> u64 {
        self.wire.recorded().packets()
    }

    /// Of the packets, liveness probes and their answers.
    pub fn probe_packets(&self) -> u64 {
        self.wire.recorded().probe_packets()
    }

    /// [group][k]: when each client group's traffic class last got an anycast reply.
    pub fn last_reply_ns(&self) -> Vec<Vec<Option<u64>>> {
        self.wire.recorded().last_reply_ns()
    }

    pub fn sim_s(&self) -> f64 {
        self.end_ns as f64 / 1e9
    }

    fn handle(&mut self, ev: Ev) {
        if !self.wire.runs(&ev) {
            return;
        }
        match ev {
            Ev::UdpSend { client, k } => self.with_edge(|edge, cx| edge.udp_send(client, k, cx)),
            Ev::TcpIssue { client, k } => self.with_edge(|edge, cx| edge.tcp_issue(client, k, cx)),
            Ev::FloodSend { client, k } => self.with_edge(|edge, cx| edge.flood_send(client, k, cx)),
            Ev::QuicIssue { client, k } => self.with_edge(|edge, cx| edge.quic_issue(client, k, cx)),
            Ev::ClientQuicPoll { client, slot } => self.with_edge(|edge, cx| edge.client_quic_poll(client, slot, cx)),
            Ev::ClientTcpPoll { client } => self.with_edge(|edge, cx| edge.client_tcp_poll(client, cx)),
            Ev::BackendTcpPoll { host, remote } => self.servers.backend_tcp_poll(host, remote, &mut self.wire),
            Ev::Arrive { to, packet } => {
                self.capture(&to, &packet);
                self.arrive(to, packet)
            }
            Ev::ClbTimer { clb } => self.regions.timer(clb, &mut self.wire, &mut self.servers),
            Ev::Fault { index } => self.apply_fault(index),
            Ev::Control(ev) => self.control_event(ev),
            Ev::ProbeTick { at, epoch } => {
                let (probers, mut cx) = self.probe_cx();
                probers.tick(at, epoch, &mut cx);
            }
            Ev::RouteUpdate { pop, routes, part } => self.route_update(pop, routes, part),
            Ev::GroupHears { group, vip, route } => self.edge.group_hears(group, vip, route, &mut self.wire),
            Ev::SessionUp { pop, epoch } => {
                if self.pops[pop].session_up(epoch) {
                    self.pops[pop].announce(pop, &mut self.wire);
                }
            }
            Ev::LinkRestore { pop, region } => {
                for dir in 0..2 {
                    let i = self.wire.link_bb(pop, region, dir);
                    self.wire.backbone(i).clear_override();
                }
            }
        }
    }

    /// A packet reaches what `to` names: each part takes its own.
    fn arrive(&mut self, to: Arrival, packet: Vec<u8>) {
        match to {
            Arrival::PopFromClient(p) | Arrival::PopFromClb(p) => self.pops[p].receive(p, to, &packet, &mut self.wire),
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) | Arrival::ClbFromPeer(c) => {
                self.regions.receive(c, to, packet, &mut self.wire, &mut self.servers)
            }
            Arrival::RegionEdge { region, hash, quic } => {
                let cid = self.pki.cid_ciphers.get(region as usize);
                let node = self.regions.at_edge(region as usize, (hash, quic), &packet, cid, self.wire.places());
                let to = Arrival::ClbDirect(node);
                self.capture(&to, &packet);
                self.arrive(to, packet);
            }
            Arrival::Backend { host, via_clb } => self.servers.backend_receive(host, via_clb, packet, &mut self.wire),
            Arrival::EgressFromClb(e) => self.servers.egress_from_clb(e, packet, &mut self.wire),
            Arrival::EgressFromInternet(e) => self.servers.egress_from_internet(e, packet, &mut self.wire),
            Arrival::InternetHost(host) => self.servers.host_receive(host, None, packet, &mut self.wire),
            Arrival::Client(c) => self.with_edge(|edge, cx| edge.client_receive(c, packet, cx)),
            Arrival::ProbeRequest { to, from } => self.probe_cx().1.request(to, from, packet),
            Arrival::ProbeAnswer { at } => {
                let (probers, mut cx) = self.probe_cx();
                probers.answer(at, packet, &mut cx);
            }
        }
    }

    /// A POP's BGP update arrived: the internet has heard it, and client groups move.
    fn route_update(&mut self, pop: PopId, routes: Vec<bool>, part: u32) {
        self.pops[pop].hear(routes);
        self.edge.hear(&self.pops, pop, part, &mut self.wire);
    }

    /// The client side, and what it may touch.
    fn with_edge(&mut self, f: impl FnOnce(&mut Edge, &mut EdgeCx<'_, 't>)) {
        let mut cx =
            EdgeCx { wire: &mut self.wire, classes: &self.classes, pki: &self.pki, servers: &mut self.servers };
        f(&mut self.edge, &mut cx);
    }

    /// The probers, and what they may touch.
    fn probe_cx(&mut self) -> (&mut Probers, ProbeCx<'_, 't>) {
        let cx = ProbeCx { wire: &mut self.wire, pops: &mut self.pops, regions: &mut self.regions };
        (&mut self.probers, cx)
    }
}
