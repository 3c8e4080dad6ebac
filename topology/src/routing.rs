//! The internet's routing between ASes as BGP decides it: the sans-IO routing core that
//! issue 73 builds the simulator's catchments and the lab's BIRD policies on. It knows
//! nothing of files, clocks or sockets: a graph of ASes, their routers (an AS's presence
//! at a place) and the eBGP sessions between routers of two ASes at one place, the
//! announcements of prefixes, and [`Rib::converge`], which computes every router's best
//! route for a prefix to a fixed point, the same for the same inputs.
//!
//! A router sees every route its AS's border routers learned (iBGP, a full mesh) and
//! picks, in order:
//! 1. by local preference, from who the route came: its own AS's origin, then a customer,
//!    then a peer, then a provider (Gao and Rexford's preference, which with valley-free
//!    export guarantees one stable outcome);
//! 2. the shorter AS path, prepends counted;
//! 3. hot potato: the exit router nearest this one, by the AS's own distance between its
//!    places;
//! 4. the earlier session in the graph, then the lower exit router (router ids).
//!
//! A router exports its best route over its sessions **valley-free**: a route from its
//! own AS or a customer to every neighbour, a route from a peer or a provider only to
//! customers; never a route whose AS path holds the neighbour (loop prevention), never a
//! route marked no-export (RFC 1997: the AS that received it keeps it), never a route
//! scoped to a zone (a region-only community) to a router outside that zone; an origin's
//! announcement only from the router that makes it (a POP that withdrew does not pass on
//! another POP's) and only to the neighbours it names when it names some (selective
//! announcement).
//!
//! [`Rib::forward`] follows the chosen routes from a router to the origin, leg by leg:
//! inside an AS from the router to its exit, across a session to the next AS. The delay of
//! a path is the caller's sum over those legs; inflation is what the routing adds over the
//! nearest origin, never a factor.

/// An AS of the graph (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsId(pub usize);

/// A router: an AS's presence at one place (its index in the graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterId(pub usize);

/// A part of the world a router is in, for region-only communities (the caller's
/// numbering: the simulator's areas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Zone(pub u8);

/// An eBGP session between two routers of different ASes at one place (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub usize);

/// What a neighbour is to an AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Relation {
    /// It pays this AS for transit: its routes are preferred and exported to everyone.
    Customer,
    /// Settlement-free: its routes go only to customers.
    Peer,
    /// This AS pays it: its routes are the last resort and go only to customers.
    Provider,
}

impl Relation {
    /// The same link seen from the other end.
    pub fn reverse(self) -> Relation {
        match self {
            Relation::Customer => Relation::Provider,
            Relation::Peer => Relation::Peer,
            Relation::Provider => Relation::Customer,
        }
    }
}

/// Where a route came from, best first (the local preference's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Learned {
    Origin,
    Customer,
    Peer,
    Provider,
}

impl From<Relation> for Learned {
    fn from(r: Relation) -> Learned {
        match r {
            Relation::Customer => Learned::Customer,
            Relation::Peer => Learned::Peer,
            Relation::Provider => Learned::Provider,
        }
    }
}

/// A session: router `a` of one AS and router `b` of another, at one place; `b_is` is
/// what `b`'s AS is to `a`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub a: RouterId,
    pub b: RouterId,
    pub b_is: Relation,
}

/// The graph: every router's AS, and the sessions.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// [router]: its AS.
    router_as: Vec<AsId>,
    /// [AS]: its routers.
    as_routers: Vec<Vec<RouterId>>,
    /// [router]: its zone.
    router_zone: Vec<Zone>,
    sessions: Vec<Session>,
    /// [router]: its sessions (each once, in session order).
    router_sessions: Vec<Vec<SessionId>>,
}

/// Why a graph cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("a session joins two routers of AS {0}: inside an AS routers see each other's routes (iBGP)")]
    SameAs(usize),
    #[error("a session names router {0}, and the graph has {1}")]
    NoRouter(usize, usize),
}

impl Graph {
    /// An empty graph of `ases` ASes.
    pub fn new(ases: usize) -> Graph {
        Graph { as_routers: vec![Vec::new(); ases], ..Graph::default() }
    }

    /// A router of AS `asn` (its presence at one more place), in zone 0.
    pub fn add_router(&mut self, asn: AsId) -> RouterId {
        self.add_router_in(asn, Zone::default())
    }

