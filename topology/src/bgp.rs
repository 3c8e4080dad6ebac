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

/// The POP whose transit client group `g` attaches to.
pub fn attach(t: &Topology, g: usize) -> Option<usize> {
    if let Some(first) = t.clients[g].catchment.as_ref().and_then(|c| c.first()) {
        return Some(*first);
    }
    (0..t.pops.len()).min_by_key(|&p| (t.internet_rtt_ns(g, InternetEnd::Pop(p)), p))
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
        // Tokyo's transit: its own POP, then warsaw (nearer tokyo than paris is).
        assert_eq!(selection_order(&t, 2, &[0, 1, 2]), vec![2, 1, 0]);
        assert_eq!(t.pop_order(1, 0), vec![2, 1, 0], "the simulator's catchment is BGP's order");
        assert!(med_us(&t, 2, 1) < med_us(&t, 2, 0));
        assert_eq!(med_us(&t, 0, 1), med_us(&t, 1, 0), "MEDs are symmetric");
    }

    #[test]
    fn router_ids_follow_file_order() {
        assert!(transit_router_id(0) < transit_router_id(1));
        assert!(pop_router_id(3) < pop_router_id(10));
        assert_ne!(transit_router_id(0), pop_router_id(0));
    }
}
