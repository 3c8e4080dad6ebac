//! A client and its group, apart from the world that moves their packets: a client's
//! flows (UDP, TCP, QUIC) and stacks, and what a group knows of the VIPs it talks to and
//! the POPs that route them. It imports nothing from the rest of the world but a flow's
//! types and the typed ids.

use crate::world::flows::Flow;
use crate::world::flows::TcpFlow;
use crate::world::ids::PopId;
use crate::world::quic_flow::QuicFlow;
use anyedge_ccn::ComponentRng;
use anyedge_region::tcp_stack::Stack;
use std::net::IpAddr;

pub(super) struct Client {
    pub(super) group: usize,
    pub(super) addr: IpAddr,
    /// Indexed by slot = k * 2 + path.
    pub(super) flows: Box<[Flow]>,
    /// Its TCP side, when a class speaks TCP (boxed: most clients speak only UDP).
    pub(super) tcp: Option<Box<ClientTcp>>,
    /// The client's own draws (flood source ports): a flooding client's only.
    pub(super) rng: Option<Box<ComponentRng>>,
    /// Per slot when a class speaks QUIC (empty for the rest): the QUIC side of QUIC
    /// traffic classes.
    pub(super) quic_flows: Box<[Option<Box<QuicFlow>>]>,
}

/// A client's TCP side.
pub(super) struct ClientTcp {
    /// Its stack, parked while no request is outstanding on any TCP flow.
    pub(super) stack: Stack,
    /// One per slot of a TCP class (`Flow::tcp` says which).
    pub(super) flows: Box<[TcpFlow]>,
    pub(super) poll_at: Option<u64>,
}

/// What a client group knows of the VIPs it talks to (a few of a world's hundreds: a
/// group holds nothing for the others).
pub(super) struct Group {
    /// By VIP index, ascending.
    pub(super) vips: Vec<GroupVip>,
    /// Where the group hears BGP, without an AS-level internet: the transit of the POP it
    /// attaches to, which hears another POP's update the internet model's one-way delay
    /// between the two sites after that POP's transit does (the lab's transits relay
    /// their sessions so). `None` over an AS-level internet.
    pub(super) hears_at: Option<PopId>,
}

pub(super) struct GroupVip {
    pub(super) vip: usize,
    /// POPs in preference order (catchment or BGP's at the transit the group attaches
    /// to), shared with the groups that attach at the same POP.
    pub(super) order: std::sync::Arc<PopOrder>,
    /// The POP routing delivers this group to now.
    pub(super) route: Option<PopId>,
    /// The POP the last BGP update the group will hear leads to: `route` once it has
    /// crossed the internet to the group ([`Group::hears_after_ns`]).
    pub(super) heading: Option<PopId>,
    /// [anycast, direct] round trips no reply can beat: light in a straight fiber over
    /// the internet legs (fault overrides touch only backbone links).
    pub(super) floor_ns: [u64; 2],
}

impl GroupVip {
    /// Over an AS-level internet, how long after POP `from`'s upstream router heard its
    /// update the group does, the POPs `heard` accepts announcing now: `route_hop` per
    /// speaker the update crosses from there, along the way the group took (a withdrawal
    /// of its POP comes back along it) or else the way it takes now. `None` elsewhere.
    pub(super) fn bgp_hears_after_ns(
        &self,
        t: &anyedge_topology::Topology,
        from: PopId,
        heard: impl Fn(PopId) -> bool,
    ) -> Option<u64> {
        if !self.order.is_bgp() {
            return None;
        }
        let speakers = match self.heading == Some(from) {
            true => self.order.speakers(t, |p| p == from || heard(p)),
            false => self.order.speakers(t, heard),
        };
        Some(u64::from(speakers) * t.failover.route_hop_ns)
    }
}

