//! Which partition owns what, from the file alone: each region's partition holds its CLB
//! nodes, edge, hosts and egress nodes, the POPs nearest it on the backbone and the client
//! groups nearest it; the lookahead is the smallest delay floor of any link between two
//! partitions (ARCHITECTURE.md, "One world on many cores"). `Scope` is one world's view:
//! the partitions it runs and its outbox of crossings. `partition.rs` runs the worlds.

use std::net::IpAddr;
use std::sync::Arc;

use anyedge_topology::{InternetEnd, Site, Topology};
use rustc_hash::FxHashMap;

use crate::world::events::INTRA_REGION_NS;
use crate::world::events::{Arrival, Ev};
use crate::world::ids::{ClientId, PopId};

/// Below this lookahead a world runs as one partition: windows would cost more than
/// they let run at once.
pub const LOOKAHEAD_MIN_NS: u64 = 50_000;

/// Which partition owns each POP, client group and backend host (a region's partition is
/// its index), and the lookahead between them.
pub struct Partitioning {
    pub count: usize,
    pub(super) pop: Vec<u32>,
    pub(super) group: Vec<u32>,
    /// Backend hosts by address: the region that holds them, or that first reaches them.
    pub(super) host: FxHashMap<IpAddr, u32>,
    /// The smallest delay floor of a link between two partitions.
    pub lookahead_ns: u64,
    /// Per partition: how much traffic it starts (clients × classes), for the threads'
    /// shares.
    pub(super) weight: Vec<u64>,
}

/// The nearest of `regions` to a place, by the backbone's model (ties: the lower index).
fn nearest_region(t: &Topology, at: anyedge_ccn::geo::Location) -> u32 {
    let delay = |r: usize| t.backbone.delay.one_way_ns(at, t.regions[r].location);
    (0..t.regions.len()).min_by_key(|&r| (delay(r), r)).unwrap_or(0) as u32
}

impl Partitioning {
    /// The world's partitions, or `None` when it runs as one: a single region, a control
    /// plane (its Raft nodes talk to every node at once), or a lookahead under
    /// [`LOOKAHEAD_MIN_NS`].
    pub fn of(t: &Topology) -> Option<Partitioning> {
        if t.regions.len() < 2 || t.control.is_some() {
            return None;
        }
        let pop: Vec<u32> = t.pops.iter().map(|p| nearest_region(t, p.location)).collect();
        let group: Vec<u32> = t.clients.iter().map(|g| nearest_region(t, g.location)).collect();
        let host = host_owners(t);
        let lookahead_ns = lookahead_ns(t, (&pop, &group, &host));
        if lookahead_ns < LOOKAHEAD_MIN_NS {
            return None;
        }
        let weight = weights(t, &pop, &group);
        Some(Partitioning { count: t.regions.len(), pop, group, host, lookahead_ns, weight })
    }

    /// The same partitions weighed by `events` (each partition's, measured by an earlier
    /// run: `--balance-by`) instead of the file's expected load, when given.
    pub(super) fn weighed_by(mut self, events: Option<&[u64]>) -> Result<Partitioning, crate::SimError> {
        let Some(events) = events else { return Ok(self) };
        if events.len() != self.count {
            return Err(crate::SimError(format!(
                "--balance-by gives the events of {} partitions; this world has {}: was it measured on another file?",
                events.len(),
                self.count
            )));
        }
        self.weight = events.to_vec();
        Ok(self)
    }

    /// The world that runs each partition when all are spread over `worlds` ([`shares`]):
    /// the one table of which rank runs what, the same on every rank.
    ///
    /// [`shares`]: Partitioning::shares
    pub(super) fn owners(&self, worlds: usize) -> Vec<usize> {
        let shares = self.shares(None, worlds);
        (0..self.count).map(|p| shares.iter().position(|m| m[p]).unwrap_or(0)).collect()
    }

