//! The shipped cores in the world: packets into POP and CLB cores, their outputs onto
//! links, their timers, drops counted, routing convergence and CLB restarts.

use crate::world::Arrival;
use crate::world::Ev;
use crate::world::INTRA_REGION_NS;
use crate::world::World;
use crate::world::ids::ClbId;
use crate::world::ids::PopId;
use crate::world::ids::Table;
use crate::world::links::LinkKind;
use crate::world::liveness::Notice;
use crate::world::liveness::ProberAt;
use crate::world::pki::Pki;
use crate::world::pki::backbone_auth;
use crate::world::wire::Wire;
use anyedge_ccn::EventQueue;
use anyedge_ccn::{Dest, NodeId};
use anyedge_pop::Pop;
use anyedge_proto::inner;
use anyedge_region::Clb;
use anyedge_region::ClbConfig;
use anyedge_topology::Topology;
use anyedge_topology::nodes::PeerLists;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub(super) struct PopNode {
    pub(super) core: Pop,
    pub(super) up: bool,
    pub(super) announced: bool,
    /// Packets the core refused, by reason.
    pub(super) drops: BTreeMap<&'static str, u64>,
    /// [vip]: whether the internet routes the VIP to this POP, as its last BGP update to
    /// arrive said.
    pub(super) heard: Vec<bool>,
}

impl PopNode {
    /// What POP `p` announces (per VIP), sent to the internet: it arrives after BGP's
    /// convergence time.
    pub(super) fn announce(&self, p: PopId, wire: &mut Wire<'_>) {
        let t = wire.t();
        let routes = (0..t.vips.len()).map(|v| self.routes(t, v)).collect();
        let at = wire.now() + t.failover.route_converge_ns;
        wire.broadcast_routes(at, p, routes);
    }

    /// Whether the internet routes VIP `vip` to this POP: its transit has not withdrawn
    /// it (BFD) and its core announces the VIP (a live CLB node of the home region).
    pub(super) fn routes(&self, t: &Topology, vip: usize) -> bool {
        self.announced && self.core.announces(IpAddr::V4(t.vips[vip].ipv4))
    }
}

pub(super) struct ClbNode {
    pub(super) region: usize,
    pub(super) index: usize,
    pub(super) core: Clb,
    pub(super) config: ClbConfig,
    pub(super) up: bool,
    /// What backbone probing believes: the direct path's region edge uses it.
    pub(super) known_up: bool,
    /// Counters of cores this node ran before a restart.
    pub(super) flows_before: u64,
    pub(super) peak_before: usize,
    pub(super) evictions_before: u64,
    /// Sync traffic of cores this node ran before a restart.
    pub(super) sync_before: anyedge_region::sync::SyncStats,
    pub(super) timer_at: Option<u64>,
    /// Packets the core refused, by reason (across restarts).
    pub(super) drops: BTreeMap<&'static str, u64>,
}

/// Every region's CLB nodes (a region's nodes are consecutive), built whole from the
/// topology with their timers armed.
pub(super) struct Regions {
    pub(super) clbs: Table<ClbId, ClbNode>,
}

impl Regions {
    /// Timers armed for the regions `mine` says.
    pub(super) fn build(
        t: &Topology,
        pki: &Pki,
        q: &mut EventQueue<Ev>,
        mine: &dyn Fn(usize) -> bool,
        peers: &mut PeerLists,
    ) -> Regions {
        let mut regions = Regions { clbs: Table::new() };
        let facts = anyedge_topology::nodes::ClbFacts::of(t);
        for (r, region) in t.regions.iter().enumerate() {
            for index in 0..usize::from(region.clb_nodes) {
                let config = clb_config(t, pki, &facts, r, index, peers);
                regions.clbs.push(ClbNode::new(r, index, config, mine(r)));
            }
        }
        for c in regions.clbs.ids() {
            if mine(regions.clbs[c].region)
                && let Some(at) = regions.arm_timer(c)
            {
                q.schedule(at, Ev::ClbTimer { clb: c });
            }
        }
        regions
    }

