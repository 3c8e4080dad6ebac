//! BIRD's configuration of each speaker, from the topology by the one rule in
//! `anyedge_topology::bgp`: a transit's sessions and catchment policies, a POP's VIP protocols.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyedge_topology::Topology;
use anyedge_topology::bgp::{CDN_ASN, HOLD_S, KEEPALIVE_S, med_us, pop_router_id, transit_asn, transit_router_id};

use super::BirdError;
use crate::node::relay;
use crate::plan::{LinkEnds, Plan, PlanGap, Role};

/// The speaker's program (Debian's `bird2`).
pub const BIRD: &str = "bird";

/// Is the speaker installed? The error names the package and how to install it.
pub fn check_installed() -> Result<(), BirdError> {
    match Command::new(BIRD).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(_) => Err(BirdError::NotInstalled),
    }
}

/// Session timers every speaker uses: quick reconnects after a flap (re-announce within
/// seconds, not BIRD's default minutes), the short hold time.
/// `on` or `off`: whether the POP–transit sessions run BFD (`failover.bfd_interval`).
pub(super) fn bfd_switch(t: &Topology) -> &'static str {
    if t.failover.bfd_on() { "on" } else { "off" }
}

pub(super) fn timers() -> String {
    format!(
        "hold time {HOLD_S}; keepalive time {KEEPALIVE_S}; connect delay time 1; connect retry time 1; error wait time 1, 10; error forget time 10;"
    )
}

/// The VIP prefixes of a topology, per family, as BIRD prefix sets.
pub(crate) fn prefix_sets(t: &Topology) -> (String, String) {
    prefix_sets_where(t, |_| true)
}

/// The prefixes of the VIPs POP `p` publishes: all its transit takes from it.
fn published_prefix_sets(t: &Topology, p: usize) -> (String, String) {
    prefix_sets_where(t, |v| v.pops.contains(&p))
}

fn prefix_sets_where(t: &Topology, keep: impl Fn(&&anyedge_topology::Vip) -> bool) -> (String, String) {
    let v4: Vec<String> = t.vips.iter().filter(&keep).map(|v| format!("{}/32", v.ipv4)).collect();
    let v6: Vec<String> = t.vips.iter().filter(&keep).filter_map(|v| v.ipv6.map(|a| format!("{a}/128"))).collect();
    let set = |v: Vec<String>| if v.is_empty() { String::new() } else { format!("[ {} ]", v.join(", ")) };
    (set(v4), set(v6))
}

pub(super) fn header(out: &mut String, what: &str, router_id: std::net::Ipv4Addr) {
    let _ = writeln!(out, "# {what}: written by anyedge from the topology file; each start rewrites it.");
    let _ = writeln!(out, "router id {router_id};");
    let _ = writeln!(out, "log stderr {{ info, trace, remote, warning, error, auth, fatal, bug }};");
    let _ = writeln!(out, "protocol device {{ scan time 10; }}");
}

/// BFD on the POP–transit link, with the file's `failover.bfd_interval` and
/// `bfd_multiplier`.
fn bfd(out: &mut String, t: &Topology, dev: &str) {
    if !t.failover.bfd_on() {
        return;
    }
    let ms = t.failover.bfd_interval_ns / 1_000_000;
    let multiplier = t.failover.bfd_multiplier;
    let _ = writeln!(
        out,
        "protocol bfd {{ interface \"{dev}\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {multiplier}; }}; }}"
    );
}

/// The two families' sessions over one link: (family, name suffix, local and peer
/// address).
fn families(l: &LinkEnds) -> [(&'static str, &'static str, IpAddr, IpAddr); 2] {
    [("ipv4", "4", IpAddr::V4(l.local), IpAddr::V4(l.peer)), ("ipv6", "6", IpAddr::V6(l.local6), IpAddr::V6(l.peer6))]
}

