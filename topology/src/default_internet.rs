//! The default internet: an AS-level internet made from public facts and the file's seed,
//! for a world whose file names no networks, so that BGP decides its catchments too.
//!
//! Facts (`data/internet/`, sources and licences in its README): the tier-1 transit
//! networks (name, AS number, home area) and the cities with a large exchange point.
//! Everything else is drawn from the seed by the rules below, whose free numbers are a
//! [`Shape`]; [`Shape::FITTED`] is what `anyedge calibrate --anycast` fits on public
//! anycast measurements (`data/anycast/README.md`).
//!
//! - **Transits**: every tier-1 network, each peering with every other. Each is present at
//!   an exchange city with probability `home` in its home area and `away` elsewhere, and
//!   always at the exchange city of its home area nearest its others.
//! - **Access networks**: one per client group at its place (`access/NAME`), buying
//!   transit from the `access_transits` transits present nearest it, and a member of the
//!   nearest exchange within `reach_km` with probability `join`.
//! - **The operator** (the CDN) buys transit from `operator_transits` transits, drawn;
//!   each POP buys from those of them present within `pop_reach_km` of it (a port at the
//!   POP's city), or from the `pop_transits` nearest of those (a root letter's site buys
//!   from its host's transit, a CDN's POP from all), and peers at the exchange of its
//!   city when there is one. A POP none of
//!   them reaches is a local node (`no-export`: its route stays with the networks that
//!   hear it): it peers at its city's exchange, or without one at an exchange of its own
//!   (`local/POP`) with the access networks within `reach_km`; it buys no transit.
//!
//! Ties (several transits in one city) and every probability are settled by a draw: a
//! hash of (seed, what is drawn for, AS number, index), the same on any machine, in any
//! order of asking. Nothing here reads a clock or the OS.

use std::sync::LazyLock;

use anyedge_ccn::delay::Area;
use anyedge_ccn::geo::{Location, great_circle_km};

use crate::catchments::ACCESS_ASN_BASE;
use crate::{AsNet, Ixp, Place, Topology, Upstream};

/// The tier-1 networks: `name,asn,home` (see `data/internet/README.md`).
const TRANSITS: &str = include_str!("../../data/internet/transits.csv");
/// Exchange points: `name,city,country`, the city a GeoNames name.
const EXCHANGES: &str = include_str!("../../data/internet/ixps.csv");

/// A tier-1 transit network of the facts table.
#[derive(Debug, Clone, PartialEq)]
pub struct Transit {
    pub name: &'static str,
    pub asn: u32,
    pub home: Area,
}

/// An exchange point of the facts table, located.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub name: &'static str,
    pub city: &'static str,
    /// ISO 3166 code: `CITY, CC` names one place in GeoNames' cities.
    pub country: &'static str,
    pub location: Location,
}

/// The facts tables, read once. A row that does not read (a bug in a shipped file, which
/// a test rules out) is left out rather than stopping a run.
pub static FACTS: LazyLock<(Vec<Transit>, Vec<Exchange>)> = LazyLock::new(|| (transits(), exchanges()));

fn rows(text: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    text.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.split(',').collect())
}

fn transits() -> Vec<Transit> {
    rows(TRANSITS)
        .filter_map(|f| {
            let area = *f.get(2)?;
            let home = Area::ALL.into_iter().find(|a| a.name() == area)?;
            Some(Transit { name: f.first()?, asn: f.get(1)?.parse().ok()?, home })
        })
        .collect()
}

fn exchanges() -> Vec<Exchange> {
    rows(EXCHANGES)
        .filter_map(|f| {
            let (name, city, country) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            let location = crate::parse::city(&format!("{city}, {country}"))?;
            Some(Exchange { name, city, country, location })
        })
        .collect()
}

