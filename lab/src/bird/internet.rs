//! BIRD's configuration over the file's AS-level internet (`internet.ases`): a speaker
//! per router of the routing graph that `anyedge_topology::routing` decides on, with the
//! same rule written as BIRD filters, so the lab's catchments are the simulator's.
//!
//! How each step of the core's decision becomes BIRD's (BIRD compares local preference,
//! then AS-path length, then MED, then eBGP over iBGP):
//! - **Gao–Rexford**: on import from a neighbour AS, `bgp_local_pref` by what it is:
//!   [`LOCAL_PREF_CUSTOMER`], [`LOCAL_PREF_PEER`], [`LOCAL_PREF_PROVIDER`]; iBGP carries
//!   it to the AS's other routers.
//! - **AS-path length**: BIRD's own, prepends counted.
//! - **Hot potato, then the earlier session**: the MED, compared across ASes (`med
//!   metric yes`). An eBGP import sets it to the session's number in the graph; an iBGP
//!   import from router Y adds Y's rank in this router's distance order times the number
//!   of sessions ([`Internetwork::exit_rank`]), so the nearest exit wins and a tie goes to
//!   the earlier session, as in the core.
//! - **Valley-free export**: to a customer every best route; to a peer or provider only
//!   those with the customer's local preference. **No-export** (RFC 1997's community)
//!   goes over no eBGP session of the AS that received it; a **region-only** community
//!   ([`region_community`]) goes only to neighbours whose router is in its zone. BIRD
//!   drops a path that holds its own AS (loop prevention) and exports only its best.
//! - A POP announces each VIP it publishes, per upstream session, with that VIP's levers
//!   there (`Topology::levers`): to the upstreams `announce_to` names, prepended, with
//!   its communities; it imports nothing.
//!
//! Sessions are one per family, over the link's address of that family; the IPv6 ones
//! (`…_6`) only when a VIP has an IPv6 address.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyedge_topology::Topology;
use anyedge_topology::Upstream;
use anyedge_topology::bgp::{CDN_ASN, pop_router_id};
use anyedge_topology::catchments::Internetwork;
use anyedge_topology::routing::{AsId, Relation, RouterId, SessionId, Zone};

use super::config::{bfd_switch, header, timers};
use crate::plan::{LinkEnds, Plan, PlanGap, Role};

pub const LOCAL_PREF_CUSTOMER: u32 = 300;
pub const LOCAL_PREF_PEER: u32 = 200;
pub const LOCAL_PREF_PROVIDER: u32 = 100;

/// RFC 1997's NO_EXPORT.
const NO_EXPORT: &str = "(65535, 65281)";

/// The standard community that scopes a route to zone `z` (a region-only community):
/// (CDN AS, 100 + zone).
pub fn region_community(z: Zone) -> String {
    format!("({CDN_ASN}, {})", 100 + u32::from(z.0))
}

/// The zones a region community can name (the delay model's areas).
const ZONES: u8 = anyedge_ccn::delay::Area::ALL.len() as u8;

/// Router `r`'s BGP router id: 10.253.0.0 + r (POPs are 10.254/16, the transits of a
/// file without networks 10.255/16).
pub fn router_id(r: RouterId) -> Ipv4Addr {
    Ipv4Addr::from(0x0afd_0001 + r.0 as u32)
}

/// A family the speakers carry: BIRD's channel, the protocols' name suffix, the VIPs'
/// prefixes as a BIRD prefix set.
struct Family {
    channel: &'static str,
    suffix: &'static str,
    kernel: &'static str,
    set: String,
}

/// IPv4 always, IPv6 when a VIP has an IPv6 address.
fn families(t: &Topology) -> Vec<Family> {
    let v4: Vec<String> = t.vips.iter().map(|v| format!("{}/32", v.ipv4)).collect();
    let v6: Vec<String> = t.vips.iter().filter_map(|v| v.ipv6.map(|a| format!("{a}/128"))).collect();
    let mut out =
        vec![Family { channel: "ipv4", suffix: "", kernel: "kernel4", set: format!("[ {} ]", v4.join(", ")) }];
    if !v6.is_empty() {
        out.push(Family { channel: "ipv6", suffix: "_6", kernel: "kernel6", set: format!("[ {} ]", v6.join(", ")) });
    }
    out
}

