//! Which POP each client group enters when BGP over the file's AS-level internet
//! (`internet.ases`, `internet.ixps`, each POP's `upstreams` and levers) decides, the way
//! it goes there, and what that way costs. The graph is built once per file
//! ([`Internetwork::build`]); routes are computed once per routing change
//! ([`Internetwork::catchments`], over [`crate::routing::Rib`]), never per packet.
//!
//! How the file becomes a graph (each rule in one place, here):
//! - Every network has a router at each of its places (`at`), at each client group it
//!   serves, at each IXP it is a member of, and at each POP that names it an upstream
//!   (it sells the POP a port there). The CDN (AS 64500) has a router at each POP.
//! - A customer's router meets its provider at the provider's router nearest it.
//! - Peers (`peers:`, either side naming the other) meet at every place they share, or at
//!   the nearest pair of their routers when they share none.
//! - An IXP's members peer pairwise at the IXP's place; a POP that names the IXP peers with
//!   every member there. A POP's transit is its provider.
//! - Two routers meet over one session, the first these rules make, in their order here
//!   (POP upstreams, providers, peers, IXPs): a customer at its provider's IXP stays its
//!   customer there, as networks do not peer with those that pay them.
//! - A client group no network lists gets an access network of its own (`access/NAME`,
//!   AS 4,100,000,000 + its index) at its place, a customer of the network with a router
//!   nearest it.
//!
//! The delay of a way is the internet model's between its two ends plus fibre's over its
//! length past the route the measured pairs take (the model's long-haul stretch times
//! the great circle; [`way_one_way_ns`]): a detour through a far exchange costs its
//! extra fibre, a way as long as the measured routes costs what they cost, and the
//! model's overheads are paid once. Hot potato inside a network uses the same model between its routers. A
//! pinned round trip (`internet.rtt`) replaces the whole way's for its pair.

use anyedge_ccn::geo::{Location, great_circle_km};

use anyedge_ccn::delay::Area;

use crate::routing::{Announcement, AsId, Graph, Leg, NotConverged, Relation, Rib, RouterId, Zone};
use crate::{InternetEnd, Levers, Topology, Upstream};

/// First AS number of the access networks the file leaves implicit.
pub const ACCESS_ASN_BASE: u32 = 4_100_000_000;

/// The file's AS-level internet as a routing graph.
#[derive(Debug, Clone)]
pub struct Internetwork {
    graph: Graph,
    /// Per router: where it is.
    place: Vec<Location>,
    /// Per AS: its name and number; the CDN is the last.
    names: Vec<String>,
    numbers: Vec<u32>,
    /// Per POP: its router.
    pop_router: Vec<RouterId>,
    /// Per client group: its access network's router at the group's place.
    group_router: Vec<RouterId>,
    /// Per AS: one-way delay between each pair of its routers, by their position in
    /// `Graph::routers_of` (hot potato's distance).
    inside_ns: Vec<Vec<u64>>,
    /// Per router: its position in its AS's `routers_of`.
    local: Vec<usize>,
}

/// The file's AS-level internet worked out as needed and kept with the topology: the
/// graph, and per POP the round trip of every group's way to it when it is the only POP
/// announcing (the internet leg's delay, [`Topology::internet_rtt_ns`]). A cache: two
/// are equal whatever they hold, and a clone starts empty (a changed copy of a topology
/// works its own out).
#[derive(Default)]
pub struct Ways {
    net: std::sync::OnceLock<Internetwork>,
    per_pop: std::sync::OnceLock<Vec<std::sync::OnceLock<Vec<Option<u64>>>>>,
}

impl Clone for Ways {
    fn clone(&self) -> Ways {
        Ways::default()
    }
}

impl PartialEq for Ways {
    fn eq(&self, _: &Ways) -> bool {
        true
    }
}

impl std::fmt::Debug for Ways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ways")
    }
}

impl Ways {
    /// The graph of `t`'s AS-level internet, built the first time it is asked for.
    pub fn internetwork(&self, t: &Topology) -> &Internetwork {
        self.net.get_or_init(|| Internetwork::build(t))
    }