/// A preference order of POPs for one VIP. BGP's order at a transit puts the POP it
/// attaches to first when that POP publishes the VIP; the rest (every publishing POP's
/// round trip from there, sorted) is worked out the first time a walk goes past the first,
/// which a group does only when that POP withdraws. Working every order out at set-up was
/// attach points × POPs of the internet model.
pub(super) struct PopOrder {
    first: Option<PopId>,
    pub(super) whole: std::sync::OnceLock<std::sync::Arc<[PopId]>>,
    /// (attach POP, VIP) when `whole` is left for later.
    attached: Option<(usize, usize)>,
    /// Over the file's AS-level internet: BGP's choice for (group, VIP), which depends on
    /// every POP that announces, not on an order.
    bgp: Option<(std::sync::Arc<BgpChoices>, usize, usize)>,
}

/// BGP's catchments over the file's AS-level internet, one set per VIP and set of
/// announcing POPs, worked out the first time a group asks (once per routing change,
/// shared by every group and partition; the answer is the same whoever asks first).
#[derive(Default)]
pub(super) struct BgpChoices {
    by_state: std::sync::Mutex<std::collections::BTreeMap<RoutingState, Choices>>,
}

/// A VIP and which of its POPs announce it.
type RoutingState = (usize, Vec<bool>);

/// Each client group's POP in one routing state, and the BGP speakers an update of that
/// POP crosses past its upstream router to reach the group.
type Choices = std::sync::Arc<Vec<(Option<PopId>, u32)>>;

impl BgpChoices {
    /// The POP group `g` enters for `vip` when the POPs `up` accepts announce it.
    fn pop(&self, t: &anyedge_topology::Topology, g: usize, vip: usize, up: impl Fn(PopId) -> bool) -> Option<PopId> {
        self.choice(t, g, vip, up).0
    }

    /// [`BgpChoices::pop`], and the speakers that POP's updates cross to the group.
    fn choice(
        &self,
        t: &anyedge_topology::Topology,
        g: usize,
        vip: usize,
        up: impl Fn(PopId) -> bool,
    ) -> (Option<PopId>, u32) {
        let announcing: Vec<bool> = t.vips[vip].pops.iter().map(|&p| up(PopId(p))).collect();
        let choices = {
            let mut by_state = self.by_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let state = (vip, announcing);
            match by_state.get(&state) {
                Some(c) => c.clone(),
                None => {
                    let pops = &t.vips[vip].pops;
                    let on = |p: usize| pops.iter().position(|&q| q == p).is_some_and(|i| state.1[i]);
                    // A graph the parser accepted (no provider loop) settles; were it not
                    // to, nobody would have a route, as on the internet.
                    // The POPs alone: no nearest POP or inflation, which only reports need.
                    let c: Vec<(Option<PopId>, u32)> = match t.internet.ways.internetwork(t).catchments(t, vip, &on) {
                        Ok(c) => c.groups.iter().map(|x| (x.pop.map(PopId), x.hops)).collect(),
                        Err(_) => vec![(None, 0); t.clients.len()],
                    };
                    let c = std::sync::Arc::new(c);
                    by_state.insert(state, c.clone());
                    c
                }
            }
        };
        choices[g]
    }
}

impl PopOrder {
    /// An order known whole.
    pub(super) fn whole(order: std::sync::Arc<[PopId]>) -> PopOrder {
        PopOrder { first: order.first().copied(), whole: order.into(), attached: None, bgp: None }
    }

    /// BGP's choice for group `g` and VIP `vip` over the file's AS-level internet.
    pub(super) fn bgp(
        t: &anyedge_topology::Topology,
        choices: std::sync::Arc<BgpChoices>,
        g: usize,
        vip: usize,
    ) -> PopOrder {
        let first = choices.pop(t, g, vip, |_| true);
        PopOrder { first, whole: std::sync::OnceLock::new(), attached: None, bgp: Some((choices, g, vip)) }
    }