/// A link's two addresses in family `f`.
fn ends(l: &LinkEnds, f: &Family) -> (std::net::IpAddr, std::net::IpAddr) {
    if f.channel == "ipv6" { (l.local6.into(), l.peer6.into()) } else { (l.local.into(), l.peer.into()) }
}

/// The namespace of router `r` (a POP's for the CDN's routers).
fn ns_of(t: &Topology, plan: &Plan, net: &Internetwork, r: RouterId) -> Option<usize> {
    match (0..t.pops.len()).find(|&p| net.pop_router(p) == r) {
        Some(p) => plan.ns_index(&Role::Pop(p)),
        None => plan.ns_index(&Role::Router(r.0)),
    }
}

/// BFD on the links to POPs, with the file's interval and multiplier.
fn bfd_on(out: &mut String, t: &Topology, devs: &[String]) {
    if !t.failover.bfd_on() || devs.is_empty() {
        return;
    }
    let ms = t.failover.bfd_interval_ns / 1_000_000;
    let multiplier = t.failover.bfd_multiplier;
    let interfaces: String = devs
        .iter()
        .map(|d| {
            format!(
                "interface \"{d}\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {multiplier}; }}; "
            )
        })
        .collect();
    let _ = writeln!(out, "protocol bfd {{ {interfaces}}}");
}

/// What router `me` exports over an eBGP session to a router in zone `zone` whose AS is
/// `them` to it: valley-free, no-export kept, region-only scoped.
fn export_filter(set: &str, them: Relation, zone: Zone) -> String {
    let valley = match them {
        Relation::Customer => String::new(),
        Relation::Peer | Relation::Provider => format!("if bgp_local_pref != {LOCAL_PREF_CUSTOMER} then reject; "),
    };
    let scoped: String = (0..ZONES)
        .filter(|&z| z != zone.0)
        .map(|z| format!("if {} ~ bgp_community then reject; ", region_community(Zone(z))))
        .collect();
    format!(
        "if source != RTS_BGP || !(net ~ {set}) then reject; {valley}if {NO_EXPORT} ~ bgp_community then reject; {scoped}accept;"
    )
}