    /// Partitions spread over `worlds` worlds (of those `among` names, else all),
    /// heaviest first onto the lightest world, then evened out by moves and swaps
    /// between worlds; each world's partitions (a partition in exactly one). Ranks take
    /// their shares this way, then their threads theirs. Deterministic: the same weights
    /// give the same shares.
    pub(super) fn shares(&self, among: Option<&[bool]>, worlds: usize) -> Vec<Vec<bool>> {
        let worlds = worlds.max(1);
        let mut order: Vec<usize> = (0..self.count).filter(|&p| among.is_none_or(|m| m[p])).collect();
        order.sort_by_key(|&p| (std::cmp::Reverse(self.weight[p]), p));
        let weight = |p: usize| self.weight[p].max(1);
        let mut load = vec![0u64; worlds];
        let mut of = vec![0usize; self.count];
        for &p in &order {
            let w = (0..worlds).min_by_key(|&w| (load[w], w)).unwrap_or(0);
            load[w] += weight(p);
            of[p] = w;
        }
        for _ in 0..SHARE_STEPS_MAX {
            let Some((p, q, to)) = best_step(&order, &of, &load, weight) else { break };
            let from = of[p];
            load[from] -= weight(p);
            load[to] += weight(p);
            of[p] = to;
            if let Some(q) = q {
                load[to] -= weight(q);
                load[from] += weight(q);
                of[q] = from;
            }
        }
        let mut mine = vec![vec![false; self.count]; worlds];
        for &p in &order {
            mine[of[p]][p] = true;
        }
        mine
    }
}

/// How many moves and swaps evening out shares may take (each strictly narrows two
/// worlds' gap, so it ends anyway; this bounds the work on a world of many partitions).
const SHARE_STEPS_MAX: usize = 1_000;

/// Partition `p` moves to world `to`, and `q` of `to` to `p`'s world when a swap.
type Step = (usize, Option<usize>, usize);

/// The move of a partition `p` to world `to` — or its swap with `q` there — that most
/// narrows the gap between two worlds' loads, if any narrows one (first found on ties).
fn best_step(order: &[usize], of: &[usize], load: &[u64], weight: impl Fn(usize) -> u64) -> Option<Step> {
    let mut best: Option<(u64, Step)> = None;
    let mut consider = |gap: u64, shift: u64, step: Step| {
        // Moving `shift` from the heavier world to the lighter narrows a gap when
        // 0 < shift < gap; the new gap is |gap − 2·shift|.
        if shift == 0 || shift >= gap {
            return;
        }
        let after = gap.abs_diff(2 * shift);
        let narrows = gap - after;
        if best.is_none_or(|(b, _)| narrows > b) {
            best = Some((narrows, step));
        }
    };
    for &p in order {
        let from = of[p];
        for to in (0..load.len()).filter(|&to| load[to] < load[from]) {
            let gap = load[from] - load[to];
            consider(gap, weight(p), (p, None, to));
            for &q in order.iter().filter(|&&q| of[q] == to) {
                consider(gap, weight(p).saturating_sub(weight(q)), (p, Some(q), to));
            }
        }
    }
    best.map(|(_, step)| step)
}

/// A backend host's partition: the region it is in (or behind whose egress it sits);
/// one reached only over the backbone, the first region that lists it.
fn host_owners(t: &Topology) -> FxHashMap<IpAddr, u32> {
    let mut host: FxHashMap<IpAddr, u32> = FxHashMap::default();
    for local in [true, false] {
        for (r, region) in t.regions.iter().enumerate() {
            for b in region.backend_groups.iter().flat_map(|g| &g.backends) {
                let here = matches!(b.site, Site::Local | Site::Internet(_));
                if here == local {
                    host.entry(b.addr.ip()).or_insert(r as u32);
                }
            }
        }
    }
    host
}

