//! The shipped cores in the world: packets into POP and CLB cores, their outputs onto
//! links, their timers, drops counted, routing convergence and CLB restarts.

use crate::world::events::Arrival;
use crate::world::events::Ev;
use crate::world::events::INTRA_REGION_NS;
use crate::world::fault_state::FaultState;
use crate::world::ids::ClbId;
use crate::world::ids::Notice;
use crate::world::ids::PopId;
use crate::world::ids::Table;
use crate::world::links::LinkKind;
use crate::world::pki::Pki;
use crate::world::pki::backbone_auth;
use crate::world::servers::Servers;
use crate::world::wire::Places;
use crate::world::wire::Wire;
use anyedge_ccn::EventQueue;
use anyedge_ccn::Keyring;
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
use std::net::SocketAddr;

/// What fault tracking asks of POPs (which CLB node a flow is pinned to, which nodes a
/// POP holds up): a world's own cores, or answers from the rank that runs the POP.
pub(super) trait PopView {
    fn node_of(&self, pop: PopId, key: &inner::FlowKey) -> Option<u16>;
    fn clb_up(&self, pop: PopId, region: u16, node: u16) -> bool;
}

/// The cores themselves, as `core(p)` gives each.
pub(super) struct Cores<'a, F: Fn(PopId) -> &'a Pop>(pub(super) F);

impl<'a, F: Fn(PopId) -> &'a Pop> PopView for Cores<'a, F> {
    fn node_of(&self, pop: PopId, key: &inner::FlowKey) -> Option<u16> {
        (self.0)(pop).node_of(key)
    }

    fn clb_up(&self, pop: PopId, region: u16, node: u16) -> bool {
        (self.0)(pop).clb_up(region, node)
    }
}

pub(super) struct PopNode {
    core: Pop,
    up: bool,
    /// Its transit announces it (BFD finds it alive, and its BGP session is back).
    announced: bool,
    /// Counts its transit's findings, so a session that a later finding overtook while it
    /// was being set up announces nothing.
    session_epoch: u32,
    /// Packets the core refused, by reason.
    drops: BTreeMap<&'static str, u64>,
    /// [vip]: whether the internet routes the VIP to this POP, as its last BGP update to
    /// arrive said.
    heard: Vec<bool>,
}

/// A committed change, and the table it was committed to.
pub(super) type RouteChange<'a> = (&'a anyedge_control::RouteTable, &'a anyedge_control::Change);

impl PopNode {
    pub(super) fn core(&self) -> &Pop {
        &self.core
    }

    pub(super) fn is_up(&self) -> bool {
        self.up
    }

