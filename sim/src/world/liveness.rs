//! Failure detection the way the lab does it, with no oracle: a POP probes the CLB nodes
//! of the regions it forwards to over the backbone, a CLB node the POPs it replies
//! through (on demand, `failover.probe_idle`; `off`: all of them), each POP's transit
//! probes its POP (BFD: withdrawal) and each region's edge probes its CLB nodes (the direct path's
//! ECMP). All run the shared `anyedge_ccn::LivenessProber`; probes are `anyedge_proto::liveness`
//! bytes that cross the simulated links, so loss, jitter and queues on the backbone shape
//! detection as they would for real. Backbone probes (POP ↔ CLB node) are sealed with the
//! nodes' keys like data; the edges' probes cross no backbone and are not. A fault only
//! stops a node; a node that is down answers nothing and probes nothing.

use crate::world::events::Arrival;
use crate::world::events::Ev;
use crate::world::events::INTRA_REGION_NS;
use crate::world::forwarding::PopNode;
use crate::world::forwarding::Regions;
use crate::world::ids::ClbId;
use crate::world::ids::Notice;
use crate::world::ids::PopId;
use crate::world::ids::Probed;
use crate::world::ids::ProberAt;
use crate::world::ids::Table;
use crate::world::links::LinkKind;
use crate::world::wire::Wire;
use anyedge_ccn::ComponentRng;
use anyedge_ccn::{Keyring, LivenessOutput, LivenessProber, NodeId};
use anyedge_proto::liveness;
use anyedge_proto::seal::Kind;
use anyedge_topology::Topology;
use std::collections::BTreeMap;

/// One way between a POP and its transit router.
pub const EDGE_HOP_NS: u64 = 50_000;

pub(super) struct ProberSlot {
    prober: LivenessProber,
    /// Bumped when the owner restarts, so ticks of its earlier life are ignored.
    epoch: u32,
}

pub(super) struct Probers {
    pop: Vec<ProberSlot>,
    clb: Vec<ProberSlot>,
    transit: Vec<ProberSlot>,
    region: Vec<ProberSlot>,
}

impl Probers {
    /// Every prober, each starting at a phase of its own (seeded) within one interval.
    pub(super) fn new(t: &Topology) -> Probers {
        let config = t.failover.probe();
        let np = t.pops.len();
        let nc: usize = t.regions.iter().map(|r| usize::from(r.clb_nodes)).sum();
        let start = |name: &str, config: anyedge_ccn::LivenessConfig| {
            ComponentRng::new(t.seed, &format!("probe/{name}")).below(config.interval_ns)
        };
        let slot = |prober| ProberSlot { prober, epoch: 0 };
        let always =
            |name: String, peers: usize, config| slot(LivenessProber::new(peers, config, start(&name, config)));
        // POPs and CLB nodes probe each other on demand: what they forward to.
        let backbone = |name: String, peers: usize| slot(t.failover.backbone_prober(peers, start(&name, config)));
        let regions = t.regions.iter().enumerate();
        Probers {
            pop: (0..np).map(|p| backbone(format!("pop/{p}"), nc)).collect(),
            clb: (0..nc).map(|c| backbone(format!("clb/{c}"), np)).collect(),
            // Each POP's transit finds it dead by BFD, each with a phase of its own.
            transit: (0..np).map(|p| always(format!("transit/{p}"), 1, t.failover.bfd())).collect(),
            region: regions
                .map(|(r, region)| always(format!("region/{r}"), usize::from(region.clb_nodes), config))
                .collect(),
        }
    }

    fn slot(&mut self, at: ProberAt) -> &mut ProberSlot {
        match at {
            ProberAt::Pop(p) => &mut self.pop[p.0],
            ProberAt::Clb(c) => &mut self.clb[c.0],
            ProberAt::Transit(p) => &mut self.transit[p.0],
            ProberAt::Region(r) => &mut self.region[r],
        }
    }
}