    /// The round trip of group `g`'s way to POP `p` when `p` alone announces (with its
    /// levers); `None` when BGP gives the group no way to it.
    pub fn rtt_ns(&self, t: &Topology, g: usize, p: usize) -> Option<u64> {
        let per_pop = self.per_pop.get_or_init(|| (0..t.pops.len()).map(|_| Default::default()).collect());
        let rtts = per_pop[p].get_or_init(|| {
            let net = self.internetwork(t);
            match net.alone(t, p) {
                Ok(rib) => (0..t.clients.len())
                    .map(|g| net.follow(t, &rib, g).map(|f| 2 * way_one_way_ns(t, &f.way)))
                    .collect(),
                Err(NotConverged) => vec![None; t.clients.len()],
            }
        });
        rtts[g]
    }
}

/// Where one client group goes for one VIP.
#[derive(Debug, Clone, PartialEq)]
pub struct Catchment {
    /// The POP it enters; `None`: no route (every POP it could reach withdrew, or policy
    /// lets no announcement reach its network).
    pub pop: Option<usize>,
    /// The AS path from the group's access network to the CDN, prepends included.
    pub path: Vec<u32>,
    /// The same by network names.
    pub path_names: Vec<String>,
    /// The places the way passes, from the group to the POP (consecutive duplicates
    /// dropped).
    pub way: Vec<Location>,
    /// The round trip of the group↔POP leg alone, before the last mile.
    pub rtt_ns: u64,
    /// The POP of those announcing with the least round trip straight to the group
    /// (the internet model's, or the pinned one), and that round trip.
    pub nearest: Option<usize>,
    pub nearest_rtt_ns: u64,
    /// How much farther the POP entered is than the nearest announcing POP by great
    /// circle, km (0 when it is the nearest).
    pub extra_km: f64,
    /// Over an AS-level internet: the POP's upstream router the way enters it by, the
    /// first to hear the POP's updates ...
    pub upstream: Option<RouterId>,
    /// ... and the BGP speakers an update crosses from there to the group's access router:
    /// one per session to another network, two per way inside one (its route reflector,
    /// then the router); 0 without an AS-level internet.
    pub hops: u32,
}

impl Catchment {
    /// What routing adds over the nearest POP's straight round trip, ms (negative when
    /// the way BGP picked beats the model's straight path).
    pub fn inflation_ms(&self) -> f64 {
        (self.rtt_ns as f64 - self.nearest_rtt_ns as f64) / 1e6
    }
}

impl Catchment {
    fn none() -> Catchment {
        Catchment {
            pop: None,
            path: Vec::new(),
            path_names: Vec::new(),
            way: Vec::new(),
            rtt_ns: 0,
            nearest: None,
            nearest_rtt_ns: 0,
            extra_km: 0.0,
            upstream: None,
            hops: 0,
        }
    }
}

/// A group's way under one routing state, as [`Internetwork::follow`] finds it.
struct Followed {
    pop: usize,
    ases: Vec<AsId>,
    way: Vec<Location>,
    upstream: RouterId,
    hops: u32,
}

/// How a POP's update reaches a group whose packets take `legs` (from the group's access
/// router to the POP): the POP's upstream router the last leg leaves from hears it first,
/// then every leg before, backwards, passes it on: a session to another network one
/// speaker, a way inside a network two (its route reflector, then the router; the lab's
/// networks of several routers have one, as large networks do).
fn crossing(legs: &[Leg]) -> Option<(RouterId, u32)> {
    let (last, before) = legs.split_last()?;
    let Leg::Across { from: upstream, .. } = *last else { return None };
    let hops = before.iter().map(|leg| if matches!(leg, Leg::Inside { .. }) { 2 } else { 1 }).sum();
    Some((upstream, hops))
}

/// Where every client group goes for VIP `vip` when the POPs `up` accepts announce it:
/// over the file's AS-level internet when it has one, else by [`crate::bgp`]'s rule (each
/// POP its own transit; a group enters its nearest POP, or the first of its `catchment:`
/// list, and the path is its access network, that POP's transit, the CDN).
pub fn of(t: &Topology, vip: usize, up: &dyn Fn(usize) -> bool) -> Result<Catchments, NotConverged> {
    of_with(t, &crate::bgp::Attacher::new(t), vip, up)
}

