//! Moving packets over the modelled links: the internet (client ↔ POP, client ↔ region),
//! the backbone (POP ↔ region) and the region's own (CLB node ↔ backend).
use crate::world::Arrival;
use crate::world::Ev;
use crate::world::INTRA_REGION_NS;
use crate::world::OUTER_HEADER;
use crate::world::World;
use crate::world::ids::ClbId;
use crate::world::ids::HostId;
use crate::world::ids::PopId;
use anyedge_ccn::ComponentRng;
use anyedge_ccn::Link;
use anyedge_ccn::LinkOutcome;
use anyedge_topology::FaultAction;
use anyedge_topology::InternetEnd;
use anyedge_topology::Topology;

/// The world's modelled links, built whole from the topology: each client group's
/// internet legs to every POP and every region, and the backbone between POPs and
/// regions, two directions each.
pub(super) struct Network {
    /// [group][pop][dir] flattened (`World::link_pop`).
    pub(super) inet_pop: Vec<Link>,
    /// [group][region][dir] flattened (`World::link_direct`).
    pub(super) inet_direct: Vec<Link>,
    /// [pop][region][dir] flattened (`World::link_bb`).
    pub(super) backbone: Vec<Link>,
}

impl Network {
    pub(super) fn new(t: &Topology) -> Network {
        let seed = t.seed;
        let (np, nr, ng) = (t.pops.len(), t.regions.len(), t.clients.len());
        let inet = |g: usize, end: InternetEnd, name: String| {
            let model = anyedge_topology::nodes::access_link(t, g, end);
            [0, 1].map(|dir| Link::new(model, ComponentRng::new(seed, &format!("{name}/{dir}"))))
        };
        let inet_pop = (0..ng)
            .flat_map(|g| (0..np).flat_map(move |p| inet(g, InternetEnd::Pop(p), format!("inet/{g}/pop/{p}"))))
            .collect();
        let inet_direct = (0..ng)
            .flat_map(|g| (0..nr).flat_map(move |r| inet(g, InternetEnd::Region(r), format!("inet/{g}/region/{r}"))))
            .collect();
        let backbone = (0..np).flat_map(|p| (0..nr).flat_map(move |r| backbone_pair(t, p, r))).collect();
        let network = Network { inet_pop, inet_direct, backbone };
        debug_assert_eq!(network.inet_pop.len(), ng * np * 2);
        debug_assert_eq!(network.inet_direct.len(), ng * nr * 2);
        debug_assert_eq!(network.backbone.len(), np * nr * 2);
        network
    }
}

/// The backbone link between POP `p` and region `r`, both ways. A fault may set a lower
/// delay than the link's: the link is told.
fn backbone_pair(t: &Topology, p: usize, r: usize) -> [Link; 2] {
    let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
    let floor = t
        .faults
        .iter()
        .filter_map(|f| match &f.action {
            FaultAction::Link(lo) if lo.pop == p && lo.region == r => lo.delay_ns,
            _ => None,
        })
        .fold(model.impairment.delay_ns, u64::min);
    [0, 1].map(|dir| {
        let rng = ComponentRng::new(t.seed, &format!("backbone/{p}/{r}/{dir}"));
        Link::new(model, rng).with_delay_floor(floor)
    })
}

#[derive(Debug, Clone, Copy)]
pub(super) enum LinkKind {
    InetPop(usize),
    InetDirect(usize),
    Backbone(usize),
}

impl<'t> World<'t> {
    pub(super) fn link_pop(&self, g: usize, p: PopId, dir: usize) -> usize {
        (g * self.t.pops.len() + p.0) * 2 + dir
    }

    pub(super) fn link_direct(&self, g: usize, r: usize, dir: usize) -> usize {
        (g * self.t.regions.len() + r) * 2 + dir
    }

    pub(super) fn link_bb(&self, p: PopId, r: usize, dir: usize) -> usize {
        (p.0 * self.t.regions.len() + r) * 2 + dir
    }

    /// A packet over one of the modelled links. On the internet's (clients' links, 1,500
    /// bytes) a datagram past the MTU travels as fragments and is lost with any of them,
    /// as in the lab, where the POP shapes each fragment; the backbone carries its
    /// envelope whole (the lab's shaper sees the envelope before the kernel fragments it).
    pub(super) fn send_over(&mut self, link: LinkKind, flow: u64, to: Arrival, packet: Vec<u8>) {
        let now = self.q.now_ns();
        let header = if packet.first().is_some_and(|b| b >> 4 == 6) { 48 } else { 20 };
        let mtu = anyedge_pop::CLIENT_LINK_MTU;
        let outcome = match link {
            LinkKind::InetPop(i) => self.net.inet_pop[i].transmit_datagram(now, (packet.len(), header), mtu, flow),
            LinkKind::InetDirect(i) => {
                self.net.inet_direct[i].transmit_datagram(now, (packet.len(), header), mtu, flow)
            }
            LinkKind::Backbone(i) => self.net.backbone[i].transmit(now, packet.len() + OUTER_HEADER, flow),
        };
        if let LinkOutcome::Deliver(at) = outcome {
            self.record.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }

    /// A packet of flow `flow` between CLB node `clb` and backend host `host`, inside the
    /// region or over the site's links when the backend lives elsewhere (another region,
    /// an IDC): `dir` 0 is the CLB's (its core sealed it), 1 the host's (sealed here with
    /// the host's keys).
    pub(super) fn send_clb_backend(&mut self, clb: ClbId, host: HostId, dir: usize, flow: u64, packet: Vec<u8>) {
        let packet = if dir == 0 {
            packet
        } else {
            let to = anyedge_topology::nodes::clb_node(self.regions.clbs[clb].region, self.regions.clbs[clb].index);
            match self.servers.hosts[host].keys.seal(to, anyedge_proto::seal::Kind::Backend, &packet) {
                Some(sealed) => sealed,
                None => return,
            }
        };
        let to = if dir == 0 { Arrival::Backend { host, via_clb: clb } } else { Arrival::ClbFromBackend(clb) };
        let region = self.regions.clbs[clb].region;
        let now = self.q.now_ns();
        let at = match self.servers.site_links.get_mut(&(region, host)) {
            None => Some(now + INTRA_REGION_NS),
            Some(links) => match links[dir].transmit(now, packet.len() + OUTER_HEADER, flow) {
                LinkOutcome::Deliver(at) => Some(at),
                LinkOutcome::Lost | LinkOutcome::QueueFull => None,
            },
        };
        if let Some(at) = at {
            self.record.packets += 1;
            self.q.schedule(at, Ev::Arrive { to, packet });
        }
    }
}