/// The speaker of transit `x` (upstream of POP `x`).
pub fn transit_config(t: &Topology, plan: &Plan, x: usize) -> Result<String, PlanGap> {
    let ns = plan.ns_index(&Role::Transit(x)).ok_or(PlanGap("no transit namespace"))?;
    let pop_ns = plan.ns_index(&Role::Pop(x)).ok_or(PlanGap("no POP namespace"))?;
    let asn = transit_asn(x);
    let (set4, set6) = prefix_sets(t);
    let mut out = String::new();
    header(&mut out, &format!("transit/{}", t.pops[x].name), transit_router_id(x));
    // Only BGP's best routes go to the kernel: they forward the clients' packets.
    for (name, family) in [("kernel4", "ipv4"), ("kernel6", "ipv6")] {
        let _ = writeln!(
            out,
            "protocol kernel {name} {{ {family} {{ import none; export filter {{ if source = RTS_BGP then accept; reject; }}; }}; }}"
        );
    }
    let pop = plan.link_between(ns, pop_ns).ok_or(PlanGap("transit without a link to its POP"))?;
    bfd(&mut out, t, &pop.dev);
    let (timers, bfd) = (timers(), bfd_switch(t));
    // From the POP: only the prefixes of the VIPs it publishes (a POP announcing another
    // POP's VIP is refused), at MED 0 (it is this transit's own customer); a session per
    // family it announces in (as its own configuration has), with TTL security (RFC
    // 5082: only a packet from the link itself, TTL 255, reaches the session).
    let (pop4, pop6) = pop_families(t, x);
    let (own4, own6) = published_prefix_sets(t, x);
    for ((family, suffix, local, peer), (set, announces)) in
        families(&pop).into_iter().zip([(&own4, pop4), (&own6, pop6)])
    {
        if !announces {
            continue;
        }
        let _ = writeln!(
            out,
            "protocol bgp pop{suffix} {{ local {local} as {asn}; neighbor {peer} as {CDN_ASN}; ttl security yes; bfd {bfd}; debug {{ states }}; {timers} med metric yes; {family} {{ import filter {{ if net ~ {set} then {{ bgp_med = 0; accept; }} reject; }}; export none; }}; }}"
        );
    }
    // Every other transit, through the relay that delays what this speaker says (see
    // `relay`): the VIP prefixes both ways, MED = the model's round trip, the link's
    // address as next hop (resolved over the links' routes, `protocol direct`).
    let _ = writeln!(out, "protocol direct {{ ipv4; ipv6; }}");
    for y in (0..t.pops.len()).filter(|&y| y != x) {
        let peer_ns = plan.ns_index(&Role::Transit(y)).ok_or(PlanGap("no transit namespace"))?;
        let l = plan.link_between(ns, peer_ns).ok_or(PlanGap("transits without a link"))?;
        let med = med_us(t, x, y);
        let passive = if x > y { " passive on;" } else { "" };
        for (f, ((family, suffix, local, _), set)) in families(&l).into_iter().zip([&set4, &set6]).enumerate() {
            if set.is_empty() {
                continue;
            }
            let (me, relay, port) = (relay::SPEAKER_ADDR, relay::relay_addr(f, y), relay::RELAY_PORT);
            let _ = writeln!(
                out,
                "protocol bgp t{y}_{suffix} {{ description \"transit/{}\"; local {me} as {asn}; neighbor {relay} port {port} as {}; multihop;{passive} debug {{ states }}; {timers} med metric yes; {family} {{ next hop address {local}; import filter {{ if net ~ {set} then {{ bgp_med = {med}; accept; }} reject; }}; export filter {{ if source = RTS_BGP && net ~ {set} then accept; reject; }}; }}; }}",
                t.pops[y].name,
                transit_asn(y)
            );
        }
    }
    catchment_policies(t, x, (&set4, &set6), &mut out);
    Ok(out)
}

