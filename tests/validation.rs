//! Every validation rule of topology files, each reported at its line with the field
//! and a reason, and the `anyedge validate` / `sim` exit codes around them.

use std::process::Command;

use anyedge_topology::{self as topology, Diagnostic};

/// small.yaml after its first line (the editor's schema modeline, see tests/schema.rs):
/// the lines and columns the tests below expect count within this text.
const SMALL: &str = after_first_line(include_str!("../topologies/small.yaml"));

const fn after_first_line(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'\n' {
        i += 1;
    }
    match std::str::from_utf8(bytes.split_at(i + 1).1) {
        Ok(rest) => rest,
        Err(_) => panic!("small.yaml is UTF-8"),
    }
}

/// small.yaml with one exact piece of text replaced (which must occur once).
fn with(from: &str, to: &str) -> String {
    assert_eq!(SMALL.matches(from).count(), 1, "`{from}` must occur exactly once in small.yaml");
    SMALL.replacen(from, to, 1)
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match topology::parse_str("t.yaml", yaml) {
        Ok(_) => panic!("expected an invalid topology:\n{yaml}"),
        Err(e) => e.diagnostics,
    }
}

/// Asserts one diagnostic at `line` whose field ends with `field` and reason contains `reason`.
fn expect(yaml: &str, line: usize, field: &str, reason: &str) {
    let diags = errors(yaml);
    assert!(
        diags.iter().any(|d| d.line == line && d.field.ends_with(field) && d.reason.contains(reason)),
        "wanted line {line} `{field}`: ..{reason}..; got {diags:#?}"
    );
}

#[test]
fn small_and_global_topologies_are_valid() {
    topology::parse_str("small.yaml", SMALL).unwrap();
    let global = include_str!("../topologies/global.yaml");
    let t = topology::parse_str("global.yaml", global).unwrap();
    assert_eq!(t.pops.len(), 14);
    assert!(t.clients.len() >= 12);
}

#[test]
fn shared_example_means_what_its_comments_say() {
    let text = include_str!("../../shared/examples/global.yaml");
    let t = topology::parse_str("global.yaml", text).unwrap();
    assert_eq!(t.seed, 1);
    assert_eq!(t.duration_ns, 60_000_000_000);
    let vip = &t.vips[0];
    assert_eq!(vip.pops.len(), 14, "pops: all");
    assert_eq!(t.regions[vip.home].name, "guangzhou");
    assert_eq!(t.regions[0].clb_nodes, 2);
    let web = &t.regions[0].backend_groups[1];
    assert_eq!(web.backends[0].weight, 10, "weight defaults to 10");
    assert_eq!(web.backends[1].weight, 0);
    assert_eq!(vip.listeners[1].persistence_ns, Some(300_000_000_000));
    assert_eq!(t.backbone.jitter_ns, 300_000);
    assert!((t.backbone.loss - 0.00001).abs() < 1e-12);
    assert_eq!(t.backbone.bandwidth_bps, 10_000_000_000);
    assert!((t.internet.loss - 0.003).abs() < 1e-12);
    assert_eq!(t.internet.last_mile_ns, 5_000_000);
    let ny = t.clients.iter().find(|c| c.name == "newyork").unwrap();
    let names: Vec<&str> = ny.catchment.as_ref().unwrap().iter().map(|&p| t.pops[p].name.as_str()).collect();
    assert_eq!(names, ["virginia", "toronto"]);
    // `pop_detect: 300ms` is shorthand for 6 probes of the default 50 ms interval.
    assert_eq!((t.failover.probe_interval_ns, t.failover.probe_misses), (50_000_000, 6));
    assert_eq!(t.failover.detect_ns_min(), 300_000_000);
    assert_eq!(t.faults.len(), 4);
    assert_eq!(t.faults[0].what, "down pop/tokyo");
}

#[test]
fn failover_probe_settings_are_checked_and_pop_detect_is_shorthand_for_probe_misses() {
    let line = SMALL.lines().position(|l| l.contains("probe_misses: 6")).unwrap() + 1;
    expect(&with("probe_misses: 6", "probe_misses: 0"), line, "failover.probe_misses", "outside 1–100");
    let both = with("probe_misses: 6", "probe_misses: 6\n  pop_detect: 300ms");
    expect(&both, line + 1, "failover.pop_detect", "give one or the other");
    expect(&with("probe_interval: 50ms", "probe_interval: 0s"), line - 1, "failover.probe_interval", "must lie within");
    let shorthand = with("probe_interval: 50ms\n  probe_misses: 6", "pop_detect: 400ms");
    let t = topology::parse_str("t.yaml", &shorthand).unwrap();
    assert_eq!((t.failover.probe_interval_ns, t.failover.probe_misses), (50_000_000, 8));
    // A window shorter than a backbone round trip would declare live nodes dead.
    let short = with("probe_interval: 50ms\n  probe_misses: 6", "probe_interval: 2ms\n  probe_misses: 2");
    expect(&short, line - 1, "failover", "must exceed the longest backbone round trip, pop/warsaw ↔ region/frankfurt");
    let t = topology::parse_str("t.yaml", &with("probe_misses: 6", "probe_misses: 3")).unwrap();
    assert_eq!(t.failover.detect_ns_max(), 200_000_000, "3 misses of 50 ms, plus the interval a death can fall in");
}

