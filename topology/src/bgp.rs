//! The internet's routing, as the lab runs it with real BGP speakers (BIRD) and as the
//! simulator's catchments follow it. One rule, written once:
//!
//! - Every POP has its own upstream: a transit AS at the POP's site (`transit/POP`),
//!   AS [`transit_asn`]. Transit ASes peer with each other in a full mesh (eBGP).
//! - Every POP speaks eBGP to its transit as AS [`CDN_ASN`] and announces the prefixes of
//!   the VIPs it publishes while it is healthy.
//! - A client group attaches to the transit of its nearest POP (by its internet round
//!   trip, pins included), or of the first POP of its `catchment:` when the file gives one.
//!   A `catchment:` list is that transit's routing policy for the group (a table of its
//!   own, [`catchment_table`]): the listed POPs' routes, preferred in the list's order;
//!   with every listed POP withdrawn the group has no route, as in the simulator.
//! - A transit prefers the route of the POP it serves (shortest AS path); among routes
//!   from other transits (all one AS hop longer), the lowest MED, which each transit sets
//!   on import to the delay model's round trip in microseconds between its site and the
//!   announcing transit's site (`med metric yes`, so MEDs compare across ASes); equal
//!   MEDs go to the lower router id, which is the POP earlier in the file.
//!
//! So a client enters its nearest POP, and when that POP withdraws, the POP nearest to
//! the withdrawn one (hot potato at the client's upstream), not the POP nearest to the
//! client.

use std::net::Ipv4Addr;

use crate::{InternetEnd, Topology};

/// BGP session timers every speaker uses (the lab's BIRD; the simulator's hold-timer
/// detection with BFD off): the hold time, BIRD's minimum (its default is 240 s), and the
/// keepalive interval.
pub const HOLD_S: u32 = 3;
pub const KEEPALIVE_S: u32 = 1;

/// The AS every POP announces the VIPs from.
pub const CDN_ASN: u32 = 64_500;

/// The transit AS upstream of POP `p` (4-byte private range, RFC 6996).
pub fn transit_asn(p: usize) -> u32 {
    4_200_000_000 + p as u32
}

/// Router ids: ordered like the POPs in the file, so BGP's last tie-break (the lower
/// router id) picks the POP earlier in the file.
pub fn transit_router_id(p: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0aff_0001 + p as u32)
}

pub fn pop_router_id(p: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0afe_0001 + p as u32)
}

/// The POP whose transit client group `g` attaches to: the one its internet round trip
/// is shortest to (the lowest-numbered of a tie).
pub fn attach(t: &Topology, g: usize) -> Option<usize> {
    if let Some(first) = t.clients[g].catchment.as_ref().and_then(|c| c.first()) {
        return Some(*first);
    }
    (0..t.pops.len()).min_by_key(|&p| (t.straight_rtt_ns(g, InternetEnd::Pop(p)), p))
}

/// [`attach`] for many groups of one topology, the same answers without the model's
/// round trip to every POP: the POP nearest by great circle gives a bound, and only POPs
/// near enough that the model could beat it are asked. The bound holds because no path
/// is shorter than the great circle (a hub only adds) and the model's round trip over
/// `d` km is at least the smallest overhead plus the smallest stretch over `d`. (Every
/// group × every POP through the model was the largest part of a 2,000-POP world's
/// set-up.)
pub struct Attacher<'t> {
    t: &'t Topology,
    /// Every POP's place as a unit vector: nearer is a larger dot product.
    pops: Vec<[f64; 3]>,
    /// The model's smallest overhead (ms) and stretch, when the bound holds (a positive
    /// stretch, and no pinned round trip, which could be anything).
    bound: Option<(f64, f64)>,
    /// Every POP.
    all: Vec<usize>,
    /// Each group's attach POP, once asked ([`Attacher::attach`]).
    attached: Vec<std::sync::OnceLock<Option<usize>>>,
}