/// The speaker of router `r` (not a POP's) of the file's AS-level internet.
pub fn router_config(t: &Topology, plan: &Plan, r: usize) -> Result<String, PlanGap> {
    let net = t.internet.ways.internetwork(t);
    let g = net.graph();
    let me = RouterId(r);
    let ns = plan.ns_index(&Role::Router(r)).ok_or(PlanGap("no router namespace"))?;
    let asn = net.as_number(g.as_of(me));
    let families = families(t);
    let timers = timers();
    let mut out = String::new();
    header(&mut out, &format!("router {r} of {}", net.as_name(g.as_of(me))), router_id(me));
    for f in &families {
        let _ = writeln!(
            out,
            "protocol kernel {} {{ {} {{ import none; export filter {{ if source = RTS_BGP then accept; reject; }}; }}; }}",
            f.kernel, f.channel
        );
    }
    let mut bfd_devs = Vec::new();
    for s in (0..g.sessions()).map(SessionId) {
        let session = g.session(s);
        let (them, them_is) = if session.a == me {
            (session.b, session.b_is)
        } else if session.b == me {
            (session.a, session.b_is.reverse())
        } else {
            continue;
        };
        let peer_ns = ns_of(t, plan, net, them).ok_or(PlanGap("a session's far router has no namespace"))?;
        let l: LinkEnds = plan.link_between(ns, peer_ns).ok_or(PlanGap("a session without its link"))?;
        let to_pop = g.as_of(them) == net.cdn();
        let pref = match them_is {
            Relation::Customer => LOCAL_PREF_CUSTOMER,
            Relation::Peer => LOCAL_PREF_PEER,
            Relation::Provider => LOCAL_PREF_PROVIDER,
        };
        // One side of each session connects, the other waits (`passive`): two speakers
        // that both connect collide, and BIRD's back-off after a collision grows to 10 s
        // (a 94-router lab had not established its sessions in 30 s). The POP connects.
        let guard = if to_pop {
            bfd_devs.push(l.dev.clone());
            format!(" ttl security yes; bfd {}; passive on;", bfd_switch(t))
        } else if them < me {
            " passive on;".to_string()
        } else {
            String::new()
        };
        for f in &families {
            let set = &f.set;
            let export = if to_pop {
                "none".to_string()
            } else {
                format!("filter {{ {} }}", export_filter(set, them_is, g.zone(them)))
            };
            let (local, peer) = ends(&l, f);
            let _ = writeln!(
                out,
                "protocol bgp s{}{} {{ description \"{}\"; local {local} as {asn}; neighbor {peer} as {};{guard} debug {{ states }}; {timers} med metric yes; {} {{ import filter {{ if net ~ {set} then {{ bgp_local_pref = {pref}; bgp_med = {}; accept; }} reject; }}; export {export}; }}; }}",
                s.0,
                f.suffix,
                net.as_name(g.as_of(them)),
                net.as_number(g.as_of(them)),
                f.channel,
                s.0,
            );
        }
    }
    bfd_on(&mut out, t, &bfd_devs);
    if let Some(l) = plan.to_reflector(ns) {
        reflector_session(&mut out, (plan, net), (me, asn), &l, &families)?;
    }
    Ok(out)
}

/// Router `me`'s iBGP session with its network's reflector (`l`): every other router's
/// routes arrive over it (ADD-PATH: all of them, not the reflector's choice), and its own
/// eBGP routes leave over it with itself as next hop. Hot potato stays each router's:
/// a route's MED grows by its exit's rank in this router's distance order (known by the
/// exit's address, its next hop) times the number of sessions, as over a full mesh.
fn reflector_session(
    out: &mut String,
    (plan, net): (&Plan, &Internetwork),
    (me, asn): (RouterId, u32),
    l: &LinkEnds,
    families: &[Family],
) -> Result<(), PlanGap> {
    let g = net.graph();
    let sessions = g.sessions() as u32;
    let mut ranks: Vec<(Ipv4Addr, std::net::Ipv6Addr, u32)> = Vec::new();
    for &y in g.routers_of(g.as_of(me)).iter().filter(|&&y| y != me) {
        let ns = plan.ns_index(&Role::Router(y.0)).ok_or(PlanGap("no router namespace"))?;
        let (_, port) = plan.port_of(ns).ok_or(PlanGap("a router of a network without its segment port"))?;
        ranks.push((port.addr, port.addr6, net.exit_rank(me, y) * sessions));
    }
    for f in families {
        let (set, (local, peer)) = (&f.set, ends(l, f));
        let rank: String = ranks
            .iter()
            .map(|&(v4, v6, rank)| {
                let exit = if f.suffix.is_empty() { v4.to_string() } else { v6.to_string() };
                format!("if bgp_next_hop = {exit} then bgp_med = bgp_med + {rank}; ")
            })
            .collect();
        let _ = writeln!(
            out,
            "protocol bgp reflector{} {{ local {local} as {asn}; neighbor {peer} as {asn}; direct; debug {{ states }}; {} med metric yes; {} {{ add paths rx; gateway direct; next hop self; import filter {{ if net ~ {set} then {{ {rank}accept; }} reject; }}; export filter {{ if source = RTS_BGP && net ~ {set} then accept; reject; }}; }}; }}",
            f.suffix,
            timers(),
            f.channel,
        );
    }
    Ok(())
}