    /// Packets the core refused, by reason.
    pub(super) fn drops(&self) -> &BTreeMap<&'static str, u64> {
        &self.drops
    }

    /// Whether the internet routes VIP `vip` here, as the last BGP update to arrive said.
    pub(super) fn heard(&self, vip: usize) -> bool {
        self.heard[vip]
    }

    /// A BGP update from this POP arrived: what it announces, per VIP.
    pub(super) fn hear(&mut self, routes: Vec<bool>) {
        self.heard = routes;
    }

    /// The POP stops: its transit and the CLB nodes find out by probing.
    pub(super) fn stop(&mut self) {
        self.up = false;
    }

    /// The regions the POP forwarded to since it was last asked (its prober's demand).
    pub(super) fn take_demand(&mut self) -> impl Iterator<Item = u16> + use<> {
        self.core.take_demand().into_iter()
    }

    /// Whether the core's announcements changed at this probe round.
    pub(super) fn sample_announcements(&mut self) -> bool {
        !self.core.sample_announcements(false).is_empty()
    }

    /// The POP's keyring and its drop counters.
    pub(super) fn keys(&mut self) -> (&mut Keyring, &mut BTreeMap<&'static str, u64>) {
        (self.core.keyring(), &mut self.drops)
    }

    /// The POP's prober found CLB node `index` of region `region` down or up.
    pub(super) fn clb_found(&mut self, region: u16, index: u16, up: bool) {
        self.core.set_clb_up(region, index, up);
    }

    /// Its transit found it dead: withdrawn at once.
    pub(super) fn transit_found_dead(&mut self) {
        self.session_epoch += 1;
        self.announced = false;
    }

    /// Its transit found it alive: the BGP session set up now (`failover.session_setup`)
    /// announces it if no later finding overtakes it; the epoch [`PopNode::session_up`]
    /// takes.
    pub(super) fn transit_found_alive(&mut self) -> u32 {
        self.session_epoch += 1;
        self.session_epoch
    }

    /// The session set up at `epoch` is established: announced, unless a later finding
    /// overtook it.
    pub(super) fn session_up(&mut self, epoch: u32) -> bool {
        let current = epoch == self.session_epoch;
        if current {
            self.announced = true;
        }
        current
    }

    /// The POP applies a committed change from its watch stream.
    pub(super) fn apply_route_change(&mut self, t: &Topology, change: &anyedge_control::Change) {
        anyedge_topology::route_table::apply_to_pop(&mut self.core, t, change);
    }

    /// A stopped POP comes back believing every CLB node up (`clbs`: region and index),
    /// as its fresh prober does; its announcements start over.
    pub(super) fn restart(&mut self, clbs: impl Iterator<Item = (u16, u16)>) {
        self.up = true;
        self.core.restart_announcements();
        for (region, index) in clbs {
            self.core.set_clb_up(region, index, true);
        }
    }

    /// A packet from a client or a CLB node reaches POP `p`'s core (when the POP is up).
    pub(super) fn receive(&mut self, p: PopId, to: Arrival, packet: &[u8], wire: &mut Wire<'_>) {
        if !self.up {
            return;
        }
        let now = wire.now();
        let result = match to {
            Arrival::PopFromClient(_) => self.core.handle_from_client(now, packet),
            _ => self.core.handle_from_clb(now, packet),
        };
        match result {
            Ok(()) => self.drain(p, wire),
            Err(reason) => *self.drops.entry(reason.name()).or_default() += 1,
        }
    }

    /// What POP `p`'s core sends: to CLB nodes over the backbone, to clients over the
    /// internet.
    pub(super) fn drain(&mut self, p: PopId, wire: &mut Wire<'_>) {
        while let Some(out) = self.core.poll_output() {
            match out.dest {
                Dest::Node(NodeId::Clb { region, node }) => {
                    let region = usize::from(region);
                    let clb = wire.places().clb(region, node);
                    let link = LinkKind::Backbone(wire.link_bb(p, region, 0));
                    wire.send_over(link, out.flow(), Arrival::ClbFromPop(clb), out.bytes);
                }
                Dest::Client(_) => {
                    let Some((client, flow)) = wire.places().reply_target(&out.bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetPop(wire.link_pop(wire.group_of(client), p, 1));
                    wire.send_over(link, flow, Arrival::Client(client), out.bytes);
                }
                Dest::Node(_) | Dest::Backend(_) => {}
            }
        }
    }

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
    /// Sync traffic of cores this node ran before a restart.
    sync_before: anyedge_region::sync::SyncStats,
    timer_at: Option<u64>,
    /// Packets the core refused, by reason (across restarts).
    drops: BTreeMap<&'static str, u64>,
}

/// Every region's CLB nodes (a region's nodes are consecutive), built whole from the
/// topology with their timers armed.
pub(super) struct Regions {
    clbs: Table<ClbId, ClbNode>,
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

    /// Every node, to read.
    pub(super) fn clbs(&self) -> &Table<ClbId, ClbNode> {
        &self.clbs
    }

    /// CLB node `c` stops: it answers nothing and runs no timer until it restarts.
    pub(super) fn stop(&mut self, c: ClbId) {
        self.clbs[c].up = false;
    }

    /// Takes CLB node `c` from another partition's world, which ran it.
    pub(super) fn take_node(&mut self, c: ClbId, other: &mut Regions) {
        std::mem::swap(&mut self.clbs[c], &mut other.clbs[c]);
    }

    /// The POPs CLB node `c` replied through since it was last asked (its prober's
    /// demand).
    pub(super) fn take_demand(&mut self, c: ClbId) -> impl Iterator<Item = u16> + use<> {
        self.clbs[c].core.take_demand().into_iter()
    }

    /// CLB node `c`'s keyring and backbone id, and its drop counters.
    pub(super) fn keys(&mut self, c: ClbId) -> (&mut Keyring, NodeId, &mut BTreeMap<&'static str, u64>) {
        let n = &mut self.clbs[c];
        let id = anyedge_topology::nodes::clb_node(n.region, n.index);
        (n.core.keyring(), id, &mut n.drops)
    }

    /// CLB node `c`'s prober found POP `pop` down or up.
    pub(super) fn pop_found(&mut self, c: ClbId, pop: u16, up: bool) {
        self.clbs[c].core.set_pop_up(pop, up);
    }