/// The default internet's free numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Probability a transit is present at an exchange city of its home area.
    pub home: f64,
    /// Probability it is present at one elsewhere.
    pub away: f64,
    /// Transits each access network buys from.
    pub access_transits: usize,
    /// Transits the operator buys from, where its POPs are near them.
    pub operator_transits: usize,
    /// How far from a POP one of the operator's transits may be to sell it a port.
    pub pop_reach_km: f64,
    /// How many of those a POP buys from, the nearest first (0: every one): a CDN buys
    /// from its transits everywhere, a root letter's site from its host's one or two.
    pub pop_transits: usize,
    /// Probability an access network joins its nearest exchange within `reach_km`.
    pub join: f64,
    /// How far an access network goes to an exchange.
    pub reach_km: f64,
    /// The median of the access networks' one-way delays (`internet.last_mile` when the
    /// file says none).
    pub last_mile_ms: f64,
    /// How widely they spread: each access network's last mile is `last_mile_ms ×
    /// e^(spread × z)`, z a standard normal draw (a lognormal; 0: every one the median).
    pub last_mile_spread: f64,
}

impl Shape {
    /// The shape `anyedge calibrate --anycast data/anycast` fits (data/anycast/README.md).
    pub const FITTED: Shape = Shape {
        home: 0.5,
        away: 0.25,
        access_transits: 1,
        operator_transits: 10,
        pop_reach_km: 1000.0,
        pop_transits: 0,
        join: 1.0,
        reach_km: 500.0,
        last_mile_ms: 1.0,
        last_mile_spread: 1.0,
    };
}

