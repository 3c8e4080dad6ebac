//! BGP over the file's AS-level internet (`internet.ases`, `internet.ixps`, a POP's
//! `upstreams` and levers): the levers move groups as BGP would, a withdrawal moves them
//! to the next best route, `anyedge catchments` prints it, and a broken graph is refused
//! at its line with the field.

use std::process::Command;

use anyedge_ccn::geo::great_circle_km;
use anyedge_ccn::path::fibre_rtt_ms;
use anyedge_topology::catchments::{self, Catchments};
use anyedge_topology::{self as topology, Override, Topology};

const ANYEDGE: &str = env!("CARGO_BIN_EXE_anyedge");
const FILE: &str = include_str!("../topologies/internet.yaml");

fn world(sets: &[(&str, &str)]) -> Topology {
    let sets: Vec<Override> =
        sets.iter().map(|(p, v)| Override { path: p.to_string(), value: v.to_string() }).collect();
    topology::parse_with("internet.yaml", FILE, &sets).unwrap_or_else(|e| panic!("{e}"))
}

fn catchments_of(t: &Topology, down: &[&str]) -> Catchments {
    let down: Vec<usize> = down.iter().map(|n| t.pop_index(n).expect("a POP")).collect();
    catchments::of(t, 0, &|p| !down.contains(&p)).expect("BGP settles")
}

/// Group `name`'s POP and AS path by network names.
fn entry(t: &Topology, c: &Catchments, name: &str) -> (Option<String>, Vec<String>) {
    let g = t.clients.iter().position(|x| x.name == name).expect("a group");
    let x = &c.groups[g];
    (x.pop.map(|p| t.pops[p].name.clone()), x.path_names.clone())
}

fn names(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| s.to_string()).collect()
}

#[test]
fn prepending_lengthens_the_path_and_moves_a_group_that_had_an_equal_choice() {
    let t = world(&[]);
    let c = catchments_of(&t, &[]);
    // Paris prepends twice: Lyon's path carries the CDN three times.
    assert_eq!(entry(&t, &c, "lyon"), (Some("paris".into()), names(&["orange", "cogent", "cdn", "cdn", "cdn"])));
    // Arelion hears Paris (prepended) and Warsaw from customers: the shorter path wins,
    // so Stockholm enters Warsaw though Paris is nearer by the model.
    assert_eq!(entry(&t, &c, "stockholm").0.as_deref(), Some("warsaw"));
    let t0 = world(&[("pops[paris].prepend", "0")]);
    let c0 = catchments_of(&t0, &[]);
    assert_eq!(entry(&t0, &c0, "lyon").1, names(&["orange", "cogent", "cdn"]));
    // Equal lengths now: hot potato at Arelion's router nearest Stockholm picks Paris.
    assert_eq!(entry(&t0, &c0, "stockholm").0.as_deref(), Some("paris"));
}

#[test]
fn a_selective_announcement_keeps_a_transits_clients_away_until_it_announces_there() {
    // Madrid announces to NTT only: Lisbon, behind Cogent, crosses to Paris.
    let t = world(&[]);
    let c = catchments_of(&t, &[]);
    let lisbon = &c.groups[t.clients.iter().position(|g| g.name == "lisbon").unwrap()];
    assert_eq!(entry(&t, &c, "lisbon").0.as_deref(), Some("paris"));
    // It pays the model's Lisbon–Paris round trip plus the way's detour via Madrid, over
    // the model's Lisbon–Madrid.
    let (at, paris, madrid) = (t.clients[9].location, t.pops[0].location, t.pops[3].location);
    assert_eq!(t.clients[9].name, "lisbon");
    let km: f64 = lisbon.way.windows(2).map(|w| great_circle_km(w[0], w[1])).sum();
    let past_km = (km - t.internet.delay.route_stretch() * great_circle_km(at, paris)).max(0.0);
    let paid_ms = t.internet.delay.rtt_ms(at, paris) + fibre_rtt_ms(past_km) - t.internet.delay.rtt_ms(at, madrid);
    assert!((lisbon.inflation_ms() - paid_ms).abs() < 0.01 && paid_ms > 1.0, "Lisbon pays for the detour: {lisbon:?}");
    assert!(lisbon.extra_km > 500.0);
    let t2 = world(&[("pops[madrid].announce_to", "[ntt, cogent]")]);
    let c2 = catchments_of(&t2, &[]);
    assert_eq!(entry(&t2, &c2, "lisbon"), (Some("madrid".into()), names(&["access/lisbon", "cogent", "cdn"])));
}

