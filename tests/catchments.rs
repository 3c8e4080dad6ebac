//! Where clients enter: in generated worlds covering every inhabited area, a client group
//! enters a POP on its own continent when one within 1,000 km publishes the VIP (the
//! per-place delay model), while pairs the measurements show tromboning stay slow.

use std::collections::BTreeMap;

use anyedge_ccn::delay::Area;
use anyedge_ccn::geo::great_circle_km;
use anyedge_topology::{Topology, bgp, generate};

/// The continent of an area, as a person would name it (the Middle East and China are Asia).
fn continent(area: Area) -> &'static str {
    match area {
        Area::NorthAmerica => "north-america",
        Area::SouthAmerica => "south-america",
        Area::Europe => "europe",
        Area::Africa => "africa",
        Area::Oceania => "oceania",
        Area::MiddleEast | Area::SouthAsia | Area::EastAsia | Area::SoutheastAsia | Area::China | Area::Other => "asia",
    }
}

/// Per area of the groups: (groups with a POP within 1,000 km, of those entering a POP on
/// another continent, the worst such group as text).
type Table = BTreeMap<Area, (usize, usize, String)>;

fn generated(pops: usize, regions: usize, groups: usize) -> Topology {
    let spec = generate::Spec {
        name: "catchments".into(),
        pops,
        regions,
        clients: groups as u64 * 10,
        groups,
        web_every: 0,
        clb_nodes: 1,
        duration_s: 1,
        seed: 1,
        internet: false,
    };
    let text = generate::generate(&spec).expect("generates");
    anyedge_topology::parse_str("catchments.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

/// Each group's entry POP for its VIP against the POPs near it that publish the VIP.
fn catchments(t: &Topology) -> Table {
    let attacher = bgp::Attacher::new(t);
    let mut table = Table::new();
    for (g, group) in t.clients.iter().enumerate() {
        let vip = t.traffic[group.traffic[0]].vip;
        let at = attacher.attach(g);
        let entry = t.pop_order_attached(g, vip, at)[0];
        let near = t.vips[vip].pops.iter().any(|&p| great_circle_km(group.location, t.pops[p].location) <= 1000.0);
        let row = table.entry(Area::of(group.location)).or_insert((0, 0, String::new()));
        if !near {
            continue;
        }
        row.0 += 1;
        let (home, there) = (continent(Area::of(group.location)), continent(Area::of(t.pops[entry].location)));
        if home != there {
            row.1 += 1;
            let km = great_circle_km(group.location, t.pops[entry].location);
            row.2 = format!("{} → pop/{} ({km:.0} km)", group.name, t.pops[entry].name);
        }
    }
    table
}

fn print(what: &str, table: &Table) -> (usize, usize) {
    println!("{what}: groups with a POP within 1,000 km, and those entering a POP on another continent");
    let (mut near, mut abroad) = (0, 0);
    for (area, (n, away, example)) in table {
        let pct = if *n == 0 { 0.0 } else { 100.0 * *away as f64 / *n as f64 };
        println!("  {:<15} {n:>4} {away:>4} {pct:>5.1} %  {example}", area.name());
        near += n;
        abroad += away;
    }
    (near, abroad)
}

/// At most 5 % of the groups near a POP enter one on another continent, and no area
/// sends most of its groups abroad (before the per-place model, every South American
/// group entered Florida and every African one Europe). Where the measurements have a
/// place's servers reach Europe faster than their neighbours (Beirut: 62 ms to London,
/// 97–102 ms to Istanbul and Cairo), its groups go there, as their packets do.
fn at_most_five_percent_abroad(what: &str, table: &Table) {
    let (near, abroad) = print(what, table);
    assert!(near > 100, "{what}: {near} groups near a POP");
    assert!(abroad * 20 <= near, "{what}: {abroad} of {near} groups enter a POP on another continent");
    for (area, (n, away, example)) in table {
        assert!(*away * 2 <= *n, "{what}, {area}: {away} of {n} groups abroad, e.g. {example}");
    }
}

#[test]
fn clients_enter_a_pop_on_their_own_continent_when_one_is_within_1000_km() {
    let worlds = [("60 POPs, 600 groups", generated(60, 6, 600)), ("250 POPs, 2,000 groups", generated(250, 20, 2000))];
    let tables: Vec<(&str, Table)> = worlds.iter().map(|(what, t)| (*what, catchments(t))).collect();
    for (what, table) in &tables {
        at_most_five_percent_abroad(what, table);
    }
}

#[test]
fn a_pair_the_measurements_show_tromboning_stays_slow_and_a_local_one_fast() {
    let model = anyedge_topology::builtin_delay(anyedge_topology::INTERNET_DELAY_DEFAULT).unwrap();
    let (lagos, accra, ikeja) = ([6.453, 3.396], [5.556, -0.197], [6.602, 3.351]);
    let (sao_paulo, buenos_aires) = ([-23.548, -46.636], [-34.613, -58.377]);
    let trombone = model.rtt_ms(lagos, accra);
    assert!(trombone > 150.0, "Lagos–Accra goes through Europe (193 ms measured): {trombone:.1} ms");
    let local = model.rtt_ms(lagos, ikeja);
    assert!(local < 15.0, "Lagos to a place in Lagos: {local:.1} ms");
    let direct = model.rtt_ms(sao_paulo, buenos_aires);
    assert!((25.0..40.0).contains(&direct), "São Paulo–Buenos Aires is direct (30 ms measured): {direct:.1} ms");
}