/// What the probers may touch: the wire they send over, and the nodes they run on and
/// probe (a node's core learns what its prober found; a POP's transit withdraws it).
pub(super) struct ProbeCx<'a, 't> {
    pub(super) wire: &'a mut Wire<'t>,
    pub(super) pops: &'a mut Table<PopId, PopNode>,
    pub(super) regions: &'a mut Regions,
}

impl Probers {
    /// Schedules the first round of every prober this world runs.
    pub(super) fn start(&mut self, cx: &mut ProbeCx<'_, '_>) {
        let (np, nc) = (cx.pops.len(), cx.regions.clbs().len());
        let all = (0..np)
            .map(|p| ProberAt::Pop(PopId(p)))
            .chain((0..nc).map(|c| ProberAt::Clb(ClbId(c))))
            .chain((0..np).map(|p| ProberAt::Transit(PopId(p))))
            .chain((0..cx.wire.t().regions.len()).map(ProberAt::Region));
        for at in all {
            if cx.wire.owns(cx.wire.prober_part(at)) {
                self.schedule_tick(at, cx.wire);
            }
        }
    }

    fn schedule_tick(&mut self, at: ProberAt, wire: &mut Wire<'_>) {
        let slot = self.slot(at);
        let (when, epoch) = (slot.prober.poll_timeout(), slot.epoch);
        wire.schedule(when, Ev::ProbeTick { at, epoch });
    }

    /// A node came back: its prober starts afresh (every peer taken to be up).
    pub(super) fn restart(&mut self, at: ProberAt, wire: &mut Wire<'_>) {
        let now = wire.now();
        let slot = self.slot(at);
        slot.prober.restart(now);
        slot.epoch = slot.epoch.wrapping_add(1);
        self.schedule_tick(at, wire);
    }

    /// A prober's round, unless its node is down or it restarted since the round was set.
    pub(super) fn tick(&mut self, at: ProberAt, epoch: u32, cx: &mut ProbeCx<'_, '_>) {
        let now = cx.wire.now();
        if !cx.alive(at) || self.slot(at).epoch != epoch {
            return;
        }
        self.hand_over_demand(at, now, cx);
        self.slot(at).prober.handle_timeout(now);
        self.drain(at, cx);
        if let ProberAt::Pop(p) = at {
            cx.sample_announcements(p);
        }
        self.schedule_tick(at, cx.wire);
    }

    /// What a POP or CLB node forwarded to since its last round, for its prober: every
    /// CLB node of each region a POP sent to, each POP a CLB node replied through.
    fn hand_over_demand(&mut self, at: ProberAt, now: u64, cx: &mut ProbeCx<'_, '_>) {
        match at {
            ProberAt::Pop(p) => {
                for region in cx.pops[p].take_demand() {
                    let base = cx.wire.places().clb(usize::from(region), 0);
                    for node in 0..cx.wire.t().regions[usize::from(region)].clb_nodes {
                        self.pop[p.0].prober.handle_use(base.node(node).0, now);
                    }
                }
            }
            ProberAt::Clb(c) => {
                for pop in cx.regions.take_demand(c) {
                    self.clb[c.0].prober.handle_use(usize::from(pop), now);
                }
            }
            ProberAt::Transit(_) | ProberAt::Region(_) => {}
        }
    }

    /// An answer came back to the prober at `at`.
    pub(super) fn answer(&mut self, at: ProberAt, packet: Vec<u8>, cx: &mut ProbeCx<'_, '_>) {
        if !cx.alive(at) {
            return;
        }
        let packet = match backbone_prober(at) {
            Some(node) => match cx.open_probe(node, true, Kind::ProbeAnswer, &packet) {
                Some(p) => p,
                None => return,
            },
            None => packet,
        };
        let Ok((peer, seq)) = liveness::parse_answer(&packet) else { return };
        self.slot(at).prober.handle_answer(usize::from(peer), seq);
        self.drain(at, cx);
    }

