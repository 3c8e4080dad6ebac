//! The wire every part of the world sends through, and the narrow context a part gets:
//! the clock and event queue, the modelled links (`Network`), the record of what the run
//! saw (`Recorder`) and, when the world runs partitioned, the seam to the other
//! partitions (`Scope`). It knows where each node and client group sits (`Places`), so it
//! can tell which partition an event belongs to, but nothing of what a node or a client
//! does: that stays with the part that owns it.

use anyedge_ccn::EventQueue;
use anyedge_ccn::Link;
use anyedge_ccn::LinkOutcome;
use anyedge_topology::FaultAction;
use anyedge_topology::Target;
use anyedge_topology::Topology;

use crate::world::events::Arrival;
use crate::world::events::Ev;
use crate::world::flows::flow_id;
use crate::world::flows::slot_of;
use crate::world::ids::{AddrRuns, ClbId, ClientId, HostId, Id, PopId};
use crate::world::ids::{Notice, Probed, ProberAt};
use crate::world::links::LinkKind;
use crate::world::links::Network;
use crate::world::partitioning::Scope;
use crate::world::partitioning::{Crossed, Crossing};
use crate::world::samples::Recorder;
use rustc_hash::FxHashMap;
use std::net::IpAddr;

/// Where each CLB node, client and egress node sits and which addresses they have, fixed
/// when the world is built: the directory every part looks things up in (the partition a
/// packet is for, the CLB node or client an address is), and nothing a part changes.
pub(super) struct Places {
    /// [clb]: its region.
    clb_region: Vec<usize>,
    /// [region]: its first CLB node (a region's nodes are consecutive).
    clb_base: Vec<ClbId>,
    /// [region]: how many CLB nodes it has.
    clb_count: Vec<u16>,
    /// CLB nodes by their addresses (v4 and v6).
    clb_by_addr: FxHashMap<IpAddr, ClbId>,
    /// Clients by their addresses.
    client_by_addr: AddrRuns,
    /// [group]: its first client (groups' clients are consecutive).
    group_start: Vec<usize>,
    /// [egress node]: its region.
    egress_region: Vec<usize>,
}

impl Places {
    pub(super) fn new(
        t: &Topology,
        (clb_region, clb_by_addr): (Vec<usize>, FxHashMap<IpAddr, ClbId>),
        (group_start, client_by_addr): (Vec<usize>, AddrRuns),
        egress_region: Vec<usize>,
    ) -> Places {
        debug_assert!(group_start.is_sorted(), "groups' clients are consecutive");
        debug_assert!(clb_region.is_sorted(), "a region's CLB nodes are consecutive");
        let clb_base: Vec<ClbId> = t
            .regions
            .iter()
            .scan(0, |next, r| {
                let first = *next;
                *next += usize::from(r.clb_nodes);
                Some(ClbId(first))
            })
            .collect();
        debug_assert!(clb_base.iter().enumerate().all(|(r, c)| clb_region.get(c.0).is_none_or(|&cr| cr >= r)));
        let clb_count = t.regions.iter().map(|r| r.clb_nodes).collect();
        Places { clb_region, clb_base, clb_count, clb_by_addr, client_by_addr, group_start, egress_region }
    }

    /// Node `index` of region `region`.
    pub(super) fn clb(&self, region: usize, index: u16) -> ClbId {
        self.clb_base[region].node(index)
    }

    /// How many CLB nodes region `region` has.
    pub(super) fn clb_count(&self, region: usize) -> u16 {
        self.clb_count[region]
    }

    /// CLB node `c`'s region.
    pub(super) fn clb_region(&self, c: ClbId) -> usize {
        self.clb_region[c.index()]
    }

    /// CLB node `c`'s backbone id (what seals its packets).
    pub(super) fn clb_node_id(&self, c: ClbId) -> anyedge_ccn::NodeId {
        let region = self.clb_region[c.index()];
        anyedge_topology::nodes::clb_node(region, c.index() - self.clb_base[region].index())
    }

    /// The CLB node with address `ip`.
    pub(super) fn clb_at(&self, ip: IpAddr) -> Option<ClbId> {
        self.clb_by_addr.get(&ip).copied()
    }

    /// The client with address `ip`.
    pub(super) fn client_at(&self, ip: IpAddr) -> Option<ClientId> {
        self.client_by_addr.get(ip)
    }

    /// The client a packet from the VIP is for, and its flow id.
    pub(super) fn reply_target(&self, packet: &[u8]) -> Option<(ClientId, u64)> {
        let key = anyedge_proto::inner::parse(packet).ok()?.key;
        let client = self.client_by_addr.get(key.dst)?;
        Some((client, flow_id(client, slot_of(key.dst_port).unwrap_or(0))))
    }
}