#[test]
fn no_export_keeps_a_route_with_the_network_that_received_it() {
    // Frankfurt's routes are no-export: DTAG (at DE-CIX) uses them and passes them on to
    // nobody, so only Frankfurt's direct neighbours' groups enter it.
    let t = world(&[]);
    let c = catchments_of(&t, &[]);
    assert_eq!(entry(&t, &c, "berlin"), (Some("frankfurt".into()), names(&["dtag", "cdn"])));
    let frankfurt = t.pop_index("frankfurt").unwrap();
    for (g, x) in c.groups.iter().enumerate() {
        if x.pop == Some(frankfurt) {
            assert_eq!(
                x.path_names.len(),
                2,
                "{}: only Frankfurt's direct neighbours use it: {x:?}",
                t.clients[g].name
            );
        }
    }
    // Hamburg behind Vodafone, a customer of GTT only: GTT's best route at its router
    // nearest Hamburg is Frankfurt's, which it may not export, and BGP exports only the
    // best: Hamburg has no route. Without the community it enters Frankfurt through GTT.
    let vodafone = with("clients: [berlin, hamburg]", "clients: [berlin]").replacen(
        "    - { name: play,",
        "    - { name: vodafone, asn: 3209, clients: [hamburg], providers: [gtt] }\n    - { name: play,",
        1,
    );
    let t = topology::parse_str("t.yaml", &vodafone).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(entry(&t, &catchments_of(&t, &[]), "hamburg"), (None, vec![]));
    let open = topology::parse_str("t.yaml", &vodafone.replacen(", communities: [no-export]", "", 1)).expect("valid");
    assert_eq!(
        entry(&open, &catchments_of(&open, &[]), "hamburg"),
        (Some("frankfurt".into()), names(&["vodafone", "gtt", "cdn"]))
    );
}

/// The file with a group in New York behind Verizon, which buys from Cogent and Arelion
/// there.
fn with_new_york() -> String {
    let yaml = with("Stockholm, Warsaw, Amsterdam]", "Stockholm, Warsaw, Amsterdam, New York City]")
        .replacen("Frankfurt am Main, Madrid, Amsterdam]", "Frankfurt am Main, Madrid, Amsterdam, New York City]", 1)
        .replacen(
            "    - { name: play,",
            "    - { name: verizon, asn: 701, clients: [newyork], providers: [cogent, arelion] }\n    - { name: play,",
            1,
        )
        .replacen(
            "  - { name: lisbon,",
            "  - { name: newyork,    location: [40.713, -74.006], count: 4, traffic: game }\n  - { name: lisbon,",
            1,
        );
    assert_eq!(yaml.matches("New York City]").count(), 2);
    yaml
}

#[test]
fn a_region_only_community_keeps_a_pop_for_its_region_and_sends_far_groups_elsewhere() {
    let yaml = with_new_york();
    let t = topology::parse_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let c = catchments_of(&t, &[]);
    // Arelion offers Warsaw with the shorter path: New York crosses the Atlantic to it.
    assert_eq!(entry(&t, &c, "newyork"), (Some("warsaw".into()), names(&["verizon", "arelion", "cdn"])));
    assert_eq!(entry(&t, &c, "krakow").0.as_deref(), Some("warsaw"));
    // Scoped to Europe, Warsaw's route stops at Arelion's New York router (it is its
    // best there, and BGP exports only the best): Verizon takes Cogent's Paris.
    let scoped =
        yaml.replacen("upstreams: [arelion, gtt] }", "upstreams: [arelion, gtt], communities: [region:europe] }", 1);
    let t2 = topology::parse_str("t.yaml", &scoped).unwrap_or_else(|e| panic!("{e}"));
    let c2 = catchments_of(&t2, &[]);
    assert_eq!(t2.pops[2].bgp.levers.region, Some(anyedge_ccn::delay::Area::Europe));
    assert_eq!(entry(&t2, &c2, "newyork"), (Some("paris".into()), names(&["verizon", "cogent", "cdn", "cdn", "cdn"])));
    for (g, (a, b)) in c.groups.iter().zip(&c2.groups).enumerate() {
        if t.clients[g].name != "newyork" {
            assert_eq!((a.pop, &a.path), (b.pop, &b.path), "{}: in Europe nothing moves", t.clients[g].name);
        }
    }
}

