//! Structure-aware topology fuzzing: a world built by `arbitrary` from names, places,
//! addresses, counts and durations drawn from small pools (so references often resolve),
//! written out as YAML. The fuzzer's time goes to validation and to the checks across
//! sections, not to the YAML reader. Every world is accepted or refused with diagnostics
//! naming where; none panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = ["paris", "tokyo", "frankfurt", "lima", "game", "web"];
const DURATIONS: [&str; 8] = ["0s", "1ms", "50ms", "1s", "20s", "1h", "-1s", "18446744073709551615ns"];
const ADDRESSES: [&str; 7] =
    ["198.18.0.10", "198.19.1.1", "198.19.1.1", "fd00:a::10", "0.0.0.0", "255.255.255.255", "10.0.0.1"];
const TARGETS: [&str; 7] = ["pop/paris", "region/frankfurt", "backend/198.19.1.1:7000", "control/1", "clb/frankfurt/0", "pop/nowhere", "control/9"];

#[derive(Debug, Arbitrary)]
struct World {
    seed: u64,
    duration: u8,
    vips: Vec<Vip>,
    pops: Vec<Place>,
    regions: Vec<Region>,
    clients: Vec<Clients>,
    traffic: Vec<Traffic>,
    faults: Vec<Fault>,
    control: Option<(u8, Vec<u8>)>,
    backbone_delay: Option<bool>,
    /// `failover:` BFD interval and multiplier, route convergence.
    failover: Option<(u8, u8, u8)>,
}

#[derive(Debug, Arbitrary)]
struct Vip {
    name: u8,
    address: u8,
    home: u8,
    pops: Option<Vec<u8>>,
    listeners: Vec<(bool, u16, u8, u8)>,
}

#[derive(Debug, Arbitrary)]
struct Place {
    name: u8,
    lat: i16,
    lon: i16,
}

#[derive(Debug, Arbitrary)]
struct Region {
    place: Place,
    clb_nodes: u8,
    health: Option<(u8, u8, u8, u8)>,
    backends: Vec<(u8, Vec<(u8, u16, u8)>)>,
}