/// The reflector's speaker (node [`crate::plan::REFLECTOR_NODE`], in the internet's
/// namespace): per network of several routers a table of its own and a session with each
/// of its routers, a route-reflector client, to which it passes every path it holds
/// (ADD-PATH) as it received it, next hop and MED untouched. It forwards nothing.
pub fn reflector_config(t: &Topology, plan: &Plan) -> Result<String, PlanGap> {
    let net = t.internet.ways.internetwork(t);
    let g = net.graph();
    let families = families(t);
    let mut out = String::new();
    header(&mut out, "the route reflector of each network", REFLECTOR_ID);
    for (s, segment) in plan.segments.iter().enumerate() {
        let first = segment.ports.first().ok_or(PlanGap("a segment without routers"))?;
        let r = router_of(plan, first.ns)?;
        let asn = net.as_number(g.as_of(r));
        for f in &families {
            let _ = writeln!(out, "{} table net{s}{};", f.channel, f.suffix);
        }
        for (m, port) in segment.ports.iter().enumerate() {
            for f in &families {
                let (local, peer) = if f.suffix.is_empty() {
                    (segment.reflector.to_string(), port.addr.to_string())
                } else {
                    (segment.reflector6.to_string(), port.addr6.to_string())
                };
                let _ = writeln!(
                    out,
                    "protocol bgp n{s}p{m}{} {{ local {local} as {asn}; neighbor {peer} as {asn}; direct; passive on; rr client; debug {{ states }}; {} {} {{ table net{s}{}; add paths tx; import all; export all; }}; }}",
                    f.suffix,
                    timers(),
                    f.channel,
                    f.suffix,
                );
            }
        }
    }
    Ok(out)
}

/// The reflector's router id: no address of the lab's (TEST-NET-1).
const REFLECTOR_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

fn router_of(plan: &Plan, ns: usize) -> Result<RouterId, PlanGap> {
    match plan.namespaces[ns].role {
        Role::Router(r) => Ok(RouterId(r)),
        _ => Err(PlanGap("a segment port that is not a router's")),
    }
}

/// POP `p`'s speaker over an AS-level internet: a static protocol per VIP it publishes
/// (the POP node turns it off to withdraw), and a session per upstream router, each
/// exporting every VIP with its levers there.
pub fn pop_config_as(t: &Topology, plan: &Plan, p: usize) -> Result<String, PlanGap> {
    let net = t.internet.ways.internetwork(t);
    let g = net.graph();
    let me = net.pop_router(p);
    let ns = plan.ns_index(&Role::Pop(p)).ok_or(PlanGap("no POP namespace"))?;
    let mut out = String::new();
    header(&mut out, &format!("pop/{}", t.pops[p].name), pop_router_id(p));
    let published: Vec<usize> = (0..t.vips.len()).filter(|&k| t.vips[k].pops.contains(&p)).collect();
    for &k in &published {
        let _ = writeln!(
            out,
            "protocol static {} {{ ipv4; route {}/32 unreachable; }}",
            super::vip_protocol(k, false),
            t.vips[k].ipv4
        );
        if let Some(v6) = t.vips[k].ipv6 {
            let _ = writeln!(
                out,
                "protocol static {} {{ ipv6; route {v6}/128 unreachable; }}",
                super::vip_protocol(k, true)
            );
        }
    }
    let timers = timers();
    let mut devs = Vec::new();
    for s in (0..g.sessions()).map(SessionId) {
        let session = g.session(s);
        if session.a != me {
            continue;
        }
        let them = session.b;
        let peer_ns = plan.ns_index(&Role::Router(them.0)).ok_or(PlanGap("an upstream without a namespace"))?;
        let l = plan.link_between(ns, peer_ns).ok_or(PlanGap("a POP's session without its link"))?;
        devs.push(l.dev.clone());
        for f in families(t) {
            let v6 = f.channel == "ipv6";
            let per_vip: String = published.iter().map(|&k| vip_export(t, net, (k, p, v6), them)).collect();
            let (local, peer) = ends(&l, &f);
            let _ = writeln!(
                out,
                "protocol bgp s{}{} {{ description \"{}\"; local {local} as {CDN_ASN}; neighbor {peer} as {}; ttl security yes; bfd {}; debug {{ states }}; {timers} {} {{ import none; export filter {{ if source != RTS_STATIC then reject; {per_vip}reject; }}; }}; }}",
                s.0,
                f.suffix,
                net.as_name(g.as_of(them)),
                net.as_number(g.as_of(them)),
                bfd_switch(t),
                f.channel,
            );
        }
    }
    bfd_on(&mut out, t, &devs);
    Ok(out)
}