    /// Carries out what a prober decided: probes to send, peers found down or up.
    fn drain(&mut self, at: ProberAt, cx: &mut ProbeCx<'_, '_>) {
        while let Some(out) = self.slot(at).prober.poll_output() {
            match out {
                LivenessOutput::Send { peer, seq } => cx.send_request(at, peer, seq),
                LivenessOutput::Down { peer } => cx.found(at, peer, false),
                LivenessOutput::Up { peer } => cx.found(at, peer, true),
            }
        }
    }
}

/// The node at the backbone end of a probe between `at` and `node` other than `node`
/// (`None` for the edges' probes, which are not sealed).
fn backbone_prober(at: ProberAt) -> Option<Probed> {
    match at {
        ProberAt::Pop(p) => Some(Probed::Pop(p)),
        ProberAt::Clb(c) => Some(Probed::Clb(c)),
        ProberAt::Transit(_) | ProberAt::Region(_) => None,
    }
}

impl ProbeCx<'_, '_> {
    fn alive(&self, at: ProberAt) -> bool {
        match at {
            ProberAt::Pop(p) => self.pops[p].is_up(),
            ProberAt::Clb(c) => self.regions.clbs()[c].is_up(),
            ProberAt::Transit(_) | ProberAt::Region(_) => true,
        }
    }

    /// Once per probe round, as the lab's POP node does: the core decides which VIPs the
    /// POP announces (a live CLB node of the home region, rise/fall hysteresis), and BGP
    /// moves clients after convergence when that changed.
    fn sample_announcements(&mut self, p: PopId) {
        if !self.pops[p].sample_announcements() {
            return;
        }
        self.pops[p].announce(p, self.wire);
    }

    /// The keyring and backbone id of a probed node, and its drop counters.
    fn probed_keys(&mut self, node: Probed) -> (&mut Keyring, NodeId, &mut BTreeMap<&'static str, u64>) {
        match node {
            Probed::Pop(p) => {
                let (keys, drops) = self.pops[p].keys();
                (keys, anyedge_topology::nodes::pop_node(p.0), drops)
            }
            Probed::Clb(c) => self.regions.keys(c),
        }
    }

    /// `bytes` of `kind` sealed by `from` for `to` (unsealed off the backbone).
    fn seal_probe(&mut self, from: Probed, to: Option<Probed>, kind: Kind, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let Some(to) = to else { return Some(bytes) };
        let (_, to_id, _) = self.probed_keys(to);
        let (keys, _, _) = self.probed_keys(from);
        keys.seal(to_id, kind, &bytes)
    }

    /// The probe bytes in what `node` received, when they are authentic (counted by reason
    /// when not); as they are off the backbone.
    fn open_probe(&mut self, node: Probed, sealed: bool, kind: Kind, packet: &[u8]) -> Option<Vec<u8>> {
        if !sealed {
            return Some(packet.to_vec());
        }
        let (keys, _, drops) = self.probed_keys(node);
        match keys.open(kind, packet) {
            Ok((_, bytes)) => Some(bytes.to_vec()),
            Err(e) => {
                *drops.entry(e.name()).or_default() += 1;
                None
            }
        }
    }

    /// A probe request reached `to`: a live node echoes it back the way it came.
    pub(super) fn request(&mut self, to: Probed, from: ProberAt, packet: Vec<u8>) {
        let alive = match to {
            Probed::Pop(p) => self.pops[p].is_up(),
            Probed::Clb(c) => self.regions.clbs()[c].is_up(),
        };
        if !alive {
            return;
        }
        let prober = backbone_prober(from);
        let Some(request) = self.open_probe(to, prober.is_some(), Kind::Probe, &packet) else { return };
        if let Ok(answer) = liveness::answer(&request)
            && let Some(answer) = self.seal_probe(to, prober, Kind::ProbeAnswer, answer.to_vec())
        {
            self.send_probe(from, to, 1, answer);
        }
    }