#[test]
fn a_world_too_wide_for_the_default_probe_window_is_refused_even_without_failover_or_backbone_sections() {
    // A POP in Sydney probing a region in Tenerife: a round trip (476 ms) longer than
    // 6 × 50 ms. With neither section in the file, nothing said so, and the live far node
    // would flap.
    let wide =
        with("  - { name: warsaw, location: [52.230, 21.012] }", "  - { name: warsaw, location: [-33.868, 151.209] }")
            .replacen("location: [50.110, 8.682]", "location: [28.468, -16.251]", 1);
    let bare: String = wide
        .lines()
        .filter(|l| !l.starts_with("backbone:"))
        .take_while(|l| !l.starts_with("failover:"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Said at the regions (the list's first line).
    let line = bare.lines().position(|l| l.starts_with("regions:")).unwrap() + 2;
    expect(&bare, line, "failover", "does not fit in the default failover window");
    let diags = errors(&bare);
    assert!(diags.iter().any(|d| d.reason.contains("probe_misses")), "names the setting to raise: {diags:#?}");
    // The setting it names makes the same world valid.
    topology::parse_str("t.yaml", &format!("{bare}failover: {{ probe_misses: 12 }}\n")).unwrap();
}

#[test]
fn probe_idle_is_a_duration_or_off_and_reaches_the_failover_settings() {
    let line = SMALL.lines().position(|l| l.contains("probe_misses: 6")).unwrap() + 1;
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    assert_eq!(t.failover.probe_idle_ns, 1_000_000_000, "default 1s");
    let off = topology::parse_str("t.yaml", &with("probe_misses: 6", "probe_misses: 6\n  probe_idle: off")).unwrap();
    assert_eq!(off.failover.probe_idle_ns, 0, "off: every peer, always");
    let long = topology::parse_str("t.yaml", &with("probe_misses: 6", "probe_misses: 6\n  probe_idle: 5s")).unwrap();
    assert_eq!(long.failover.probe_idle_ns, 5_000_000_000);
    expect(
        &with("probe_misses: 6", "probe_misses: 6\n  probe_idle: 0s"),
        line + 1,
        "failover.probe_idle",
        "must lie within",
    );
    expect(&with("probe_misses: 6", "probe_misses: 6\n  probe_idle: never"), line + 1, "failover.probe_idle", "");
}

#[test]
fn bfd_timers_are_checked_and_reach_the_failover_settings() {
    let line = SMALL.lines().position(|l| l.contains("bfd_interval: 50ms")).unwrap() + 1;
    // BIRD takes 10 ms and up; a multiplier of 0 would never declare anything down.
    expect(&with("bfd_interval: 50ms", "bfd_interval: 1ms"), line, "failover.bfd_interval", "must lie within");
    let zero = with("bfd_interval: 50ms", "bfd_interval: 50ms\n  bfd_multiplier: 0");
    expect(&zero, line + 1, "failover.bfd_multiplier", "outside 1–255");
    let t =
        topology::parse_str("t.yaml", &with("bfd_interval: 50ms", "bfd_interval: 20ms\n  bfd_multiplier: 5")).unwrap();
    assert_eq!((t.failover.bfd().interval_ns, t.failover.bfd().misses), (20_000_000, 5));
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    assert_eq!(t.failover.route_converge_ns, 1_000_000, "the default measured in the lab");
    assert_eq!(t.failover.route_hop_ns, 900_000, "the default measured in the AS-level lab");
    // `off`: no BFD; the session's hold timer (3 s, a keepalive a second) finds a dead POP,
    // 2–3 s after it died: as a prober, 2 missed keepalives.
    let t = topology::parse_str("t.yaml", &with("bfd_interval: 50ms", "bfd_interval: off")).unwrap();
    assert!(!t.failover.bfd_on());
    assert_eq!((t.failover.bfd().interval_ns, t.failover.bfd().misses), (1_000_000_000, 2));
    expect(&with("bfd_interval: 50ms", "bfd_interval: of"), line, "failover.bfd_interval", "not a duration");
}

#[test]
fn bgp_hop_and_session_timers_are_checked_and_reach_the_failover_settings() {
    let line = SMALL.lines().position(|l| l.contains("bfd_interval: 50ms")).unwrap() + 1;
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    assert_eq!(t.failover.session_setup_ns, 1_000_000_000, "the default measured in the lab");
    let set = with("bfd_interval: 50ms", "bfd_interval: 50ms\n  route_hop: 30s\n  session_setup: 2500ms");
    let t = topology::parse_str("t.yaml", &set).unwrap();
    assert_eq!((t.failover.route_hop_ns, t.failover.session_setup_ns), (30_000_000_000, 2_500_000_000));
    let hop = with("bfd_interval: 50ms", "bfd_interval: 50ms\n  route_hop: quick");
    expect(&hop, line + 1, "failover.route_hop", "not a duration");
    let setup = with("bfd_interval: 50ms", "bfd_interval: 50ms\n  session_setup: -1s");
    expect(&setup, line + 1, "failover.session_setup", "");
}

#[test]
fn the_certificates_algorithm_is_ecdsa_p256_unless_tls_names_another_and_a_stranger_is_refused() {
    use anyedge_region::identity::KeyAlgorithm;
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    assert_eq!(t.tls.algorithm, KeyAlgorithm::EcdsaP256, "what browsers verify, by default");
    let file = SMALL.to_string() + "tls:\n  algorithm: ed25519\n";
    assert_eq!(topology::parse_str("t.yaml", &file).unwrap().tls.algorithm, KeyAlgorithm::Ed25519);
    let line = file.lines().count();
    let bad = SMALL.to_string() + "tls:\n  algorithm: rsa-1024\n";
    expect(&bad, line, "tls.algorithm", "`rsa-1024` is not one of ecdsa-p256, ecdsa-p384, rsa-2048, ed25519");
    let typo = SMALL.to_string() + "tls:\n  algorythm: ed25519\n";
    expect(&typo, line, "tls.algorythm", "unknown");
}

#[test]
fn an_https_listener_names_the_vips_http3_on_its_port_in_alt_svc_for_a_day_unless_off() {
    let apps = include_str!("../topologies/apps.yaml");
    let t = topology::parse_str("apps.yaml", apps).unwrap();
    let vip = &t.vips[0];
    let https = vip.listeners.iter().find(|l| l.protocol == topology::ListenerProtocol::Https).unwrap();
    assert_eq!(vip.alt_svc(https).as_deref(), Some("h3=\":443\"; ma=86400"), "quic h3 on 443 beside https 443");
    let http = vip.listeners.iter().find(|l| l.protocol == topology::ListenerProtocol::Http).unwrap();
    assert_eq!(vip.alt_svc(http), None, "plain HTTP names none");
    let listener = "      - { protocol: https, port: 443, backends: site }";
    let edit = |to: &str| {
        assert_eq!(apps.matches(listener).count(), 1);
        apps.replacen(listener, to, 1)
    };
    let off =
        topology::parse_str("t.yaml", &edit("      - { protocol: https, port: 443, backends: site, alt_svc: off }"))
            .unwrap();
    let https = off.vips[0].listeners.iter().find(|l| l.protocol == topology::ListenerProtocol::Https).unwrap();
    assert_eq!(off.vips[0].alt_svc(https), None);
    let hour =
        topology::parse_str("t.yaml", &edit("      - { protocol: https, port: 443, backends: site, alt_svc: 1h }"))
            .unwrap();
    let https = hour.vips[0].listeners.iter().find(|l| l.protocol == topology::ListenerProtocol::Https).unwrap();
    assert_eq!(hour.vips[0].alt_svc(https).as_deref(), Some("h3=\":443\"; ma=3600"));
    let line = apps.lines().position(|l| l == listener).unwrap() + 1;
    let other_port = edit("      - { protocol: https, port: 8443, backends: site, alt_svc: 1h }");
    let errors = topology::parse_str("t.yaml", &other_port).unwrap_err().diagnostics;
    assert!(
        errors.iter().any(|d| d.line == line
            && d.field.ends_with("alt_svc")
            && d.reason.contains("no quic listener of this VIP offers h3 on port 8443")),
        "{errors:#?}"
    );
    let tcp = apps.replacen(
        "{ protocol: tcp, port: 8000, scheduler: wrr, backends: site }",
        "{ protocol: tcp, port: 8000, scheduler: wrr, backends: site, alt_svc: 1h }",
        1,
    );
    let errors = topology::parse_str("t.yaml", &tcp).unwrap_err().diagnostics;
    assert!(
        errors.iter().any(|d| d.field.ends_with("alt_svc") && d.reason.contains("https listener's")),
        "{errors:#?}"
    );
}

#[test]
fn a_vip_names_its_hosts_and_chains_of_its_own_and_a_host_that_is_no_dns_name_is_refused() {
    let own = with(
        "    pops: [paris, warsaw]\n",
        "    pops: [paris, warsaw]\n    hosts: [Shop.Example, api.shop.example]\n    certificates:\n      - { chain: certs/shop.pem, key: certs/shop.key }\n",
    );
    let t = topology::parse_str("t.yaml", &own).unwrap();
    assert_eq!(t.vips[0].hosts, ["shop.example", "api.shop.example"]);
    assert_eq!(t.vips[0].names(), ["shop.example", "api.shop.example", "198.18.0.20"]);
    assert_eq!(t.vips[0].certificates[0].chain, std::path::Path::new("certs/shop.pem"));
    let line = SMALL.lines().position(|l| l == "    pops: [paris, warsaw]").unwrap() + 2;
    let bad = own.replace("Shop.Example", "shop_example");
    expect(&bad, line, "vips[0].hosts[0]", "`shop_example` is not a DNS name");
    let keyless = own.replace(", key: certs/shop.key", "");
    expect(&keyless, line + 2, "vips[0].certificates[0].key", "required");
}

#[test]
fn empty_file_is_an_error() {
    expect("", 1, "file", "empty");
    expect("# only a comment\n\n", 1, "file", "empty");
}

#[test]
fn yaml_syntax_error_names_its_line() {
    expect(&with("    pops: [paris, warsaw]", "    pops: [paris, warsaw"), 12, "yaml", "syntax");
}

#[test]
fn unknown_pop_in_publish_set() {
    expect(&with("pops: [paris, warsaw]", "pops: [paris, lyon]"), 11, "vips[0].pops[1]", "unknown POP `lyon`");
}

#[test]
fn unknown_region_as_home() {
    expect(&with("home: frankfurt", "home: berlin"), 10, "vips[0].home", "unknown region `berlin`");
}

#[test]
fn unknown_vip_in_traffic() {
    expect(&with("game: { vip: edge,", "game: { vip: nowhere,"), 43, "traffic.game.vip", "unknown VIP `nowhere`");
}

#[test]
fn unknown_backend_group_in_listener() {
    expect(
        &with("scheduler: wrr, backends: web }", "scheduler: wrr, backends: api }"),
        14,
        "listeners[1].backends",
        "unknown backend group `api`",
    );
}

#[test]
fn unknown_fault_targets() {
    expect(&with("down: pop/paris", "down: pop/lyon"), 51, "faults[0].down", "unknown fault target `pop/lyon`");
    expect(
        &with("down: backend/198.19.20.3:7000", "down: backend/198.19.20.9:7000"),
        53,
        "faults[2].down",
        "unknown fault target",
    );
    expect(&with("down: pop/paris", "down: router/paris"), 51, "faults[0].down", "is not pop/NAME");
}

#[test]
fn unknown_traffic_class_in_client_group() {
    expect(
        &with("count: 20, traffic: game }", "count: 20, traffic: chat }"),
        39,
        "clients[1].traffic",
        "unknown traffic class `chat`",
    );
}

#[test]
fn port_outside_range() {
    expect(
        &with("{ protocol: udp, port: 7000, scheduler", "{ protocol: udp, port: 0, scheduler"),
        13,
        "listeners[0].port",
        "outside 1–65535",
    );
    expect(
        &with("{ protocol: udp, port: 7000, scheduler", "{ protocol: udp, port: 65536, scheduler"),
        13,
        "listeners[0].port",
        "outside 1–65535",
    );
    expect(
        &with("- { address: 198.19.20.1, port: 7000,", "- { address: 198.19.20.1, port: 99999,"),
        27,
        "game[0].port",
        "outside 1–65535",
    );
}

#[test]
fn same_port_twice_per_transport() {
    // TCP and UDP on one port is fine; two TCP-based listeners on one port are not.
    let both = with("{ protocol: tcp, port: 443, scheduler", "{ protocol: tcp, port: 7000, scheduler");
    let both =
        both.replace("web:  { vip: edge, protocol: tcp, port: 443,", "web:  { vip: edge, protocol: tcp, port: 7000,");
    topology::parse_str("t.yaml", &both).expect("udp/7000 and tcp/7000 share no port space");
    let http = with(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: https, port: 443, backends: web }",
    );
    expect(&http, 15, "listeners[2].port", "already used by vips[0].listeners[1]");
    let quic = with(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 7000, backends: game }",
    );
    expect(&quic, 15, "listeners[2].port", "UDP and QUIC listeners share one port space");
}

#[test]
fn weight_outside_0_to_100() {
    expect(&with("port: 8080, weight: 30", "port: 8080, weight: 101"), 32, "web[1].weight", "outside 0–100");
    expect(&with("port: 8080, weight: 30", "port: 8080, weight: -1"), 32, "web[1].weight", "outside 0–100");
}

#[test]
fn persistence_outside_30_to_3600_seconds() {
    let short = with("scheduler: wrr, backends: web }", "scheduler: wrr, backends: web, persistence: 10s }");
    expect(&short, 14, "listeners[1].persistence", "outside 30s–3600s");
    let long = with("scheduler: wrr, backends: web }", "scheduler: wrr, backends: web, persistence: 2h }");
    expect(&long, 14, "listeners[1].persistence", "outside 30s–3600s");
    let ok = with("scheduler: wrr, backends: web }", "scheduler: wrr, backends: web, persistence: 30s }");
    topology::parse_str("t.yaml", &ok).expect("30 s is allowed");
}

#[test]
fn persistence_only_with_wrr_and_never_on_quic() {
    let maglev = with("scheduler: maglev, backends: game }", "scheduler: maglev, backends: game, persistence: 60s }");
    expect(&maglev, 13, "listeners[0].persistence", "only with the wrr scheduler");
    let quic = with(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 4433, backends: game, persistence: 60s }",
    );
    expect(&quic, 15, "listeners[2].persistence", "not available on QUIC listeners");
}