#[test]
fn a_vips_own_levers_move_its_catchment_and_leave_the_other_vips() {
    // A second VIP at the same POPs; only it lifts Paris's prepends.
    let two = with(
        "    listeners:\n      - { protocol: udp, port: 7000, scheduler: maglev, backends: game }\n",
        "    listeners:\n      - { protocol: udp, port: 7000, scheduler: maglev, backends: game }\n  - name: api\n    ipv4: 198.18.0.21\n    home: frankfurt\n    pops: [paris, frankfurt, warsaw, madrid]\n    announce: { paris: { prepend: 0 }, madrid: { announce_to: [ntt, cogent] } }\n    listeners:\n      - { protocol: udp, port: 7000, scheduler: maglev, backends: game }\n",
    );
    let t = topology::parse_str("t.yaml", &two).unwrap_or_else(|e| panic!("{e}"));
    let (paris, madrid) = (t.pop_index("paris").unwrap(), t.pop_index("madrid").unwrap());
    // Fields the entry leaves out stay the POP's.
    assert_eq!((t.levers(1, paris).prepend, t.levers(0, paris).prepend), (0, 2));
    assert_eq!(t.levers(1, madrid).prepend, 0);
    let of = |vip: usize| catchments::of(&t, vip, &|_| true).expect("settles");
    let (edge, api) = (of(0), of(1));
    assert_eq!(entry(&t, &edge, "stockholm").0.as_deref(), Some("warsaw"));
    assert_eq!(entry(&t, &api, "stockholm").0.as_deref(), Some("paris"));
    assert_eq!(entry(&t, &edge, "lisbon").0.as_deref(), Some("paris"));
    assert_eq!(entry(&t, &api, "lisbon"), (Some("madrid".into()), names(&["access/lisbon", "cogent", "cdn"])));
    // The same lever set from the command line, on the shipped file's one VIP.
    let set = world(&[("vips[edge].announce.paris.prepend", "0")]);
    assert_eq!(entry(&set, &catchments_of(&set, &[]), "stockholm").0.as_deref(), Some("paris"));
    assert_eq!(set.pops[paris].bgp.levers.prepend, 2, "the POP's own levers are untouched");
}

#[test]
fn a_customer_at_its_providers_ixp_stays_its_customer_there() {
    // BT buys from NTT and both are at LINX: their one session is transit, so NTT's Madrid
    // reaches BT as a provider's route, and Cogent's Paris, a peer at LINX, wins.
    let t = world(&[]);
    let c = catchments_of(&t, &[]);
    assert_eq!(entry(&t, &c, "london"), (Some("paris".into()), names(&["bt", "cogent", "cdn", "cdn", "cdn"])));
    // Once BT buys from Arelion alone, NTT is a peer at LINX and its shorter path wins.
    let t2 = world(&[("internet.ases[bt].providers", "[arelion]")]);
    let c2 = catchments_of(&t2, &[]);
    assert_eq!(entry(&t2, &c2, "london"), (Some("madrid".into()), names(&["bt", "ntt", "cdn"])));
}