    /// BGP's order for VIP `vip` at POP `at`'s transit ([`anyedge_topology::bgp::selection_order`]).
    pub(super) fn attached(t: &anyedge_topology::Topology, at: usize, vip: usize) -> PopOrder {
        if !t.vips[vip].pops.contains(&at) {
            let order = anyedge_topology::bgp::selection_order(t, at, &t.vips[vip].pops);
            return PopOrder::whole(order.into_iter().map(PopId).collect());
        }
        PopOrder { first: Some(PopId(at)), whole: std::sync::OnceLock::new(), attached: Some((at, vip)), bgp: None }
    }

    pub(super) fn first(&self) -> Option<PopId> {
        self.first
    }

    /// The whole order.
    fn all(&self, t: &anyedge_topology::Topology) -> &[PopId] {
        self.whole.get_or_init(|| match self.attached {
            Some((at, vip)) => {
                let order = anyedge_topology::bgp::selection_order(t, at, &t.vips[vip].pops);
                debug_assert_eq!(order.first().copied().map(PopId), self.first, "the attach POP comes first");
                order.into_iter().map(PopId).collect()
            }
            None => std::sync::Arc::from([]),
        })
    }

    /// Over an AS-level internet: the BGP speakers an update of the POP [`PopOrder::find`]
    /// gives for `pred` crosses past that POP's upstream router to reach the group; 0
    /// otherwise.
    pub(super) fn speakers(&self, t: &anyedge_topology::Topology, pred: impl Fn(PopId) -> bool) -> u32 {
        self.bgp.as_ref().map_or(0, |(choices, g, vip)| choices.choice(t, *g, *vip, pred).1)
    }

    /// Whether BGP over the file's AS-level internet decides this order.
    pub(super) fn is_bgp(&self) -> bool {
        self.bgp.is_some()
    }

    /// The first POP of the order `pred` accepts.
    pub(super) fn find(&self, t: &anyedge_topology::Topology, pred: impl Fn(PopId) -> bool) -> Option<PopId> {
        if let Some((choices, g, vip)) = &self.bgp {
            return choices.pop(t, *g, *vip, pred);
        }
        match self.first {
            Some(p) if pred(p) => Some(p),
            None => None,
            Some(_) => self.all(t).iter().copied().find(|&p| pred(p)),
        }
    }
}

impl Group {
    fn find(&self, vip: usize) -> Option<&GroupVip> {
        self.vips.binary_search_by_key(&vip, |v| v.vip).ok().map(|i| &self.vips[i])
    }

    /// The POP routing delivers this group's traffic to `vip` to now.
    pub(super) fn route(&self, vip: usize) -> Option<PopId> {
        self.find(vip).and_then(|v| v.route)
    }

    /// The first POP of the group's order for `vip` that `pred` accepts; none for a VIP
    /// the group never talks to.
    pub(super) fn find_pop(
        &self,
        t: &anyedge_topology::Topology,
        vip: usize,
        pred: impl Fn(PopId) -> bool,
    ) -> Option<PopId> {
        self.find(vip).and_then(|v| v.order.find(t, pred))
    }

    /// The POP the group prefers for `vip`.
    pub(super) fn first_pop(&self, vip: usize) -> Option<PopId> {
        self.find(vip).and_then(|v| v.order.first())
    }

    /// [anycast, direct] round trips to `vip` no reply can beat.
    pub(super) fn floor_ns(&self, vip: usize) -> [u64; 2] {
        self.find(vip).map_or([0, 0], |v| v.floor_ns)
    }

    /// How long after POP `from`'s transit has heard its update the group's does: the
    /// internet model's one-way delay between the two transits' sites (what the lab's
    /// relays hold a session's messages for), none at the POP it attaches to or over an
    /// AS-level internet (where [`GroupVip::bgp_hears_after_ns`] says).
    pub(super) fn hears_after_ns(&self, t: &anyedge_topology::Topology, from: PopId) -> u64 {
        match self.hears_at {
            Some(at) if at != from => u64::from(anyedge_topology::bgp::med_us(t, at.0, from.0)) * 1_000 / 2,
            _ => 0,
        }
    }
}