    /// The region edge's prober found CLB node `c` down or up (the direct path's ECMP).
    pub(super) fn edge_found(&mut self, c: ClbId, up: bool) {
        self.clbs[c].known_up = up;
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

    /// CLB node `c` restarts: what its core counted is kept, its security groups'
    /// counters retire into `faults`, and a fresh core starts with what faults changed
    /// (unbound backends, weights set without a control plane).
    pub(super) fn restart(&mut self, c: ClbId, now: u64, faults: &mut FaultState) {
        let node = &mut self.clbs[c];
        node.flows_before += node.core.flows_created();
        node.peak_before = node.peak_before.max(node.core.conn_table().peak());
        node.evictions_before += node.core.conn_table().evictions();
        node.sync_before = node.sync_before.plus(&node.core.sync_stats());
        let own = node.core.firewall().into_iter().flat_map(|fw| fw.counters());
        for (gi, counters) in own.chain(node.core.backend_guard().counters()) {
            faults.retire(gi, counters);
        }
        node.core = Clb::new(node.config.clone(), now);
        faults.replay(&mut node.core);
        node.up = true;
        node.timer_at = None;
    }

    /// Region `region`'s nodes.
    pub(super) fn of_region(&self, region: usize) -> impl Iterator<Item = ClbId> + '_ {
        self.clbs.ids().filter(move |&c| self.clbs[c].region == region)
    }

    /// A weight set on every node of region `region` (no control plane to carry it).
    pub(super) fn set_weight(&mut self, region: usize, addr: SocketAddr, weight: u8) {
        for c in self.clbs.iter_mut().filter(|c| c.region == region) {
            c.core.set_weight(addr, weight);
        }
    }

    /// A backend unbound (or bound again) on every node of region `region`.
    pub(super) fn bind(&mut self, region: usize, addr: SocketAddr, bound: bool) {
        for c in self.clbs.iter_mut().filter(|c| c.region == region) {
            if bound { c.core.bind(addr) } else { c.core.unbind(addr) }
        }
    }

    /// CLB node `c` applies a committed change from its watch stream.
    pub(super) fn apply_route_change(&mut self, c: ClbId, t: &Topology, pki: &Pki, (table, change): RouteChange<'_>) {
        let (r, index) = (self.clbs[c].region, self.clbs[c].index);
        let addresses = anyedge_topology::nodes::ClbAddresses::of(r, index);
        let identity = anyedge_topology::nodes::Identity { default: None, vips: pki.vip_identities.clone() };
        let site = anyedge_topology::route_table::ClbSite { t, region: r, index, addresses, identity: &identity };
        anyedge_topology::route_table::apply_to_clb(&mut self.clbs[c].core, &site, table, change);
    }

    /// Arms CLB node `c`'s next timer, when its core wants one sooner than the one
    /// already armed.
    pub(super) fn arm(&mut self, c: ClbId, wire: &mut Wire<'_>) {
        if let Some(at) = self.arm_timer(c) {
            wire.schedule(at, Ev::ClbTimer { clb: c });
        }
    }

    /// CLB node `c`'s timer, when it is the one last armed (a later arming supersedes it).
    pub(super) fn timer(&mut self, c: ClbId, wire: &mut Wire<'_>, servers: &mut Servers) {
        let now = wire.now();
        if self.clbs[c].timer_at == Some(now) {
            self.clbs[c].timer_at = None;
            if self.clbs[c].up {
                self.clbs[c].core.handle_timeout(now);
                self.drain(c, wire, servers);
            }
        }
    }

    /// A packet reaches CLB node `c`'s core (when the node is up): from a POP, from a
    /// client directly, from a backend, or from a peer of its region.
    pub(super) fn receive(
        &mut self,
        c: ClbId,
        to: Arrival,
        packet: Vec<u8>,
        wire: &mut Wire<'_>,
        servers: &mut Servers,
    ) {
        let now = wire.now();
        let node = &mut self.clbs[c];
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
        self.drain(c, wire, servers);
    }

    /// The node of region `region` a client's packet on the direct path goes to, as the
    /// region's edge picks it: the node a QUIC connection ID names, or ECMP on the flow's
    /// hash over the nodes its probes believe up.
    pub(super) fn at_edge(
        &self,
        region: usize,
        (hash, quic): (u32, bool),
        packet: &[u8],
        cid: Option<&anyedge_ccn::CidCipher>,
        places: &Places,
    ) -> ClbId {
        let (base, nodes) = (places.clb(region, 0), places.clb_count(region));
        let by_cid = || anyedge_region::quic::cid_node(inner::transport_payload(packet), nodes, cid);
        let node = quic
            .then(by_cid)
            .flatten()
            .unwrap_or_else(|| anyedge_pop::rendezvous_node(hash, nodes, |n| self.clbs[base.node(n)].known_up));
        base.node(node)
    }