    /// Prober `at`'s request `seq` to its peer `peer`, sealed when it crosses the backbone.
    fn send_request(&mut self, at: ProberAt, peer: usize, seq: u64) {
        let node = match at {
            ProberAt::Pop(_) => Probed::Clb(ClbId(peer)),
            ProberAt::Clb(_) => Probed::Pop(PopId(peer)),
            ProberAt::Transit(p) => Probed::Pop(p),
            ProberAt::Region(r) => Probed::Clb(self.wire.places().clb(r, peer as u16)),
        };
        let request = liveness::Repr { answer: false, peer: peer as u16, seq }.emit().to_vec();
        let sealed = match backbone_prober(at) {
            Some(me) => self.seal_probe(me, Some(node), Kind::Probe, request),
            None => Some(request),
        };
        if let Some(request) = sealed {
            self.send_probe(at, node, 0, request);
        }
    }

    /// A probe between prober `at` and node `node`: `dir` 0 is the request, 1 the answer.
    fn send_probe(&mut self, at: ProberAt, node: Probed, dir: usize, packet: Vec<u8>) {
        let to = if dir == 0 { Arrival::ProbeRequest { to: node, from: at } } else { Arrival::ProbeAnswer { at } };
        let now = self.wire.now();
        let backbone = |cx: &Self, pop: PopId, clb: ClbId, toward_region: bool| {
            let i = cx.wire.link_bb(pop, cx.regions.clbs()[clb].region(), if toward_region { 0 } else { 1 });
            // Probes of one pair keep to one path (their own flow on the link).
            let flow = u64::MAX - ((pop.0 as u64) << 20 | clb.0 as u64);
            (LinkKind::Backbone(i), flow)
        };
        let link = match (at, node) {
            (ProberAt::Pop(p), Probed::Clb(c)) => Some(backbone(self, p, c, dir == 0)),
            (ProberAt::Clb(c), Probed::Pop(p)) => Some(backbone(self, p, c, dir == 1)),
            _ => None,
        };
        let before = self.wire.recorded().packets();
        match link {
            Some((link, flow)) => self.wire.send_over(link, flow, to, packet),
            None => {
                // A transit sits next to its POP, a region's edge next to its nodes.
                let hop = if matches!(at, ProberAt::Transit(_)) { EDGE_HOP_NS } else { INTRA_REGION_NS };
                self.wire.hop(now + hop, to, packet);
            }
        }
        // Counted as a packet where it was sent (a modelled link, or the hop here).
        let packets = self.wire.recorded().packets();
        self.wire.record().count_probes(packets - before);
    }

    /// Prober `at` found its peer `peer` down or up: the node it runs on is told, and
    /// the record notes who noticed.
    fn found(&mut self, at: ProberAt, peer: usize, up: bool) {
        let t = self.wire.t();
        match at {
            ProberAt::Pop(p) => {
                let c = ClbId(peer);
                let (region, index) = (self.regions.clbs()[c].region() as u16, self.regions.clbs()[c].index() as u16);
                self.pops[p].clb_found(region, index, up);
                self.wire.noticed(Notice::Clb { clb: c, up }, format!("pop/{}", t.pops[p.0].name));
            }
            ProberAt::Clb(c) => {
                self.regions.pop_found(c, peer as u16, up);
                let who = self.regions.clbs()[c].name(t);
                self.wire.noticed(Notice::Pop { pop: PopId(peer), up }, who);
            }
            ProberAt::Transit(p) => {
                // Withdrawn at once; announced again once the BGP session is back. BGP
                // moves clients after convergence.
                if up {
                    let epoch = self.pops[p].transit_found_alive();
                    let at = self.wire.now() + t.failover.session_setup_ns;
                    self.wire.schedule(at, Ev::SessionUp { pop: p, epoch });
                } else {
                    self.pops[p].transit_found_dead();
                    self.pops[p].announce(p, self.wire);
                }
                self.wire.noticed(Notice::Pop { pop: p, up }, "internet".into());
            }
            ProberAt::Region(r) => {
                let c = self.wire.places().clb(r, peer as u16);
                self.regions.edge_found(c, up);
                self.wire.noticed(Notice::Clb { clb: c, up }, format!("region/{}/edge", t.regions[r].name));
            }
        }
    }
}