/// The smallest delay floor of any link that can join two partitions (and BGP's
/// convergence time): POPs ↔ their VIPs' home regions over the backbone, regions ↔ hosts
/// another partition holds, client groups ↔ their VIPs' POPs and home regions over the
/// internet.
fn lookahead_ns(t: &Topology, owners: (&[u32], &[u32], &FxHashMap<IpAddr, u32>)) -> u64 {
    internet_floor_ns(t, owners, backbone_floor_ns(t, owners))
}

/// The smallest delay floor of the backbone's links between partitions (and BGP's
/// convergence time): POPs ↔ their VIPs' home regions, regions ↔ hosts another holds.
fn backbone_floor_ns(t: &Topology, (pop, _, host): (&[u32], &[u32], &FxHashMap<IpAddr, u32>)) -> u64 {
    let floor = std::cell::Cell::new(t.failover.route_converge_ns);
    let cross = |a: u32, b: u32, delay_ns: u64| {
        if a != b {
            floor.set(floor.get().min(delay_ns));
        }
    };
    for vip in &t.vips {
        for &p in &vip.pops {
            cross(pop[p], vip.home as u32, crate::world::links::backbone_floor_ns(t, p, vip.home));
        }
    }
    // Over the site's links, or the region's own network when a host is in two regions.
    for (r, region) in t.regions.iter().enumerate() {
        for b in region.backend_groups.iter().flat_map(|g| &g.backends) {
            let owner = host.get(&b.addr.ip()).copied().unwrap_or(r as u32);
            let site = match b.site {
                Site::Local | Site::Internet(_) => None,
                Site::Region(o) => Some(t.regions[o].location),
                Site::Idc(i) => Some(t.idcs[i].location),
            };
            let delay = site.map_or(INTRA_REGION_NS, |at| {
                anyedge_topology::nodes::backbone_link(t, region.location, at).impairment.delay_ns
            });
            cross(r as u32, owner, delay);
        }
    }
    floor.get()
}

/// `floor_ns`, or a shorter internet leg between a client group and its VIPs' POPs or
/// home regions in another partition. Every internet leg is at least its group's last
/// mile long: a group's legs matter only when that is shorter than the floor so far (a
/// group × POP walk is a large file's costly part: half of a million-client world's
/// set-up before this).
fn internet_floor_ns(t: &Topology, (pop, group, _): (&[u32], &[u32], &FxHashMap<IpAddr, u32>), floor_ns: u64) -> u64 {
    let floor = std::cell::Cell::new(floor_ns);
    let cross = |a: u32, b: u32, delay_ns: u64| {
        if a != b {
            floor.set(floor.get().min(delay_ns));
        }
    };
    let last_mile = t.last_miles_ns();
    if t.last_mile_min_ns() < floor.get() {
        for (v, vip) in t.vips.iter().enumerate() {
            let home = vip.home as u32;
            let talkers =
                t.clients.iter().enumerate().filter(|(_, c)| c.traffic.iter().any(|&k| t.traffic[k].vip == v));
            for (g, _) in talkers {
                if last_mile[g] >= floor.get() {
                    continue;
                }
                // `nodes::access_link`'s delay, its last mile read once per group.
                let leg = |end: InternetEnd| t.internet_rtt_ns(g, end) / 2 + last_mile[g];
                for &p in vip.pops.iter().filter(|&&p| pop[p] != group[g]) {
                    cross(group[g], pop[p], leg(InternetEnd::Pop(p)));
                }
                cross(group[g], home, leg(InternetEnd::Region(vip.home)));
            }
        }
    }
    floor.get()
}