    /// What CLB node `c`'s core sends (to POPs, backends, clients, its peers) and what
    /// it noticed (a backend's health); then its timer.
    pub(super) fn drain(&mut self, c: ClbId, wire: &mut Wire<'_>, servers: &mut Servers) {
        let region = self.clbs[c].region;
        let table = self.clbs[c].core.conn_table();
        if table.len() > table.capacity() {
            let msg = format!("CLB {c}: connection table holds {} > capacity {}", table.len(), table.capacity());
            wire.violation(msg);
        }
        while let Some(out) = self.clbs[c].core.poll_output() {
            let flow = out.flow();
            match out.dest {
                Dest::Node(NodeId::Pop(pop_id)) => {
                    let p = PopId(usize::from(pop_id));
                    if p.0 >= wire.t().pops.len() {
                        continue;
                    }
                    let link = LinkKind::Backbone(wire.link_bb(p, region, 1));
                    wire.send_over(link, flow, Arrival::PopFromClb(p), out.bytes);
                }
                Dest::Backend(backend) => {
                    if let Some(e) = servers.egress_at(backend.ip()) {
                        // An internet backend: through the region's egress node.
                        wire.hop(wire.now() + INTRA_REGION_NS, Arrival::EgressFromClb(e), out.bytes);
                    } else if let Some(host) = servers.host_at(backend.ip()) {
                        servers.send_clb_backend(c, host, 0, flow, out.bytes, wire);
                    }
                }
                Dest::Client(_) => {
                    let Some((client, flow)) = wire.places().reply_target(&out.bytes) else {
                        continue;
                    };
                    let link = LinkKind::InetDirect(wire.link_direct(wire.group_of(client), region, 1));
                    wire.send_over(link, flow, Arrival::Client(client), out.bytes);
                }
                Dest::Node(NodeId::Clb { node, .. }) => {
                    // Over the region's own network, like CLB ↔ backend.
                    if usize::from(node) < usize::from(wire.t().regions[region].clb_nodes) {
                        let peer = wire.places().clb(region, node);
                        wire.hop(wire.now() + INTRA_REGION_NS, Arrival::ClbFromPeer(peer), out.bytes);
                    }
                }
                Dest::Node(NodeId::Backend { .. }) => {}
            }
        }
        while let Some(ev) = self.clbs[c].core.poll_event() {
            if let anyedge_region::Event::HealthChanged { backend, healthy } = ev {
                let who = self.clbs[c].name(wire.t());
                wire.noticed(Notice::Backend { addr: backend, healthy }, who);
                if self.clbs[c].index == 0 {
                    servers.health_changed(backend, region, healthy, wire);
                }
            }
        }
        self.arm(c, wire);
    }

    /// When CLB node `c`'s next timer is to be scheduled: when its core wants one sooner
    /// than the one already armed (then it is the one armed).
    fn arm_timer(&mut self, c: ClbId) -> Option<u64> {
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
    pub(super) fn region(&self) -> usize {
        self.region
    }

    /// Its index in its region.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    pub(super) fn core(&self) -> &Clb {
        &self.core
    }

    pub(super) fn is_up(&self) -> bool {
        self.up
    }

    /// Packets the core refused, by reason (across restarts).
    pub(super) fn drops(&self) -> &BTreeMap<&'static str, u64> {
        &self.drops
    }

    /// Flows its cores created, across restarts.
    pub(super) fn flows_total(&self) -> u64 {
        self.flows_before + self.core.flows_created()
    }

    /// The connection table's peak and evictions, across restarts.
    pub(super) fn table_totals(&self) -> (usize, u64) {
        let table = self.core.conn_table();
        (self.peak_before.max(table.peak()), self.evictions_before + table.evictions())
    }

    /// Its connection-table sync traffic, across restarts.
    pub(super) fn sync_total(&self) -> anyedge_region::sync::SyncStats {
        self.sync_before.plus(&self.core.sync_stats())
    }

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
        let mut pop = PopNode {
            core: Pop::new(config, 0),
            up: true,
            announced: true,
            session_epoch: 0,
            drops: BTreeMap::new(),
            heard: Vec::new(),
        };
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
