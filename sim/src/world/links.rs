//! Moving packets over the modelled links: the internet (client ↔ POP, client ↔ region),
//! the backbone (POP ↔ region) and the region's own (CLB node ↔ backend).
use crate::world::events::OUTER_HEADER;
use anyedge_ccn::ComponentRng;
use anyedge_ccn::Link;
use anyedge_ccn::LinkOutcome;
use anyedge_topology::FaultAction;
use anyedge_topology::InternetEnd;
use anyedge_topology::Topology;

/// The world's modelled links: each client group's internet legs to every POP and every
/// region, and the backbone between POPs and regions, two directions each. A link is
/// made the first time a packet takes it (or a fault changes it): a group reaches a few
/// POPs of hundreds and a POP a few regions, and 4,000 groups × 250 POPs of internet
/// legs, or 2,000 POPs × 500 regions of backbone, built up front were a large world's
/// set-up time and most of its memory. A link's draws come from its own name, so when
/// it is made changes nothing it does.
pub(super) struct Network {
    /// [group][pop][dir] flattened (`Wire::link_pop`), as they are first used.
    inet_pop: rustc_hash::FxHashMap<usize, Link>,
    /// [group][region][dir] flattened (`Wire::link_direct`), as they are first used.
    inet_direct: rustc_hash::FxHashMap<usize, Link>,
    /// [pop][region][dir] flattened (`Wire::link_bb`), as they are first used.
    backbone: rustc_hash::FxHashMap<usize, Link>,
}

/// Internet leg `index` of kind `end` (`Wire::link_pop` / `link_direct` numbering).
fn inet_link(t: &Topology, index: usize, to_pop: bool) -> Link {
    let (pair, dir) = (index / 2, index % 2);
    let ends = if to_pop { t.pops.len() } else { t.regions.len() };
    let (g, e) = (pair / ends, pair % ends);
    let (end, name) = if to_pop {
        (InternetEnd::Pop(e), format!("inet/{g}/pop/{e}/{dir}"))
    } else {
        (InternetEnd::Region(e), format!("inet/{g}/region/{e}/{dir}"))
    };
    Link::new(anyedge_topology::nodes::access_link(t, g, end), ComponentRng::new(t.seed, &name))
}

impl Network {
    pub(super) fn new() -> Network {
        Network { inet_pop: Default::default(), inet_direct: Default::default(), backbone: Default::default() }
    }

    /// Backbone link `index` (`Wire::link_bb` numbering), made if it is new.
    pub(super) fn backbone(&mut self, t: &Topology, index: usize) -> &mut Link {
        self.backbone.entry(index).or_insert_with(|| backbone_link(t, index))
    }

    /// A packet of `len` bytes (IP header `header` bytes) of flow `flow` put on `link`
    /// at `now`. On the internet's links (clients', 1,500 bytes) a datagram past the MTU
    /// travels as fragments and is lost with any of them, as in the lab, where the POP
    /// shapes each fragment; the backbone carries its envelope whole (the lab's shaper
    /// sees the envelope before the kernel fragments it).
    pub(super) fn transmit(
        &mut self,
        t: &Topology,
        link: LinkKind,
        now: u64,
        (len, header): (usize, usize),
        flow: u64,
    ) -> LinkOutcome {
        let mtu = anyedge_pop::CLIENT_LINK_MTU;
        match link {
            LinkKind::InetPop(i) => {
                let link = self.inet_pop.entry(i).or_insert_with(|| inet_link(t, i, true));
                link.transmit_datagram(now, (len, header), mtu, flow)
            }
            LinkKind::InetDirect(i) => {
                let link = self.inet_direct.entry(i).or_insert_with(|| inet_link(t, i, false));
                link.transmit_datagram(now, (len, header), mtu, flow)
            }
            LinkKind::Backbone(i) => self.backbone(t, i).transmit(now, len + OUTER_HEADER, flow),
        }
    }
}

/// The backbone link `index` (`Wire::link_bb` numbering) between a POP and a region, one
/// way. A fault may set a lower delay than the link's: the link is told.
fn backbone_link(t: &Topology, index: usize) -> Link {
    let (pair, dir) = (index / 2, index % 2);
    let (p, r) = (pair / t.regions.len(), pair % t.regions.len());
    let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
    let rng = ComponentRng::new(t.seed, &format!("backbone/{p}/{r}/{dir}"));
    Link::new(model, rng).with_delay_floor(backbone_floor_ns(t, p, r))
}

/// The least delay of the backbone link between POP `p` and region `r` over the run: the
/// model's, or lower when a link fault sets it lower.
pub(super) fn backbone_floor_ns(t: &Topology, p: usize, r: usize) -> u64 {
    let model = anyedge_topology::nodes::backbone_link(t, t.pops[p].location, t.regions[r].location);
    t.faults
        .iter()
        .filter_map(|f| match &f.action {
            FaultAction::Link(lo) if lo.pop == p && lo.region == r => lo.delay_ns,
            _ => None,
        })
        .fold(model.impairment.delay_ns, u64::min)
}

#[derive(Debug, Clone, Copy)]
pub(super) enum LinkKind {
    InetPop(usize),
    InetDirect(usize),
    Backbone(usize),
}