/// [`of`] with an attacher kept across VIPs (it remembers where each group attaches).
pub fn of_with(
    t: &Topology,
    attacher: &crate::bgp::Attacher,
    vip: usize,
    up: &dyn Fn(usize) -> bool,
) -> Result<Catchments, NotConverged> {
    let c = if t.internet.has_ases() {
        t.internet.ways.internetwork(t).catchments(t, vip, up)?
    } else {
        Catchments { groups: (0..t.clients.len()).map(|g| by_transit_per_pop(t, attacher, g, vip, up)).collect() }
    };
    Ok(c.with_nearest(t, attacher, vip, up))
}

/// Group `g`'s catchment by [`crate::bgp`]'s rule.
fn by_transit_per_pop(
    t: &Topology,
    attacher: &crate::bgp::Attacher,
    g: usize,
    vip: usize,
    up: &dyn Fn(usize) -> bool,
) -> Catchment {
    let attach = attacher.attach(g);
    let publish = &t.vips[vip].pops;
    let pop = match attach {
        Some(at) if t.clients[g].catchment.is_none() && publish.contains(&at) && up(at) => Some(at),
        _ => t.pop_order_attached(g, vip, attach).into_iter().find(|&p| up(p)),
    };
    let Some(pop) = pop else { return Catchment::none() };
    let attach = attach.unwrap_or(pop);
    let mut path = vec![ACCESS_ASN_BASE + g as u32, crate::bgp::transit_asn(attach)];
    let mut path_names = vec![format!("access/{}", t.clients[g].name), format!("transit/{}", t.pops[attach].name)];
    if attach != pop {
        path.push(crate::bgp::transit_asn(pop));
        path_names.push(format!("transit/{}", t.pops[pop].name));
    }
    path.push(crate::bgp::CDN_ASN);
    path_names.push("cdn".to_string());
    let way = vec![t.clients[g].location, t.pops[pop].location];
    Catchment {
        pop: Some(pop),
        path,
        path_names,
        way,
        rtt_ns: t.internet_rtt_ns(g, InternetEnd::Pop(pop)),
        ..Catchment::none()
    }
}

/// Every client group's catchment for one VIP in one routing state.
#[derive(Debug, Clone, PartialEq)]
pub struct Catchments {
    pub groups: Vec<Catchment>,
}

impl Catchments {
    /// Each group's nearest announcing POP, for its inflation.
    fn with_nearest(
        mut self,
        t: &Topology,
        attacher: &crate::bgp::Attacher,
        vip: usize,
        up: &dyn Fn(usize) -> bool,
    ) -> Catchments {
        let announcing: Vec<usize> = t.vips[vip].pops.iter().copied().filter(|&p| up(p)).collect();
        for (g, c) in self.groups.iter_mut().enumerate() {
            let at = t.clients[g].location;
            c.nearest = attacher.nearest_of(g, &announcing);
            c.nearest_rtt_ns = c.nearest.map_or(0, |p| t.straight_rtt_ns(g, InternetEnd::Pop(p)));
            let km = |p: usize| great_circle_km(at, t.pops[p].location);
            let geo = attacher.nearest_by_great_circle(at, &announcing);
            let least = geo.iter().map(|&p| km(p)).fold(f64::INFINITY, f64::min);
            c.extra_km = c.pop.map_or(0.0, |p| (km(p) - least).max(0.0));
        }
        self
    }
}

/// Builds the graph: one pass per rule of the module doc.
struct Builder<'t> {
    t: &'t Topology,
    graph: Graph,
    place: Vec<Location>,
    /// (AS, place) → router, for finding a router at a place.
    at: std::collections::BTreeMap<(usize, [u64; 2]), RouterId>,
    /// The pairs of routers a session joins already.
    met: std::collections::BTreeSet<(RouterId, RouterId)>,
}

/// A place's zone for region-only communities: its area of the delay model.
fn zone(at: Location) -> Zone {
    area_zone(Area::of(at))
}

fn area_zone(a: Area) -> Zone {
    Zone(Area::ALL.iter().position(|&x| x == a).unwrap_or(0) as u8)
}