    /// A router of AS `asn` in zone `zone`.
    pub fn add_router_in(&mut self, asn: AsId, zone: Zone) -> RouterId {
        let id = RouterId(self.router_as.len());
        self.router_as.push(asn);
        self.router_zone.push(zone);
        self.as_routers[asn.0].push(id);
        self.router_sessions.push(Vec::new());
        id
    }

    /// A session between routers `a` and `b` of two ASes; `b_is` is what `b`'s AS is to
    /// `a`'s.
    pub fn add_session(&mut self, a: RouterId, b: RouterId, b_is: Relation) -> Result<SessionId, GraphError> {
        let n = self.router_as.len();
        for r in [a, b] {
            if r.0 >= n {
                return Err(GraphError::NoRouter(r.0, n));
            }
        }
        if self.router_as[a.0] == self.router_as[b.0] {
            return Err(GraphError::SameAs(self.router_as[a.0].0));
        }
        let id = SessionId(self.sessions.len());
        self.sessions.push(Session { a, b, b_is });
        self.router_sessions[a.0].push(id);
        self.router_sessions[b.0].push(id);
        Ok(id)
    }

    pub fn as_of(&self, r: RouterId) -> AsId {
        self.router_as[r.0]
    }

    pub fn routers(&self) -> usize {
        self.router_as.len()
    }

    pub fn ases(&self) -> usize {
        self.as_routers.len()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn routers_of(&self, asn: AsId) -> &[RouterId] {
        &self.as_routers[asn.0]
    }

    pub fn zone(&self, r: RouterId) -> Zone {
        self.router_zone[r.0]
    }

    pub fn session(&self, s: SessionId) -> Session {
        self.sessions[s.0]
    }

    /// The other end of session `s` from router `me`, and what its AS is to `me`'s.
    fn far_end(&self, s: SessionId, me: RouterId) -> (RouterId, Relation) {
        let session = self.sessions[s.0];
        if session.a == me { (session.b, session.b_is) } else { (session.a, session.b_is.reverse()) }
    }
}

/// An announcement of one prefix from a router of its origin AS (a POP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub at: RouterId,
    /// Extra copies of the origin AS on the path (AS-path prepending).
    pub prepend: u8,
    /// Announced only to these neighbour ASes (empty: to every neighbour).
    pub only_to: Vec<AsId>,
    /// Marked no-export: the neighbours that receive it keep it to themselves.
    pub no_export: bool,
    /// Scoped to a zone (a region-only community): passed only to routers in it.
    pub scope: Option<Zone>,
}

impl Announcement {
    /// A plain announcement from router `at`: no prepends, to every neighbour.
    pub fn from(at: RouterId) -> Announcement {
        Announcement { at, prepend: 0, only_to: Vec::new(), no_export: false, scope: None }
    }
}

/// A route as a router holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The AS path, the neighbour AS first and the origin last (prepends repeated); empty
    /// for the AS's own origin.
    pub path: Vec<AsId>,
    pub learned: Learned,
    /// The border router of this AS where the route enters (the origin router for an
    /// own origin).
    pub exit: RouterId,
    /// The session it came over (`None`: an own origin).
    pub via: Option<SessionId>,
    pub no_export: bool,
    pub scope: Option<Zone>,
}

/// The most rounds [`Rib::converge`] runs: valley-free routing settles within a few
/// times the longest path; a graph that has not settled by then is refused.
pub const ROUNDS_MAX: usize = 1_000;

/// Why routes did not settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BGP did not settle within {ROUNDS_MAX} rounds: the relationships allow a dispute (a provider loop?)")]
pub struct NotConverged;

/// Every router's best route for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rib {
    best: Vec<Option<Route>>,
}

/// One leg of a forwarded packet's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Inside one AS, between two of its routers (the same router: no leg at all).
    Inside { from: RouterId, to: RouterId },
    /// Across a session, from one AS to the next.
    Across { session: SessionId, from: RouterId, to: RouterId },
}