/// A uniform draw in [0, 1) from (seed, what, asn, index): SplitMix64's finaliser over
/// their mix, so each draw stands alone and the order of asking does not matter.
fn draw(seed: u64, what: u64, asn: u32, index: usize) -> f64 {
    let mut z = seed
        ^ what.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(asn).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ (index as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Where the default internet's last mile comes from, for reports.
pub const LAST_MILE_FITTED: &str = "drawn per access network, its median and spread fitted on RIPE Atlas pings to anycast services (data/anycast/README.md)";

/// The bounds of a drawn last mile (one way): a probe in the building of a site answers in
/// tens of microseconds; a lognormal's far tail is cut where access links end (a
/// geostationary satellite hop is about 270 ms one way).
const LAST_MILE_MIN_NS: u64 = 10_000;
const LAST_MILE_MAX_NS: u64 = 300_000_000;

/// Access network `asn`'s last mile (one way) for `shape`: a lognormal draw around the
/// median, from two uniform draws (Box–Muller), within the bounds above, in whole
/// microseconds (as a file writes it).
fn last_mile_ns(seed: u64, shape: &Shape, asn: u32) -> u64 {
    let (u1, u2) = (draw(seed, LAST_MILE, asn, 0), draw(seed, LAST_MILE, asn, 1));
    let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let us = shape.last_mile_ms * 1e3 * (shape.last_mile_spread * z).exp();
    (us.round() as u64 * 1_000).clamp(LAST_MILE_MIN_NS, LAST_MILE_MAX_NS)
}

/// What a draw is for (its `what`).
const PRESENCE: u64 = 1;
const TIE: u64 = 2;
const JOIN: u64 = 3;
const OPERATOR: u64 = 4;
/// Ties among a POP's nearest transits; `TIE + who` is taken by the groups' ties (`who` 0).
const POP_TIE: u64 = 5;
const LAST_MILE: u64 = 6;

/// Which exchange cities each transit is present at.
fn presence(seed: u64, shape: &Shape, transits: &[Transit], exchanges: &[Exchange]) -> Vec<Vec<usize>> {
    transits
        .iter()
        .map(|tr| {
            let home = |x: &Exchange| Area::of(x.location) == tr.home;
            let mut at: Vec<usize> = (0..exchanges.len())
                .filter(|&x| {
                    let p = if home(&exchanges[x]) { shape.home } else { shape.away };
                    draw(seed, PRESENCE, tr.asn, x) < p
                })
                .collect();
            if !at.iter().any(|&x| home(&exchanges[x])) {
                at.extend(anchor(tr, exchanges));
            }
            at.sort_unstable();
            at
        })
        .collect()
}

/// The exchange city of a transit's home area nearest the area's other exchanges (its
/// centre of gravity): where a network with no draw at home is still present.
fn anchor(tr: &Transit, exchanges: &[Exchange]) -> Option<usize> {
    let home: Vec<usize> = (0..exchanges.len()).filter(|&x| Area::of(exchanges[x].location) == tr.home).collect();
    let spread =
        |&x: &usize| home.iter().map(|&y| great_circle_km(exchanges[x].location, exchanges[y].location)).sum::<f64>();
    home.iter().copied().min_by(|a, b| spread(a).total_cmp(&spread(b)))
}

/// The `n` transits present nearest `at`, ties settled by a draw for (`who`, `index`).
fn nearest_transits(
    (seed, who, index): (u64, u64, usize),
    at: Location,
    n: usize,
    transits: &[Transit],
    places: &[Vec<Location>],
) -> Vec<usize> {
    nearest_of(0..transits.len(), at, n, places, |k| draw(seed, TIE + who, transits[k].asn, index))
}

/// The `n` of `candidates` present nearest `at`, those in one city ordered by `tie`.
fn nearest_of(
    candidates: impl Iterator<Item = usize>,
    at: Location,
    n: usize,
    places: &[Vec<Location>],
    tie: impl Fn(usize) -> f64,
) -> Vec<usize> {
    let mut ranked: Vec<(f64, f64, usize)> = candidates
        .filter_map(|k| {
            let km = places[k].iter().map(|&l| great_circle_km(at, l)).min_by(f64::total_cmp)?;
            Some(((km / SAME_CITY_KM).floor(), tie(k), k))
        })
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    ranked.into_iter().take(n).map(|r| r.2).collect()
}

/// Places this close are one city (an exchange "of" a POP's city).
const SAME_CITY_KM: f64 = 50.0;

/// The exchange nearest `at` within `reach_km`.
fn nearest_exchange(at: Location, exchanges: &[Exchange], reach_km: f64) -> Option<usize> {
    let km = |x: usize| great_circle_km(at, exchanges[x].location);
    (0..exchanges.len()).filter(|&x| km(x) <= reach_km).min_by(|&a, &b| km(a).total_cmp(&km(b)))
}

/// Gives `t` the default internet of `shape`, drawn from `t.seed`: networks, exchanges and
/// every POP's upstreams. A file that names its own networks is left as it is.
pub fn apply(t: &mut Topology, shape: &Shape) {
    if t.internet.has_ases() {
        return;
    }
    t.internet.routing = crate::Routing::BgpDrawn;
    let (transits, exchanges) = &*FACTS;
    let seed = t.seed;
    let present = presence(seed, shape, transits, exchanges);
    let places: Vec<Vec<Location>> =
        present.iter().map(|at| at.iter().map(|&x| exchanges[x].location).collect()).collect();
    let everyone: Vec<usize> = (0..transits.len()).collect();
    let mut ases: Vec<AsNet> = transits
        .iter()
        .enumerate()
        .map(|(k, tr)| AsNet {
            name: tr.name.to_string(),
            asn: tr.asn,
            at: present[k].iter().map(|&x| place(&exchanges[x])).collect(),
            providers: Vec::new(),
            peers: everyone.iter().copied().filter(|&j| j != k).collect(),
            clients: Vec::new(),
            last_mile_ns: None,
        })
        .collect();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); exchanges.len()];
    // A last mile the file gives is every group's; otherwise each access network draws its own.
    let drawn_last_mile = t.internet.last_mile_source != crate::parse::LAST_MILE_FROM_FILE;
    for (g, group) in t.clients.iter().enumerate() {
        let asn = ACCESS_ASN_BASE + g as u32;
        let providers = nearest_transits((seed, 0, g), group.location, shape.access_transits, transits, &places);
        if let Some(x) = nearest_exchange(group.location, exchanges, shape.reach_km)
            && draw(seed, JOIN, asn, x) < shape.join
        {
            members[x].push(ases.len());
        }
        ases.push(AsNet {
            name: format!("access/{}", group.name),
            asn,
            at: Vec::new(),
            providers,
            peers: Vec::new(),
            clients: vec![g],
            last_mile_ns: drawn_last_mile.then(|| last_mile_ns(seed, shape, asn)),
        });
    }
    let pop_exchange: Vec<Option<usize>> =
        t.pops.iter().map(|p| nearest_exchange(p.location, exchanges, SAME_CITY_KM)).collect();
    // Only exchanges with a member or a POP are kept, renumbered in the facts' order.
    let kept: Vec<usize> =
        (0..exchanges.len()).filter(|&x| !members[x].is_empty() || pop_exchange.contains(&Some(x))).collect();
    let mut ixps: Vec<Ixp> = kept
        .iter()
        .map(|&x| Ixp { name: exchanges[x].name.to_string(), at: place(&exchanges[x]), members: members[x].clone() })
        .collect();
    let operator = operator_transits(seed, shape.operator_transits, transits);
    for (p, pop) in t.pops.iter_mut().enumerate() {
        let buys = pop_transits((seed, p), pop.location, shape, &operator, transits, &places);
        let exchange = pop_exchange[p].and_then(|x| kept.iter().position(|&k| k == x)).map(Upstream::Ixp);
        pop.bgp.upstreams = if !buys.is_empty() {
            buys.into_iter().map(Upstream::As).chain(exchange).collect()
        } else {
            // A local node, as root operators run them: its route stays with the networks
            // that hear it (no-export), or one transit's only customer route would pull
            // that transit's every client across the world to it. It buys no transit (a
            // transit whose best route is no-export passes nothing on, and its customers
            // would be left without one): it peers at its city's exchange, or without
            // one with the access networks within reach, as a host network would.
            pop.bgp.levers.no_export = true;
            let exchange = exchange.unwrap_or_else(|| {
                ixps.push(host_exchange(pop, &t.clients, shape.reach_km, transits.len()));
                Upstream::Ixp(ixps.len() - 1)
            });
            vec![exchange]
        };
    }
    t.internet.ases = std::mem::take(&mut ases);
    t.internet.ixps = ixps;
    if drawn_last_mile {
        t.internet.last_mile_ns = (shape.last_mile_ms * 1e6).round() as u64;
        t.internet.last_mile_source = LAST_MILE_FITTED;
    }
    t.internet.ways = Default::default();
}