/// The file with more exchanges in Vienna, one of each list of members.
fn with_exchanges(exchanges: &[&str]) -> Topology {
    let ams = "    - { name: ams-ix,  at: Amsterdam, members: [ntt, gtt, arelion] }\n";
    assert!(FILE.contains(ams));
    let more: String = exchanges
        .iter()
        .enumerate()
        .map(|(i, m)| format!("    - {{ name: vix{i}, at: Vienna, members: [{m}] }}\n"))
        .collect();
    let text = FILE.replace(ams, &format!("{ams}{more}"));
    topology::parse_str("internet.yaml", &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_exchange_of_networks_without_customers_changes_no_route_and_costs_no_session_among_them() {
    let sessions = |t: &Topology| t.internet.ways.internetwork(t).graph().sessions();
    // Each of the four alone at an exchange in Vienna: a router there, on its providers.
    let apart = with_exchanges(&["bt", "dtag", "orange", "play"]);
    let together = with_exchanges(&["bt, dtag, orange, play"]);
    // None of the four sells transit: each passes a peer nothing, so no pair of them
    // needs a session (six, were the exchange a full mesh).
    assert_eq!(sessions(&together), sessions(&apart));
    let route = |c: &Catchments| c.groups.iter().map(|g| (g.pop, g.path.clone(), g.rtt_ns)).collect::<Vec<_>>();
    let t = world(&[]);
    assert_eq!(route(&catchments_of(&together, &[])), route(&catchments_of(&t, &[])));
    // A transit there (none of theirs) peers with each: three sessions, none among them.
    let with_gtt = with_exchanges(&["bt, orange, play, gtt", "dtag"]);
    assert_eq!(sessions(&with_gtt), sessions(&apart) + 3);
}

#[test]
fn a_withdrawn_pop_sends_its_groups_to_their_next_best_route() {
    let t = world(&[]);
    let before = catchments_of(&t, &[]);
    let after = catchments_of(&t, &["frankfurt"]);
    assert_eq!(entry(&t, &before, "berlin").0.as_deref(), Some("frankfurt"));
    // Berlin's DTAG hears Warsaw from Arelion at DE-CIX (a peer) and from GTT (its
    // provider): the peer wins.
    assert_eq!(entry(&t, &after, "berlin"), (Some("warsaw".into()), names(&["dtag", "arelion", "cdn"])));
    for (g, (b, a)) in before.groups.iter().zip(&after.groups).enumerate() {
        if b.pop != t.pop_index("frankfurt") {
            let (was, is) = ((b.pop, &b.path, b.rtt_ns), (a.pop, &a.path, a.rtt_ns));
            assert_eq!(was, is, "{}: a group Frankfurt did not serve stays where it was", t.clients[g].name);
        }
    }
    let all = t.vips[0].pops.iter().map(|p| t.pops[*p].name.as_str()).collect::<Vec<_>>();
    let none = catchments_of(&t, &all);
    assert!(none.groups.iter().all(|x| x.pop.is_none() && x.path.is_empty()), "every POP withdrawn: no route");
}

#[test]
fn the_same_file_gives_the_same_catchments() {
    let t = world(&[]);
    assert_eq!(catchments_of(&t, &[]), catchments_of(&world(&[]), &[]));
}

#[test]
fn catchments_prints_each_groups_pop_path_round_trip_and_inflation() {
    let out = Command::new(ANYEDGE)
        .args(["catchments", "topologies/internet.yaml", "--down", "frankfurt", "--json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let groups = v["vips"][0]["groups"].as_array().expect("groups");
    let berlin = groups.iter().find(|g| g["group"] == "berlin").expect("berlin");
    assert_eq!(berlin["pop"], "warsaw");
    assert_eq!(berlin["as_path"], serde_json::json!([3320, 1299, 64500]));
    assert_eq!(berlin["as_path_names"], serde_json::json!(["dtag", "arelion", "cdn"]));
    let (rtt, nearest) = (berlin["rtt_ms"].as_f64().unwrap(), berlin["nearest_rtt_ms"].as_f64().unwrap());
    assert!((berlin["inflation_ms"].as_f64().unwrap() - (rtt - nearest)).abs() < 1e-6);
    let table = Command::new(ANYEDGE)
        .args(["catchments", "topologies/internet.yaml", "--set", "pops[paris].prepend=0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("8 networks, 3 IXPs"), "{text}");
    let lyon = text.lines().find(|l| l.starts_with("lyon")).expect("a line for lyon");
    assert!(lyon.ends_with("orange cogent cdn"), "{lyon}");
    let bad = Command::new(ANYEDGE)
        .args(["catchments", "topologies/internet.yaml", "--down", "atlantis"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown POP `atlantis`"));
}

/// The file with one exact piece of text replaced (which must occur once).
fn with(from: &str, to: &str) -> String {
    assert_eq!(FILE.matches(from).count(), 1, "`{from}` must occur exactly once");
    FILE.replacen(from, to, 1)
}

/// Asserts a diagnostic at the line of `marker` whose field ends with `field` and whose
/// reason holds `reason`.
fn refused(yaml: &str, marker: &str, field: &str, reason: &str) {
    let line = yaml.lines().position(|l| l.contains(marker)).expect("marker") + 1;
    let diags = match topology::parse_str("t.yaml", yaml) {
        Ok(_) => panic!("expected {field} refused"),
        Err(e) => e.diagnostics,
    };
    assert!(
        diags.iter().any(|d| d.line == line && d.field.ends_with(field) && d.reason.contains(reason)),
        "wanted line {line} `{field}`: ..{reason}..; got {diags:#?}"
    );
}

#[test]
fn a_broken_as_graph_is_refused_at_its_line_naming_the_field() {
    refused(
        &with("providers: [gtt] }", "providers: [level3] }"),
        "name: dtag",
        "ases[5].providers[0]",
        "unknown network `level3`",
    );
    refused(
        &with("upstreams: [gtt, ixp/de-cix]", "upstreams: [gtt, ixp/franceix]"),
        "name: frankfurt",
        "pops[1].upstreams[1]",
        "unknown IXP `ixp/franceix`",
    );
    refused(
        &with("members: [ntt, gtt, arelion]", "members: [ntt, gtt, arelion, sprint]"),
        "name: ams-ix",
        "ixps[2].members[3]",
        "unknown network `sprint`",
    );
    // A provider loop: Arelion buys from BT, which buys from Arelion.
    let looped = with("asn: 1299, peers:", "asn: 1299, providers: [bt], peers:");
    refused(&looped, "name: arelion", "ases[0].providers", "a provider loop: arelion → bt → arelion");
    // A network nothing joins to a POP.
    let island = with("    - { name: play,", "    - { name: island, asn: 65010, at: [Lyon] }\n    - { name: play,");
    refused(&island, "name: island", "internet.ases[7]", "`island` is not connected to any POP");
    refused(&with("asn: 2914,", "asn: 174,"), "name: ntt", "ases[2].asn", "AS174 is `cogent`'s number too");
    refused(
        &with("asn: 2914,", "asn: 2914, last_mile: 3ms,"),
        "name: ntt",
        "ases[2].last_mile",
        "a last mile is an access network's: it needs `clients`",
    );
    refused(
        &with("asn: 12912,", "asn: 12912, last_mile: soon,"),
        "name: play",
        "ases[7].last_mile",
        "`soon` is not a duration",
    );
    refused(&with("asn: 2914,", "asn: 64500,"), "name: ntt", "ases[2].asn", "the CDN's own AS number");
    refused(
        &with("at: [London, Frankfurt am Main, Amsterdam, Madrid]", "at: [London, Gotham]"),
        "name: ntt",
        "ases[2].at[1]",
        "unknown place `Gotham`",
    );
    refused(
        &with("announce_to: [ntt]", "announce_to: [gtt]"),
        "name: madrid",
        "pops[3].announce_to[0]",
        "`gtt` is not one of the POP's `upstreams`",
    );
    refused(
        &with("communities: [no-export]", "communities: [blackhole]"),
        "name: frankfurt",
        "pops[1].communities[0]",
        "unknown community `blackhole`",
    );
    refused(
        &with("clients: [krakow]", "clients: [krakow, berlin]"),
        "name: play",
        "ases[7].clients[1]",
        "`berlin` already has an access network, `dtag`",
    );
    refused(
        &with("upstreams: [ntt, cogent], announce_to: [ntt]", "announce_to: [ntt]"),
        "name: madrid",
        "pops[3].announce_to[0]",
        "`ntt` is not one of the POP's `upstreams`",
    );
    refused(
        &with(
            "{ name: lisbon,     location: [38.717, -9.133], count: 4, traffic: game }",
            "{ name: lisbon,     location: [38.717, -9.133], count: 4, traffic: game, catchment: [madrid] }",
        ),
        "name: lisbon",
        "clients[9].catchment",
        "not with `internet.ases`",
    );
    refused(
        &with("communities: [no-export]", "communities: [region:atlantis]"),
        "name: frankfurt",
        "pops[1].communities[0]",
        "unknown area `atlantis`",
    );
    refused(
        &with("communities: [no-export]", "communities: [region:east-asia]"),
        "name: frankfurt",
        "pops[1].communities",
        "`region:east-asia` on a POP in europe",
    );
    let announce = |entry: &str| {
        with(
            "    pops: [paris, frankfurt, warsaw, madrid]\n",
            &format!("    pops: [paris, frankfurt, warsaw]\n    announce: {{ {entry} }}\n"),
        )
    };
    refused(
        &announce("madrid: { prepend: 1 }"),
        "announce:",
        "vips[0].announce.madrid",
        "`madrid` does not publish this VIP",
    );
    refused(&announce("rome: { prepend: 1 }"), "announce:", "vips[0].announce.rome", "unknown POP `rome`");
    refused(&announce("paris: { prepend: 11 }"), "announce:", "vips[0].announce.paris.prepend", "");
    refused(
        &announce("paris: { announce_to: [ntt] }"),
        "announce:",
        "announce.paris.announce_to[0]",
        "`ntt` is not one of the POP's `upstreams`",
    );
    refused(&announce("paris: { weight: 1 }"), "announce:", "announce.paris.weight", "unknown field");
    // The levers mean nothing without an AS-level internet.
    let small = include_str!("../topologies/small.yaml").replacen(
        "{ name: paris,  location: [48.857, 2.352] }",
        "{ name: paris,  location: [48.857, 2.352], prepend: 2 }",
        1,
    );
    refused(&small, "name: paris,", "pops[0].prepend", "needs `internet.ases`");
    let small = include_str!("../topologies/small.yaml").replacen(
        "    pops: ",
        "    announce: { paris: { prepend: 1 } }\n    pops: ",
        1,
    );
    refused(&small, "announce:", "vips[0].announce", "needs `internet.ases`");
}

#[test]
fn places_are_coordinates_nodes_or_cities_by_name_and_country() {
    let t = world(&[]);
    let arelion = &t.internet.ases[0];
    assert_eq!(arelion.at[1].name, "Frankfurt am Main");
    assert!((arelion.at[1].location[0] - 50.116).abs() < 1e-9);
    let moved =
        with("at: [London, Frankfurt am Main, Amsterdam, Madrid]", "at: [\"London, GB\", pop/warsaw, [41.9, 12.5]]");
    let t = topology::parse_str("t.yaml", &moved).unwrap_or_else(|e| panic!("{e}"));
    let ntt = &t.internet.ases[2];
    assert_eq!(ntt.at[1].location, t.pops[2].location);
    assert_eq!(ntt.at[2].location, [41.9, 12.5]);
    refused(
        &with("at: [London, Frankfurt am Main, Amsterdam, Madrid]", "at: [\"London, FR\"]"),
        "name: ntt",
        "ases[2].at[0]",
        "unknown place",
    );
}

/// The simulator gives the leg between a group and a POP one delay whatever else
/// announces: the way BGP takes there when that POP alone announces. On this file that
/// is the way each group takes in every state the faults and tests reach (all POPs, each
/// one withdrawn), so the round trip `catchments` prints is the one along the path shown:
/// the model's between the group and the POP plus the way's detour at the model's cost
/// of a km, never less than the straight trip.
#[test]
fn an_access_networks_own_last_mile_is_its_clients_and_every_other_group_keeps_the_internets() {
    let t = topology::parse_str("internet.yaml", &with("asn: 3320,", "asn: 3320, last_mile: 750us,"))
        .unwrap_or_else(|e| panic!("{e}"));
    let group = |name: &str| t.clients.iter().position(|c| c.name == name).expect("a group");
    let to = anyedge_topology::InternetEnd::Pop(0);
    for (name, last_mile_ns) in [("berlin", 750_000), ("hamburg", 750_000), ("london", t.internet.last_mile_ns)] {
        let g = group(name);
        assert_eq!(t.last_mile_ns(g), last_mile_ns, "{name}");
        assert_eq!(t.last_miles_ns()[g], last_mile_ns, "{name}");
        let link = anyedge_topology::nodes::access_link(&t, g, to);
        assert_eq!(link.impairment.delay_ns, t.internet_rtt_ns(g, to) / 2 + last_mile_ns, "{name}'s access link");
    }
    assert_eq!(t.last_mile_min_ns(), 750_000.min(t.internet.last_mile_ns));
}

#[test]
fn each_groups_round_trip_is_the_model_end_to_end_plus_fibre_past_the_measured_routes_length() {
    let t = world(&[]);
    let mut states = vec![vec![]];
    states.extend(t.pops.iter().map(|p| vec![p.name.as_str()]));
    let (mut checked, mut past_the_measured) = (0, 0);
    for down in states {
        let c = catchments_of(&t, &down);
        for (g, x) in c.groups.iter().enumerate().filter(|(_, x)| x.pop.is_some()) {
            let (a, z) = (x.way[0], *x.way.last().unwrap());
            let km: f64 = x.way.windows(2).map(|w| great_circle_km(w[0], w[1])).sum();
            // Only the km past the measured routes' length (the model's route stretch
            // times the great circle) cost more, at fibre's speed.
            let past_km = (km - t.internet.delay.route_stretch() * great_circle_km(a, z)).max(0.0);
            let expected_ms = t.internet.delay.rtt_ms(a, z) + fibre_rtt_ms(past_km);
            past_the_measured += usize::from(past_km > 0.0);
            let rtt_ms = x.rtt_ns as f64 / 1e6;
            assert!(
                (rtt_ms - expected_ms).abs() < 0.01,
                "{} with {down:?} withdrawn: {rtt_ms} ms, not {expected_ms}: {x:?}",
                t.clients[g].name
            );
            assert!(x.rtt_ns >= t.straight_rtt_ns(g, anyedge_topology::InternetEnd::Pop(x.pop.unwrap())) - 1);
            assert_eq!(x.way.first(), Some(&t.clients[g].location));
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked}");
    assert!(past_the_measured > 0, "some way runs past the measured routes' length and pays for it");
}

/// A second region and VIP (homed in Madrid, published by Madrid and Paris) split the
/// world into two partitions: BGP's catchments, worked out once per routing change and
/// shared, give the same report on one, two and three threads, and each group enters
/// the POP `catchments` names, for each VIP.
#[test]
fn the_simulator_follows_bgp_and_gives_the_same_bytes_on_any_thread_count() {
    let two_regions = with(
        "regions:\n",
        "regions:\n  - name: madrid-dc\n    location: [40.42, -3.70]\n    clb_nodes: 1\n    backends:\n      api:\n        - { address: 198.19.30.1, port: 7001 }\n",
    )
    .replacen(
        "vips:\n",
        "vips:\n  - name: api\n    ipv4: 198.18.0.30\n    home: madrid-dc\n    pops: [paris, madrid]\n    listeners:\n      - { protocol: udp, port: 7001, backends: api }\n",
        1,
    )
    .replacen("traffic: game }", "traffic: [game, api] }", 3)
    .replacen("  game: {", "  api: { vip: api, protocol: udp, port: 7001, interval: 100ms, size: 100 }\n  game: {", 1)
    .replacen("duration: 20s", "duration: 4s", 1)
    .replacen("  - { at: 8s, down: pop/frankfurt }\n  - { at: 14s, up: pop/frankfurt }", "  - { at: 2s, down: pop/frankfurt }", 1);
    let t = topology::parse_str("two.yaml", &two_regions).unwrap_or_else(|e| panic!("{e}"));
    let on = |threads: usize| {
        let options = anyedge_sim::Options { threads, ..Default::default() };
        anyedge_sim::run_with(&t, &options, |_| {}).expect("simulates")
    };
    let one = on(1);
    assert_eq!(one.stats.partitions, 2, "one partition per region");
    for threads in [2, 3] {
        assert!(on(threads).report.to_json() == one.report.to_json(), "{threads} threads: the report differs");
    }
    let report: serde_json::Value = serde_json::from_str(&one.report.to_json()).expect("JSON");
    // The report names each group's POP for the VIP of its first traffic class.
    for (g, group) in t.clients.iter().enumerate() {
        let v = t.traffic[group.traffic[0]].vip;
        let c = catchments::of(&t, v, &|_| true).expect("settles");
        let want = c.groups[g].pop.map(|p| t.pops[p].name.clone());
        let row = &report["clients"][g];
        assert_eq!(row["pop"].as_str().map(String::from), want, "{} to {}: {}", group.name, t.vips[v].name, row["pop"]);
        // The route section says how: the AS path and what it costs over the nearest POP.
        let x = &c.groups[g];
        assert_eq!(row["route"]["as_path"], serde_json::json!(x.path), "{}", group.name);
        let inflation = row["route"]["inflation_ms"].as_f64().expect("inflation");
        assert!((inflation - x.inflation_ms()).abs() < 0.001, "{}: {inflation} vs {}", group.name, x.inflation_ms());
    }
    let lisbon = report["clients"].as_array().unwrap().iter().find(|c| c["name"] == "lisbon").unwrap();
    assert_eq!(lisbon["route"]["as_path_names"], serde_json::json!(["access/lisbon", "cogent", "cdn", "cdn", "cdn"]));
    assert!(
        lisbon["route"]["inflation_ms"].as_f64().unwrap() > 1.0
            && lisbon["route"]["inflation_km"].as_f64().unwrap() > 500.0
    );
}

#[test]
fn generate_writes_the_default_internet_it_draws_and_reading_it_back_gives_the_same_catchments() {
    let spec = |internet| topology::generate::Spec {
        name: "drawn".into(),
        pops: 12,
        regions: 2,
        clients: 400,
        groups: 40,
        web_every: 0,
        clb_nodes: 1,
        duration_s: 5,
        seed: 7,
        internet,
    };
    let text = topology::generate::generate(&spec(true)).unwrap();
    let written = topology::parse_str("drawn.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.internet.has_ases() && text.contains("upstreams: ["), "the file names its networks");
    assert_eq!(written.internet.routing, topology::Routing::Bgp);
    // The same world without its networks written gets the same default internet when read.
    let drawn = topology::parse_str("drawn.yaml", &topology::generate::generate(&spec(false)).unwrap()).unwrap();
    assert!(drawn.internet.has_ases(), "a file that names no networks gets the default internet");
    assert_eq!(drawn.internet.routing, topology::Routing::BgpDrawn);
    assert_eq!(written.internet.last_mile_ns, drawn.internet.last_mile_ns);
    assert_eq!(written.last_miles_ns(), drawn.last_miles_ns(), "each access network's own last mile, written");
    assert!(text.contains("last_mile: "), "the file gives the access networks' last miles");
    for vip in 0..2 {
        let (a, b) =
            (catchments::of(&written, vip, &|_| true).unwrap(), catchments::of(&drawn, vip, &|_| true).unwrap());
        for (g, (x, y)) in a.groups.iter().zip(&b.groups).enumerate() {
            let name = &written.clients[g].name;
            assert_eq!((x.pop, &x.path, x.rtt_ns), (y.pop, &y.path, y.rtt_ns), "VIP {vip}, group {name}");
        }
        assert!(a.groups.iter().any(|x| x.path.len() > 2), "some group crosses a transit");
    }
}

/// `internet.routing`: `nearest` has no networks, so it is refused beside `ases`, as is a
/// word that is neither; the refusal names the line and field.
#[test]
fn routing_nearest_beside_networks_and_an_unknown_routing_are_refused_at_their_line() {
    let nearest = with("internet:\n  ases:", "internet:\n  routing: nearest\n  ases:");
    refused(&nearest, "routing: nearest", "internet.routing", "`nearest` has no AS-level internet");
    let odd = with("internet:\n  ases:", "internet:\n  routing: shortest\n  ases:");
    refused(&odd, "routing: shortest", "internet.routing", "`shortest` is not `bgp` or `nearest`");
}

/// A file that names no networks gets the default internet unless it says `routing:
/// nearest` or its groups carry `catchment:` lists, and its report says which decided.
#[test]
fn a_file_without_networks_gets_the_default_internet_unless_it_asks_for_the_nearest_pop() {
    let small = include_str!("../topologies/small.yaml");
    let pinned = topology::parse_str("small.yaml", small).unwrap();
    assert_eq!((pinned.internet.routing, pinned.internet.has_ases()), (topology::Routing::Nearest, false));
    let bgp = topology::parse_str("bgp.yaml", &small.replace("routing: nearest, ", "")).unwrap();
    assert_eq!((bgp.internet.routing, bgp.internet.has_ases()), (topology::Routing::BgpDrawn, true));
    assert!(bgp.internet.routing.text(bgp.seed).contains("default internet drawn from seed"));
    let listed = small
        .replace("routing: nearest, ", "")
        .replace("count: 20, traffic: game }", "count: 20, traffic: game, catchment: [paris] }");
    let listed = topology::parse_str("listed.yaml", &listed).unwrap();
    assert_eq!((listed.internet.routing, listed.internet.has_ases()), (topology::Routing::Nearest, false));
}

/// Paris dies at 5 s: its withdrawal reaches each group that entered it `route_hop` per
/// BGP speaker it crosses past the upstream router the group's way entered by (a
/// network's route reflector counts), as the lab's speakers pass it on (`bench failover`
/// times each from the kernel's route changes).
#[test]
fn a_withdrawal_reaches_each_group_route_hop_per_speaker_past_the_pops_upstream() {
    let text = FILE
        .replacen("internet:\n", "failover: { route_hop: 20ms }\n\ninternet:\n", 1)
        .replacen("duration: 20s", "duration: 7s", 1)
        .replacen(
            "  - { at: 8s, down: pop/frankfurt }\n  - { at: 14s, up: pop/frankfurt }",
            "  - { at: 5s, down: pop/paris }",
            1,
        );
    let t = topology::parse_str("internet.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.failover.route_hop_ns, 20_000_000);
    let report = anyedge_sim::run_with(&t, &anyedge_sim::Options::default(), |_| {}).expect("simulates").report;
    let before = catchments_of(&t, &[]);
    let paris = t.pop_index("paris");
    // (group, speakers, when it moved) for each group that entered paris.
    let moved: Vec<(&str, u32, f64)> = t
        .clients
        .iter()
        .enumerate()
        .filter(|&(g, _)| before.groups[g].pop == paris)
        .map(|(g, group)| {
            let row = report.clients.iter().find(|c| c.name == group.name).expect("a row per group");
            let m =
                row.catchment.iter().find(|m| m.at_s >= 5.0).unwrap_or_else(|| panic!("{} never moved", group.name));
            (group.name.as_str(), before.groups[g].hops, m.at_s)
        })
        .collect();
    let speakers: std::collections::BTreeSet<u32> = moved.iter().map(|m| m.1).collect();
    assert!(speakers.len() >= 2, "groups at different distances from paris's upstreams: {moved:?}");
    let &(first, first_hops, first_s) = moved.iter().min_by_key(|m| m.1).expect("groups on paris");
    for &(name, hops, at_s) in &moved {
        let lag_ms = (at_s - first_s) * 1e3;
        let want_ms = f64::from(hops - first_hops) * 20.0;
        // The report's times are whole milliseconds.
        assert!(
            (lag_ms - want_ms).abs() <= 1.0,
            "{name} ({hops} speakers) moved {lag_ms:.1} ms after {first} ({first_hops}), not {want_ms:.1}"
        );
    }
}