fn key(l: Location) -> [u64; 2] {
    [l[0].to_bits(), l[1].to_bits()]
}

impl Builder<'_> {
    fn router(&mut self, asn: usize, at: Location) -> RouterId {
        if let Some(&r) = self.at.get(&(asn, key(at))) {
            return r;
        }
        let r = self.graph.add_router_in(AsId(asn), zone(at));
        self.place.push(at);
        self.at.insert((asn, key(at)), r);
        r
    }

    /// `asn`'s router nearest `to` (the earlier of a tie).
    fn nearest(&self, asn: usize, to: Location) -> Option<RouterId> {
        let km = |r: &&RouterId| great_circle_km(self.place[r.0], to);
        self.graph.routers_of(AsId(asn)).iter().min_by(|a, b| km(a).total_cmp(&km(b))).copied()
    }

    /// One session between two routers, however many rules join them (two peers at an
    /// IXP where both have a router already meet there once): a second would carry the
    /// same routes.
    fn session(&mut self, a: RouterId, b: RouterId, b_is: Relation) {
        if !self.met.insert((a.min(b), a.max(b))) {
            return;
        }
        // Two routers of one AS never meet over eBGP; the builder only joins different ASes.
        let _ = self.graph.add_session(a, b, b_is);
    }

    /// Customers meet each provider at the provider's router nearest each of theirs.
    fn providers(&mut self) {
        for (c, net) in self.t.internet.ases.iter().enumerate() {
            for &p in &net.providers {
                let mine: Vec<RouterId> = self.graph.routers_of(AsId(c)).to_vec();
                let mut met = Vec::new();
                for r in mine {
                    if let Some(q) = self.nearest(p, self.place[r.0])
                        && !met.contains(&(r, q))
                    {
                        met.push((r, q));
                        self.session(r, q, Relation::Provider);
                    }
                }
            }
        }
    }

    /// Peers meet at every place they share, or at their nearest pair of routers.
    fn peer(&mut self, a: usize, b: usize) {
        let ra: Vec<RouterId> = self.graph.routers_of(AsId(a)).to_vec();
        let rb: Vec<RouterId> = self.graph.routers_of(AsId(b)).to_vec();
        let mut shared = false;
        for &x in &ra {
            if let Some(&y) = self.at.get(&(b, key(self.place[x.0]))) {
                self.session(x, y, Relation::Peer);
                shared = true;
            }
        }
        if shared {
            return;
        }
        let km = |&(x, y): &(RouterId, RouterId)| great_circle_km(self.place[x.0], self.place[y.0]);
        let pairs = ra.iter().flat_map(|&x| rb.iter().map(move |&y| (x, y)));
        if let Some((x, y)) = pairs.min_by(|p, q| km(p).total_cmp(&km(q))) {
            self.session(x, y, Relation::Peer);
        }
    }
}

/// Which of `t`'s networks have a customer: another network that buys from it, or a POP.
fn sellers(t: &Topology) -> Vec<bool> {
    let mut sells = vec![false; t.internet.ases.len()];
    for net in &t.internet.ases {
        for &p in &net.providers {
            sells[p] = true;
        }
    }
    for pop in &t.pops {
        for u in &pop.bgp.upstreams {
            if let Upstream::As(a) = *u {
                sells[a] = true;
            }
        }
    }
    sells
}