impl Rib {
    /// The routes `announcements` give every router of `graph`, to a fixed point;
    /// `distance(a, b)` is an AS's own distance between two of its routers (hot potato).
    pub fn converge(
        graph: &Graph,
        announcements: &[Announcement],
        distance: &dyn Fn(RouterId, RouterId) -> u64,
    ) -> Result<Rib, NotConverged> {
        let mut rib = Rib { best: vec![None; graph.routers()] };
        for _ in 0..ROUNDS_MAX {
            let next = rib.round(graph, announcements, distance);
            if next == rib.best {
                return Ok(rib);
            }
            rib.best = next;
        }
        Err(NotConverged)
    }

    /// One synchronous round: every router's best from what every router exported at
    /// the end of the last.
    fn round(
        &self,
        graph: &Graph,
        announcements: &[Announcement],
        distance: &dyn Fn(RouterId, RouterId) -> u64,
    ) -> Vec<Option<Route>> {
        // Per AS, every route one of its routers holds from outside or originates.
        let mut offered: Vec<Vec<Route>> = vec![Vec::new(); graph.ases()];
        for a in announcements {
            let path = vec![graph.as_of(a.at); usize::from(a.prepend)];
            let own =
                Route { path, learned: Learned::Origin, exit: a.at, via: None, no_export: a.no_export, scope: a.scope };
            offered[graph.as_of(a.at).0].push(own);
        }
        for (s, session) in graph.sessions.iter().enumerate() {
            for (from, to) in [(session.a, session.b), (session.b, session.a)] {
                if let Some(route) = self.exported(graph, announcements, SessionId(s), from, to) {
                    offered[graph.as_of(to).0].push(route);
                }
            }
        }
        (0..graph.routers())
            .map(|r| {
                let me = RouterId(r);
                // A router that announces keeps its own announcement, however long its
                // prepends make it: it is what it passes on.
                let key = |route: &Route| {
                    (
                        route.exit != me || route.via.is_some(),
                        route.learned,
                        route.path.len(),
                        distance(me, route.exit),
                        route.via,
                        route.exit,
                    )
                };
                offered[graph.as_of(me).0].iter().min_by_key(|route| key(route)).cloned()
            })
            .collect()
    }

    /// What router `from` exports over session `s` to router `to`, as `to` receives it.
    fn exported(
        &self,
        graph: &Graph,
        announcements: &[Announcement],
        s: SessionId,
        from: RouterId,
        to: RouterId,
    ) -> Option<Route> {
        let route = self.best[from.0].as_ref()?;
        let (_, to_is) = graph.far_end(s, from);
        let (me, them) = (graph.as_of(from), graph.as_of(to));
        let valley_free = matches!(route.learned, Learned::Origin | Learned::Customer) || to_is == Relation::Customer;
        let looped = route.path.contains(&them);
        let kept = route.no_export && route.learned != Learned::Origin;
        let out_of_scope = route.scope.is_some_and(|z| graph.router_zone[to.0] != z);
        // An origin is announced by its own router only: a POP that withdrew does not
        // carry another POP's prefix over its AS (anycast POPs have no transit backbone).
        let foreign_origin = route.learned == Learned::Origin && route.exit != from;
        let selected = route.learned != Learned::Origin
            || announcements
                .iter()
                .find(|a| a.at == route.exit)
                .is_none_or(|a| a.only_to.is_empty() || a.only_to.contains(&them));
        if !valley_free || looped || kept || out_of_scope || foreign_origin || !selected {
            return None;
        }
        let (_, from_is) = graph.far_end(s, to);
        let mut path = Vec::with_capacity(route.path.len() + 1);
        path.push(me);
        path.extend_from_slice(&route.path);
        let (no_export, scope) = (route.no_export, route.scope);
        Some(Route { path, learned: from_is.into(), exit: to, via: Some(s), no_export, scope })
    }

    /// Router `r`'s best route, if it has one.
    pub fn best(&self, r: RouterId) -> Option<&Route> {
        self.best[r.0].as_ref()
    }

