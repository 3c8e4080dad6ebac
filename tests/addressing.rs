//! Client addresses as backends see them: real addresses at layer 4, IPv6 end to end,
//! NAT64, and SNAT with TOA for on-premises backends; cross-region backend delay.

use anyedge_sim::Report;
use anyedge_sim::report::BackendReport;
use anyedge_topology as topology;

const BASE: &str = r#"
name: addressing
seed: 4
duration: 3s
vips:
  - { name: edge, ipv4: 198.18.0.20, ipv6: "fd00:a::20", home: fra, pops: all,
      listeners: [{ protocol: udp, port: 7000, scheduler: maglev, backends: game },
                  { protocol: tcp, port: 443, scheduler: wrr, backends: web }] }
pops:
  - { name: paris, location: [48.857, 2.352] }
idcs:
  - { name: onprem, location: [53.55, 9.99] }
regions:
  - name: fra
    location: [50.110, 8.682]
    snat: [198.18.40.1, "fd00:40::1"]
    backends:
      game: GAME
      web: WEB
  - name: sgp
    location: [1.352, 103.820]
    backends:
      spare: [{ address: 198.19.90.1, port: 7000 }]
clients:
  - { name: v4, location: [51.5, 0.0], count: 6, address: 198.18.66.0/24, traffic: [game, web] }
  - { name: v6, location: [51.5, 0.0], count: 6, address: "fd00:66::/64", traffic: [game, web] }
traffic:
  game: { vip: edge, protocol: udp, port: 7000, interval: 50ms, size: 120 }
  web: { vip: edge, protocol: tcp, port: 443, requests_per_s: 2, request: 300, response: 3000 }
"#;

fn run(game: &str, web: &str) -> Report {
    let text = BASE.replace("GAME", game).replace("WEB", web);
    let t = topology::parse_str("addressing.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    anyedge_sim::run(&t, |_| {}).expect("simulates").report
}

fn backend<'a>(r: &'a Report, addr: &str) -> &'a BackendReport {
    r.backends.iter().find(|b| b.address == addr).unwrap_or_else(|| panic!("no backend {addr}"))
}

fn group_loss(r: &Report, group: &str) -> f64 {
    let c = r.clients.iter().find(|c| c.name == group).unwrap();
    c.traffic.iter().flat_map(|t| [t.anycast.loss_pct, t.direct.loss_pct]).fold(0.0, f64::max)
}

#[test]
fn backends_see_each_clients_own_address_from_its_block() {
    let r = run(
        "[{ address: 198.19.20.1, port: 7000 }, { address: \"fd00:19::1\", port: 7000 }]",
        "[{ address: \"fd00:19::10\", port: 8080 }]",
    );
    let seen = &backend(&r, "198.19.20.1:7000").client_addrs_seen;
    assert!(seen.iter().any(|a| a.starts_with("198.18.66.")), "{seen:?}");
    assert!(seen.iter().all(|a| a.starts_with("198.18.66.") || a == "198.18.40.1"), "{seen:?}");
    let v6 = &backend(&r, "[fd00:19::1]:7000").client_addrs_seen;
    assert!(!v6.is_empty() && v6.iter().all(|a| a.starts_with("fd00:66::")), "IPv6 end to end: {v6:?}");
    assert!(seen.len() <= 16 && v6.len() <= 16);
}

#[test]
fn ipv6_clients_reach_ipv4_backends_through_nat64() {
    let r = run("[{ address: 198.19.20.1, port: 7000 }]", "[{ address: 198.19.20.10, port: 8080 }]");
    assert!(group_loss(&r, "v6") < 5.0, "IPv6 clients are served by IPv4 backends");
    // UDP through NAT64 shows the SNAT address; TCP carries the client in a TOA option.
    let game = &backend(&r, "198.19.20.1:7000").client_addrs_seen;
    assert!(game.contains(&"198.18.40.1".to_string()), "{game:?}");
    let web = &backend(&r, "198.19.20.10:8080").client_addrs_seen;
    assert!(web.iter().any(|a| a.starts_with("fd00:66::")), "TOA names the IPv6 client: {web:?}");
    assert!(!web.contains(&"198.18.40.1".to_string()), "{web:?}");
}

#[test]
fn idc_backends_are_reached_through_snat() {
    let r =
        run("[{ address: 10.20.0.1, port: 7000, idc: onprem }]", "[{ address: 10.20.0.10, port: 8080, idc: onprem }]");
    assert!(group_loss(&r, "v4") < 5.0);
    assert_eq!(backend(&r, "10.20.0.1:7000").client_addrs_seen, ["198.18.40.1"], "UDP sees the SNAT address");
    let web = &backend(&r, "10.20.0.10:8080").client_addrs_seen;
    assert!(web.iter().all(|a| a.starts_with("198.18.66.") || a.starts_with("fd00:66::")), "TOA: {web:?}");
}

#[test]
fn cross_region_backends_cost_the_backbone_round_trip() {
    let local = run("[{ address: 198.19.20.1, port: 7000 }]", "[{ address: 198.19.20.10, port: 8080 }]");
    let remote = run("[{ address: 198.19.90.1, port: 7000, region: sgp }]", "[{ address: 198.19.20.10, port: 8080 }]");
    let p50 = |r: &Report| r.clients[0].traffic[0].anycast.rtt_ms.unwrap().p50;
    // Frankfurt–Singapore is ~10,200 km: ≥ 2 × 10,200 × 1.4 / 204,190 s ≈ 140 ms more.
    assert!(p50(&remote) - p50(&local) > 130.0, "local {} remote {}", p50(&local), p50(&remote));
    let seen = &backend(&remote, "198.19.90.1:7000").client_addrs_seen;
    assert!(seen.iter().any(|a| a.starts_with("198.18.66.")), "no SNAT across regions: {seen:?}");
}