impl Internetwork {
    /// The graph of `t`'s AS-level internet (`t.internet.has_ases()`).
    pub fn build(t: &Topology) -> Internetwork {
        let nets = &t.internet.ases;
        let implicit: Vec<usize> =
            (0..t.clients.len()).filter(|&g| !nets.iter().any(|n| n.clients.contains(&g))).collect();
        let cdn = nets.len() + implicit.len();
        let mut b = Builder {
            t,
            graph: Graph::new(cdn + 1),
            place: Vec::new(),
            at: Default::default(),
            met: Default::default(),
        };
        // Routers: places, client groups, IXPs, POP upstreams; the CDN at each POP.
        for (a, net) in nets.iter().enumerate() {
            for p in &net.at {
                b.router(a, p.location);
            }
            for &g in &net.clients {
                b.router(a, t.clients[g].location);
            }
        }
        for ixp in &t.internet.ixps {
            for &m in &ixp.members {
                b.router(m, ixp.at.location);
            }
        }
        let pop_router: Vec<RouterId> = t.pops.iter().map(|p| b.router(cdn, p.location)).collect();
        for (p, pop) in t.pops.iter().enumerate() {
            for u in &pop.bgp.upstreams {
                if let Upstream::As(a) = *u {
                    let q = b.router(a, pop.location);
                    b.session(pop_router[p], q, Relation::Provider);
                }
            }
        }
        b.providers();
        let mut peerings: Vec<(usize, usize)> = Vec::new();
        for (a, net) in nets.iter().enumerate() {
            peerings.extend(net.peers.iter().map(|&p| (a.min(p), a.max(p))));
        }
        peerings.sort_unstable();
        peerings.dedup();
        for (x, y) in peerings {
            b.peer(x, y);
        }
        // Two members without customers pass each other nothing (a network passes a peer
        // only its customers' routes, and only the operator's POPs originate one), so no
        // session is made between them: an exchange of stub networks costs sessions in
        // its members, not in their square.
        let sells = sellers(t);
        for ixp in &t.internet.ixps {
            let routers: Vec<(usize, RouterId)> =
                ixp.members.iter().map(|&m| (m, b.router(m, ixp.at.location))).collect();
            for (i, &(m, x)) in routers.iter().enumerate() {
                for &(n, y) in &routers[i + 1..] {
                    if sells[m] || sells[n] {
                        b.session(x, y, Relation::Peer);
                    }
                }
            }
        }
        for (p, pop) in t.pops.iter().enumerate() {
            for u in &pop.bgp.upstreams {
                if let Upstream::Ixp(x) = *u {
                    let routers: Vec<RouterId> = t.internet.ixps[x]
                        .members
                        .iter()
                        .map(|&m| b.router(m, t.internet.ixps[x].at.location))
                        .collect();
                    for q in routers {
                        b.session(pop_router[p], q, Relation::Peer);
                    }
                }
            }
        }
        // Implicit access networks last, so "nearest" sees every other network's routers.
        let mut group_router = vec![RouterId(0); t.clients.len()];
        for (a, net) in nets.iter().enumerate() {
            for &g in &net.clients {
                group_router[g] = b.router(a, t.clients[g].location);
            }
        }
        for (i, &g) in implicit.iter().enumerate() {
            let me = b.router(nets.len() + i, t.clients[g].location);
            group_router[g] = me;
            let provider =
                (0..nets.len()).filter_map(|a| b.nearest(a, t.clients[g].location).map(|r| (a, r))).min_by(|x, y| {
                    let km = |r: RouterId| great_circle_km(b.place[r.0], t.clients[g].location);
                    km(x.1).total_cmp(&km(y.1))
                });
            if let Some((_, r)) = provider {
                b.session(me, r, Relation::Provider);
            }
        }
        let mut names: Vec<String> = nets.iter().map(|n| n.name.clone()).collect();
        let mut numbers: Vec<u32> = nets.iter().map(|n| n.asn).collect();
        for (i, &g) in implicit.iter().enumerate() {
            names.push(format!("access/{}", t.clients[g].name));
            numbers.push(ACCESS_ASN_BASE + g as u32);
            debug_assert_eq!(names.len(), nets.len() + i + 1);
        }
        names.push("cdn".to_string());
        numbers.push(crate::bgp::CDN_ASN);
        let Builder { graph, place, .. } = b;
        let (inside_ns, local) = inside_delays(t, &graph, &place);
        Internetwork { graph, place, names, numbers, pop_router, group_router, inside_ns, local }
    }

    /// Where every client group goes for VIP `vip` when the POPs `up` accepts announce it.
    pub fn catchments(&self, t: &Topology, vip: usize, up: &dyn Fn(usize) -> bool) -> Result<Catchments, NotConverged> {
        let rib = self.converge(t, vip, up)?;
        let groups = (0..t.clients.len()).map(|g| self.catchment(t, &rib, g)).collect();
        Ok(Catchments { groups })
    }

