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
}

pub(super) struct GroupVip {
    pub(super) vip: usize,
    /// POPs in preference order (catchment or BGP's at the transit the group attaches
    /// to), shared with the groups that attach at the same POP.
    pub(super) order: std::sync::Arc<PopOrder>,
    /// The POP routing delivers this group to now.
    pub(super) route: Option<PopId>,
    /// [anycast, direct] round trips no reply can beat: light in a straight fiber over
    /// the internet legs (fault overrides touch only backbone links).
    pub(super) floor_ns: [u64; 2],
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
}

impl PopOrder {
    /// An order known whole.
    pub(super) fn whole(order: std::sync::Arc<[PopId]>) -> PopOrder {
        PopOrder { first: order.first().copied(), whole: order.into(), attached: None }
    }

    /// BGP's order for VIP `vip` at POP `at`'s transit ([`anyedge_topology::bgp::selection_order`]).
    pub(super) fn attached(t: &anyedge_topology::Topology, at: usize, vip: usize) -> PopOrder {
        if !t.vips[vip].pops.contains(&at) {
            let order = anyedge_topology::bgp::selection_order(t, at, &t.vips[vip].pops);
            return PopOrder::whole(order.into_iter().map(PopId).collect());
        }
        PopOrder { first: Some(PopId(at)), whole: std::sync::OnceLock::new(), attached: Some((at, vip)) }
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

    /// The first POP of the order `pred` accepts.
    pub(super) fn find(&self, t: &anyedge_topology::Topology, pred: impl Fn(PopId) -> bool) -> Option<PopId> {
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
}