    /// The way a packet from router `from` takes to the prefix's origin: the legs, and
    /// the origin router it reaches; `None` where a router on the way has no route.
    pub fn forward(&self, graph: &Graph, from: RouterId) -> Option<(Vec<Leg>, RouterId)> {
        let mut legs = Vec::new();
        let mut at = from;
        // Each AS is crossed at most once on a loop-free path.
        for _ in 0..=graph.ases() {
            let route = self.best[at.0].as_ref()?;
            if route.exit != at {
                legs.push(Leg::Inside { from: at, to: route.exit });
            }
            let Some(session) = route.via else { return Some((legs, route.exit)) };
            let (next, _) = graph.far_end(session, route.exit);
            legs.push(Leg::Across { session, from: route.exit, to: next });
            at = next;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph of one router per AS, with sessions (a, b, what b is to a).
    fn one_router_each(ases: usize, links: &[(usize, usize, Relation)]) -> Graph {
        let mut g = Graph::new(ases);
        for a in 0..ases {
            g.add_router(AsId(a));
        }
        for &(a, b, rel) in links {
            g.add_session(RouterId(a), RouterId(b), rel).unwrap();
        }
        g
    }

    fn flat(_: RouterId, _: RouterId) -> u64 {
        0
    }

    fn origin_of(rib: &Rib, g: &Graph, from: usize) -> Option<usize> {
        rib.forward(g, RouterId(from)).map(|(_, o)| o.0)
    }

    use Relation::{Customer, Peer, Provider};

    #[test]
    fn a_customer_route_wins_over_a_shorter_one_from_a_peer() {
        // AS 0 announces through a long customer chain (0 → 1 → 2, each the next one's
        // customer) and AS 3 announces straight to AS 2 as its peer.
        let g = one_router_each(4, &[(1, 0, Customer), (2, 1, Customer), (2, 3, Peer)]);
        let rib =
            Rib::converge(&g, &[Announcement::from(RouterId(0)), Announcement::from(RouterId(3))], &flat).unwrap();
        let best = rib.best(RouterId(2)).unwrap();
        assert_eq!(best.learned, Learned::Customer);
        assert_eq!(best.path, vec![AsId(1), AsId(0)]);
        assert_eq!(origin_of(&rib, &g, 2), Some(0));
    }

    #[test]
    fn a_peer_route_is_not_passed_to_another_peer_or_a_provider() {
        // AS 1 learns the prefix from its peer AS 0; AS 2 (another peer of 1) and AS 3 (1's
        // provider) must not hear it through 1: that would be a valley.
        let g = one_router_each(4, &[(1, 0, Peer), (1, 2, Peer), (1, 3, Provider)]);
        let rib = Rib::converge(&g, &[Announcement::from(RouterId(0))], &flat).unwrap();
        assert!(rib.best(RouterId(1)).is_some());
        assert_eq!(rib.best(RouterId(2)), None);
        assert_eq!(rib.best(RouterId(3)), None);
    }

    #[test]
    fn a_provider_passes_a_customers_route_to_everyone() {
        let g = one_router_each(4, &[(1, 0, Customer), (1, 2, Peer), (1, 3, Provider)]);
        let rib = Rib::converge(&g, &[Announcement::from(RouterId(0))], &flat).unwrap();
        for r in 1..4 {
            assert_eq!(origin_of(&rib, &g, r), Some(0), "router {r}");
        }
    }

    #[test]
    fn prepending_moves_a_client_to_the_other_pop() {
        // Two POPs of one CDN (AS 0, routers 0 and 1), each behind its own transit (AS 1,
        // AS 2), both transits providers of the client's access network (AS 3).
        let mut g = Graph::new(4);
        let pops = [g.add_router(AsId(0)), g.add_router(AsId(0))];
        let transits = [g.add_router(AsId(1)), g.add_router(AsId(2))];
        let access = g.add_router(AsId(3));
        for i in 0..2 {
            g.add_session(transits[i], pops[i], Customer).unwrap();
            g.add_session(access, transits[i], Provider).unwrap();
        }
        let plain = [Announcement::from(pops[0]), Announcement::from(pops[1])];
        let rib = Rib::converge(&g, &plain, &flat).unwrap();
        // Equal in every way but the session order: the first POP's.
        assert_eq!(rib.forward(&g, access).unwrap().1, pops[0]);
        let mut prepended = plain.clone();
        prepended[0].prepend = 2;
        let rib = Rib::converge(&g, &prepended, &flat).unwrap();
        assert_eq!(rib.forward(&g, access).unwrap().1, pops[1]);
        assert_eq!(rib.best(access).unwrap().path, vec![AsId(2), AsId(0)]);
    }

    #[test]
    fn hot_potato_sends_each_router_to_its_nearest_exit() {
        // A transit (AS 1) with routers at two places, each with a session to one POP of
        // the CDN (AS 0); an access network (AS 2) buys transit at both places.
        let mut g = Graph::new(3);
        let pops = [g.add_router(AsId(0)), g.add_router(AsId(0))];
        let transit = [g.add_router(AsId(1)), g.add_router(AsId(1))];
        let access = [g.add_router(AsId(2)), g.add_router(AsId(2))];
        for i in 0..2 {
            g.add_session(transit[i], pops[i], Customer).unwrap();
            g.add_session(access[i], transit[i], Provider).unwrap();
        }
        // Routers with the same index sit at the same place; the two places are far apart.
        let distance = |a: RouterId, b: RouterId| if (a.0 % 2) == (b.0 % 2) { 0 } else { 100 };
        let rib = Rib::converge(&g, &[Announcement::from(pops[0]), Announcement::from(pops[1])], &distance).unwrap();
        for i in 0..2 {
            let (legs, origin) = rib.forward(&g, access[i]).unwrap();
            assert_eq!(origin, pops[i], "from access router {i}");
            assert!(legs.iter().all(|l| !matches!(l, Leg::Inside { .. })), "no detour inside an AS: {legs:?}");
        }
    }

    #[test]
    fn a_pop_that_prepends_still_announces_while_another_pop_does_not() {
        let mut g = Graph::new(3);
        let pops = [g.add_router(AsId(0)), g.add_router(AsId(0))];
        let transits = [g.add_router(AsId(1)), g.add_router(AsId(2))];
        for i in 0..2 {
            g.add_session(transits[i], pops[i], Customer).unwrap();
        }
        let mut prepended = Announcement::from(pops[0]);
        prepended.prepend = 3;
        let rib = Rib::converge(&g, &[prepended, Announcement::from(pops[1])], &flat).unwrap();
        let heard = rib.best(transits[0]).expect("the prepending POP's transit hears it");
        assert_eq!(heard.path, vec![AsId(0); 4]);
        assert_eq!(rib.forward(&g, transits[0]).unwrap().1, pops[0]);
    }

    #[test]
    fn no_export_stays_with_the_neighbour_that_received_it() {
        let g = one_router_each(3, &[(1, 0, Customer), (2, 1, Customer)]);
        let mut a = Announcement::from(RouterId(0));
        a.no_export = true;
        let rib = Rib::converge(&g, &[a], &flat).unwrap();
        assert!(rib.best(RouterId(1)).is_some());
        assert_eq!(rib.best(RouterId(2)), None);
    }

    #[test]
    fn a_region_only_route_stops_at_the_regions_edge() {
        // A transit (AS 1) with a router in zone 1 (where the POP is) and one in zone 2;
        // a customer network in each zone. Scoped to zone 1, the route reaches the
        // customer there and the transit's own far router (iBGP), never the far customer.
        let mut g = Graph::new(4);
        let pop = g.add_router_in(AsId(0), Zone(1));
        let near = g.add_router_in(AsId(1), Zone(1));
        let far = g.add_router_in(AsId(1), Zone(2));
        let near_customer = g.add_router_in(AsId(2), Zone(1));
        let far_customer = g.add_router_in(AsId(3), Zone(2));
        g.add_session(near, pop, Customer).unwrap();
        g.add_session(near, near_customer, Customer).unwrap();
        g.add_session(far, far_customer, Customer).unwrap();
        let mut a = Announcement::from(pop);
        a.scope = Some(Zone(1));
        let rib = Rib::converge(&g, std::slice::from_ref(&a), &flat).unwrap();
        assert!(rib.best(near_customer).is_some());
        assert!(rib.best(far).is_some(), "the transit's own routers hear it over iBGP");
        assert_eq!(rib.best(far_customer), None);
        // Unscoped, the far customer hears it too.
        a.scope = None;
        let rib = Rib::converge(&g, &[a], &flat).unwrap();
        assert_eq!(rib.forward(&g, far_customer).map(|(_, o)| o), Some(pop));
    }

    #[test]
    fn a_selective_announcement_reaches_only_the_named_neighbours() {
        // The CDN (AS 0) has two transits (AS 1, AS 2) and announces only to AS 2.
        let g = one_router_each(3, &[(1, 0, Customer), (2, 0, Customer), (1, 2, Peer)]);
        let mut a = Announcement::from(RouterId(0));
        a.only_to = vec![AsId(2)];
        let rib = Rib::converge(&g, &[a], &flat).unwrap();
        assert_eq!(rib.best(RouterId(2)).unwrap().path, vec![AsId(0)]);
        // AS 1 hears it only through its peer AS 2.
        let best = rib.best(RouterId(1)).unwrap();
        assert_eq!((best.learned, best.path.clone()), (Learned::Peer, vec![AsId(2), AsId(0)]));
    }

    #[test]
    fn a_withdrawal_moves_the_catchment_and_a_lone_pop_leaves_none() {
        let mut g = Graph::new(3);
        let pops = [g.add_router(AsId(0)), g.add_router(AsId(0))];
        let transit = g.add_router(AsId(1));
        let access = g.add_router(AsId(2));
        g.add_session(transit, pops[0], Customer).unwrap();
        g.add_session(transit, pops[1], Customer).unwrap();
        g.add_session(access, transit, Provider).unwrap();
        let both = Rib::converge(&g, &[Announcement::from(pops[0]), Announcement::from(pops[1])], &flat).unwrap();
        assert_eq!(both.forward(&g, access).unwrap().1, pops[0]);
        let one = Rib::converge(&g, &[Announcement::from(pops[1])], &flat).unwrap();
        assert_eq!(one.forward(&g, access).unwrap().1, pops[1]);
        let none = Rib::converge(&g, &[], &flat).unwrap();
        assert_eq!(none.forward(&g, access), None);
    }

    #[test]
    fn a_pop_that_does_not_announce_passes_on_no_other_pops_route() {
        // Two POPs of the CDN (AS 0), each with its own transit; only the second announces.
        // The first POP's transit must reach it over the internet (through its peer), not
        // through the first POP.
        let mut g = Graph::new(3);
        let pops = [g.add_router(AsId(0)), g.add_router(AsId(0))];
        let transits = [g.add_router(AsId(1)), g.add_router(AsId(2))];
        g.add_session(transits[0], pops[0], Customer).unwrap();
        g.add_session(transits[1], pops[1], Customer).unwrap();
        g.add_session(transits[0], transits[1], Peer).unwrap();
        let rib = Rib::converge(&g, &[Announcement::from(pops[1])], &flat).unwrap();
        let best = rib.best(transits[0]).unwrap();
        assert_eq!((best.learned, best.path.clone()), (Learned::Peer, vec![AsId(2), AsId(0)]));
        assert_eq!(rib.forward(&g, transits[0]).unwrap().1, pops[1]);
    }

    #[test]
    fn a_route_never_returns_to_an_as_on_its_path() {
        // A triangle of mutual customers is not valley-free, but loop prevention alone
        // keeps every path loop-free and the routes settle.
        let g = one_router_each(3, &[(0, 1, Customer), (1, 2, Customer), (2, 0, Customer)]);
        let rib = Rib::converge(&g, &[Announcement::from(RouterId(0))], &flat).unwrap();
        for r in 0..3 {
            let route = rib.best(RouterId(r)).unwrap();
            let mut seen = route.path.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), route.path.len(), "router {r}: {:?}", route.path);
            assert!(!route.path.contains(&g.as_of(RouterId(r))), "router {r}");
        }
    }

    #[test]
    fn a_session_inside_one_as_or_to_no_router_is_refused() {
        let mut g = Graph::new(2);
        let a = g.add_router(AsId(0));
        let b = g.add_router(AsId(0));
        assert_eq!(g.add_session(a, b, Peer), Err(GraphError::SameAs(0)));
        assert_eq!(g.add_session(a, RouterId(7), Peer), Err(GraphError::NoRouter(7, 2)));
    }

    #[test]
    fn the_same_inputs_give_the_same_routes() {
        let g = one_router_each(
            5,
            &[(1, 0, Customer), (2, 0, Customer), (3, 1, Customer), (3, 2, Customer), (4, 3, Customer)],
        );
        let a = [Announcement::from(RouterId(0))];
        let first = Rib::converge(&g, &a, &flat).unwrap();
        for _ in 0..3 {
            assert_eq!(Rib::converge(&g, &a, &flat).unwrap(), first);
        }
        // Equal paths through AS 1 and AS 2: the earlier session decides, for every run.
        assert_eq!(first.best(RouterId(3)).unwrap().path, vec![AsId(1), AsId(0)]);
    }
}