#[test]
fn schedulers_and_lookup_tables() {
    expect(
        &with("scheduler: maglev,", "scheduler: random,"),
        13,
        "listeners[0].scheduler",
        "not one of wrr, wlc, hash, maglev",
    );
    expect(&with("scheduler: maglev,", "scheduler: maglev, table: 65536,"), 13, "listeners[0].table", "not prime");
    expect(
        &with("scheduler: wrr,", "scheduler: wrr, table: 251,"),
        14,
        "listeners[1].table",
        "only to the maglev and hash",
    );
    for ok in ["scheduler: wlc,", "scheduler: hash, table: 251,", "scheduler: maglev, table: 251,"] {
        topology::parse_str("t.yaml", &with("scheduler: maglev,", ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn clb_and_unbind_fault_targets() {
    // CLB nodes are numbered from 1 like control nodes: /0 and one past the last are refused
    // with the range that exists.
    for bad in ["clb/frankfurt/0", "clb/frankfurt/3"] {
        expect(
            &with("down: pop/paris", &format!("down: {bad}")),
            51,
            "faults[0].down",
            &format!("`{bad}`: CLB nodes are numbered from 1, like control nodes: clb/frankfurt/1 … clb/frankfurt/2"),
        );
    }
    expect(
        &with("down: pop/paris", "down: clb/nowhere/1"),
        51,
        "faults[0].down",
        "unknown fault target `clb/nowhere/1`",
    );
    expect(&with("down: pop/paris", "down: clb/frankfurt"), 51, "faults[0].down", "is not clb/REGION/N");
    expect(
        &with("down: pop/paris", "unbind: pop/paris"),
        51,
        "faults[0].unbind",
        "only backends are bound and unbound",
    );
    topology::parse_str("t.yaml", &with("down: pop/paris", "down: clb/frankfurt/1")).unwrap();
    topology::parse_str("t.yaml", &with("down: pop/paris", "down: clb/frankfurt/2")).unwrap();
    topology::parse_str("t.yaml", &with("down: pop/paris", "unbind: backend/198.19.20.1:7000")).unwrap();
}

#[test]
fn client_address_blocks() {
    let at = |to: &str| with("count: 20, traffic: game }", to);
    expect(&at("count: 20, traffic: game, address: 198.18.66.0/28 }"), 39, "clients[1].address", "fewer than count 20");
    expect(&at("count: 20, traffic: game, address: 198.18.66.1/24 }"), 39, "clients[1].address", "host bits set");
    expect(
        &at("count: 20, traffic: game, address: 198.19.20.0/24 }"),
        39,
        "clients[1].address",
        "a VIP or backend address",
    );
    expect(
        &at("count: 20, traffic: game, address: \"fd00:66::/64\" }"),
        39,
        "clients[1].address",
        "has no ipv6 address",
    );
    let two = with(
        "[51.507, -0.128], count: 20, traffic: [game, web] }",
        "[51.507, -0.128], count: 20, traffic: [game, web], address: 198.18.66.0/24 }",
    )
    .replacen("count: 20, traffic: game }", "count: 20, traffic: game, address: 198.18.66.128/25 }", 1);
    expect(&two, 39, "clients[1].address", "overlaps the addresses of client group `london`");
    topology::parse_str("t.yaml", &at("count: 20, traffic: game, address: 198.18.66.0/24 }")).unwrap();
}

#[test]
fn backend_sites_and_snat() {
    let idc = with(
        "- { address: 198.19.20.1, port: 7000, weight: 10 }",
        "- { address: 10.0.0.1, port: 7000, weight: 10, idc: onprem }",
    );
    expect(&idc, 27, "game[0].idc", "unknown IDC `onprem`");
    let declared = idc.replace("regions:\n", "idcs:\n  - { name: onprem, location: [53.5, 10.0] }\nregions:\n");
    expect(&declared, 23, "regions[0].snat", "declare an IPv4 snat address");
    let ok = declared.replace("    clb_nodes: 2\n", "    clb_nodes: 2\n    snat: [198.18.40.1]\n");
    topology::parse_str("t.yaml", &ok).unwrap_or_else(|e| panic!("{e}"));
    let far = with(
        "- { address: 198.19.20.1, port: 7000, weight: 10 }",
        "- { address: 198.19.20.1, port: 7000, region: tokyo }",
    );
    expect(&far, 27, "game[0].region", "unknown region `tokyo`");
}

#[test]
fn security_group_rules() {
    let sg = |bind: &str, rule: &str| {
        format!("{SMALL}security_groups:\n  - name: sg\n    bind: [{bind}]\n    rules:\n      - {rule}\n")
    };
    let ok_rule = "{ source: 0.0.0.0/0, port: any, action: allow }";
    topology::parse_str("t.yaml", &sg("backend/198.19.20.10:8080, clb/frankfurt", ok_rule)).unwrap();
    expect(&sg("backend/198.19.20.99:8080", ok_rule), 56, "security_groups[0].bind[0]", "unknown binding target");
    expect(&sg("clb/paris", ok_rule), 56, "security_groups[0].bind[0]", "unknown binding target");
    expect(&sg("clb/frankfurt", "{ source: 0.0.0.0/33, port: any, action: allow }"), 58, "rules[0].source", "prefix");
    expect(&sg("clb/frankfurt", "{ source: 0.0.0.0/0, port: 0, action: allow }"), 58, "rules[0].port", "not a port");
    expect(
        &sg("clb/frankfurt", "{ source: 0.0.0.0/0, port: 90-80, action: allow }"),
        58,
        "rules[0].port",
        "not a port",
    );
    expect(
        &sg("clb/frankfurt", "{ source: 0.0.0.0/0, port: any, action: reject }"),
        58,
        "rules[0].action",
        "not allow or drop",
    );
}

#[test]
fn health_check_protocols() {
    let h = |to: &str| with("health: { protocol: tcp, interval: 1s, timeout: 500ms, healthy: 2, unhealthy: 2 }", to);
    topology::parse_str("t.yaml", &h("health: { protocol: http, path: /status, expect: \"200,3xx\" }")).unwrap();
    topology::parse_str("t.yaml", &h("health: { protocol: udp }")).unwrap();
    expect(&h("health: { protocol: icmp }"), 24, "health.protocol", "not one of tcp, udp, http");
    expect(&h("health: { protocol: tcp, path: /x }"), 24, "health.path", "only http health checks");
    expect(&h("health: { protocol: http, path: status }"), 24, "health.path", "not an HTTP path");
    expect(&h("health: { protocol: http, expect: 6xx }"), 24, "health.expect", "not a status");
    expect(&h("health: { protocol: http, expect: 299-200 }"), 24, "health.expect", "not a status");
    expect(&h("health: { interval: 1s, timeout: 2s }"), 24, "health.timeout", "no longer than the interval");
}

#[test]
fn quic_traffic_listeners_and_migration() {
    let with_quic = with(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 4433, backends: web }",
    );
    let app = |def: &str| with_quic.replace("traffic:\n  game:", &format!("traffic:\n  app: {def}\n  game:"));
    let client = |text: String| text.replace("count: 20, traffic: game }", "count: 20, traffic: [game, app] }");
    topology::parse_str("t.yaml", &client(app("{ vip: edge, protocol: quic, port: 4433 }"))).unwrap();
    expect(&client(app("{ vip: edge, protocol: udp, port: 4433 }")), 44, "traffic.app.protocol", "use protocol: quic");
    expect(&client(app("{ vip: edge, protocol: quic, port: 7000 }")), 44, "traffic.app.protocol", "not QUIC");
    let maglev = with_quic.replace(
        "{ protocol: quic, port: 4433, backends: web }",
        "{ protocol: quic, port: 4433, scheduler: maglev, backends: web }",
    );
    expect(&maglev, 15, "listeners[2].scheduler", "QUIC listeners schedule with wrr or wlc");
    expect(&with("down: pop/paris", "migrate: client/tokyo"), 51, "faults[0].migrate", "not client/NAME");
    topology::parse_str("t.yaml", &with("down: pop/paris", "migrate: client/rome")).unwrap();
}

#[test]
fn latitude_and_longitude_out_of_range() {
    expect(&with("[48.857, 2.352]", "[98.857, 2.352]"), 17, "pops[0].location[0] (latitude)", "outside -90–90");
    expect(&with("[52.230, 21.012]", "[52.230, 181.0]"), 18, "pops[1].location[1] (longitude)", "outside -180–180");
    expect(
        &with("location: [41.903, 12.496]", "location: [-91, 12.496]"),
        39,
        "clients[1].location[0] (latitude)",
        "outside",
    );
}

#[test]
fn loss_outside_0_to_100_percent() {
    expect(&with("loss: 0.2% }", "loss: 100.5% }"), 35, "internet.loss", "outside 0–100 %");
    expect(&with("loss: 0.001%,", "loss: -3%,"), 34, "backbone.loss", "outside 0–100 %");
}

#[test]
fn malformed_ip_addresses() {
    expect(&with("ipv4: 198.18.0.20", "ipv4: 198.18.0.300"), 9, "vips[0].ipv4", "not an IPv4 address");
    expect(&with("address: 198.19.20.10,", "address: 198.19.20,"), 31, "web[0].address", "not an IP address");
}

#[test]
fn a_million_clients_are_numbered_from_a_clients_block_and_the_default_pool_says_when_it_is_too_small() {
    // 100,000 clients do not fit 198.18.64.1–198.18.255.253: the error names the way out.
    let many = with("count: 20, traffic: game }", "count: 100000, traffic: game }");
    let line = line_of(SMALL, "name: london");
    expect(
        &many,
        line,
        "clients[0]",
        "100040 clients without `address:`, but their pool 198.18.64.1–198.18.255.253 holds 49149",
    );
    expect(&many, line, "clients[0]", "set `clients_block:`");
    // With a /10 a million fit, numbered from its first host in file order.
    let block = |b: &str, n: &str| {
        with("count: 20, traffic: game }", &format!("count: {n}, traffic: game }}")).replacen(
            "clients:\n",
            &format!("clients_block: {b}\nclients:\n"),
            1,
        )
    };
    let t = topology::parse_str("t.yaml", &block("100.64.0.0/10", "1000000")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.clients.iter().map(|c| u64::from(c.count)).sum::<u64>(), 1_000_040);
    let pool = t.client_pool();
    assert_eq!(pool.bounds(), ("100.64.0.1".parse().unwrap(), "100.127.255.254".parse().unwrap()));
    assert_eq!(pool.len(), 4_194_302);
    // A block that is too small, IPv6, or holds a backend where clients land is refused.
    let at = line_of(&block("100.64.0.0/10", "1"), "clients_block");
    let line = line_of(&block("100.64.0.0/10", "1"), "name: london");
    expect(&block("100.64.0.0/24", "1000"), line, "clients[0]", "holds 254 beside the groups' own blocks");
    expect(&block("\"fd00:c::/64\"", "1"), at, "clients_block", "must be an IPv4 block");
    expect(&block("198.19.20.0/24", "1"), line, "clients[0]", "a VIP, backend or CLB node address");
    expect(&block("100.64.0.0/33", "1"), at, "clients_block", "");
    // More than a file holds (16,777,216) is refused whatever the blocks.
    let huge = with("count: 20, traffic: game }", "count: 16777216, traffic: game }");
    expect(&huge, line_of(SMALL, "name: london"), "clients", "16777256 clients in all; a file holds at most 16777216");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let yaml = with("home: frankfurt", "home: berlin")
        .replace("weight: 30", "weight: 300")
        .replace("loss: 0.2% }", "loss: 200% }");
    let diags = errors(&yaml);
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert!(lines.contains(&10) && lines.contains(&32) && lines.contains(&35), "{diags:#?}");
}

#[test]
fn no_input_panics() {
    // Every prefix of a valid file, and some hostile shapes, give errors or a topology.
    for cut in (0..SMALL.len()).step_by(7) {
        if SMALL.is_char_boundary(cut) {
            let _ = topology::parse_str("t.yaml", &SMALL[..cut]);
        }
    }
    for text in [
        "[1, 2]",
        "name: {",
        "vips: 5",
        "pops: all",
        "- a\n- b",
        "name: x\nvips: [{}]\npops: [[]]",
        "\u{0}\u{1}",
        "a: &x 1\nb: *x",
    ] {
        let _ = topology::parse_str("t.yaml", text);
    }
}

#[test]
fn mutated_topologies_never_panic() {
    // Seeded byte-level mutations of a valid file: every one parses or errors cleanly.
    let mut rng = anyedge_ccn::ComponentRng::new(11, "fuzz/topology");
    let alphabet = b" :-,[]{}#\n0123456789.%/abcmsz\"'&*!|>";
    for _ in 0..1500 {
        let mut bytes = SMALL.as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let i = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[i] = alphabet[rng.below(alphabet.len() as u64) as usize],
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, alphabet[rng.below(alphabet.len() as u64) as usize]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = topology::parse_str("t.yaml", &text) {
            assert!(!e.diagnostics.is_empty());
            assert!(e.diagnostics.iter().all(|d| d.line >= 1 && d.col >= 1 && !d.reason.is_empty()));
        }
    }
}

fn anyedge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_anyedge")).args(args).output().expect("runs")
}

#[test]
fn validate_warns_when_one_backend_group_sits_behind_xff_writing_and_pass_through_listeners() {
    let out = anyedge(&["validate", "topologies/reference.yaml"]);
    assert!(out.status.success(), "a warning is no error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("topologies/reference.yaml: warning: vips.edge: backend group `web`")
            && stderr.contains("tcp-ssl 9443"),
        "{stderr}"
    );
    let clean = anyedge(&["validate", "topologies/small.yaml"]);
    assert!(!String::from_utf8_lossy(&clean.stderr).contains("warning"), "{clean:?}");
}

#[test]
fn validate_exits_0_on_a_valid_file() {
    let out = anyedge(&["validate", "topologies/small.yaml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_and_sim_exit_2_with_file_line_col_field_reason() {
    let dir = std::env::temp_dir().join(format!("anyedge-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, with("port: 8080, weight: 30", "port: 8080, weight: 101")).unwrap();
    let path = file.to_str().unwrap();
    for cmd in ["validate", "sim"] {
        let out = anyedge(&[cmd, path]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!("{path}:32:");
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected) && l.contains(": regions[0].backends.web[1].weight: ")),
            "{cmd}: {stderr}"
        );
        assert!(out.stdout.is_empty() || cmd == "validate", "sim prints no report for an invalid file");
    }
    let missing = anyedge(&["validate", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sim_cli_writes_identical_reports_and_stats() {
    let dir = std::env::temp_dir().join(format!("anyedge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c, stats) = (dir.join("a.json"), dir.join("b.json"), dir.join("c.json"), dir.join("stats.json"));
    let p = |x: &std::path::PathBuf| x.to_str().unwrap().to_string();
    let out = anyedge(&["sim", "topologies/small.yaml", "--report", &p(&a), "--stats", &p(&stats)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("london") && table.contains("fault timeline"), "{table}");
    assert!(anyedge(&["sim", "topologies/small.yaml", "--report", &p(&b)]).status.success());
    assert!(anyedge(&["sim", "topologies/small.yaml", "--seed", "8", "--report", &p(&c)]).status.success());
    let (ra, rb, rc) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert_eq!(ra, rb, "same file and seed: byte-identical report");
    assert_ne!(ra, rc, "another seed: another report");
    let report: serde_json::Value = serde_json::from_slice(&ra).unwrap();
    for key in ["name", "seed", "duration_s", "pops", "clients", "backends", "faults"] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    for key in ["events", "packets", "wall_s", "events_per_s", "packets_per_s", "sim_s"] {
        assert!(s.get(key).is_some_and(|v| v.is_number()), "stats lacks {key}");
    }
    assert!(s["packets"].as_u64().unwrap() > 10_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_maglev_reports_balance_and_disruption() {
    let dir = std::env::temp_dir().join(format!("anyedge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("maglev.json");
    let out = anyedge(&["bench", "maglev", "--backends", "100", "--table", "65537", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    // Balance and disruption are properties of the table, not of the machine.
    assert!(f("max_over_avg") <= 1.03, "{v}");
    assert!(f("disruption_pct") <= 2.0 * f("ideal_disruption_pct"), "{v}");
    assert!(f("build_ms") > 0.0);
    let bad = anyedge(&["bench", "maglev", "--table", "65536"]);
    assert_eq!(bad.status.code(), Some(2), "a non-prime table is refused");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_lab_refuses_a_peer_chain_without_a_peer_or_out_of_range_before_touching_the_host() {
    // Refused by the command line itself: no lab comes up, nothing needs root.
    for (args, says) in [
        (&["--peer-hops", "3"][..], "--peer"),
        (&["--peer", "nginx", "--peer-hops", "0"][..], "0"),
        (&["--peer", "nginx", "--peer-hops", "9"][..], "9"),
        (&["--peer", "haproxy"][..], "haproxy"),
    ] {
        let mut all = vec!["bench", "lab", "/nonexistent/world.yaml"];
        all.extend_from_slice(args);
        let out = anyedge(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} names what is wrong: {err}");
    }
}

#[test]
fn mutual_tls_only_on_listeners_that_terminate_tls() {
    let listener = |def: &str| with("      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }", def);
    for protocol in ["https", "tcp-ssl"] {
        let def = format!("      - {{ protocol: {protocol}, port: 443, backends: web, mtls: true }}");
        let t = topology::parse_str("t.yaml", &listener(&def)).unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert!(t.vips[0].listeners[1].mtls, "{protocol}");
    }
    let quic = "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 4433, backends: web, mtls: true }";
    let t = topology::parse_str("t.yaml", &listener(quic)).unwrap();
    assert!(t.vips[0].listeners[2].mtls && !t.vips[0].listeners[1].mtls, "quic");
    expect(
        &with("scheduler: maglev, backends: game }", "scheduler: maglev, backends: game, mtls: true }"),
        13,
        "listeners[0].mtls",
        "needs a listener that terminates TLS",
    );
    expect(
        &listener("      - { protocol: tcp, port: 443, backends: web, mtls: true }"),
        14,
        "listeners[1].mtls",
        "tcp-ssl",
    );
    expect(
        &listener("      - { protocol: https, port: 443, backends: web, mtls: yes }"),
        14,
        "listeners[1].mtls",
        "true or false",
    );
}

#[test]
fn a_quic_listener_offers_h3_unless_its_alpn_says_otherwise_and_only_quic_listeners_take_alpn() {
    let listener = |def: &str| {
        with(
            "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
            &format!("      - {{ protocol: tcp, port: 443, scheduler: wrr, backends: web }}\n{def}"),
        )
    };
    let t = topology::parse_str("t.yaml", &listener("      - { protocol: quic, port: 4433, backends: web }")).unwrap();
    assert_eq!(t.vips[0].listeners[2].alpn, ["h3"], "HTTP/3 by default");
    assert!(t.vips[0].listeners[1].alpn.is_empty(), "a TCP listener offers nothing");
    let t = topology::parse_str(
        "t.yaml",
        &listener("      - { protocol: quic, port: 4433, backends: web, alpn: [my-game, h3] }"),
    )
    .unwrap();
    assert_eq!(t.vips[0].listeners[2].alpn, ["my-game", "h3"], "in the file's order");
    for (alpn, says) in [
        ("[]", "an empty offer refuses every client"),
        ("[h3, h3]", "`h3` is offered twice"),
        ("[\"h 3\"]", "not an ALPN protocol ID"),
        ("h3", "expected a list"),
    ] {
        let text = listener(&format!("      - {{ protocol: quic, port: 4433, backends: web, alpn: {alpn} }}"));
        let err = topology::parse_str("t.yaml", &text).expect_err(alpn).to_string();
        assert!(err.contains("listeners[2].alpn") && err.contains(says), "{alpn}: {err}");
    }
    let text = listener("      - { protocol: https, port: 8443, backends: web, alpn: [h2] }");
    let err = topology::parse_str("t.yaml", &text).expect_err("https").to_string();
    assert!(err.contains("listeners[2].alpn") && err.contains("a quic listener's"), "{err}");
}

/// small.yaml with two NAT gateways (frankfurt's `egress`, madrid's `far`), a madrid
/// region, and one more `web` backend on the internet written as `backend`.
fn with_gateways(backend: &str) -> String {
    let text = with(
        "regions:\n",
        "nat_gateways:\n  - { name: egress, region: frankfurt, public: 198.18.99.1 }\n  - { name: far, region: madrid, public: 198.18.99.2 }\n\nregions:\n",
    );
    let text = text.replacen(
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
        &format!("        - {{ address: 198.19.20.11, port: 8080, weight: 30 }}\n        - {backend}\n"),
        1,
    );
    text.replacen(
        "\nbackbone:",
        "  - name: madrid\n    location: [40.417, -3.704]\n    backends:\n      api:\n        - { address: 198.19.30.1, port: 80 }\n\nbackbone:",
        1,
    )
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("the needle is in the text") + 1
}

#[test]
fn public_internet_backends_name_a_gateway_of_their_own_region_or_the_router() {
    use anyedge_topology::{Egress, Site};
    let ok = topology::parse_str("t.yaml", &with_gateways("{ address: 198.51.100.7, port: 8080, via: nat/egress }"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.nat_gateways.len(), 2);
    assert_eq!(ok.nat_gateways[0].public.to_string(), "198.18.99.1");
    assert_eq!(ok.regions[0].backend_groups[1].backends[2].site, Site::Internet(Egress::Nat(0)));
    let routed = topology::parse_str("t.yaml", &with_gateways("{ address: 198.51.100.7, port: 8080, via: router }"));
    assert_eq!(routed.unwrap().regions[0].backend_groups[1].backends[2].site, Site::Internet(Egress::Router));

    for (backend, reason) in [
        (
            "{ address: 198.51.100.7, port: 8080, via: nat/nope }",
            "no NAT gateway `nope` (declare it under nat_gateways)",
        ),
        ("{ address: 198.51.100.7, port: 8080, via: nat/far }", "NAT gateway `far` is in region `madrid`"),
        ("{ address: 198.51.100.7, port: 8080, via: sideways }", "is not `router` or `nat/NAME`"),
        ("{ address: '2001:db8::7', port: 8080, via: router }", "public-internet backends are IPv4"),
        ("{ address: 198.51.100.7, port: 8080, via: router, region: madrid }", "lives on the internet"),
        ("{ address: 198.19.20.10, port: 9090, via: router }", "198.19.20.10 is bound without via elsewhere"),
    ] {
        let text = with_gateways(backend);
        expect(&text, line_of(&text, "via:"), "backends.web[2].via", reason);
    }
    let text = with_gateways("{ address: 198.51.100.7, port: 8080, via: nat/egress }")
        .replace("region: madrid, public", "region: lisbon, public");
    expect(&text, line_of(&text, "region: lisbon"), "nat_gateways[1].region", "unknown region `lisbon`");
}

#[test]
fn anyedge_validate_refuses_a_backend_behind_an_unknown_gateway_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("anyedge-via-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("via.yaml");
    let text = with_gateways("{ address: 198.51.100.7, port: 8080, via: nat/nope }");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = line_of(&text, "nat/nope");
    assert!(stderr.contains(&format!("via.yaml:{line}:")) && stderr.contains("backends.web[2].via"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_quic_listener_refuses_a_backend_group_with_ipv6_members() {
    let text = with(
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }",
        "      - { protocol: tcp, port: 443, scheduler: wrr, backends: web }\n      - { protocol: quic, port: 4433, backends: web }",
    )
    .replacen(
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n        - { address: 'fd00:20::11', port: 8080 }\n",
        1,
    );
    expect(&text, line_of(&text, "protocol: quic"), "listeners[2].backends", "QUIC listeners reach IPv4 backends only");
}

// Findings of a fuzzing run of mutated topology files (issue 14): each input gets a clear
// error at its line, or is read as the user meant.

#[test]
fn a_nul_byte_is_refused_at_its_line_instead_of_ending_the_file() {
    let text = with("duration: 20s\n", "duration: 20s\n\0\n");
    let at = line_of(&text, "\0");
    expect(&text, at, "file", "NUL");
}

#[test]
fn a_second_yaml_document_is_refused() {
    let text = format!("{SMALL}---\nname: another\n");
    expect(&text, line_of(&text, "name: another") - 1, "file", "second YAML document");
}

#[test]
fn a_utf8_bom_and_cr_only_line_ends_read_as_the_same_topology() {
    let plain = topology::parse_str("t.yaml", SMALL).unwrap();
    let bom = topology::parse_str("t.yaml", &format!("\u{feff}{SMALL}")).unwrap_or_else(|e| panic!("BOM: {e}"));
    assert_eq!(bom, plain);
    let cr = topology::parse_str("t.yaml", &SMALL.replace('\n', "\r")).unwrap_or_else(|e| panic!("CR: {e}"));
    assert_eq!(cr, plain);
    let crlf = topology::parse_str("t.yaml", &SMALL.replace('\n', "\r\n")).unwrap_or_else(|e| panic!("CRLF: {e}"));
    assert_eq!(crlf, plain);
}

#[test]
fn errors_of_a_two_line_file_point_inside_it() {
    let diags = errors("name: x\npops:");
    assert!(diags.iter().all(|d| d.line <= 2), "{diags:#?}");
}

#[test]
fn errors_quote_long_values_shortened() {
    let long = "a".repeat(100_000);
    let diags = errors(&with("duration: 20s", &format!("duration: {long}")));
    let d = diags.iter().find(|d| d.field == "duration").unwrap_or_else(|| panic!("{diags:#?}"));
    assert!(d.reason.len() < 300, "{} bytes of reason", d.reason.len());
}

#[test]
fn a_duration_in_exponent_notation_is_refused_not_misread() {
    expect(&with("duration: 20s", "duration: 1e9s"), 5, "duration", "1e9s");
    let text = with("interval: 50ms, size: 120", "interval: 1e2ms, size: 120");
    expect(&text, line_of(&text, "1e2ms"), "traffic.game.interval", "1e2ms");
}

#[test]
fn a_region_that_only_hosts_other_regions_backends_needs_none_of_its_own() {
    let text = SMALL
        .replacen(
            "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
            "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n        - { address: 198.19.30.1, port: 8080, region: madrid }\n",
            1,
        )
        .replacen("\nbackbone:", "  - { name: madrid, location: [40.417, -3.704] }\n\nbackbone:", 1);
    let t = topology::parse_str("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.regions[1].backend_groups.is_empty());
}

#[test]
fn a_loopback_vip_a_vip_that_is_a_backend_and_a_backend_inside_a_client_range_are_refused() {
    expect(&with("ipv4: 198.18.0.20", "ipv4: 127.0.0.1"), 9, "vips[0].ipv4", "not a routable unicast address");
    expect(&with("ipv4: 198.18.0.20", "ipv4: 198.19.20.10"), 9, "vips[0].ipv4", "is also a backend");
    let text = with("count: 20, traffic: game }", "count: 20, traffic: game, address: 198.19.20.0/24 }");
    expect(&text, line_of(&text, "198.19.20.0/24"), "clients[1].address", "198.19.20.1");
    // The default pool (groups without `address:`) counts too.
    let text = with("{ address: 198.19.20.1, port: 7000", "{ address: 198.18.64.5, port: 7000");
    expect(&text, line_of(&text, "name: london"), "clients[0]", "holds 198.18.64.5");
}

#[test]
fn an_unwritable_report_path_is_refused_before_the_simulation_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["sim", "topologies/small.yaml", "--report", "/nonexistent/r.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing was simulated: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/r.json") && stderr.contains("--json"), "{stderr}");
}

#[test]
fn a_file_larger_than_a_topology_can_be_is_refused_unread() {
    let dir = std::env::temp_dir().join(format!("anyedge-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("huge.yaml");
    let filler = format!("# {}\n", "x".repeat(1000));
    std::fs::write(&file, format!("{SMALL}{}", filler.repeat(17 * 1024))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("huge.yaml:1:1") && stderr.contains("MB"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_probe_outside_a_labs_client_namespace_says_so_and_exits_1() {
    if std::path::Path::new("/sys/class/net/inet").exists() {
        return; // this machine's own namespace has an `inet` link: not the case to test
    }
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
        .args(["probe", "--target", "198.18.0.20:7000", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not inside a lab's client namespace") && stderr.contains("lab exec"), "{stderr}");
}

#[test]
fn probe_sizes_outside_20_to_65000_bytes_or_on_tcp_are_refused_before_sending() {
    for (args, why) in [
        (&["--size", "10"][..], "--size 10: a request is 20 to 65000 bytes"),
        (&["--size", "70000"][..], "--size 70000: a request is 20 to 65000 bytes"),
        (&["--size", "1400", "--protocol", "tcp"][..], "--size: only UDP requests are sized"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_anyedge"))
            .args(["probe", "--outside-lab", "--target", "127.0.0.1:9", "--duration", "1s"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[test]
fn a_pop_without_a_backbone_link_to_its_vips_home_region_is_refused() {
    let text = with("backbone: { stretch: 1.4,", "backbone: { links: [[pop/paris, region/frankfurt]], stretch: 1.4,");
    // warsaw publishes the VIP but has no link home.
    expect(&text, 11, "vips[0].pops[1]", "POP `warsaw` has no backbone link to region `frankfurt`");
    let both = with(
        "backbone: { stretch: 1.4,",
        "backbone: { links: [[pop/paris, region/frankfurt], [region/frankfurt, pop/warsaw]], stretch: 1.4,",
    );
    topology::parse_str("t.yaml", &both).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_pop_published_by_all_without_a_backbone_link_home_is_refused_by_name() {
    // `pops: all` publishes the VIP at warsaw too, which has no link to frankfurt: its
    // clients would get 100 % loss (`no_route`) if this ran.
    let all = with("pops: [paris, warsaw]", "pops: all");
    let text = all.replacen(
        "backbone: { stretch: 1.4,",
        "backbone: { links: [[pop/paris, region/frankfurt]], stretch: 1.4,",
        1,
    );
    expect(&text, 11, "vips[0].pops", "POP `warsaw` has no backbone link to region `frankfurt`");
    let diags = errors(&text);
    assert!(!diags.iter().any(|d| d.reason.contains("POP `paris`")), "paris has its link: {diags:#?}");
    let both = all.replacen(
        "backbone: { stretch: 1.4,",
        "backbone: { links: [[pop/paris, region/frankfurt], [pop/warsaw, region/frankfurt]], stretch: 1.4,",
        1,
    );
    topology::parse_str("t.yaml", &both).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_calibrated_delay_model_is_taken_by_name_or_written_out_and_bad_ones_are_refused() {
    const BB: &str = "backbone: { stretch: 1.4,";
    let named = with(BB, "backbone: { delay: azure-2025-06,");
    let t = topology::parse_str("t.yaml", &named).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.backbone.delay.name, "azure-2025-06");
    let written = with(
        "internet: { stretch: 2.0,",
        "internet: { delay: { name: mine, default: { stretch: 1.6, overhead: 3ms }, pairs: [{ between: [europe, africa], stretch: 1.3, overhead: 2ms, via: london }] },",
    );
    let t = topology::parse_str("t.yaml", &written).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.internet.delay.name, "mine");
    // paris–warsaw: both in Europe, so the default: 3 ms + 1.6 x the fibre round trip.
    let (paris, warsaw) = (t.pops[0].location, t.pops[1].location);
    let km = anyedge_ccn::geo::great_circle_km(paris, warsaw);
    let want = 3.0 + 1.6 * 2.0 * km / anyedge_ccn::geo::FIBER_KM_PER_S * 1e3;
    assert!((t.internet.delay.rtt_ms(paris, warsaw) - want).abs() < 1e-6);

    expect(
        &with(BB, "backbone: { delay: mars-2030,"),
        34,
        "backbone.delay",
        "`mars-2030` is no calibration that ships",
    );
    expect(&with(BB, "backbone: { delay: azure-2025-06, stretch: 1.4,"), 34, "backbone.stretch", "not both");
    let bad_pair =
        |pair: &str| with(BB, &format!("backbone: {{ delay: {{ default: {{ stretch: 1.5 }}, pairs: [{pair}] }},"));
    expect(
        &bad_pair("{ between: [europe, atlantis], stretch: 1.5 }"),
        34,
        "pairs[0].between[1]",
        "`atlantis` is not an area",
    );
    expect(&bad_pair("{ between: [europe, africa], stretch: 0.5 }"), 34, "pairs[0].stretch", "0.5 is outside 1–10");
    expect(
        &bad_pair("{ between: [europe, africa], stretch: 1.2, via: paris }"),
        34,
        "pairs[0].via",
        "`paris` is not a hub",
    );
    expect(
        &bad_pair("{ between: [europe, africa], stretch: 1.2 }, { between: [africa, europe], stretch: 1.3 }"),
        34,
        "pairs[1]",
        "given twice",
    );
    expect(&with(BB, "backbone: { delay: { pairs: [] },"), 34, "backbone.delay.default", "missing");
}

#[test]
fn a_per_place_delay_model_names_a_shipped_dataset_and_a_height_for_each_of_its_servers() {
    const NET: &str = "internet: { stretch: 2.0,";
    let shipped = topology::builtin_delay("wondernetwork-2020-07").unwrap();
    let landmarks = shipped.landmarks.as_ref().unwrap();
    let heights: Vec<String> =
        landmarks.landmarks.iter().map(|l| format!("{{ server: {}, height: 1ms }}", l.name)).collect();
    let model = |measured: &str, heights: &str, extra: &str| {
        with(
            NET,
            &format!(
                "internet: {{ delay: {{ name: mine, default: {{ stretch: 1.7, overhead: 17ms }}{extra}, landmarks: {{ measured: {measured}, stretch: 2.4, short: {{ stretch: 2.7, overhead: 5ms }}, neighbours: 4, power: 2, reach_km: 2000, prior: 2, heights: [{heights}] }} }},"
            ),
        )
    };
    let every = heights.join(", ");
    let t = topology::parse_str("t.yaml", &model("wondernetwork-2020-07-pairs.csv", &every, ""))
        .unwrap_or_else(|e| panic!("{e}"));
    let own = t.internet.delay.landmarks.as_ref().expect("a per-place model");
    assert!(own.landmarks.iter().all(|l| l.height_ms == 1.0) && own.reach.neighbours == 4);

    expect(&model("mars.csv", &every, ""), 35, "landmarks.measured", "`mars.csv` is no measured dataset that ships");
    let atlantis = format!("{every}, {{ server: Atlantis, height: 1ms }}");
    expect(
        &model("wondernetwork-2020-07-pairs.csv", &atlantis, ""),
        35,
        "landmarks.heights[244].server",
        "`Atlantis` is no server of the measured dataset",
    );
    let twice = format!("{every}, {}", heights[0]);
    expect(&model("wondernetwork-2020-07-pairs.csv", &twice, ""), 35, "landmarks.heights[244].server", "given twice");
    let short = heights[1..].join(", ");
    expect(
        &model("wondernetwork-2020-07-pairs.csv", &short, ""),
        35,
        "landmarks.heights",
        "1 server(s) have no height: Accra",
    );
    let both = ", pairs: [{ between: [europe, africa], stretch: 1.3 }]";
    expect(&model("wondernetwork-2020-07-pairs.csv", &every, both), 35, "delay.landmarks", "not both");
}

#[test]
fn pinned_internet_round_trips_name_known_ends_and_never_beat_light() {
    const NET: &str = "internet: { stretch: 2.0,";
    let pin = |pins: &str| with(NET, &format!("internet: {{ rtt: [{pins}], stretch: 2.0,"));
    let t = topology::parse_str("t.yaml", &pin("{ between: [client/london, pop/paris], rtt: 14ms }"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.internet.pinned.len(), 1);
    assert_eq!(t.internet_rtt_ns(0, topology::InternetEnd::Pop(0)), 14_000_000);
    expect(
        &pin("{ between: [client/atlantis, pop/paris], rtt: 14ms }"),
        35,
        "rtt[0].between",
        "no client group named `atlantis`",
    );
    expect(&pin("{ between: [client/london, pop/lyon], rtt: 14ms }"), 35, "rtt[0].between", "no POP named `lyon`");
    expect(
        &pin("{ between: [pop/paris, region/frankfurt], rtt: 14ms }"),
        35,
        "rtt[0].between",
        "expected [client/NAME",
    );
    // london–paris is 343 km: at least 3.4 ms round trip in fibre.
    expect(
        &pin("{ between: [client/london, pop/paris], rtt: 2ms }"),
        35,
        "rtt[0].rtt",
        "faster than light in fibre over 343 km",
    );
    expect(&pin("{ between: [client/london, pop/paris], rtt: 0ms }"), 35, "rtt[0].rtt", "must lie within");
    expect(
        &pin("{ between: [client/london, pop/paris], rtt: -5ms }"),
        35,
        "rtt[0].rtt",
        "`-5ms` must be a non-negative duration",
    );
    expect(
        &pin("{ between: [client/london, pop/paris], rtt: 14ms }, { between: [pop/paris, client/london], rtt: 15ms }"),
        35,
        "rtt[1]",
        "pinned twice",
    );
}

#[test]
fn control_nodes_with_no_region_or_pop_to_run_at_are_refused_not_a_panic() {
    // Found by coverage-guided fuzzing (issue 33): `validate` exited 101, index out of bounds.
    let text = "name: x\nseed: 1\nduration: 1s\ncontrol: { nodes: 3 }\n";
    let diags = errors(text);
    assert!(
        diags.iter().any(|d| d.line == 4 && d.field == "control" && d.reason.contains("no region or POP")),
        "{diags:#?}"
    );
    let dir = std::env::temp_dir().join(format!("anyedge-nosite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backbone_links_with_a_vips_home_region_missing_are_refused_not_a_panic() {
    // Found by coverage-guided fuzzing (issue 33, fuzz/artifacts crash in the topology
    // target): with `backbone.links` and no regions, the check that every POP has a way
    // to its VIP's home read the home from an empty list (index out of bounds).
    let text = "name: x\nseed: 1\nduration: 1s\nvips:\n  - { name: v, ipv4: 198.18.0.20, home: frankfurt, pops: [paris], listeners: [{ protocol: udp, port: 7000, backends: game }] }\npops:\n  - { name: paris, location: [48.857, 2.352] }\nbackbone: { links: [] }\n";
    let diags = errors(text);
    assert!(diags.iter().any(|d| d.field.starts_with("vips[0].home")), "the home names no region: {diags:#?}");
}

#[test]
fn a_world_too_big_for_this_machine_is_refused_with_its_estimate_before_the_run() {
    let dir = std::env::temp_dir().join(format!("anyedge-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("huge.yaml");
    let text = SMALL.replace("duration: 20s", "duration: 24h").replace("count: 20,", "count: 13000,");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("sim").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("would") && (stderr.contains("GB") || stderr.contains("events")), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly_without_a_panic() {
    // `anyedge … | head -1`: the pipe closes after the first line.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} completions bash | head -1", env!("CARGO_BIN_EXE_anyedge")))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn the_cli_completes_hides_its_internals_and_refuses_bad_ctl_arguments_itself() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_anyedge")).args(args).output().unwrap();
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("anyedge") && script.contains("sim") && script.contains("probe"),
        "a bash completion script"
    );
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).to_string();
    // `node` runs a rendered node on a host (a user's command since `render`); what only
    // the lab runs inside a namespace stays hidden.
    assert!(help.contains("sim") && help.contains("\n  node ") && !help.contains("capture-here"), "{help}");
    for (args, says) in [
        (
            &["ctl", "topologies/control.yaml", "set-weight", "198.19.20.1:7000", "-5"][..],
            "weight: `-5` is not a whole number from 0 to 100",
        ),
        (&["ctl", "topologies/control.yaml", "set-weight", "198.19.20.1:7000", "101"][..], "from 0 to 100"),
        (
            &[
                "ctl",
                "topologies/control.yaml",
                "add-listener",
                "edge",
                "tcp",
                "8443",
                "--backends",
                "web",
                "--persistence",
                "banana",
            ][..],
            "--persistence",
        ),
        (
            &["ctl", "topologies/control.yaml", "add-listener", "203.0.113.9", "tcp", "8443", "--backends", "web"][..],
            "no VIP has the address 203.0.113.9",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("ctl: ") && stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn an_ipv6_backend_behind_a_vip_without_ipv6_is_refused_as_unreachable() {
    let text = with(
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n        - { address: 'fd00:20::11', port: 8080 }\n",
    );
    expect(&text, line_of(&text, "backends: web"), "listeners[1].backends", "fd00:20::11");
    let with_v6 = text.replace("ipv4: 198.18.0.20", "ipv4: 198.18.0.20\n    ipv6: fd00:a::20");
    topology::parse_str("t.yaml", &with_v6).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_regions_ipv4_source_prefix_reaches_its_clb_nodes_and_is_checked() {
    let line = SMALL.lines().position(|l| l.contains("clb_nodes: 2")).unwrap() + 1;
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    assert_eq!(t.regions[0].source_prefix_v4, 32, "each IPv4 address is a source by default");
    let by_24 = with("    clb_nodes: 2\n", "    clb_nodes: 2\n    source_prefix_v4: 24\n");
    let t = topology::parse_str("t.yaml", &by_24).unwrap();
    let addresses = topology::nodes::ClbAddresses::of(0, 1);
    let identity = topology::nodes::Identity::default();
    assert_eq!(topology::nodes::clb_config(&t, 0, 1, addresses, &identity).source_prefix_v4, 24);
    for bad in ["7", "33", "x"] {
        let text = with("    clb_nodes: 2\n", &format!("    clb_nodes: 2\n    source_prefix_v4: {bad}\n"));
        expect(&text, line + 1, "source_prefix_v4", "");
    }
}

#[test]
fn a_backend_is_builtin_unless_it_or_its_group_says_external_and_one_port_has_one_app() {
    let t = topology::parse_str("t.yaml", SMALL).unwrap();
    let every = |t: &topology::Topology| -> Vec<topology::App> {
        t.regions[0].backend_groups.iter().flat_map(|g| g.backends.iter().map(|b| b.app)).collect()
    };
    assert!(every(&t).iter().all(|&a| a == topology::App::Builtin), "the default is builtin");
    // A group's `app` holds for its members; a member's own wins.
    let grouped = with(
        "      web:\n        - { address: 198.19.20.10, port: 8080, weight: 10 }\n        - { address: 198.19.20.11, port: 8080, weight: 30 }",
        "      web:\n        app: external\n        members:\n          - { address: 198.19.20.10, port: 8080, weight: 10 }\n          - { address: 198.19.20.11, port: 8080, weight: 30, app: builtin }",
    );
    let t = topology::parse_str("t.yaml", &grouped).unwrap();
    let web = &t.regions[0].backend_groups[1].backends;
    assert_eq!((web[0].app, web[1].app), (topology::App::External, topology::App::Builtin));
    // An unknown word, and one port bound as ours in one group and the user's in another.
    expect(
        &with("{ address: 198.19.20.1, port: 7000, weight: 10 }", "{ address: 198.19.20.1, port: 7000, app: nginx }"),
        27,
        "game[0].app",
        "`nginx` is not `builtin` or `external`",
    );
    let twice = with(
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n",
        "        - { address: 198.19.20.11, port: 8080, weight: 30 }\n      again:\n        - { address: 198.19.20.11, port: 8080, app: external }\n",
    );
    expect(&twice, 34, "again[0].app", "198.19.20.11:8080 is bound as `app: builtin` elsewhere: one port, one server");
}

#[test]
fn sim_balance_by_refuses_stats_it_cannot_share_by_naming_the_file_and_runs_nothing() {
    let dir = std::env::temp_dir().join(format!("anyedge-balance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let world = dir.join("five.yaml");
    let made = anyedge(&[
        "generate",
        "--pops",
        "10",
        "--regions",
        "5",
        "--clients",
        "200",
        "--groups",
        "20",
        "--duration",
        "1s",
        "--out",
        world.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let stats = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let cases = [
        ("five.yaml", dir.join("missing.json").to_str().unwrap().to_string(), "cannot read"),
        ("five.yaml", stats("text.json", "partition events"), "not JSON"),
        ("five.yaml", stats("other.json", r#"{"events": 5}"#), "no `partition_events`"),
        ("five.yaml", stats("neg.json", r#"{"partition_events": [1, -2, 3, 4, 5]}"#), "partition_events[1] is -2"),
        ("five.yaml", stats("one.json", r#"{"partition_events": []}"#), "ran as one partition"),
        (
            "five.yaml",
            stats("three.json", r#"{"partition_events": [1, 2, 3]}"#),
            "measured 3 partitions; this world has 5",
        ),
        ("small", stats("small.json", r#"{"partition_events": [1, 2, 3]}"#), "this world runs as one partition"),
    ];
    for (file, stats, says) in cases {
        let file = if file == "small" { "topologies/small.yaml".to_string() } else { world.display().to_string() };
        let json = dir.join("report.json");
        let out = anyedge(&["sim", &file, "-q", "--balance-by", &stats, "--json", json.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{stats}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("--balance-by {stats}: ")) && stderr.contains(says), "{stats}: {stderr}");
        assert!(out.stdout.is_empty() && !json.exists(), "{stats}: nothing runs");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