    /// CLB nodes by their addresses (v4 and v6).
    pub(super) fn clb_by_addr(&self) -> FxHashMap<IpAddr, ClbId> {
        let mut by_addr = FxHashMap::default();
        for (id, node) in self.clbs.enumerate() {
            by_addr.insert(node.config.address, id);
            if let Some(v6) = node.config.address_v6 {
                by_addr.insert(v6, id);
            }
        }
        by_addr
    }

    /// When CLB node `c`'s next timer is to be scheduled: when its core wants one sooner
    /// than the one already armed (then it is the one armed).
    pub(super) fn arm_timer(&mut self, c: ClbId) -> Option<u64> {
        let node = &mut self.clbs[c];
        let at = node.core.poll_timeout()?;
        if node.timer_at.is_none_or(|t| at < t) {
            node.timer_at = Some(at);
            return Some(at);
        }
        None
    }
}

impl ClbNode {
    /// The node's name, `clb/REGION/N`.
    pub(super) fn name(&self, t: &Topology) -> String {
        anyedge_topology::clb_name(&t.regions[self.region].name, self.index)
    }

    /// Node `index` of region `r`, up, its core fresh. Another partition's node (`live`
    /// false) gets a core without listeners: it never runs here, and its Maglev tables
    /// would only take memory.
    fn new(region: usize, index: usize, config: ClbConfig, live: bool) -> ClbNode {
        let core = if live {
            Clb::new(config.clone(), 0)
        } else {
            let idle = ClbConfig {
                listeners: Vec::new(),
                security_groups: Vec::new(),
                backend_hosts: Vec::new(),
                ..config.clone()
            };
            Clb::new(idle, 0)
        };
        ClbNode {
            region,
            index,
            core,
            config,
            up: true,
            known_up: true,
            timer_at: None,
            flows_before: 0,
            peak_before: 0,
            evictions_before: 0,
            sync_before: Default::default(),
            drops: BTreeMap::new(),
        }
    }
}

/// Every POP's core, from the topology.
pub(super) fn build_pops(t: &Topology, tags: anyedge_ccn::Tags, lists: &mut PeerLists) -> Table<PopId, PopNode> {
    let mut pops = Table::new();
    // Every POP's peers are every CLB node: one list for all (`lists`).
    // POPs routing the same VIPs (every POP, mostly) share one route table.
    let mut tables = anyedge_topology::nodes::RouteTables::default();
    for p in 0..t.pops.len() {
        let mut config = anyedge_topology::nodes::pop_config_with(t, p, &mut tables);
        config.auth = backbone_auth(t, anyedge_topology::nodes::pop_node(p), tags, lists);
        let mut pop =
            PopNode { core: Pop::new(config, 0), up: true, announced: true, drops: BTreeMap::new(), heard: Vec::new() };
        pop.heard = (0..t.vips.len()).map(|v| pop.routes(t, v)).collect();
        pops.push(pop);
    }
    pops
}

/// CLB node `index` of region `r`'s configuration, as `lab up` renders it.
pub(super) fn clb_config(
    t: &Topology,
    pki: &Pki,
    facts: &anyedge_topology::nodes::ClbFacts,
    r: usize,
    index: usize,
    peers: &mut PeerLists,
) -> ClbConfig {
    let addresses = anyedge_topology::nodes::ClbAddresses::of(r, index);
    let identity = anyedge_topology::nodes::Identity { default: None, vips: pki.vip_identities.clone() };
    let mut config = anyedge_topology::nodes::clb_config_with(t, facts, r, index, addresses, &identity);
    config.auth = backbone_auth(t, anyedge_topology::nodes::clb_node(r, index), pki.tags, peers);
    config
}