    /// Each group's POP and the round trip of the way it takes there ([`way_one_way_ns`],
    /// both ways) when the POPs `up` accepts announce VIP `vip`; `None` for a group with
    /// no route. What a measurement from the group would see, in this routing state
    /// (`catchments` gives the delay the simulator's links use instead).
    pub fn ways_taken(
        &self,
        t: &Topology,
        vip: usize,
        up: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Option<(usize, u64)>>, NotConverged> {
        let rib = self.converge(t, vip, up)?;
        Ok((0..t.clients.len())
            .map(|g| self.follow(t, &rib, g).map(|f| (f.pop, 2 * way_one_way_ns(t, &f.way))))
            .collect())
    }

    /// Every router's route to VIP `vip` when the POPs `up` accepts announce it.
    fn converge(&self, t: &Topology, vip: usize, up: &dyn Fn(usize) -> bool) -> Result<Rib, NotConverged> {
        let announcements: Vec<Announcement> =
            t.vips[vip].pops.iter().filter(|&&p| up(p)).map(|&p| self.announcement(t, p, t.levers(vip, p))).collect();
        Rib::converge(&self.graph, &announcements, &|a, b| self.distance(a, b))
    }

    fn width(&self, r: RouterId) -> usize {
        self.graph.routers_of(self.graph.as_of(r)).len()
    }

    fn catchment(&self, t: &Topology, rib: &Rib, g: usize) -> Catchment {
        let Some(Followed { pop, ases, way, upstream, hops }) = self.follow(t, rib, g) else {
            return Catchment::none();
        };
        Catchment {
            pop: Some(pop),
            path: ases.iter().map(|a| self.numbers[a.0]).collect(),
            path_names: ases.iter().map(|a| self.names[a.0].clone()).collect(),
            rtt_ns: t.internet_rtt_ns(g, InternetEnd::Pop(pop)),
            way,
            upstream: Some(upstream),
            hops,
            ..Catchment::none()
        }
    }

    /// Group `g`'s way under `rib`: the POP, the ASes from its own, the places passed, and
    /// how the POP's updates reach the group's access router.
    fn follow(&self, t: &Topology, rib: &Rib, g: usize) -> Option<Followed> {
        let from = self.group_router[g];
        let (legs, origin) = rib.forward(&self.graph, from)?;
        let pop = self.pop_router.iter().position(|&r| r == origin)?;
        let mut ases = vec![self.graph.as_of(from)];
        ases.extend(rib.best(from).map_or(&[][..], |r| &r.path[..]));
        let mut way = vec![t.clients[g].location];
        for leg in &legs {
            let (Leg::Inside { to, .. } | Leg::Across { to, .. }) = *leg;
            if way.last().is_none_or(|&l| key(l) != key(self.place[to.0])) {
                way.push(self.place[to.0]);
            }
        }
        let (upstream, hops) = crossing(&legs)?;
        Some(Followed { pop, ases, way, upstream, hops })
    }

    /// Every router's route when POP `p` alone announces with its own levers.
    fn alone(&self, t: &Topology, p: usize) -> Result<Rib, NotConverged> {
        let a = self.announcement(t, p, &t.pops[p].bgp.levers);
        Rib::converge(&self.graph, std::slice::from_ref(&a), &|x, y| self.distance(x, y))
    }

    /// POP `p`'s announcement with `levers`; `announce_to` names upstreams, an IXP
    /// standing for its members.
    fn announcement(&self, t: &Topology, p: usize, levers: &Levers) -> Announcement {
        let only_to = levers
            .announce_to
            .iter()
            .flat_map(|u| match *u {
                Upstream::As(a) => vec![AsId(a)],
                Upstream::Ixp(x) => t.internet.ixps[x].members.iter().map(|&m| AsId(m)).collect(),
            })
            .collect();
        Announcement {
            at: self.pop_router[p],
            prepend: levers.prepend,
            only_to,
            no_export: levers.no_export,
            scope: levers.region.map(area_zone),
        }
    }

    fn distance(&self, a: RouterId, b: RouterId) -> u64 {
        self.inside_ns[self.graph.as_of(a).0][self.local[a.0] * self.width(a) + self.local[b.0]]
    }

    /// The routing graph: routers, their ASes and zones, the sessions.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The CDN's AS (every POP's router is one of its).
    pub fn cdn(&self) -> AsId {
        AsId(self.numbers.len() - 1)
    }

    /// An AS's number and name (`access/NAME` for a group's implicit access network).
    pub fn as_number(&self, a: AsId) -> u32 {
        self.numbers[a.0]
    }

    pub fn as_name(&self, a: AsId) -> &str {
        &self.names[a.0]
    }

    /// Where a router is.
    pub fn place(&self, r: RouterId) -> Location {
        self.place[r.0]
    }

    /// POP `p`'s router, and client group `g`'s (its access network's at its place).
    pub fn pop_router(&self, p: usize) -> RouterId {
        self.pop_router[p]
    }

    pub fn group_router(&self, g: usize) -> RouterId {
        self.group_router[g]
    }

    /// Hot potato's order at router `me`: each router of its AS by its rank, 0 for the
    /// nearest (`me` itself), routers at one distance sharing a rank. What the lab's
    /// speakers carry in the MED, so BIRD picks the exit the core picks.
    pub fn exit_rank(&self, me: RouterId, exit: RouterId) -> u32 {
        let d = self.distance(me, exit);
        let mut nearer: Vec<u64> = self
            .graph
            .routers_of(self.graph.as_of(me))
            .iter()
            .map(|&r| self.distance(me, r))
            .filter(|&x| x < d)
            .collect();
        nearer.sort_unstable();
        nearer.dedup();
        nearer.len() as u32
    }

    /// The zone a region-only community `area` scopes a route to.
    pub fn area_zone(area: Area) -> Zone {
        area_zone(area)
    }

    /// The number of routers and sessions (for reports and checks).
    pub fn size(&self) -> (usize, usize) {
        (self.graph.routers(), self.graph.sessions())
    }
}

/// The one-way delay along `way`: the internet model's between its two ends, plus fibre's
/// over the way's length past the route the model's measurements already take.
///
/// The model's round trips are measured end to end over real routes, detours included:
/// its long-haul stretch `S` ([`anyedge_ccn::delay::DelayModel::route_stretch`], the
/// slope of round trip over fibre's on every measured pair) says a route between places
/// `d` km apart runs `S × d` km. A way through the cities BGP hands it over at pays only
/// for the km past that, at fibre's speed; a way within it costs what the measured
/// routes cost. Charging every km past the great circle at `S` (what anyedge did
/// before) paid the measured routes' detours twice: root-h's vantage points that reach
/// their nearest site came out 18 % above the measurements (data/anycast/README.md).
/// Summing the model's round trips leg by leg would pay its overheads once per leg.
pub fn way_one_way_ns(t: &Topology, way: &[Location]) -> u64 {
    let (Some(&a), Some(&z)) = (way.first(), way.last()) else { return 0 };
    let km: f64 = way.windows(2).map(|w| great_circle_km(w[0], w[1])).sum();
    let measured_route_km = t.internet.delay.route_stretch() * great_circle_km(a, z);
    let past_km = (km - measured_route_km).max(0.0);
    let past_ms = anyedge_ccn::path::fibre_rtt_ms(past_km) / 2.0;
    t.internet.delay.one_way_ns(a, z) + (past_ms * 1e6).round() as u64
}

/// Per AS, the one-way delay between each pair of its routers; per router its position.
fn inside_delays(t: &Topology, graph: &Graph, place: &[Location]) -> (Vec<Vec<u64>>, Vec<usize>) {
    let mut local = vec![0; graph.routers()];
    let mut out = Vec::with_capacity(graph.ases());
    for a in 0..graph.ases() {
        let rs = graph.routers_of(AsId(a));
        for (i, r) in rs.iter().enumerate() {
            local[r.0] = i;
        }
        let mut m = vec![0; rs.len() * rs.len()];
        for (i, x) in rs.iter().enumerate() {
            for (j, y) in rs.iter().enumerate().skip(i + 1) {
                let ns = t.internet.delay.one_way_ns(place[x.0], place[y.0]);
                m[i * rs.len() + j] = ns;
                m[j * rs.len() + i] = ns;
            }
        }
        out.push(m);
    }
    (out, local)
}