/// The operator's transits POP `p` at `at` buys from: those present within
/// `shape.pop_reach_km`, or the `shape.pop_transits` nearest of them, in the operator's
/// order.
fn pop_transits(
    (seed, p): (u64, usize),
    at: Location,
    shape: &Shape,
    operator: &[usize],
    transits: &[Transit],
    places: &[Vec<Location>],
) -> Vec<usize> {
    let km = |k: usize| places[k].iter().map(|&l| great_circle_km(at, l)).fold(f64::INFINITY, f64::min);
    let within: Vec<usize> = operator.iter().copied().filter(|&k| km(k) <= shape.pop_reach_km).collect();
    if shape.pop_transits == 0 || within.len() <= shape.pop_transits {
        return within;
    }
    let nearest =
        nearest_of(within.iter().copied(), at, shape.pop_transits, places, |k| draw(seed, POP_TIE, transits[k].asn, p));
    within.into_iter().filter(|k| nearest.contains(k)).collect()
}

/// The `n` transits the operator buys from: the first `n` by a draw for each.
fn operator_transits(seed: u64, n: usize, transits: &[Transit]) -> Vec<usize> {
    let mut ranked: Vec<(f64, usize)> =
        transits.iter().enumerate().map(|(k, tr)| (draw(seed, OPERATOR, tr.asn, 0), k)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    ranked.into_iter().take(n).map(|r| r.1).collect()
}

/// A local node's own exchange where its city has none: the access networks of the client
/// groups within `reach_km` of it are its members (none: it serves no one).
/// `first_access` is the index of group 0's access network (one per group, in order).
fn host_exchange(pop: &crate::PopSite, clients: &[crate::ClientGroup], reach_km: f64, first_access: usize) -> Ixp {
    let members: Vec<usize> = (0..clients.len())
        .filter(|&g| great_circle_km(pop.location, clients[g].location) <= reach_km)
        .map(|g| first_access + g)
        .collect();
    Ixp { name: format!("local/{}", pop.name), at: Place { name: pop.name.clone(), location: pop.location }, members }
}

/// An exchange's place, named as a file names it (`CITY, CC`).
fn place(x: &Exchange) -> Place {
    Place { name: format!("{}, {}", x.city, x.country), location: x.location }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_facts_tables_reads_and_locates() {
        let rows = |text: &str| text.lines().skip(1).filter(|l| !l.is_empty()).count();
        let (transits, exchanges) = &*FACTS;
        assert_eq!(transits.len(), rows(TRANSITS), "a transit row does not read");
        assert_eq!(exchanges.len(), rows(EXCHANGES), "an exchange's city is not in data/geo/cities.tsv");
        for tr in transits {
            assert!(anchor(tr, exchanges).is_some(), "{}: no exchange in its home area", tr.name);
        }
    }

    #[test]
    fn a_draw_depends_on_each_of_its_inputs_and_nothing_else() {
        let d = draw(7, PRESENCE, 1299, 3);
        assert_eq!(d, draw(7, PRESENCE, 1299, 3));
        assert!((0.0..1.0).contains(&d));
        for other in
            [draw(8, PRESENCE, 1299, 3), draw(7, TIE, 1299, 3), draw(7, PRESENCE, 174, 3), draw(7, PRESENCE, 1299, 4)]
        {
            assert_ne!(d, other);
        }
        let mean = (0..10_000).map(|i| draw(1, PRESENCE, 1299, i)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "draws are not uniform: mean {mean}");
    }
}

#[cfg(test)]
mod world_tests {
    use super::*;
    use crate::catchments;

    const WORLD: &str = "name: w
seed: 1
duration: 1s
pops:
  - { name: frankfurt, location: [50.11, 8.68] }
  - { name: london, location: [51.5, -0.12] }
  - { name: tokyo, location: [35.69, 139.69] }
  - { name: tahiti, location: [-17.55, -149.6] }
regions:
  - name: home
    location: [50.11, 8.68]
    backends:
      app:
        - { address: 198.19.20.1, port: 53 }
vips:
  - name: service
    ipv4: 198.18.0.20
    home: home
    pops: [frankfurt, london, tokyo, tahiti]
    listeners:
      - { protocol: udp, port: 53, backends: app }
clients:
  - { name: paris, location: [48.85, 2.35], count: 1, traffic: dns }
  - { name: berlin, location: [52.52, 13.4], count: 1, traffic: dns }
  - { name: manchester, location: [53.48, -2.24], count: 1, traffic: dns }
  - { name: osaka, location: [34.69, 135.5], count: 1, traffic: dns }
failover: { probe_misses: 40 }
internet: { routing: nearest }
traffic:
  dns: { vip: service, protocol: udp, port: 53, interval: 1s, size: 64 }
";

    fn world(seed: u64) -> Topology {
        drawn(seed, &Shape::FITTED)
    }

    fn drawn(seed: u64, shape: &Shape) -> Topology {
        let mut t = crate::parse_str("w", &WORLD.replace("seed: 1", &format!("seed: {seed}"))).expect("parses");
        // Parsing draws nothing (`routing: nearest`): the internet is `shape`'s.
        assert!(!t.internet.has_ases(), "the world is drawn by the test's own shape");
        apply(&mut t, shape);
        t
    }

    #[test]
    fn every_pop_has_an_upstream_and_every_group_reaches_the_vip_through_its_access_network() {
        let t = world(1);
        assert!(t.internet.has_ases());
        assert!(t.pops.iter().all(|p| !p.bgp.upstreams.is_empty()));
        for (g, group) in t.clients.iter().enumerate() {
            let access = t.internet.ases.iter().find(|a| a.clients == [g]).expect("an access network");
            assert_eq!(access.name, format!("access/{}", group.name));
            assert_eq!(access.providers.len(), Shape::FITTED.access_transits);
        }
        let c = catchments::of(&t, 0, &|_| true).expect("settles");
        assert!(c.groups.iter().all(|x| x.pop.is_some()), "{:?}", c.groups);
        assert_eq!(t.internet.last_mile_ns, (Shape::FITTED.last_mile_ms * 1e6) as u64);
    }

    /// Found by the fit: a POP no transit of the operator's reaches bought from the
    /// transit nearest it, whose only customer route then drew that transit's every
    /// client, Londoners to Tahiti. Such a POP is a local node: its route stays with the
    /// network it buys from.
    #[test]
    fn a_pop_far_from_the_operators_transits_is_a_local_node_that_draws_no_one_from_afar() {
        for seed in 1..=20 {
            let t = world(seed);
            let tahiti = &t.pops[3];
            assert!(tahiti.bgp.levers.no_export, "seed {seed}: {:?}", tahiti.bgp);
            let c = catchments::of(&t, 0, &|_| true).expect("settles");
            for g in 0..3 {
                assert_ne!(c.groups[g].pop, Some(3), "seed {seed}: {} enters Tahiti", t.clients[g].name);
            }
        }
    }

    #[test]
    fn a_local_node_peers_at_its_citys_exchange_or_its_own_and_buys_no_transit() {
        let shape = Shape { operator_transits: 0, ..Shape::FITTED };
        let t = drawn(1, &shape);
        let (frankfurt, tahiti) = (&t.pops[0].bgp, &t.pops[3].bgp);
        assert!(frankfurt.levers.no_export && tahiti.levers.no_export);
        assert_eq!(frankfurt.upstreams.len(), 1);
        let Upstream::Ixp(x) = frankfurt.upstreams[0] else { panic!("{frankfurt:?}") };
        assert_eq!(t.internet.ixps[x].name, "de-cix");
        let Upstream::Ixp(y) = tahiti.upstreams[0] else { panic!("{tahiti:?}") };
        assert_eq!(t.internet.ixps[y].name, "local/tahiti");
        assert!(t.internet.ixps[y].members.is_empty(), "no group is near Tahiti");
    }

    #[test]
    fn a_pop_that_buys_from_its_nearest_transits_buys_from_no_farther_one() {
        let (transits, exchanges) = &*FACTS;
        for seed in 1..=10 {
            let every = Shape { operator_transits: 15, pop_reach_km: 3000.0, pop_transits: 0, ..Shape::FITTED };
            let all = drawn(seed, &every);
            let t = drawn(seed, &Shape { pop_transits: 1, ..every });
            let places = presence(seed, &every, transits, exchanges);
            let km = |p: usize, k: usize| {
                places[k]
                    .iter()
                    .map(|&x| great_circle_km(t.pops[p].location, exchanges[x].location))
                    .fold(f64::INFINITY, f64::min)
            };
            for (p, pop) in t.pops.iter().enumerate() {
                let bought: Vec<usize> = pop
                    .bgp
                    .upstreams
                    .iter()
                    .filter_map(|u| if let Upstream::As(k) = u { Some(*k) } else { None })
                    .collect();
                assert!(bought.len() <= 1, "seed {seed}: {} buys from {bought:?}", pop.name);
                if let Some(&k) = bought.first() {
                    let nearest = (0..transits.len()).map(|j| km(p, j)).fold(f64::INFINITY, f64::min);
                    assert!(
                        (km(p, k) / SAME_CITY_KM).floor() <= (nearest / SAME_CITY_KM).floor(),
                        "seed {seed}: {} buys from {} at {:.0} km, one is at {nearest:.0} km",
                        pop.name,
                        transits[k].name,
                        km(p, k)
                    );
                }
            }
            let several = |t: &Topology| {
                t.pops.iter().any(|p| p.bgp.upstreams.iter().filter(|u| matches!(u, Upstream::As(_))).count() > 1)
            };
            assert!(several(&all), "seed {seed}: with every transit within reach no POP buys from two");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_internet_and_another_seed_another() {
        let (a, b) = (world(5), world(5));
        assert_eq!(a.internet.ases, b.internet.ases);
        assert_eq!(a.internet.ixps, b.internet.ixps);
        let upstreams = |t: &Topology| t.pops.iter().map(|p| p.bgp.clone()).collect::<Vec<_>>();
        assert_eq!(upstreams(&a), upstreams(&b));
        let differs = (6..16).any(|s| {
            let c = world(s);
            c.internet.ases != a.internet.ases || upstreams(&c) != upstreams(&a)
        });
        assert!(differs, "ten other seeds all drew seed 5's internet");
    }

    #[test]
    fn each_access_network_draws_its_own_last_mile_around_the_median_with_the_fitted_spread() {
        let shape = Shape { last_mile_ms: 1.0, last_mile_spread: 1.0, ..Shape::FITTED };
        let mut draws: Vec<u64> = (0..4000).map(|k| last_mile_ns(3, &shape, ACCESS_ASN_BASE + k)).collect();
        assert_eq!(draws, (0..4000).map(|k| last_mile_ns(3, &shape, ACCESS_ASN_BASE + k)).collect::<Vec<_>>());
        draws.sort_unstable();
        let median_ms = draws[2000] as f64 / 1e6;
        assert!((median_ms - 1.0).abs() < 0.06, "median {median_ms} ms, not 1 ms");
        // One spread above the median is e^1: a standard normal's 84th percentile.
        let above = draws.iter().filter(|&&ns| ns as f64 > std::f64::consts::E * 1e6).count() as f64 / 4000.0;
        assert!((above - 0.1587).abs() < 0.02, "{above} of draws above e × median, not 15.9 %");
        assert!(draws.iter().all(|ns| (LAST_MILE_MIN_NS..=LAST_MILE_MAX_NS).contains(ns) && ns % 1_000 == 0));
        let even = Shape { last_mile_spread: 0.0, ..shape };
        assert!((0..100).all(|k| last_mile_ns(3, &even, k) == 1_000_000), "no spread: every one the median");

        let t = drawn(1, &shape);
        let own: Vec<u64> = t.last_miles_ns();
        assert!(own.windows(2).any(|w| w[0] != w[1]), "each group its access network's: {own:?}");
        let given = WORLD.replace("internet: { routing: nearest }", "internet: { routing: nearest, last_mile: 7ms }");
        assert_ne!(given, WORLD);
        let mut t = crate::parse_str("w", &given).expect("parses");
        apply(&mut t, &shape);
        assert!(t.last_miles_ns().iter().all(|&ns| ns == 7_000_000), "the file's last mile is every group's");
        assert!(t.internet.ases.iter().all(|a| a.last_mile_ns.is_none()));
    }

    #[test]
    fn a_file_that_names_its_networks_keeps_them() {
        let text = include_str!("../../topologies/internet.yaml");
        let mut t = crate::parse_str("internet.yaml", text).expect("parses");
        let before = (
            t.internet.ases.clone(),
            t.pops.iter().map(|p| p.bgp.clone()).collect::<Vec<_>>(),
            t.internet.last_mile_ns,
        );
        apply(&mut t, &Shape::FITTED);
        assert_eq!(
            before,
            (
                t.internet.ases.clone(),
                t.pops.iter().map(|p| p.bgp.clone()).collect::<Vec<_>>(),
                t.internet.last_mile_ns
            )
        );
    }
}