impl<'t> World<'t> {
    pub(super) fn arrive(&mut self, to: Arrival, packet: Vec<u8>) {
        let now = self.wire.now();
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
            Arrival::ClbFromPop(c) | Arrival::ClbDirect(c) | Arrival::ClbFromBackend(c) | Arrival::ClbFromPeer(c) => {
                let node = &mut self.regions.clbs[c];
                if !node.up {
                    return;
                }
                let result = match to {
                    Arrival::ClbFromPop(_) => node.core.handle_from_pop(now, &packet),
                    Arrival::ClbDirect(_) => node.core.handle_direct(now, packet),
                    Arrival::ClbFromPeer(_) => node.core.handle_from_peer(now, &packet),
                    _ => node.core.handle_from_backend(now, packet),
                };
                if let Err(reason) = result {
                    *node.drops.entry(reason.name()).or_default() += 1;
                }
                self.drain_clb(c);
            }
            Arrival::RegionEdge { region, hash, quic } => {
                let r = region as usize;
                let base = self.wire.places().clb(r, 0);
                let nodes = self.t.regions[r].clb_nodes;
                let by_cid = || {
                    let payload = inner::transport_payload(&packet);
                    anyedge_region::quic::cid_node(payload, nodes, self.pki.cid_ciphers.get(r))
                };
                let node = quic.then(by_cid).flatten().unwrap_or_else(|| {
                    anyedge_pop::rendezvous_node(hash, nodes, |n| self.regions.clbs[base.node(n)].known_up)
                });
                let to = Arrival::ClbDirect(base.node(node));
                self.capture(&to, &packet);
                self.arrive(to, packet);
            }
            Arrival::Backend { host, via_clb } => self.servers.backend_receive(host, via_clb, packet, &mut self.wire),
            Arrival::EgressFromClb(e) => self.servers.egress_from_clb(e, packet, &mut self.wire),
            Arrival::EgressFromInternet(e) => self.servers.egress_from_internet(e, packet, &mut self.wire),
            Arrival::InternetHost(host) => self.servers.host_receive(host, None, packet, &mut self.wire),
            Arrival::Client(c) => self.client_receive(c, packet),
            Arrival::ProbeRequest { to, from } => self.probe_cx().1.request(to, from, packet),
            Arrival::ProbeAnswer { at } => {
                let (probers, mut cx) = self.probe_cx();
                probers.answer(at, packet, &mut cx);
            }
        }
    }

    pub(super) fn drain_pop(&mut self, p: PopId) {
        while let Some(out) = self.pops[p].core.poll_output() {
            match out.dest {
                Dest::Node(NodeId::Clb { region, node }) => {
                    let region = usize::from(region);
                    let clb = self.wire.places().clb(region, node);
                    let link = LinkKind::Backbone(self.wire.link_bb(p, region, 0));
                    self.wire.send_over(link, out.flow(), Arrival::ClbFromPop(clb), out.bytes);
                }
                Dest::Client(_) => {
                    let Some((client, flow)) = self.wire.places().reply_target(&out.bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetPop(self.wire.link_pop(self.wire.group_of(client), p, 1));
                    self.wire.send_over(link, flow, Arrival::Client(client), out.bytes);
                }
                Dest::Node(_) | Dest::Backend(_) => {}
            }
        }
    }

    pub(super) fn drain_clb(&mut self, c: ClbId) {
        let region = self.regions.clbs[c].region;
        let table = self.regions.clbs[c].core.conn_table();
        if table.len() > table.capacity() {
            let msg = format!("CLB {c}: connection table holds {} > capacity {}", table.len(), table.capacity());
            self.wire.violation(msg);
        }
        while let Some(out) = self.regions.clbs[c].core.poll_output() {
            let flow = out.flow();
            match out.dest {
                Dest::Node(NodeId::Pop(pop_id)) => {
                    let p = PopId(usize::from(pop_id));
                    if p.0 >= self.pops.len() {
                        continue;
                    }
                    let link = LinkKind::Backbone(self.wire.link_bb(p, region, 1));
                    self.wire.send_over(link, flow, Arrival::PopFromClb(p), out.bytes);
                }
                Dest::Backend(backend) => {
                    if let Some(&e) = self.servers.egress_by_ip.get(&backend.ip()) {
                        // An internet backend: through the region's egress node.
                        self.wire.hop(self.wire.now() + INTRA_REGION_NS, Arrival::EgressFromClb(e), out.bytes);
                    } else if let Some(&host) = self.servers.host_by_ip.get(&backend.ip()) {
                        self.servers.send_clb_backend(c, host, 0, flow, out.bytes, &mut self.wire);
                    }
                }
                Dest::Client(_) => {
                    let Some((client, flow)) = self.wire.places().reply_target(&out.bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetDirect(self.wire.link_direct(self.wire.group_of(client), region, 1));
                    self.wire.send_over(link, flow, Arrival::Client(client), out.bytes);
                }
                Dest::Node(NodeId::Clb { node, .. }) => {
                    // Over the region's own network, like CLB ↔ backend.
                    if usize::from(node) < usize::from(self.t.regions[region].clb_nodes) {
                        let peer = self.wire.places().clb(region, node);
                        self.wire.hop(self.wire.now() + INTRA_REGION_NS, Arrival::ClbFromPeer(peer), out.bytes);
                    }
                }
                Dest::Node(NodeId::Backend { .. }) => {}
            }
        }
        while let Some(ev) = self.regions.clbs[c].core.poll_event() {
            if let anyedge_region::Event::HealthChanged { backend, healthy } = ev {
                let who = self.regions.clbs[c].name(self.t);
                self.wire.noticed(Notice::Backend { addr: backend, healthy }, who);
                if self.regions.clbs[c].index == 0 {
                    let now = self.wire.now();
                    let since = self
                        .servers
                        .backends
                        .iter()
                        .filter(|r| r.addr == backend && r.region == region)
                        .find_map(|r| r.health.last().map(|h| h.0))
                        .unwrap_or(0);
                    let reason = if healthy { None } else { self.servers.unhealthy_reason(backend, since, &self.wire) };
                    for rec in self.servers.backends.iter_mut().filter(|r| r.addr == backend && r.region == region) {
                        rec.health.push((now, healthy, reason.clone()));
                    }
                }
            }
        }
        self.arm_clb_timer(c);
    }

    pub(super) fn arm_clb_timer(&mut self, c: ClbId) {
        if let Some(at) = self.regions.arm_timer(c) {
            self.wire.schedule(at, Ev::ClbTimer { clb: c });
        }
    }

    /// A POP's BGP update arrived: every group's best route is the first POP of its
    /// order the internet has heard announce the VIP.
    pub(super) fn route_update(&mut self, pop: PopId, routes: Vec<bool>, part: u32) {
        self.pops[pop].heard = routes;
        let t = self.t;
        let now = self.wire.now();
        let wire = &mut self.wire;
        for gi in 0..self.edge.groups.len() {
            if !wire.moves_group(gi, part) {
                continue;
            }
            let g = &mut self.edge.groups[gi];
            for gv in &mut g.vips {
                let v = gv.vip;
                let route = gv.order.find(t, |p| self.pops[p].heard[v]);
                if route != gv.route {
                    // For the report's map: where the group's anycast traffic lands now.
                    wire.record().catchment_moved(now, gi, v, route);
                }
                gv.route = route;
            }
        }
    }

    /// A restarted node comes back empty: no connection table, fresh health state, every
    /// POP taken to be up until its own probes say otherwise.
    pub(super) fn restart_clb(&mut self, c: ClbId, now: u64) {
        let node = &mut self.regions.clbs[c];
        node.flows_before += node.core.flows_created();
        node.peak_before = node.peak_before.max(node.core.conn_table().peak());
        node.evictions_before += node.core.conn_table().evictions();
        node.sync_before = node.sync_before.plus(&node.core.sync_stats());
        let own = node.core.firewall().into_iter().flat_map(|fw| fw.counters());
        for (gi, counters) in own.chain(node.core.backend_guard().counters()) {
            for (ri, c) in counters.iter().enumerate() {
                self.faults.retired_sg[gi][ri].matched += c.matched;
                self.faults.retired_sg[gi][ri].denied += c.denied;
            }
        }
        self.regions.clbs[c].core = Clb::new(self.regions.clbs[c].config.clone(), now);
        for &addr in &self.faults.unbound {
            self.regions.clbs[c].core.unbind(addr);
        }
        for &(addr, weight) in &self.faults.weights_set {
            self.regions.clbs[c].core.set_weight(addr, weight);
        }
        // With a control plane it catches up from its watch stream instead.
        if let Some(plane) = self.control.as_mut() {
            plane.watcher_restarted(c.0);
        }
        self.regions.clbs[c].up = true;
        self.regions.clbs[c].timer_at = None;
        // Its first outputs ask the region's other nodes for their tables.
        self.drain_clb(c);
        self.probers.restart(ProberAt::Clb(c), &mut self.wire);
    }
}