pub(super) struct Wire<'t> {
    t: &'t Topology,
    q: EventQueue<Ev>,
    /// Every modelled link: internet legs, backbone, backend sites.
    net: Network,
    /// What the report is made of.
    record: Recorder,
    /// When the world runs partitioned: the partitions this copy runs, and its outbox
    /// to the others (`partition`). `None`: one world, one queue.
    scope: Option<Box<Scope>>,
    places: Places,
}

impl<'t> Wire<'t> {
    /// `host_ips` are the backend hosts' addresses by `HostId`, for their partitions.
    pub(super) fn new(
        t: &'t Topology,
        q: EventQueue<Ev>,
        mut scope: Option<Box<Scope>>,
        places: Places,
        host_ips: impl Iterator<Item = std::net::IpAddr>,
    ) -> Wire<'t> {
        if let Some(s) = scope.as_mut() {
            s.host = host_ips.map(|ip| s.parts.host.get(&ip).copied().unwrap_or(0)).collect();
        }
        Wire { t, q, net: Network::new(), record: Recorder::new(t), scope, places }
    }

    pub(super) fn t(&self) -> &'t Topology {
        self.t
    }

    pub(super) fn now(&self) -> u64 {
        self.q.now_ns()
    }

    pub(super) fn schedule(&mut self, at: u64, ev: Ev) {
        self.q.schedule(at, ev);
    }

    /// The next event due no later than `until_ns`.
    pub(super) fn pop_until(&mut self, until_ns: u64) -> Option<Ev> {
        self.q.pop_until(until_ns)
    }

    /// When the next event is due, if any.
    pub(super) fn next_at(&self) -> Option<u64> {
        self.q.next_at()
    }

    /// Events this world ran.
    pub(super) fn processed(&self) -> u64 {
        self.q.processed()
    }

    pub(super) fn record(&mut self) -> &mut Recorder {
        &mut self.record
    }

    pub(super) fn recorded(&self) -> &Recorder {
        &self.record
    }

    /// A broken invariant, recorded with the time it was seen.
    pub(super) fn violation(&mut self, what: String) {
        self.record.violation(self.q.now_ns(), what);
    }

    /// `who` noticed what a fault did: the first node to notice sets the fault's
    /// `detected_ms`, each node's first notice goes in its `noticed_ms`.
    pub(super) fn noticed(&mut self, notice: Notice, who: String) {
        let now = self.q.now_ns();
        let (t, places) = (self.t, &self.places);
        for tr in self.record.trackers_mut().iter_mut() {
            let hit = match (t.faults[tr.fault].action, notice) {
                (FaultAction::Down(Target::Pop(p)), Notice::Pop { pop, up: false })
                | (FaultAction::Up(Target::Pop(p)), Notice::Pop { pop, up: true }) => pop.0 == p,
                (FaultAction::Down(Target::Clb { region, index }), Notice::Clb { clb, up: false })
                | (FaultAction::Up(Target::Clb { region, index }), Notice::Clb { clb, up: true }) => {
                    places.clb(region, index) == clb
                }
                (FaultAction::Down(Target::Region(r)), Notice::Clb { clb, up: false })
                | (FaultAction::Up(Target::Region(r)), Notice::Clb { clb, up: true }) => {
                    places.clb_region[clb.index()] == r
                }
                (FaultAction::Down(Target::Backend { addr, .. }), Notice::Backend { addr: a, healthy: false })
                | (FaultAction::Up(Target::Backend { addr, .. }), Notice::Backend { addr: a, healthy: true }) => {
                    addr == a
                }
                _ => false,
            };
            if hit {
                tr.detected_ns.get_or_insert(now);
                tr.noticed.entry(who.clone()).or_insert(now);
            }
        }
    }

    /// Backbone link `index` (`link_bb` numbering), for a fault to change.
    pub(super) fn backbone(&mut self, index: usize) -> &mut Link {
        self.net.backbone(self.t, index)
    }

    /// Where nodes and clients sit, and their addresses.
    pub(super) fn places(&self) -> &Places {
        &self.places
    }

    pub(super) fn scope(&self) -> Option<&Scope> {
        self.scope.as_deref()
    }

    pub(super) fn scope_mut(&mut self) -> Option<&mut Scope> {
        self.scope.as_deref_mut()
    }

    pub(super) fn link_pop(&self, g: usize, p: PopId, dir: usize) -> usize {
        (g * self.t.pops.len() + p.0) * 2 + dir
    }

    pub(super) fn link_direct(&self, g: usize, r: usize, dir: usize) -> usize {
        (g * self.t.regions.len() + r) * 2 + dir
    }

    pub(super) fn link_bb(&self, p: PopId, r: usize, dir: usize) -> usize {
        (p.0 * self.t.regions.len() + r) * 2 + dir
    }

    /// A packet over one of the modelled links ([`Network::transmit`]), delivered if the
    /// link does.
    pub(super) fn send_over(&mut self, link: LinkKind, flow: u64, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        let from = self.sender_part(link);
        let header = if packet.first().is_some_and(|b| b >> 4 == 6) { 48 } else { 20 };
        let outcome = self.net.transmit(self.t, link, now, (packet.len(), header), flow);
        if let LinkOutcome::Deliver(at) = outcome {
            self.record.delivered();
            self.deliver(at, from, to, packet);
        }
    }

    /// A packet over a hop inside one partition that no link models (a region's own
    /// network, a transit next to its POP), arriving at `at`.
    pub(super) fn hop(&mut self, at: u64, to: Arrival, packet: Vec<u8>) {
        self.record.delivered();
        self.q.schedule(at, Ev::Arrive { to, packet });
    }

    /// The partition of the end that sends over `link`.
    fn sender_part(&self, link: LinkKind) -> u32 {
        let (np, nr) = (self.t.pops.len(), self.t.regions.len());
        match link {
            LinkKind::InetPop(i) if i % 2 == 0 => self.group_part(i / 2 / np),
            LinkKind::InetPop(i) => self.pop_part(PopId(i / 2 % np)),
            LinkKind::InetDirect(i) if i % 2 == 0 => self.group_part(i / 2 / nr),
            LinkKind::InetDirect(i) => self.region_part(i / 2 % nr),
            LinkKind::Backbone(i) if i % 2 == 0 => self.pop_part(PopId(i / 2 / nr)),
            LinkKind::Backbone(i) => self.region_part(i / 2 % nr),
        }
    }

    /// A packet partition `from` sent reaches `to` at `at`: into this world's queue when
    /// the receiver is the sender's partition, else into the outbox until the window
    /// ends. A crossing due inside the window would mean the lookahead is wrong: an
    /// invariant violation.
    pub(super) fn deliver(&mut self, at: u64, from: u32, to: Arrival, packet: Vec<u8>) {
        if self.scope.is_none() {
            self.q.schedule(at, Ev::Arrive { to, packet });
            return;
        }
        let dest = self.arrival_part(&to);
        if dest == from {
            self.q.schedule(at, Ev::Arrive { to, packet });
        } else {
            self.cross(at, from, dest, Crossed::Arrive { to, packet });
        }
    }

    fn cross(&mut self, at: u64, from: u32, to: u32, ev: Crossed) {
        let Some(s) = self.scope.as_mut() else { return };
        let early = at < s.window_end;
        let (window_end, lookahead) = (s.window_end, s.parts.lookahead_ns);
        s.sent[from as usize] += 1;
        let seq = s.sent[from as usize];
        s.outbox.push(Crossing { at, from, seq, to, ev });
        if early {
            self.violation(format!(
                "partition {from} sent partition {to} an event due at {at} ns, inside the window ending {window_end} ns (lookahead {lookahead} ns)"
            ));
        }
    }

    /// POP `pop`'s BGP update, due at `at` wherever client groups are: one copy per
    /// partition, each moving that partition's groups.
    pub(super) fn broadcast_routes(&mut self, at: u64, pop: PopId, routes: Vec<bool>) {
        let Some(count) = self.scope.as_ref().map(|s| s.parts.count) else {
            self.q.schedule(at, Ev::RouteUpdate { pop, routes, part: 0 });
            return;
        };
        let from = self.pop_part(pop);
        for part in 0..count as u32 {
            self.cross(at, from, part, Crossed::Routes { pop, routes: routes.clone(), part });
        }
    }

    /// Whether a BGP update for partition `part` moves group `g` (every group, in a world
    /// of one).
    pub(super) fn moves_group(&self, g: usize, part: u32) -> bool {
        self.scope.as_ref().is_none_or(|s| s.parts.group[g] == part)
    }

    /// The flows of this world's clients fault `index` touches, found at the window's
    /// end before it (`None` in a world of one: found when it happens).
    pub(super) fn take_tracks(&mut self, index: usize) -> Option<Vec<(ClientId, usize)>> {
        self.scope.as_mut().and_then(|s| s.tracks.remove(&index))
    }

    /// Whether this world runs `ev`: counts what every world runs once, and flags an event of
    /// another partition's as a violation.
    pub(super) fn runs(&mut self, ev: &Ev) -> bool {
        let Some(s) = self.scope.as_ref() else { return true };
        match self.owner(ev) {
            None => {
                if let Some(s) = self.scope.as_mut() {
                    s.world_wide += 1;
                }
                true
            }
            Some(part) if !s.mine[part as usize] => {
                self.violation(format!("partition {part}'s event ran in a world that does not own it"));
                false
            }
            Some(part) => {
                if let Some(s) = self.scope.as_mut() {
                    s.events[part as usize] += 1;
                }
                true
            }
        }
    }

    /// Whether this world runs partition `part` (always, unpartitioned).
    pub(super) fn owns(&self, part: u32) -> bool {
        self.scope.as_ref().is_none_or(|s| s.mine[part as usize])
    }

    /// A client's group, from the groups' first clients (without touching the client's
    /// row: a reply's way back needs only its group).
    pub(super) fn group_of(&self, client: ClientId) -> usize {
        self.places.group_start.partition_point(|&first| first <= client.0).saturating_sub(1)
    }

    pub(super) fn group_part(&self, g: usize) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.parts.group[g])
    }

    pub(super) fn pop_part(&self, p: PopId) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.parts.pop[p.index()])
    }

    pub(super) fn clb_part(&self, c: ClbId) -> u32 {
        self.region_part(self.places.clb_region[c.index()])
    }

    pub(super) fn region_part(&self, r: usize) -> u32 {
        if self.scope.is_some() { r as u32 } else { 0 }
    }

    pub(super) fn host_part(&self, h: HostId) -> u32 {
        self.scope.as_ref().map_or(0, |s| s.host.get(h.index()).copied().unwrap_or(0))
    }

    pub(super) fn client_part(&self, c: ClientId) -> u32 {
        self.group_part(self.group_of(c))
    }

    pub(super) fn egress_part(&self, e: usize) -> u32 {
        self.region_part(self.places.egress_region[e])
    }

    pub(super) fn prober_part(&self, at: ProberAt) -> u32 {
        match at {
            ProberAt::Pop(p) | ProberAt::Transit(p) => self.pop_part(p),
            ProberAt::Clb(c) => self.clb_part(c),
            ProberAt::Region(r) => self.region_part(r),
        }
    }

    /// The partition whose entity a packet reaches.
    pub(super) fn arrival_part(&self, to: &Arrival) -> u32 {
        match *to {
            Arrival::PopFromClient(p) | Arrival::PopFromClb(p) => self.pop_part(p),
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) | Arrival::ClbFromPeer(c) => {
                self.clb_part(c)
            }
            Arrival::RegionEdge { region, .. } => self.region_part(region as usize),
            Arrival::Backend { host, .. } | Arrival::InternetHost(host) => self.host_part(host),
            Arrival::EgressFromClb(e) | Arrival::EgressFromInternet(e) => self.egress_part(e),
            Arrival::Client(c) => self.client_part(c),
            Arrival::ProbeRequest { to: Probed::Pop(p), .. } => self.pop_part(p),
            Arrival::ProbeRequest { to: Probed::Clb(c), .. } => self.clb_part(c),
            Arrival::ProbeAnswer { at } => self.prober_part(at),
        }
    }

    /// The partition an event belongs to; `None` for what every world runs (faults, the
    /// end of a link fault, the control plane's).
    pub(super) fn owner(&self, ev: &Ev) -> Option<u32> {
        Some(match ev {
            Ev::UdpSend { client, .. }
            | Ev::FloodSend { client, .. }
            | Ev::QuicIssue { client, .. }
            | Ev::ClientQuicPoll { client, .. }
            | Ev::TcpIssue { client, .. }
            | Ev::ClientTcpPoll { client } => self.client_part(*client),
            Ev::BackendTcpPoll { host, .. } => self.host_part(*host),
            Ev::Arrive { to, .. } => self.arrival_part(to),
            Ev::ClbTimer { clb } => self.clb_part(*clb),
            Ev::ProbeTick { at, .. } => self.prober_part(*at),
            Ev::RouteUpdate { part, .. } => *part,
            Ev::SessionUp { pop, .. } => self.pop_part(*pop),
            Ev::GroupHears { group, .. } => self.group_part(*group),
            Ev::Fault { .. } | Ev::LinkRestore { .. } | Ev::Control(_) => return None,
        })
    }
}