#[derive(Debug, Arbitrary)]
struct Clients {
    place: Place,
    count: u32,
    traffic: Vec<u8>,
    catchment: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct Traffic {
    name: u8,
    vip: u8,
    tcp: bool,
    port: u16,
    interval: u8,
    size: u16,
}

#[derive(Debug, Arbitrary)]
struct Fault {
    at: u8,
    kind: u8,
    target: u8,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn place(p: &Place) -> String {
    format!("name: {}, location: [{}, {}]", pick(&NAMES, p.name), f64::from(p.lat) / 300.0, f64::from(p.lon) / 150.0)
}

fn yaml(w: &World) -> String {
    let mut y = format!("name: fuzz\nseed: {}\nduration: {}\n", w.seed, pick(&DURATIONS, w.duration));
    y += "vips:\n";
    for v in w.vips.iter().take(4) {
        let pops = match &v.pops {
            None => "all".to_string(),
            Some(ps) => format!("[{}]", ps.iter().take(4).map(|&p| pick(&NAMES, p)).collect::<Vec<_>>().join(", ")),
        };
        y += &format!(
            "  - {{ name: {}, ipv4: {}, home: {}, pops: {pops}, listeners: [{}] }}\n",
            pick(&NAMES, v.name),
            pick(&ADDRESSES, v.address),
            pick(&NAMES, v.home),
            v.listeners
                .iter()
                .take(4)
                .map(|&(tcp, port, sched, backends)| format!(
                    "{{ protocol: {}, port: {port}, scheduler: {}, backends: {} }}",
                    if tcp { "tcp" } else { "udp" },
                    ["maglev", "wrr", "wlc", "hash", "nope"][usize::from(sched) % 5],
                    pick(&NAMES, backends)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    y += "pops:\n";
    for p in w.pops.iter().take(6) {
        y += &format!("  - {{ {} }}\n", place(p));
    }
    y += "regions:\n";
    for r in w.regions.iter().take(3) {
        y += &format!("  - {{ {}, clb_nodes: {}", place(&r.place), r.clb_nodes);
        if let Some((i, t, h, u)) = r.health {
            y += &format!(
                ", health: {{ protocol: tcp, interval: {}, timeout: {}, healthy: {h}, unhealthy: {u} }}",
                pick(&DURATIONS, i),
                pick(&DURATIONS, t)
            );
        }
        y += ", backends: {";
        for (g, list) in r.backends.iter().take(3) {
            let list: Vec<String> = list
                .iter()
                .take(4)
                .map(|&(a, port, weight)| {
                    format!("{{ address: {}, port: {port}, weight: {weight} }}", pick(&ADDRESSES, a))
                })
                .collect();
            y += &format!(" {}: [{}],", pick(&NAMES, *g), list.join(", "));
        }
        y += " } }\n";
    }
    y += "clients:\n";
    for c in w.clients.iter().take(4) {
        let traffic: Vec<&str> = c.traffic.iter().take(3).map(|&t| pick(&NAMES, t)).collect();
        y += &format!("  - {{ {}, count: {}, traffic: [{}]", place(&c.place), c.count % 100_000, traffic.join(", "));
        if let Some(order) = &c.catchment {
            let order: Vec<&str> = order.iter().take(3).map(|&p| pick(&NAMES, p)).collect();
            y += &format!(", catchment: [{}]", order.join(", "));
        }
        y += " }\n";
    }
    y += "traffic:\n";
    for t in w.traffic.iter().take(3) {
        y += &format!(
            "  {}: {{ vip: {}, protocol: {}, port: {}, interval: {}, size: {} }}\n",
            pick(&NAMES, t.name),
            pick(&NAMES, t.vip),
            if t.tcp { "tcp" } else { "udp" },
            t.port,
            pick(&DURATIONS, t.interval),
            t.size
        );
    }
    if let Some(delay) = w.backbone_delay {
        y += &format!("backbone: {{ delay: {} }}\n", if delay { "azure-2025-06" } else { "nowhere" });
    }
    if let Some((nodes, sites)) = &w.control {
        let sites: Vec<&str> = sites.iter().take(5).map(|&s| pick(&NAMES, s)).collect();
        y += &format!("control: {{ nodes: {}, sites: [{}] }}\n", nodes % 8, sites.join(", "));
    }
    if let Some((bfd, multiplier, converge)) = w.failover {
        y += &format!(
            "failover: {{ bfd_interval: {}, bfd_multiplier: {multiplier}, route_converge: {} }}\n",
            if bfd % 9 == 8 { "off" } else { pick(&DURATIONS, bfd) },
            pick(&DURATIONS, converge)
        );
    }
    y += "faults:\n";
    for f in w.faults.iter().take(4) {
        let verb = ["down", "up", "unbind", "bind", "migrate"][usize::from(f.kind) % 5];
        y += &format!("  - {{ at: {}, {verb}: {} }}\n", pick(&DURATIONS, f.at), pick(&TARGETS, f.target));
    }
    y
}

fuzz_target!(|w: World| {
    let text = yaml(&w);
    match anyedge_topology::parse_str("fuzz.yaml", &text) {
        Err(e) => assert!(!e.diagnostics.is_empty(), "an error without a diagnostic"),
        // BGP's catchment order (topology::bgp) is an order of the VIP's POPs: each once.
        Ok(t) => {
            for g in 0..t.clients.len() {
                for k in 0..t.vips.len() {
                    let mut order = t.pop_order(g, k);
                    if t.clients[g].catchment.is_none() {
                        order.sort_unstable();
                        let mut publish = t.vips[k].pops.clone();
                        publish.sort_unstable();
                        assert_eq!(order, publish, "group {g}, VIP {k}");
                    }
                }
            }
        }
    }
});