fn unit(at: anyedge_ccn::geo::Location) -> [f64; 3] {
    let (lat, lon) = (at[0].to_radians(), at[1].to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

impl<'t> Attacher<'t> {
    pub fn new(t: &'t Topology) -> Attacher<'t> {
        let (overhead, stretch) = t.internet.delay.lower_bound();
        let bound =
            (t.internet.pinned.is_empty() && stretch > 0.0 && overhead.is_finite()).then_some((overhead, stretch));
        Attacher {
            t,
            pops: t.pops.iter().map(|p| unit(p.location)).collect(),
            bound,
            all: (0..t.pops.len()).collect(),
            attached: (0..t.clients.len()).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// The POPs of `among` nearest `at` by great circle: the nearest, and any within
    /// floating point of it (a caller that measures each gets the exact least).
    pub fn nearest_by_great_circle(&self, at: anyedge_ccn::geo::Location, among: &[usize]) -> Vec<usize> {
        let me = unit(at);
        let dot = |p: usize| {
            let u = self.pops[p];
            u[0] * me[0] + u[1] * me[1] + u[2] * me[2]
        };
        let Some(best) = among.iter().map(|&p| dot(p)).max_by(f64::total_cmp) else { return Vec::new() };
        among.iter().copied().filter(|&p| dot(p) >= best - 1e-9).collect()
    }

    pub fn attach(&self, g: usize) -> Option<usize> {
        *self.attached[g].get_or_init(|| {
            if self.t.clients[g].catchment.is_some() {
                return attach(self.t, g);
            }
            self.nearest_straight(g, &self.all)
        })
    }

    /// The POP of `among` with the least straight round trip from group `g` (the
    /// lowest-numbered of a tie), asking the model of few of them.
    pub fn nearest_of(&self, g: usize, among: &[usize]) -> Option<usize> {
        // Among every POP it is where the group attaches, asked once.
        if among.len() == self.all.len()
            && among.iter().enumerate().all(|(i, &p)| i == p)
            && self.t.clients[g].catchment.is_none()
        {
            return self.attach(g);
        }
        self.nearest_straight(g, among)
    }

    fn nearest_straight(&self, g: usize, among: &[usize]) -> Option<usize> {
        let t = self.t;
        let rtt = |p: usize| t.straight_rtt_ns(g, InternetEnd::Pop(p));
        let walk = || among.iter().copied().min_by_key(|&p| (rtt(p), p));
        let Some((overhead_ms, stretch)) = self.bound else { return walk() };
        let me = unit(t.clients[g].location);
        let dot = |p: usize| {
            let u = self.pops[p];
            u[0] * me[0] + u[1] * me[1] + u[2] * me[2]
        };
        let nearest = among.iter().copied().max_by(|&a, &b| dot(a).total_cmp(&dot(b)))?;
        let best = rtt(nearest);
        // The farthest a POP may lie and still have the model's round trip at most
        // `best` (rounding to whole ns allowed for), with room for floating point.
        let ms = (best as f64 + 2.0) / 1e6;
        let km = ((ms - overhead_ms).max(0.0) * anyedge_ccn::geo::FIBER_KM_PER_S / 2e3 / stretch) * (1.0 + 1e-9) + 1e-3;
        let angle = km / anyedge_ccn::geo::EARTH_RADIUS_KM;
        if angle >= std::f64::consts::PI {
            return walk();
        }
        let least_dot = angle.cos() - 1e-12;
        among.iter().copied().filter(|&p| dot(p) >= least_dot || p == nearest).min_by_key(|&p| (rtt(p), p))
    }
}

/// The kernel routing table (and BIRD table) where the lab keeps client group `g`'s own
/// choice among the VIP routes when the file gives it a `catchment:` list: its transit
/// imports every POP's route into it ranked by the list (POPs not on the list never),
/// and the transit forwards the group's packets by it. Numbers above the kernel's
/// reserved tables (253–255).
pub fn catchment_table(g: usize) -> u32 {
    1_000 + g as u32
}

/// The MED transit `at` gives a route learned from transit `from`: the internet model's
/// round trip between the two POPs' sites, in microseconds.
pub fn med_us(t: &Topology, at: usize, from: usize) -> u32 {
    let ms = t.internet.delay.rtt_ms(t.pops[at].location, t.pops[from].location);
    (ms * 1_000.0).round().clamp(0.0, f64::from(u32::MAX - 1)) as u32
}

/// The order in which BGP at `at`'s transit selects among `candidates` (POPs announcing a
/// prefix): the first is the route it installs; when it withdraws, the next.
pub fn selection_order(t: &Topology, at: usize, candidates: &[usize]) -> Vec<usize> {
    let mut order = candidates.to_vec();
    order.sort_by_cached_key(|&p| if p == at { (0, 0, p) } else { (1, med_us(t, at, p), p) });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORLD: &str = "name: w\nseed: 1\nduration: 1s\n\
vips:\n  - { name: v, ipv4: 198.18.0.20, home: fra, pops: all, listeners: [{ protocol: udp, port: 7000, backends: b }] }\n\
pops:\n  - { name: paris, location: [48.857, 2.352] }\n  - { name: warsaw, location: [52.23, 21.01] }\n  - { name: tokyo, location: [35.69, 139.69] }\n\
regions:\n  - { name: fra, location: [50.11, 8.68], clb_nodes: 1, backends: { b: [{ address: 198.19.1.1, port: 7000 }] } }\n\
clients:\n  - { name: london, location: [51.5, -0.13], count: 1, traffic: t }\n  - { name: osaka, location: [34.69, 135.5], count: 1, traffic: t }\n\
traffic:\n  t: { vip: v, protocol: udp, port: 7000, interval: 50ms, size: 100 }\n";

    #[test]
    fn a_client_enters_its_nearest_pop_and_fails_over_to_the_pop_nearest_that_one() {
        let t = crate::parse_str("w.yaml", WORLD).expect("world loads");
        assert_eq!(attach(&t, 0), Some(0), "london attaches at paris");
        assert_eq!(attach(&t, 1), Some(2), "osaka attaches at tokyo");
        assert_eq!(selection_order(&t, 0, &[0, 1, 2]), vec![0, 1, 2]);
        // Tokyo's transit: its own POP, then paris, whose round trip to tokyo is less
        // than warsaw's (235 ms measured between Tokyo's and Paris's servers, 249 ms to
        // Warsaw's), though warsaw is 1,100 km nearer.
        assert_eq!(selection_order(&t, 2, &[0, 1, 2]), vec![2, 0, 1]);
        assert_eq!(t.pop_order(1, 0), vec![2, 0, 1], "the simulator's catchment is BGP's order");
        assert!(med_us(&t, 2, 0) < med_us(&t, 2, 1));
        assert_eq!(med_us(&t, 0, 1), med_us(&t, 1, 0), "MEDs are symmetric");
    }

    #[test]
    fn router_ids_follow_file_order() {
        assert!(transit_router_id(0) < transit_router_id(1));
        assert!(pop_router_id(3) < pop_router_id(10));
        assert_ne!(transit_router_id(0), pop_router_id(0));
    }
}

#[cfg(test)]
mod attacher_tests {
    use super::*;

    /// The pruned search attaches every group where the walk of every POP does: every
    /// shipped topology, and generated worlds large and small (their groups at real
    /// cities, under the calibrated model and a uniform one).
    #[test]
    fn the_attacher_attaches_every_group_where_the_walk_of_every_pop_does_and_finds_the_nearest_by_great_circle() {
        let mut worlds = crate::test_worlds::shipped();
        for (pops, regions, groups, seed) in [(300, 30, 1500, 1), (12, 3, 200, 2)] {
            let spec = crate::generate::Spec {
                name: "attach".into(),
                pops,
                regions,
                clients: groups as u64,
                groups,
                web_every: 0,
                clb_nodes: 1,
                duration_s: 1,
                seed,
                internet: false,
            };
            let t = crate::test_worlds::generated(&spec);
            let mut uniform = t.clone();
            uniform.internet.delay = anyedge_ccn::delay::DelayModel::uniform(1.6);
            worlds.push((format!("generated {pops}"), t));
            worlds.push((format!("generated {pops}, uniform"), uniform));
        }
        let mut pruned = 0;
        for (name, t) in &worlds {
            let attacher = Attacher::new(t);
            pruned += usize::from(attacher.bound.is_some());
            for g in 0..t.clients.len() {
                assert_eq!(attacher.attach(g), attach(t, g), "{name}: group {g} ({})", t.clients[g].name);
                // The nearest POPs by dot product hold the least fiber delay of all.
                let at = t.clients[g].location;
                let fiber = |p: &usize| anyedge_ccn::geo::fiber_delay_ns(at, t.pops[*p].location, 1.0);
                for vip in &t.vips {
                    let nearest = attacher.nearest_by_great_circle(at, &vip.pops);
                    assert_eq!(nearest.iter().map(fiber).min(), vip.pops.iter().map(fiber).min(), "{name}: group {g}");
                }
            }
        }
        assert!(pruned >= 4, "the bound held in the generated worlds");
    }
}