/// The client groups attached to transit `x` with a `catchment:` list: per group and
/// family, a table of its own (the kernel's [`bgp::catchment_table`], which the transit's
/// policy rule consults for packets from the group's link) holding the listed POPs'
/// routes, preferred in the list's order (BIRD's `preference`), with an unreachable
/// route beneath them all: with every listed POP withdrawn the group has no route.
fn catchment_policies(t: &Topology, x: usize, (set4, set6): (&str, &str), out: &mut String) {
    for g in (0..t.clients.len()).filter(|&g| anyedge_topology::bgp::attach(t, g) == Some(x)) {
        let Some(list) = t.clients[g].catchment.as_ref() else { continue };
        let kernel = anyedge_topology::bgp::catchment_table(g);
        for (family, suffix, set) in [("ipv4", "4", set4), ("ipv6", "6", set6)] {
            if set.is_empty() {
                continue;
            }
            let table = format!("g{g}_{suffix}");
            // The POP a route leads to is the AS before the POPs' own at the path's end.
            let ranked: String = list
                .iter()
                .enumerate()
                .map(|(rank, &p)| {
                    let mask = if p == x {
                        format!("[= {CDN_ASN} =]")
                    } else {
                        format!("[= * {} {CDN_ASN} =]", transit_asn(p))
                    };
                    format!("if bgp_path ~ {mask} then {{ preference = {}; accept; }} ", 300 - rank)
                })
                .collect();
            let prefixes: Vec<&str> = set.trim_matches(|c| c == '[' || c == ']' || c == ' ').split(", ").collect();
            let unreachable: String = prefixes.iter().map(|p| format!("route {p} unreachable; ")).collect();
            let _ = writeln!(out, "{family} table {table};");
            let _ = writeln!(
                out,
                "protocol static {table}_none {{ {family} {{ table {table}; preference 1; }}; {unreachable}}}"
            );
            let _ = writeln!(
                out,
                "protocol pipe {table}_pipe {{ table master{suffix}; peer table {table}; import none; export filter {{ if source = RTS_BGP && net ~ {set} then {{ {ranked}}} reject; }}; }}"
            );
            let _ = writeln!(
                out,
                "protocol kernel {table}_kernel {{ {family} {{ table {table}; import none; export all; }}; kernel table {kernel}; }}"
            );
        }
    }
}

/// Does POP `p` publish a VIP with an IPv4 address, with an IPv6 one?
fn pop_families(t: &Topology, p: usize) -> (bool, bool) {
    let published = || t.vips.iter().filter(|v| v.pops.contains(&p));
    (published().next().is_some(), published().any(|v| v.ipv6.is_some()))
}

/// A static protocol's name for VIP `k` in one family.
pub fn vip_protocol(k: usize, v6: bool) -> String {
    format!("vip{}_{k}", if v6 { 6 } else { 4 })
}

/// The speaker of POP `p`: one static protocol per VIP it publishes and family, each
/// exported to its transit; all start enabled (a POP starts healthy, as its probes do).
pub fn pop_config(t: &Topology, plan: &Plan, p: usize) -> Result<String, PlanGap> {
    let ns = plan.ns_index(&Role::Pop(p)).ok_or(PlanGap("no POP namespace"))?;
    let transit = plan.ns_index(&Role::Transit(p)).ok_or(PlanGap("no transit namespace"))?;
    let l = plan.link_between(ns, transit).ok_or(PlanGap("POP without a link to its transit"))?;
    let mut out = String::new();
    header(&mut out, &format!("pop/{}", t.pops[p].name), pop_router_id(p));
    bfd(&mut out, t, &l.dev);
    for (k, v) in t.vips.iter().enumerate().filter(|(_, v)| v.pops.contains(&p)) {
        let _ =
            writeln!(out, "protocol static {} {{ ipv4; route {}/32 unreachable; }}", vip_protocol(k, false), v.ipv4);
        if let Some(v6) = v.ipv6 {
            let _ = writeln!(out, "protocol static {} {{ ipv6; route {v6}/128 unreachable; }}", vip_protocol(k, true));
        }
    }
    let (any4, any6) = pop_families(t, p);
    let (timers, bfd) = (timers(), bfd_switch(t));
    let asn = transit_asn(p);
    for ((family, suffix, local, peer), any) in families(&l).into_iter().zip([any4, any6]) {
        if !any {
            continue;
        }
        let _ = writeln!(
            out,
            "protocol bgp transit{suffix} {{ local {local} as {CDN_ASN}; neighbor {peer} as {asn}; ttl security yes; bfd {bfd}; debug {{ states }}; {timers} {family} {{ import none; export where source = RTS_STATIC; }}; }}"
        );
    }
    Ok(out)
}