/// Per partition, the work it is expected to do: a client's sends and replies in its
/// partition, its POP's in about the same (its nearest), the CLB node's and backend's
/// at the VIP's home; events per request at each end count both paths (a TCP request is
/// a connection's handful of segments).
fn weights(t: &Topology, pop: &[u32], group: &[u32]) -> Vec<u64> {
    let mut weight = vec![0u64; t.regions.len()];
    for (g, grp) in t.clients.iter().enumerate() {
        for &k in &grp.traffic {
            let (per_s, events) = match t.traffic[k].kind {
                anyedge_topology::TrafficKind::Udp { interval_ns, .. } => (1e9 / interval_ns.max(1) as f64, 6),
                anyedge_topology::TrafficKind::Tcp { requests_per_s, .. } => (requests_per_s, 18),
                anyedge_topology::TrafficKind::Quic { requests_per_s, .. } => (requests_per_s, 12),
                anyedge_topology::TrafficKind::SynFlood { rate_per_s } => (rate_per_s, 2),
            };
            let load = (per_s * f64::from(grp.count) * 1000.0) as u64;
            weight[group[g] as usize] += events * load;
            weight[t.vips[t.traffic[k].vip].home] += events * load;
        }
    }
    for &p in pop {
        weight[p as usize] += 1;
    }
    weight
}

/// A partition's event bound for another, held until the window ends.
pub(super) struct Crossing {
    pub(super) at: u64,
    pub(super) from: u32,
    pub(super) seq: u64,
    pub(super) to: u32,
    pub(super) ev: Crossed,
}

/// What crosses between partitions: a packet over a link, or a POP's BGP update.
pub(super) enum Crossed {
    Arrive { to: Arrival, packet: Vec<u8> },
    Routes { pop: PopId, routes: Vec<bool>, part: u32 },
}

impl Crossed {
    /// The event it is in its receiver's queue.
    pub(super) fn into_ev(self) -> Ev {
        match self {
            Crossed::Arrive { to, packet } => Ev::Arrive { to, packet },
            Crossed::Routes { pop, routes, part } => Ev::RouteUpdate { pop, routes, part },
        }
    }
}

/// What a world running some partitions of a partitioned world knows of them.
pub(super) struct Scope {
    pub(super) parts: Arc<Partitioning>,
    /// [partition]: whether this world runs it.
    pub(super) mine: Vec<bool>,
    /// [host]: its partition (by `HostId`).
    pub(super) host: Vec<u32>,
    pub(super) outbox: Vec<Crossing>,
    /// [partition]: crossings it has sent (their order among a window's).
    pub(super) sent: Vec<u64>,
    /// The end of the window being run (exclusive).
    pub(super) window_end: u64,
    /// Fault index → the flows of this world's clients it touches, found at the
    /// window's end before it.
    pub(super) tracks: FxHashMap<usize, Vec<(ClientId, usize)>>,
    /// Events every world runs (faults, their restores): counted once in the stats.
    pub(super) world_wide: u64,
    /// [partition]: the events of its own it ran (what `--balance-by` shares by).
    pub(super) events: Vec<u64>,
}