/// VIP `k`'s part of POP `p`'s export filter toward router `them` in one family:
/// announced there or not (selective announcement, region scope), prepended, its
/// communities. Nothing for a VIP without an address of the family.
fn vip_export(t: &Topology, net: &Internetwork, (k, p, v6): (usize, usize, bool), them: RouterId) -> String {
    let levers = t.levers(k, p);
    let them_as = net.graph().as_of(them);
    let named = levers.announce_to.is_empty()
        || levers.announce_to.iter().any(|u| match *u {
            Upstream::As(a) => AsId(a) == them_as,
            Upstream::Ixp(x) => t.internet.ixps[x].members.iter().any(|&m| AsId(m) == them_as),
        });
    let in_scope = levers.region.is_none_or(|a| Internetwork::area_zone(a) == net.graph().zone(them));
    let prefix = match (v6, t.vips[k].ipv6) {
        (false, _) => format!("{}/32", t.vips[k].ipv4),
        (true, Some(a)) => format!("{a}/128"),
        (true, None) => return String::new(),
    };
    if !named || !in_scope {
        return format!("if net = {prefix} then reject; ");
    }
    let prepends: String = (0..levers.prepend).map(|_| format!("bgp_path.prepend({CDN_ASN}); ")).collect();
    let mut communities = String::new();
    if levers.no_export {
        let _ = write!(communities, "bgp_community.add({NO_EXPORT}); ");
    }
    if let Some(a) = levers.region {
        let _ = write!(communities, "bgp_community.add({}); ", region_community(Internetwork::area_zone(a)));
    }
    format!("if net = {prefix} then {{ {prepends}{communities}accept; }} ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internet() -> (Topology, Plan) {
        let t =
            anyedge_topology::parse_str("internet.yaml", include_str!("../../../topologies/internet.yaml")).unwrap();
        let plan = Plan::new(&t);
        (t, plan)
    }

    /// POP `name`'s export filter line toward the network `to`.
    fn pop_session(t: &Topology, plan: &Plan, name: &str, to: &str) -> String {
        let p = t.pop_index(name).unwrap();
        let config = pop_config_as(t, plan, p).unwrap();
        let line = config.lines().find(|l| l.contains(&format!("description \"{to}\""))).map(str::to_string);
        line.unwrap_or_else(|| panic!("no session of {name} to {to}:\n{config}"))
    }

    #[test]
    fn each_pop_announces_with_its_levers_on_each_session() {
        let (t, plan) = internet();
        // Paris prepends twice, to both its transits.
        for to in ["cogent", "arelion"] {
            assert_eq!(pop_session(&t, &plan, "paris", to).matches("bgp_path.prepend(64500);").count(), 2);
        }
        // Frankfurt's routes carry no-export, at DE-CIX as to GTT.
        for to in ["gtt", "dtag", "arelion"] {
            assert!(pop_session(&t, &plan, "frankfurt", to).contains("bgp_community.add((65535, 65281));"), "{to}");
        }
        // Madrid announces to NTT only: to Cogent its VIP is refused.
        assert!(pop_session(&t, &plan, "madrid", "ntt").contains("if net = 198.18.0.20/32 then { accept; }"));
        assert!(pop_session(&t, &plan, "madrid", "cogent").contains("if net = 198.18.0.20/32 then reject;"));
    }

    #[test]
    fn a_networks_routers_hear_each_other_through_its_reflector_and_each_ranks_the_exits_itself() {
        let (t, plan) = internet();
        let net = t.internet.ways.internetwork(&t);
        let g = net.graph();
        let arelion = (0..g.ases()).map(AsId).find(|&a| net.as_name(a) == "arelion").unwrap();
        let routers = g.routers_of(arelion);
        assert!(routers.len() >= 3, "{routers:?}");
        let reflector = reflector_config(&t, &plan).unwrap();
        for &me in routers {
            let config = router_config(&t, &plan, me.0).unwrap();
            let ibgp: Vec<&str> = config
                .lines()
                .filter(|l| l.split(" neighbor ").nth(1).is_some_and(|them| them.contains(" as 1299;")))
                .collect();
            assert_eq!(ibgp.len(), 1, "one iBGP session, to the reflector: {ibgp:?}");
            assert!(ibgp[0].starts_with("protocol bgp reflector ") && ibgp[0].contains("add paths rx;"), "{}", ibgp[0]);
            // Every other router's routes, ranked by this router's distance order.
            for &y in routers.iter().filter(|&&y| y != me) {
                let ns = plan.ns_index(&Role::Router(y.0)).unwrap();
                let (_, port) = plan.port_of(ns).unwrap();
                let rank = net.exit_rank(me, y) * g.sessions() as u32;
                let line = format!("if bgp_next_hop = {} then bgp_med = bgp_med + {rank};", port.addr);
                assert!(ibgp[0].contains(&line), "{line} in {}", ibgp[0]);
                assert!(reflector.contains(&format!("neighbor {} as 1299; direct; passive on; rr client;", port.addr)));
            }
        }
        assert!(
            reflector
                .lines()
                .filter(|l| l.contains("rr client"))
                .all(|l| l.contains("add paths tx; import all; export all;"))
        );
    }

    #[test]
    fn routers_prefer_customers_and_export_only_customer_routes_to_peers_and_providers() {
        let (t, plan) = internet();
        let net = t.internet.ways.internetwork(&t);
        let g = net.graph();
        // BT buys from Arelion: BT's router marks Arelion's routes as a provider's and
        // exports to it only what its customers gave it; Arelion's marks BT's as a
        // customer's and exports it everything.
        let (bt, arelion) = (0..g.ases()).map(AsId).fold((None, None), |(b, a), x| match net.as_name(x) {
            "bt" => (Some(x), a),
            "arelion" => (b, Some(x)),
            _ => (b, a),
        });
        let (bt, arelion) = (bt.unwrap(), arelion.unwrap());
        let session = (0..g.sessions())
            .map(SessionId)
            .map(|s| g.session(s))
            .find(|s| (g.as_of(s.a), g.as_of(s.b)) == (bt, arelion) || (g.as_of(s.a), g.as_of(s.b)) == (arelion, bt));
        let s = session.expect("BT meets Arelion");
        let (bt_router, arelion_router) = if g.as_of(s.a) == bt { (s.a, s.b) } else { (s.b, s.a) };
        let line = |r: RouterId, to: &str| {
            let config = router_config(&t, &plan, r.0).unwrap();
            config.lines().find(|l| l.contains(&format!("description \"{to}\""))).unwrap().to_string()
        };
        let at_bt = line(bt_router, "arelion");
        assert!(at_bt.contains(&format!("bgp_local_pref = {LOCAL_PREF_PROVIDER};")), "{at_bt}");
        assert!(at_bt.contains(&format!("if bgp_local_pref != {LOCAL_PREF_CUSTOMER} then reject;")), "{at_bt}");
        let at_arelion = line(arelion_router, "bt");
        assert!(at_arelion.contains(&format!("bgp_local_pref = {LOCAL_PREF_CUSTOMER};")), "{at_arelion}");
        assert!(!at_arelion.contains("if bgp_local_pref !="), "to a customer, every best route: {at_arelion}");
        assert!(at_arelion.contains("if (65535, 65281) ~ bgp_community then reject;"), "no-export kept: {at_arelion}");
    }
}