impl Scope {
    pub(super) fn new(parts: Arc<Partitioning>, mine: Vec<bool>) -> Scope {
        let sent = vec![0; parts.count];
        let events = vec![0; parts.count];
        Scope {
            parts,
            mine,
            host: Vec::new(),
            outbox: Vec::new(),
            sent,
            window_end: 0,
            tracks: FxHashMap::default(),
            world_wide: 0,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The internet legs' floor as the definition says it, every leg walked (what
    /// `internet_floor_ns` prunes), below `floor`.
    fn internet_floor_walked(t: &Topology, owners: (&[u32], &[u32], &FxHashMap<IpAddr, u32>), mut floor: u64) -> u64 {
        let (pop, group, _) = owners;
        for (v, vip) in t.vips.iter().enumerate() {
            for (g, c) in t.clients.iter().enumerate() {
                if !c.traffic.iter().any(|&k| t.traffic[k].vip == v) {
                    continue;
                }
                let link = |end| anyedge_topology::nodes::access_link(t, g, end).impairment.delay_ns;
                let ends = vip.pops.iter().map(|&p| (pop[p], InternetEnd::Pop(p)));
                for (part, end) in ends.chain([(vip.home as u32, InternetEnd::Region(vip.home))]) {
                    if part != group[g] {
                        floor = floor.min(link(end));
                    }
                }
            }
        }
        floor
    }

    #[test]
    fn the_lookahead_is_the_least_leg_between_partitions_with_every_leg_walked() {
        for (internet, seed) in [(false, 1), (true, 2), (true, 3)] {
            let spec = anyedge_topology::generate::Spec {
                name: "walk".into(),
                pops: 24,
                regions: 4,
                clients: 2_000,
                groups: 120,
                web_every: 10,
                clb_nodes: 2,
                duration_s: 1,
                seed,
                internet,
            };
            let text = anyedge_topology::generate::generate(&spec).unwrap();
            let mut t = anyedge_topology::parse_str("walk.yaml", &text).unwrap();
            for last_mile_ns in [t.internet.last_mile_ns, 100_000, 0] {
                t.internet.last_mile_ns = last_mile_ns;
                let pop: Vec<u32> = t.pops.iter().map(|p| nearest_region(&t, p.location)).collect();
                let group: Vec<u32> = t.clients.iter().map(|g| nearest_region(&t, g.location)).collect();
                let host = host_owners(&t);
                let owners = (pop.as_slice(), group.as_slice(), &host);
                let at = format!("internet {internet}, seed {seed}, last mile {last_mile_ns}");
                // From the backbone's floor (the lookahead), and from none at all, so
                // the internet's legs decide and the walk prunes as it goes.
                let legs = internet_floor_walked(&t, owners, u64::MAX);
                assert!(legs < u64::MAX, "{at}: groups talk across partitions");
                for from in [backbone_floor_ns(&t, owners), u64::MAX, legs + 1] {
                    assert_eq!(internet_floor_ns(&t, owners, from), internet_floor_walked(&t, owners, from), "{at}");
                }
                assert_eq!(lookahead_ns(&t, owners), backbone_floor_ns(&t, owners).min(legs), "{at}");
            }
        }
    }

    fn weighed(weight: Vec<u64>) -> Partitioning {
        let count = weight.len();
        Partitioning { count, pop: Vec::new(), group: Vec::new(), host: Default::default(), lookahead_ns: 1, weight }
    }

    fn loads(p: &Partitioning, shares: &[Vec<bool>]) -> Vec<u64> {
        shares.iter().map(|m| (0..p.count).filter(|&i| m[i]).map(|i| p.weight[i]).sum()).collect()
    }

    #[test]
    fn shares_even_out_where_heaviest_first_alone_leaves_a_fifth_between_two_worlds() {
        // Measured events of a five-region world: heaviest-first gives 102,400 against
        // 85,553; the even split is the two heaviest against the other three.
        let p = weighed(vec![35_262, 33_715, 51_838, 23_421, 43_717]);
        let shares = p.shares(None, 2);
        let mut l = loads(&p, &shares);
        l.sort_unstable();
        assert_eq!(l, [92_398, 95_555]);
        assert!(shares[0][2] == shares[0][4], "the two heaviest together");
    }

    #[test]
    fn every_partition_lands_in_exactly_one_world_and_the_same_weights_share_the_same_way() {
        let p = weighed((0..40).map(|i| (i * 7_919 % 1_000) as u64).collect());
        for worlds in 1..=6 {
            let shares = p.shares(None, worlds);
            assert_eq!(shares, p.shares(None, worlds));
            for i in 0..p.count {
                assert_eq!(shares.iter().filter(|m| m[i]).count(), 1, "partition {i} of {worlds} worlds");
            }
            let l = loads(&p, &shares);
            let (max, min) = (*l.iter().max().unwrap(), *l.iter().min().unwrap());
            assert!(max - min <= 1_000, "{worlds} worlds: {l:?}");
        }
        // A share of the partitions (a rank's), over its threads: only those.
        let among: Vec<bool> = (0..p.count).map(|i| i % 3 == 0).collect();
        let shares = p.shares(Some(&among), 2);
        assert!((0..p.count).all(|i| shares.iter().filter(|m| m[i]).count() == usize::from(among[i])));
    }
}
